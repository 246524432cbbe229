"""Stage of workflow/rules/train.smk: one dictionary (ICFL or TopK) per variant, resumably."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellconcepts.files import PathLike, atomic_path
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import TokenStore
from cellconcepts.variant import Variant

log = logging.getLogger(__name__)


def checkpoint_signature(
    variant: str,
    settings: Mapping[str, Any],
    input_dim: int,
    whitening: PathLike,
    store: TokenFiles,
) -> str:
    """Short hash of everything that determines a training run: its checkpoints live in a
    folder of this name, so a rerun with other settings, whitening or tokens starts afresh and
    an identical rerun (or one killed midway) resumes."""
    tokens = Path(store.tokens)
    payload = {
        "variant": variant,
        "settings": dict(settings),
        "input_dim": input_dim,
        "whitening": hashlib.sha1(Path(whitening).read_bytes()).hexdigest(),
        "obs": hashlib.sha1(Path(store.obs).read_bytes()).hexdigest(),
        "tokens": [tokens.stat().st_size, tokens.stat().st_mtime_ns],
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha1(encoded).hexdigest()[:16]


def _dictionary(spec: Variant, settings: Mapping[str, Any], input_dim: int) -> Any:
    """An untrained ICFL or TopK model of this variant, with the method's own settings."""
    from cellconcepts.dictionary.models import build_model
    from cellconcepts.dictionary.settings import from_config

    own = from_config(spec.method, settings)
    return build_model(
        spec.method, input_dim, settings["n_features"], spec.sparsity, seed=spec.seed, settings=own
    )


def _train_config(
    spec: Variant,
    settings: Mapping[str, Any],
    execution: Mapping[str, Any],
    threads: int | None,
) -> Any:
    """The training loop's settings: the optimisation of ``settings`` and how the job runs
    (``execution``)."""
    from cellconcepts.dictionary.training import TrainConfig

    return TrainConfig(
        **settings["train"],
        seed=spec.seed,
        device=execution["device"],
        log_every=execution["log_every"],
        checkpoint_every=execution["checkpoint_every"],
        num_threads=threads,
    )


def train_dictionary(
    *,
    tokens: PathLike,
    obs: PathLike,
    whitening: PathLike,
    model: PathLike,
    metrics: PathLike,
    dead: PathLike,
    variant: str,
    settings: Mapping[str, Any],
    checkpoint_dir: PathLike,
    threads: int | None = None,
    execution: Mapping[str, Any],
) -> None:
    """Train one dictionary on the store's train split (``settings``: `config.training_settings`).

    Snakemake deletes declared outputs before a job runs, so the checkpoints and the training
    curve live under ``checkpoint_dir/<signature>/`` and the curve is copied to ``metrics`` at
    the end.
    """
    from cellconcepts.dictionary.models import save_model
    from cellconcepts.dictionary.training import dead_feature_table, model_meta, train_rows
    from cellconcepts.dictionary.training import train_dictionary as train
    from cellconcepts.dictionary.whitening import Whitening

    spec = Variant.parse(variant)
    files = TokenFiles(Path(tokens), Path(obs))
    store = TokenStore.open(files, columns=["split"])
    transform = Whitening.load(whitening)
    rows = train_rows(store.obs["split"].to_numpy(), str(obs))
    dictionary = _dictionary(spec, settings, transform.output_dim)
    config = _train_config(spec, settings, execution, threads)
    run_dir = Path(checkpoint_dir) / checkpoint_signature(
        variant, settings, transform.output_dim, whitening, files
    )
    result = train(
        dictionary,
        store.tokens,
        rows,
        transform.transform,
        config,
        checkpoint_dir=run_dir,
        metrics_path=run_dir / "metrics.csv",
    )
    with atomic_path(metrics) as tmp:
        shutil.copyfile(run_dir / "metrics.csv", tmp)
    meta = model_meta(variant, settings["n_features"], transform.output_dim, result.steps_done)
    save_model(dictionary, model, meta)
    with atomic_path(dead) as tmp:
        dead_feature_table(result.dead_mask).to_csv(tmp, index=False)
    log.info(
        "%s: %d of %d features dead over the last %d steps",
        variant,
        int(result.dead_mask.sum()),
        len(result.dead_mask),
        min(config.dead_window, result.steps_done),
    )
