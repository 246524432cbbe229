CP = f"{DS}/cellprofiler"


rule cellprofiler_measure:
    input:
        unpack(image_store_files),
        unpack(cellprofiler_pipeline),
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
    # The stage runs in the workflow's env; with backend `cellprofiler` it calls the real
    # CellProfiler as an executable, which has an environment of its own (envs/cellprofiler.yaml).
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=cellprofiler_settings,
        chunk=lambda wc: int(wc.chunk),
        n_chunks=lambda wc: cellprofiler_section(wc.dataset)["chunks"],
        work_dir=lambda wc: f"{R}/{wc.dataset}/cellprofiler/work/chunk_{wc.chunk}",
    script:
        "../scripts/cellprofiler_measure.py"


rule cellprofiler_profiles:
    input:
        image_obs=lambda wc: image_store_files(wc)["image_obs"],
        cells=lambda wc: cellprofiler_chunks(wc, "cells_{chunk}.parquet"),
        timing=lambda wc: cellprofiler_chunks(wc, "timing_{chunk}.json"),
    output:
        profiles=f"{CP}/profiles.parquet",
        summary=report(
            f"{DS}/tables/cellprofiler_profiles.csv",
            caption="../report/cp_comparison.rst",
            category="{dataset}",
            subcategory="8. CellProfiler baseline",
        ),
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
        obs=TOKEN_OBS,
        profiles=f"{CP}/profiles.parquet",
        validation=VALIDATION,
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
        reference=lambda wc: cellprofiler_section(wc.dataset)["reference"],
        target_active=lambda wc: cellprofiler_section(wc.dataset)["target_active"],
        sweep_targets=lambda wc: cellprofiler_section(wc.dataset)["sweep"],
        task=lambda wc: task_named(wc.dataset, cellprofiler_section(wc.dataset)["task"]),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/cellprofiler_threshold.py"


rule cellprofiler_selectivity:
    input:
        obs=TOKEN_OBS,
        codes=f"{CP}/codes.npz",
    output:
        counts=f"{CP}/selectivity_counts.csv",
        best=f"{CP}/best_selectivity.csv",
        label_scores=f"{CP}/label_scores.csv",
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
        tasks=lambda wc: dataset_section(wc, "tasks"),
        thresholds=config["evaluate"]["selectivity_thresholds"],
        probe=probe_settings(),
        significance=config["evaluate"]["significance"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/cellprofiler_selectivity.py"


rule cellprofiler_comparison:
    input:
        cp_best=f"{CP}/best_selectivity.csv",
        sweep=f"{CP}/sweep.csv",
        best=lambda wc: model_files(wc.dataset, "best_selectivity.csv"),
        codes=lambda wc: model_files(wc.dataset, "codes.npz"),
    output:
        per_label=table_files(
            f"{DS}/tables/cp_comparison",
            "../report/cp_comparison.rst",
            "8. CellProfiler baseline",
        ),
        correlation=table_files(
            f"{DS}/tables/cp_correlation",
            "../report/cp_comparison.rst",
            "8. CellProfiler baseline",
        ),
        sparsity=multiext(f"{DS}/tables/cp_sparsity", *TABLE_TEXT),
        figure=figure_files(
            f"{DS}/figures/cp_comparison",
            "../report/cp_comparison.rst",
            "8. CellProfiler baseline",
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
        variants=variant_names,
        task=lambda wc: cellprofiler_section(wc.dataset)["task"],
    script:
        "../scripts/cellprofiler_comparison.py"


rule cellprofiler_segmentation:
    input:
        unpack(image_store_files),
        true_masks=simulated_screen_file(layout.MASKS),
        masks=lambda wc: cellprofiler_chunks(wc, "masks_{chunk}.npy"),
    output:
        per_image=f"{CP}/segmentation_per_image.csv",
        summary=report(
            f"{DS}/tables/cp_segmentation.csv",
            caption="../report/cp_segmentation.rst",
            category="{dataset}",
            subcategory="8. CellProfiler baseline",
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
