"""Gene-set libraries: GMT / Enrichr text files, and the offline GO BP 2023 default.

The default library is GO Biological Process 2023 as shipped inside the PyPI package ``pyenrichr``.
It is located on disk and read as plain data; the package itself is never imported (importing it
pulls in statsmodels and friends for nothing).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

GO_BP_2023_PACKAGE = "pyenrichr"
GO_BP_2023_RELATIVE = Path("data") / "GO_Biological_Process_2023"


def go_bp_2023_path() -> Path:
    """Path of ``pyenrichr/data/GO_Biological_Process_2023``, found without importing pyenrichr."""
    spec = importlib.util.find_spec(GO_BP_2023_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default gene sets (GO Biological Process 2023) ship with the PyPI package "
            f"{GO_BP_2023_PACKAGE!r}, which is not installed; run `pip install pyenrichr==1.0.2` "
            "or give the path of a GMT file instead"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GO_BP_2023_RELATIVE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"package {GO_BP_2023_PACKAGE!r} is installed at "
        f"{list(spec.submodule_search_locations)} but has no file {GO_BP_2023_RELATIVE}; "
        "expected pyenrichr 1.0.2, which ships GO_Biological_Process_2023"
    )


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT / Enrichr library: ``{term: genes}``, in file order.

    One term per line, tab-separated: term name, a description (may be empty, as in Enrichr
    files: ``term<TAB><TAB>GENE1<TAB>GENE2...``), then genes. Empty fields are dropped, genes are
    upper-cased and de-duplicated keeping their first position, and blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gene-set file not found: {path}")
    gene_sets: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            term = fields[0].strip()
            if not term:
                raise ValueError(f"{path}, line {line_number}: empty term name (first field)")
            genes = [g.strip().upper() for g in fields[2:] if g.strip()]
            genes = list(dict.fromkeys(genes))
            if not genes:
                raise ValueError(
                    f"{path}, line {line_number}: term {term!r} has no genes; expected "
                    "'term<TAB>description<TAB>gene1<TAB>gene2...'"
                )
            if term in gene_sets:
                raise ValueError(f"{path}, line {line_number}: duplicate term {term!r}")
            gene_sets[term] = genes
    if not gene_sets:
        raise ValueError(f"{path}: no gene sets found (the file is empty)")
    log.debug("read %d gene sets from %s", len(gene_sets), path)
    return gene_sets
