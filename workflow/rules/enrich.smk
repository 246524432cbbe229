ENRICH = f"{DS}/enrich/{VARIANT}"


rule token_umap:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        validation=VALIDATION,
    output:
        umap=f"{DS}/embedding/umap.parquet",
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
        unpack(enrichment_inputs),
        obs=TOKEN_OBS,
        codes=f"{MODEL}/codes.npz",
    output:
        enrichment=f"{ENRICH}/enrichment.parquet",
        enrichment_csv=f"{ENRICH}/enrichment.csv",
        genes=f"{ENRICH}/feature_genes.parquet",
        annotation=report(
            f"{ENRICH}/feature_annotation.csv",
            caption="../report/feature_annotation.rst",
            category="{dataset}",
            subcategory="9. GO enrichment",
        ),
        check=f"{ENRICH}/gseapy_check.csv",
        summary=f"{ENRICH}/summary.csv",
        dotplot=figure_files(
            f"{ENRICH}/dotplot", "../report/enrichment_dotplot.rst", "9. GO enrichment"
        ),
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
        mode=lambda wc: enrichment_mode(dataset_section(wc, "kind")),
        tasks=lambda wc: dataset_section(wc, "tasks"),
        control=lambda wc: DATASETS[wc.dataset].get("control"),
        source=lambda wc: DATASETS[wc.dataset].get("scrna", {}).get("source"),
        settings=enrichment_model_settings,
        variant=variant_name,
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/enrich_model.py"


rule enrichment_umap:
    input:
        obs=TOKEN_OBS,
        codes=f"{MODEL}/codes.npz",
        annotation=f"{ENRICH}/feature_annotation.csv",
        umap=f"{DS}/embedding/umap.parquet",
    output:
        figure=figure_files(
            f"{ENRICH}/umap", "../report/enrichment_umap.rst", "9. GO enrichment"
        ),
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
        task=lambda wc: task_named(wc.dataset, enrichment_label_task(wc.dataset)),
        labels=lambda wc: enrichment_settings(config, wc.dataset)["labels"],
        n_features=lambda wc: enrichment_settings(config, wc.dataset)["figures"][
            "umap_features"
        ],
        variant=variant_name,
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/enrichment_umap.py"


rule download_gene_sets:
    output:
        gmt=f"{R}/gene_sets/{{library}}.gmt",
    log:
        f"{R}/gene_sets/{{library}}.log",
    benchmark:
        f"{R}/gene_sets/{{library}}.benchmark.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        library=lambda wc: wc.library,
    script:
        "../scripts/download_gene_sets.py"


rule enrichment_labels:
    input:
        unpack(enrichment_table_inputs),
    output:
        table=table_files(
            f"{DS}/tables/enrichment_labels",
            "../report/enrichment_labels.rst",
            "9. GO enrichment",
        ),
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
        variants=lambda wc: enrichment_variants(config, wc.dataset),
        label_task=lambda wc: enrichment_label_task(wc.dataset),
        labels=lambda wc: enrichment_settings(config, wc.dataset)["labels"],
        top_terms=lambda wc: enrichment_settings(config, wc.dataset)["top_terms"],
    script:
        "../scripts/enrichment_labels.py"


rule go_recovery:
    input:
        unpack(enrichment_table_inputs),
        unpack(enrichment_inputs),
        groups=simulated_screen_file(layout.GROUPS),
        obs=TOKEN_OBS,
    output:
        table=table_files(
            f"{DS}/tables/go_recovery", "../report/go_recovery.rst", "9. GO enrichment"
        ),
        summary=multiext(f"{DS}/tables/go_recovery_summary", *TABLE_TEXT),
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
        variants=lambda wc: enrichment_variants(config, wc.dataset),
        group_task=lambda wc: simulated_group_task(wc.dataset),
        fdr=lambda wc: enrichment_settings(config, wc.dataset)["fdr"],
        settings=enrichment_model_settings,
        control=lambda wc: DATASETS[wc.dataset].get("control"),
    script:
        "../scripts/go_recovery.py"
