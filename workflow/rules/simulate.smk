rule simulate_superposition:
    output:
        tokens=paths.tokens(),
        obs=paths.token_obs(),
        atoms=paths.ground_truth(layout.ATOMS),
        atom_table=paths.ground_truth(layout.ATOM_TABLE),
        nuisance=paths.ground_truth(layout.NUISANCE),
    log:
        paths.log("simulate_superposition"),
    benchmark:
        paths.benchmark("simulate_superposition")
    wildcard_constraints:
        dataset=plan.datasets_of_kind("synthetic"),
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        simulation=lambda wc: plan.dataset_section(wc, "synthetic"),
    script:
        "../scripts/simulate_superposition.py"


rule simulate_cellpainting:
    output:
        images=paths.images(layout.IMAGES),
        image_obs=paths.images(layout.IMAGE_OBS),
        masks=paths.images(layout.MASKS),
        cells=paths.images(layout.CELLS),
        groups=paths.images(layout.GROUPS),
    log:
        paths.log("simulate_cellpainting"),
    benchmark:
        paths.benchmark("simulate_cellpainting")
    wildcard_constraints:
        dataset=plan.datasets_where(plan.is_simulated_screen),
    # Upstream of the longest chain (train_mae).
    priority: 10
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        simulation=lambda wc: plan.dataset_section(wc, "microscopy", "simulate"),
    script:
        "../scripts/simulate_cellpainting.py"
