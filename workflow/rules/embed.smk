rule train_expression_model:
    input:
        unpack(plan.expression_source_input),
    output:
        model=paths.embedding("autoencoder.pt"),
        history=paths.embedding("autoencoder_history.csv"),
    log:
        paths.log("train_expression_model"),
    benchmark:
        paths.benchmark("train_expression_model")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    params:
        source=lambda wc: plan.dataset_section(wc, "scrna", "source"),
        autoencoder=lambda wc: plan.dataset_section(wc, "scrna", "autoencoder"),
    script:
        "../scripts/train_expression_model.py"


rule embed_scrna:
    input:
        unpack(plan.expression_model_input),
    output:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
    log:
        paths.log("embed_scrna"),
    benchmark:
        paths.benchmark("embed_scrna")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("scrna"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        source=lambda wc: plan.dataset_section(wc, "scrna", "source"),
        embedding=lambda wc: plan.dataset_section(wc, "scrna", "embedding"),
        control=lambda wc: plan.dataset_section(wc, "control"),
        split=lambda wc: plan.dataset_section(wc, "split"),
        label_columns=plan.label_columns,
    script:
        "../scripts/embed_scrna.py"


rule import_tokens:
    input:
        unpack(plan.user_token_inputs),
    output:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
    log:
        paths.log("import_tokens"),
    benchmark:
        paths.benchmark("import_tokens")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("tokens"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        obsm_key=lambda wc: plan.dataset_section(wc, "tokens", "obsm_key"),
        embedding_columns=lambda wc: plan.dataset_section(
            wc, "tokens", "embedding_columns"
        ),
        control=lambda wc: plan.dataset_section(wc, "control"),
        split=lambda wc: plan.dataset_section(wc, "split"),
        label_columns=plan.label_columns,
    script:
        "../scripts/import_tokens.py"


rule import_images:
    input:
        listing=plan.image_listing,
    output:
        images=paths.images(layout.IMAGES),
        image_obs=paths.images(layout.IMAGE_OBS),
    log:
        paths.log("import_images"),
    benchmark:
        paths.benchmark("import_images")
    wildcard_constraints:
        dataset=plan.datasets_where(plan.imports_images),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        source=lambda wc: plan.dataset_section(wc, "microscopy", "images"),
    script:
        "../scripts/import_images.py"


rule train_mae:
    input:
        unpack(plan.image_store_files),
    output:
        encoder_config=paths.encoder(layout.ENCODER_CONFIG),
        encoder_weights=paths.encoder(layout.ENCODER_WEIGHTS),
        history=paths.embedding("mae_history.csv"),
    log:
        paths.log("train_mae"),
    benchmark:
        paths.benchmark("train_mae")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    # The longest job of the demo (2 min on one core) heads its longest chain: start it first.
    priority: 10
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        architecture=lambda wc: plan.dataset_section(
            wc, "microscopy", "model", "architecture"
        ),
        mae=lambda wc: plan.dataset_section(wc, "microscopy", "model", "mae"),
        # Outside the declared outputs, so that a killed job resumes from it.
        checkpoint=paths.checkpoints("mae.pt"),
    script:
        "../scripts/train_mae.py"


rule embed_images:
    input:
        unpack(plan.image_store_files),
        unpack(plan.image_encoder_files),
    output:
        layer_tokens=temp(paths.embedding("layer_tokens.npy")),
    log:
        paths.log("embed_images"),
    benchmark:
        paths.benchmark("embed_images")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        architecture=lambda wc: plan.dataset_section(
            wc, "microscopy", "model", "architecture"
        ),
        layers=plan.probed_layers,
    script:
        "../scripts/embed_images.py"


rule choose_layer:
    input:
        image_obs=lambda wc: plan.image_store_files(wc)["image_obs"],
        layer_tokens=paths.embedding("layer_tokens.npy"),
    output:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        choice=paths.embedding("layer.json"),
        table=multiext(paths.table("layer_probe"), *TABLE_TEXT),
        figure=figure_files(
            paths.figure("layer_probe"), "../report/layer_probe.rst", "5. Embedding"
        ),
    log:
        paths.log("choose_layer"),
    benchmark:
        paths.benchmark("choose_layer")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        layers=plan.probed_layers,
        layer=lambda wc: plan.dataset_section(wc, "microscopy", "layer"),
        layer_task=lambda wc: plan.dataset_section(wc, "microscopy", "layer_task"),
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        control=lambda wc: plan.dataset_section(wc, "control"),
        split=lambda wc: plan.dataset_section(wc, "split"),
        probe=plan.probe_settings(),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/choose_layer.py"
