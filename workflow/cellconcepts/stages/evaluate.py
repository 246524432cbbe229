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
from cellconcepts.evaluate.selectivity import features_above_null_counts, task_selectivity_tables
from cellconcepts.files import PathLike, read_results_csv, write_frame
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import TokenStore, read_block

log = logging.getLogger(__name__)


def selectivity(
    *,
    obs: PathLike,
    codes: PathLike,
    counts: PathLike,
    best: PathLike,
    label_scores: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float],
    probe: Mapping[str, Any],
    significance: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    min_label_size: int = 1,
) -> None:
    """Per task: features above each avg-selectivity threshold and above the permutation
    null (counts), the paper's best score per label (best), and per label the held-out and
    average-precision scores, each against its null (`evaluate.label_scores`)."""
    from cellconcepts.evaluate.label_scores import SignificanceSettings, label_score_tables
    from cellconcepts.evaluate.uncertainty import split_units

    table = pd.read_parquet(obs)
    matrix = sp.load_npz(codes).tocsr()
    count_table, best_table = task_selectivity_tables(
        matrix, table, tasks, thresholds, min_label_size
    )
    scores, above = label_score_tables(
        matrix,
        table,
        tasks,
        ProbeSettings(**probe),
        SignificanceSettings(**significance),
        split_units(table, list(resample_unit)),
        min_label_size,
    )
    count_table["n_features_above_null"] = features_above_null_counts(count_table["task"], above)
    write_frame(count_table, counts)
    write_frame(best_table, best)
    write_frame(scores, label_scores)


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
    from cellconcepts.evaluate.uncertainty import split_units, unit_codes

    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    rows = probe_tasks(
        representations or {"raw": store.tokens},
        store.obs,
        tasks,
        ProbeSettings(**probe),
        min_label_size,
        bootstrap,
        unit_codes(store.obs, list(resample_unit)),
        split_units(store.obs, list(resample_unit)),
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


def selectivity_references(
    *,
    tokens: PathLike,
    obs: PathLike,
    references: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    settings: Mapping[str, Any],
    bootstrap: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    min_label_size: int = 1,
    threads: int | None = None,
) -> None:
    """Per task and label, what a best feature is read against (`evaluate.references`): the
    linear reference (the out-of-fold probe thresholded on its training folds) and the probe's
    recall, each with its bootstrap interval over ``resample_unit``, and the oracle
    selectivity (tasks with an ``oracle`` column); report_dataset writes it as
    tables/references."""
    from cellconcepts.evaluate.references import references_table
    from cellconcepts.evaluate.uncertainty import split_units, unit_codes

    set_threads(threads)
    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    result = references_table(
        store.tokens,
        store.obs,
        tasks,
        probe=ProbeSettings(**probe),
        units=unit_codes(store.obs, list(resample_unit)),
        split_units=split_units(store.obs, list(resample_unit)),
        min_label_size=min_label_size,
        folds=settings["folds"],
        bootstrap=bootstrap,
    )
    write_frame(result, references)


def compare_variants(
    *,
    obs: PathLike,
    codes: Sequence[PathLike],
    label_scores: Sequence[PathLike],
    intervals: Sequence[PathLike],
    differences: Sequence[PathLike],
    verdicts: Sequence[PathLike],
    claim: Sequence[PathLike],
    variants: Sequence[str],
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
    bootstrap: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    min_label_size: int = 1,
) -> None:
    """Every pair of variants (ICFL / TopK x PCA / none) per task, label and score, with
    intervals over units and model seeds (`evaluate.variant_comparison`), the verdicts per
    pair (the mean difference over labels and how many labels each verdict has), and the
    paper's central claim (ICFL + PCA against TopK) under each metric."""
    from cellconcepts.evaluate.uncertainty import split_units, unit_codes
    from cellconcepts.evaluate.variant_comparison import (
        comparison_report,
        task_comparisons,
        verdict_lines,
    )
    from cellconcepts.report.tables import write_table

    table = pd.read_parquet(obs)
    matrices = {v: sp.load_npz(p).tocsr() for v, p in zip(variants, codes, strict=True)}
    scores = {v: read_results_csv(p) for v, p in zip(variants, label_scores, strict=True)}
    found_intervals, found_differences = task_comparisons(
        matrices,
        scores,
        table,
        tasks,
        ProbeSettings(**probe),
        units=unit_codes(table, list(resample_unit)),
        split_units=split_units(table, list(resample_unit)),
        bootstrap=bootstrap,
        min_label_size=min_label_size,
    )
    report = comparison_report(found_intervals, found_differences, scores, bootstrap["level"])
    outputs = {"intervals": intervals, "differences": differences}
    outputs |= {"verdicts": verdicts, "claim": claim}
    for name, (frame, caption) in report.items():
        write_table(frame, outputs[name][0], caption=caption)
    for line in verdict_lines(report["verdicts"][0]):
        log.info("%s", line)


def group_detectability(
    *,
    obs: PathLike,
    references: PathLike,
    label_scores: Sequence[PathLike],
    groups: Sequence[PathLike],
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
    probe on the per-image profiles) see it, its oracle selectivity and linear reference, and
    each variant's held-out best selectivity and seeds above null
    (`evaluate.detectability`)."""
    from cellconcepts.cellprofiler.profiles import aligned_profiles
    from cellconcepts.evaluate.detectability import (
        profile_recalls,
        summary_lines,
        task_detectability,
    )
    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.report.tables import write_table

    set_threads(threads)
    table = pd.read_parquet(obs)
    labels = task_labels(table, task, min_label_size)
    profile_recall = None
    if profiles is not None:
        matrix, _ = aligned_profiles(pd.read_parquet(profiles), table, str(profiles))
        profile_recall = profile_recalls(
            matrix,
            table,
            task,
            labels,
            resample_unit=resample_unit,
            probe=ProbeSettings(**probe),
            folds=folds,
            bootstrap=bootstrap,
        )
    found = task_detectability(
        labels,
        exclude,
        {v: read_results_csv(p) for v, p in zip(variants, label_scores, strict=True)},
        read_results_csv(references),
        task["name"],
        profile_recall=profile_recall,
    )
    write_table(
        found,
        groups[0],
        caption=f"{task['name']}: which groups the encoder and CellProfiler see, and which "
        "the dictionaries isolate held out, above null",
    )
    for line in summary_lines(found):
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
    from cellconcepts.evaluate.cosines import (
        cosine_tables,
        most_selective_labels,
        summary_lines,
        token_feature_cosines,
    )
    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.report.figures import plot_feature_cosines
    from cellconcepts.report.tables import write_table

    pairs = most_selective_labels(
        read_results_csv(best_selectivity), task["name"], n_labels, str(best_selectivity)
    )
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
    summary, counts = cosine_tables(cosines, labels, pairs)
    write_table(
        summary, table[0], caption=f"cosines of {task['name']} tokens with selective features"
    )
    write_frame(counts, histograms)
    plot_feature_cosines(
        counts, summary, figure[0], title=f"{Path(model).parent.name}: {task['name']}"
    )
    for line in summary_lines(summary):
        log.info("%s", line)
