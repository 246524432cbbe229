"""The workflow's configuration: per-dataset settings and model variants (`settings`), and the
checks a JSON schema cannot express (`checks`).

The Snakefile validates the config against `workflow/schemas/config.schema.yaml` first
(types, unknown keys, defaults), then calls `check_config`.
"""

from cellconcepts.config.checks import (
    REPOSITORY,
    check_config,
    check_readable,
    check_unique_keys,
    embedding_dim,
    resolve_shipped,
)
from cellconcepts.config.settings import (
    TRAIN_KEYS,
    ConfigError,
    deep_merge,
    dictionary_settings,
    enrichment_settings,
    enrichment_variants,
    input_source,
    training_settings,
    variants,
)
from cellconcepts.enrich.modes import (
    ENRICHR_PREFIX,
    EXPRESSION,
    GO_BP_2023,
    SCREEN,
    enrichment_mode,
)
from cellconcepts.variant import Variant

__all__ = [
    "ENRICHR_PREFIX",
    "EXPRESSION",
    "GO_BP_2023",
    "REPOSITORY",
    "SCREEN",
    "TRAIN_KEYS",
    "ConfigError",
    "Variant",
    "check_config",
    "check_readable",
    "check_unique_keys",
    "deep_merge",
    "dictionary_settings",
    "embedding_dim",
    "enrichment_mode",
    "enrichment_settings",
    "enrichment_variants",
    "input_source",
    "resolve_shipped",
    "training_settings",
    "variants",
]
