"""Are the demo's synthetic dictionaries trained long enough? Atom recovery after more and more
steps, for every variant and seed, through the workflow's own training settings.

    python benchmarks/paper_scale.py resolve config/config.yaml > demo.json
    snakemake --cores all          # the demo: tokens, whitening and ground truth to start from
    python benchmarks/synthetic_steps.py demo.json --results results/synthetic \
        --steps 1000 1500 2000 3000 --seeds 0 1 --out DIR

Each variant is one run continued from checkpoint to checkpoint (a resumed run equals a straight
run of the same length on CPU, `cellconcepts.dictionary.training`), so the step counts cost no
more than the longest. Recovery is measured as the `atom_recovery` rule does: the share of true
atoms with a learned direction at |cosine| >= the config's threshold, in the model's space.
Writes ``DIR/synthetic_steps.csv`` and prints recovery per variant (rows) and steps (columns).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATASET = "synthetic"


def main() -> None:
    import torch

    from cellconcepts.config import training_settings
    from cellconcepts.dictionary.models import decoder_directions
    from cellconcepts.dictionary.training import train_dictionary
    from cellconcepts.dictionary.whitening import Whitening
    from cellconcepts.evaluate.recovery import atom_recovery
    from cellconcepts.stages.train import _dictionary, _train_config
    from cellconcepts.store import layout
    from cellconcepts.store.tokens import TokenStore
    from cellconcepts.variant import Variant

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="the JSON that `paper_scale.py resolve` printed")
    parser.add_argument("--results", required=True, help="the demo's results/synthetic")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 1500, 2000, 3000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = json.loads(Path(args.settings).read_text())
    root = Path(args.results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = TokenStore.open(
        layout.TokenFiles(root / "tokens" / "tokens.npy", root / "tokens" / "obs.parquet"),
        columns=["split"],
    )
    rows = np.flatnonzero(store.obs["split"].to_numpy() == "train")
    atoms = np.load(root / "ground_truth" / layout.ATOMS)
    threshold = config["evaluate"]["atom_recovery_threshold"]
    sparsity = config["dictionary"]["sparsity"][0]
    execution = {"device": "cpu", "log_every": 50, "checkpoint_every": 500}
    records = []
    for seed in args.seeds:
        for method in config["dictionary"]["methods"]:
            for whitening in config["whitening"]["methods"]:
                spec = Variant(method, whitening, int(sparsity), int(seed))
                variant = spec.name
                settings = training_settings(config, DATASET, spec.method)
                transform = Whitening.load(root / "whitening" / f"{whitening}.npz")
                model = _dictionary(spec, settings, transform.output_dim)
                true = transform.directions_to_model_space(atoms.T).T
                run_dir = out / "checkpoints" / variant
                shutil.rmtree(run_dir, ignore_errors=True)  # a rerun must not resume an old run
                started = time.perf_counter()
                for steps in sorted(args.steps):
                    run = dict(settings, train=dict(settings["train"], steps=steps))
                    train_dictionary(
                        model,
                        store.tokens,
                        rows,
                        transform.transform,
                        _train_config(spec, run, execution, args.threads),
                        checkpoint_dir=run_dir,
                        metrics_path=run_dir / "metrics.csv",
                    )
                    table = atom_recovery(true, decoder_directions(model), threshold=threshold)
                    records.append(
                        {
                            "variant": f"{method} + {whitening}",
                            "seed": seed,
                            "steps": steps,
                            "atom_recovery": float(table["recovered"].mean()),
                            "seconds": round(time.perf_counter() - started, 1),
                        }
                    )
                    print(records[-1], flush=True)
    frame = pd.DataFrame(records)
    frame.to_csv(out / "synthetic_steps.csv", index=False)
    summary = frame.pivot_table(
        index="variant", columns="steps", values="atom_recovery", aggfunc=["mean", "std"]
    )
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
