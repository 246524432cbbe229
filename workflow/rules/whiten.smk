rule fit_whitening:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        validation=paths.validation(),
    output:
        whitening=paths.whitening(),
    log:
        paths.log("fit_whitening_{whitening}"),
    benchmark:
        paths.benchmark("fit_whitening_{whitening}")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        method=lambda wc: wc.whitening,
        eps_relative=config["whitening"]["eps_relative"],
        n_components=config["whitening"]["n_components"],
    script:
        "../scripts/fit_whitening.py"
