"""Gene-set term matrix, hypergeometric enrichment with BH, and a cross-check against gseapy.

Expectations are computed independently of the code under test: exact hypergeometric tails with
``math.comb``, BH with ``scipy.stats.false_discovery_control``, overlaps with Python sets.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import false_discovery_control, hypergeom

from cellconcepts.enrich import genesets
from cellconcepts.enrich.genesets import TermMatrix, term_matrix
from cellconcepts.enrich.statistics import (
    ENRICHMENT_COLUMNS,
    benjamini_hochberg,
    by_feature,
    enrich_lists,
    hypergeometric_p,
)
from cellconcepts.store.gene_sets import read_gmt

# --------------------------------------------------------------------------- helpers


def _write_gmt(path: Path, gene_sets: dict[str, list[str]]) -> Path:
    """A GMT file in the Enrichr layout (empty description field)."""
    lines = ["\t".join([term, "", *genes]) for term, genes in gene_sets.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _exact_tail(k: int, big_k: int, n: int, m: int) -> float:
    """P(X >= k), X ~ hypergeometric: n draws from m genes of which big_k are in the term."""
    total = sum(
        (math.comb(big_k, x) * math.comb(m - big_k, n - x) for x in range(k, min(big_k, n) + 1)),
        start=0,
    )
    return float(Fraction(total, math.comb(m, n)))


def _membership_sets(terms: TermMatrix) -> dict[str, set[str]]:
    """Each kept term's background genes, read back from the CSR membership matrix."""
    csr = terms.membership.tocsr()
    return {
        str(term): {str(g) for g in terms.genes[csr.indices[csr.indptr[i] : csr.indptr[i + 1]]]}
        for i, term in enumerate(terms.terms)
    }


def _lists_matrix(lists: list[list[str]], background: list[str]) -> sp.csr_matrix:
    """(lists, genes) 0/1 CSR over ``background``."""
    column = {gene: j for j, gene in enumerate(background)}
    rows = [i for i, genes in enumerate(lists) for _ in genes]
    cols = [column[g] for genes in lists for g in genes]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(lists), len(background)))


# --------------------------------------------------------------------------- term matrix

# 12 genes, only B2 and B3 in the background: 2 < min_size 3, dropped.
# 10 genes, 4 inside the background: kept although 10 > max_size 5.
# 6 genes, all inside: dropped (6 > 5).
# CD3E matches the background's "cd3e"; GMT "b9" is read upper-cased: 3 inside, kept (== min).
# 5 inside, kept (== max).
# B13 is only in this dropped term: it still counts as annotated.
# Nothing in the background.
LIBRARY = {
    "big_outside": ["B2", "B3", *[f"X{i}" for i in range(1, 11)]],
    "large_inside_ok": ["B4", "X11", "B5", "X12", "B6", "X13", "B7", "X14", "X15", "X16"],
    "too_big_inside": ["B2", "B3", "B4", "B5", "B6", "B7"],
    "case_term": ["CD3E", "B8", "b9"],
    "at_max": ["B12", "B8", "B9", "B10", "B11"],
    "single": ["B13", "X20"],
    "nothing": ["X30", "X31", "X32"],
}
BACKGROUND = ["cd3e", *[f"B{i}" for i in range(2, 14)], "Orphan1", "ORPHAN2"]


@pytest.fixture
def library(tmp_path: Path) -> dict[str, list[str]]:
    return read_gmt(_write_gmt(tmp_path / "library.gmt", LIBRARY))


def test_term_matrix_counts_term_sizes_inside_the_background(
    library: dict[str, list[str]],
) -> None:
    terms = term_matrix(library, BACKGROUND, min_size=3, max_size=5)

    assert list(terms.terms) == ["large_inside_ok", "case_term", "at_max"]
    assert list(terms.genes) == [g.upper() for g in BACKGROUND]
    assert terms.n_terms == 3
    assert terms.n_library_terms == len(LIBRARY)
    np.testing.assert_array_equal(terms.sizes, [4, 3, 5])
    assert _membership_sets(terms) == {
        "large_inside_ok": {"B4", "B5", "B6", "B7"},
        "case_term": {"CD3E", "B8", "B9"},
        "at_max": {"B8", "B9", "B10", "B11", "B12"},
    }
    # exact CSR layout: rows in library order, columns = positions in the background
    assert isinstance(terms.membership, sp.csr_matrix)
    assert terms.membership.shape == (3, len(BACKGROUND))
    expected = np.zeros((3, len(BACKGROUND)))
    position = {g.upper(): j for j, g in enumerate(BACKGROUND)}
    for row, genes in enumerate(
        [["B4", "B5", "B6", "B7"], ["CD3E", "B8", "B9"], ["B8", "B9", "B10", "B11", "B12"]]
    ):
        expected[row, [position[g] for g in genes]] = 1.0
    np.testing.assert_array_equal(terms.membership.toarray(), expected)
    assert list(terms.genes) == list(position)
    assert len(set(terms.same_genes)) == 3  # no two kept terms share their background genes


