"""The static feature browser (cellconcepts.report.browser): its parts against brute force, and
the pages it writes, read back as HTML and, where Chromium is installed, in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from browser_pages import CHROMIUM, assert_every_page_is_there, dump_dom, needs_chromium, screenshot

from cellconcepts.evaluate.selectivity import selectivity
from cellconcepts.report.browser import (
    ModelView,
    caption,
    channel_contrast,
    channel_statistics,
    composite,
    crop_gallery,
    example_rows,
    feature_channels,
    fold_changes,
    gene_rows,
    headline_term,
    nearest_features,
    shrunk,
    term_rows,
    token_table,
    umap_gallery,
    write_browser,
)


def test_nearest_features_are_the_brute_force_ones() -> None:
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((8, 50))
    directions /= np.linalg.norm(directions, axis=0)
    got = nearest_features(directions, 4, block=7)
    cos = np.abs(directions.T @ directions)
    np.fill_diagonal(cos, -1)
    expected = np.argsort(-cos, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(got, expected)


def test_examples_are_the_strongest_then_random_others() -> None:
    column = sp.csc_matrix(np.array([[0.0], [-0.9], [0.2], [0.5], [0.5], [0.1], [0.0]]))
    top, random = example_rows(column, 3, 2, np.random.default_rng(0))
    assert top.tolist() == [1, 3, 4]  # |activation|, ties by row
    assert set(random) <= {2, 5} and len(random) == 2
    top, random = example_rows(sp.csc_matrix((7, 1)), 3, 2, np.random.default_rng(0))
    assert len(top) == 0 and len(random) == 0


def test_composite_stretches_channels_and_outlines_cells() -> None:
    image = np.zeros((3, 6, 6))
    image[0] = np.arange(36).reshape(6, 6)
    image[1, 2:4, 2:4] = 10.0
    mask = np.zeros((6, 6), dtype=np.int32)
    mask[1:5, 1:5] = 1
    picture = composite(image, [1, 2, 0], mask)
    assert picture.shape == (6, 6, 3) and picture.dtype == np.uint8
    low, high = np.percentile(image[0], [1, 99.5])
    expected_blue = (np.clip((image[0] - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    inside = np.zeros((6, 6), dtype=bool)
    inside[2:4, 2:4] = True  # not on an outline
    np.testing.assert_array_equal(picture[inside, 2], expected_blue[inside])
    assert (picture[1, 1] == 255).all()  # the cell's corner is on its outline
    assert (picture[0, 0] != 255).any()  # background off the outline is not


def test_large_crops_are_shrunk_by_block_means() -> None:
    picture = np.arange(300 * 300 * 3).reshape(300, 300, 3) % 256
    small = shrunk(picture.astype(np.uint8), 128)
    assert small.shape == (100, 100, 3)  # factor 3
    expected = picture[:3, :3].astype(np.uint8).mean(axis=(0, 1)).round()
    np.testing.assert_array_equal(small[0, 0], expected)
    same = np.zeros((64, 64, 3), dtype=np.uint8)
    assert shrunk(same, 128) is same


def _model(name: str, seed: int, n: int = 60, m: int = 5) -> tuple[ModelView, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {"token_id": [f"t{i}" for i in range(n)], "group": np.repeat(["a", "b", "c"], n // 3)}
    )
    codes = np.zeros((n, m))
    codes[:20, 0] = rng.uniform(0.5, 1, 20)  # feature 0: group a
    codes[rng.random((n, m)) < 0.2] = 0.3
    codes[:, 4] = 0  # feature 4 never active
    directions = rng.standard_normal((4, m))
    directions /= np.linalg.norm(directions, axis=0)
    view = ModelView(
        name=name,
        codes=sp.csr_matrix(codes),
        selectivity={"group": selectivity(codes, obs["group"])},
        dead=np.arange(m) == 4,
        directions=directions,
        annotation=pd.DataFrame(
            {
                "feature": [0, 1],
                "best_direction": ["up", "down"],
                "best_term": ["Ribosome Biogenesis (GO:0042254)", "Cell Cycle (GO:0007049)"],
                "best_fdr": [1e-4, 1.0],
                "n_significant_terms": [1, 0],
            }
        ),
        # stored as the enrichment writes them: each list in rank order, up first
        terms=pd.DataFrame(
            {
                "feature": [0, 0, 0, 1, 1],
                "direction": ["up", "down", "down", "up", "down"],
                "term": [
                    "Ribosome Biogenesis (GO:0042254)",
                    "Immune Response (GO:0006955)",
                    "Apoptotic Process (GO:0006915)",
                    "Translation (GO:0006412)",
                    "Cell Cycle (GO:0007049)",
                ],
                "overlap": [3, 2, 1, 1, 2],
                "fdr": [1e-4, 0.2, 0.9, 1.0, 1.0],
                "p_value": [1e-6, 0.01, 0.5, 0.4, 0.2],
            }
        ),
        # stored order: down genes first, the strongest up gene last
        genes=pd.DataFrame(
            {
                "feature": [0, 0, 0, 0, 0],
                "direction": ["down", "down", "up", "up", "up"],
                "gene": ["CD3E", "LYZ", "RPL3", "NOP53", "FBL"],
                "log2_fold_change": [-29.9, -1.5, 1.2, 2.0, 3.0],
                "statistic": [-9.0, -3.0, 2.5, 5.0, 8.0],
                "fdr": [1e-10, 1e-3, 1e-2, 1e-5, 1e-9],
            }
        ),
    )
    return view, obs


def test_the_pages_say_what_each_feature_is(tmp_path: Path) -> None:
    first, obs = _model("icfl_pca_k8_seed0", 0)
    second, _ = _model("topk_pca_k8_seed0", 1)
    render = token_table(obs, ["group"])
    index = write_browser(tmp_path, "demo", [first, second], render, examples=4, nearest=2)
    assert len(index) == 10 and list(index.model.unique()) == [first.name, second.name]
    assert index.loc[0, "best_label"] == "group: a"
    assert bool(index.loc[4, "dead"]) and index.loc[4, "frequency"] == 0
    home = (tmp_path / "index.html").read_text()
    assert len(re.findall(r"<tr", home)) == 11  # header + 10 features
    assert 'href="topk_pca_k8_seed0/feature_3.html"' in home
    assert '<tr class="dead">' in home
    page = (tmp_path / first.name / "feature_0.html").read_text()
    assert "best label group: a" in page
    assert "Ribosome Biogenesis (GO:0042254)</b> (up, FDR 0.0001)" in page
    assert "genes up in active cells" in page
    insignificant = (tmp_path / first.name / "feature_1.html").read_text()
    assert "no significant GO term (FDR &lt; 0.05)" in insignificant
    assert "Cell Cycle (GO:0007049) (down, genes down in active cells, FDR 1)" in insignificant
    assert index.loc[0, "go_term"] == "Ribosome Biogenesis (GO:0042254)"
    assert index.loc[1, "go_term"] == "" and index.loc[1, "best_fdr"] == 1.0  # not a best term
    strongest = page.split("most activating")[1].split("random active")[0]
    assert strongest.count("<td>a</td>") == 4  # its four strongest tokens are all in group a
    near = nearest_features(first.directions, 2)[0]
    assert f'<a href="feature_{near[0]}.html">' in page
    assert "never active" in (tmp_path / first.name / "feature_4.html").read_text()
    assert assert_every_page_is_there(tmp_path) == 10
    (tmp_path / second.name / "feature_2.html").unlink()  # a page missing is caught
    with pytest.raises(FileNotFoundError):
        assert_every_page_is_there(tmp_path)


def test_crops_are_written_once_and_shared(tmp_path: Path) -> None:
    view, obs = _model("m", 0)
    images = np.random.default_rng(0).integers(0, 1000, (60, 3, 8, 8)).astype(np.uint16)
    render = crop_gallery(tmp_path, images, obs, [0, 1, 2], None, ["group"])
    write_browser(tmp_path, "demo", [view], render, examples=4, random_examples=2)
    crops = sorted(p.stem for p in (tmp_path / "crops").glob("*.png"))
    pages = "".join(p.read_text() for p in (tmp_path / "m").glob("*.html"))
    shown = sorted(set(re.findall(r'src="\.\./crops/(\d+_[\d-]+)\.png"', pages)))
    assert crops == shown and len(shown) > 4


def _screen_images(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Images of three channels (nucleus, rna, actin); group a (feature 0's) is bright in
    rna; the last 12 images are controls."""
    rng = np.random.default_rng(0)
    images = rng.integers(100, 200, (n, 3, 8, 8)).astype(np.uint16)
    images[:20, 1] += 600  # group a: rna
    controls = np.arange(n) >= n - 12
    return images, controls


