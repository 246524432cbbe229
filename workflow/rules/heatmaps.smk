HEATMAPS = f"{R}/{{dataset}}/heatmaps"


rule heatmap_patch_tokens:
    input:
        unpack(image_store_files),
        unpack(heatmap_model),
        unpack(token_store),
        encoder=image_encoder,
        choice=f"{R}/{{dataset}}/embedding/layer.json",
    output:
        tokens=f"{HEATMAPS}/patch_tokens.npy",
        selected=f"{HEATMAPS}/selected.csv",
    log:
        f"{LOGS}/heatmap_patch_tokens.log",
    benchmark:
        f"{BENCH}/heatmap_patch_tokens.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        architecture=lambda wc: DATASETS[wc.dataset]["microscopy"]["model"][
            "architecture"
        ],
        heatmaps=lambda wc: DATASETS[wc.dataset]["microscopy"]["heatmaps"],
        task=heatmap_task,
        batch_size=lambda wc: DATASETS[wc.dataset]["microscopy"]["batch_size"],
        device=lambda wc: DATASETS[wc.dataset]["microscopy"]["device"],
    script:
        "../scripts/heatmap_patch_tokens.py"


rule token_heatmaps:
    input:
        unpack(image_store_files),
        unpack(heatmap_model),
        tokens=f"{HEATMAPS}/patch_tokens.npy",
        selected=f"{HEATMAPS}/selected.csv",
    output:
        channels=multiext(
            f"{R}/{{dataset}}/tables/heatmap_channels", ".csv", ".md", ".tex"
        ),
        summary=multiext(
            f"{R}/{{dataset}}/tables/heatmap_channel_summary", ".csv", ".md", ".tex"
        ),
        figure=report(
            f"{R}/{{dataset}}/figures/token_heatmaps.png",
            caption="../report/token_heatmaps.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        figure_pdf=f"{R}/{{dataset}}/figures/token_heatmaps.pdf",
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
    script:
        "../scripts/token_heatmaps.py"


rule single_cell_check:
    input:
        unpack(heatmap_model),
        images=f"{R}/{{dataset}}/images/images.npy",
        masks=f"{R}/{{dataset}}/images/masks.npy",
        cells=f"{R}/{{dataset}}/images/cells.parquet",
        tokens=f"{HEATMAPS}/patch_tokens.npy",
        selected=f"{HEATMAPS}/selected.csv",
    output:
        cells=f"{R}/{{dataset}}/tables/single_cell_alignment.csv",
        per_image=multiext(
            f"{R}/{{dataset}}/tables/single_cell_images", ".csv", ".md", ".tex"
        ),
        summary=multiext(
            f"{R}/{{dataset}}/tables/single_cell_summary", ".csv", ".md", ".tex"
        ),
        figure=report(
            f"{R}/{{dataset}}/figures/single_cell_alignment.png",
            caption="../report/single_cell_alignment.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        figure_pdf=f"{R}/{{dataset}}/figures/single_cell_alignment.pdf",
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
