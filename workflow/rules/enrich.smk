ENRICH = f"{R}/{{dataset}}/enrich/{VARIANT}"


rule token_umap:
    input:
        unpack(token_store),
    output:
        f"{R}/{{dataset}}/embedding/umap.parquet",
    log:
        f"{LOGS}/token_umap.log",
    benchmark:
        f"{BENCH}/token_umap.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../scripts/token_umap.py"


rule enrich_model:
    input:
        unpack(token_store),
        unpack(enrichment_inputs),
        codes=f"{MODEL}/codes.npz",
    output:
        enrichment=f"{ENRICH}/enrichment.parquet",
        enrichment_csv=f"{ENRICH}/enrichment.csv",
        genes=f"{ENRICH}/feature_genes.parquet",
        annotation=report(
            f"{ENRICH}/feature_annotation.csv",
            caption="../report/feature_annotation.rst",
            category="GO enrichment",
            subcategory="{dataset}",
        ),
        gseapy_check=f"{ENRICH}/gseapy_check.csv",
        summary=f"{ENRICH}/summary.csv",
        dotplot=report(
            f"{ENRICH}/dotplot.png",
            caption="../report/enrichment_dotplot.rst",
            category="GO enrichment",
            subcategory="{dataset}",
        ),
        dotplot_pdf=f"{ENRICH}/dotplot.pdf",
    log:
        f"{LOGS}/enrich_{VARIANT}.log",
    benchmark:
        f"{BENCH}/enrich_{VARIANT}.tsv"
    wildcard_constraints:
        dataset=enrichment_datasets(),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        settings=lambda wc: enrichment_settings(config, wc.dataset),
        variant=variant_name,
        expression_source=lambda wc: DATASETS[wc.dataset].get("scrna", {}).get("source"),
    script:
        "../scripts/enrich_model.py"


rule enrichment_umap:
    input:
        unpack(token_store),
        codes=f"{MODEL}/codes.npz",
        annotation=f"{ENRICH}/feature_annotation.csv",
        umap=f"{R}/{{dataset}}/embedding/umap.parquet",
    output:
        png=report(
            f"{ENRICH}/umap.png",
            caption="../report/enrichment_umap.rst",
            category="GO enrichment",
            subcategory="{dataset}",
        ),
        pdf=f"{ENRICH}/umap.pdf",
    log:
        f"{LOGS}/enrichment_umap_{VARIANT}.log",
    benchmark:
        f"{BENCH}/enrichment_umap_{VARIANT}.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        settings=lambda wc: enrichment_settings(config, wc.dataset),
        label_task=lambda wc: enrichment_label_task(wc.dataset),
        variant=variant_name,
    script:
        "../scripts/enrichment_umap.py"


rule download_gene_sets:
    output:
        f"{R}/gene_sets/{{library}}.gmt",
    log:
        f"{R}/gene_sets/{{library}}.log",
    benchmark:
        f"{R}/gene_sets/{{library}}.benchmark.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/download_gene_sets.py"


rule enrichment_labels:
    input:
        unpack(enrichment_table_inputs),
    output:
        report(
            f"{R}/{{dataset}}/tables/enrichment_labels.csv",
            caption="../report/enrichment_labels.rst",
            category="GO enrichment",
            subcategory="{dataset}",
        ),
        multiext(f"{R}/{{dataset}}/tables/enrichment_labels", ".md", ".tex"),
    log:
        f"{LOGS}/enrichment_labels.log",
    benchmark:
        f"{BENCH}/enrichment_labels.tsv"
    wildcard_constraints:
        dataset=enrichment_datasets(),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=lambda wc: enrichment_settings(config, wc.dataset),
        label_task=lambda wc: enrichment_label_task(wc.dataset),
        variants=lambda wc: enrichment_variants(wc.dataset),
    script:
        "../scripts/enrichment_labels.py"


rule go_recovery:
    input:
        unpack(enrichment_table_inputs),
        groups=f"{R}/{{dataset}}/images/groups.csv",
    output:
        table=report(
            f"{R}/{{dataset}}/tables/go_recovery.csv",
            caption="../report/go_recovery.rst",
            category="GO enrichment",
            subcategory="{dataset}",
        ),
        table_text=multiext(f"{R}/{{dataset}}/tables/go_recovery", ".md", ".tex"),
        summary=multiext(
            f"{R}/{{dataset}}/tables/go_recovery_summary", ".csv", ".md", ".tex"
        ),
    log:
        f"{LOGS}/go_recovery.log",
    benchmark:
        f"{BENCH}/go_recovery.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=lambda wc: enrichment_settings(config, wc.dataset),
        group_task=lambda wc: simulated_group_task(wc.dataset),
        variants=lambda wc: enrichment_variants(wc.dataset),
    script:
        "../scripts/go_recovery.py"
