"""How a rule's job runs, as distinct from what it computes: the rules that may use a GPU and
each rule's execution settings (device, batch sizes, log and checkpoint cadence, the CellProfiler
executable). Stages are named as their rules, so rule names live here, not in `config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellconcepts.config import dictionary_settings

# Rules whose stage can run on a GPU: `execution_settings` gives them a `device`. Each declares
# `gpu=1` in its resources, the one place a GPU is requested: the local profile limits how many
# run at once and the SLURM executor sends them to a partition that has GPUs.
GPU_RULES = frozenset(
    {
        "train_expression_model",
        "train_mae",
        "embed_images",
        "heatmap_patch_tokens",
        "train_dictionary",
        "encode_tokens",
    }
)


def execution_settings(config: Mapping[str, Any], rule: str, dataset: str | None) -> dict[str, Any]:
    """Config keys that change how a rule's job runs but never what it computes: the device,
    inference batch sizes, logging and checkpoint cadence, the CellProfiler executable.

    Stages read them from the config at run time (`cellconcepts.stages.arguments`) instead of
    the rule's params, so that editing them reruns nothing.
    """
    if dataset is None:
        return {}
    section = config["datasets"][dataset]
    train = dictionary_settings(config, dataset)["train"]
    microscopy = section.get("microscopy", {})
    images = {"device": microscopy.get("device"), "batch_size": microscopy.get("batch_size")}
    by_rule = {
        "train_expression_model": {"device": train["device"]},
        "train_dictionary": {
            "device": train["device"],
            "log_every": train["log_every"],
            "checkpoint_every": train["checkpoint_every"],
        },
        "encode_tokens": {"device": train["device"], "batch_size": config["encode"]["batch_size"]},
        "train_mae": {"device": microscopy.get("device")},
        "embed_images": images,
        "heatmap_patch_tokens": images,
        "cellprofiler_measure": {
            "executable": microscopy.get("cellprofiler", {}).get("executable"),
        },
    }
    return dict(by_rule.get(rule, {}))
