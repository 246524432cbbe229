rule train_expression_model:
    input:
        unpack(expression_source_input),
    output:
        model=f"{DS}/embedding/autoencoder.pt",
        history=f"{DS}/embedding/autoencoder_history.csv",
    log:
        f"{LOGS}/train_expression_model.log",
    benchmark:
        f"{BENCH}/train_expression_model.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    params:
        source=lambda wc: dataset_section(wc, "scrna", "source"),
        autoencoder=lambda wc: dataset_section(wc, "scrna", "autoencoder"),
    script:
        "../scripts/train_expression_model.py"


rule embed_scrna:
    input:
        unpack(expression_model_input),
    output:
        tokens=TOKENS,
        obs=TOKEN_OBS,
    log:
        f"{LOGS}/embed_scrna.log",
    benchmark:
        f"{BENCH}/embed_scrna.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        source=lambda wc: dataset_section(wc, "scrna", "source"),
        embedding=lambda wc: dataset_section(wc, "scrna", "embedding"),
        control=lambda wc: dataset_section(wc, "control"),
        split=lambda wc: dataset_section(wc, "split"),
        label_columns=label_columns,
    script:
        "../scripts/embed_scrna.py"


rule import_tokens:
    input:
        unpack(user_token_inputs),
    output:
        tokens=TOKENS,
        obs=TOKEN_OBS,
    log:
        f"{LOGS}/import_tokens.log",
    benchmark:
        f"{BENCH}/import_tokens.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("tokens"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        obsm_key=lambda wc: dataset_section(wc, "tokens", "obsm_key"),
        embedding_columns=lambda wc: dataset_section(wc, "tokens", "embedding_columns"),
        control=lambda wc: dataset_section(wc, "control"),
        split=lambda wc: dataset_section(wc, "split"),
        label_columns=label_columns,
    script:
        "../scripts/import_tokens.py"


rule import_images:
    input:
        listing=image_listing,
    output:
        images=f"{DS}/images/{layout.IMAGES}",
        image_obs=f"{DS}/images/{layout.IMAGE_OBS}",
    log:
        f"{LOGS}/import_images.log",
    benchmark:
        f"{BENCH}/import_images.tsv"
    wildcard_constraints:
        dataset=datasets_where(imports_images),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        source=lambda wc: dataset_section(wc, "microscopy", "images"),
    script:
        "../scripts/import_images.py"


rule train_mae:
    input:
        unpack(image_store_files),
    output:
        encoder_config=f"{DS}/embedding/encoder/{layout.ENCODER_CONFIG}",
        encoder_weights=f"{DS}/embedding/encoder/{layout.ENCODER_WEIGHTS}",
        history=f"{DS}/embedding/mae_history.csv",
    log:
        f"{LOGS}/train_mae.log",
    benchmark:
        f"{BENCH}/train_mae.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    # The longest job of the demo (2 min on one core) heads its longest chain: start it first.
    priority: 10
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        architecture=lambda wc: dataset_section(
            wc, "microscopy", "model", "architecture"
        ),
        mae=lambda wc: dataset_section(wc, "microscopy", "model", "mae"),
        # Outside the declared outputs, so that a killed job resumes from it.
        checkpoint=f"{DS}/checkpoints/mae.pt",
    script:
        "../scripts/train_mae.py"


rule embed_images:
    input:
        unpack(image_store_files),
        unpack(image_encoder_files),
    output:
        layer_tokens=temp(f"{DS}/embedding/layer_tokens.npy"),
    log:
        f"{LOGS}/embed_images.log",
    benchmark:
        f"{BENCH}/embed_images.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        architecture=lambda wc: dataset_section(
            wc, "microscopy", "model", "architecture"
        ),
        layers=probed_layers,
    script:
        "../scripts/embed_images.py"


rule choose_layer:
    input:
        image_obs=lambda wc: image_store_files(wc)["image_obs"],
        layer_tokens=f"{DS}/embedding/layer_tokens.npy",
    output:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        choice=f"{DS}/embedding/layer.json",
        table=multiext(f"{DS}/tables/layer_probe", *TABLE_TEXT),
        figure=figure_files(
            f"{DS}/figures/layer_probe", "../report/layer_probe.rst", "5. Embedding"
        ),
    log:
        f"{LOGS}/choose_layer.log",
    benchmark:
        f"{BENCH}/choose_layer.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        layers=probed_layers,
        layer=lambda wc: dataset_section(wc, "microscopy", "layer"),
        layer_task=lambda wc: dataset_section(wc, "microscopy", "layer_task"),
        tasks=lambda wc: dataset_section(wc, "tasks"),
        control=lambda wc: dataset_section(wc, "control"),
        split=lambda wc: dataset_section(wc, "split"),
        probe=probe_settings(),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/choose_layer.py"
