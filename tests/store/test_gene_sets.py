"""Gene-set library files: GMT / Enrichr parsing, the offline GO BP 2023 default."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from cellconcepts.sources.cellpainting import DEFAULT_GROUPS
from cellconcepts.store import gene_sets
from cellconcepts.store.gene_sets import go_bp_2023_path, read_gmt


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
        "import sys; from cellconcepts.store.gene_sets import go_bp_2023_path; go_bp_2023_path(); "
        "assert 'pyenrichr' not in sys.modules, 'pyenrichr was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_go_bp_2023_path_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        gene_sets.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyenrichr" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install pyenrichr"):
        go_bp_2023_path()


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_gmt_without_description_keeps_its_first_gene(tmp_path):
    """'term<TAB>gene1<TAB>gene2...' used to lose gene1 of every term to the description."""
    path = _write_lines(
        tmp_path / "plain.gmt",
        ["T1\tACTB\tGAPDH\tTP53", "T2\tGAPDH\tTP53\tMYC", "T3\tTP53\tACTB"],
    )
    assert read_gmt(path) == {
        "T1": ["ACTB", "GAPDH", "TP53"],
        "T2": ["GAPDH", "TP53", "MYC"],
        "T3": ["TP53", "ACTB"],
    }


@pytest.mark.parametrize(
    ("second", "described"),
    [
        (["", "", ""], True),  # Enrichr
        (["http://x/T1", "http://x/T2", "http://x/T3"], True),  # MSigDB
        (["cell cycle", "apoptosis", "x"], True),
        (["ACTB", "GAPDH", "TP53"], False),  # genes listed in other terms too
    ],
)
def test_description_field_is_detected(second, described):
    rows = [
        (1, ["T1", second[0], "GAPDH", "TP53"]),
        (2, ["T2", second[1], "TP53", "ACTB"]),
        (3, ["T3", second[2], "ACTB", "GAPDH"]),
    ]
    assert gene_sets.gmt_has_descriptions(rows) is described


@pytest.mark.parametrize(
    ("second", "described"),
    [
        (["ACTB", "LYZ"], False),  # gene symbols like the rest of their line
        (["na", "na"], True),  # one placeholder for every term
        (["TERM_A", "TERM_B"], True),  # the term name repeated
        (["about_a", "about_b"], True),  # lower case among upper-case genes
        (["GO:0001", "GO:0002"], True),  # not a gene symbol
    ],
)
def test_description_field_is_detected_when_terms_share_no_gene(second, described):
    """Terms that share no gene say nothing through overlap: the field's look decides."""
    rows = [
        (1, ["TERM_A", second[0], "GAPDH", "CD3E", "CD19", "MS4A1", "CD14"]),
        (2, ["TERM_B", second[1], "NKG7", "GNLY", "CD8A", "IL7R", "CCR7"]),
    ]
    assert gene_sets.gmt_has_descriptions(rows) is described


def test_disjoint_terms_without_description_keep_their_first_gene(tmp_path):
    path = _write_lines(
        tmp_path / "disjoint.gmt",
        [
            "TERM_A\tACTB\tGAPDH\tCD3E\tCD19\tMS4A1\tCD14",
            "TERM_B\tLYZ\tNKG7\tGNLY\tCD8A\tIL7R\tCCR7",
        ],
    )
    library = read_gmt(path)
    assert library["TERM_A"][0] == "ACTB" and library["TERM_B"][0] == "LYZ"
    assert [len(genes) for genes in library.values()] == [6, 6]


def test_binary_and_non_utf8_gene_sets_are_refused_by_name(tmp_path):
    binary = tmp_path / "lib.gmt"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(ValueError, match=r"lib\.gmt: a binary file"):
        read_gmt(binary)
    latin = tmp_path / "latin.gmt"
    latin.write_bytes("T1\t\tGENE1\nT\xe9rm\t\tGENE2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.gmt, line 2: not UTF-8"):
        read_gmt(latin)
