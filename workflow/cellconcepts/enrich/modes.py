"""How a dataset's features get genes, and which gene-set library they are tested against: the
names the config uses for them (`enrich.gene_sets`, a dataset's kind)."""

from __future__ import annotations

from cellconcepts.store.gene_sets import GO_BP_2023

__all__ = ["ENRICHR_PREFIX", "EXPRESSION", "GO_BP_2023", "SCREEN", "enrichment_mode"]

# Gene-set libraries: the offline default shipped inside pyenrichr (GO_BP_2023), or an Enrichr
# library by name.
ENRICHR_PREFIX = "enrichr:"
# scRNA features get genes by differential expression, screens by selectivity for perturbed genes.
EXPRESSION, SCREEN = "expression", "screen"


def enrichment_mode(kind: str) -> str | None:
    """How a dataset's features get genes: scRNA by differential expression ("expression"),
    screens by selectivity for the perturbed genes ("screen"); other kinds have no genes."""
    return {"scrna": EXPRESSION, "microscopy": SCREEN}.get(kind)
