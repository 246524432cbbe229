rule token_umap:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        validation=paths.validation(),
    output:
        umap=paths.embedding("umap.parquet"),
    log:
        paths.log("token_umap"),
    benchmark:
        paths.benchmark("token_umap")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../scripts/token_umap.py"


rule enrich_model:
    input:
        unpack(plan.enrichment_inputs),
        obs=paths.token_obs(),
        codes=paths.model("codes.npz"),
    output:
        enrichment=paths.enrich("enrichment.parquet"),
        enrichment_csv=paths.enrich("enrichment.csv"),
        genes=paths.enrich("feature_genes.parquet"),
        annotation=report(
            paths.enrich("feature_annotation.csv"),
            caption="../report/feature_annotation.rst",
            category="{dataset}",
            subcategory="9. GO enrichment",
        ),
        check=paths.enrich("gseapy_check.csv"),
        summary=paths.enrich("summary.csv"),
        dotplot=figure_files(
            paths.enrich("dotplot"),
            "../report/enrichment_dotplot.rst",
            "9. GO enrichment",
        ),
    log:
        paths.model_log("enrich"),
    benchmark:
        paths.model_benchmark("enrich")
    wildcard_constraints:
        dataset=plan.enrichment_datasets(),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        mode=lambda wc: enrichment_mode(plan.dataset_section(wc, "kind")),
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        control=lambda wc: DATASETS[wc.dataset].get("control"),
        source=lambda wc: DATASETS[wc.dataset].get("scrna", {}).get("source"),
        settings=plan.enrichment_model_settings,
        variant=plan.variant_name,
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/enrich_model.py"


rule enrichment_umap:
    input:
        obs=paths.token_obs(),
        codes=paths.model("codes.npz"),
        annotation=paths.enrich("feature_annotation.csv"),
        umap=paths.embedding("umap.parquet"),
    output:
        figure=figure_files(
            paths.enrich("umap"), "../report/enrichment_umap.rst", "9. GO enrichment"
        ),
    log:
        paths.model_log("enrichment_umap"),
    benchmark:
        paths.model_benchmark("enrichment_umap")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        task=lambda wc: plan.task_named(
            wc.dataset, plan.enrichment_label_task(wc.dataset)
        ),
        labels=lambda wc: enrichment_settings(config, wc.dataset)["labels"],
        n_features=lambda wc: enrichment_settings(config, wc.dataset)["figures"][
            "umap_features"
        ],
        variant=plan.variant_name,
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/enrichment_umap.py"


rule download_gene_sets:
    output:
        gmt=paths.gene_sets(),
    log:
        paths.gene_sets(suffix=".log"),
    benchmark:
        paths.gene_sets(suffix=".benchmark.tsv")
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
        unpack(plan.enrichment_table_inputs),
    output:
        table=table_files(
            paths.table("enrichment_labels"),
            "../report/enrichment_labels.rst",
            "9. GO enrichment",
        ),
    log:
        paths.log("enrichment_labels"),
    benchmark:
        paths.benchmark("enrichment_labels")
    wildcard_constraints:
        dataset=plan.enrichment_datasets(),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=lambda wc: enrichment_variants(config, wc.dataset),
        label_task=lambda wc: plan.enrichment_label_task(wc.dataset),
        labels=lambda wc: enrichment_settings(config, wc.dataset)["labels"],
        top_terms=lambda wc: enrichment_settings(config, wc.dataset)["top_terms"],
    script:
        "../scripts/enrichment_labels.py"


rule go_recovery:
    input:
        unpack(plan.enrichment_table_inputs),
        unpack(plan.enrichment_inputs),
        groups=paths.images(layout.GROUPS),
        obs=paths.token_obs(),
    output:
        table=table_files(
            paths.table("go_recovery"), "../report/go_recovery.rst", "9. GO enrichment"
        ),
        summary=multiext(paths.table("go_recovery_summary"), *TABLE_TEXT),
    log:
        paths.log("go_recovery"),
    benchmark:
        paths.benchmark("go_recovery")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=lambda wc: enrichment_variants(config, wc.dataset),
        group_task=lambda wc: plan.simulated_group_task(wc.dataset),
        fdr=lambda wc: enrichment_settings(config, wc.dataset)["fdr"],
        settings=plan.enrichment_model_settings,
        control=lambda wc: DATASETS[wc.dataset].get("control"),
    script:
        "../scripts/go_recovery.py"
