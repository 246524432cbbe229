"""The CellProfiler feature schema shared by both backends (real CellProfiler, cp-measure).

Names follow CellProfiler's ExportToSpreadsheet columns, prefixed by the object:
``Cells_Intensity_MeanIntensity_Mito``, ``Cells_Texture_Contrast_Er_3_00_256``,
``Nuclei_AreaShape_Area``. Pearson correlations name the two images in sorted order
(``Cells_Correlation_Correlation_Actin_Er``) since CellProfiler's pair order is an
implementation detail. Position measurements (centres, bounding boxes, intensity-weighted
locations) and bookkeeping columns are not features.

Slopes of the channel pairs are left out: they depend on the pair's order.
This module has no dependencies beyond the standard library: the script that writes the
shipped .cppipe imports it from CellProfiler's own environment.
"""

from __future__ import annotations

import re

OBJECTS = ("Nuclei", "Cells")
# Objects the texture, granularity, correlation and radial modules measure (cost: cells only).
DETAILED_OBJECTS = ("Cells",)

# Segmentation and measurement parameters, scaled for crops of a few cells. Both the shipped
# .cppipe (resources/cellprofiler/make_pipeline.py) and the cp-measure backend read these.
NUCLEUS_DIAMETER = (4, 24)  # pixels, min and max; nuclei outside are discarded
THRESHOLD_SMOOTHING = 1.0  # CellProfiler's "threshold smoothing scale" before Otsu
REGULARIZATION = 0.05  # propagation: weight of distance vs intensity gradient
# Otsu on log intensities for the cytoplasm channel: dim cytoplasm vs bright organelles.
CYTOPLASM_LOG_THRESHOLD = True
TEXTURE_SCALE = 3
TEXTURE_GRAY_LEVELS = 256
GRANULARITY = {
    "subsample_size": 0.5,
    "image_sample_size": 0.5,
    "element_size": 5,
    "granular_spectrum_length": 6,
}
RADIAL_BINS = 4

META_COLUMNS = ("image_id", "image_index", "object_number")

_POSITION = re.compile(
    r"(^|_)(Location_|AreaShape_Center_|AreaShape_BoundingBox|Number_Object_Number"
    r"|Parent_|Children_|AreaShape_Orientation|Correlation_Slope_)"
)


def threshold_sigma() -> float:
    """The Gaussian sigma CellProfiler derives from its threshold smoothing scale."""
    return THRESHOLD_SMOOTHING / 0.6744 / 2.0


def image_name(channel: str) -> str:
    """CellProfiler image name of a channel: ``golgi_membrane`` -> ``GolgiMembrane``."""
    return "".join(part.capitalize() for part in channel.split("_"))


def is_feature(name: str) -> bool:
    """True for a morphology feature; False for positions, orientation and bookkeeping."""
    return (
        name not in META_COLUMNS
        and not name.startswith("Metadata_")
        and not (_POSITION.search(name))
    )


def canonical_cellprofiler_name(column: str) -> str:
    """A CellProfiler per-object column in the shared schema (sorted correlation pairs)."""
    match = re.fullmatch(r"Correlation_Correlation_([A-Za-z0-9]+)_([A-Za-z0-9]+)", column)
    if match:
        first, second = sorted(match.groups())
        return f"Correlation_Correlation_{first}_{second}"
    return column


_RADIAL = re.compile(r"RadialDistribution_(\w+?)_(\d+of\d+)")
_TEXTURE = re.compile(r"([A-Za-z0-9]+)_(\d+_\d+_\d+)")


def from_cp_measure(key: str) -> str | None:
    """A cp-measure result key in CellProfiler's naming; None where CellProfiler has no twin.

    cp-measure appends ``__<channel>`` (``__<a>__<b>`` for pairs) and drops the module prefix
    of shape and texture features.
    """
    parts = key.split("__")
    if len(parts) == 1:
        return f"AreaShape_{key}"
    if len(parts) == 3:
        measure, first, second = parts
        if measure != "Correlation_Pearson":
            return None
        a, b = sorted((image_name(first), image_name(second)))
        return f"Correlation_Correlation_{a}_{b}"
    feature, channel = parts[0], image_name(parts[1])
    if feature.startswith(("Intensity_", "Location_", "Granularity_")):
        return f"{feature}_{channel}"
    radial = _RADIAL.fullmatch(feature)
    if radial:
        return f"RadialDistribution_{radial.group(1)}_{channel}_{radial.group(2)}"
    texture = _TEXTURE.fullmatch(feature)
    if texture:
        return f"Texture_{texture.group(1)}_{channel}_{texture.group(2)}"
    return None
