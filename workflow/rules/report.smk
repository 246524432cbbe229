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
        unpack(report_inputs),
    output:
        headline=table_files(f"{DS}/headline", "../report/headline.rst", "1. Headline"),
        tables=[
            path
            for name in DATASET_TABLES
            for path in table_files(
                f"{DS}/tables/{name}",
                f"../report/table_{name}.rst",
                REPORT_STAGE[name],
            )
        ],
        figures=[
            path
            for name in DATASET_FIGURES
            for path in figure_files(
                f"{DS}/figures/{name}", f"../report/{name}.rst", REPORT_STAGE[name]
            )
        ],
    log:
        f"{LOGS}/report_dataset.log",
    benchmark:
        f"{BENCH}/report_dataset.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dataset=lambda wc: wc.dataset,
        variants=variant_names,
        tasks=lambda wc: [t["name"] for t in DATASETS[wc.dataset]["tasks"]],
    script:
        "../scripts/report_dataset.py"


rule atom_recovery_table:
    input:
        recovery=lambda wc: model_files(wc.dataset, "atom_recovery.csv"),
    output:
        table=table_files(
            f"{DS}/tables/atom_recovery", "../report/atom_recovery.rst", "2. Training"
        ),
    log:
        f"{LOGS}/atom_recovery_table.log",
    benchmark:
        f"{BENCH}/atom_recovery_table.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("synthetic"),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        dataset=lambda wc: wc.dataset,
        variants=variant_names,
    script:
        "../scripts/atom_recovery_table.py"


rule label_selectivity:
    input:
        best_selectivity=lambda wc: model_files(wc.dataset, "best_selectivity.csv"),
        label_scores=lambda wc: model_files(wc.dataset, "label_scores.csv"),
        references=f"{DS}/raw/references.csv",
    output:
        table=table_files(
            f"{DS}/tables/label_selectivity",
            "../report/label_selectivity.rst",
            "4. Selectivity",
        ),
    log:
        f"{LOGS}/label_selectivity.log",
    benchmark:
        f"{BENCH}/label_selectivity.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        variants=variant_names,
        task=lambda wc: dataset_section(wc, "microscopy", "heatmaps", "task"),
        exclude=lambda wc: dataset_section(wc, "microscopy", "heatmaps", "exclude"),
    script:
        "../scripts/label_selectivity.py"


rule feature_browser:
    input:
        unpack(browser_inputs),
    output:
        browser=directory(f"{DS}/browser"),
    log:
        f"{LOGS}/feature_browser.log",
    benchmark:
        f"{BENCH}/feature_browser.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        expression_source=lambda wc: browser_expression(wc)["expression_source"],
        expression_matrix=lambda wc: browser_expression(wc)["expression_matrix"],
        dataset=lambda wc: wc.dataset,
        kind=lambda wc: DATASETS[wc.dataset]["kind"],
        variants=variant_names,
        enriched=lambda wc: (
            enrichment_variants(config, wc.dataset)
            if has_enrichment(wc.dataset)
            else []
        ),
        tasks=lambda wc: dataset_section(wc, "tasks"),
        rgb=lambda wc: DATASETS[wc.dataset].get("microscopy", {}).get("browser_rgb"),
        settings=pick(
            config["browser"], ["examples", "random_examples", "nearest", "seed"]
        ),
        min_label_size=config["evaluate"]["min_label_size"],
        fdr=lambda wc: (
            enrichment_settings(config, wc.dataset)["fdr"]
            if has_enrichment(wc.dataset)
            else 0.05
        ),
    script:
        "../scripts/feature_browser.py"
