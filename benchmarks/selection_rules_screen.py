"""ICFL's two atom-selection rules on the demo's simulated screen: Algorithm 1's signed rule and
OMP's absolute rule, with and without control whitening, over model seeds, through the
workflow's stages, on the tokens and whitening fits of a finished demo run.

    python benchmarks/paper_scale.py resolve config/config.yaml > demo.json
    snakemake --cores all            # the demo: results/cellpainting/{tokens,whitening}
    python benchmarks/selection_rules_screen.py demo.json --results results/cellpainting \
        --seeds 0 1 2 --out DIR

Per whitening, seed and rule: ICFL trained as the config says (only `selection` differs),
every token encoded, then each planted group's label scores as the workflow's `selectivity`
rule computes them (`evaluate.label_scores`, on the heatmap task; its `exclude` left out of the
tables): the paper's in-sample best avg selectivity, the held-out best, the held-out best at
matched activation frequency and the held-out average precision, each against its permutation
null (settings `evaluate.significance` and `evaluate.probe`, units the dataset's
`resample_unit`); and the held-out reconstruction cosine in the model's space and the dead
features. Writes ``DIR/selection_rules_screen.csv`` (one row per model, group and score) and
``DIR/selection_rules_screen_summary.csv``: per whitening and rule, the mean and sd over seeds
of each score's mean over the groups and of the number of groups above null (BH FDR
`evaluate.significance.fdr`), which it prints.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import scipy.sparse as sp

DATASET = "cellpainting"
MODEL_KEYS = ["whitening", "selection", "seed"]


def train_and_encode(results: Path, model: Path, variant: str, settings: dict) -> sp.csr_matrix:
    """Train one dictionary of ``variant`` on a finished run's tokens and whitening fit, through
    the workflow's stages, encode every token, and return the codes (CSR). Leaves the model,
    its training curve, dead features and reconstruction cosines in ``model``."""
    from cellconcepts.stages.encode import encode_tokens
    from cellconcepts.stages.train import train_dictionary
    from cellconcepts.variant import Variant

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
    """What the benchmark reads from its command line and from a finished demo run: the
    settings, the planted-group task of the heatmaps (its `exclude` listed), the scoring
    settings, and where the run's tokens are and the outputs go."""

    args: argparse.Namespace
    config: dict
    sparsity: int
    results: Path
    out: Path
    obs: pd.DataFrame
    task: dict
    exclude: list
    score_settings: dict[str, Any]

    @classmethod
    def from_command_line(cls, description: str) -> ScreenRun:
        from cellconcepts.evaluate.label_scores import SignificanceSettings
        from cellconcepts.evaluate.probing import ProbeSettings
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
        evaluate = config["evaluate"]
        obs = pd.read_parquet(Path(args.results) / "tokens" / "obs.parquet")
        resample_unit = dataset.get("resample_unit", [])
        probe = {f.name: evaluate["probe"][f.name] for f in fields(ProbeSettings)}
        return cls(
            args=args,
            config=config,
            sparsity=dataset["dictionary"]["sparsity"][0],
            results=Path(args.results),
            out=Path(args.out),
            obs=obs,
            task=next(t for t in dataset["tasks"] if t["name"] == heatmaps["task"]),
            exclude=list(heatmaps["exclude"]),
            score_settings={
                "probe": ProbeSettings(**probe),
                "settings": SignificanceSettings(**evaluate["significance"]),
                "units": unit_codes(obs, list(resample_unit)) if resample_unit else None,
                "min_label_size": evaluate["min_label_size"],
            },
        )

    def label_scores(self, codes: sp.csr_matrix) -> pd.DataFrame:
        """The planted groups' label scores of one model (`label_score_tables`)."""
        from cellconcepts.evaluate.label_scores import label_score_tables

        scores, _ = label_score_tables(codes, self.obs, [self.task], **self.score_settings)
        return scores[~scores["label"].isin(self.exclude)]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per whitening and rule (rows) and quantity (columns): the mean over seeds and its sd
    (``<quantity>_mean``, ``<quantity>_sd``) of each score's mean over the groups (``<score>``),
    of its number of groups above null (``<score>_above_null``), of the reconstruction cosine
    and of the dead features."""
    from cellconcepts.evaluate.label_scores import SCORES

    grouped = frame.groupby([*MODEL_KEYS, "score"])
    per_model = pd.concat(
        [
            grouped["value"].mean().unstack("score")[list(SCORES)],
            grouped["above_null"].sum().unstack("score")[list(SCORES)].add_suffix("_above_null"),
            frame.groupby(MODEL_KEYS)[["recon_cosine", "dead"]].first(),
        ],
        axis=1,
    )
    by_rule = per_model.groupby(MODEL_KEYS[:2], sort=False)
    stats = pd.concat({"mean": by_rule.mean(), "sd": by_rule.std()}, axis=1)
    stats.columns = [f"{name}_{stat}" for stat, name in stats.columns]
    order = [f"{name}_{stat}" for name in per_model.columns for stat in ("mean", "sd")]
    return stats[order].assign(n_seeds=by_rule.size()).reset_index()


def printed(table: pd.DataFrame) -> str:
    """The summary as ``mean +/- sd``, one column per whitening and rule."""
    names = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
    shown = pd.DataFrame(
        {
            f"{row.whitening} {row.selection}": [
                f"{getattr(row, f'{n}_mean'):.3f} +/- {getattr(row, f'{n}_sd'):.3f}" for n in names
            ]
            for row in table.itertuples()
        },
        index=names,
    )
    return shown.to_string()


def main() -> None:
    from cellconcepts.config import training_settings
    from cellconcepts.variant import Variant

    run = ScreenRun.from_command_line(__doc__.splitlines()[0])
    settings = training_settings(run.config, DATASET, "icfl")
    frames = []
    for whitening in ("pca", "none"):
        for seed in run.args.seeds:
            for selection in ("signed", "absolute"):
                model = run.out / f"{whitening}_seed{seed}_{selection}"
                own = {**settings, "icfl": {**settings["icfl"], "selection": selection}}
                variant = Variant("icfl", whitening, run.sparsity, seed).name
                codes = train_and_encode(run.results, model, variant, own)
                cosine = pd.read_parquet(model / "cosine.parquet")
                frames.append(
                    run.label_scores(codes).assign(
                        whitening=whitening,
                        selection=selection,
                        seed=seed,
                        recon_cosine=float(
                            cosine.loc[cosine["split"] == "test", "cosine_model"].mean()
                        ),
                        dead=int(pd.read_csv(model / "dead.csv")["dead"].sum()),
                    )
                )
                pd.concat(frames).to_csv(run.out / "selection_rules_screen.csv", index=False)
    table = summary(pd.concat(frames))
    table.to_csv(run.out / "selection_rules_screen_summary.csv", index=False)
    print(f"{table['n_seeds'].max()} seeds\n{printed(table)}")


if __name__ == "__main__":
    main()
