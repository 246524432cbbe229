"""Each deviation from the paper's defaults, measured side by side on the demo with three model
seeds for every dataset, through the workflow itself:

- ``paper``: the defaults, which follow the paper (b_pre learned by ICFL and TopK, eqs. 3-4;
  ICFL re-draws correlated columns every 100 steps, TopK does not; no AuxK);
- ``b_pre_fixed``: ``dictionary.learn_b_pre: false``, b_pre held at 0 by both methods;
- ``topk_auxk``: AuxK on for TopK (``dictionary.topk.aux_k``, ``--aux-k``, default 64);
- ``topk_redraws``: TopK re-draws correlated columns by ICFL's rule (every 100 steps, cosine
  0.9: the schema's ICFL values);
- ``icfl_no_redraws``: ICFL without its re-draws (``dictionary.icfl.resample_every: 0``).

    snakemake --cores all            # a finished demo run, e.g. in results/
    python benchmarks/deviations.py --results results --out DIR [--cores 2] \
        [--seeds 0 1 2] [--aux-k 64] [--only paper b_pre_fixed ...] [--sparsity 8]

The ``paper`` deviation is the finished run itself when its seeds are the demo's. Per other
deviation, a config ``DIR/<name>/config.yaml`` is merged over config/config.yaml (Snakemake's
``--configfile``): ``results: DIR/<name>/results``, ``dictionary.seeds`` for every dataset, and
the deviation's keys. The finished run's results are copied there first (its dictionary
checkpoints left out; modification times kept), and the workflow reruns `train_dictionary` and
what the headline and the verdicts need downstream of it (``--forcerun train_dictionary`` with
those targets), so the simulated data, tokens,
whitening fits, the MAE and its embeddings and the CellProfiler measurements are the finished
run's, and only the dictionaries and what follows them are recomputed. Snakemake's output goes
to ``DIR/<name>/snakemake.log``.

Then, per deviation and dataset, every numeric column of ``tables/headline_seeds.csv`` (each
model's mean over seeds and its ``_sd``; on the synthetic data ``atom_recovery_model``, the atoms
recovered in the model's space). Writes ``DIR/deviations.csv`` (one row per deviation, dataset,
model and metric: mean, sd, n_seeds) and prints, per dataset, the models x metrics with one
column per deviation, "mean +/- sd"; atom recovery first.

Why ``aux_k`` 64: AuxK reconstructs the main loss's residual, a d-dimensional vector (d = 64 on
the synthetic data, 32 for pbmc, 96 on the screen), from the top ``aux_k`` dead latents; 64 is
about d, so the auxiliary reconstruction is neither starved nor free to fit the residual's noise
with more latents than it has dimensions, and it is 8 k at the demo's k = 8, enough to reach
many dead latents per token (the paper's M = 8192 runs TopK without AuxK; the demo's M is 512
on the synthetic data, 128 elsewhere).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
KEYS = ["method", "whitening", "sparsity"]
RECOVERY = "atom_recovery_model"


def deviations(aux_k: int) -> dict[str, dict]:
    """The config keys of each deviation (merged over the demo config)."""
    from cellconcepts.defaults import schema_default

    icfl_redraws = {
        "resample_every": schema_default("dictionary.icfl.resample_every"),
        "resample_threshold": schema_default("dictionary.icfl.resample_threshold"),
    }
    return {
        "paper": {},
        "b_pre_fixed": {"dictionary": {"learn_b_pre": False}},
        "topk_auxk": {"dictionary": {"topk": {"aux_k": aux_k}}},
        "topk_redraws": {"dictionary": {"topk": icfl_redraws}},
        "icfl_no_redraws": {"dictionary": {"icfl": {"resample_every": 0}}},
    }


def deviation_config(
    demo: dict, keys: dict, results: Path, seeds: list[int], sparsity: int | None = None
) -> dict:
    """The config file of one deviation: its keys, its own results folder, and the model seeds
    (and, with ``sparsity``, the one sparsity) for every dataset (a dataset's own
    `dictionary` keys would override the global ones)."""
    from cellconcepts.config import deep_merge

    own = {"seeds": list(seeds), **({"sparsity": [sparsity]} if sparsity else {})}
    seeded = {name: {"dictionary": dict(own)} for name in demo["datasets"]}
    common = {"results": str(results), "dictionary": {"seeds": seeds}, "datasets": seeded}
    return deep_merge(common, keys)


def run_workflow(finished: Path, out: Path, config: dict, cores: int) -> float:
    """Copy the finished run into ``out/results`` and rerun the dictionaries and everything
    downstream of them; returns the workflow's seconds."""
    results = Path(config["results"])
    if results.exists():
        shutil.rmtree(results)  # a rerun starts from the finished run again
    shutil.copytree(finished, results, ignore=shutil.ignore_patterns("checkpoints"))
    config_file = out / "config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    # only what the comparison reads: the headline and the variants' verdicts per dataset
    targets = [
        f"{results}/{dataset}/{name}"
        for dataset in config["datasets"]
        for name in ("headline.csv", "tables/claim.csv")
    ]
    command = [
        "snakemake",
        "--cores",
        str(cores),
        "--configfile",
        str(config_file),
        "--forcerun",
        "train_dictionary",
        *targets,
    ]
    started = time.perf_counter()
    with open(out / "snakemake.log", "w") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def headline_rows(results: Path, datasets: list[str], deviation: str) -> list[dict]:
    """Every numeric column of each dataset's tables/headline_seeds.csv as (metric, mean, sd)
    rows per model."""
    rows = []
    for dataset in datasets:
        path = results / dataset / "tables" / "headline_seeds.csv"
        if not path.exists():
            print(f"{deviation}: {path} missing, skipped", flush=True)
            continue
        table = pd.read_csv(path)
        numeric = table.select_dtypes("number").columns
        metrics = [c for c in numeric if c not in (*KEYS, "n_seeds") and not c.endswith("_sd")]
        for _, model in table.iterrows():
            for metric in metrics:
                rows.append(
                    {
                        "deviation": deviation,
                        "dataset": dataset,
                        **{k: model[k] for k in KEYS},
                        "n_seeds": model.get("n_seeds"),
                        "metric": metric,
                        "mean": model[metric],
                        "sd": model.get(f"{metric}_sd"),
                    }
                )
    return rows


