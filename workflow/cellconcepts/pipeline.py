"""One function per workflow stage: files in, files out.

Each Snakemake rule's script is a thin adapter that calls exactly one of these; the science
lives in the modules they call (simulate, embed, whiten, dictionary, training, encode,
evaluate, report). Every function here can also be called from Python or a notebook.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts import evaluate, io, obs, simulate
from cellconcepts.settings import Variant

log = logging.getLogger(__name__)

# torch and the modules built on it are imported inside the stages that use them, so that the
# many light jobs (selectivity, probes, reports) start without paying for the import.

PathLike = str | Path


# --------------------------------------------------------------------------- token stores


def simulate_superposition_store(
    params: Mapping[str, Any], store_dir: PathLike, ground_truth_dir: PathLike
) -> None:
    """Demo: synthetic superposition embeddings -> token store + ground-truth dictionary."""
    data = simulate.simulate_superposition(**params)
    io.write_token_store(store_dir, data.tokens, data.obs)
    simulate.write_ground_truth(data, ground_truth_dir)
    log.info("simulated %d tokens of dimension %d, %d atoms", *data.tokens.shape, len(data.atoms))


def train_expression_model(
    source: str,
    params: Mapping[str, Any],
    model_path: PathLike,
    history_path: PathLike,
    *,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """scRNA: train the small expression autoencoder whose latent space gives the tokens."""
    from cellconcepts import embed  # scanpy is slow to import; only these stages need it
    from cellconcepts.training import resolve_device

    _set_threads(threads)
    adata = embed.load_expression(source)
    model, history = embed.train_expression_autoencoder(
        _dense(adata.X), device=str(resolve_device(device)), **params
    )
    embed.save_expression_model(
        model, model_path, {"source": source, "n_genes": int(adata.n_vars), **params}
    )
    history.to_csv(history_path, index=False)
    log.info("autoencoder trained: loss %.4f -> %.4f", history.loss.iloc[0], history.loss.iloc[-1])


def embed_scrna_store(
    source: str,
    embedding: str,
    store_dir: PathLike,
    *,
    model_path: PathLike | None,
    control: str | Mapping[str, Any],
    split: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
) -> None:
    """scRNA: cell embeddings (trained autoencoder, or an existing obsm key) -> token store."""
    from cellconcepts import embed  # scanpy is slow to import; only these stages need it

    adata = embed.load_expression(source)
    if embedding == "autoencoder":
        if model_path is None:
            raise ValueError("embedding 'autoencoder' needs the trained model path")
        model, _ = embed.load_expression_model(model_path)
        tokens = embed.embed_cells(model, _dense(adata.X))
    else:
        key = embedding.removeprefix("obsm:")
        if key not in adata.obsm:
            raise ValueError(
                f"scrna.embedding {embedding!r}: obsm key {key!r} not in {source}; "
                f"available: {list(adata.obsm.keys())}"
            )
        tokens = np.asarray(adata.obsm[key], dtype=np.float32)
    table = adata.obs.copy()
    table["obs_name"] = adata.obs_names.astype(str)
    annotated = obs.annotate_obs(
        table, control=control, split=split, label_columns=[t["column"] for t in tasks]
    )
    io.write_token_store(store_dir, tokens, annotated)


def import_token_store(
    path: PathLike,
    store_dir: PathLike,
    *,
    obsm_key: str | None,
    obs_path: PathLike | None,
    embedding_columns: str | list[str] | None = None,
    control: str | Mapping[str, Any] | None,
    split: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
) -> None:
    """User embeddings (h5ad X/obsm, parquet, npy + obs) -> token store."""
    tokens, table = io.read_embeddings(
        path, obsm_key=obsm_key, obs_path=obs_path, embedding_columns=embedding_columns
    )
    annotated = obs.annotate_obs(
        table, control=control, split=split, label_columns=[t["column"] for t in tasks]
    )
    io.write_token_store(store_dir, tokens, annotated)


# --------------------------------------------------------------------------- whitening


def fit_control_whitening(
    store_dir: PathLike,
    method: str,
    out_path: PathLike,
    *,
    eps_relative: float,
    n_components: int | None,
) -> None:
    """Fit the whitening (or the centring-only variant) on the store's control rows."""
    from cellconcepts.whiten import fit_whitening

    store = io.TokenStore.open(store_dir)
    controls = np.flatnonzero(store.obs["is_control"].to_numpy())
    whitening = fit_whitening(
        store.tokens, controls, method, n_components=n_components, eps_relative=eps_relative
    )
    whitening.save(out_path)
    log.info(
        "%s whitening on %d control rows: %d -> %d dims",
        method,
        len(controls),
        whitening.input_dim,
        whitening.output_dim,
    )


