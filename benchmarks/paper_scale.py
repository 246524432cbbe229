"""The paper-scale run on one device through the workflow's own stages, without Snakemake:
seconds per training step with data loading included, the projected time of the config's full
run, and what the four dictionaries look like after the steps that fit in a time budget.

    # here, where Snakemake is installed: the config with the schema's defaults, as JSON
    python benchmarks/paper_scale.py resolve config/paper_scale.yaml > paper_scale.json
    # anywhere with torch (e.g. a GPU machine without Snakemake)
    python benchmarks/paper_scale.py run paper_scale.json --tokens 1000000 \
        --train-seconds 240 --device cuda --out DIR

`run` simulates the config's superposition data with ``--tokens`` tokens (the config's other
simulation settings unchanged), fits both whitenings on the controls, times a few steps of each
method on the real batches to choose one number of steps that fits all four trainings in
``--train-seconds`` (capped by the config's steps), trains ICFL and TopK with PCA and without
whitening at the config's batch, learning rate and dead-feature window, and measures atom
recovery. Prints and writes ``DIR/paper_scale.csv``: per model the steps, tokens seen, seconds
per step, the projected hours for the config's steps, dead features over the last window,
the final reconstruction cosine and the atoms recovered at |cos| >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATASET = "paper"
RECOVERY_THRESHOLD = 0.9


def resolve(config_file: str) -> None:
    """Print the config with the schema's defaults filled in, as Snakemake's validate does."""
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load(Path(config_file).read_text())
    validate(config, str(Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"))
    json.dump(config, sys.stdout, indent=1)


def _step_seconds(
    variant: str, settings: dict[str, Any], store: Any, transform: Any, device: str
) -> float:
    """Seconds per training step of a fresh model on the store's first batch (2 warm-up steps,
    then 3 timed)."""
    import torch

    from cellconcepts.stages.train import _dictionary
    from cellconcepts.variant import Variant

    spec = Variant.parse(variant)
    model = _dictionary(spec, settings, transform.output_dim).to(device)
    batch = np.asarray(store.tokens[: settings["train"]["batch_size"]])
    x = transform.transform(torch.as_tensor(batch, device=device))
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(5):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss = model.selected_loss(x)[0]  # what training computes
        loss.backward()
        optimiser.step()
        model.after_step(step + 1, generator)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def run(args: argparse.Namespace) -> None:
    from cellconcepts.config import training_settings
    from cellconcepts.dictionary.whitening import Whitening
    from cellconcepts.stages.evaluate import atom_recovery
    from cellconcepts.stages.simulate import simulate_superposition
    from cellconcepts.stages.train import train_dictionary
    from cellconcepts.stages.whiten import fit_whitening
    from cellconcepts.store.layout import TokenFiles
    from cellconcepts.store.tokens import TokenStore
    from cellconcepts.variant import Variant

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = json.loads(Path(args.settings).read_text())
    dataset = config["datasets"][DATASET]
    out = Path(args.out)
    work = Path(args.work or out / "work")
    work.mkdir(parents=True, exist_ok=True)
    files = TokenFiles(work / "tokens.npy", work / "obs.parquet")
    truth = {k: work / f"{k}.csv" for k in ("atom_table", "nuisance")}
    simulation = {**dataset["synthetic"], "n_tokens": args.tokens}
    start = time.perf_counter()
    simulate_superposition(
        tokens=files.tokens, obs=files.obs, atoms=work / "atoms.npy", **truth, simulation=simulation
    )
    seconds = {"simulate": time.perf_counter() - start}
    whitening = {}
    for method in config["whitening"]["methods"]:
        start = time.perf_counter()
        whitening[method] = work / f"whitening_{method}.npz"
        fit_whitening(
            tokens=files.tokens,
            obs=files.obs,
            whitening=whitening[method],
            method=method,
            eps_relative=config["whitening"]["eps_relative"],
            n_components=config["whitening"].get("n_components"),
        )
        seconds[f"whiten_{method}"] = time.perf_counter() - start
    store = TokenStore.open(files, columns=["split"])
    n_train = int((store.obs["split"] == "train").sum())
    variants = [
        Variant(method, white, int(k), int(seed)).name
        for method in config["dictionary"]["methods"]
        for white in config["whitening"]["methods"]
        for k in config["dictionary"]["sparsity"]
        for seed in config["dictionary"]["seeds"]
    ]
    settings = {v: training_settings(config, DATASET, v.split("_")[0]) for v in variants}
    probe = {
        v: _step_seconds(
            v, settings[v], store, Whitening.load(whitening[v.split("_")[1]]), args.device
        )
        for v in variants
    }
    config_steps = settings[variants[0]]["train"]["steps"]
    steps = args.steps or int(args.train_seconds / (1.15 * sum(probe.values())) // 100 * 100)
    steps = max(1, min(config_steps, steps))
    print(f"pure step seconds {probe}; training each model for {steps} steps", flush=True)
    rows = []
    for variant in variants:
        white = variant.split("_")[1]
        own = {**settings[variant], "train": {**settings[variant]["train"], "steps": steps}}
        model_dir = work / variant
        start = time.perf_counter()
        train_dictionary(
            tokens=files.tokens,
            obs=files.obs,
            whitening=whitening[white],
            model=model_dir / "model.pt",
            metrics=model_dir / "metrics.csv",
            dead=model_dir / "dead.csv",
            variant=variant,
            settings=own,
            checkpoint_dir=model_dir / "checkpoints",
            execution={"device": args.device, "log_every": 100, "checkpoint_every": 10**9},
        )
        wall = time.perf_counter() - start
        atom_recovery(
            model=model_dir / "model.pt",
            whitening=whitening[white],
            atoms=work / "atoms.npy",
            atom_table=truth["atom_table"],
            recovery=model_dir / "recovery.csv",
            threshold=RECOVERY_THRESHOLD,
        )
        metrics = pd.read_csv(model_dir / "metrics.csv")
        recovery = pd.read_csv(model_dir / "recovery.csv")
        dead = pd.read_csv(model_dir / "dead.csv")
        batch = own["train"]["batch_size"]
        rows.append(
            {
                "model": variant,
                "device": args.device,
                "tokens": args.tokens,
                "train_tokens": n_train,
                "steps": steps,
                "batch": batch,
                "tokens_seen": steps * batch,
                "lr": own["train"]["lr"],
                "step_s_pure": probe[variant],
                "step_s_with_data": wall / steps,
                "projected_h_config_steps": wall / steps * config_steps / 3600,
                "dead": int(dead["dead"].sum()),
                "n_features": len(dead),
                "dead_window": min(own["train"]["dead_window"], steps),
                "recon_cosine": float(metrics["recon_cosine"].iloc[-1]),
                "atoms_recovered": int(recovery["recovered"].sum()),
                "n_atoms": len(recovery),
                "median_best_abs_cos": float(recovery["best_abs_cosine"].median()),
            }
        )
        table = pd.DataFrame(rows)
        table.to_csv(out / "paper_scale.csv", index=False)
        print(table.iloc[-1].to_string(), flush=True)
    (out / "paper_scale_seconds.json").write_text(json.dumps(seconds, indent=1))
    print(pd.DataFrame(rows).to_string(index=False))
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    resolve_parser = commands.add_parser("resolve", help="print the config with its defaults")
    resolve_parser.add_argument("config")
    run_parser = commands.add_parser("run", help="simulate, whiten, train and evaluate")
    run_parser.add_argument("settings", help="the JSON that `resolve` printed")
    run_parser.add_argument("--tokens", type=int, default=1_000_000)
    run_parser.add_argument("--train-seconds", type=float, default=240.0)
    run_parser.add_argument("--steps", type=int, help="steps per model (default: the budget's)")
    run_parser.add_argument("--device", default="cuda")
    run_parser.add_argument("--out", required=True)
    run_parser.add_argument("--work", help="where the store and models go (default OUT/work)")
    args = parser.parse_args()
    if args.command == "resolve":
        resolve(args.config)
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        run(args)


if __name__ == "__main__":
    main()
