"""The demo screen's comparisons over model seeds: does ICFL + PCA isolate a planted gene group
better than TopK + PCA, and than ICFL without whitening, when the dictionaries' own training
noise is counted? The workflow's `group_detectability` compares one model per variant, with
intervals over wells only; this trains every variant with several seeds, through the
workflow's stages, on the tokens and whitening fits of a finished demo run.

    python benchmarks/paper_scale.py resolve config/config.yaml > demo.json
    snakemake --cores all            # the demo: results/cellpainting/{tokens,whitening}
    python benchmarks/screen_seeds.py demo.json --results results/cellpainting \
        --seeds 0 1 2 3 4 --out DIR

Per seed: the four variants trained as the config says (seed 0 is the demo's own model), every
token encoded, the best avg selectivity per planted group (the heatmap task, its `exclude` left
out) with bootstrap intervals over wells (the same resamples for every model and seed), and the
paired differences with their verdicts. Across seeds: each variant's mean +/- sd per group, the
verdicts counted over seeds, and the difference of the seed means with two intervals: the same
paired well resamples averaged over seeds (the wells' noise; ``low``, ``high``) and a t interval
of the seeds' differences (the training noise; ``seed_low``, ``seed_high``). The verdict names
a difference only where both intervals exclude 0.
Writes ``DIR/screen_seeds.csv`` (model x group), ``DIR/screen_seeds_differences.csv`` (per
seed) and ``DIR/screen_seeds_summary.csv`` (per group and comparison), and prints them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t
from selection_rules_screen import DATASET, ScreenRun, train_and_encode

VARIANTS = ("icfl_pca", "topk_pca", "icfl_none", "topk_none")
COMPARISONS = (("icfl_pca", "topk_pca"), ("icfl_pca", "icfl_none"))


def _verdict(low: float, high: float, first: str, second: str) -> str:
    if low > 0:
        return f"{first} higher"
    return f"{second} higher" if high < 0 else "no difference"


def main() -> None:
    from cellconcepts.config import training_settings
    from cellconcepts.evaluate.uncertainty import best_selectivity_samples, interval

    run = ScreenRun.from_command_line(__doc__.splitlines()[0])
    level = run.bootstrap["level"]
    rows, differences, samples_by_seed = [], [], []
    for seed in run.args.seeds:
        codes = {}
        for name in VARIANTS:
            method, whitening = name.split("_")
            variant = f"{method}_{whitening}_k{run.sparsity}_seed{seed}"
            settings = training_settings(run.config, DATASET, method)
            codes[name] = train_and_encode(run.results, run.out / variant, variant, settings)
        samples = best_selectivity_samples(codes, run.labels, run.units, **run.bootstrap)
        shown = ~np.isin(samples.labels, run.exclude)
        samples_by_seed.append((samples, shown))
        for name in VARIANTS:
            for label, best in zip(samples.labels[shown], samples.point[name][shown], strict=True):
                rows.append({"seed": seed, "model": name, "label": label, "best_avg": best})
        for first, second in COMPARISONS:
            diff = samples.difference(first, second)
            differences.append(diff[diff["label"].isin(samples.labels[shown])].assign(seed=seed))
        pd.DataFrame(rows).to_csv(run.out / "screen_seeds.csv", index=False)
        pd.concat(differences).to_csv(run.out / "screen_seeds_differences.csv", index=False)
        print(f"seed {seed}: {pd.concat(differences[-2:]).round(3).to_string(index=False)}")

    per_model = pd.DataFrame(rows).groupby(["label", "model"])["best_avg"].agg(["mean", "std"])
    print(per_model.unstack("model").round(3).to_string())
    verdicts = pd.concat(differences)
    summary = []
    for first, second in COMPARISONS:
        # The same unit resamples for every seed (the bootstrap seed is fixed), so the paired
        # differences average over seeds replicate by replicate.
        stacked = np.stack([s.samples[first] - s.samples[second] for s, _ in samples_by_seed])
        low, high = interval(stacked.mean(0), level)
        per_seed = np.stack([s.point[first] - s.point[second] for s, _ in samples_by_seed])
        point, spread = per_seed.mean(0), per_seed.std(0, ddof=1)
        # Training noise: a t interval of the seeds' differences.
        half = t.ppf(0.5 + level / 2, len(per_seed) - 1) * spread / np.sqrt(len(per_seed))
        first_samples, shown = samples_by_seed[0]
        for i in np.flatnonzero(shown):
            label = first_samples.labels[i]
            own = verdicts[
                (verdicts["label"] == label)
                & (verdicts["first"] == first)
                & (verdicts["second"] == second)
            ]["verdict"]
            summary.append(
                {
                    "label": label,
                    "first": first,
                    "second": second,
                    "mean_difference": point[i],
                    "sd_over_seeds": spread[i],
                    "low": low[i],
                    "high": high[i],
                    "seed_low": point[i] - half[i],
                    "seed_high": point[i] + half[i],
                    # A difference only where neither the wells nor the seeds explain it.
                    "verdict": _verdict(
                        min(low[i], point[i] - half[i]),
                        max(high[i], point[i] + half[i]),
                        first,
                        second,
                    ),
                    "seeds": len(samples_by_seed),
                    "seeds_first_higher": int((own == f"{first} higher").sum()),
                    "seeds_second_higher": int((own == f"{second} higher").sum()),
                }
            )
    summary = pd.DataFrame(summary)
    summary.to_csv(run.out / "screen_seeds_summary.csv", index=False)
    print(summary.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
