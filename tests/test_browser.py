"""The static feature browser (cellconcepts.report.browser): its parts against brute force, and
the pages it writes, read back as HTML and, where Chromium is installed, in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.evaluate.selectivity import selectivity
from cellconcepts.report.browser import (
    ModelView,
    composite,
    crop_gallery,
    example_rows,
    nearest_features,
    shrunk,
    token_table,
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
            {"feature": [0], "best_term": ["Ribosome Biogenesis (GO:0042254)"], "best_fdr": [1e-4]}
        ),
        terms=pd.DataFrame(
            {"feature": [0], "direction": ["up"], "term": ["Ribosome Biogenesis"], "fdr": [1e-4]}
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
    assert "Ribosome Biogenesis (GO:0042254) (FDR 0.0001)" in page
    strongest = page.split("most activating")[1].split("random active")[0]
    assert strongest.count("<td>a</td>") == 4  # its four strongest tokens are all in group a
    near = nearest_features(first.directions, 2)[0]
    assert f'<a href="feature_{near[0]}.html">' in page
    assert "never active" in (tmp_path / first.name / "feature_4.html").read_text()
    assert assert_every_page_is_there(tmp_path) == 10
    (tmp_path / second.name / "feature_2.html").unlink()  # a page missing is caught
    with pytest.raises(FileNotFoundError):
        assert_every_page_is_there(tmp_path)


def assert_every_page_is_there(folder: Path) -> int:
    """Every feature the index links to has a page with its sections, and every page links
    back; returns the number of pages."""
    home = (folder / "index.html").read_text()
    links = re.findall(r'<a href="([^"]+/feature_(\d+)\.html)">(\d+)</a>', home)
    assert links, "the index links no feature page"
    for link, number, text in links:
        page = (folder / link).read_text()
        assert number == text
        assert f"<h1>Feature {number} of " in page, link
        for section in ("Examples", "Selectivity per label", "Nearest features"):
            assert f"<h2>{section}" in page, (link, section)
        assert 'href="../index.html"' in page
    return len(links)


def test_crops_are_written_once_and_shared(tmp_path: Path) -> None:
    view, obs = _model("m", 0)
    images = np.random.default_rng(0).integers(0, 1000, (60, 3, 8, 8)).astype(np.uint16)
    render = crop_gallery(tmp_path, images, obs, [0, 1, 2], None, ["group"])
    write_browser(tmp_path, "demo", [view], render, examples=4, random_examples=2)
    crops = sorted(int(p.stem) for p in (tmp_path / "crops").glob("*.png"))
    pages = "".join(p.read_text() for p in (tmp_path / "m").glob("*.html"))
    shown = sorted({int(r) for r in re.findall(r'src="\.\./crops/(\d+)\.png"', pages)})
    assert crops == shown and len(shown) > 4


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: Path) -> str:
    """The page's DOM after Chromium ran its scripts (headless, from disk, no network)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    result = subprocess.run(
        [*command, page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(page: Path, picture: Path) -> None:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"]
    subprocess.run(
        [*command, f"--screenshot={picture}", page.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CELLCONCEPTS_REQUIRE_CHROMIUM"),
    reason="Chromium is not installed (apt install chromium)",
)


@needs_chromium
def test_chromium_opens_the_index_and_a_feature_page(tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CELLCONCEPTS_REQUIRE_CHROMIUM is set but chromium is missing"
    view, obs = _model("m", 0)
    images = np.random.default_rng(0).integers(0, 1000, (60, 3, 8, 8)).astype(np.uint16)
    write_browser(tmp_path, "demo", [view], crop_gallery(tmp_path, images, obs, [0, 1, 2]))
    home = dump_dom(tmp_path / "index.html")
    assert len(re.findall(r"<tr", home)) == 6 and 'id="filter"' in home
    page = dump_dom(tmp_path / "m" / "feature_0.html")
    sources = re.findall(r'<img src="\.\./crops/(\d+)\.png"', page)
    assert len(sources) == 9 and all((tmp_path / "crops" / f"{s}.png").is_file() for s in sources)
    screenshot(tmp_path / "m" / "feature_0.html", tmp_path / "feature_0.png")
    assert (tmp_path / "feature_0.png").stat().st_size > 1000
