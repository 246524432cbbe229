from cellconcepts.report.figures import REPORT_STAGE


localrules:
    all,
    report_dataset,
    atom_recovery_table,
    label_selectivity,
    enrichment_labels,
    go_recovery,
    cellprofiler_comparison,
    download_gene_sets,


rule report_dataset:
    input:
        unpack(plan.report_inputs),
    output:
        headline=table_files(paths.headline(), "../report/headline.rst", "1. Headline"),
        tables=[
            path
            for name in DATASET_TABLES
            for path in table_files(
                paths.table(name),
                f"../report/table_{name}.rst",
                REPORT_STAGE[name],
            )
        ],
        figures=[
            path
            for name in DATASET_FIGURES
            for path in figure_files(
                paths.figure(name), f"../report/{name}.rst", REPORT_STAGE[name]
            )
        ],
    log:
        paths.log("report_dataset"),
    benchmark:
        paths.benchmark("report_dataset")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dataset=lambda wc: wc.dataset,
        variants=plan.variant_names,
        tasks=lambda wc: [t["name"] for t in DATASETS[wc.dataset]["tasks"]],
    script:
        "../scripts/report_dataset.py"


rule atom_recovery_table:
    input:
        recovery=lambda wc: plan.model_files(wc.dataset, "atom_recovery.csv"),
    output:
        table=table_files(
            paths.table("atom_recovery"), "../report/atom_recovery.rst", "2. Training"
        ),
    log:
        paths.log("atom_recovery_table"),
    benchmark:
        paths.benchmark("atom_recovery_table")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("synthetic"),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        dataset=lambda wc: wc.dataset,
        variants=plan.variant_names,
    script:
        "../scripts/atom_recovery_table.py"


rule label_selectivity:
    input:
        best_selectivity=lambda wc: plan.model_files(wc.dataset, "best_selectivity.csv"),
        label_scores=lambda wc: plan.model_files(wc.dataset, "label_scores.csv"),
        references=paths.raw("references.csv"),
    output:
        table=table_files(
            paths.table("label_selectivity"),
            "../report/label_selectivity.rst",
            "4. Selectivity",
        ),
    log:
        paths.log("label_selectivity"),
    benchmark:
        paths.benchmark("label_selectivity")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        variants=plan.variant_names,
        task=lambda wc: plan.dataset_section(wc, "microscopy", "heatmaps", "task"),
        exclude=lambda wc: plan.dataset_section(wc, "microscopy", "heatmaps", "exclude"),
    script:
        "../scripts/label_selectivity.py"


rule feature_browser:
    input:
        unpack(plan.browser_inputs),
    output:
        browser=directory(paths.browser()),
    log:
        paths.log("feature_browser"),
    benchmark:
        paths.benchmark("feature_browser")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        expression_source=lambda wc: plan.browser_expression(wc)["expression_source"],
        expression_matrix=lambda wc: plan.browser_expression(wc)["expression_matrix"],
        dataset=lambda wc: wc.dataset,
        kind=lambda wc: DATASETS[wc.dataset]["kind"],
        variants=plan.variant_names,
        enriched=lambda wc: (
            enrichment_variants(config, wc.dataset)
            if plan.has_enrichment(wc.dataset)
            else []
        ),
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        rgb=lambda wc: DATASETS[wc.dataset].get("microscopy", {}).get("browser_rgb"),
        settings=plan.pick(
            config["browser"], ["examples", "random_examples", "nearest", "seed"]
        ),
        min_label_size=config["evaluate"]["min_label_size"],
        fdr=lambda wc: enrichment_settings(config, wc.dataset)["fdr"],
    script:
        "../scripts/feature_browser.py"
