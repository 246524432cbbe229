from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from cellconcepts.enrich import genesets
from cellconcepts.enrich.genesets import go_bp_2023_path, read_gmt
from cellconcepts.sources.cellpainting import DEFAULT_GROUPS


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_read_gmt_parses_enrichr_and_gmt_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "sets.gmt",
        "Term A (GO:1)\t\tabc1\tDEF2\tabc1\t\tGhi3\t\n"
        "\n"
        "Term B\ta description\tX\r\n"
        "   \n"
        "Term C\t\tdef2\tx\n",
    )
    assert read_gmt(path) == {
        "Term A (GO:1)": ["ABC1", "DEF2", "GHI3"],
        "Term B": ["X"],
        "Term C": ["DEF2", "X"],
    }


def test_read_gmt_keeps_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "sets.gmt", "z\t\tA\nb\t\tB\nm\t\tC\n")
    assert list(read_gmt(path)) == ["z", "b", "m"]


def test_read_gmt_line_without_genes_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.gmt", "ok\t\tA\tB\n\nempty term\tdesc\t\t\n")
    with pytest.raises(ValueError, match=r"bad\.gmt, line 3: term 'empty term' has no genes"):
        read_gmt(path)


def test_read_gmt_duplicate_term_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.gmt", "T1\t\tA\nT2\t\tB\nT1\t\tC\n")
    with pytest.raises(ValueError, match=r"line 3: duplicate term 'T1'"):
        read_gmt(path)


def test_read_gmt_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.gmt"):
        read_gmt(tmp_path / "nope.gmt")
    with pytest.raises(ValueError, match="no gene sets"):
        read_gmt(_write(tmp_path / "empty.gmt", "\n\n"))


def test_go_bp_2023_contains_the_default_terms() -> None:
    path = go_bp_2023_path()
    assert path.parts[-3:] == ("pyenrichr", "data", "GO_Biological_Process_2023")
    gene_sets = read_gmt(path)
    assert len(gene_sets) > 5000
    for group in DEFAULT_GROUPS:
        assert group.go_term in gene_sets, group
        assert len(gene_sets[group.go_term]) >= 10
    assert "FIS1" in gene_sets["Mitochondrial Fission (GO:0000266)"]


def test_go_bp_2023_path_does_not_import_pyenrichr() -> None:
    code = (
        "import sys; from cellconcepts.enrich.genesets import go_bp_2023_path; go_bp_2023_path(); "
        "assert 'pyenrichr' not in sys.modules, 'pyenrichr was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_go_bp_2023_path_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        genesets.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyenrichr" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install pyenrichr"):
        go_bp_2023_path()
