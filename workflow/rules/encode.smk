rule encode_tokens:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        whitening=WHITENING,
        model=f"{MODEL}/model.pt",
    output:
        codes=f"{MODEL}/codes.npz",
        # As large as the token store and read only by the probes.
        reconstructions=temp(f"{MODEL}/reconstructions.npy"),
        cosine=f"{MODEL}/reconstruction_cosine.parquet",
    log:
        f"{LOGS}/encode_{VARIANT}.log",
    benchmark:
        f"{BENCH}/encode_{VARIANT}.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    script:
        "../scripts/encode_tokens.py"
