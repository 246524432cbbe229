"""A trained model's identity: method, whitening, sparsity and seed, and its name.

The one place that spells a model's name (``icfl_pca_k8_seed0``): the rules' wildcards and their
constraints, the config's variant lists, the models' methods and every table's ``variant``
column are made and read here. The config schema's enums of methods and whitenings are checked
against `METHODS` and `WHITENINGS` (tests/test_variant.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

METHODS = ("icfl", "topk")
WHITENINGS = ("pca", "none")

# Snakemake's wildcard regex per field of the name: `Variant.TEMPLATE`'s fields, in order.
FIELD_PATTERNS = {
    "method": "|".join(METHODS),
    "whitening": "|".join(WHITENINGS),
    "sparsity": r"\d+",
    "seed": r"\d+",
}


class VariantError(ValueError):
    """A model name that is not of the form `Variant.TEMPLATE` describes."""


def _regex(template: str, groups: bool) -> str:
    """``template`` as a regex: each ``{field}`` its `FIELD_PATTERNS` entry (a named group when
    ``groups``), the rest literal."""
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        else:
            body = FIELD_PATTERNS[part]
            out.append(f"(?P<{part}>{body})" if groups else f"(?:{body})")
    return "".join(out)


@dataclass(frozen=True)
class Variant:
    """One trained model: (method, whitening, sparsity, seed) on one dataset."""

    method: str
    whitening: str
    sparsity: int
    seed: int

    # A model's name, and the Snakemake wildcard pattern of its folder.
    TEMPLATE: ClassVar[str] = "{method}_{whitening}_k{sparsity}_seed{seed}"
    # The same without the seed: the setting that seeds repeat.
    SETTING_TEMPLATE: ClassVar[str] = "{method}_{whitening}_k{sparsity}"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise VariantError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.whitening not in WHITENINGS:
            raise VariantError(
                f"whitening must be one of {list(WHITENINGS)}, got {self.whitening!r}"
            )

    @property
    def name(self) -> str:
        return self.TEMPLATE.format(**asdict(self))

    @property
    def setting(self) -> str:
        """The name without its seed (``icfl_pca_k8``): what the seeds of a setting share."""
        return self.SETTING_TEMPLATE.format(**asdict(self))

    @classmethod
    def pattern(cls) -> re.Pattern[str]:
        """A full model name, with one named group per field."""
        return re.compile(f"^{_regex(cls.TEMPLATE, groups=True)}$")

    @classmethod
    def parse(cls, name: str) -> Variant:
        """The variant a model name spells; VariantError names the expected form."""
        match = cls.pattern().match(str(name))
        if match is None:
            expected = cls.TEMPLATE.format(
                method="<" + "|".join(METHODS) + ">",
                whitening="<" + "|".join(WHITENINGS) + ">",
                sparsity="<sparsity>",
                seed="<seed>",
            )
            raise VariantError(f"model variant {name!r} is not of the form {expected!r}")
        return cls(
            method=match["method"],
            whitening=match["whitening"],
            sparsity=int(match["sparsity"]),
            seed=int(match["seed"]),
        )

    @classmethod
    def from_wildcards(cls, wildcards: Any) -> Variant:
        """The variant of a Snakemake job whose wildcards hold the fields of `TEMPLATE`."""
        return cls(
            method=wildcards.method,
            whitening=wildcards.whitening,
            sparsity=int(wildcards.sparsity),
            seed=int(wildcards.seed),
        )

    @staticmethod
    def wildcard_constraints() -> dict[str, str]:
        """Snakemake's ``wildcard_constraints`` for the fields of a model's name."""
        return dict(FIELD_PATTERNS)

    @classmethod
    def parse_column(cls, names: Any) -> Mapping[str, list[Any]]:
        """The fields of a column of model names, as lists (for a DataFrame's columns)."""
        parsed = [cls.parse(n) for n in names]
        return {f: [getattr(v, f) for v in parsed] for f in FIELD_PATTERNS}
