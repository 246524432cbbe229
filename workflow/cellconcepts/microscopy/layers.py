"""Which layer of the encoder gives the tokens: probe every extracted layer on every task and
pick the one with the best balanced test accuracy on one task (the paper chose its layers this
way, on the functional gene-group task)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cellconcepts.evaluate.probing import ProbeSettings, probe_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerChoice:
    """The chosen layer, how it was chosen, and the best layer on the choosing task."""

    layer: int
    selected_by: str
    bta: float
    best_layer: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "selected_by": self.selected_by,
            "bta": self.bta,
            "best_layer": self.best_layer,
        }


def probe_layers(
    tokens: Mapping[int, np.ndarray],
    obs: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    probe: ProbeSettings,
    min_label_size: int = 1,
) -> pd.DataFrame:
    """Probe BTA of each layer's tokens on every task (columns task, layer, bta, sizes)."""
    named = {str(n): values for n, values in tokens.items()}
    rows = probe_tasks(named, obs, tasks, probe, min_label_size)
    probes = pd.DataFrame(rows).rename(columns={"representation": "layer"})
    probes["layer"] = probes["layer"].astype(int)
    return probes


def choose_layer(probes: pd.DataFrame, layer: int | str, layer_task: str) -> LayerChoice:
    """ "best": the layer with the highest BTA on ``layer_task`` (the earliest wins ties);
    a number: that layer."""
    on_task = probes[probes.task == layer_task].sort_values("layer")
    if on_task.empty:
        raise ValueError(f"microscopy.layer_task: no probe results for task {layer_task!r}")
    best_layer = int(on_task.loc[on_task["bta"].idxmax(), "layer"])
    chosen = best_layer if layer == "best" else int(layer)
    return LayerChoice(
        layer=chosen,
        selected_by="best BTA on " + layer_task if layer == "best" else "config",
        bta=float(on_task.set_index("layer").loc[chosen, "bta"]),
        best_layer=best_layer,
    )
