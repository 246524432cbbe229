rule encode_tokens:
    input:
        unpack(token_store),
        whitening=f"{R}/{{dataset}}/whitening/{{whitening}}.npz",
        model=f"{MODEL}/model.pt",
    output:
        codes=f"{MODEL}/codes.npz",
        reconstructions=f"{MODEL}/reconstructions.npy",
        cosine=f"{MODEL}/reconstruction_cosine.parquet",
    log:
        f"{LOGS}/encode_{VARIANT}.log",
    benchmark:
        f"{BENCH}/encode_{VARIANT}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        batch_size=config["encode"]["batch_size"],
        device=lambda wc: dictionary_settings(config, wc.dataset)["train"]["device"],
    script:
        "../scripts/encode_tokens.py"
