CP = f"{R}/{{dataset}}/cellprofiler"


rule cellprofiler_measure:
    input:
        unpack(image_store_files),
    output:
        cells=f"{CP}/chunks/cells_{{chunk}}.parquet",
        masks=f"{CP}/chunks/masks_{{chunk}}.npy",
        timing=f"{CP}/chunks/timing_{{chunk}}.json",
    log:
        f"{LOGS}/cellprofiler_measure_{{chunk}}.log",
    benchmark:
        f"{BENCH}/cellprofiler_measure_{{chunk}}.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
        chunk=r"\d+",
    conda:
        "../../envs/cellprofiler.yaml"
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=cellprofiler_settings,
        n_chunks=lambda wc: cellprofiler_section(wc.dataset)["chunks"],
        work_dir=lambda wc: f"{R}/{wc.dataset}/cellprofiler/work/chunk_{wc.chunk}",
    script:
        "../scripts/cellprofiler_measure.py"


rule cellprofiler_profiles:
    input:
        unpack(image_store_files),
        cells=lambda wc: cellprofiler_chunks(wc, "cells_{chunk}.parquet"),
        timing=lambda wc: cellprofiler_chunks(wc, "timing_{chunk}.json"),
    output:
        profiles=f"{CP}/profiles.parquet",
        summary=f"{R}/{{dataset}}/tables/cellprofiler_profiles.csv",
    log:
        f"{LOGS}/cellprofiler_profiles.log",
    benchmark:
        f"{BENCH}/cellprofiler_profiles.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        aggregate=lambda wc: cellprofiler_section(wc.dataset)["aggregate"],
    script:
        "../scripts/cellprofiler_profiles.py"


rule cellprofiler_threshold:
    input:
        unpack(token_store),
        profiles=f"{CP}/profiles.parquet",
    output:
        codes=f"{CP}/codes.npz",
        thresholds=f"{CP}/thresholds.csv",
        sweep=f"{CP}/sweep.csv",
    log:
        f"{LOGS}/cellprofiler_threshold.log",
    benchmark:
        f"{BENCH}/cellprofiler_threshold.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        section=lambda wc: cellprofiler_section(wc.dataset),
        task=cellprofiler_task,
    script:
        "../scripts/cellprofiler_threshold.py"


rule cellprofiler_selectivity:
    input:
        unpack(token_store),
        codes=f"{CP}/codes.npz",
    output:
        counts=f"{CP}/selectivity_counts.csv",
        best=f"{CP}/best_selectivity.csv",
    log:
        f"{LOGS}/cellprofiler_selectivity.log",
    benchmark:
        f"{BENCH}/cellprofiler_selectivity.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
        thresholds=config["evaluate"]["selectivity_thresholds"],
    script:
        "../scripts/selectivity.py"


rule cellprofiler_comparison:
    input:
        cp_best=f"{CP}/best_selectivity.csv",
        sweep=f"{CP}/sweep.csv",
        best=lambda wc: list(model_files(wc.dataset, "best_selectivity.csv").values()),
        codes=lambda wc: list(model_files(wc.dataset, "codes.npz").values()),
    output:
        per_label=report(
            f"{R}/{{dataset}}/tables/cp_comparison.csv",
            caption="../report/cp_comparison.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        per_label_text=multiext(f"{R}/{{dataset}}/tables/cp_comparison", ".md", ".tex"),
        correlation=report(
            f"{R}/{{dataset}}/tables/cp_correlation.csv",
            caption="../report/cp_comparison.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        correlation_text=multiext(
            f"{R}/{{dataset}}/tables/cp_correlation", ".md", ".tex"
        ),
        sparsity=multiext(f"{R}/{{dataset}}/tables/cp_sparsity", ".csv", ".md", ".tex"),
        figure=report(
            f"{R}/{{dataset}}/figures/cp_comparison.png",
            caption="../report/cp_comparison.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        f"{LOGS}/cellprofiler_comparison.log",
    benchmark:
        f"{BENCH}/cellprofiler_comparison.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=lambda wc: [v.name for v in variants(config, wc.dataset)],
        task=lambda wc: cellprofiler_section(wc.dataset)["task"],
    script:
        "../scripts/cellprofiler_comparison.py"


rule cellprofiler_segmentation:
    input:
        unpack(image_store_files),
        masks=lambda wc: cellprofiler_chunks(wc, "masks_{chunk}.npy"),
    output:
        per_image=f"{CP}/segmentation_per_image.csv",
        summary=report(
            f"{R}/{{dataset}}/tables/cp_segmentation.csv",
            caption="../report/cp_segmentation.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    log:
        f"{LOGS}/cellprofiler_segmentation.log",
    benchmark:
        f"{BENCH}/cellprofiler_segmentation.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        iou_threshold=lambda wc: cellprofiler_section(wc.dataset)["iou_threshold"],
    script:
        "../scripts/cellprofiler_segmentation.py"
