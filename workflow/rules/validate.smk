rule validate_dataset:
    input:
        unpack(plan.enrichment_inputs),
        tokens=paths.tokens(),
        obs=paths.token_obs(),
    output:
        validation=paths.validation(),
    log:
        paths.log("validate_dataset"),
    benchmark:
        paths.benchmark("validate_dataset")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        min_label_size=config["evaluate"]["min_label_size"],
        probe=plan.probe_settings(),
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
        enrichment=plan.validation_enrichment,
        source=lambda wc: input_source(config, wc.dataset),
        whitening=plan.pick(
            config["whitening"],
            ["methods", "n_components", "allow_dropped_dimensions"],
        ),
        sparsity=lambda wc: dictionary_settings(config, wc.dataset)["sparsity"],
    script:
        "../scripts/validate_dataset.py"