@needs_chromium
def test_chromium_opens_the_index_and_a_feature_page(tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CELLCONCEPTS_REQUIRE_CHROMIUM is set but chromium is missing"
    view, obs = _model("m", 0)
    obs["gene"] = np.where(np.arange(60) < 20, "NOP53", "other")
    obs["strong"] = None  # a field without a value is left out of the caption
    images, controls = _screen_images()
    names = ["nucleus", "rna", "actin"]
    render = crop_gallery(
        tmp_path, images, obs, None, None, ["group", "gene", "strong"], names, controls
    )
    write_browser(tmp_path, "demo", [view], render)
    home = dump_dom(tmp_path / "index.html")
    assert len(re.findall(r"<tr", home)) == 6 and 'id="filter"' in home
    assert "What the columns mean" in home and "lowest FDR" in home
    rows = re.findall(r"<tr.*?</tr>", home, flags=re.S)
    assert "Ribosome Biogenesis (GO:0042254)" in rows[1]  # feature 0: FDR 1e-4
    assert "Cell Cycle" not in rows[2]  # feature 1's term at FDR 1 is no best term
    page = dump_dom(tmp_path / "m" / "feature_0.html")
    # the headline says the term's direction
    facts = re.search(r'<p id="facts">(.*?)</p>', page, flags=re.S).group(1)
    assert "genes up in active cells" in facts and "(up, FDR 0.0001)" in facts
    # genes: up first, most significant first; the -30 fold change reads as absent
    genes = page.split("<h2>Genes</h2>")[1].split("<h2>GO terms</h2>")[0]
    listed = re.findall(r'<td class="gene">(\w+)</td>', genes)
    assert listed == ["FBL", "NOP53", "RPL3", "CD3E", "LYZ"]
    assert "absent in active cells" in genes and "-29.9" not in genes
    assert re.search(r"up: up in the feature's active cells \(3 of 3", genes)
    # GO terms: both directions, the headline term marked
    terms = page.split("<h2>GO terms</h2>")[1].split("<h2>Nearest")[0]
    headline = re.findall(r'<tr class="headline">(.*?)</tr>', terms, flags=re.S)
    assert len(headline) == 1 and "Ribosome Biogenesis (GO:0042254)" in headline[0]
    assert '<td class="direction">down</td>' in terms
    assert '<td class="significant">yes</td>' in headline[0]
    assert re.search(r'<tr class="ns">.*?Apoptotic Process', terms, flags=re.S)
    # crops: the channel that carries the feature is red, with a legend; named captions
    assert "red = <b>rna</b>" in page
    sources = re.findall(r'<img src="\.\./crops/(\d+_[\d-]+)\.png"', page)
    assert len(sources) == 9 and all((tmp_path / "crops" / f"{s}.png").is_file() for s in sources)
    assert all(s.endswith("_1-0-2") or s.endswith("_1-2-0") for s in sources)
    assert "group: a · gene: NOP53 · cell" not in page  # no column that is not asked for
    assert "group: a · gene: NOP53</figcaption>" in page and "strong:" not in page
    screenshot(tmp_path / "m" / "feature_0.html", tmp_path / "feature_0.png")
    assert (tmp_path / "feature_0.png").stat().st_size > 1000


@needs_chromium
def test_chromium_shows_the_umap_with_cell_type_labels(tmp_path: Path) -> None:
    view, obs = _model("m", 0)
    rng = np.random.default_rng(1)
    umap = pd.DataFrame(
        {
            "token_id": obs["token_id"],
            "umap1": np.repeat([0.0, 5.0, 10.0], 20) + rng.normal(0, 0.5, 60),
            "umap2": rng.normal(0, 0.5, 60),
        }
    )
    render = umap_gallery(tmp_path, umap, obs, ["group"], colour_by="group")
    write_browser(tmp_path, "demo", [view], render)
    page = dump_dom(tmp_path / "m" / "feature_0.html")
    assert "coloured by group" in page and 'href="../umap.png"' in page
    import imageio.v3 as iio

    picture = np.asarray(iio.imread(tmp_path / "umap.png"))
    colours = {tuple(c) for c in picture[..., :3].reshape(-1, 3)[::7]}
    assert len(colours) > 10  # coloured by label, not grey only


def test_genes_are_sorted_by_significance_within_direction() -> None:
    genes = pd.DataFrame(
        {
            "feature": [1, 1, 1, 1, 1, 1, 2],
            "direction": ["down", "down", "down", "up", "up", "up", "up"],
            "gene": ["D1", "D2", "D3", "U1", "U2", "U3", "X"],
            "statistic": [-2.0, -9.0, -5.0, 3.0, 7.0, 7.5, 1.0],
            "fdr": [0.04, 1e-8, 1e-8, 0.01, 1e-4, 1e-4, 0.01],
        }
    )
    rows = gene_rows(genes, 1, 2)
    # up first; FDR, then |t| for ties; the two best per direction
    assert rows["gene"].tolist() == ["U3", "U2", "D2", "D3"]
    assert rows["listed"].tolist() == [3, 3, 3, 3] and rows["shown"].tolist() == [2, 2, 2, 2]
    screen = pd.DataFrame(
        {
            "feature": [0, 0, 0],
            "direction": "selective",
            "gene": ["A", "B", "C"],
            "avg_selectivity": [0.1, 0.5, 0.3],
        }
    )
    assert gene_rows(screen, 0, 5)["gene"].tolist() == ["B", "C", "A"]
    assert gene_rows(genes, 7, 5).empty and gene_rows(None, 1, 5).empty


def test_the_headline_term_is_always_in_the_page_table() -> None:
    terms = pd.DataFrame(
        {
            "feature": 3,
            "direction": ["up"] * 4 + ["down"] * 3,
            "term": ["u1", "u2", "u3", "u4", "d1", "d2", "d3"],
            "fdr": [0.8, 0.7, 0.9, 0.6, 0.02, 0.5, 0.5],
            "p_value": [0.1, 0.1, 0.2, 0.05, 1e-4, 0.01, 0.02],
            "term_size": 10,
        }
    )
    rows = term_rows(terms, 3, 2, ("down", "d1"))
    assert rows["term"].tolist() == ["u4", "u2", "d1", "d2"]
    assert rows["headline"].tolist() == [False, False, True, False]
    kept = term_rows(terms, 3, 1, ("up", "u3"))  # outside the first n: added, marked
    assert kept["term"].tolist() == ["u4", "u3", "d1"]
    assert kept.loc[kept["headline"], "term"].tolist() == ["u3"]


def test_displayed_fold_changes_have_a_pseudo_count() -> None:
    codes = sp.csr_matrix(np.array([[0.9], [0.8], [0.1], [0.0], [0.0], [0.0]]))
    log1p = np.log1p(np.array([[0, 4], [0, 6], [3, 1], [1, 1], [3, 1], [2, 1]], dtype=float))
    genes = pd.DataFrame(
        {"feature": [0, 0], "direction": ["down", "up"], "gene": ["ABS", "UP"], "fdr": 0.01}
    )
    annotation = pd.DataFrame({"feature": [0], "sign": [1], "activation_threshold": [0.5]})
    shown = fold_changes(genes, annotation, codes, log1p, ["ABS", "UP"]).set_index("gene")
    strong, zero = log1p[:2].mean(axis=0), log1p[3:].mean(axis=0)  # row 2 is neither group
    np.testing.assert_allclose(shown["mean_active"], strong)
    np.testing.assert_allclose(shown["mean_zero"], zero)
    np.testing.assert_allclose(shown["log2_fc_display"], (strong - zero) / np.log(2))
    assert shown.loc["ABS", "log2_fc_display"] > -3  # absent in the active cells, not -30


def test_crop_channels_are_those_that_differ_from_controls() -> None:
    images, controls = _screen_images()
    statistics = channel_statistics(images, block=7)
    np.testing.assert_allclose(statistics[:, :, 0], images.mean(axis=(2, 3)))
    np.testing.assert_allclose(statistics[:, :, 1], images.std(axis=(2, 3)))
    contrast = channel_contrast(statistics, np.arange(6), np.flatnonzero(controls))
    assert feature_channels(contrast)[0] == 1 and len(feature_channels(contrast)) == 3
    assert feature_channels(np.array([0.1, 0.3]), 3) == [1, 0]
    assert (
        caption(
            {"gene": "NOP53", "strong": None, "batch": np.nan, "plate": "P05"},
            ["gene", "strong", "batch", "plate"],
        )
        == "gene: NOP53 · plate: P05"
    )


def test_the_headline_says_direction_and_significance() -> None:
    row = pd.Series({"nearest_term": "T (GO:1)", "nearest_direction": "down", "best_fdr": 0.01})
    assert "genes down in active cells" in headline_term(row, 0.05)
    assert "(down, FDR 0.01)" in headline_term(row, 0.05)
    assert headline_term(row, 0.01).startswith("no significant GO term (FDR &lt; 0.01)")
    row = pd.Series({"nearest_term": "T (GO:1)", "nearest_direction": "", "best_fdr": 0.01})
    assert headline_term(row, 0.05).startswith("GO term of its genes: <b")
    assert headline_term(pd.Series({"nearest_term": np.nan}), 0.05) == "no GO term"


def test_model_view_scores_every_task_and_shows_fold_changes_with_expression() -> None:
    from cellconcepts.report.browser import model_view

    codes = sp.csr_matrix(np.array([[0.9, 0.0], [0.8, 0.2], [0.0, 0.3], [0.0, 0.0]]))
    labels = {
        "t": pd.Series(["a", "a", "b", "b"], dtype=object),
        "u": pd.Series(["x", "y", "x", None], dtype=object),
    }
    directions = np.eye(2)
    dead = np.array([False, True])
    view = model_view("icfl_pca_k8_seed0", codes, directions, dead, labels, fdr=0.1)
    assert view.name == "icfl_pca_k8_seed0" and view.fdr == 0.1
    assert list(view.selectivity) == ["t", "u"]
    for task, values in labels.items():
        np.testing.assert_array_equal(view.selectivity[task].avg, selectivity(codes, values).avg)
    np.testing.assert_array_equal(view.dead, dead)
    assert view.genes is None and view.annotation is None and view.terms is None
    # feature 0: a on every active token, b on none: avg selectivity 1 for a, -1 for b
    np.testing.assert_allclose(view.selectivity["t"].avg[:, 0], [1.0, -1.0])

    genes = pd.DataFrame({"feature": [0], "direction": ["up"], "gene": ["G"], "fdr": 0.01})
    annotation = pd.DataFrame({"feature": [0], "sign": [1], "activation_threshold": [0.5]})
    log1p = np.log1p(np.array([[4.0], [6.0], [1.0], [1.0]]))
    shown = model_view(
        "m",
        codes,
        directions,
        dead,
        labels,
        annotation=annotation,
        genes=genes,
        expression=(log1p, ["G"]),
    )
    pd.testing.assert_frame_equal(shown.genes, fold_changes(genes, annotation, codes, log1p, ["G"]))
    assert shown.genes.loc[0, "mean_active"] == pytest.approx(log1p[:2].mean())
    without = model_view("m", codes, directions, dead, labels, annotation=annotation, genes=genes)
    assert "mean_active" not in without.genes.columns  # no expression: the genes as given


def test_a_folder_is_replaced_only_when_its_build_completes(tmp_path: Path) -> None:
    from cellconcepts.report.browser import folder_files, replacing_folder

    folder = tmp_path / "browser"
    folder.mkdir()
    (folder / "old.html").write_text("old")
    with pytest.raises(RuntimeError), replacing_folder(folder) as building:
        assert building == tmp_path / ".browser.building" and building.is_dir()
        (building / "new.html").write_text("new")
        raise RuntimeError("failed build")
    assert [p.name for p in folder.iterdir()] == ["old.html"]  # the old browser stays
    with replacing_folder(folder) as building:
        assert not (building / "new.html").exists()  # a fresh build folder
        (building / "index.html").write_text("12345")
        (building / "pages").mkdir()
        (building / "pages" / "feature_0.html").write_text("abc")
    assert not building.exists()
    assert sorted(p.name for p in folder.rglob("*")) == ["feature_0.html", "index.html", "pages"]
    assert folder_files(folder) == (2, 8)


def test_control_images_are_the_is_control_flags() -> None:
    from cellconcepts.report.browser import control_images

    flags = control_images(pd.DataFrame({"is_control": [1, 0, 1]}))
    assert flags.dtype == bool and flags.tolist() == [True, False, True]
    assert control_images(pd.DataFrame({"gene": ["A"]})) is None
