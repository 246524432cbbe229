rule simulate_superposition:
    output:
        tokens=TOKENS,
        obs=TOKEN_OBS,
        atoms=f"{DS}/ground_truth/{layout.ATOMS}",
        atom_table=f"{DS}/ground_truth/{layout.ATOM_TABLE}",
        nuisance=f"{DS}/ground_truth/{layout.NUISANCE}",
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
        simulation=lambda wc: dataset_section(wc, "synthetic"),
    script:
        "../scripts/simulate_superposition.py"


rule simulate_cellpainting:
    output:
        images=f"{DS}/images/{layout.IMAGES}",
        image_obs=f"{DS}/images/{layout.IMAGE_OBS}",
        masks=simulated_screen_file(layout.MASKS),
        cells=simulated_screen_file(layout.CELLS),
        groups=simulated_screen_file(layout.GROUPS),
    log:
        f"{LOGS}/simulate_cellpainting.log",
    benchmark:
        f"{BENCH}/simulate_cellpainting.tsv"
    wildcard_constraints:
        dataset=datasets_where(is_simulated_screen),
    # Upstream of the longest chain (train_mae).
    priority: 10
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        simulation=lambda wc: dataset_section(wc, "microscopy", "simulate"),
    script:
        "../scripts/simulate_cellpainting.py"