# --------------------------------------------------------------------------- dictionary


def train_variant(
    store_dir: PathLike,
    whitening_path: PathLike,
    variant: str,
    settings: Mapping[str, Any],
    *,
    model_path: PathLike,
    metrics_path: PathLike,
    dead_path: PathLike,
    checkpoint_dir: PathLike,
    threads: int | None = None,
) -> None:
    """Train one dictionary (ICFL or TopK) on the store's train split, resumably."""
    from cellconcepts.dictionary import build_model, save_model
    from cellconcepts.training import TrainConfig, train_dictionary
    from cellconcepts.whiten import Whitening

    spec = Variant.parse(variant)
    store = io.TokenStore.open(store_dir)
    whitening = Whitening.load(whitening_path)
    train_rows = np.flatnonzero(store.obs["split"].to_numpy() == "train")
    model = build_model(
        spec.method,
        whitening.output_dim,
        settings["n_features"],
        spec.sparsity,
        atoms_per_iteration=settings["icfl"]["atoms_per_iteration"],
        aux_k=settings["topk"]["aux_k"],
        seed=spec.seed,
    )
    if spec.method == "icfl":
        model.learn_b_pre = settings["icfl"]["learn_b_pre"]
    if spec.method == "topk":
        model.aux_coef = settings["topk"]["aux_coef"]
    train = settings["train"]
    config = TrainConfig(
        steps=train["steps"],
        batch_size=train["batch_size"],
        lr=train["lr"],
        seed=spec.seed,
        device=train["device"],
        log_every=train["log_every"],
        checkpoint_every=train["checkpoint_every"],
        resample_every=settings["icfl"]["resample_every"],
        resample_threshold=settings["icfl"]["resample_threshold"],
        dead_window=train["dead_window"],
        dead_fraction=train["dead_fraction"],
        num_threads=threads,
    )
    # Checkpoints and the metrics they belong to live under a signature of everything that
    # determines the run: a rerun with other settings, whitening or tokens starts afresh, an
    # identical rerun (or one killed midway) resumes. Snakemake deletes declared outputs before
    # a job runs, so the training curve is kept here and copied to `metrics_path` at the end.
    run_dir = Path(checkpoint_dir) / run_signature(
        variant, settings, whitening.output_dim, whitening_path, store_dir
    )
    if not train_rows.size:
        raise ValueError(f"{store_dir}: no rows with split == 'train' to train the dictionary on")
    result = train_dictionary(
        model,
        store.tokens,
        train_rows,
        whitening.transform,
        config,
        checkpoint_dir=run_dir,
        metrics_path=run_dir / "metrics.csv",
    )
    shutil.copyfile(run_dir / "metrics.csv", metrics_path)
    meta = {
        "variant": variant,
        "method": spec.method,
        "whitening": spec.whitening,
        "sparsity": spec.sparsity,
        "seed": spec.seed,
        "n_features": settings["n_features"],
        "atoms_per_iteration": settings["icfl"]["atoms_per_iteration"],
        "aux_k": settings["topk"]["aux_k"],
        "input_dim": whitening.output_dim,
        "steps": result.steps_done,
    }
    save_model(model, model_path, meta)
    dead = pd.DataFrame({"feature": np.arange(len(result.dead_mask)), "dead": result.dead_mask})
    dead.to_csv(dead_path, index=False)
    log.info(
        "%s: %d of %d features dead over the last %d steps",
        variant,
        int(result.dead_mask.sum()),
        len(result.dead_mask),
        train["dead_window"],
    )


