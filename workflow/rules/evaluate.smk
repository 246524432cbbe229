rule selectivity:
    input:
        obs=TOKEN_OBS,
        codes=f"{MODEL}/codes.npz",
    output:
        counts=f"{MODEL}/selectivity_counts.csv",
        best=f"{MODEL}/best_selectivity.csv",
        label_scores=f"{MODEL}/label_scores.csv",
    log:
        f"{LOGS}/selectivity_{VARIANT}.log",
    benchmark:
        f"{BENCH}/selectivity_{VARIANT}.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        tasks=lambda wc: dataset_section(wc, "tasks"),
        thresholds=config["evaluate"]["selectivity_thresholds"],
        probe=probe_settings(),
        significance=config["evaluate"]["significance"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/selectivity.py"


rule probe_model:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        codes=f"{MODEL}/codes.npz",
        reconstructions=f"{MODEL}/reconstructions.npy",
    output:
        probing=f"{MODEL}/probing.csv",
    log:
        f"{LOGS}/probe_{VARIANT}.log",
    benchmark:
        f"{BENCH}/probe_{VARIANT}.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: dataset_section(wc, "tasks"),
        probe=probe_settings(),
        min_label_size=config["evaluate"]["min_label_size"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
    script:
        "../scripts/probe_model.py"


rule probe_raw:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        validation=VALIDATION,
    output:
        probing=f"{DS}/raw/probing.csv",
    log:
        f"{LOGS}/probe_raw.log",
    benchmark:
        f"{BENCH}/probe_raw.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: dataset_section(wc, "tasks"),
        probe=probe_settings(),
        min_label_size=config["evaluate"]["min_label_size"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
    script:
        "../scripts/probe_raw.py"


rule selectivity_references:
    input:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        validation=VALIDATION,
    output:
        references=f"{DS}/raw/references.csv",
    log:
        f"{LOGS}/selectivity_references.log",
    benchmark:
        f"{BENCH}/selectivity_references.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: dataset_section(wc, "tasks"),
        probe=probe_settings(),
        settings=config["evaluate"]["references"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/selectivity_references.py"


rule compare_variants:
    input:
        obs=TOKEN_OBS,
        codes=lambda wc: model_files(wc.dataset, "codes.npz"),
        label_scores=lambda wc: model_files(wc.dataset, "label_scores.csv"),
    output:
        intervals=table_files(
            f"{DS}/tables/selectivity_intervals",
            "../report/selectivity_intervals.rst",
            "4. Selectivity",
        ),
        differences=table_files(
            f"{DS}/tables/selectivity_differences",
            "../report/selectivity_differences.rst",
            "4. Selectivity",
        ),
        verdicts=table_files(
            f"{DS}/tables/selectivity_verdicts",
            "../report/selectivity_verdicts.rst",
            "4. Selectivity",
        ),
        claim=table_files(
            f"{DS}/tables/claim",
            "../report/claim.rst",
            "1. Headline",
        ),
    log:
        f"{LOGS}/compare_variants.log",
    benchmark:
        f"{BENCH}/compare_variants.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        variants=variant_names,
        tasks=lambda wc: dataset_section(wc, "tasks"),
        probe=probe_settings(),
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/compare_variants.py"


rule group_detectability:
    input:
        unpack(detectability_inputs),
    output:
        groups=table_files(
            f"{DS}/tables/group_detectability",
            "../report/group_detectability.rst",
            "4. Selectivity",
        ),
    log:
        f"{LOGS}/group_detectability.log",
    benchmark:
        f"{BENCH}/group_detectability.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        variants=variant_names,
        task=lambda wc: task_named(
            wc.dataset, dataset_section(wc, "microscopy", "heatmaps", "task")
        ),
        exclude=lambda wc: dataset_section(wc, "microscopy", "heatmaps", "exclude"),
        probe=probe_settings(),
        folds=config["evaluate"]["references"]["folds"],
        bootstrap=config["evaluate"]["bootstrap"],
        resample_unit=lambda wc: dataset_section(wc, "resample_unit"),
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/group_detectability.py"


rule atom_recovery:
    input:
        model=f"{MODEL}/model.pt",
        whitening=WHITENING,
        atoms=f"{DS}/ground_truth/{layout.ATOMS}",
        atom_table=f"{DS}/ground_truth/{layout.ATOM_TABLE}",
    output:
        recovery=f"{MODEL}/atom_recovery.csv",
    log:
        f"{LOGS}/atom_recovery_{VARIANT}.log",
    benchmark:
        f"{BENCH}/atom_recovery_{VARIANT}.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("synthetic"),
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
        unpack(feature_cosine_inputs),
    output:
        table=table_files(
            f"{DS}/tables/feature_cosines",
            "../report/table_feature_cosines.rst",
            "4. Selectivity",
        ),
        histograms=f"{DS}/tables/feature_cosine_histograms.csv",
        figure=figure_files(
            f"{DS}/figures/feature_cosines",
            "../report/feature_cosines.rst",
            "4. Selectivity",
        ),
    log:
        f"{LOGS}/feature_cosines.log",
    benchmark:
        f"{BENCH}/feature_cosines.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task=lambda wc: dataset_section(wc, "tasks")[0],
        n_labels=6,
        min_label_size=config["evaluate"]["min_label_size"],
    script:
        "../scripts/feature_cosines.py"
