"""Compare two results/ trees of the workflow: did a change leave the science unchanged?

Text tables (CSV, Markdown, LaTeX, JSON) must be byte-identical, except for columns that time
the run (seconds); Parquet tables, .npy arrays and .npz codes are compared by content (their
files embed timestamps). Logs, benchmarks, checkpoints, figures and model files are skipped.
Prints one line per difference and a summary; exits 1 if anything differs or is missing.

    python scripts/compare_results.py BEFORE/results AFTER/results [--ignore-missing GLOB ...]

``--ignore-missing`` names files that may be absent from AFTER, e.g. ones a newer workflow
deletes as temporary ("*/reconstructions.npy").

Tables mode (``--tables``, implied by ``--out``): did the science move, not did the bytes?

    python scripts/compare_results.py OLD/results NEW/results --tables [--out report.md]

For every dataset folder (the root and each child with ``headline.csv`` or ``tables/``), every
CSV in ``tables/`` and ``headline.csv`` are compared row by row. Rows are matched on the key
columns in ``KEY_COLUMNS`` that the table has (a repeated key gets a running number). Then:

* Seeded tables (a ``seed`` column, a ``variant`` ending in ``_seedN``, or wide columns
  ``<variant>_seedN``, which are melted into ``variant``, ``seed``, ``value``): per key without
  the seed, each numeric column's mean and sample sd (ddof 1) over seeds, in each run
  (booleans count as 0/1, so their mean is the fraction of seeds). A number **moved beyond the
  spread** when ``|mean_new - mean_old| > K * max(sd_old, sd_new)`` with ``K = 2``
  (``SPREAD_FACTOR``) and the change exceeds the tolerance below; it is "within spread" when it
  changed by no more than that. Where the spread is 0 or unknown (one seed, or every seed
  equal), the deterministic rule applies.
* Tables that carry their own seed spread: a column ``X_sd`` is the spread of ``X``
  (``headline_seeds.csv``), ``seed_sd`` the spread of ``value``, ``low`` and ``high``
  (``selectivity_intervals.csv``); the same rule with those sds. ``*_sd`` columns themselves
  are not compared.
* Tables with a seed interval and no sd (``low``, ``high`` around ``difference`` /
  ``mean_difference``: ``selectivity_differences.csv``, ``selectivity_verdicts.csv``,
  ``claim.csv``): a 95 % interval spans about 2 sd each side, so the estimate and the bounds
  ``low``, ``high`` moved beyond the spread when
  ``|new - old| > max(half_width_old, half_width_new)``, ``half_width = (high - low) / 2``.
* Every other number (deterministic values, or aggregates without a spread): it **changed**
  when ``|new - old| > ATOL + RTOL * |old|`` (1e-9, 1e-6); reported as "changed, no spread"
  since there is nothing to judge it against. NaN on one side only counts as moved/changed.
* **Verdicts** (tables without seeds): the column ``verdict``, boolean columns
  (``encoder_sees``, ``expected_is_top``, ``recovered``...), columns starting ``top_``
  (``top_channel`` = the channel ranked first, ``top_term``) and ``stars``. A verdict flipped
  when its value differs. Other text columns that differ are counted as "text changed"; in
  seeded tables text is compared per seed row and counted the same way.

Prints one summary line per table (with up to ``--limit`` flips and moves each); ``--out``
writes the same as Markdown. Exit status 1 if a verdict flipped, a number moved beyond the
spread, or a table or row is missing from NEW; 0 otherwise (changes within the spread and
"changed, no spread" do not fail it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

TIMING_COLUMNS = {"seconds", "seconds_per_image", "gene_list_seconds", "enrichment_seconds"}
# Provenance written into a saved encoder's config.json, not a result.
PROVENANCE_KEYS = {"images"}
SKIPPED_FOLDERS = ("logs", "benchmarks", "checkpoints")
SKIPPED_SUFFIXES = (".png", ".pdf", ".pt", ".safetensors", ".log", ".tsv")


def _same_text_table(a: Path, b: Path) -> bool:
    if a.suffix == ".csv":
        x, y = pd.read_csv(a), pd.read_csv(b)
        kept = [c for c in x.columns if c not in TIMING_COLUMNS]
        return list(x.columns) == list(y.columns) and x[kept].equals(y[kept])
    if a.suffix == ".json":
        ignored = TIMING_COLUMNS | PROVENANCE_KEYS
        x, y = json.loads(a.read_text()), json.loads(b.read_text())
        if not (isinstance(x, dict) and isinstance(y, dict)):
            return x == y
        return {k: v for k, v in x.items() if k not in ignored} == {
            k: v for k, v in y.items() if k not in ignored
        }
    return False


def _same_binary(a: Path, b: Path) -> bool:
    if a.suffix == ".parquet":
        return pd.read_parquet(a).equals(pd.read_parquet(b))
    if a.suffix == ".npy":
        return np.array_equal(np.load(a), np.load(b))
    if a.suffix == ".npz":
        try:
            x, y = sp.load_npz(a), sp.load_npz(b)
            return x.shape == y.shape and (x != y).nnz == 0
        except (ValueError, KeyError):
            with np.load(a) as x, np.load(b) as y:
                return sorted(x.files) == sorted(y.files) and all(
                    np.array_equal(x[k], y[k]) for k in x.files
                )
    return False


def compare(before: Path, after: Path) -> dict[str, list[str]]:
    """Files of ``before`` by outcome: identical, timing_only, differ, missing (in after)."""
    outcome: dict[str, list[str]] = {
        "identical": [],
        "timing_only": [],
        "differ": [],
        "missing": [],
    }
    for a in sorted(before.rglob("*")):
        rel = a.relative_to(before)
        if not a.is_file() or a.suffix in SKIPPED_SUFFIXES or a.name.startswith("."):
            continue
        if set(rel.parts) & set(SKIPPED_FOLDERS):
            continue
        b = after / rel
        if not b.is_file():
            outcome["missing"].append(str(rel))
        elif a.read_bytes() == b.read_bytes():
            outcome["identical"].append(str(rel))
        elif a.suffix in (".parquet", ".npy", ".npz"):
            outcome["identical" if _same_binary(a, b) else "differ"].append(str(rel))
        else:
            outcome["timing_only" if _same_text_table(a, b) else "differ"].append(str(rel))
    return outcome


# ---------------------------------------------------------------------------------------------
# Tables mode: per table, numbers that moved beyond the seeds' spread and verdicts that flipped.

SPREAD_FACTOR = 2.0
ATOL, RTOL = 1e-9, 1e-6
KEY_COLUMNS = (
    "variant",
    "method",
    "whitening",
    "sparsity",
    "seed",
    "task",
    "label",
    "score",
    "first",
    "second",
    "representation",
    "group",
    "comparison",
    "category",
    "layer",
    "image_id",
    "row",
    "cell_label",
    "backend",
    "iou_threshold",
    "bin_left",
)
VERDICT_NAMES = {"verdict", "stars"}
INTERVAL_ESTIMATES = ("difference", "mean_difference")
SEED_SUFFIX = re.compile(r"^(.+)_seed(\d+)$")


@dataclass
class TableReport:
    """What changed in one table between OLD and NEW."""

    table: str
    key: list[str]
    rows_old: int = 0
    rows_new: int = 0
    seeded: bool = False
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("identical", "within_spread", "beyond_spread", "changed_no_spread"), 0
        )
    )
    moved: list[str] = field(default_factory=list)  # beyond spread, and changed without spread
    flipped: list[str] = field(default_factory=list)
    n_verdicts: int = 0
    text_changed: int = 0
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.flipped or self.counts["beyond_spread"] or self.only_old or self.note)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _key_text(x) -> str:
    if isinstance(x, float) and not math.isnan(x) and x == int(x):
        return str(int(x))
    return str(x)


def _is_bool_like(col: pd.Series) -> bool:
    if col.dtype == bool:
        return True
    if col.dtype != object:
        return False
    values = set(col.dropna().map(str))
    return bool(values) and values <= {"True", "False"}


def _as_number(col: pd.Series) -> pd.Series:
    if _is_bool_like(col):
        return col.map(lambda v: np.nan if pd.isna(v) else float(str(v) == "True"))
    return col


def _prepare(df: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Melt wide ``<variant>_seedN`` columns; split ``variant`` into base + seed. Seeded?"""
    wide = [c for c in df.columns if SEED_SUFFIX.match(str(c))]
    if wide:
        ids = [c for c in df.columns if c not in wide]
        df = df.melt(id_vars=ids, value_vars=wide, var_name="variant", value_name="value")
    if "variant" in df.columns:
        parts = df["variant"].astype(str).str.extract(SEED_SUFFIX)
        has_seed = parts[0].notna()
        if has_seed.any():
            df = df.copy()
            df.loc[has_seed, "variant"] = parts.loc[has_seed, 0]
            if "seed" not in df.columns:
                df["seed"] = pd.to_numeric(parts[1], errors="coerce")
    return df, "seed" in df.columns


