"""Enrichment tables as enrich_model writes them, for the tests of the enrichment stages and of
`enrich.annotation`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellconcepts.enrich import statistics as enrich


def enrichment_table(rows: list[dict]) -> pd.DataFrame:
    """An enrichment table as enrich_model writes it: feature, direction, ENRICHMENT_COLUMNS.

    Each row gives feature, direction, list, term, p_value, fdr, rank and optionally overlap,
    list_size, term_size, term_group, genes; the rest are filled in."""
    defaults = {
        "overlap": 1,
        "list_size": 5,
        "term_size": 10,
        "term_group": 0,
        "background_size": 100,
        "genes": "",
    }
    table = pd.DataFrame([{**defaults, **row} for row in rows])
    table["fold_enrichment"] = table["overlap"] / (
        table["list_size"] * table["term_size"] / table["background_size"]
    )
    table = table.astype({"feature": np.int64, "list": np.int64, "rank": np.int64})
    return table[["feature", "direction", *enrich.ENRICHMENT_COLUMNS]]
