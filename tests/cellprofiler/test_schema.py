"""The shared CellProfiler feature schema: cp-measure keys and CellProfiler columns agree."""

from __future__ import annotations

import pytest

from cellconcepts.cellprofiler import schema as cpf


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Area", "AreaShape_Area"),
        ("Zernike_2_2", "AreaShape_Zernike_2_2"),
        ("Intensity_MeanIntensity__golgi_membrane", "Intensity_MeanIntensity_GolgiMembrane"),
        ("Contrast_3_01_256__er", "Texture_Contrast_Er_3_01_256"),
        ("InfoMeas1_3_00_256__rna", "Texture_InfoMeas1_Rna_3_00_256"),
        ("Granularity_7__mitochondria", "Granularity_7_Mitochondria"),
        ("RadialDistribution_FracAtD_2of4__actin", "RadialDistribution_FracAtD_Actin_2of4"),
        ("RadialDistribution_RadialCV_4of4__nucleus", "RadialDistribution_RadialCV_Nucleus_4of4"),
        ("Correlation_Pearson__rna__er", "Correlation_Correlation_Er_Rna"),
        ("Correlation_Slope__rna__er", None),
    ],
)
def test_cp_measure_keys_map_to_cellprofiler_names(key, expected):
    assert cpf.from_cp_measure(key) == expected


def test_correlation_pairs_are_sorted_in_both_backends():
    assert cpf.canonical_cellprofiler_name("Correlation_Correlation_Rna_Er") == (
        "Correlation_Correlation_Er_Rna"
    )
    assert cpf.canonical_cellprofiler_name("Intensity_MeanIntensity_Er") == (
        "Intensity_MeanIntensity_Er"
    )


@pytest.mark.parametrize(
    ("name", "is_feature"),
    [
        ("Cells_AreaShape_Area", True),
        ("Cells_Intensity_MeanIntensity_Er", True),
        ("Cells_AreaShape_Center_X", False),
        ("Cells_AreaShape_BoundingBoxMinimum_Y", False),
        ("Cells_AreaShape_Orientation", False),
        ("Nuclei_Location_CenterMassIntensity_X_Er", False),
        ("Location_Center_X", False),
        ("Metadata_ImageID", False),
        ("Parent_Nuclei", False),
        ("image_id", False),
    ],
)
def test_positions_and_bookkeeping_are_not_features(name, is_feature):
    assert cpf.is_feature(name) is is_feature


def test_image_names():
    assert cpf.image_name("golgi_membrane") == "GolgiMembrane"
    assert cpf.image_name("nucleus") == "Nucleus"


def test_shipped_pipeline_uses_the_shared_parameters():
    """resources/cellprofiler/cellpainting.cppipe was written from these constants; editing one
    side without regenerating the other makes the backends diverge."""
    from pathlib import Path

    text = (
        Path(__file__).resolve().parents[2] / "resources/cellprofiler/cellpainting.cppipe"
    ).read_text()
    low, high = cpf.NUCLEUS_DIAMETER
    expected = [
        f"Typical diameter of objects, in pixel units (Min,Max):{low},{high}",
        f"Regularization factor:{cpf.REGULARIZATION}",
        f"Threshold smoothing scale:{cpf.THRESHOLD_SMOOTHING}",
        f"Enter how many gray levels to measure the texture at:{cpf.TEXTURE_GRAY_LEVELS}",
        f"Texture scale to measure:{cpf.TEXTURE_SCALE}",
        f"Subsampling factor for granularity measurements:{cpf.GRANULARITY['subsample_size']}",
        f"Subsampling factor for background reduction:{cpf.GRANULARITY['image_sample_size']}",
        f"Radius of structuring element:{cpf.GRANULARITY['element_size']}",
        f"Range of the granular spectrum:{cpf.GRANULARITY['granular_spectrum_length']}",
        f"Number of bins:{cpf.RADIAL_BINS}",
        "Calculate the advanced features?:No",
        "Log transform before thresholding?:Yes",
    ]
    for line in expected:
        assert line in text, line
