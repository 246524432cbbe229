"""ICFL's two atom-selection rules side by side on the demo's synthetic data: Algorithm 1's
signed rule (the L largest <W_m, r>) and OMP's absolute rule (the L largest |<W_m, r>|), over
several simulator seeds, through the workflow's stages.

    python benchmarks/paper_scale.py resolve config/config.yaml > demo.json
    python benchmarks/selection_rules.py demo.json --seeds 0 1 2 --out DIR

For each simulator seed: the `synthetic` dataset of the config simulated with that seed, PCA
whitening fitted on its controls, ICFL trained with each rule (every other setting from the
config), then atom recovery in model space (|cos| >= 0.9) and the last logged training
reconstruction cosine. Writes ``DIR/selection_rules.csv`` and prints mean +/- sd per rule.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

DATASET = "synthetic"


def main() -> None:
    from cellconcepts.config import training_settings
    from cellconcepts.stages.evaluate import atom_recovery
    from cellconcepts.stages.simulate import simulate_superposition
    from cellconcepts.stages.train import train_dictionary
    from cellconcepts.stages.whiten import fit_whitening
    from cellconcepts.store.layout import TokenFiles
    from cellconcepts.variant import Variant

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="the JSON that `paper_scale.py resolve` printed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--whitening", default="pca", choices=["pca", "none"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = json.loads(Path(args.settings).read_text())
    dataset = config["datasets"][DATASET]
    sparsity = dataset.get("dictionary", {}).get("sparsity", config["dictionary"]["sparsity"])[0]
    settings = training_settings(config, DATASET, "icfl")
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        work = out / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        files = TokenFiles(work / "tokens.npy", work / "obs.parquet")
        simulate_superposition(
            tokens=files.tokens,
            obs=files.obs,
            atoms=work / "atoms.npy",
            atom_table=work / "atom_table.csv",
            nuisance=work / "nuisance.csv",
            simulation={**dataset["synthetic"], "seed": seed},
        )
        fit_whitening(
            tokens=files.tokens,
            obs=files.obs,
            whitening=work / "whitening.npz",
            method=args.whitening,
            eps_relative=config["whitening"]["eps_relative"],
            n_components=config["whitening"].get("n_components"),
        )
        for selection in ("signed", "absolute"):
            model = work / selection
            own = {**settings, "icfl": {**settings["icfl"], "selection": selection}}
            train_dictionary(
                tokens=files.tokens,
                obs=files.obs,
                whitening=work / "whitening.npz",
                model=model / "model.pt",
                metrics=model / "metrics.csv",
                dead=model / "dead.csv",
                variant=Variant("icfl", args.whitening, sparsity, 0).name,
                settings=own,
                checkpoint_dir=model / "checkpoints",
                execution={"device": "cpu", "log_every": 100, "checkpoint_every": 10**9},
            )
            atom_recovery(
                model=model / "model.pt",
                whitening=work / "whitening.npz",
                atoms=work / "atoms.npy",
                atom_table=work / "atom_table.csv",
                recovery=model / "recovery.csv",
                threshold=0.9,
            )
            recovery = pd.read_csv(model / "recovery.csv")
            metrics = pd.read_csv(model / "metrics.csv")
            rows.append(
                {
                    "simulator_seed": seed,
                    "selection": selection,
                    "whitening": args.whitening,
                    "atoms_recovered": int(recovery["recovered"].sum()),
                    "n_atoms": len(recovery),
                    "median_best_abs_cos": float(recovery["best_abs_cosine"].median()),
                    "train_recon_cosine": float(metrics["recon_cosine"].iloc[-1]),
                    "dead": int(pd.read_csv(model / "dead.csv")["dead"].sum()),
                }
            )
            pd.DataFrame(rows).to_csv(out / "selection_rules.csv", index=False)
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby("selection")[["atoms_recovered", "train_recon_cosine", "dead"]].agg(
        ["mean", "std"]
    )
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
