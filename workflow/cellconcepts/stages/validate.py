"""Stage of workflow/rules/validate.smk: a dataset checked once, before anything expensive."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cellconcepts.files import PathLike, atomic_path
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import TokenStore

log = logging.getLogger(__name__)


def validate_dataset(
    *,
    tokens: PathLike,
    obs: PathLike,
    validation: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    min_label_size: int,
    probe: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    enrichment: Mapping[str, Any] | None = None,
    gene_sets: PathLike | None = None,
    expression: PathLike | None = None,
    source: str | None = None,
    whitening: Mapping[str, Any] | None = None,
    sparsity: Sequence[int] = (),
) -> None:
    """Check the token store against the dataset's tasks, the whitening and the sparsity
    (`store.validate`; ``source`` names the user's input in every message) and, for datasets
    with GO enrichment (``enrichment``: mode, gene column, source, controls, term sizes, label
    task and labels), that the gene sets parse and overlap the background and that the labels
    exist; write the report (with its warnings) as
    JSON. Warnings also go to the job's standard output, where the run shows them."""
    from cellconcepts.evaluate.probing import ProbeSettings
    from cellconcepts.store.validate import check_enrichment_labels
    from cellconcepts.store.validate import validate_dataset as validate

    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    report, warnings = validate(
        store,
        tasks,
        min_label_size,
        ProbeSettings(**probe),
        resample_unit,
        source=source,
        whitening=whitening,
        sparsity=sparsity,
    )
    if enrichment is not None:
        if enrichment["labels"]:
            try:
                check_enrichment_labels(
                    store.obs, enrichment["label_task"], enrichment["labels"], min_label_size
                )
            except ValueError as err:
                raise ValueError(f"{source or obs}: {err}") from err
        report["gene_sets"] = _check_gene_sets(store, enrichment, gene_sets, source)
    report["warnings"] = warnings
    for warning in warnings:
        log.warning(warning)
        print(f"WARNING (validate_dataset): {warning}", file=sys.stdout, flush=True)
    with atomic_path(validation) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log.info("%s: %d tokens of dimension %d pass", obs, report["n_tokens"], report["dim"])


def _check_gene_sets(
    store: TokenStore,
    enrichment: Mapping[str, Any],
    gene_sets: PathLike | None,
    source: str | None = None,
) -> dict[str, Any]:
    """The gene sets parse and enough of their genes are in the background."""
    from cellconcepts.enrich import genesets
    from cellconcepts.enrich.gene_lists import screen_background
    from cellconcepts.enrich.modes import EXPRESSION
    from cellconcepts.sources.expression import aligned_expression
    from cellconcepts.store.gene_sets import go_bp_2023_path, read_gmt

    path = Path(gene_sets) if gene_sets else go_bp_2023_path()
    library = read_gmt(path)
    if enrichment["mode"] == EXPRESSION:
        _, background = aligned_expression(enrichment["source"], enrichment["matrix"], store.obs)
    else:
        column = enrichment["gene_column"]
        if column not in store.obs.columns:
            raise ValueError(
                f"{source or store.files.obs}: no column {column!r} (enrich.screen.gene_column, "
                f"the perturbed gene of each row); columns: {list(store.obs.columns)}"
            )
        background = screen_background(store.obs, column, enrichment["control"])
    matrix = genesets.term_matrix(
        library,
        background,
        min_size=enrichment["min_term_size"],
        max_size=enrichment["max_term_size"],
        where=f"{path} over the background of {source or store.files.obs}",
    )
    return {
        "file": str(path),
        "terms": len(library),
        "terms_tested": matrix.n_terms,
        "background_genes": int(matrix.genes.size),
        "background_genes_in_no_term": matrix.n_unmatched,
    }