def test_term_matrix_n_unmatched_is_counted_before_the_size_filter(
    library: dict[str, list[str]],
) -> None:
    # B2, B3 (only in dropped terms) and B13 (only in the dropped "single") are annotated;
    # ORPHAN1 and ORPHAN2 are in no gene set at all.
    terms = term_matrix(library, BACKGROUND, min_size=3, max_size=5)
    assert terms.n_unmatched == 2
    # the size filter does not change it
    wide = term_matrix(library, BACKGROUND, min_size=1, max_size=100)
    assert wide.n_unmatched == 2
    assert list(wide.terms) == [t for t in LIBRARY if t != "nothing"]
    np.testing.assert_array_equal(wide.sizes, [2, 4, 6, 3, 5, 1])


def test_term_matrix_matches_symbols_case_insensitively() -> None:
    gene_sets = {"T": ["CD3E", "cd4", " Cd8a "]}
    terms = term_matrix(gene_sets, ["cd3e", "CD4", "cD8A", "other"], min_size=1, max_size=5)
    assert list(terms.genes) == ["CD3E", "CD4", "CD8A", "OTHER"]
    assert _membership_sets(terms) == {"T": {"CD3E", "CD4", "CD8A"}}
    assert terms.n_unmatched == 1


def test_term_matrix_duplicate_background_genes_are_named(
    library: dict[str, list[str]],
) -> None:
    background = ["B2", "b2", "cd3e", "CD3E", "B4"]
    with pytest.raises(ValueError, match=r"2 background genes repeat.*\['B2', 'CD3E'\]"):
        term_matrix(library, background, min_size=1, max_size=5, where="my background")
    with pytest.raises(ValueError, match="my background"):
        term_matrix(library, background, min_size=1, max_size=5, where="my background")


def test_term_matrix_without_any_term_left_raises(library: dict[str, list[str]]) -> None:
    with pytest.raises(ValueError, match="no gene set has between 7 and 9"):
        term_matrix(library, BACKGROUND, min_size=7, max_size=9)
    with pytest.raises(ValueError, match="no gene set"):
        term_matrix(library, ["NOPE1", "NOPE2"], min_size=1, max_size=5)


@pytest.mark.parametrize(("min_size", "max_size"), [(5, 4), (0, 10), (-1, 3)])
def test_term_matrix_invalid_sizes_raise(
    library: dict[str, list[str]], min_size: int, max_size: int
) -> None:
    with pytest.raises(ValueError, match="min_size <= max_size"):
        term_matrix(library, BACKGROUND, min_size=min_size, max_size=max_size)


def test_term_matrix_empty_background_raises(library: dict[str, list[str]]) -> None:
    with pytest.raises(ValueError, match="background gene list is empty"):
        term_matrix(library, [], min_size=1, max_size=5)


def test_normalise_symbols() -> None:
    out = genesets.normalise_symbols([" cd3e", "Actb ", 7])
    assert out.dtype == object
    assert list(out) == ["CD3E", "ACTB", "7"]


# --------------------------------------------------------------------------- hypergeometric

# (overlap k, term size K, list size N, background M)
CASES = [
    (1, 5, 10, 100),
    (3, 5, 10, 100),
    (5, 5, 5, 20),
    (2, 2, 2, 2),
    (1, 1, 1, 50),
    (4, 30, 12, 200),
    (10, 50, 40, 1000),
    (0, 7, 9, 30),
    (7, 40, 7, 60),
]


