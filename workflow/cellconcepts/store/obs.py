"""Token annotations: which rows are controls, and the train/test split.

Every token store carries `is_control` (rows the whitening is fitted on) and `split` (rows the
dictionary never trains on, used for held-out reconstruction). Inputs that lack them get them
from the dataset's config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cellconcepts.defaults import schema_default

log = logging.getLogger(__name__)


TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def parse_flags(values: pd.Series, where: str) -> np.ndarray:
    """A yes/no column as booleans: booleans, 0/1, or the strings true/false, yes/no, 1/0 in
    any case. Anything else (other strings, other numbers, missing values) is refused, naming
    the values found: ``astype(bool)`` would turn every non-empty string into True."""
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        return values.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if not values.isna().any() and set(np.unique(values.to_numpy())) <= {0, 1}:
            return values.to_numpy() == 1
    else:
        words = values.astype("string").str.strip().str.lower()
        known = words.isin(TRUE_WORDS + FALSE_WORDS).fillna(False).to_numpy(dtype=bool)
        if known.all():
            return words.isin(TRUE_WORDS).to_numpy(dtype=bool)
        numbers = pd.to_numeric(words, errors="coerce")  # "1.0" / "0.0" as a CSV writes floats
        if not numbers.isna().any() and set(np.unique(numbers.to_numpy(dtype=float))) <= {0, 1}:
            return numbers.to_numpy(dtype=float) == 1
    found = sorted({repr(v) for v in values.drop_duplicates().head(20).tolist()})
    raise ValueError(
        f"{where}: expected booleans (True/False, 1/0, or 'true'/'false'/'yes'/'no'), "
        f"found {', '.join(found)}"
    )


def check_ids(ids: pd.Series, what: str) -> None:
    """Token ids (``what`` says where they come from): none missing, none repeated; the first
    offender named with its rows (counted from 0)."""
    ids = ids.reset_index(drop=True)
    missing = ids.isna().to_numpy()
    if missing.any():
        raise ValueError(f"{what} has a missing value at row {int(np.flatnonzero(missing)[0])}")
    text = ids.astype(str)
    repeated = text.duplicated(keep=False).to_numpy()
    if repeated.any():
        first = text[repeated].iloc[0]
        rows = np.flatnonzero((text == first).to_numpy())[:5].tolist()
        raise ValueError(
            f"{what} must be unique (one token per id): {first!r} is on rows {rows}; "
            f"{int(repeated.sum())} rows share ids, e.g. {text[repeated].unique()[:5].tolist()}"
        )


def control_mask(obs: pd.DataFrame, control: str | Mapping[str, Any]) -> np.ndarray:
    """Boolean mask of control rows.

    `control` is "all" (every row is a control: plain PCA whitening, e.g. scRNA atlases without
    perturbations) or {"column": name, "values": [...]} (rows whose column value is listed).
    """
    if control == "all":
        return np.ones(len(obs), dtype=bool)
    column = control["column"]
    if column not in obs.columns:
        raise ValueError(
            f"control.column {column!r} is not an obs column; available: {list(obs.columns)}"
        )
    values = list(control["values"])
    mask = obs[column].isin(values).to_numpy()
    if mask.sum() < 2:
        raise ValueError(
            f"control: only {int(mask.sum())} rows have {column} in {values}; "
            "whitening needs at least 2 control rows"
        )
    return mask


def assign_split(
    obs: pd.DataFrame,
    *,
    test_fraction: float,
    group_column: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Seeded train/test labels per row; with `group_column`, whole groups go to one side."""
    rng = np.random.default_rng(seed)
    n = len(obs)
    split = np.full(n, "train", dtype=object)
    if group_column is None:
        test = rng.permutation(n)[: int(round(test_fraction * n))]
        split[test] = "test"
        return split
    if group_column not in obs.columns:
        raise ValueError(
            f"split.group_by {group_column!r} is not an obs column; available: {list(obs.columns)}"
        )
    groups = obs[group_column].astype(str).to_numpy()
    unique = rng.permutation(np.unique(groups))
    sizes = pd.Series(groups).value_counts()
    chosen: list[str] = []
    n_test = 0
    for group in unique:
        if n_test >= test_fraction * n:
            break
        chosen.append(group)
        n_test += int(sizes[group])
    if len(chosen) == len(unique):
        chosen = chosen[:-1]
    split[np.isin(groups, chosen)] = "test"
    return split


SPLIT_VALUES = ("train", "test")


def check_split_values(split: pd.Series, where: str) -> None:
    """Every value must be exactly 'train' or 'test' (lower case), named by row otherwise."""
    bad = ~split.isin(SPLIT_VALUES).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        values = sorted({repr(v) for v in split[bad].drop_duplicates().head(5).tolist()})
        hint = (
            "; lower-case them"
            if split[bad].astype("string").str.lower().isin(SPLIT_VALUES).all()
            else ""
        )
        raise ValueError(
            f"{where}: expected 'train' or 'test'; row {row} has {split.iloc[row]!r} "
            f"({int(bad.sum())} rows, values {', '.join(values)}){hint}"
        )


def annotate_obs(
    obs: pd.DataFrame,
    *,
    control: str | Mapping[str, Any] | None,
    split: Mapping[str, Any],
    label_columns: Sequence[str],
) -> pd.DataFrame:
    """Add token_id / is_control / split to an input's obs.

    An existing `token_id` or `split` column is kept; an existing `is_control` is kept unless
    `control` says otherwise (None means: use the input's own `is_control`).
    """
    obs = obs.reset_index(drop=True).copy()
    if obs.empty:
        raise ValueError("the input has no rows: expected one row per token")
    missing = [c for c in label_columns if c not in obs.columns]
    if missing:
        raise ValueError(
            f"task label columns {missing} are not in obs; available: {list(obs.columns)}"
        )
    if "token_id" not in obs.columns:
        source = obs["obs_name"] if "obs_name" in obs.columns else pd.Series(range(len(obs)))
        obs["token_id"] = source.astype(str).to_numpy()
        check_ids(source, "the row names (obs index, read as token_id)")
    else:
        check_ids(obs["token_id"], "column 'token_id'")
    if control is not None:
        obs["is_control"] = control_mask(obs, control)
    elif "is_control" in obs.columns:
        log.info("using the input's own is_control column")
        obs["is_control"] = parse_flags(obs["is_control"], "column 'is_control'")
    else:
        raise ValueError(
            "the input has no is_control column: set the dataset's `control` key "
            "('all', or {column: ..., values: [...]})"
        )
    if "split" not in obs.columns:
        obs["split"] = assign_split(
            obs,
            test_fraction=split["test_fraction"],
            group_column=split.get("group_by"),
            seed=split.get("seed", schema_default("datasets.*.split.seed")),
        )
    else:
        check_split_values(obs["split"], "column 'split'")
    n_test = int((obs["split"] == "test").sum())
    if n_test == 0 or n_test == len(obs):
        raise ValueError(
            f"split: {n_test} of {len(obs)} rows are 'test'; both train and test rows are "
            "needed (adjust split.test_fraction / split.group_by or the input's split column)"
        )
    log.info(
        "%d tokens, %d controls, %d test",
        len(obs),
        int(obs["is_control"].sum()),
        int((obs["split"] == "test").sum()),
    )
    return obs
