"""The package's import graph is the one docs/architecture.md states, and keeps its rules: no
import of `stages` or `plan` from below, `config` only where stated, no cycle."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter

from testkit import REPO

PACKAGE = REPO / "workflow" / "cellconcepts"
DOC = REPO / "docs" / "architecture.md"
MAY_IMPORT_CONFIG = {"stages", "plan", "config"}


def package_imports() -> dict[str, set[str]]:
    """Top-level part (subpackage or module) -> the other parts it imports, from the source."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                names = module.split(".")
                if names[0] == "cellconcepts" and len(names) > 1 and names[1] != part:
                    graph[part].add(names[1])
    return dict(graph)


def documented_imports() -> dict[str, set[str]]:
    text = DOC.read_text()
    table = text[text.index("<!-- imports:") : text.index("<!-- end imports -->")]
    rows = re.findall(r"^\| (\w+) \| ([\w, ]+) \|$", table, flags=re.M)
    return {part: {n.strip() for n in imports.split(",")} for part, imports in rows}


def test_the_documented_graph_is_the_code():
    code, doc = package_imports(), documented_imports()
    assert code == doc, (
        "docs/architecture.md's import table differs from the code; the code's is:\n"
        + "\n".join(f"| {p} | {', '.join(sorted(code[p]))} |" for p in sorted(code))
    )


def test_nothing_imports_stages_or_plan_from_below():
    code = package_imports()
    assert not [p for p, imports in code.items() if "stages" in imports and p != "stages"]
    assert not [p for p, imports in code.items() if "plan" in imports]


def test_config_is_imported_only_where_stated():
    offenders = [p for p, imports in package_imports().items() if "config" in imports]
    assert set(offenders) <= MAY_IMPORT_CONFIG, offenders


def test_the_graph_has_no_cycle():
    try:
        order = list(TopologicalSorter(package_imports()).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle: {err.args[1]}") from None
    assert order.index("variant") < order.index("evaluate") < order.index("stages")
