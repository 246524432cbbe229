"""Gene-set libraries as an analysis uses them: the term x gene membership matrix of a library
restricted to the background genes (the files themselves are read by `store.gene_sets`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.files import PathLike
from cellconcepts.store.gene_sets import go_bp_2023_path, read_gmt

log = logging.getLogger(__name__)


def normalise_symbols(symbols: Iterable[object]) -> np.ndarray:
    """Gene symbols as stripped upper-case strings (GMT genes are read the same way)."""
    return np.array([str(s).strip().upper() for s in symbols], dtype=object)


@dataclass(frozen=True)
class TermMatrix:
    """A gene-set library restricted to a background: which background genes each kept term has.

    ``membership`` is a (terms, genes) 0/1 CSR matrix over ``genes`` (the background, in the
    caller's order, upper-cased); ``sizes`` counts each term's genes inside the background.
    """

    terms: np.ndarray
    genes: np.ndarray
    membership: sp.csr_matrix
    n_library_terms: int
    n_unmatched: int
    same_genes: np.ndarray  # (terms,) equal for terms with identical genes in the background

    @property
    def sizes(self) -> np.ndarray:
        return np.asarray(self.membership.sum(axis=1)).ravel().astype(np.int64)

    @property
    def n_terms(self) -> int:
        return int(self.terms.shape[0])


def term_matrix(
    gene_sets: Mapping[str, Sequence[str]],
    background: Sequence[object],
    *,
    min_size: int = 10,
    max_size: int = 500,
    where: str = "background",
) -> TermMatrix:
    """Restrict ``gene_sets`` to the ``background`` genes and keep terms with ``min_size`` to
    ``max_size`` genes *inside* the background (the right universe for the test).

    Symbols match case-insensitively. Background genes in no gene set are counted (and logged):
    they stay in the background, as genes that were measured or screened but annotated nowhere.
    """
    if min_size < 1 or max_size < min_size:
        raise ValueError(
            f"term sizes: expected 1 <= min_size <= max_size, got {min_size} and {max_size}"
        )
    genes = normalise_symbols(background)
    if genes.size == 0:
        raise ValueError(f"{where}: the background gene list is empty")
    repeated = pd.Series(genes).duplicated()
    if repeated.any():
        raise ValueError(
            f"{where}: {int(repeated.sum())} background genes repeat once upper-cased "
            f"(e.g. {sorted(set(genes[repeated.to_numpy()]))[:10]}); expected one entry per gene"
        )
    index = {gene: i for i, gene in enumerate(genes)}
    rows, cols, names, signatures = [], [], [], []
    annotated = np.zeros(genes.size, dtype=bool)
    for term, term_genes in gene_sets.items():
        hits = sorted({index[g] for g in normalise_symbols(term_genes) if g in index})
        if hits:
            annotated[hits] = True
        if min_size <= len(hits) <= max_size:
            rows.extend([len(names)] * len(hits))
            cols.extend(hits)
            names.append(term)
            signatures.append(tuple(hits))
    membership = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(names), genes.size)
    )
    n_unmatched = int((~annotated).sum())
    log.info(
        "%s: %d genes, %d of them (%.1f%%) in no gene set of the library; %d of %d terms have "
        "%d-%d background genes",
        where,
        genes.size,
        n_unmatched,
        100 * n_unmatched / genes.size,
        len(names),
        len(gene_sets),
        min_size,
        max_size,
    )
    if not names:
        raise ValueError(
            f"{where}: no gene set has between {min_size} and {max_size} of the {genes.size} "
            "background genes; lower enrich.min_term_size or check the gene symbols "
            f"(first background genes: {list(genes[:5])})"
        )
    return TermMatrix(
        terms=np.array(names, dtype=object),
        genes=genes,
        membership=membership,
        n_library_terms=len(gene_sets),
        n_unmatched=n_unmatched,
        same_genes=pd.factorize(pd.Series(signatures, dtype=object))[0].astype(np.int64),
    )


def library_terms(
    gene_sets: PathLike | None,
    background: Sequence[object],
    *,
    min_size: int,
    max_size: int,
    where: str,
) -> TermMatrix:
    """The run's gene-set library (the GMT ``gene_sets``; None: the offline GO BP 2023) as a
    `term_matrix` over ``background``."""
    library = read_gmt(gene_sets or go_bp_2023_path())
    return term_matrix(library, background, min_size=min_size, max_size=max_size, where=where)