def side_by_side(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Models x metrics (rows) by deviation (columns), each cell "mean +/- sd"."""
    cells = frame.assign(
        value=[f"{m:.3f} +/- {s:.3f}" for m, s in zip(frame["mean"], frame["sd"], strict=True)]
    )
    table = cells.pivot_table(
        index=[*KEYS, "metric"], columns="deviation", values="value", aggfunc="first"
    )
    return table[[d for d in order if d in table.columns]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="a finished demo's results/")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--aux-k", type=int, default=64, help="AuxK latents of `topk_auxk`")
    parser.add_argument("--only", nargs="+", help="run these deviations only")
    parser.add_argument(
        "--sparsity", type=int, help="train this sparsity only (the demo's pbmc sweeps 4, 8, 16)"
    )
    args = parser.parse_args()
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    datasets = list(demo["datasets"])
    chosen = deviations(args.aux_k)
    names = args.only or list(chosen)
    unknown = sorted(set(names) - set(chosen))
    if unknown:
        parser.error(f"--only: unknown deviations {unknown}; choose from {list(chosen)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, seconds = [], {}
    for name in names:
        if not chosen[name] and args.seeds == demo["dictionary"]["seeds"]:
            # the paper's defaults are the demo's: the finished run is this deviation
            rows += headline_rows(args.results, datasets, name)
            continue
        out = (args.out / name).resolve()
        out.mkdir(parents=True, exist_ok=True)
        config = deviation_config(demo, chosen[name], out / "results", args.seeds, args.sparsity)
        seconds[name] = run_workflow(args.results.resolve(), out, config, args.cores)
        print(f"{name}: workflow {seconds[name]:.0f} s", flush=True)
        rows += headline_rows(out / "results", datasets, name)
        pd.DataFrame(rows).to_csv(args.out / "deviations.csv", index=False)
    frame = pd.DataFrame(rows)
    for dataset in datasets:
        own = frame[frame["dataset"] == dataset]
        if own.empty:
            continue
        recovery = own["metric"] == RECOVERY
        for title, part in (("atom recovery", own[recovery]), ("headline", own[~recovery])):
            if not part.empty:
                print(f"\n{dataset}: {title} (mean +/- sd over seeds)")
                print(side_by_side(part, names).to_string())
    print("\nworkflow seconds:", {k: round(v) for k, v in seconds.items()})


if __name__ == "__main__":
    main()
