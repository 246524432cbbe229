rule selectivity:
    input:
        obs=paths.token_obs(),
        codes=paths.model("codes.npz"),
    output:
        counts=paths.model("selectivity_counts.csv"),
        best=paths.model("best_selectivity.csv"),
        label_scores=paths.model("label_scores.csv"),
    log:
        paths.model_log("selectivity"),
    benchmark:
        paths.model_benchmark("selectivity")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        thresholds=config["evaluate"]["selectivity_thresholds"],
        probe=plan.probe_settings(),
        significance=config["evaluate"]["significance"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/selectivity.py"


rule probe_model:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        codes=paths.model("codes.npz"),
        reconstructions=paths.model("reconstructions.npy"),
    output:
        probing=paths.model("probing.csv"),
    log:
        paths.model_log("probe"),
    benchmark:
        paths.model_benchmark("probe")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        probe=plan.probe_settings(),
        min_label_size=config["evaluate"]["min_label_size"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
    script:
        "../scripts/probe_model.py"


rule probe_raw:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        validation=paths.validation(),
    output:
        probing=paths.raw("probing.csv"),
    log:
        paths.log("probe_raw"),
    benchmark:
        paths.benchmark("probe_raw")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        probe=plan.probe_settings(),
        min_label_size=config["evaluate"]["min_label_size"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
    script:
        "../scripts/probe_raw.py"


rule selectivity_references:
    input:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        validation=paths.validation(),
    output:
        references=paths.raw("references.csv"),
    log:
        paths.log("selectivity_references"),
    benchmark:
        paths.benchmark("selectivity_references")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        probe=plan.probe_settings(),
        settings=config["evaluate"]["references"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/selectivity_references.py"


rule compare_variants:
    input:
        obs=paths.token_obs(),
        codes=lambda wc: plan.model_files(wc.dataset, "codes.npz"),
        label_scores=lambda wc: plan.model_files(wc.dataset, "label_scores.csv"),
    output:
        intervals=table_files(
            paths.table("selectivity_intervals"),
            "../report/selectivity_intervals.rst",
            "4. Selectivity",
        ),
        differences=table_files(
            paths.table("selectivity_differences"),
            "../report/selectivity_differences.rst",
            "4. Selectivity",
        ),
        verdicts=table_files(
            paths.table("selectivity_verdicts"),
            "../report/selectivity_verdicts.rst",
            "4. Selectivity",
        ),
        claim=table_files(
            paths.table("claim"),
            "../report/claim.rst",
            "1. Headline",
        ),
    log:
        paths.log("compare_variants"),
    benchmark:
        paths.benchmark("compare_variants")
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        variants=plan.variant_names,
        tasks=lambda wc: plan.dataset_section(wc, "tasks"),
        probe=plan.probe_settings(),
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/compare_variants.py"


rule group_detectability:
    input:
        unpack(plan.detectability_inputs),
    output:
        groups=table_files(
            paths.table("group_detectability"),
            "../report/group_detectability.rst",
            "4. Selectivity",
        ),
    log:
        paths.log("group_detectability"),
    benchmark:
        paths.benchmark("group_detectability")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        variants=plan.variant_names,
        task=lambda wc: plan.task_named(
            wc.dataset, plan.dataset_section(wc, "microscopy", "heatmaps", "task")
        ),
        exclude=lambda wc: plan.dataset_section(wc, "microscopy", "heatmaps", "exclude"),
        probe=plan.probe_settings(),
        folds=config["evaluate"]["references"]["folds"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: plan.dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/group_detectability.py"


rule atom_recovery:
    input:
        model=paths.model("model.pt"),
        whitening=paths.whitening(),
        atoms=paths.ground_truth(layout.ATOMS),
        atom_table=paths.ground_truth(layout.ATOM_TABLE),
    output:
        recovery=paths.model("atom_recovery.csv"),
    log:
        paths.model_log("atom_recovery"),
    benchmark:
        paths.model_benchmark("atom_recovery")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("synthetic"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        threshold=config["evaluate"]["atom_recovery_threshold"],
    script:
        "../scripts/atom_recovery.py"


rule feature_cosines:
    input:
        unpack(plan.feature_cosine_inputs),
    output:
        table=table_files(
            paths.table("feature_cosines"),
            "../report/table_feature_cosines.rst",
            "4. Selectivity",
        ),
        histograms=paths.table("feature_cosine_histograms.csv"),
        figure=figure_files(
            paths.figure("feature_cosines"),
            "../report/feature_cosines.rst",
            "4. Selectivity",
        ),
    log:
        paths.log("feature_cosines"),
    benchmark:
        paths.benchmark("feature_cosines")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task=lambda wc: plan.dataset_section(wc, "tasks")[0],
        n_labels=6,
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/feature_cosines.py"
