rule train_expression_model:
    input:
        unpack(expression_source_input),
    output:
        model=f"{R}/{{dataset}}/embedding/autoencoder.pt",
        history=f"{R}/{{dataset}}/embedding/autoencoder_history.csv",
    log:
        f"{LOGS}/train_expression_model.log",
    benchmark:
        f"{BENCH}/train_expression_model.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("scrna"),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=lambda wc: DATASETS[wc.dataset]["scrna"]["source"],
        autoencoder=lambda wc: DATASETS[wc.dataset]["scrna"]["autoencoder"],
        device=lambda wc: dictionary_settings(config, wc.dataset)["train"]["device"],
    script:
        "../scripts/train_expression_model.py"


rule embed_scrna:
    input:
        unpack(expression_model_input),
    output:
        tokens=f"{STORE}/tokens.npy",
        obs=f"{STORE}/obs.parquet",
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
        scrna=lambda wc: DATASETS[wc.dataset]["scrna"],
        control=lambda wc: DATASETS[wc.dataset]["control"],
        split=lambda wc: DATASETS[wc.dataset]["split"],
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
    script:
        "../scripts/embed_scrna.py"


rule import_tokens:
    input:
        unpack(user_token_inputs),
    output:
        tokens=f"{STORE}/tokens.npy",
        obs=f"{STORE}/obs.parquet",
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
        obsm_key=lambda wc: DATASETS[wc.dataset]["tokens"]["obsm_key"],
        embedding_columns=lambda wc: DATASETS[wc.dataset]["tokens"]["embedding_columns"],
        control=lambda wc: DATASETS[wc.dataset]["control"],
        split=lambda wc: DATASETS[wc.dataset]["split"],
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
    script:
        "../scripts/import_tokens.py"


rule train_mae:
    input:
        unpack(image_store_files),
    output:
        encoder=directory(f"{R}/{{dataset}}/embedding/encoder"),
        history=f"{R}/{{dataset}}/embedding/mae_history.csv",
    log:
        f"{LOGS}/train_mae.log",
    benchmark:
        f"{BENCH}/train_mae.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        architecture=lambda wc: DATASETS[wc.dataset]["microscopy"]["model"][
            "architecture"
        ],
        mae=lambda wc: DATASETS[wc.dataset]["microscopy"]["model"]["mae"],
        device=lambda wc: DATASETS[wc.dataset]["microscopy"]["device"],
        checkpoint=f"{R}/{{dataset}}/checkpoints/mae.pt",
    script:
        "../scripts/train_mae.py"


rule embed_images:
    input:
        unpack(image_store_files),
        encoder=image_encoder,
    output:
        directory(f"{R}/{{dataset}}/embedding/layer_tokens"),
    log:
        f"{LOGS}/embed_images.log",
    benchmark:
        f"{BENCH}/embed_images.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        architecture=lambda wc: DATASETS[wc.dataset]["microscopy"]["model"][
            "architecture"
        ],
        layer=lambda wc: DATASETS[wc.dataset]["microscopy"]["layer"],
        batch_size=lambda wc: DATASETS[wc.dataset]["microscopy"]["batch_size"],
        device=lambda wc: DATASETS[wc.dataset]["microscopy"]["device"],
    script:
        "../scripts/embed_images.py"


rule choose_layer:
    input:
        unpack(image_store_files),
        layers=f"{R}/{{dataset}}/embedding/layer_tokens",
    output:
        tokens=f"{STORE}/tokens.npy",
        obs=f"{STORE}/obs.parquet",
        choice=f"{R}/{{dataset}}/embedding/layer.json",
        table=multiext(f"{R}/{{dataset}}/tables/layer_probe", ".csv", ".md", ".tex"),
        figure=report(
            f"{R}/{{dataset}}/figures/layer_probe.png",
            caption="../report/layer_probe.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        figure_pdf=f"{R}/{{dataset}}/figures/layer_probe.pdf",
    log:
        f"{LOGS}/choose_layer.log",
    benchmark:
        f"{BENCH}/choose_layer.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        layer=lambda wc: DATASETS[wc.dataset]["microscopy"]["layer"],
        layer_task=lambda wc: DATASETS[wc.dataset]["microscopy"]["layer_task"],
        control=lambda wc: DATASETS[wc.dataset]["control"],
        split=lambda wc: DATASETS[wc.dataset]["split"],
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
        probe=config["evaluate"]["probe"],
    script:
        "../scripts/choose_layer.py"