def _keyed(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    out = df.copy()
    if key:
        out["_key"] = out[key].apply(lambda r: "/".join(_key_text(v) for v in r), axis=1)
    else:
        out["_key"] = ""
    dup = out.groupby("_key").cumcount()
    if (dup > 0).any():
        out["_key"] = out["_key"] + dup.map(lambda n: f"#{n}")
    return out.set_index("_key")


def _differs(a, b) -> bool:
    a_nan, b_nan = pd.isna(a), pd.isna(b)
    if a_nan or b_nan:
        return a_nan != b_nan
    return abs(float(b) - float(a)) > ATOL + RTOL * abs(float(a))


def _judge(rep: TableReport, where: str, old, new, spread_old, spread_new, rule: str) -> None:
    """Count one number; ``spread_*`` are the allowed moves (NaN: no spread)."""
    if not _differs(old, new):
        rep.counts["identical"] += 1
        return
    spreads = [s for s in (spread_old, spread_new) if not pd.isna(s) and s > 0]
    line = f"{where}: {_fmt(old)} -> {_fmt(new)}"
    if not spreads:
        rep.counts["changed_no_spread"] += 1
        rep.moved.append(f"{line} (changed, no spread)")
        return
    allowed = max(spreads)
    if pd.isna(old) or pd.isna(new) or abs(float(new) - float(old)) > allowed:
        rep.counts["beyond_spread"] += 1
        rep.moved.append(f"{line} (BEYOND {rule} {_fmt(allowed)})")
    else:
        rep.counts["within_spread"] += 1


def _seed_summary(df: pd.DataFrame, base: list[str], numeric: list[str]) -> pd.DataFrame:
    frame = df[base + numeric].copy()
    for c in numeric:
        frame[c] = pd.to_numeric(_as_number(frame[c]), errors="coerce")
    frame["_key"] = (
        frame[base].apply(lambda r: "/".join(_key_text(v) for v in r), axis=1) if base else ""
    )
    grouped = frame.groupby("_key")[numeric]
    return grouped.mean().join(grouped.std(ddof=1), rsuffix="_sd__")


def _numeric_columns(old: pd.DataFrame, new: pd.DataFrame, key: list[str]) -> list[str]:
    cols = []
    for c in old.columns:
        if c in key or c not in new.columns or c == "seed_sd" or str(c).endswith("_sd"):
            continue
        a, b = _as_number(old[c]), _as_number(new[c])
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            cols.append(c)
    return cols


def _text_columns(old: pd.DataFrame, new: pd.DataFrame, key: list[str]) -> list[str]:
    return [
        c
        for c in old.columns
        if c in new.columns and c not in key and c != "seed_sd" and not str(c).endswith("_sd")
    ]


def compare_table(old: pd.DataFrame, new: pd.DataFrame, name: str) -> TableReport:
    """Compare one table of two runs (see the module docstring for the rules)."""
    old, seeded_old = _prepare(old)
    new, seeded_new = _prepare(new)
    key = [c for c in KEY_COLUMNS if c in old.columns and c in new.columns]
    rep = TableReport(table=name, key=key, rows_old=len(old), rows_new=len(new))
    rep.seeded = seeded_old and seeded_new
    if list(old.columns) != list(new.columns):
        gone = [c for c in old.columns if c not in new.columns]
        added = [c for c in new.columns if c not in old.columns]
        if gone or added:
            rep.note = f"columns only in OLD {gone}, only in NEW {added}"
    numeric = _numeric_columns(old, new, key)
    if rep.seeded:
        base = [c for c in key if c != "seed"]
        a, b = _seed_summary(old, base, numeric), _seed_summary(new, base, numeric)
        rep.only_old = sorted(set(a.index) - set(b.index))
        rep.only_new = sorted(set(b.index) - set(a.index))
        for k in a.index.intersection(b.index):
            for c in numeric:
                _judge(
                    rep,
                    f"{k} {c} (seed mean)",
                    a.at[k, c],
                    b.at[k, c],
                    SPREAD_FACTOR * a.at[k, f"{c}_sd__"],
                    SPREAD_FACTOR * b.at[k, f"{c}_sd__"],
                    f"{SPREAD_FACTOR:g} x seed sd",
                )
        ka, kb = _keyed(old, key), _keyed(new, key)
        text = [c for c in _text_columns(old, new, key) if c not in numeric]
        for k in ka.index.intersection(kb.index):
            rep.text_changed += sum(str(ka.at[k, c]) != str(kb.at[k, c]) for c in text)
        return rep
    a, b = _keyed(old, key), _keyed(new, key)
    rep.only_old = [k for k in a.index if k not in b.index]
    rep.only_new = [k for k in b.index if k not in a.index]
    verdicts = [
        c
        for c in old.columns
        if c in new.columns
        and c not in key
        and (c in VERDICT_NAMES or str(c).startswith("top_") or _is_bool_like(old[c]))
    ]
    text = [c for c in _text_columns(old, new, key) if c not in numeric + verdicts]
    numeric = [c for c in numeric if c not in verdicts]
    for k in a.index.intersection(b.index):
        ra, rb = a.loc[k], b.loc[k]
        for c in numeric:
            x, y = ra[c], rb[c]
            if f"{c}_sd" in a.columns:
                s_old, s_new = ra[f"{c}_sd"], rb[f"{c}_sd"]
                rule = f"{SPREAD_FACTOR:g} x {c}_sd"
            elif "seed_sd" in a.columns and c in ("value", "low", "high"):
                s_old, s_new = ra["seed_sd"], rb["seed_sd"]
                rule = f"{SPREAD_FACTOR:g} x seed_sd"
            elif (
                (c in ("low", "high") or c in INTERVAL_ESTIMATES)
                and {"low", "high"} <= set(a.columns)
                and any(e in a.columns for e in INTERVAL_ESTIMATES)
            ):
                s_old = (ra["high"] - ra["low"]) / 2 / SPREAD_FACTOR
                s_new = (rb["high"] - rb["low"]) / 2 / SPREAD_FACTOR
                rule = "interval half-width"
            else:
                s_old = s_new = np.nan
                rule = ""
            _judge(rep, f"{k} {c}", x, y, SPREAD_FACTOR * s_old, SPREAD_FACTOR * s_new, rule)
        for c in verdicts:
            rep.n_verdicts += 1
            x, y = ra[c], rb[c]
            if not (pd.isna(x) and pd.isna(y)) and str(x) != str(y):
                rep.flipped.append(f"{k} {c}: {_fmt(x)} -> {_fmt(y)}")
        rep.text_changed += sum(str(ra[c]) != str(rb[c]) for c in text)
    return rep


def _dataset_tables(root: Path) -> list[str]:
    """Relative paths of the tables compared: per dataset folder headline.csv and tables/*.csv."""
    found = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        candidates = [folder / "headline.csv", *sorted((folder / "tables").glob("*.csv"))]
        found += [str(p.relative_to(root)) for p in candidates if p.is_file()]
    return found


def compare_tables(before: Path, after: Path) -> tuple[list[TableReport], list[str], list[str]]:
    """Reports for tables in both runs, and the tables only in ``before`` / only in ``after``."""
    old, new = _dataset_tables(before), _dataset_tables(after)
    reports = []
    for rel in old:
        if rel in new:
            a, b = pd.read_csv(before / rel), pd.read_csv(after / rel)
            reports.append(compare_table(a, b, rel))
    return reports, [t for t in old if t not in new], [t for t in new if t not in old]


def _summary(rep: TableReport) -> str:
    c = rep.counts
    n = sum(c.values())
    parts = [
        f"rows {rep.rows_old} -> {rep.rows_new}" + (" (seeded)" if rep.seeded else ""),
        f"numbers {n}: {c['identical']} identical, {c['within_spread']} within spread, "
        f"{c['beyond_spread']} BEYOND spread, {c['changed_no_spread']} changed (no spread)",
    ]
    if rep.n_verdicts:
        parts.append(f"verdicts {rep.n_verdicts}: {len(rep.flipped)} FLIPPED")
    if rep.text_changed:
        parts.append(f"text changed {rep.text_changed}")
    if rep.only_old or rep.only_new:
        parts.append(f"rows only in OLD {len(rep.only_old)}, only in NEW {len(rep.only_new)}")
    if rep.note:
        parts.append(rep.note)
    return "; ".join(parts)


def _details(rep: TableReport, limit: int) -> list[tuple[str, list[str]]]:
    beyond = [m for m in rep.moved if "(BEYOND" in m]
    no_spread = [m for m in rep.moved if "(BEYOND" not in m]
    out = []
    for title, items in (
        ("flipped", rep.flipped),
        ("beyond spread", beyond),
        ("changed, no spread", no_spread),
        ("rows only in OLD", rep.only_old),
        ("rows only in NEW", rep.only_new),
    ):
        if items:
            shown = items[:limit]
            if len(items) > limit:
                shown.append(f"... and {len(items) - limit} more")
            out.append((title, shown))
    return out


def report_text(reports, only_old, only_new, limit: int) -> str:
    lines = []
    for rep in reports:
        lines.append(f"{rep.table}: {_summary(rep)}")
        for title, items in _details(rep, limit):
            lines += [f"  {title.upper()} {item}" for item in items]
    lines += [f"TABLE ONLY IN OLD {t}" for t in only_old]
    lines += [f"TABLE ONLY IN NEW {t}" for t in only_new]
    lines.append(_totals(reports, only_old))
    return "\n".join(lines)


def _totals(reports, only_old) -> str:
    return (
        f"tables {len(reports)}: {sum(bool(r.flipped) for r in reports)} with flipped verdicts "
        f"({sum(len(r.flipped) for r in reports)} flips), "
        f"{sum(bool(r.counts['beyond_spread']) for r in reports)} with numbers beyond spread "
        f"({sum(r.counts['beyond_spread'] for r in reports)} numbers), "
        f"{len(only_old)} missing from NEW"
    )


def report_markdown(reports, only_old, only_new, before, after, limit: int) -> str:
    lines = [
        "# Results compared",
        "",
        f"OLD `{before}`, NEW `{after}`. Rule: a seed mean moved beyond the spread when "
        f"|mean_new - mean_old| > {SPREAD_FACTOR:g} x max(sd_old, sd_new) (sample sd over "
        "seeds, or the table's own `*_sd` / `seed_sd`; for `difference` / `mean_difference` "
        f"the larger interval half-width); numbers without a spread changed when "
        f"|new - old| > {ATOL:g} + {RTOL:g} x |old|. Verdicts: `verdict`, boolean, `top_*` "
        "and `stars` columns of tables without seeds.",
        "",
        _totals(reports, only_old),
        "",
    ]
    for t in only_old:
        lines.append(f"- table only in OLD: `{t}`")
    for t in only_new:
        lines.append(f"- table only in NEW: `{t}`")
    for rep in reports:
        lines += ["", f"## {rep.table}", "", f"Key: {'/'.join(rep.key) or '(row order)'}.", ""]
        lines.append(_summary(rep))
        for title, items in _details(rep, limit):
            lines += ["", f"{title.capitalize()}:", ""]
            lines += [f"- `{item}`" for item in items]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore-missing", action="append", default=[], metavar="GLOB")
    parser.add_argument(
        "--tables",
        action="store_true",
        help="per table: numbers moved beyond the seeds' spread, verdicts flipped",
    )
    parser.add_argument("--out", type=Path, help="write the tables report as Markdown")
    parser.add_argument("--limit", type=int, default=10, help="items listed per kind per table")
    args = parser.parse_args()
    if args.tables or args.out:
        reports, only_old, only_new = compare_tables(args.before, args.after)
        only_old = [t for t in only_old if not any(Path(t).match(g) for g in args.ignore_missing)]
        print(report_text(reports, only_old, only_new, args.limit))
        if args.out:
            args.out.write_text(
                report_markdown(reports, only_old, only_new, args.before, args.after, args.limit)
            )
        return 1 if only_old or any(r.failed for r in reports) else 0
    outcome = compare(args.before, args.after)
    outcome["missing"] = [
        rel
        for rel in outcome["missing"]
        if not any(Path(rel).match(pattern) for pattern in args.ignore_missing)
    ]
    for kind in ("differ", "missing"):
        for rel in outcome[kind]:
            print(f"{kind.upper()} {rel}")
    print(", ".join(f"{kind} {len(files)}" for kind, files in outcome.items()))
    return 1 if outcome["differ"] or outcome["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
