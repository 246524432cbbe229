rule report_dataset:
    input:
        unpack(report_inputs),
    output:
        headline=report(
            f"{R}/{{dataset}}/headline.csv",
            caption="../report/headline.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        headline_text=multiext(f"{R}/{{dataset}}/headline", ".md", ".tex"),
        tables=[
            f"{R}/{{dataset}}/tables/{name}{ext}"
            for name in REPORT_TABLES
            for ext in (".csv", ".md", ".tex")
        ],
        figures=[
            report(
                f"{R}/{{dataset}}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
                subcategory="{dataset}",
            )
            for name in REPORT_FIGURES
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
        variants=lambda wc: [v.name for v in variants(config, wc.dataset)],
        tasks=lambda wc: [t["name"] for t in DATASETS[wc.dataset]["tasks"]],
    script:
        "../scripts/report_dataset.py"


rule atom_recovery_table:
    input:
        lambda wc: list(model_files(wc.dataset, "atom_recovery.csv").values()),
    output:
        multiext(f"{R}/{{dataset}}/tables/atom_recovery", ".csv", ".md", ".tex"),
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
        variants=lambda wc: [v.name for v in variants(config, wc.dataset)],
    script:
        "../scripts/atom_recovery_table.py"


rule label_selectivity:
    input:
        lambda wc: list(model_files(wc.dataset, "best_selectivity.csv").values()),
    output:
        table=report(
            f"{R}/{{dataset}}/tables/label_selectivity.csv",
            caption="../report/label_selectivity.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        table_text=multiext(f"{R}/{{dataset}}/tables/label_selectivity", ".md", ".tex"),
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
        variants=lambda wc: [v.name for v in variants(config, wc.dataset)],
        heatmaps=lambda wc: DATASETS[wc.dataset]["microscopy"]["heatmaps"],
    script:
        "../scripts/label_selectivity.py"
