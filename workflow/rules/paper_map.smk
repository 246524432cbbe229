from cellconcepts.report.paper_map import TABLE_NEEDS, needed_tables

# What the tables of TABLE_NEEDS need, as the rules that write them decide it.
PAPER_MAP_NEEDS = {
    "cellprofiler": plan.has_cellprofiler,
    "heatmaps": plan.has_heatmaps,
    "screen_heatmaps": plan.has_single_cell_check,
    "microscopy": lambda d: DATASETS[d]["kind"] == "microscopy",
    "screen_enrichment": plan.has_go_recovery,
    "enrichment": plan.has_enrichment,
    "ground_truth": plan.has_ground_truth,
}


localrules:
    paper_map,


rule paper_map:
    input:
        # The tables the map reads that this config builds (the map says 'not in this run' for
        # the others).
        tables=[
            paths.dataset_file(file, dataset)
            for dataset, file in needed_tables(list(DATASETS))
            if file not in TABLE_NEEDS or PAPER_MAP_NEEDS[TABLE_NEEDS[file]](dataset)
        ],
    output:
        csv=report(
            paths.paper_map(".csv"),
            caption="../report/paper_map.rst",
            category="Paper map",
        ),
        md=report(
            paths.paper_map(".md"),
            caption="../report/paper_map.rst",
            category="Paper map",
        ),
    log:
        paths.run_log("paper_map"),
    benchmark:
        paths.run_benchmark("paper_map")
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        datasets=list(DATASETS),
    script:
        "../scripts/paper_map.py"
