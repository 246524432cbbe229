"""A static feature browser: an index of every feature of every model (sortable, no server, no
network) and one page per feature with its examples, its selectivity per label, its genes and
GO terms, and its nearest features by decoder cosine. Pages are written in one pass; example
images are small PNG files shared between the pages that show them.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from cellconcepts.defaults import schema_default
from cellconcepts.evaluate.selectivity import Selectivity, selectivity

log = logging.getLogger(__name__)

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}tr.dead td{color:#999}
.bar{background:#4a7ebb;height:10px;display:inline-block}.neg{background:#c66}
.examples img{width:128px;height:128px;image-rendering:pixelated;margin:2px;border:1px solid #ccc}
.examples figure{display:inline-block;margin:4px;text-align:center;font-size:11px;
max-width:150px;vertical-align:top}
section{margin:1.2em 0}h2{font-size:16px;margin-bottom:.3em}.muted{color:#777}
tr.ns td{color:#999}tr.headline td{font-weight:bold}.direction-up{color:#b2182b}
.direction-down{color:#2166ac}td.direction{font-weight:600}td.fdr{white-space:nowrap}
dl{display:grid;grid-template-columns:max-content auto;gap:0 1em;font-size:12px}dd{margin:0}
.legend span{display:inline-block;margin-right:1em}.swatch{display:inline-block;width:12px;
height:12px;vertical-align:middle;margin-right:3px;border:1px solid #555}
"""

# Click a header to sort by it (numbers numerically); type in the box to filter rows.
SORT_SCRIPT = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const up = th.dataset.up !== '1'; th.dataset.up = up ? '1' : '0';
  const key = r => { const t = r.cells[i].dataset.v ?? r.cells[i].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
const box = document.getElementById('filter');
if (box) box.addEventListener('input', () => { const q = box.value.toLowerCase();
  [...document.querySelectorAll('tbody tr')].forEach(r =>
    r.style.display = r.textContent.toLowerCase().includes(q) ? '' : 'none'); });
"""


@dataclass
class ModelView:
    """What the browser shows of one model: its codes over the token store, per-task
    selectivity, dead flags, decoder directions and (optionally) its enrichment tables."""

    name: str
    codes: sp.csr_matrix  # (n_tokens, M)
    selectivity: Mapping[str, Selectivity]
    dead: np.ndarray  # (M,) bool
    directions: np.ndarray  # (d, M) unit columns
    annotation: pd.DataFrame | None = None  # feature_annotation: best_term, best_fdr
    genes: pd.DataFrame | None = None  # feature_genes: feature, gene, ...
    terms: pd.DataFrame | None = None  # enrichment: feature, term, fdr, overlap
    fdr: float = schema_default("enrich.fdr")  # a GO term is significant below this FDR
    _frequency: np.ndarray = field(init=False, repr=False)
    _genes: dict = field(init=False, repr=False)
    _terms: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.codes = sp.csr_matrix(self.codes)
        # per-feature slices, so that a page does not filter the whole table
        self._genes = _by_feature(self.genes)
        self._terms = _by_feature(self.terms)
        self._frequency = np.asarray((self.codes != 0).sum(axis=0)).ravel() / self.codes.shape[0]

    @property
    def n_features(self) -> int:
        return int(self.codes.shape[1])

    def summary(self) -> pd.DataFrame:
        """One index row per feature: dead, activation frequency, best label, GO term."""
        table = pd.DataFrame(
            {
                "model": self.name,
                "feature": np.arange(self.n_features),
                "dead": self.dead.astype(bool),
                "frequency": self._frequency,
            }
        )
        best = np.full(self.n_features, -np.inf)
        label = np.full(self.n_features, "", dtype=object)
        for task, sel in self.selectivity.items():
            top = np.argmax(sel.avg, axis=0)
            value = sel.avg[top, np.arange(self.n_features)]
            better = value > best
            best[better] = value[better]
            label[better] = [f"{task}: {sel.labels[i]}" for i in top[better]]
        table["best_label"] = label
        table["best_selectivity"] = np.where(np.isfinite(best), best, np.nan)
        if self.annotation is not None:
            annotation = self.annotation.set_index("feature")

            def column(name: str, fill: object = np.nan) -> np.ndarray:
                if name not in annotation.columns:
                    return np.full(len(table), fill, dtype=object)
                return annotation[name].reindex(table.feature).to_numpy()

            term = pd.Series(column("best_term", ""), dtype=object).fillna("").to_numpy()
            fdr = pd.to_numeric(pd.Series(column("best_fdr")), errors="coerce").to_numpy()
            direction = pd.Series(column("best_direction", ""), dtype=object).fillna("")
            significant = np.isfinite(fdr) & (fdr < self.fdr) & (term != "")
            # the best term is kept on the page, but the index names it only when significant
            table["nearest_term"] = term
            table["nearest_direction"] = direction.to_numpy()
            table["best_fdr"] = fdr
            table["go_term"] = np.where(significant, term, "")
            table["term_direction"] = np.where(significant, direction.to_numpy(), "")
            table["significant_terms"] = pd.to_numeric(
                pd.Series(column("n_significant_terms", 0)), errors="coerce"
            ).to_numpy()
        return table


def _by_feature(table: pd.DataFrame | None) -> dict[int, pd.DataFrame]:
    if table is None or table.empty:
        return {}
    return {int(f): rows for f, rows in table.groupby("feature", sort=False)}


def nearest_features(directions: np.ndarray, n: int, block: int = 1024) -> np.ndarray:
    """(M, n) indices of each feature's nearest other features by |decoder cosine|, computed in
    blocks of columns so that no (M, M) matrix is held."""
    n_features = directions.shape[1]
    n = min(n, n_features - 1)
    nearest = np.zeros((n_features, max(n, 0)), dtype=np.int64)
    if n <= 0:
        return nearest
    for start in range(0, n_features, block):
        stop = min(start + block, n_features)
        cos = np.abs(directions[:, start:stop].T @ directions)
        cos[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        top = np.argpartition(-cos, n - 1, axis=1)[:, :n]
        order = np.argsort(-np.take_along_axis(cos, top, axis=1), axis=1, kind="stable")
        nearest[start:stop] = np.take_along_axis(top, order, axis=1)
    return nearest


def example_rows(
    column: sp.csc_matrix, n_top: int, n_random: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the most activating tokens (by |activation|) and a few random other active
    ones."""
    rows, values = column.indices, np.abs(column.data)
    order = np.lexsort((rows, -values))
    top = rows[order[:n_top]]
    rest = rows[order[n_top:]]
    random = rng.choice(rest, size=min(n_random, len(rest)), replace=False) if len(rest) else rest
    return top, np.sort(random)


# An example renderer turns a feature's example rows (with their activations, under a title)
# into HTML for its page; it may write files under the browser folder (crops) and link them
# relative to a feature page.
ExampleRenderer = Callable[[ModelView, int, np.ndarray, np.ndarray, str], str]


def token_table(obs: pd.DataFrame, columns: Sequence[str]) -> ExampleRenderer:
    """Examples as a table of the tokens' labels (datasets without images)."""
    shown = [c for c in columns if c in obs.columns]

    def render(
        model: ModelView, feature: int, rows: np.ndarray, activations: np.ndarray, title: str
    ) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["token", "activation", *shown])
        body = "".join(
            "<tr>"
            + f"<td>{html.escape(str(obs.iloc[r]['token_id']))}</td><td>{a:.3g}</td>"
            + "".join(f"<td>{html.escape(str(obs.iloc[r][c]))}</td>" for c in shown)
            + "</tr>"
            for r, a in zip(rows, activations, strict=True)
        )
        heading = f"<h3>{title}</h3>" if title else ""
        return f"{heading}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    return render


