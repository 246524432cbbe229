"""The config schema's defaults, for code that needs one: each default lives in the schema
(`workflow/schemas/config.schema.yaml`) only, and a keyword default in the package that stands
for a config key reads it from there (``atoms_per_iteration: int = schema_default(...)``), so the
two cannot disagree. tests/test_defaults.py checks every such default against the schema.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

# The package is used from the checkout (the workflow puts workflow/ on PYTHONPATH; pip installs
# it in editable mode), beside the schema.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@functools.cache
def _schema() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SCHEMA_PATH.read_text(), Loader=loader)


def _followed(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its local ``$ref`` (``#/definitions/<name>``) followed."""
    while "$ref" in node:
        node = _schema()["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _child(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The subschema of key ``name`` of an object schema (``*``: any key of a mapping, e.g. a
    dataset), searching the branches of ``oneOf`` / ``anyOf``; None if it has no such key."""
    node = _followed(node)
    found = (
        node.get("additionalProperties") if name == "*" else node.get("properties", {}).get(name)
    )
    if isinstance(found, dict):
        return found
    for branch in (*node.get("oneOf", ()), *node.get("anyOf", ())):
        found = _child(branch, name)
        if found is not None:
            return found
    return None


def schema_node(key: str) -> dict[str, Any] | None:
    """The subschema of a config key given as a dotted path, e.g.
    ``"dictionary.icfl.atoms_per_iteration"`` (``*`` for any dataset: ``"datasets.*.split.seed"``);
    None when the schema has no such key."""
    node: dict[str, Any] | None = _schema()
    for name in key.split("."):
        node = _child(node, name)
        if node is None:
            return None
    return node


def schema_default(key: str) -> Any:
    """The schema's default of a config key (a dotted path, as `schema_node` takes). Raises
    KeyError when the schema has no such key or no default for it."""
    node = schema_node(key)
    if node is None:
        raise KeyError(f"{key}: not a key of {SCHEMA_PATH}")
    for candidate in (node, _followed(node)):
        if "default" in candidate:
            return copy.deepcopy(candidate["default"])
    raise KeyError(f"{key}: {SCHEMA_PATH} gives it no default")
