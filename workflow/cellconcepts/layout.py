"""Where every result lives under the results folder: the one place a result path is spelled.

`ResultsLayout(root)` gives each file as a function of (dataset, variant, name). Its arguments
default to Snakemake wildcards (``{dataset}``, the model name `Variant.TEMPLATE`, ...), so the
rules take their path templates from it, and the input functions (`cellconcepts.plan`) and the
code that reads a finished run (`report.results_doc`) the same paths filled in. The
stores' own file names (tokens.npy, obs.parquet, ...) are `store.layout`'s.

    results/<dataset>/
        validation.json  headline.{csv,md,tex}
        tokens/ whitening/ embedding/ raw/ images/ ground_truth/
        models/<variant>/   checkpoints/<variant>/   enrich/<variant>/
        heatmaps/ cellprofiler/ tables/ figures/ browser/ logs/ benchmarks/
    results/gene_sets/  results/paper_map.{md,csv}  results/logs/  results/benchmarks/
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cellconcepts.store import layout as store
from cellconcepts.variant import Variant

DATASET = "{dataset}"
VARIANT = Variant.TEMPLATE
WHITENING = "{whitening}"

# The folders of a dataset's results, by what they hold.
FOLDERS = (
    "tokens",
    "whitening",
    "embedding",
    "raw",
    "images",
    "ground_truth",
    "models",
    "checkpoints",
    "enrich",
    "heatmaps",
    "cellprofiler",
    "tables",
    "figures",
    "browser",
    "logs",
    "benchmarks",
)
# Files directly in a dataset's folder.
DATASET_FILES = ("validation.json", "headline.csv", "headline.md", "headline.tex")
# Folders and files directly in the results folder.
RUN_ENTRIES = ("gene_sets", "logs", "benchmarks", "paper_map.md", "paper_map.csv")


class ResultsLayout:
    """Every result path under ``root``, as a Snakemake template (the default wildcards) or
    filled in."""

    def __init__(self, root: str | Path) -> None:
        # One spelling of every path ("./results/" and "results" are the same folder): Snakemake
        # matches a job's inputs to other jobs' outputs as strings.
        self.root = os.path.normpath(root)

    # ------------------------------------------------------------------ a dataset's folders

    def dataset(self, dataset: str = DATASET) -> str:
        return f"{self.root}/{dataset}"

    def _in(self, folder: str, name: str, dataset: str) -> str:
        return (
            f"{self.dataset(dataset)}/{folder}/{name}"
            if name
            else f"{self.dataset(dataset)}/{folder}"
        )

    def dataset_file(self, relative: str, dataset: str = DATASET) -> str:
        """A file named by its path inside the dataset's folder (e.g. ``tables/claim.csv``, as
        the paper map names what it reads)."""
        return f"{self.dataset(dataset)}/{relative}"

    def validation(self, dataset: str = DATASET) -> str:
        """What validate_dataset found; the first jobs that read the token store wait for it."""
        return f"{self.dataset(dataset)}/validation.json"

    def headline(self, dataset: str = DATASET) -> str:
        """The headline table's prefix (.csv, .md, .tex)."""
        return f"{self.dataset(dataset)}/headline"

    def tokens(self, dataset: str = DATASET) -> str:
        return self._in("tokens", store.TOKENS, dataset)

    def token_obs(self, dataset: str = DATASET) -> str:
        return self._in("tokens", store.TOKEN_OBS, dataset)

    def whitening(self, dataset: str = DATASET, whitening: str = WHITENING) -> str:
        return self._in("whitening", f"{whitening}.npz", dataset)

    def embedding(self, name: str = "", dataset: str = DATASET) -> str:
        """What made the tokens: a trained encoder or autoencoder, its history, the UMAP."""
        return self._in("embedding", name, dataset)

    def encoder(self, name: str = "", dataset: str = DATASET) -> str:
        """The image encoder the workflow trains, saved Hugging Face style (``name`` a file of
        it: `store.layout.ENCODER_CONFIG`, `ENCODER_WEIGHTS`)."""
        return self.embedding(f"encoder/{name}" if name else "encoder", dataset)

    def raw(self, name: str, dataset: str = DATASET) -> str:
        """Scores of the raw embedding: the references the dictionaries are compared with."""
        return self._in("raw", name, dataset)

    def images(self, name: str = "", dataset: str = DATASET) -> str:
        """The image store the workflow makes (simulated or imported); ``name`` a file of it."""
        return self._in("images", name, dataset)

    def ground_truth(self, name: str, dataset: str = DATASET) -> str:
        """The synthetic superposition's atoms, codes and nuisance."""
        return self._in("ground_truth", name, dataset)

    def heatmaps(self, name: str, dataset: str = DATASET) -> str:
        return self._in("heatmaps", name, dataset)

    def cellprofiler(self, name: str, dataset: str = DATASET) -> str:
        """The CellProfiler baseline's profiles, codes and per-chunk files."""
        return self._in("cellprofiler", name, dataset)

    def cellprofiler_chunk(
        self, kind: str, suffix: str, dataset: str = DATASET, chunk: int | str = "{chunk}"
    ) -> str:
        """One chunk's measured cells, masks or timing (``kind``), e.g. chunks/cells_0.parquet."""
        return self.cellprofiler(f"chunks/{kind}_{chunk}{suffix}", dataset)

    def cellprofiler_work(self, chunk: int | str, dataset: str = DATASET) -> str:
        """Where the real CellProfiler writes one chunk's own files."""
        return self.cellprofiler(f"work/chunk_{chunk}", dataset)

    def table(self, name: str, dataset: str = DATASET) -> str:
        """A table (``name`` with its extension, or a prefix for .csv / .md / .tex)."""
        return self._in("tables", name, dataset)

    def figure(self, name: str, dataset: str = DATASET) -> str:
        """A figure (``name`` with its extension, or a prefix for .png / .pdf)."""
        return self._in("figures", name, dataset)

    def browser(self, dataset: str = DATASET) -> str:
        return self._in("browser", "", dataset)

    def log(self, job: str, dataset: str = DATASET) -> str:
        return self._in("logs", f"{job}.log", dataset)

    def benchmark(self, job: str, dataset: str = DATASET) -> str:
        return self._in("benchmarks", f"{job}.tsv", dataset)

    # ------------------------------------------------------------------ one model's files

    def model(self, name: str = "", dataset: str = DATASET, variant: str = VARIANT) -> str:
        """A file of one trained model (``name`` empty: its folder)."""
        return self._in("models", f"{variant}/{name}" if name else variant, dataset)

    def models(self, name: str, dataset: str, variants: Iterable[str | Variant]) -> list[str]:
        """One model file over several models, in their order."""
        return [self.model(name, dataset, getattr(v, "name", v)) for v in variants]

    def checkpoints(self, name: str = VARIANT, dataset: str = DATASET) -> str:
        """Training checkpoints (a model's folder, by default): outside the declared outputs,
        so that a killed job resumes."""
        return self._in("checkpoints", name, dataset)

    def enrich(self, name: str = "", dataset: str = DATASET, variant: str = VARIANT) -> str:
        """A file of one model's GO enrichment (``name`` empty: its folder)."""
        return self._in("enrich", f"{variant}/{name}" if name else variant, dataset)

    def model_log(self, job: str, dataset: str = DATASET, variant: str = VARIANT) -> str:
        return self.log(f"{job}_{variant}", dataset)

    def model_benchmark(self, job: str, dataset: str = DATASET, variant: str = VARIANT) -> str:
        return self.benchmark(f"{job}_{variant}", dataset)

    # ------------------------------------------------------------------ the whole run

    def gene_sets(self, library: str = "{library}", suffix: str = ".gmt") -> str:
        """An Enrichr library downloaded once for every dataset (``suffix`` .gmt, .log, ...)."""
        return f"{self.root}/gene_sets/{library}{suffix}"

    def paper_map(self, suffix: str) -> str:
        """The map from the paper's figures and tables to this run's files (.md, .csv)."""
        return f"{self.root}/paper_map{suffix}"

    def run_log(self, job: str) -> str:
        return f"{self.root}/logs/{job}.log"

    def run_benchmark(self, job: str) -> str:
        return f"{self.root}/benchmarks/{job}.tsv"
