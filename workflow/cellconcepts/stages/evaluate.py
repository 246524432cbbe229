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
    threads: int | None = None,
) -> None:
    """Linear-probe BTA per task on a model's reconstructions and on its codes."""
    set_threads(threads)
    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    representations = {
        "reconstruction": np.load(reconstructions, mmap_mode="r"),
        "codes": sp.load_npz(codes).tocsr(),
    }
    rows = probe_tasks(representations, store.obs, tasks, ProbeSettings(**probe), min_label_size)
    write_frame(pd.DataFrame(rows), probing)


def probe_raw(
    *,
    tokens: PathLike,
    obs: PathLike,
    probing: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    min_label_size: int = 1,
    threads: int | None = None,
) -> None:
    """Linear-probe BTA per task on the raw tokens (the reference for every model)."""
    set_threads(threads)
    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    rows = probe_tasks(
        {"raw": store.tokens}, store.obs, tasks, ProbeSettings(**probe), min_label_size
    )
    write_frame(pd.DataFrame(rows), probing)


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
