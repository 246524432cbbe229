"""config/README.md is generated from the schema's descriptions and documents every key."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "config" / "README.md"
DEMO_CONFIG = REPO / "config" / "config.yaml"
# Per-dataset sections whose keys are those of the global section of the same name.
OVERRIDES = ("dictionary", "enrich")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_readme", REPO / "scripts" / "config_readme.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


config_readme = _load_script()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return config_readme.load_schema(SCHEMA)


@pytest.fixture(scope="module")
def documented_keys() -> set[str]:
    """The key column of every table in the committed README."""
    return set(re.findall(r"^\| `([^`]+)` \|", README.read_text(), flags=re.MULTILINE))


def test_readme_is_generated_from_schema(schema):
    assert README.read_text() == config_readme.render(schema), (
        "config/README.md differs from the schema's descriptions: "
        "run `python scripts/config_readme.py` and commit the result"
    )


def test_check_mode_reports_drift(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "README.md"
    monkeypatch.setattr(config_readme, "README_PATH", stale)
    stale.write_text("# Configuration\n\nhand-edited\n")
    assert config_readme.main(["--check"]) == 1
    assert "run `python scripts/config_readme.py`" in capsys.readouterr().err
    assert config_readme.main([]) == 0
    assert config_readme.main(["--check"]) == 0
    assert stale.read_text() == config_readme.render(config_readme.load_schema())


def _properties(
    node: Any, root: Mapping[str, Any], path: str, seen: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every property of the schema below `node` as (path, its own schema), following $refs."""
    if not isinstance(node, Mapping):
        return
    ref = node.get("$ref")
    if ref is not None and ref not in seen:
        yield from _properties(config_readme.resolve({"$ref": ref}, root), root, path, seen | {ref})
    for name, prop in node.get("properties", {}).items():
        yield f"{path}.{name}".lstrip("."), prop
        yield from _properties(prop, root, f"{path}.{name}".lstrip("."), seen)
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _properties(node["additionalProperties"], root, f"{path}.<name>", seen)
    if isinstance(node.get("items"), Mapping):
        yield from _properties(node["items"], root, f"{path}[]", seen)
    for keyword in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(keyword, []):
            yield from _properties(branch, root, path, seen)


def test_every_property_has_a_description(schema):
    properties = list(_properties(schema, schema, ""))
    for name, definition in schema["definitions"].items():
        properties.append((f"definitions.{name}", definition))
        properties += _properties(definition, schema, f"definitions.{name}")
    assert len(properties) > 200
    missing = [
        path
        for path, prop in properties
        if not isinstance(prop.get("description"), str) or not prop["description"].strip()
    ]
    assert not missing, f"properties without a description: {missing}"


def _leaf_paths(value: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of a config's leaves; a list of mappings is entered as `[]`."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _leaf_paths(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for item in value:
            yield from _leaf_paths(item, f"{path}[]")
    else:
        yield path


def _documented_as(path: str) -> list[str]:
    """The README keys that document a demo config leaf (dataset names become `<name>`; a
    per-dataset override is documented both as such and under its global section)."""
    parts = path.split(".")
    if parts[0] == "datasets":
        parts[1] = "<name>"
        if len(parts) > 3 and parts[2] in OVERRIDES:
            return [".".join(parts[:3]), ".".join(parts[2:])]
    return [".".join(parts)]


def test_every_demo_config_key_is_documented(documented_keys):
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    validate(config, str(SCHEMA))  # fills the defaults: their keys must be documented too
    expected = {key for path in _leaf_paths(config) for key in _documented_as(path)}
    assert {
        "datasets.<name>.tasks[].group_by",
        "datasets.<name>.control.values",
        "datasets.<name>.dictionary",
        "dictionary.train.steps",
        "evaluate.probe.max_train",
    } <= expected
    missing = sorted(expected - documented_keys)
    assert not missing, f"config keys missing from config/README.md: {missing}"


def test_schema_defaults_are_rendered(schema):
    text = config_readme.render(schema)
    assert "| `datasets` | (required) |" in text
    assert "| `whitening.n_components` | `null` |" in text
    assert "| `whitening.methods` | `[pca, none]` |" in text
    assert "| `datasets.<name>.tasks[].exclude` | `[]` |" in text
    assert "| `datasets.<name>.control.column` | (required) |" in text
    assert "### `datasets.<name>.microscopy`" in text