def run_signature(
    variant: str,
    settings: Mapping[str, Any],
    input_dim: int,
    whitening_path: PathLike,
    store_dir: PathLike,
) -> str:
    """Short hash of a training run's settings and inputs (log and checkpoint cadence aside)."""
    train = {
        k: v for k, v in settings["train"].items() if k not in ("log_every", "checkpoint_every")
    }
    tokens = Path(store_dir) / io.TOKENS_FILE
    payload = {
        "variant": variant,
        "settings": {**settings, "train": train},
        "input_dim": input_dim,
        "whitening": hashlib.sha1(Path(whitening_path).read_bytes()).hexdigest(),
        "obs": hashlib.sha1((Path(store_dir) / io.OBS_FILE).read_bytes()).hexdigest(),
        "tokens": [tokens.stat().st_size, tokens.stat().st_mtime_ns],
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha1(encoded).hexdigest()[:16]


def encode_store(
    store_dir: PathLike,
    whitening_path: PathLike,
    model_path: PathLike,
    *,
    codes_path: PathLike,
    reconstruction_path: PathLike,
    cosine_path: PathLike,
    batch_size: int,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """Sparse codes (CSR) and original-space reconstructions for every token."""
    from cellconcepts.dictionary import load_model
    from cellconcepts.encode import encode_tokens
    from cellconcepts.whiten import Whitening

    _set_threads(threads)
    store = io.TokenStore.open(store_dir)
    whitening = Whitening.load(whitening_path)
    model, _ = load_model(model_path)
    result = encode_tokens(
        model,
        store.tokens,
        whitening,
        batch_size=batch_size,
        device=device,
        reconstruction_path=Path(reconstruction_path),
    )
    sp.save_npz(codes_path, result.codes.tocsr())
    pd.DataFrame(
        {
            "token_id": store.obs["token_id"].to_numpy(),
            "split": store.obs["split"].to_numpy(),
            "cosine_model": result.cosine_model,
            "cosine_original": result.cosine_original,
        }
    ).to_parquet(cosine_path, index=False)


# --------------------------------------------------------------------------- evaluation


def task_labels(table: pd.DataFrame, task: Mapping[str, Any]) -> pd.Series:
    """A task's labels as strings, with excluded values and missing labels set to NaN."""
    labels = table[task["column"]].astype("string").astype(object)
    labels[labels.isin([str(v) for v in task.get("exclude", [])])] = np.nan
    return labels.where(labels.notna(), np.nan)


def selectivity_tables(
    store_dir: PathLike,
    codes_path: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    *,
    thresholds: Sequence[float],
    counts_path: PathLike,
    best_path: PathLike,
) -> None:
    """Per task: features above each avg-selectivity threshold, and the best score per label.

    The row task='any' counts features selective for at least one label of any task.
    """
    store = io.TokenStore.open(store_dir)
    codes = sp.load_npz(codes_path).tocsr()
    counts, best, best_any = [], [], None
    for task in tasks:
        sel = evaluate.selectivity(codes, task_labels(store.obs, task))
        counts.append({"task": task["name"], **evaluate.selectivity_counts(sel, thresholds)})
        table = evaluate.best_selectivity_per_label(sel)
        table.insert(0, "task", task["name"])
        best.append(table)
        feature_best = sel.avg.max(axis=0)
        best_any = feature_best if best_any is None else np.maximum(best_any, feature_best)
    counts.append(
        {"task": "any", **{f"n_features_sel_{t:g}": int((best_any > t).sum()) for t in thresholds}}
    )
    pd.DataFrame(counts).to_csv(counts_path, index=False)
    pd.concat(best, ignore_index=True).to_csv(best_path, index=False)


def probe_representation(
    store_dir: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    out_path: PathLike,
    *,
    probe: Mapping[str, Any],
    codes_path: PathLike | None = None,
    reconstruction_path: PathLike | None = None,
    threads: int | None = None,
) -> None:
    """Linear-probe BTA per task on raw tokens (no paths given), or on a model's codes and
    reconstructions (see `probe_tasks`)."""
    _set_threads(threads)
    store = io.TokenStore.open(store_dir)
    representations: dict[str, Any] = {}
    if codes_path is None and reconstruction_path is None:
        representations["raw"] = store.tokens
    if reconstruction_path is not None:
        representations["reconstruction"] = np.load(reconstruction_path, mmap_mode="r")
    if codes_path is not None:
        representations["codes"] = sp.load_npz(codes_path).tocsr()
    rows = probe_tasks(representations, store.obs, tasks, probe)
    pd.DataFrame(rows).to_csv(out_path, index=False)


def probe_tasks(
    representations: Mapping[str, Any],
    table: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """BTA rows (task, representation, bta, sizes) of every representation on every task.

    The split per task depends only on the obs and the seed, so all representations are
    probed on the same rows.
    """
    rows = []
    for task in tasks:
        labels = task_labels(table, task)
        keep = labels.notna().to_numpy()
        kept = table.loc[keep].reset_index(drop=True)
        kept["_label"] = labels[keep].to_numpy()
        train, test = evaluate.probe_split_masks(
            kept,
            "_label",
            group_column=task.get("group_by"),
            test_fraction=probe["test_fraction"],
            seed=probe["seed"],
        )
        rows_kept = np.flatnonzero(keep)
        y = kept["_label"].to_numpy()
        for name, features in representations.items():
            x = features[rows_kept]
            result = evaluate.linear_probe(
                x[train],
                y[train],
                x[test],
                y[test],
                max_iter=probe["max_iter"],
                C=probe["C"],
                seed=probe["seed"],
                max_train=probe["max_train"],
            )
            rows.append({"task": task["name"], "representation": name, **result})
            log.info("probe %s on %s: BTA %.3f", task["name"], name, result["bta"])
    return rows


def atom_recovery_table(
    model_path: PathLike,
    whitening_path: PathLike,
    atoms_path: PathLike,
    atom_table_path: PathLike,
    out_path: PathLike,
    *,
    threshold: float,
) -> None:
    """Ground truth only: does each true atom have a learned direction with |cos| >= threshold?

    Primary comparison in the model's input space (true atoms pushed through the linear part of
    the whitening, which is where the dictionary lives); `*_original` columns compare learned
    directions mapped back to the original embedding space, which is ill-conditioned under PCA
    whitening (see `Whitening.directions_to_model_space`).
    """
    from cellconcepts.dictionary import decoder_directions, load_model
    from cellconcepts.whiten import Whitening

    model, _ = load_model(model_path)
    whitening = Whitening.load(whitening_path)
    learned = decoder_directions(model)
    atoms = np.load(atoms_path)
    model_space = whitening.directions_to_model_space(atoms.T).T
    table = evaluate.atom_recovery(model_space, learned, threshold=threshold)
    original = evaluate.atom_recovery(
        atoms, whitening.directions_to_input_space(learned), threshold=threshold
    )
    table["best_abs_cosine_original"] = original["best_abs_cosine"].to_numpy()
    table["recovered_original"] = original["recovered"].to_numpy()
    table = table.merge(pd.read_csv(atom_table_path), on="atom", how="left")
    table.to_csv(out_path, index=False)
    log.info(
        "recovered %d of %d atoms in model space, %d in the original space (|cos| >= %.2f)",
        int(table.recovered.sum()),
        len(table),
        int(table.recovered_original.sum()),
        threshold,
    )


# --------------------------------------------------------------------------- helpers


def _dense(matrix: Any) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))
