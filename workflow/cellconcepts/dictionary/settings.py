"""Each dictionary method's settings as one typed object: built from the validated config, given
whole to the model's constructor, saved in the model's meta and read back by `load_model`.

A field's default is the config schema's (`schema_default`): the schema is where defaults live,
and tests/test_defaults.py checks every field against it. Training's own settings are
`training.TrainConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from cellconcepts.defaults import schema_default


def _default(key: str) -> Any:
    return schema_default(f"dictionary.{key}")


@dataclass(frozen=True)
class ICFLSettings:
    """ICFL's own settings (`dictionary.icfl`, and `dictionary.learn_b_pre`)."""

    atoms_per_iteration: int = _default("icfl.atoms_per_iteration")
    selection: str = _default("icfl.selection")
    learn_b_pre: bool = _default("learn_b_pre")
    resample_every: int = _default("icfl.resample_every")
    resample_threshold: float = _default("icfl.resample_threshold")

    method: ClassVar[str] = "icfl"


@dataclass(frozen=True)
class TopKSettings:
    """The TopK SAE's own settings (`dictionary.topk`, and `dictionary.learn_b_pre`)."""

    aux_k: int | None = _default("topk.aux_k")
    aux_coef: float = _default("topk.aux_coef")
    learn_b_pre: bool = _default("learn_b_pre")
    resample_every: int = _default("topk.resample_every")
    resample_threshold: float = _default("topk.resample_threshold")

    method: ClassVar[str] = "topk"


MethodSettings = ICFLSettings | TopKSettings
SETTINGS: dict[str, type[ICFLSettings] | type[TopKSettings]] = {
    "icfl": ICFLSettings,
    "topk": TopKSettings,
}
# Keys read from the dictionary section itself rather than the method's own subsection.
SHARED_KEYS = ("learn_b_pre",)


def settings_class(method: str) -> type[ICFLSettings] | type[TopKSettings]:
    try:
        return SETTINGS[method]
    except KeyError:
        raise ValueError(f"method must be one of {list(SETTINGS)}, got {method!r}") from None


def own_keys(method: str) -> tuple[str, ...]:
    """The keys of ``dictionary.<method>`` that the method's settings read."""
    return tuple(f.name for f in fields(settings_class(method)) if f.name not in SHARED_KEYS)


def from_config(method: str, dictionary: Mapping[str, Any]) -> MethodSettings:
    """A method's settings from a dataset's merged ``dictionary`` section (or the params of
    `config.training_settings`, which have the same keys)."""
    own = dictionary[method]
    values = {key: dictionary[key] for key in SHARED_KEYS}
    values.update({key: own[key] for key in own_keys(method)})
    return settings_class(method)(**values)


def from_meta(method: str, meta: Mapping[str, Any]) -> MethodSettings:
    """A method's settings from a saved model's meta; a setting an older model lacks takes the
    schema's default."""
    cls = settings_class(method)
    return cls(**{f.name: meta[f.name] for f in fields(cls) if f.name in meta})


def with_options(method: str, **options: Any) -> MethodSettings:
    """The schema's settings of ``method`` with ``options`` changed (for code and tests that
    build a model by hand); an unknown option is a TypeError naming it."""
    cls = settings_class(method)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {unknown}; it has {sorted(known)}")
    return cls(**options)


def as_meta(settings: MethodSettings) -> dict[str, Any]:
    """The settings as plain values, for a model's meta."""
    return asdict(settings)