def test_hypergeometric_p_equals_scipy_sf_on_constructed_cases() -> None:
    k, big_k, n, m = (np.array(c) for c in zip(*CASES, strict=True))
    for background in sorted(set(m.tolist())):
        sel = m == background
        got = hypergeometric_p(k[sel], big_k[sel], n[sel], int(background))
        expected = [
            hypergeom.sf(ki - 1, background, ki_size, ni)
            for ki, ki_size, ni in zip(k[sel], big_k[sel], n[sel], strict=True)
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("k", "big_k", "n", "m"), CASES)
def test_hypergeometric_p_equals_exact_combinatorial_tail(
    k: int, big_k: int, n: int, m: int
) -> None:
    got = hypergeometric_p(np.array([k]), np.array([big_k]), np.array([n]), m)
    np.testing.assert_allclose(got, [_exact_tail(k, big_k, n, m)], rtol=1e-10, atol=0)


def test_hypergeometric_p_edge_values() -> None:
    # overlap 0 -> P(X >= 0) = 1; every gene in the term drawn -> tiny p
    np.testing.assert_allclose(hypergeometric_p(np.array([0]), np.array([5]), np.array([5]), 20), 1)
    p = hypergeometric_p(np.array([5]), np.array([5]), np.array([5]), 20)
    np.testing.assert_allclose(p, [1 / math.comb(20, 5)], rtol=1e-12)


# --------------------------------------------------------------------------- Benjamini-Hochberg


