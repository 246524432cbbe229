rule heatmap_patch_tokens:
    input:
        unpack(plan.image_store_files),
        unpack(plan.heatmap_model),
        unpack(plan.image_encoder_files),
        obs=paths.token_obs(),
        choice=paths.embedding("layer.json"),
    output:
        patch_tokens=paths.heatmaps("patch_tokens.npy"),
        selected=paths.heatmaps("selected.csv"),
    log:
        paths.log("heatmap_patch_tokens"),
    benchmark:
        paths.benchmark("heatmap_patch_tokens")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    params:
        architecture=lambda wc: plan.dataset_section(
            wc, "microscopy", "model", "architecture"
        ),
        task=lambda wc: plan.task_named(
            wc.dataset, plan.dataset_section(wc, "microscopy", "heatmaps", "task")
        ),
        exclude=lambda wc: plan.dataset_section(wc, "microscopy", "heatmaps", "exclude"),
        images_per_label=lambda wc: plan.dataset_section(
            wc, "microscopy", "heatmaps", "images_per_label"
        ),
    script:
        "../scripts/heatmap_patch_tokens.py"


rule token_heatmaps:
    input:
        unpack(plan.image_store_files),
        unpack(plan.heatmap_groups),
        model=lambda wc: plan.heatmap_model(wc)["model"],
        whitening=lambda wc: plan.heatmap_model(wc)["whitening"],
        obs=paths.token_obs(),
        patch_tokens=paths.heatmaps("patch_tokens.npy"),
        selected=paths.heatmaps("selected.csv"),
    output:
        channels=multiext(paths.table("heatmap_channels"), *TABLE_TEXT),
        summary=table_files(
            paths.table("heatmap_channel_summary"),
            "../report/token_heatmaps.rst",
            "6. Token heatmaps",
        ),
        figure=figure_files(
            paths.figure("token_heatmaps"),
            "../report/token_heatmaps.rst",
            "6. Token heatmaps",
        ),
    log:
        paths.log("token_heatmaps"),
    benchmark:
        paths.benchmark("token_heatmaps")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        plate_column=plan.image_plate_column,
    script:
        "../scripts/token_heatmaps.py"


rule single_cell_check:
    input:
        unpack(plan.image_store_files),
        model=lambda wc: plan.heatmap_model(wc)["model"],
        whitening=lambda wc: plan.heatmap_model(wc)["whitening"],
        masks=paths.images(layout.MASKS),
        cells=paths.images(layout.CELLS),
        patch_tokens=paths.heatmaps("patch_tokens.npy"),
        selected=paths.heatmaps("selected.csv"),
    output:
        alignment=paths.table("single_cell_alignment.csv"),
        per_image=multiext(paths.table("single_cell_images"), *TABLE_TEXT),
        summary=table_files(
            paths.table("single_cell_summary"),
            "../report/single_cell_alignment.rst",
            "7. Single-cell check",
        ),
        figure=figure_files(
            paths.figure("single_cell_alignment"),
            "../report/single_cell_alignment.rst",
            "7. Single-cell check",
        ),
    log:
        paths.log("single_cell_check"),
    benchmark:
        paths.benchmark("single_cell_check")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/single_cell_check.py"
