"""Table 1's trend on a CPU: dead features of ICFL and TopK, with and without PCA whitening, as
the dictionary grows (M) and along training (steps), through the workflow's own stages.

    python benchmarks/dead_trend.py --out benchmarks/results/dead_trend --work /tmp/dead_trend \
        [--features 512 2048 8192] [--steps 5000] [--dims 256] [--threads 1]

The paper's Table 1 (Donhauser, Ulicna et al. 2025): of 8192 features after 300k steps of 8192
tokens (d 1024, k 100), dead (active on fewer than 1e-5 of the tokens of the last 1,000 steps):
ICFL 55 without whitening and 341 with it, TopK 7640 and 8026. The tokens here are
config/paper_scale.yaml's synthetic superposition (a known dictionary of 4 atoms per dimension,
about 10 background atoms per token) at a quarter of its width: ``--dims`` dimensions, 4 x
``--dims`` atoms, a quarter of its perturbations (2 atoms each), its cell types, batches,
nuisance and noise, ``--tokens`` tokens. The sparsity keeps the paper's k / d and ICFL its L = 5
atoms per iteration (k = 5 J, J = round(20 dims / 1024): k 25 at d 256). Training keeps the
workflow's defaults (Adam, lr 1e-3, batch ``--batch``; the paper's lr 5e-5 is for 300k steps of
8192 tokens) and the paper's dead-feature rule (the schema's ``dead_window`` 1000 and
``dead_fraction`` 1e-5). Each model trains once to ``--steps``; its dead fraction is read along
the way from the training curve (``frac_dead`` every ``--log-every`` steps, counted once the
window is full).

Writes ``OUT/dead_trend.csv`` (every model's curve: step, dead fraction, reconstruction cosine),
``OUT/dead_trend_final.csv`` (per model: dead features at the last step, atoms recovered at
|cos| >= 0.9 in model space, seconds) and ``OUT/dead_trend.png`` (dead fraction against steps,
one panel per M, and against M at the last step).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATASET = "paper"
PAPER = {"d": 1024, "k": 100, "L": 5}


def trend_config(dims: int, tokens: int, batch: int, steps: int) -> dict[str, Any]:
    """config/paper_scale.yaml at ``dims`` dimensions (see the module docstring), validated
    against the schema so that every default is filled in."""
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config/paper_scale.yaml").read_text())
    synthetic = config["datasets"][DATASET]["synthetic"]
    scale = dims / synthetic["n_dims"]
    synthetic.update(
        n_tokens=tokens,
        n_dims=dims,
        n_atoms=int(round(synthetic["n_atoms"] * scale)),
        n_perturbations=int(round(synthetic["n_perturbations"] * scale)),
    )
    background = (
        synthetic["n_atoms"]
        - synthetic["n_perturbations"] * synthetic["atoms_per_perturbation"]
        - synthetic["n_cell_types"]
    )
    synthetic["background_rate"] = 10 / background  # about 10 background atoms per token
    dictionary = config["dictionary"]
    iterations = max(1, round(PAPER["k"] / PAPER["L"] * dims / PAPER["d"]))
    dictionary["sparsity"] = [PAPER["L"] * iterations]
    dictionary["icfl"] = {"atoms_per_iteration": PAPER["L"]}
    dictionary["train"] = {"steps": steps, "batch_size": batch}
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def prepare(config: dict[str, Any], work: Path) -> dict[str, Path]:
    """Simulate the tokens and fit both whitenings (the workflow's stages)."""
    from cellconcepts.stages.simulate import simulate_superposition
    from cellconcepts.stages.whiten import fit_whitening

    paths = {k: work / f"{k}.csv" for k in ("atom_table", "nuisance")}
    paths.update(tokens=work / "tokens.npy", obs=work / "obs.parquet", atoms=work / "atoms.npy")
    if not paths["tokens"].exists():
        simulate_superposition(
            **{k: paths[k] for k in ("tokens", "obs", "atoms", "atom_table", "nuisance")},
            simulation=config["datasets"][DATASET]["synthetic"],
        )
    for method in config["whitening"]["methods"]:
        paths[method] = work / f"whitening_{method}.npz"
        if not paths[method].exists():
            fit_whitening(
                tokens=paths["tokens"],
                obs=paths["obs"],
                whitening=paths[method],
                method=method,
                eps_relative=config["whitening"]["eps_relative"],
                n_components=None,
            )
    return paths


def train_one(
    config: dict[str, Any], paths: dict[str, Path], variant: str, features: int, work: Path,
    log_every: int, threads: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """Train one model to the config's steps; its curve and its final numbers."""
    from cellconcepts.config import training_settings
    from cellconcepts.stages.evaluate import atom_recovery
    from cellconcepts.stages.train import train_dictionary
    from cellconcepts.variant import Variant

    spec = Variant.parse(variant)
    settings = {**training_settings(config, DATASET, spec.method), "n_features": features}
    model_dir = work / f"M{features}" / variant
    start = time.perf_counter()
    train_dictionary(
        tokens=paths["tokens"], obs=paths["obs"], whitening=paths[spec.whitening],
        model=model_dir / "model.pt", metrics=model_dir / "metrics.csv",
        dead=model_dir / "dead.csv", variant=variant, settings=settings,
        checkpoint_dir=model_dir / "checkpoints", threads=threads,
        execution={"device": "cpu", "log_every": log_every, "checkpoint_every": 10**9},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    atom_recovery(
        model=model_dir / "model.pt", whitening=paths[spec.whitening], atoms=paths["atoms"],
        atom_table=paths["atom_table"], recovery=model_dir / "recovery.csv",
        threshold=config["evaluate"]["atom_recovery_threshold"],
    )  # fmt: skip
    curve = pd.read_csv(model_dir / "metrics.csv")
    window = settings["train"]["dead_window"]
    curve = curve[curve["step"] >= window][["step", "frac_dead", "recon_cosine"]]
    labels = {"method": spec.method, "whitening": spec.whitening, "n_features": features}
    dead = pd.read_csv(model_dir / "dead.csv")["dead"]
    recovery = pd.read_csv(model_dir / "recovery.csv")["recovered"]
    final = {
        **labels, "k": spec.sparsity, "steps": settings["train"]["steps"],
        "batch": settings["train"]["batch_size"], "lr": settings["train"]["lr"],
        "dead": int(dead.sum()), "dead_fraction": float(dead.mean()),
        "recon_cosine": float(curve["recon_cosine"].iloc[-1]),
        "atoms_recovered": int(recovery.sum()), "n_atoms": len(recovery),
        "seconds": seconds,
    }  # fmt: skip
    return curve.assign(**labels), final


def plot(curves: pd.DataFrame, finals: pd.DataFrame, path: Path) -> None:
    """Dead fraction against steps (one panel per M) and against M at the last step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(curves["n_features"].unique())
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(3.6 * (len(sizes) + 1), 3.2))
    styles = {("icfl", "pca"): ("C0", "-"), ("icfl", "none"): ("C0", "--"),
              ("topk", "pca"): ("C3", "-"), ("topk", "none"): ("C3", "--")}  # fmt: skip
    for ax, size in zip(axes, sizes, strict=False):
        for (method, white), curve in curves[curves["n_features"] == size].groupby(
            ["method", "whitening"]
        ):
            color, line = styles[(method, white)]
            ax.plot(curve["step"], curve["frac_dead"], color=color, linestyle=line,
                    label=f"{method.upper() if method == 'icfl' else 'TopK'} {white}")  # fmt: skip
        ax.set(title=f"M = {size}", xlabel="training step", ylim=(-0.02, 1.02))
    axes[0].set_ylabel("dead fraction (last 1,000 steps)")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for (method, white), final in finals.groupby(["method", "whitening"]):
        color, line = styles[(method, white)]
        final = final.sort_values("n_features")
        ax.plot(final["n_features"], final["dead_fraction"], color=color, linestyle=line,
                marker="o")  # fmt: skip
    ax.set(xscale="log", xlabel="features M", title="at the last step", ylim=(-0.02, 1.02))
    ax.set_xticks(sizes, [str(size) for size in sizes])
    ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, help="tokens and models (default OUT/work)")
    parser.add_argument("--features", nargs="+", type=int, default=[512, 2048, 8192])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=200000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replot", action="store_true", help="only redraw OUT's figure")
    args = parser.parse_args()
    if args.replot:
        curves, finals = (
            pd.read_csv(args.out / f) for f in ("dead_trend.csv", "dead_trend_final.csv")
        )
        plot(curves, finals, args.out / "dead_trend.png")
        return
    logging.basicConfig(level=logging.WARNING)
    from cellconcepts.variant import Variant

    config = trend_config(args.dims, args.tokens, args.batch, args.steps)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dead_trend_config.json").write_text(json.dumps(config, indent=1))
    paths = prepare(config, work)
    k = config["dictionary"]["sparsity"][0]
    curves, finals = [], []
    for features in args.features:
        for method in ("icfl", "topk"):
            for white in ("none", "pca"):
                variant = Variant(method, white, k, 0).name
                curve, final = train_one(
                    config, paths, variant, features, work, args.log_every, args.threads
                )
                curves.append(curve)
                finals.append(final)
                print(pd.DataFrame([final]).to_string(index=False, header=len(finals) == 1),
                      flush=True)  # fmt: skip
                pd.concat(curves).to_csv(args.out / "dead_trend.csv", index=False)
                pd.DataFrame(finals).to_csv(args.out / "dead_trend_final.csv", index=False)
        plot(pd.concat(curves), pd.DataFrame(finals), args.out / "dead_trend.png")


if __name__ == "__main__":
    main()
