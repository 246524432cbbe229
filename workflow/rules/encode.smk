rule encode_tokens:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        whitening=paths.whitening(),
        model=paths.model("model.pt"),
    output:
        codes=paths.model("codes.npz"),
        # As large as the token store and read only by the probes.
        reconstructions=temp(paths.model("reconstructions.npy")),
        cosine=paths.model("reconstruction_cosine.parquet"),
    log:
        paths.model_log("encode"),
    benchmark:
        paths.model_benchmark("encode")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    script:
        "../scripts/encode_tokens.py"
