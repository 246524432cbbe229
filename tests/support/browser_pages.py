"""Headless Chromium for the tests of the feature browser and the report: the DOM after scripts
ran, screenshots, and the check that every feature page the index links to is there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

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
