rule train_dictionary:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        whitening=paths.whitening(),
    output:
        model=paths.model("model.pt"),
        metrics=paths.model("metrics.csv"),
        dead=paths.model("dead_features.csv"),
    log:
        paths.model_log("train"),
    benchmark:
        paths.model_benchmark("train")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        variant=plan.variant_name,
        settings=lambda wc: training_settings(config, wc.dataset, wc.method),
        # Checkpoints live outside the declared outputs so a failed or killed job keeps them
        # and the next run resumes from the last one.
        checkpoint_dir=lambda wc: paths.checkpoints(plan.variant_name(wc), wc.dataset),
    script:
        "../scripts/train_dictionary.py"
