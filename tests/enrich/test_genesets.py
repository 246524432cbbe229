"""A gene-set library restricted to an analysis' background (`enrich.genesets`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellconcepts.enrich import genesets


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_library_terms_reads_the_gmt_and_restricts_it_to_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path / "sets.gmt",
        "T1\t\ta\tb\tc\tOUT\nT2\t\tD\nT3\t\tb\tc\td\te\nT4\t\tA\tOUT\tOUT2\n",
    )
    terms = genesets.library_terms(
        path, ["A", "b", "C", "d", "F"], min_size=2, max_size=3, where="x"
    )
    # inside the background: T1 {A, B, C}, T2 {D} (too small), T3 {B, C, D} (E is outside),
    # T4 {A} (too small); F is in no term
    assert list(terms.terms) == ["T1", "T3"]
    assert list(terms.genes) == ["A", "B", "C", "D", "F"]
    assert terms.membership.toarray().tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0]]
    assert (terms.n_library_terms, terms.n_unmatched) == (4, 1)
    # no GMT: the offline default
    monkeypatch.setattr(genesets, "go_bp_2023_path", lambda: path)
    default = genesets.library_terms(None, ["A", "B", "C"], min_size=2, max_size=3, where="x")
    assert list(default.terms) == ["T1", "T3"]  # T3: B and C inside
    with pytest.raises(ValueError, match="^where: no gene set has between 4 and 5"):
        genesets.library_terms(path, ["A", "B", "C"], min_size=4, max_size=5, where="where")
