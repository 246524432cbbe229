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


rule simulate_cellpainting:
    output:
        images=f"{R}/{{dataset}}/images/images.npy",
        obs=f"{R}/{{dataset}}/images/obs.parquet",
        masks=f"{R}/{{dataset}}/images/masks.npy",
        cells=f"{R}/{{dataset}}/images/cells.parquet",
        groups=f"{R}/{{dataset}}/images/groups.csv",
    log:
        f"{LOGS}/simulate_cellpainting.log",
    benchmark:
        f"{BENCH}/simulate_cellpainting.tsv"
    wildcard_constraints:
        dataset=datasets_of_kind("microscopy"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        simulation=lambda wc: DATASETS[wc.dataset]["microscopy"]["simulate"],
    script:
        "../scripts/simulate_cellpainting.py"
