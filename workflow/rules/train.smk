rule train_dictionary:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        whitening=WHITENING,
    output:
        model=f"{MODEL}/model.pt",
        metrics=f"{MODEL}/metrics.csv",
        dead=f"{MODEL}/dead_features.csv",
    log:
        f"{LOGS}/train_{VARIANT}.log",
    benchmark:
        f"{BENCH}/train_{VARIANT}.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        variant=variant_name,
        settings=lambda wc: training_settings(config, wc.dataset, wc.method),
        # Checkpoints live outside the declared outputs so a failed or killed job keeps them
        # and the next run resumes from the last one.
        checkpoint_dir=lambda wc: f"{R}/{wc.dataset}/checkpoints/{variant_name(wc)}",
    script:
        "../scripts/train_dictionary.py"
