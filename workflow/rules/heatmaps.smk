HEATMAPS = f"{DS}/heatmaps"


rule heatmap_patch_tokens:
    input:
        unpack(image_store_files),
        unpack(heatmap_model),
        unpack(image_encoder_files),
        obs=TOKEN_OBS,
        choice=f"{DS}/embedding/layer.json",
    output:
        patch_tokens=f"{HEATMAPS}/patch_tokens.npy",
        selected=f"{HEATMAPS}/selected.csv",
    log:
        f"{LOGS}/heatmap_patch_tokens.log",
    benchmark:
        f"{BENCH}/heatmap_patch_tokens.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    params:
        architecture=lambda wc: dataset_section(
            wc, "microscopy", "model", "architecture"
        ),
        task=lambda wc: task_named(
            wc.dataset, dataset_section(wc, "microscopy", "heatmaps", "task")
        ),
        exclude=lambda wc: dataset_section(wc, "microscopy", "heatmaps", "exclude"),
        images_per_label=lambda wc: dataset_section(
            wc, "microscopy", "heatmaps", "images_per_label"
        ),
    script:
        "../scripts/heatmap_patch_tokens.py"


rule token_heatmaps:
    input:
        unpack(image_store_files),
        unpack(heatmap_groups),
        model=lambda wc: heatmap_model(wc)["model"],
        whitening=lambda wc: heatmap_model(wc)["whitening"],
        obs=TOKEN_OBS,
        patch_tokens=f"{HEATMAPS}/patch_tokens.npy",
        selected=f"{HEATMAPS}/selected.csv",
    output:
        channels=multiext(f"{DS}/tables/heatmap_channels", *TABLE_TEXT),
        summary=table_files(
            f"{DS}/tables/heatmap_channel_summary",
            "../report/token_heatmaps.rst",
            "6. Token heatmaps",
        ),
        figure=figure_files(
            f"{DS}/figures/token_heatmaps",
            "../report/token_heatmaps.rst",
            "6. Token heatmaps",
        ),
    log:
        f"{LOGS}/token_heatmaps.log",
    benchmark:
        f"{BENCH}/token_heatmaps.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        plate_column=image_plate_column,
    script:
        "../scripts/token_heatmaps.py"


rule single_cell_check:
    input:
        unpack(image_store_files),
        model=lambda wc: heatmap_model(wc)["model"],
        whitening=lambda wc: heatmap_model(wc)["whitening"],
        masks=simulated_screen_file(layout.MASKS),
        cells=simulated_screen_file(layout.CELLS),
        patch_tokens=f"{HEATMAPS}/patch_tokens.npy",
        selected=f"{HEATMAPS}/selected.csv",
    output:
        alignment=f"{DS}/tables/single_cell_alignment.csv",
        per_image=multiext(f"{DS}/tables/single_cell_images", *TABLE_TEXT),
        summary=table_files(
            f"{DS}/tables/single_cell_summary",
            "../report/single_cell_alignment.rst",
            "7. Single-cell check",
        ),
        figure=figure_files(
            f"{DS}/figures/single_cell_alignment",
            "../report/single_cell_alignment.rst",
            "7. Single-cell check",
        ),
    log:
        f"{LOGS}/single_cell_check.log",
    benchmark:
        f"{BENCH}/single_cell_check.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/single_cell_check.py"
