rule fit_whitening:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        validation=VALIDATION,
    output:
        whitening=WHITENING,
    log:
        f"{LOGS}/fit_whitening_{{whitening}}.log",
    benchmark:
        f"{BENCH}/fit_whitening_{{whitening}}.tsv"
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
