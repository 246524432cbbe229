"""A static feature browser: an index of every feature of every model (sortable, no server, no
network) and one page per feature with its examples, its selectivity per label, its genes and
GO terms, and its nearest features by decoder cosine. Pages are written in one pass; example
images are small PNG files shared between the pages that show them.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from cellconcepts.evaluate.selectivity import Selectivity

log = logging.getLogger(__name__)

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}tr.dead td{color:#999}
.bar{background:#4a7ebb;height:10px;display:inline-block}.neg{background:#c66}
.examples img{width:128px;height:128px;image-rendering:pixelated;margin:2px;border:1px solid #ccc}
.examples figure{display:inline-block;margin:4px;text-align:center;font-size:11px}
section{margin:1.2em 0}h2{font-size:16px;margin-bottom:.3em}.muted{color:#777}
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
    _frequency: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.codes = sp.csr_matrix(self.codes)
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
            table["best_term"] = annotation["best_term"].reindex(table.feature).fillna("").values
            table["best_fdr"] = annotation["best_fdr"].reindex(table.feature).values
        return table


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


def _frame(table: pd.DataFrame | None, feature: int, columns: Sequence[str], n: int) -> str:
    if table is None:
        return '<p class="muted">no enrichment for this dataset</p>'
    rows = table[table["feature"] == feature]
    if rows.empty:
        return '<p class="muted">none</p>'
    shown = [c for c in columns if c in rows.columns]
    return rows[shown].head(n).to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0)


def _page(
    dataset: str,
    model: ModelView,
    feature: int,
    row: pd.Series,
    nearest: np.ndarray,
    examples: str,
) -> str:
    links = " ".join(f'<a href="feature_{j}.html">{j}</a>' for j in nearest)
    fdr = row.get("best_fdr")
    term = (
        f"{html.escape(str(row['best_term']))} (FDR {fdr:.3g})"
        if isinstance(row.get("best_term"), str) and row.get("best_term")
        else "none"
    )
    selectivity = "".join(
        f"<h3>{html.escape(task)}</h3>{_bars(sel, feature)}"
        for task, sel in model.selectivity.items()
    )
    genes = _frame(
        model.genes,
        feature,
        ["direction", "gene", "avg_selectivity", "log2_fold_change", "fdr"],
        12,
    )
    terms = _frame(model.terms, feature, ["direction", "term", "overlap", "fdr", "genes"], 6)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(dataset)} {html.escape(model.name)} feature {feature}</title>
<link rel="stylesheet" href="../browser.css"></head><body>
<p><a href="../index.html">all features</a> / {html.escape(dataset)} / {html.escape(model.name)}</p>
<h1>Feature {feature} of {html.escape(model.name)}</h1>
<p id="facts">{"<b>dead</b> · " if row["dead"] else ""}active on {row["frequency"]:.2%} of tokens ·
best label {html.escape(str(row["best_label"]))} ({row["best_selectivity"]:.3f}) ·
best GO term {term}</p>
<section class="examples"><h2>Examples</h2>{examples}</section>
<section><h2>Selectivity per label</h2>{selectivity}</section>
<section><h2>Genes</h2>{genes}</section>
<section><h2>GO terms</h2>{terms}</section>
<section><h2>Nearest features (decoder |cosine|)</h2><p>{links}</p></section>
</body></html>"""


INDEX_COLUMNS = (
    "model",
    "feature",
    "dead",
    "frequency",
    "best_label",
    "best_selectivity",
    "best_term",
    "best_fdr",
)


def _index(dataset: str, table: pd.DataFrame) -> str:
    columns = [c for c in INDEX_COLUMNS if c in table.columns]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
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
    (folder / "index.html").write_text(_index(dataset, index))
    (folder / "features.json").write_text(
        json.dumps({"dataset": dataset, "features": len(index)}, indent=1)
    )
    return index


def composite(image: np.ndarray, rgb: Sequence[int], mask: np.ndarray | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 picture of three channels of a (C, H, W) crop, each stretched between
    its 1st and 99.5th percentile; the outlines of the cells in ``mask`` (labels, 0 =
    background) drawn in white."""
    planes = []
    for channel in rgb:
        plane = np.asarray(image[channel], dtype=np.float64)
        low, high = np.percentile(plane, [1, 99.5])
        planes.append(np.clip((plane - low) / max(high - low, 1e-12), 0, 1))
    picture = (np.stack(planes, axis=-1) * 255).astype(np.uint8)
    if mask is not None:
        edge = np.zeros(mask.shape, dtype=bool)
        vertical, horizontal = mask[:-1] != mask[1:], mask[:, :-1] != mask[:, 1:]
        edge[:-1] |= vertical
        edge[1:] |= vertical
        edge[:, :-1] |= horizontal
        edge[:, 1:] |= horizontal
        picture[edge & (mask > 0)] = 255
    return picture


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


def crop_gallery(
    folder: Path,
    images: np.ndarray,
    obs: pd.DataFrame,
    rgb: Sequence[int],
    masks: np.ndarray | None = None,
    label_columns: Sequence[str] = (),
) -> ExampleRenderer:
    """Examples as crops (channel composites, cell outlines where masks are known), each
    written once to ``folder/crops/`` as a small PNG and shared by every page that shows it."""
    import imageio.v3 as iio

    crops = folder / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    written: set[int] = set()
    shown = [c for c in label_columns if c in obs.columns]

    def render(
        model: ModelView, feature: int, rows: np.ndarray, activations: np.ndarray, title: str
    ) -> str:
        figures = []
        for row, activation in zip(rows, activations, strict=True):
            row = int(row)
            if row not in written:
                mask = None if masks is None else np.asarray(masks[row])
                picture = composite(np.asarray(images[row]), rgb, mask)
                iio.imwrite(crops / f"{row}.png", shrunk(picture, CROP_PIXELS))
                written.add(row)
            caption = " · ".join(html.escape(str(obs.iloc[row][c])) for c in shown)
            figures.append(
                f'<figure><img src="../crops/{row}.png" alt="crop {row}">'
                f"<figcaption>{activation:.3g}<br>{caption}</figcaption></figure>"
            )
        return f"<h3>{title}</h3>{''.join(figures)}"

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
) -> ExampleRenderer:
    """Examples as cells: a table of the cells (labels, and the log1p expression of the
    feature's top genes when ``expression`` is given) and the UMAP with the shown cells marked
    over one shared grey background image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = umap.set_index("token_id").reindex(obs["token_id"].astype(str))[["umap1", "umap2"]]
    xy = xy.to_numpy()
    low, high = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    pad = 0.03 * (high - low)
    low, high = low - pad, high + pad
    size = 300
    figure = plt.figure(figsize=(3, 3), dpi=100)
    axes = figure.add_axes([0, 0, 1, 1])
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
        shown = f"<h3>{title}</h3>{picture}" + table(model, feature, rows, activations, "")
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
