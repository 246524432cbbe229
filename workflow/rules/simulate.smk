rule simulate_superposition:
    output:
        tokens=f"{STORE}/tokens.npy",
        obs=f"{STORE}/obs.parquet",
        atoms=f"{R}/{{dataset}}/ground_truth/atoms.npy",
        atom_table=f"{R}/{{dataset}}/ground_truth/atom_table.csv",
        nuisance=f"{R}/{{dataset}}/ground_truth/nuisance.npy",
    log:
        f"{LOGS}/simulate_superposition.log",
    benchmark:
        f"{BENCH}/simulate_superposition.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("synthetic"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        simulation=lambda wc: DATASETS[wc.dataset]["synthetic"],
    script:
        "../scripts/simulate_superposition.py"
