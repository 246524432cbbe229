"""Gene-set library files: GMT / Enrichr text files, the offline GO BP 2023 default, and
Enrichr libraries downloaded by name.

The default library is GO Biological Process 2023 as shipped inside the PyPI package ``pyenrichr``.
It is located on disk and read as plain data; the package itself is never imported (importing it
pulls in statsmodels and friends for nothing).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cellconcepts.files import PathLike

log = logging.getLogger(__name__)

# The config's name of the offline default library (`enrich.gene_sets`).
GO_BP_2023 = "GO_Biological_Process_2023"
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


def read_gmt(path: PathLike) -> dict[str, list[str]]:
    """Read a GMT / Enrichr library: ``{term: genes}``, in file order.

    One term per line, tab-separated: term name, a description (empty in Enrichr files:
    ``term<TAB><TAB>GENE1...``; a URL or text in MSigDB files), then genes. Files without the
    description field (``term<TAB>GENE1<TAB>GENE2...``) are detected (`gmt_has_descriptions`)
    and logged, so their first gene is not lost. Empty fields are dropped, genes are
    upper-cased and de-duplicated keeping their first position, and blank lines are skipped.
    A binary or non-UTF-8 file is refused, naming it.
    """
    rows = _gmt_rows(Path(path))
    described = gmt_has_descriptions(rows)
    log.info(
        "%s: %d terms, %s description field",
        path,
        len(rows),
        "with a" if described else "detected WITHOUT a",
    )
    first_gene = 2 if described else 1
    gene_sets: dict[str, list[str]] = {}
    for line_number, fields in rows:
        term = fields[0].strip()
        if not term:
            raise ValueError(f"{path}, line {line_number}: empty term name (first field)")
        genes = [g.strip().upper() for g in fields[first_gene:] if g.strip()]
        genes = list(dict.fromkeys(genes))
        if not genes:
            raise ValueError(
                f"{path}, line {line_number}: term {term!r} has no genes; expected "
                "'term<TAB>description<TAB>gene1<TAB>gene2...'"
            )
        if term in gene_sets:
            raise ValueError(f"{path}, line {line_number}: duplicate term {term!r}")
        gene_sets[term] = genes
    return gene_sets


def _gmt_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of the non-blank lines of a text file."""
    if not path.is_file():
        raise FileNotFoundError(f"gene-set file not found: {path}")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise ValueError(f"{path}: a binary file, not a gene-set library (tab-separated text)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte {err.start}); expected a GMT file"
        ) from err
    rows = [
        (number, line.rstrip("\r\n").split("\t"))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not rows:
        raise ValueError(f"{path}: no gene sets found (the file is empty)")
    return rows


GENE_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def gmt_has_descriptions(rows: Sequence[tuple[int, Sequence[str]]]) -> bool:
    """Whether the second field of a GMT is a description (the standard) or already a gene,
    judged by the file's content:

    1. a description where any second field is empty, holds a space or a URL, repeats its term
       name, or where every term has the same second field (a placeholder such as "na");
    2. a gene where at least half the second fields are also listed as genes of some term;
    3. a description where the terms share genes with each other (so a gene in second place
       would be listed elsewhere too, and it is not);
    4. terms that share no gene give no such evidence: the second field is a gene when every
       one looks like the genes of its line (a gene symbol, in the same letter case as the
       file's genes), else a description.
    """
    rows = [(n, fields) for n, fields in rows if len(fields) > 1]
    if not rows:
        return True
    second = [fields[1].strip() for _, fields in rows]
    if any(not v or " " in v or "://" in v for v in second):
        return True
    if any(v == fields[0].strip() for v, (_, fields) in zip(second, rows, strict=True)):
        return True
    if len(second) > 1 and len(set(second)) == 1:
        return True
    terms = [{g.strip().upper() for g in fields[2:] if g.strip()} for _, fields in rows]
    genes = set().union(*terms)
    if sum(v.upper() in genes for v in second) >= 0.5 * len(second):
        return False
    counts: dict[str, int] = {}
    for term in terms:
        for gene in term:
            counts[gene] = counts.get(gene, 0) + 1
    sharing = sum(any(counts[g] > 1 for g in term) for term in terms)
    if len(terms) > 1 and sharing >= 0.5 * len(terms):
        return True
    listed = [g.strip() for _, fields in rows for g in fields[2:] if g.strip()]
    upper = sum(g == g.upper() for g in listed) >= 0.9 * len(listed) if listed else True
    return not all(GENE_SYMBOL.match(v) and (v == v.upper() or not upper) for v in second)


def download_enrichr_library(library: str) -> dict[str, list[str]]:
    """An Enrichr library by name, downloaded with gseapy (needs the internet)."""
    import gseapy  # only the online route needs it

    try:
        downloaded = gseapy.get_library(name=library, organism="Human")
    except Exception as error:  # gseapy raises plain Exceptions / requests errors offline
        raise RuntimeError(
            f"gene_sets: could not download the Enrichr library {library!r} with gseapy "
            f"({type(error).__name__}: {error}); offline, use {GO_BP_2023!r} or a GMT file"
        ) from error
    return {
        term: list(dict.fromkeys(g.strip().upper() for g in genes if g.strip()))
        for term, genes in downloaded.items()
        if any(g.strip() for g in genes)
    }


def write_gmt(gene_sets: Mapping[str, Sequence[str]], path: PathLike) -> None:
    """Write ``{term: genes}`` as an Enrichr-style GMT (empty description), atomically."""
    from cellconcepts.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for term, genes in gene_sets.items():
            handle.write("\t".join([term, "", *genes]) + "\n")
