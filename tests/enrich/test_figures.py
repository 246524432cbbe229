"""Figures of the GO enrichment stage (cellconcepts.enrich.figures): which feature each UMAP
panel shows and its caption, on a hand-written selectivity table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellconcepts.enrich.figures import umap_panels
from cellconcepts.evaluate.selectivity import Selectivity

# labels B, NK, T over 3 features: B -> feature 2, NK -> feature 0, T -> feature 1
AVG = np.array([[0.1, 0.0, 0.5], [0.7, 0.2, 0.3], [-0.1, 0.25, 0.0]])
SEL = Selectivity(
    labels=np.array(["B", "NK", "T"]),
    n_per_label=np.array([5, 5, 5]),
    p_active=np.zeros_like(AVG),
    avg=AVG,
    max=AVG,
)
ANNOTATION = pd.DataFrame(
    {
        "feature": [0, 1, 2],
        "status": ["ok", "no_selective_genes", "ok"],
        "best_term": ["T cell activation", np.nan, "B cell receptor signaling"],
        "best_direction": ["up", np.nan, "selective"],
        "best_fdr": [0.00123, np.nan, 0.04],
    }
).set_index("feature")


def test_umap_panels_caption_the_most_selective_feature_of_each_label() -> None:
    panels = umap_panels(SEL, ANNOTATION, None, 10, "cell_type")
    assert panels == [
        (
            2,
            "feature 2 (most selective for B, avg 0.50): B cell receptor signaling "
            "(selective, FDR 0.04)",
        ),
        (0, "feature 0 (most selective for NK, avg 0.70): T cell activation (up, FDR 0.0012)"),
        (1, "feature 1 (most selective for T, avg 0.25): no gene list (no_selective_genes)"),
    ]


def test_umap_panels_given_labels_in_their_order_at_most_n() -> None:
    panels = umap_panels(SEL, ANNOTATION, ["T", "B", "NK"], 2, "cell_type")
    assert [f for f, _ in panels] == [1, 2]


def test_umap_panels_unknown_labels_raise() -> None:
    with pytest.raises(ValueError, match=r"\['Mono', 'Zeta'\] are not labels of task 'ct'"):
        umap_panels(SEL, ANNOTATION, ["Zeta", "B", "Mono"], 3, "ct")
