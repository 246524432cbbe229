"""Report figures: what they draw, read back from the matplotlib objects."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cellconcepts.report import figures


def test_bta_interval_is_196_binomial_standard_errors() -> None:
    got = figures.bta_interval(np.array([0.5, 0.9, 1.0]), 100)
    np.testing.assert_allclose(got, [1.96 * 0.05, 1.96 * 0.03, 0.0])


def test_sparsity_figure_draws_bta_with_intervals(tmp_path: Path, monkeypatch) -> None:
    rows = [
        {"method": m, "whitening": w, "sparsity": k, "bta_cells": b, "recon_cosine": 0.8}
        for m, w, b in (("icfl", "pca", 0.6), ("topk", "none", 0.62))
        for k in (4, 8)
    ]
    headline = pd.DataFrame([*rows, {"method": "raw", "bta_cells": 0.7}])
    drawn = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **_: drawn.setdefault("f", fig))
    figures.plot_sparsity(headline, ["cells"], tmp_path / "s.png", title="t", n_test={"cells": 140})
    bta_axes, cosine_axes = drawn["f"].axes
    bars = [c for c in bta_axes.containers if c.has_yerr]
    assert len(bars) == 2
    segments = bars[0].lines[2][0].get_segments()
    half = (segments[0][1][1] - segments[0][0][1]) / 2
    assert half == pytest.approx(1.96 * np.sqrt(0.6 * 0.4 / 140))
    assert not [c for c in cosine_axes.containers if c.has_yerr]
    assert bta_axes.get_ylim() == (0, 1)
    plt.close(drawn["f"])
