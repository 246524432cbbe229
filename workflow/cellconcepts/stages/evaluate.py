"""Stages of workflow/rules/evaluate.smk: selectivity, linear probes, atom recovery, and the
cosines between tokens and selective features (paper Fig. 3)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.device import set_threads
from cellconcepts.evaluate.probing import ProbeSettings, probe_tasks
from cellconcepts.evaluate.selectivity import task_selectivity_tables
from cellconcepts.files import PathLike, write_frame
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import TokenStore, read_block

log = logging.getLogger(__name__)


def selectivity(
    *,
    obs: PathLike,
    codes: PathLike,
    counts: PathLike,
    best: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float],
    min_label_size: int = 1,
) -> None:
    """Per task: features above each avg-selectivity threshold, and the best score per label
    (`evaluate.selectivity.task_selectivity_tables`)."""
    table = pd.read_parquet(obs)
    count_table, best_table = task_selectivity_tables(
        sp.load_npz(codes).tocsr(), table, tasks, thresholds, min_label_size
    )
    write_frame(count_table, counts)
    write_frame(best_table, best)


def probe_model(
    *,
    tokens: PathLike,
    obs: PathLike,
    codes: PathLike,
    reconstructions: PathLike,
    probing: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    min_label_size: int = 1,
    bootstrap: Mapping[str, Any] | None = None,
    resample_unit: Sequence[str] = (),
    threads: int | None = None,
) -> None:
    """Linear-probe BTA per task on a model's reconstructions and on its codes, with its
    bootstrap interval over the test rows (whole ``resample_unit`` units)."""
    set_threads(threads)
    representations = {
        "reconstruction": np.load(reconstructions, mmap_mode="r"),
        "codes": sp.load_npz(codes).tocsr(),
    }
    _probe(
        tokens,
        obs,
        representations,
        probing,
        tasks,
        probe,
        min_label_size,
        bootstrap,
        resample_unit,
    )


def _probe(
    tokens: PathLike,
    obs: PathLike,
    representations: Mapping[str, Any] | None,
    probing: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    min_label_size: int,
    bootstrap: Mapping[str, Any] | None,
    resample_unit: Sequence[str],
) -> None:
    """Probe every representation (the raw tokens where None) on every task and write the
    BTA table."""
    from cellconcepts.evaluate.uncertainty import unit_codes

    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    rows = probe_tasks(
        representations or {"raw": store.tokens},
        store.obs,
        tasks,
        ProbeSettings(**probe),
        min_label_size,
        bootstrap,
        unit_codes(store.obs, list(resample_unit)),
    )
    write_frame(pd.DataFrame(rows), probing)


def probe_raw(
    *,
    tokens: PathLike,
    obs: PathLike,
    probing: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    min_label_size: int = 1,
    bootstrap: Mapping[str, Any] | None = None,
    resample_unit: Sequence[str] = (),
    threads: int | None = None,
) -> None:
    """Linear-probe BTA per task on the raw tokens (the reference for every model), with its
    bootstrap interval over the test rows (whole ``resample_unit`` units)."""
    set_threads(threads)
    _probe(tokens, obs, None, probing, tasks, probe, min_label_size, bootstrap, resample_unit)


def selectivity_ceilings(
    *,
    tokens: PathLike,
    obs: PathLike,
    ceilings: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    settings: Mapping[str, Any],
    bootstrap: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    min_label_size: int = 1,
    threads: int | None = None,
) -> None:
    """Per task and label, the selectivity a feature could reach: the oracle (tasks with an
    ``oracle`` column) and the out-of-fold linear probe's (`evaluate.ceilings`), with the
    probe's recall and its bootstrap interval over ``resample_unit``; report_dataset writes
    it as tables/ceilings."""
    from cellconcepts.evaluate.ceilings import task_ceilings
    from cellconcepts.evaluate.uncertainty import unit_codes

    set_threads(threads)
    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    units = unit_codes(store.obs, list(resample_unit))
    result = pd.concat(
        [
            task_ceilings(
                store.tokens,
                store.obs,
                task,
                probe=ProbeSettings(**probe),
                units=units,
                min_label_size=min_label_size,
                folds=settings["folds"],
                **bootstrap,
            )
            for task in tasks
        ],
        ignore_index=True,
    )
    write_frame(result, ceilings)


def group_detectability(
    *,
    obs: PathLike,
    codes: Sequence[PathLike],
    ceilings: PathLike,
    groups: Sequence[PathLike],
    intervals: Sequence[PathLike],
    differences: Sequence[PathLike],
    variants: Sequence[str],
    task: Mapping[str, Any],
    exclude: Sequence[str],
    probe: Mapping[str, Any],
    folds: int,
    bootstrap: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    min_label_size: int = 1,
    profiles: PathLike | None = None,
    threads: int | None = None,
) -> None:
    """Per planted group of ``task``: does the encoder (raw-token probe) or CellProfiler (a
    probe on the per-image profiles) see it, its ceilings, every model's best selectivity
    with its interval, and the paired differences ICFL+PCA vs TopK+PCA and vs ICFL without
    whitening (`evaluate.detectability`)."""
    from cellconcepts.evaluate.detectability import group_detectability as detect
    from cellconcepts.evaluate.detectability import probe_recalls, summary_lines
    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.evaluate.uncertainty import unit_codes
    from cellconcepts.report.tables import write_table

    set_threads(threads)
    table = pd.read_parquet(obs)
    labels = task_labels(table, task, min_label_size)
    units = unit_codes(table, list(resample_unit))
    profile_recall = None
    if profiles is not None:
        from cellconcepts.cellprofiler.profiles import aligned_profiles

        matrix, _ = aligned_profiles(pd.read_parquet(profiles), table, str(profiles))
        profile_recall = probe_recalls(
            matrix,
            labels,
            table[task["group_by"]] if task.get("group_by") else None,
            units,
            probe=ProbeSettings(**probe),
            folds=folds,
            bootstrap=bootstrap,
        )
    limits = pd.read_csv(ceilings, dtype={"label": str})
    found = detect(
        labels,
        {v: sp.load_npz(p).tocsr() for v, p in zip(variants, codes, strict=True)},
        limits[limits["task"] == task["name"]],
        units,
        exclude=exclude,
        bootstrap=bootstrap,
        profile_recall=profile_recall,
    )
    level = f"{100 * bootstrap['level']:g} %"
    captions = (
        f"{task['name']}: which groups the encoder and CellProfiler see, ceilings, best "
        "selectivity per model",
        f"{task['name']}: best avg selectivity per model with {level} bootstrap intervals",
        f"{task['name']}: paired differences in best selectivity with {level} intervals",
    )
    for result, path, caption in zip(
        found, (groups, intervals, differences), captions, strict=True
    ):
        write_table(result, path[0], caption=caption)
    for line in summary_lines(found[0], found[2]):
        log.info("%s", line)


def atom_recovery(
    *,
    model: PathLike,
    whitening: PathLike,
    atoms: PathLike,
    atom_table: PathLike,
    recovery: PathLike,
    threshold: float,
) -> None:
    """Ground truth only: does each true atom have a learned direction with |cos| >= threshold?

    Compared in the model's input space (true atoms pushed through the linear part of the
    whitening, where the dictionary lives); the ``*_original`` columns compare learned
    directions mapped back to the original embedding space, which is ill-conditioned under PCA
    whitening (see `Whitening.directions_to_model_space`).
    """
    from cellconcepts.dictionary.models import decoder_directions, load_model
    from cellconcepts.dictionary.whitening import Whitening
    from cellconcepts.evaluate.recovery import atom_recovery as recover

    dictionary, _ = load_model(model)
    transform = Whitening.load(whitening)
    learned = decoder_directions(dictionary)
    true_atoms = np.load(atoms)
    model_space = transform.directions_to_model_space(true_atoms.T).T
    table = recover(model_space, learned, threshold=threshold)
    original = recover(
        true_atoms, transform.directions_to_input_space(learned), threshold=threshold
    )
    table["best_abs_cosine_original"] = original["best_abs_cosine"].to_numpy()
    table["recovered_original"] = original["recovered"].to_numpy()
    table = table.merge(pd.read_csv(atom_table), on="atom", how="left")
    write_frame(table, recovery)
    log.info(
        "recovered %d of %d atoms in model space, %d in the original space (|cos| >= %.2f)",
        int(table.recovered.sum()),
        len(table),
        int(table.recovered_original.sum()),
        threshold,
    )


def feature_cosines(
    *,
    tokens: PathLike,
    obs: PathLike,
    whitening: PathLike,
    model: PathLike,
    best_selectivity: PathLike,
    table: Sequence[PathLike],
    histograms: PathLike,
    figure: Sequence[PathLike],
    task: Mapping[str, Any],
    n_labels: int,
    min_label_size: int = 1,
    block_tokens: int = 65536,
) -> None:
    """Paper Fig. 3 for one model: for the ``n_labels`` labels of ``task`` whose best feature
    is most selective, how that feature's direction meets the label's own tokens and the
    tokens of the other labels (every labelled token of the store, read in blocks)."""
    from cellconcepts.dictionary.models import decoder_directions, load_model
    from cellconcepts.dictionary.whitening import Whitening
    from cellconcepts.evaluate.cosines import own_vs_other, token_feature_cosines
    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.report.figures import plot_feature_cosines
    from cellconcepts.report.tables import write_table

    best = pd.read_csv(best_selectivity, dtype={"label": str})
    best = best[best["task"] == task["name"]].sort_values("best_avg", ascending=False)
    pairs = best.head(n_labels).rename(columns={"best_feature": "feature"})
    if pairs.empty:
        raise ValueError(f"{best_selectivity}: no labels of task {task['name']!r} to plot")
    dictionary, _ = load_model(model)
    transform = Whitening.load(whitening)
    directions = decoder_directions(dictionary)[:, pairs["feature"].to_numpy()]
    offset = dictionary.b_pre.detach().cpu().double().numpy()
    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)), columns=[task["column"]])
    labels = task_labels(store.obs, task, min_label_size)
    n = store.n_tokens
    blocks = (
        transform.transform(read_block(store.tokens, start, min(start + block_tokens, n)))
        for start in range(0, n, block_tokens)
    )
    cosines = token_feature_cosines(blocks, offset, directions)
    summary, counts = own_vs_other(cosines, labels, pairs[["label", "feature"]])
    summary.insert(2, "best_avg_selectivity", pairs["best_avg"].to_numpy())
    write_table(
        summary, table[0], caption=f"cosines of {task['name']} tokens with selective features"
    )
    write_frame(counts, histograms)
    plot_feature_cosines(
        counts, summary, figure[0], title=f"{Path(model).parent.name}: {task['name']}"
    )
    for row in summary.itertuples(index=False):
        log.info(
            "%s (feature %d): mean cosine own %.3f vs other %.3f, AUC %.3f",
            row.label,
            row.feature,
            row.mean_cosine_own,
            row.mean_cosine_other,
            row.auc_own_vs_other,
        )
