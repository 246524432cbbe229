rule cellprofiler_measure:
    input:
        unpack(plan.image_store_files),
        unpack(plan.cellprofiler_pipeline),
    output:
        cells=paths.cellprofiler_chunk("cells", ".parquet"),
        masks=paths.cellprofiler_chunk("masks", ".npy"),
        timing=paths.cellprofiler_chunk("timing", ".json"),
    log:
        paths.log("cellprofiler_measure_{chunk}"),
    benchmark:
        paths.benchmark("cellprofiler_measure_{chunk}")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
        chunk=r"\d+",
    # The stage runs in the workflow's env; with backend `cellprofiler` it calls the real
    # CellProfiler as an executable, which has an environment of its own (envs/cellprofiler.yaml).
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=plan.cellprofiler_settings,
        chunk=lambda wc: int(wc.chunk),
        n_chunks=lambda wc: plan.cellprofiler_section(wc.dataset)["chunks"],
        work_dir=lambda wc: paths.cellprofiler_work(wc.chunk, wc.dataset),
    script:
        "../scripts/cellprofiler_measure.py"


rule cellprofiler_profiles:
    input:
        image_obs=lambda wc: plan.image_store_files(wc)["image_obs"],
        cells=lambda wc: plan.cellprofiler_chunks(wc, "cells", ".parquet"),
        timing=lambda wc: plan.cellprofiler_chunks(wc, "timing", ".json"),
    output:
        profiles=paths.cellprofiler("profiles.parquet"),
        summary=report(
            paths.table("cellprofiler_profiles.csv"),
            caption="../report/cp_comparison.rst",
            category="{dataset}",
            subcategory="8. CellProfiler baseline",
        ),
    log:
        paths.log("cellprofiler_profiles"),
    benchmark:
        paths.benchmark("cellprofiler_profiles")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        aggregate=lambda wc: plan.cellprofiler_section(wc.dataset)["aggregate"],
    script:
        "../scripts/cellprofiler_profiles.py"


rule cellprofiler_threshold:
    input:
        obs=paths.token_obs(),
        profiles=paths.cellprofiler("profiles.parquet"),
        validation=paths.validation(),
    output:
        codes=paths.cellprofiler("codes.npz"),
        thresholds=paths.cellprofiler("thresholds.csv"),
        sweep=paths.cellprofiler("sweep.csv"),
    log:
        paths.log("cellprofiler_threshold"),
    benchmark:
        paths.benchmark("cellprofiler_threshold")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        reference=lambda wc: plan.cellprofiler_section(wc.dataset)["reference"],
        target_active=lambda wc: plan.cellprofiler_section(wc.dataset)["target_active"],
        sweep_targets=lambda wc: plan.cellprofiler_section(wc.dataset)["sweep"],
        task=lambda wc: plan.task_named(
            wc.dataset, plan.cellprofiler_section(wc.dataset)["task"]
        ),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/cellprofiler_threshold.py"


rule cellprofiler_selectivity:
    input:
        obs=paths.token_obs(),
        codes=paths.cellprofiler("codes.npz"),
    output:
        counts=paths.cellprofiler("selectivity_counts.csv"),
        best=paths.cellprofiler("best_selectivity.csv"),
        label_scores=paths.cellprofiler("label_scores.csv"),
    log:
        paths.log("cellprofiler_selectivity"),
    benchmark:
        paths.benchmark("cellprofiler_selectivity")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        thresholds=config["evaluate"]["selectivity_thresholds"],
        probe=plan.probe_settings(),
        significance=config["evaluate"]["significance"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/cellprofiler_selectivity.py"


rule cellprofiler_comparison:
    input:
        cp_best=paths.cellprofiler("best_selectivity.csv"),
        sweep=paths.cellprofiler("sweep.csv"),
        best=lambda wc: plan.model_files(wc.dataset, "best_selectivity.csv"),
        codes=lambda wc: plan.model_files(wc.dataset, "codes.npz"),
    output:
        per_label=table_files(
            paths.table("cp_comparison"),
            "../report/cp_comparison.rst",
            "8. CellProfiler baseline",
        ),
        correlation=table_files(
            paths.table("cp_correlation"),
            "../report/cp_comparison.rst",
            "8. CellProfiler baseline",
        ),
        sparsity=multiext(paths.table("cp_sparsity"), *TABLE_TEXT),
        figure=figure_files(
            paths.figure("cp_comparison"),
            "../report/cp_comparison.rst",
            "8. CellProfiler baseline",
        ),
    log:
        paths.log("cellprofiler_comparison"),
    benchmark:
        paths.benchmark("cellprofiler_comparison")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=plan.variant_names,
        task=lambda wc: plan.cellprofiler_section(wc.dataset)["task"],
    script:
        "../scripts/cellprofiler_comparison.py"


rule cellprofiler_segmentation:
    input:
        unpack(plan.image_store_files),
        true_masks=paths.images(layout.MASKS),
        masks=lambda wc: plan.cellprofiler_chunks(wc, "masks", ".npy"),
    output:
        per_image=paths.cellprofiler("segmentation_per_image.csv"),
        summary=report(
            paths.table("cp_segmentation.csv"),
            caption="../report/cp_segmentation.rst",
            category="{dataset}",
            subcategory="8. CellProfiler baseline",
        ),
    log:
        paths.log("cellprofiler_segmentation"),
    benchmark:
        paths.benchmark("cellprofiler_segmentation")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        iou_threshold=lambda wc: plan.cellprofiler_section(wc.dataset)["iou_threshold"],
    script:
        "../scripts/cellprofiler_segmentation.py"
