rule selectivity:
    input:
        unpack(token_store),
        codes=f"{MODEL}/codes.npz",
    output:
        counts=f"{MODEL}/selectivity_counts.csv",
        best=f"{MODEL}/best_selectivity.csv",
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
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
        thresholds=config["evaluate"]["selectivity_thresholds"],
    script:
        "../scripts/selectivity.py"


rule probe_model:
    input:
        unpack(token_store),
        codes=f"{MODEL}/codes.npz",
        reconstructions=f"{MODEL}/reconstructions.npy",
    output:
        f"{MODEL}/probing.csv",
    log:
        f"{LOGS}/probe_{VARIANT}.log",
    benchmark:
        f"{BENCH}/probe_{VARIANT}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
        probe=config["evaluate"]["probe"],
    script:
        "../scripts/probe.py"


rule probe_raw:
    input:
        unpack(token_store),
    output:
        f"{R}/{{dataset}}/raw/probing.csv",
    log:
        f"{LOGS}/probe_raw.log",
    benchmark:
        f"{BENCH}/probe_raw.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        tasks=lambda wc: DATASETS[wc.dataset]["tasks"],
        probe=config["evaluate"]["probe"],
    script:
        "../scripts/probe.py"


rule atom_recovery:
    input:
        model=f"{MODEL}/model.pt",
        whitening=f"{R}/{{dataset}}/whitening/{{whitening}}.npz",
        atoms=f"{R}/{{dataset}}/ground_truth/atoms.npy",
        atom_table=f"{R}/{{dataset}}/ground_truth/atom_table.csv",
    output:
        f"{MODEL}/atom_recovery.csv",
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