def _random_p(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random p-values with ties, exact zeros and ones."""
    p = np.round(rng.uniform(0, 1, size) ** 3, 3)  # rounding makes ties; many small values
    p[rng.choice(size, 5, replace=False)] = 0.0
    p[rng.choice(size, 5, replace=False)] = 1.0
    return p


def test_benjamini_hochberg_equals_scipy() -> None:
    rng = np.random.default_rng(11)
    for size in (1, 2, 17, 300):
        p = _random_p(rng, size) if size >= 10 else rng.uniform(0, 1, size)
        np.testing.assert_allclose(
            benjamini_hochberg(p), false_discovery_control(p), rtol=1e-13, atol=0
        )
    p = _random_p(rng, 300)
    assert np.unique(p).size < p.size  # the case has ties
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-13)
    assert benjamini_hochberg(np.array([])).shape == (0,)


def test_benjamini_hochberg_grouped_with_n_tests_pads_with_ones() -> None:
    rng = np.random.default_rng(12)
    p = _random_p(rng, 250)
    groups = rng.choice(np.array([7, 2, 30, 5, 11]), size=p.size)  # unsorted, non-contiguous
    extra = {7: 0, 2: 3, 30: 40, 5: 1, 11: 200}
    group_size = {g: int((groups == g).sum()) for g in extra}
    n_tests = np.array([group_size[g] + extra[g] for g in groups])

    got = benjamini_hochberg(p, groups=groups, n_tests=n_tests)

    expected = np.empty_like(p)
    for g in extra:
        members = np.flatnonzero(groups == g)
        padded = np.r_[p[members], np.ones(extra[g])]
        expected[members] = false_discovery_control(padded)[: members.size]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0)

    # one number for every group
    family = max(group_size.values()) + 9
    got = benjamini_hochberg(p, groups=groups, n_tests=family)
    for g in extra:
        members = np.flatnonzero(groups == g)
        padded = np.r_[p[members], np.ones(family - members.size)]
        np.testing.assert_allclose(
            got[members], false_discovery_control(padded)[: members.size], rtol=1e-13
        )

    # groups without n_tests: BH within each group
    got = benjamini_hochberg(p, groups=groups)
    for g in extra:
        members = np.flatnonzero(groups == g)
        np.testing.assert_allclose(got[members], false_discovery_control(p[members]), rtol=1e-13)


@pytest.mark.parametrize(
    ("p", "kwargs", "message"),
    [
        (np.array([0.1, np.nan]), {}, "without NaN"),
        (np.array([0.1, 1.5]), {}, r"\[0, 1\]"),
        (np.array([-0.1, 0.5]), {}, r"\[0, 1\]"),
        (np.array([[0.1, 0.2]]), {}, "1-D"),
        (np.array([0.1, 0.2, 0.3]), {"groups": np.array([0, 0])}, "groups"),
        (np.array([0.1, 0.2, 0.3]), {"n_tests": 2}, "n_tests"),
        (
            np.array([0.1, 0.2, 0.3]),
            {"groups": np.array([0, 0, 1]), "n_tests": np.array([5, 1, 1])},
            "n_tests",
        ),
    ],
)
def test_benjamini_hochberg_invalid_input_raises(
    p: np.ndarray, kwargs: dict[str, np.ndarray | int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        benjamini_hochberg(p, **kwargs)


# --------------------------------------------------------------------------- enrich_lists

ENRICH_BACKGROUND = [
    "ZETA", "ALPHA", "MU", "BETA", "OMEGA", "GAMMA", "DELTA", "KAPPA", "LAMBDA", "SIGMA",
]  # fmt: skip
ENRICH_TERMS = {
    "T_a": ["GAMMA", "ALPHA", "BETA"],
    "T_b": ["SIGMA", "MU", "ZETA", "OMEGA"],
    "T_c": ["KAPPA", "DELTA"],
    "T_e": ["OMEGA", "ALPHA", "DELTA"],
    "T_f": ["LAMBDA", "BETA", "KAPPA"],  # same size as T_e: equal p for equal overlaps
    "T_g": ["GAMMA", "LAMBDA"],  # overlaps none of the lists
}
ENRICH_LISTS = [
    ["SIGMA", "ALPHA", "ZETA", "MU", "BETA"],
    [],  # empty: tests nothing
    ["KAPPA", "DELTA"],
    ["OMEGA"],
]


def _expected_enrichment(
    lists: list[list[str]], gene_sets: dict[str, list[str]], background: list[str]
) -> pd.DataFrame:
    """The enrichment table computed the slow way: sets, exact tails, scipy BH over all terms."""
    m = len(background)
    position = {g: j for j, g in enumerate(background)}
    # terms with identical genes in the background share a group id, numbered in term order
    signatures = [frozenset(set(g) & set(background)) for g in gene_sets.values()]
    group_of = {sig: k for k, sig in enumerate(dict.fromkeys(s for s in signatures if s))}
    records = []
    for i, genes in enumerate(lists):
        query = set(genes)
        p_all = []
        rows = []
        for term, term_genes in gene_sets.items():
            members = set(term_genes) & set(background)
            shared = query & members
            p = _exact_tail(len(shared), len(members), len(query), m) if shared else 1.0
            p_all.append(p)
            if shared:
                rows.append(
                    {
                        "list": i,
                        "term": term,
                        "overlap": len(shared),
                        "list_size": len(query),
                        "term_size": len(members),
                        "term_group": group_of[frozenset(members)],
                        "background_size": m,
                        "fold_enrichment": len(shared) / (len(query) * len(members) / m),
                        "p_value": p,
                        "genes": ";".join(sorted(shared, key=position.__getitem__)),
                        "_term": len(p_all) - 1,
                    }
                )
        if not query:
            continue
        fdr = false_discovery_control(np.array(p_all))
        for row in rows:
            row["fdr"] = fdr[row.pop("_term")]
            row["rank"] = 1 + sum(other["p_value"] < row["p_value"] for other in rows)
        records.extend(rows)
    return pd.DataFrame.from_records(records)[ENRICHMENT_COLUMNS]


@pytest.fixture
def enrich_terms() -> TermMatrix:
    return term_matrix(ENRICH_TERMS, ENRICH_BACKGROUND, min_size=1, max_size=10)


def test_enrich_lists_small_case_by_hand(enrich_terms: TermMatrix) -> None:
    got = enrich_lists(_lists_matrix(ENRICH_LISTS, ENRICH_BACKGROUND), enrich_terms)
    assert list(got.columns) == ENRICHMENT_COLUMNS

    # a few values written out by hand
    by_key = got.set_index(["list", "term"])
    assert by_key.loc[(0, "T_b"), "genes"] == "ZETA;MU;SIGMA"  # background order
    assert by_key.loc[(0, "T_b"), "overlap"] == 3
    assert by_key.loc[(0, "T_b"), "term_size"] == 4
    # P(X >= 3): 5 draws from 10 genes, 4 in the term = (C(4,3)C(6,2) + C(4,4)C(6,1)) / C(10,5)
    assert by_key.loc[(0, "T_b"), "p_value"] == pytest.approx((4 * 15 + 6) / 252, rel=1e-12)
    assert by_key.loc[(0, "T_b"), "fold_enrichment"] == pytest.approx(3 / (5 * 4 / 10))
    assert by_key.loc[(0, "T_e"), "rank"] == by_key.loc[(0, "T_f"), "rank"]  # tie: equal p
    assert by_key.loc[(2, "T_c"), "p_value"] == pytest.approx(1 / 45, rel=1e-12)
    assert by_key.loc[(2, "T_c"), "genes"] == "DELTA;KAPPA"
    assert not (got["list"] == 1).any()  # the empty list
    assert "T_g" not in set(got["term"])  # no overlap with any list

    expected = _expected_enrichment(ENRICH_LISTS, ENRICH_TERMS, ENRICH_BACKGROUND)
    assert len(got) == len(expected)
    key = ["list", "term"]
    pd.testing.assert_frame_equal(
        got.sort_values(key, ignore_index=True),
        expected.sort_values(key, ignore_index=True),
        check_dtype=False,
        check_exact=False,
        rtol=1e-12,
    )


def test_enrich_lists_rank_ties_share_the_smallest_rank(enrich_terms: TermMatrix) -> None:
    got = enrich_lists(_lists_matrix(ENRICH_LISTS, ENRICH_BACKGROUND), enrich_terms)
    list0 = got[got["list"] == 0].set_index("term")
    # T_b (3 of 4) is best; T_a (2 of 3) next; T_e and T_f (1 of 3 each) tie at rank 3
    assert list0["rank"].to_dict() == {"T_b": 1, "T_a": 2, "T_e": 3, "T_f": 3}
    list2 = got[got["list"] == 2].set_index("term")
    assert list2["rank"].to_dict() == {"T_c": 1, "T_e": 2, "T_f": 2}
    # sorted by list, then rank (p-value)
    assert got["list"].is_monotonic_increasing
    for _, block in got.groupby("list"):
        assert block["p_value"].is_monotonic_increasing
        assert block["rank"].is_monotonic_increasing


def test_enrich_lists_fdr_counts_every_term_of_the_matrix(enrich_terms: TermMatrix) -> None:
    got = enrich_lists(_lists_matrix([["KAPPA", "DELTA"]], ENRICH_BACKGROUND), enrich_terms)
    got = got.set_index("term")
    # 2 draws from 10 genes. T_c (both of its 2 genes): 1 / C(10, 2) = 1/45;
    # T_e and T_f (1 of 3): 1 - C(7, 2) / C(10, 2) = 24/45; three terms without overlap.
    assert got["p_value"].to_dict() == pytest.approx(
        {"T_c": 1 / 45, "T_e": 24 / 45, "T_f": 24 / 45}, rel=1e-12
    )
    # BH over the 6 terms [1/45, 24/45, 24/45, 1, 1, 1]: T_c 6/45; the others min(1, ...) = 1
    assert got["fdr"].to_dict() == pytest.approx({"T_c": 6 / 45, "T_e": 1.0, "T_f": 1.0})
    # over the overlapping terms only it would be 3/45
    assert benjamini_hochberg(np.array([1 / 45, 24 / 45, 24 / 45]))[0] == pytest.approx(3 / 45)


def test_enrich_lists_dense_input_and_without_genes(enrich_terms: TermMatrix) -> None:
    sparse = _lists_matrix(ENRICH_LISTS, ENRICH_BACKGROUND)
    dense = sparse.toarray().astype(np.int64) * 3  # any non-zero marks a member
    from_sparse = enrich_lists(sparse, enrich_terms)
    from_dense = enrich_lists(dense, enrich_terms)
    pd.testing.assert_frame_equal(from_sparse, from_dense)
    no_genes = enrich_lists(sparse, enrich_terms, with_genes=False)
    assert (no_genes["genes"] == "").all()
    pd.testing.assert_frame_equal(no_genes.drop(columns="genes"), from_sparse.drop(columns="genes"))


def test_enrich_lists_only_empty_lists_gives_an_empty_table(enrich_terms: TermMatrix) -> None:
    got = enrich_lists(sp.csr_matrix((3, len(ENRICH_BACKGROUND))), enrich_terms)
    assert list(got.columns) == ENRICHMENT_COLUMNS
    assert len(got) == 0


def test_enrich_lists_wrong_column_count_raises(enrich_terms: TermMatrix) -> None:
    with pytest.raises(ValueError, match="expected 10 columns"):
        enrich_lists(sp.csr_matrix((2, 9)), enrich_terms)


def test_enrich_lists_explicit_zeros_are_not_members(enrich_terms: TermMatrix) -> None:
    # list 0 holds ALPHA (1.0) and an explicitly stored 0.0 for BETA
    lists = sp.csr_matrix((np.array([1.0, 0.0]), np.array([1, 3]), np.array([0, 2])), shape=(1, 10))
    assert lists.nnz == 2
    got = enrich_lists(lists, enrich_terms)
    assert set(got["list_size"]) == {1}
    assert set(got["term"]) == {"T_a", "T_e"}


# --------------------------------------------------------------------------- gseapy cross-check


def test_enrich_lists_agrees_with_gseapy_on_go_bp() -> None:
    gseapy = pytest.importorskip("gseapy")
    library = read_gmt(genesets.go_bp_2023_path())
    rng = np.random.default_rng(2023)
    go_genes = np.array(sorted({g for genes in library.values() for g in genes}), dtype=object)
    background = [*rng.choice(go_genes, 2000, replace=False), *(f"NOTAGENE{i}" for i in range(25))]
    background = [str(g) for g in rng.permutation(np.array(background, dtype=object))]
    terms = term_matrix(library, background, min_size=5, max_size=300)
    assert terms.n_unmatched >= 25
    restricted = {
        str(term): sorted(genes) for term, genes in _membership_sets(terms).items()
    }  # the size-filtered terms, restricted to the background

    gene_lists = [
        [str(g) for g in rng.choice(background, size, replace=False)] for size in (40, 150, 400)
    ]
    ours = enrich_lists(_lists_matrix(gene_lists, background), terms)

    for i, genes in enumerate(gene_lists):
        logging.getLogger("gseapy").setLevel(logging.WARNING)
        theirs = gseapy.enrich(
            gene_list=genes,
            gene_sets=restricted,
            background=background,
            outdir=None,
            cutoff=1.0,
            no_plot=True,
        ).results
        mine = ours[ours["list"] == i].set_index("term")
        theirs = theirs.set_index("Term")
        assert len(mine) > 20
        assert set(mine.index) == set(theirs.index)
        theirs = theirs.loc[mine.index]

        overlap = theirs["Overlap"].str.split("/", expand=True).astype(np.int64)
        np.testing.assert_array_equal(overlap[0], mine["overlap"])
        np.testing.assert_array_equal(overlap[1], mine["term_size"])
        np.testing.assert_allclose(theirs["P-value"], mine["p_value"], rtol=1e-9, atol=0)
        # gseapy adjusts over the terms with an overlap only; ours over every term tested
        np.testing.assert_allclose(
            theirs["Adjusted P-value"],
            benjamini_hochberg(mine["p_value"].to_numpy()),
            rtol=1e-9,
            atol=0,
        )
        assert (mine["fdr"].to_numpy() >= theirs["Adjusted P-value"].to_numpy() - 1e-15).all()
        for term, shared in mine["genes"].items():
            assert set(shared.split(";")) == set(theirs.loc[term, "Genes"].split(";"))


def test_term_matrix_groups_terms_with_identical_background_genes() -> None:
    library = {"T1": ["A", "B", "C", "X1"], "T2": ["C", "B", "A", "X2"], "T3": ["A", "B", "D"]}
    terms = term_matrix(library, ["a", "b", "c", "d"], min_size=2, max_size=10)
    assert list(terms.terms) == ["T1", "T2", "T3"]
    assert terms.same_genes[0] == terms.same_genes[1] != terms.same_genes[2]


def test_by_feature_puts_each_lists_feature_and_direction_in_front(
    enrich_terms: TermMatrix,
) -> None:
    lists = _lists_matrix(ENRICH_LISTS, ENRICH_BACKGROUND)
    table = enrich_lists(lists, enrich_terms)
    index = pd.DataFrame({"feature": [0, 0, 3, 5], "direction": ["up", "down", "up", "up"]})
    out = by_feature(table, index)
    assert list(out.columns) == ["feature", "direction", *ENRICHMENT_COLUMNS]
    pd.testing.assert_frame_equal(out[ENRICHMENT_COLUMNS], table[ENRICHMENT_COLUMNS])
    expected = {0: (0, "up"), 2: (3, "up"), 3: (5, "up")}  # list 1 is empty: no rows
    assert [expected[i] for i in table["list"]] == list(
        out[["feature", "direction"]].itertuples(index=False, name=None)
    )