def _bars(sel: Selectivity, feature: int, n: int = 8) -> str:
    values = sel.avg[:, feature]
    order = np.argsort(-values, kind="stable")[:n]
    rows = []
    for i in order:
        width = int(round(200 * min(1.0, abs(values[i]))))
        kind = "bar neg" if values[i] < 0 else "bar"
        rows.append(
            f"<tr><td>{html.escape(str(sel.labels[i]))}</td>"
            f'<td><span class="{kind}" style="width:{width}px"></span> {values[i]:.3f}</td>'
            f"<td>{sel.p_active[i, feature]:.3f}</td></tr>"
        )
    return (
        "<table><thead><tr><th>label</th><th>avg selectivity</th><th>P(active | label)</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# Directions in the order a page lists them: genes up in the feature's active cells first.
DIRECTION_ORDER = ("up", "down", "selective")


def _ranked(rows: pd.DataFrame, keys: Sequence[tuple[str, bool]]) -> tuple[np.ndarray, ...]:
    """The order of ``rows`` by direction (up, down, others) then ``keys`` (column, ascending;
    absent columns skipped), and per sorted row its direction's size and its place in it."""
    direction = rows["direction"].to_numpy() if "direction" in rows else np.full(len(rows), "")
    known = {d: i for i, d in enumerate(DIRECTION_ORDER)}
    columns = [np.array([known.get(d, len(known)) for d in direction])]
    for name, ascending in keys:
        if name not in rows:
            continue
        values = rows[name].to_numpy()
        if values.dtype == object:
            values = np.unique(values.astype(str), return_inverse=True)[1]
        values = np.asarray(values, dtype=np.float64)
        columns.append(values if ascending else -values)
    order = np.lexsort(columns[::-1])
    block = columns[0][order]
    starts = np.r_[0, np.flatnonzero(np.diff(block)) + 1]
    sizes = np.diff(np.r_[starts, len(block)])
    place = np.arange(len(block)) - np.repeat(starts, sizes)
    return order, np.repeat(sizes, sizes), place


def gene_rows(genes: pd.DataFrame | None, feature: int, n: int) -> pd.DataFrame:
    """A feature's genes as a page lists them: per direction (up, down, then others), the
    ``n`` most significant (FDR, then |statistic|; screens without a test: the highest
    selectivity), with ``shown`` / ``listed`` per direction in the columns of those names."""
    if genes is None:
        return pd.DataFrame()
    rows = genes[genes["feature"] == feature]
    if rows.empty:
        return rows.copy()
    rows = rows.assign(_strength=rows["statistic"].abs()) if "statistic" in rows else rows
    keys = [("fdr", True), ("_strength", False), ("avg_selectivity", False), ("gene", True)]
    order, listed, place = _ranked(rows, keys)
    keep = place < n
    out = rows.iloc[order[keep]].drop(columns="_strength", errors="ignore")
    out["listed"] = listed[keep]
    out["shown"] = np.minimum(listed[keep], n)
    return out


def term_rows(
    terms: pd.DataFrame | None,
    feature: int,
    n: int,
    headline: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """A feature's GO terms as a page lists them: per direction (up, down, ...), the ``n`` with
    the lowest FDR (then p, smaller terms, name: the order that picks the best term); the
    ``headline`` (direction, term) is always among them (added when outside the ``n``) and
    marked in the column ``headline``."""
    if terms is None:
        return pd.DataFrame()
    rows = terms[terms["feature"] == feature]
    if rows.empty:
        return rows.copy()
    keys = [("fdr", True), ("p_value", True), ("term_size", True), ("term", True)]
    order, _, place = _ranked(rows, keys)
    rows = rows.iloc[order]
    marked = np.zeros(len(rows), dtype=bool)
    if headline is not None:
        direction = rows["direction"].to_numpy() if "direction" in rows else np.full(len(rows), "")
        marked = (direction == headline[0]) & (rows["term"].to_numpy() == headline[1])
    keep = (place < n) | marked
    out = rows[keep].copy()
    out["headline"] = marked[keep]
    return out


def _number(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.3g}"
    return html.escape(str(value))


def _table(rows: pd.DataFrame, columns: Mapping[str, str], marked: pd.Series | None = None) -> str:
    """An HTML table of ``rows`` with ``columns`` (column -> header) in that order; rows where
    ``marked`` is true get class ``headline``, rows with ``significant`` false class ``ns``."""
    shown = [c for c in columns if c in rows.columns]
    head = "".join(f"<th>{html.escape(columns[c])}</th>" for c in shown)
    flags = np.zeros(len(rows), dtype=bool) if marked is None else np.asarray(marked, dtype=bool)
    significant = (
        rows["significant"].to_numpy(bool) if "significant" in rows else np.ones(len(rows), bool)
    )
    body = []
    for i, record in enumerate(rows[shown].itertuples(index=False, name=None)):
        kinds = (["headline"] if flags[i] else []) + ([] if significant[i] else ["ns"])
        kind = f' class="{" ".join(kinds)}"' if kinds else ""
        cells = "".join(
            f'<td class="{c}">{_number(v)}</td>' for c, v in zip(shown, record, strict=True)
        )
        body.append(f"<tr{kind}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# |log2 FC| beyond this comes from scanpy's 1e-9 pseudo-count: the gene is absent in one group.
ABSENT_LOG2_FC = 20.0

DIRECTION_TEXT = {
    "up": "up in the feature's active cells",
    "down": "down in the feature's active cells",
    "selective": "screened genes the feature is selective for",
}


def _genes_section(model: ModelView, feature: int, n: int) -> str:
    if model.genes is None:
        return '<p class="muted">no enrichment for this dataset</p>'
    rows = gene_rows(model._genes.get(feature, model.genes.iloc[:0]), feature, n)
    if rows.empty:
        return '<p class="muted">no gene passed the thresholds</p>'
    columns = {
        "direction": "direction",
        "gene": "gene",
        "fdr": "FDR",
        "statistic": "t",
        "mean_active": "mean log1p, active cells",
        "mean_zero": "mean log1p, zero cells",
        "log2_fc_display": "log2 FC (pseudo-count 1)",
        "log2_fold_change": "log2 FC of the test (pseudo-count 1e-9)",
        "avg_selectivity": "avg selectivity",
    }
    if "log2_fold_change" in rows.columns:  # the test's ratio reads -30 for an absent gene
        rows["log2_fold_change"] = [
            f"{v:.3g}"
            if abs(v) < ABSENT_LOG2_FC
            else "absent in active cells"
            if v < 0
            else "absent in zero cells"
            for v in rows["log2_fold_change"]
        ]
    parts = []
    if "log2_fold_change" in rows.columns or "log2_fc_display" in rows.columns:
        parts.append(
            '<p class="muted">Genes tested in the feature\'s strongly active cells against its '
            "zero cells. log2 FC (pseudo-count 1): log2((expm1(mean log1p active) + 1) / "
            "(expm1(mean log1p zero) + 1)), bounded where a group does not express the gene. "
            "The test's own fold change (scanpy's, pseudo-count 1e-9; genes are listed at "
            "|log2 FC| &ge; the threshold) is about &minus;30 for such a gene, shown as "
            "'absent'.</p>"
        )
    for direction, block in rows.groupby("direction", sort=False):
        shown, listed = int(block["shown"].iloc[0]), int(block["listed"].iloc[0])
        text = DIRECTION_TEXT.get(str(direction), str(direction))
        parts.append(
            f'<h3 class="direction-{html.escape(str(direction))}">{html.escape(str(direction))}: '
            f"{html.escape(text)} ({shown} of {listed}, most significant first)</h3>"
            + _table(block, columns)
        )
    return "".join(parts)


def _terms_section(model: ModelView, feature: int, n: int, headline: tuple[str, str] | None) -> str:
    if model.terms is None:
        return '<p class="muted">no enrichment for this dataset</p>'
    rows = term_rows(model._terms.get(feature, model.terms.iloc[:0]), feature, n, headline)
    if rows.empty:
        return '<p class="muted">none</p>'
    rows["significant"] = rows["fdr"] < model.fdr
    columns = {
        "direction": "genes",
        "term": "term",
        "overlap": "overlap",
        "fdr": "FDR",
        "significant": f"FDR < {model.fdr:g}",
        "genes": "genes in term",
    }
    note = (
        f'<p class="muted">Per direction, the {n} terms of lowest FDR; grey rows are not '
        f"significant (FDR &ge; {model.fdr:g}); the bold row is the page's headline term.</p>"
    )
    return note + _table(rows, columns, rows["headline"])


def fold_changes(
    genes: pd.DataFrame,
    annotation: pd.DataFrame,
    codes: sp.spmatrix,
    expression: np.ndarray | sp.spmatrix,
    symbols: Sequence[str],
    pseudo_count: float = 1.0,
) -> pd.DataFrame:
    """``genes`` with, per listed (feature, gene), the mean log1p expression in the feature's
    strongly active cells (``mean_active``) and in its zero cells (``mean_zero``): the groups
    the enrichment tested (annotation's ``sign`` and ``activation_threshold``); and
    ``log2_fc_display`` = log2((expm1(mean_active) + c) / (expm1(mean_zero) + c)), the DE
    test's fold change (scanpy's, c = 1e-9) with pseudo-count c; for c = 1 that is
    (mean_active - mean_zero) / ln 2. The test's own ``log2_fold_change`` is left as it is (it
    decided which genes are listed, and the enrichment results rest on it); this one is only
    what the browser shows, so that a gene absent from one group reads as a bounded number
    rather than -30."""
    out = genes.copy()
    for name in ("mean_active", "mean_zero", "log2_fc_display"):
        out[name] = np.nan
    needed = {"feature", "sign", "activation_threshold"}
    if out.empty or not needed <= set(annotation.columns):
        return out
    column_of = {g: i for i, g in enumerate(symbols)}
    csc = sp.csc_matrix(codes)
    values_of = sp.csr_matrix(expression) if sp.issparse(expression) else np.asarray(expression)
    settings = annotation.set_index("feature")
    for feature, index in out.groupby("feature").groups.items():
        if feature not in settings.index:
            continue
        sign = float(settings.at[feature, "sign"])
        threshold = abs(float(settings.at[feature, "activation_threshold"]))
        values = csc[:, int(feature)].toarray().ravel() * sign
        strong = (values > 0) & (values >= threshold)
        zero = values == 0
        wanted = [column_of.get(g, -1) for g in out.loc[index, "gene"]]
        present = np.array([c >= 0 for c in wanted])
        if not strong.any() or not zero.any() or not present.any():
            continue
        cols = np.array([c for c in wanted if c >= 0])
        means = []
        for group in (strong, zero):
            block = values_of[group][:, cols]
            means.append(np.asarray(block.mean(axis=0)).ravel())
        rows = np.asarray(index)[present]
        out.loc[rows, "mean_active"] = means[0]
        out.loc[rows, "mean_zero"] = means[1]
        out.loc[rows, "log2_fc_display"] = np.log2(np.expm1(means[0]) + pseudo_count) - np.log2(
            np.expm1(means[1]) + pseudo_count
        )
    return out


def model_view(
    name: str,
    codes: sp.csr_matrix,
    directions: np.ndarray,
    dead: np.ndarray,
    labels: Mapping[str, pd.Series],
    *,
    annotation: pd.DataFrame | None = None,
    genes: pd.DataFrame | None = None,
    terms: pd.DataFrame | None = None,
    expression: tuple[np.ndarray | sp.spmatrix, Sequence[str]] | None = None,
    fdr: float = schema_default("enrich.fdr"),
) -> ModelView:
    """One model's `ModelView`: its selectivity per task (``labels``: per task, a label per
    token) and, where its ``genes`` and the cells' ``expression`` (matrix, gene symbols) are
    both given, the genes' displayed fold changes (`fold_changes`)."""
    if genes is not None and expression is not None:
        genes = fold_changes(genes, annotation, codes, *expression)
    return ModelView(
        name=name,
        codes=codes,
        selectivity={task: selectivity(codes, values) for task, values in labels.items()},
        dead=dead,
        directions=directions,
        annotation=annotation,
        genes=genes,
        terms=terms,
        fdr=fdr,
    )


@contextmanager
def replacing_folder(folder: Path) -> Iterator[Path]:
    """A fresh sibling folder (``.<name>.building``) to build into, which replaces ``folder``
    only when the block completes: a failed build leaves the old folder as it was."""
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    yield building
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)


def folder_files(folder: Path) -> tuple[int, int]:
    """How many files ``folder`` holds (at any depth) and their total size in bytes."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def headline_term(row: pd.Series, fdr: float) -> str:
    """The page's headline GO term in words: its direction, its FDR and whether it is
    significant; 'none' without one."""
    term = row.get("nearest_term")
    if not isinstance(term, str) or not term:
        return "no GO term"
    direction = str(row.get("nearest_direction") or "")
    which = {"up": "genes up in active cells", "down": "genes down in active cells"}.get(
        direction, f"{direction} genes" if direction else "genes"
    )
    value = row.get("best_fdr")
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and value < fdr:
        return (
            f'GO term of its {html.escape(which)}: <b class="direction-{html.escape(direction)}">'
            f"{html.escape(term)}</b> ({html.escape(direction)}, FDR {value:.3g})"
        )
    shown = f"{value:.3g}" if isinstance(value, (float, np.floating)) else "n/a"
    return (
        f"no significant GO term (FDR &lt; {fdr:g}); lowest FDR: {html.escape(term)} "
        f"({html.escape(direction)}, {html.escape(which)}, FDR {shown})"
    )


def _page(
    dataset: str,
    model: ModelView,
    feature: int,
    row: pd.Series,
    nearest: np.ndarray,
    examples: str,
) -> str:
    links = " ".join(f'<a href="feature_{j}.html">{j}</a>' for j in nearest)
    term = headline_term(row, model.fdr)
    selectivity = "".join(
        f"<h3>{html.escape(task)}</h3>{_bars(sel, feature)}"
        for task, sel in model.selectivity.items()
    )
    genes = _genes_section(model, feature, GENES_PER_DIRECTION)
    best = row.get("nearest_term")
    headline = (
        (str(row.get("nearest_direction") or ""), best) if isinstance(best, str) and best else None
    )
    terms = _terms_section(model, feature, TERMS_PER_DIRECTION, headline)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(dataset)} {html.escape(model.name)} feature {feature}</title>
<link rel="stylesheet" href="../browser.css"></head><body>
<p><a href="../index.html">all features</a> / {html.escape(dataset)} / {html.escape(model.name)}</p>
<h1>Feature {feature} of {html.escape(model.name)}</h1>
<p id="facts">{"<b>dead</b> · " if row["dead"] else ""}active on {row["frequency"]:.2%} of tokens ·
best label {html.escape(str(row["best_label"]))} ({row["best_selectivity"]:.3f}) ·
{term}</p>
<section class="examples"><h2>Examples</h2>{examples}</section>
<section><h2>Selectivity per label</h2>{selectivity}</section>
<section><h2>Genes</h2>{genes}</section>
<section><h2>GO terms</h2>{terms}</section>
<section><h2>Nearest features (decoder |cosine|)</h2><p>{links}</p></section>
</body></html>"""


GENES_PER_DIRECTION = 10
TERMS_PER_DIRECTION = 5

# Index columns: header and what it means (shown under the table's title and as tooltips).
INDEX_COLUMNS = {
    "model": ("model", "the dictionary (method, whitening, k active features, seed)"),
    "feature": ("feature", "the feature's number; links to its page"),
    "dead": ("dead", "flagged dead in training: active on too few tokens (dead_features.csv)"),
    "frequency": ("frequency", "fraction of all tokens on which the feature is non-zero"),
    "best_label": (
        "best label",
        "the task: label with the highest average selectivity (one-vs-rest, per task)",
    ),
    "best_selectivity": ("selectivity", "that label's average selectivity (-1 to 1)"),
    "go_term": (
        "GO term (significant)",
        "the enrichment's lowest-FDR GO BP term, shown only when its FDR is below the threshold",
    ),
    "term_direction": (
        "term genes",
        "which gene list the term comes from: up or down in the feature's active cells, "
        "or the screened genes it is selective for",
    ),
    "best_fdr": ("lowest FDR", "the lowest FDR of any of the feature's GO terms"),
    "significant_terms": ("significant terms", "number of GO terms below the FDR threshold"),
}


def _index(dataset: str, table: pd.DataFrame, fdr: float = schema_default("enrich.fdr")) -> str:
    columns = [c for c in INDEX_COLUMNS if c in table.columns]
    head = "".join(
        f'<th title="{html.escape(INDEX_COLUMNS[c][1])}">{html.escape(INDEX_COLUMNS[c][0])}</th>'
        for c in columns
    )
    legend = "".join(
        f"<dt>{html.escape(INDEX_COLUMNS[c][0])}</dt><dd>{html.escape(INDEX_COLUMNS[c][1])}"
        + (f" (FDR &lt; {fdr:g})" if c in ("go_term", "significant_terms") else "")
        + "</dd>"
        for c in columns
    )
    rows = []
    for record in table[columns].to_dict("records"):
        cells = []
        for c in columns:
            value = record[c]
            if c == "feature":
                link = f"{record['model']}/feature_{value}.html"
                cells.append(f'<td data-v="{value}"><a href="{link}">{value}</a></td>')
            elif isinstance(value, float):
                text = "" if np.isnan(value) else f"{value:.3g}"
                cells.append(f'<td data-v="{"" if np.isnan(value) else value}">{text}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        kind = ' class="dead"' if record["dead"] else ""
        rows.append(f"<tr{kind}>{''.join(cells)}</tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(dataset)}: feature browser</title>
<link rel="stylesheet" href="browser.css"></head><body>
<h1>{html.escape(dataset)}: {len(table)} features of {table["model"].nunique()} models</h1>
<p>Click a column to sort; filter: <input id="filter" placeholder="label, term, model"></p>
<details id="columns" open><summary>What the columns mean</summary><dl>{legend}</dl></details>
<table id="features"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
<script src="sort.js"></script></body></html>"""


def write_browser(
    folder: Path,
    dataset: str,
    models: Sequence[ModelView],
    render: ExampleRenderer,
    *,
    examples: int = 6,
    random_examples: int = 3,
    nearest: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Write ``folder/index.html`` and ``folder/<model>/feature_<j>.html`` for every feature;
    returns the index table."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "browser.css").write_text(STYLE)
    (folder / "sort.js").write_text(SORT_SCRIPT)
    rng = np.random.default_rng(seed)
    tables = []
    for model in models:
        table = model.summary()
        tables.append(table)
        near = nearest_features(model.directions, nearest)
        columns = model.codes.tocsc()
        pages = folder / model.name
        pages.mkdir(exist_ok=True)
        for feature in tqdm(range(model.n_features), desc=f"browser {model.name}", leave=False):
            column = columns[:, feature]
            top, random = example_rows(column, examples, random_examples, rng)
            dense = column.toarray().ravel()
            shown = render(model, feature, top, dense[top], "most activating")
            if len(random):
                shown += render(model, feature, random, dense[random], "random active")
            if not len(top):
                shown = '<p class="muted">never active on the token store</p>'
            page = _page(dataset, model, feature, table.iloc[feature], near[feature], shown)
            (pages / f"feature_{feature}.html").write_text(page)
    index = pd.concat(tables, ignore_index=True)
    fdr = models[0].fdr if models else 0.05
    (folder / "index.html").write_text(_index(dataset, index, fdr))
    (folder / "features.json").write_text(
        json.dumps({"dataset": dataset, "features": len(index)}, indent=1)
    )
    return index


def stretched(image: np.ndarray, channels: Sequence[int] | None = None) -> np.ndarray:
    """(len(channels), H, W) uint8: each channel of a (C, H, W) crop stretched between its 1st
    and 99.5th percentile (every channel when ``channels`` is None)."""
    channels = range(np.shape(image)[0]) if channels is None else channels
    planes = []
    for channel in channels:
        plane = np.asarray(image[channel], dtype=np.float64)
        low, high = np.percentile(plane, [1, 99.5])
        planes.append(
            (np.clip((plane - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8)
        )
    return np.stack(planes) if planes else np.zeros((0, *np.shape(image)[1:]), dtype=np.uint8)


def outlines(mask: np.ndarray) -> np.ndarray:
    """Where a cell of ``mask`` (labels, 0 = background) meets another label: (H, W) bool."""
    edge = np.zeros(mask.shape, dtype=bool)
    vertical, horizontal = mask[:-1] != mask[1:], mask[:, :-1] != mask[:, 1:]
    edge[:-1] |= vertical
    edge[1:] |= vertical
    edge[:, :-1] |= horizontal
    edge[:, 1:] |= horizontal
    return edge & (mask > 0)


def _picture(planes: np.ndarray, edge: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) uint8 of up to three stretched planes (missing colours dark), outlines white."""
    rgb = list(planes[:3]) + [np.zeros(planes.shape[1:], dtype=np.uint8)] * (3 - len(planes))
    picture = np.stack(rgb, axis=-1)
    if edge is not None:
        picture[edge] = 255
    return picture


def composite(image: np.ndarray, rgb: Sequence[int], mask: np.ndarray | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 picture of three channels of a (C, H, W) crop, each stretched between
    its 1st and 99.5th percentile; the outlines of the cells in ``mask`` (labels, 0 =
    background) drawn in white."""
    return _picture(stretched(image, rgb), None if mask is None else outlines(mask))


# Crops larger than this are shrunk (block means) for the browser: a 256-px composite PNG is
# ~16x the bytes of a 64-px one, and 128 px is what a page shows.
CROP_PIXELS = 128


def shrunk(picture: np.ndarray, pixels: int) -> np.ndarray:
    """An (H, W, 3) uint8 picture shrunk by the integer factor that brings its longer side to
    at most ``pixels`` (block means; unchanged when already small enough)."""
    factor = -(-max(picture.shape[:2]) // pixels)
    if factor <= 1:
        return picture
    height, width = (picture.shape[0] // factor) * factor, (picture.shape[1] // factor) * factor
    blocks = picture[:height, :width].reshape(height // factor, factor, width // factor, factor, 3)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


RGB_NAMES = ("red", "green", "blue")
# Controls (or, without controls, images) that a feature's crops are compared with, at most.
MAX_REFERENCE_IMAGES = 2000
RGB_COLOURS = ("#ff0000", "#00ff00", "#0000ff")


def channel_names(n_channels: int) -> list[str]:
    """The simulated Cell Painting channels' names when there are six, else channel_<i>."""
    from cellconcepts.sources.cellpainting import CHANNELS

    if n_channels == len(CHANNELS):
        return list(CHANNELS)
    return [f"channel_{i}" for i in range(n_channels)]


def channel_statistics(images: np.ndarray, block: int = 256) -> np.ndarray:
    """(N, C, 2) per image and channel: mean intensity and its spatial standard deviation."""
    out = np.zeros((len(images), np.shape(images)[1], 2))
    for start in range(0, len(images), block):
        chunk = np.asarray(images[start : start + block], dtype=np.float64)
        out[start : start + len(chunk), :, 0] = chunk.mean(axis=(2, 3))
        out[start : start + len(chunk), :, 1] = chunk.std(axis=(2, 3))
    return out


def channel_contrast(statistics: np.ndarray, rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(C,) how far ``rows``' images are from the ``reference`` images (controls) per channel:
    the larger of |mean z| of intensity mean and of intensity spread, z in reference standard
    deviations."""
    if not len(rows):
        return np.zeros(statistics.shape[1])
    centre = statistics[reference].mean(axis=0)
    spread = statistics[reference].std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    z = ((statistics[rows] - centre) / spread).mean(axis=0)  # (C, 2)
    return np.abs(z).max(axis=1)


def feature_channels(contrast: np.ndarray, n: int = 3) -> list[int]:
    """The ``n`` channels with the largest contrast, largest first (ties by channel order)."""
    order = np.argsort(-contrast, kind="stable")
    return [int(c) for c in order[: min(n, len(contrast))]]


def caption(record: Mapping[str, object], columns: Sequence[str]) -> str:
    """'column: value' for each column with a value (None, NaN and empty left out)."""
    parts = []
    for column in columns:
        value = record.get(column)
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        parts.append(f"{html.escape(str(column))}: {html.escape(str(value))}")
    return " · ".join(parts)


def control_images(obs: pd.DataFrame) -> np.ndarray | None:
    """The images' ``is_control`` flags as booleans, None where the table has none (every
    image is then a reference for `crop_gallery`'s channel choice)."""
    return obs["is_control"].to_numpy(bool) if "is_control" in obs else None


def crop_gallery(
    folder: Path,
    images: np.ndarray,
    obs: pd.DataFrame,
    rgb: Sequence[int] | None = None,
    masks: np.ndarray | None = None,
    label_columns: Sequence[str] = (),
    names: Sequence[str] | None = None,
    controls: np.ndarray | None = None,
) -> ExampleRenderer:
    """Examples as crops (cell outlines where masks are known), each written once per channel
    choice to ``folder/crops/`` as a small PNG and shared by every page that shows it.

    Each feature's crops show, as red, green and blue, the three channels in which its most
    activating images differ most from the ``controls`` (a boolean mask over the images; every
    image when None): `channel_contrast`. ``rgb`` fixes the channels instead. Every page says
    which channel is which colour and lists every channel's contrast."""
    import imageio.v3 as iio

    crops = folder / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    written: set[tuple[int, tuple[int, ...]]] = set()
    shown = [c for c in label_columns if c in obs.columns]
    n_channels = int(np.shape(images)[1])
    names = list(names) if names is not None else channel_names(n_channels)
    reference = (
        np.flatnonzero(np.asarray(controls, dtype=bool))
        if controls is not None and np.asarray(controls, dtype=bool).any()
        else np.arange(len(obs))
    )
    if len(reference) > MAX_REFERENCE_IMAGES:  # a sample of the controls is enough
        rng = np.random.default_rng(0)
        reference = np.sort(rng.choice(reference, MAX_REFERENCE_IMAGES, replace=False))
    # per image statistics, read only for the images a page shows and the reference ones
    statistics = np.full((len(obs), n_channels, 2), np.nan) if rgb is None else None

    def statistics_of(rows: np.ndarray) -> np.ndarray:
        missing = rows[np.isnan(statistics[rows, 0, 0])]
        if len(missing):
            statistics[missing] = channel_statistics(np.asarray(images[np.sort(missing)]))[
                np.argsort(np.argsort(missing))
            ]
        return statistics

    if statistics is not None:
        statistics_of(reference)
    chosen: dict[tuple[str, int], tuple[list[int], np.ndarray | None]] = {}
    planes_of: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def channels_of(model: ModelView, feature: int, rows: np.ndarray):
        key = (model.name, feature)
        if key not in chosen:  # the first call of a feature shows its most activating rows
            if statistics is None:
                chosen[key] = (list(rgb), None)
            else:
                rows = np.unique(np.asarray(rows, dtype=int))
                contrast = channel_contrast(statistics_of(rows), rows, reference)
                chosen[key] = (feature_channels(contrast), contrast)
        return chosen[key]

    def legend(channels: list[int], contrast: np.ndarray | None) -> str:
        swatches = "".join(
            f'<span><i class="swatch" style="background:{colour}"></i>{colour_name} = '
            f"<b>{html.escape(names[c])}</b></span>"
            for c, colour, colour_name in zip(channels, RGB_COLOURS, RGB_NAMES, strict=False)
        )
        if contrast is None:
            why = "channels fixed by microscopy.browser_rgb"
        else:
            ranked = ", ".join(
                f"{html.escape(names[c])} {contrast[c]:.2f}"
                for c in np.argsort(-contrast, kind="stable")
            )
            why = (
                "the three channels in which the most activating images differ most from the "
                "controls (|z| of intensity mean or spread, in control SDs): " + ranked
            )
        return f'<p class="legend">{swatches}<br><span class="muted">{why}</span></p>'

    def render(
        model: ModelView, feature: int, rows: np.ndarray, activations: np.ndarray, title: str
    ) -> str:
        first = (model.name, feature) not in chosen
        channels, contrast = channels_of(model, feature, rows)
        figures = []
        for row, activation in zip(rows, activations, strict=True):
            row = int(row)
            key = (row, tuple(channels))
            name = f"{row}_{'-'.join(map(str, channels))}.png"
            if key not in written:
                if row not in planes_of:  # each image stretched once, whatever its channels
                    mask = None if masks is None else outlines(np.asarray(masks[row]))
                    planes_of[row] = (stretched(np.asarray(images[row])), mask)
                planes, edge = planes_of[row]
                picture = _picture(planes[channels], edge)
                iio.imwrite(crops / name, shrunk(picture, CROP_PIXELS))
                written.add(key)
            text = caption(obs.iloc[row].to_dict(), shown)
            figures.append(
                f'<figure><img src="../crops/{name}" alt="crop {row}">'
                f"<figcaption>activation {activation:.3g}<br>{text}</figcaption></figure>"
            )
        head = legend(channels, contrast) if first else ""
        return f"{head}<h3>{title}</h3>{''.join(figures)}"

    return render


def up_genes(model: ModelView, feature: int) -> list[str]:
    """The genes up in a feature's active cells, most significant first (scRNA enrichment)."""
    if model.genes is None or "fdr" not in model.genes.columns:
        return []
    rows = model.genes[(model.genes["feature"] == feature) & (model.genes["direction"] == "up")]
    return rows.sort_values("fdr")["gene"].tolist()


def umap_gallery(
    folder: Path,
    umap: pd.DataFrame,
    obs: pd.DataFrame,
    label_columns: Sequence[str] = (),
    expression: tuple[np.ndarray | sp.spmatrix, np.ndarray] | None = None,
    colour_by: str | None = None,
) -> ExampleRenderer:
    """Examples as cells: a table of the cells (labels, and the log1p expression of the
    feature's top genes when ``expression`` is given) and the UMAP with the shown cells marked
    over one shared background image: grey, or coloured by the ``colour_by`` column with each
    label written at its cells' median position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = umap.set_index("token_id").reindex(obs["token_id"].astype(str))[["umap1", "umap2"]]
    xy = xy.to_numpy()
    low, high = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    pad = 0.03 * (high - low)
    low, high = low - pad, high + pad
    size = 400
    figure = plt.figure(figsize=(4, 4), dpi=100)
    axes = figure.add_axes([0, 0, 1, 1])
    if colour_by is not None and colour_by in obs.columns:
        labels = obs[colour_by].astype(str).to_numpy()
        palette = plt.get_cmap("tab20").colors
        for i, label in enumerate(sorted(set(labels))):
            here = (labels == label) & np.isfinite(xy).all(axis=1)
            colour = palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            axes.scatter(xy[here, 0], xy[here, 1], s=4, color=colour, alpha=0.7, linewidths=0)
            if here.any():
                centre = np.median(xy[here], axis=0)
                axes.text(
                    *centre,
                    label,
                    fontsize=6.5,
                    ha="center",
                    va="center",
                    color="black",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colour, "alpha": 0.8},
                )
    else:
        axes.scatter(xy[:, 0], xy[:, 1], s=2, c="#bbbbbb", linewidths=0)
    axes.set_xlim(low[0], high[0])
    axes.set_ylim(low[1], high[1])
    axes.axis("off")
    figure.savefig(folder / "umap.png", dpi=100)
    plt.close(figure)
    position = (xy - low) / (high - low) * size
    table = token_table(obs, label_columns)
    values, symbols = expression if expression is not None else (None, None)
    column_of = {g: i for i, g in enumerate(symbols)} if symbols is not None else {}

    def render(
        model: ModelView, feature: int, rows: np.ndarray, activations: np.ndarray, title: str
    ) -> str:
        dots = "".join(
            f'<circle cx="{position[r, 0]:.1f}" cy="{size - position[r, 1]:.1f}" r="4" '
            'fill="#d62728" stroke="black" stroke-width="0.5"/>'
            for r in rows
            if np.isfinite(position[r]).all()
        )
        picture = (
            f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}">'
            f'<image href="../umap.png" width="{size}" height="{size}"/>{dots}</svg>'
        )
        note = (
            f'<p class="muted">UMAP of every cell, coloured by {html.escape(colour_by)}; '
            "black-ringed red dots: these cells</p>"
            if colour_by is not None and colour_by in obs.columns
            else ""
        )
        shown = f"<h3>{title}</h3>{picture}{note}" + table(model, feature, rows, activations, "")
        listed = [g for g in up_genes(model, feature) if g in column_of][:5]
        if values is not None and listed:
            cols = [column_of[g] for g in listed]
            block = values[rows][:, cols]
            block = block.toarray() if sp.issparse(block) else np.asarray(block)
            head = "".join(f"<th>{html.escape(g)}</th>" for g in listed)
            body = "".join(
                "<tr>" + "".join(f"<td>{v:.2f}</td>" for v in line) + "</tr>" for line in block
            )
            shown += (
                "<p>log1p expression of the feature's top genes in these cells:</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            )
        return shown

    return render
