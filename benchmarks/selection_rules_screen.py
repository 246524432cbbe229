"""ICFL's two atom-selection rules on the demo's simulated screen: Algorithm 1's signed rule and
OMP's absolute rule, with and without control whitening, over model seeds, through the
workflow's stages, on the tokens and whitening fits of a finished demo run.

    python benchmarks/paper_scale.py resolve config/config.yaml > demo.json
    snakemake --cores all            # the demo: results/cellpainting/{tokens,whitening}
    python benchmarks/selection_rules_screen.py demo.json --results results/cellpainting \
        --seeds 0 1 2 --out DIR

Per whitening, seed and rule: ICFL trained as the config says (only `selection` differs),
every token encoded, then the best avg selectivity per planted group (the heatmap task, its
`exclude` left out) with bootstrap intervals over wells, the held-out reconstruction cosine in
the model's space, and the dead features. Writes ``DIR/selection_rules_screen.csv`` (one row per
model and group) and ``DIR/selection_rules_screen_differences.csv`` (signed minus absolute per
group, paired intervals, per whitening and seed), and prints mean +/- sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

DATASET = "cellpainting"


def train_and_encode(results: Path, model: Path, variant: str, settings: dict) -> sp.csr_matrix:
    """Train one dictionary of ``variant`` on a finished run's tokens and whitening fit, through
    the workflow's stages, encode every token, and return the codes (CSR). Leaves the model,
    its training curve, dead features and reconstruction cosines in ``model``."""
    from cellconcepts.config import Variant
    from cellconcepts.stages.encode import encode_tokens
    from cellconcepts.stages.train import train_dictionary

    whitening = results / "whitening" / f"{Variant.parse(variant).whitening}.npz"
    tokens, obs = results / "tokens" / "tokens.npy", results / "tokens" / "obs.parquet"
    train_dictionary(
        tokens=tokens,
        obs=obs,
        whitening=whitening,
        model=model / "model.pt",
        metrics=model / "metrics.csv",
        dead=model / "dead.csv",
        variant=variant,
        settings=settings,
        checkpoint_dir=model / "checkpoints",
        execution={"device": "cpu", "log_every": 100, "checkpoint_every": 10**9},
    )
    encode_tokens(
        tokens=tokens,
        obs=obs,
        whitening=whitening,
        model=model / "model.pt",
        codes=model / "codes.npz",
        reconstructions=model / "reconstructions.npy",
        cosine=model / "cosine.parquet",
        execution={"device": "cpu", "batch_size": 4096},
    )
    (model / "reconstructions.npy").unlink()
    return sp.load_npz(model / "codes.npz").tocsr()


@dataclass
class ScreenRun:
    """What a screen benchmark reads from its command line and from a finished demo run: the
    settings, the planted-group labels of the heatmap task (its `exclude` listed), the
    resampling units, and where the run's tokens are and the outputs go."""

    args: argparse.Namespace
    config: dict
    sparsity: int
    results: Path
    out: Path
    labels: pd.Series
    exclude: list
    units: np.ndarray
    bootstrap: dict

    @classmethod
    def from_command_line(cls, description: str) -> ScreenRun:
        from cellconcepts.evaluate.labels import task_labels
        from cellconcepts.evaluate.uncertainty import unit_codes

        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("settings", help="the JSON that `paper_scale.py resolve` printed")
        parser.add_argument(
            "--results", required=True, help="a finished run's results/cellpainting"
        )
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        parser.add_argument("--out", required=True)
        args = parser.parse_args()
        logging.basicConfig(level=logging.WARNING)
        config = json.loads(Path(args.settings).read_text())
        dataset = config["datasets"][DATASET]
        heatmaps = dataset["microscopy"]["heatmaps"]
        task = next(t for t in dataset["tasks"] if t["name"] == heatmaps["task"])
        table = pd.read_parquet(Path(args.results) / "tokens" / "obs.parquet")
        return cls(
            args=args,
            config=config,
            sparsity=dataset["dictionary"]["sparsity"][0],
            results=Path(args.results),
            out=Path(args.out),
            labels=task_labels(table, task, config["evaluate"]["min_label_size"]),
            exclude=list(heatmaps["exclude"]),
            units=unit_codes(table, dataset.get("resample_unit", [])),
            bootstrap=config["evaluate"]["bootstrap"],
        )


def main() -> None:
    from cellconcepts.config import training_settings
    from cellconcepts.evaluate.uncertainty import best_selectivity_samples

    run = ScreenRun.from_command_line(__doc__.splitlines()[0])
    args, results, out, sparsity = run.args, run.results, run.out, run.sparsity
    labels, units, boot = run.labels, run.units, run.bootstrap
    settings = training_settings(run.config, DATASET, "icfl")
    rows, differences = [], []
    for whitening in ("pca", "none"):
        for seed in args.seeds:
            codes = {}
            for selection in ("signed", "absolute"):
                model = out / f"{whitening}_seed{seed}_{selection}"
                own = {**settings, "icfl": {**settings["icfl"], "selection": selection}}
                variant = f"icfl_{whitening}_k{sparsity}_seed{seed}"
                codes[selection] = train_and_encode(results, model, variant, own)
            samples = best_selectivity_samples(codes, labels, units, **boot)
            shown = ~np.isin(samples.labels, run.exclude)
            for selection in codes:
                model = out / f"{whitening}_seed{seed}_{selection}"
                cosine = pd.read_parquet(model / "cosine.parquet")
                recon = float(cosine.loc[cosine["split"] == "test", "cosine_model"].mean())
                dead = int(pd.read_csv(model / "dead.csv")["dead"].sum())
                for label, best in zip(
                    samples.labels[shown], samples.point[selection][shown], strict=True
                ):
                    rows.append(
                        {
                            "whitening": whitening,
                            "seed": seed,
                            "selection": selection,
                            "label": label,
                            "best_avg": best,
                            "recon_cosine": recon,
                            "dead": dead,
                        }
                    )
            diff = samples.difference("signed", "absolute")
            diff = diff[diff["label"].isin(samples.labels[shown])]
            differences.append(diff.assign(whitening=whitening, seed=seed))
            pd.DataFrame(rows).to_csv(out / "selection_rules_screen.csv", index=False)
            pd.concat(differences).to_csv(
                out / "selection_rules_screen_differences.csv", index=False
            )
            print(diff.round(3).to_string(index=False), flush=True)
    frame = pd.DataFrame(rows)
    per_model = frame.groupby(["whitening", "selection", "seed"]).agg(
        mean_best=("best_avg", "mean"),
        recon_cosine=("recon_cosine", "first"),
        dead=("dead", "first"),
    )
    print(per_model.groupby(["whitening", "selection"]).agg(["mean", "std"]).round(3).to_string())
    verdicts = pd.concat(differences).groupby(["whitening", "verdict"]).size()
    print(verdicts.to_string())


if __name__ == "__main__":
    main()
