"""Write the shipped CellProfiler pipeline (cellpainting.cppipe) with CellProfiler's own API.

Run with the CellProfiler environment's python (scripts/install_cellprofiler.sh):

    .cellprofiler-venv/bin/python resources/cellprofiler/make_pipeline.py \
        resources/cellprofiler/cellpainting.cppipe [--channels nucleus,er,rna,...]

The pipeline: LoadData (one row per image, one column per channel) -> nuclei (Otsu, shape
declumping) -> cells (propagation from nuclei on the cytoplasm channel) -> per-object
intensity, size/shape, texture, granularity, Pearson correlation between channels and radial
distribution -> label images of nuclei and cells (16-bit TIFF) -> ExportToSpreadsheet.
Parameters are scaled for crops of a few cells (nucleus diameter 4-24 px); edit them here,
not in the .cppipe, so the two backends stay in step (see cellconcepts.cellprofiler.cp_measure).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cellprofiler_core.preferences as prefs

prefs.set_headless()

from cellprofiler.modules.convertobjectstoimage import ConvertObjectsToImage  # noqa: E402
from cellprofiler.modules.exporttospreadsheet import ExportToSpreadsheet  # noqa: E402
from cellprofiler.modules.identifyprimaryobjects import IdentifyPrimaryObjects  # noqa: E402
from cellprofiler.modules.identifysecondaryobjects import IdentifySecondaryObjects  # noqa: E402
from cellprofiler.modules.measurecolocalization import MeasureColocalization  # noqa: E402
from cellprofiler.modules.measuregranularity import MeasureGranularity  # noqa: E402
from cellprofiler.modules.measureobjectintensity import MeasureObjectIntensity  # noqa: E402
from cellprofiler.modules.measureobjectintensitydistribution import (  # noqa: E402
    MeasureObjectIntensityDistribution,
)
from cellprofiler.modules.measureobjectsizeshape import MeasureObjectSizeShape  # noqa: E402
from cellprofiler.modules.measuretexture import MeasureTexture  # noqa: E402
from cellprofiler.modules.saveimages import SaveImages  # noqa: E402
from cellprofiler_core.modules.loaddata import LoadData  # noqa: E402
from cellprofiler_core.pipeline import Pipeline  # noqa: E402

# The parameters both backends share: cellconcepts.cellprofiler.schema, imported without
# installing the package (this environment is CellProfiler's; the package is import-light there).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))
from cellconcepts.cellprofiler import schema as cpf  # noqa: E402

RXRX_CHANNELS = "nucleus,er,rna,actin,golgi_membrane,mitochondria"
image_name = cpf.image_name


def build(channels: list[str], nucleus_channel: str, cytoplasm_channel: str) -> Pipeline:
    names = [image_name(c) for c in channels]
    pipeline = Pipeline()

    def add(module):
        module.set_module_num(len(pipeline.modules()) + 1)
        pipeline.add_module(module)
        return module

    load = LoadData()
    load.csv_directory.value = "Default Input Folder|"
    load.csv_file_name.value = "images.csv"
    load.wants_images.value = True
    load.rescale.value = True
    add(load)

    nuclei = IdentifyPrimaryObjects()
    nuclei.x_name.value = image_name(nucleus_channel)
    nuclei.y_name.value = "Nuclei"
    nuclei.size_range.value = cpf.NUCLEUS_DIAMETER
    nuclei.exclude_size.value = True
    nuclei.exclude_border_objects.value = False
    nuclei.unclump_method.value = "Shape"
    nuclei.watershed_method.value = "Shape"
    nuclei.fill_holes.value = "After both thresholding and declumping"
    nuclei.use_advanced.value = True
    nuclei.threshold.threshold_scope.value = "Global"
    nuclei.threshold.global_operation.value = "Otsu"
    nuclei.threshold.two_class_otsu.value = "Two classes"
    nuclei.threshold.threshold_smoothing_scale.value = cpf.THRESHOLD_SMOOTHING
    add(nuclei)

    cells = IdentifySecondaryObjects()
    cells.x_name.value = "Nuclei"
    cells.y_name.value = "Cells"
    cells.method.value = "Propagation"
    cells.image_name.value = image_name(cytoplasm_channel)
    cells.regularization_factor.value = cpf.REGULARIZATION
    cells.fill_holes.value = True
    cells.wants_discard_edge.value = False
    cells.threshold.threshold_scope.value = "Global"
    cells.threshold.global_operation.value = "Otsu"
    cells.threshold.two_class_otsu.value = "Two classes"
    cells.threshold.threshold_smoothing_scale.value = cpf.THRESHOLD_SMOOTHING
    cells.threshold.log_transform.value = cpf.CYTOPLASM_LOG_THRESHOLD
    add(cells)

    intensity = MeasureObjectIntensity()
    intensity.images_list.value = ", ".join(names)
    intensity.objects_list.value = ", ".join(cpf.OBJECTS)
    add(intensity)

    shape = MeasureObjectSizeShape()
    shape.objects_list.value = ", ".join(cpf.OBJECTS)
    shape.calculate_zernikes.value = True
    shape.calculate_advanced.value = False
    add(shape)

    texture = MeasureTexture()
    texture.images_list.value = ", ".join(names)
    texture.objects_list.value = ", ".join(cpf.DETAILED_OBJECTS)
    texture.images_or_objects.value = "Objects"
    texture.gray_levels.value = cpf.TEXTURE_GRAY_LEVELS
    texture.scale_groups[0].scale.value = cpf.TEXTURE_SCALE
    add(texture)

    granularity = MeasureGranularity()
    granularity.images_list.value = ", ".join(names)
    granularity.wants_objects.value = True
    granularity.objects_list.value = ", ".join(cpf.DETAILED_OBJECTS)
    granularity.subsample_size.value = cpf.GRANULARITY["subsample_size"]
    granularity.image_sample_size.value = cpf.GRANULARITY["image_sample_size"]
    granularity.element_size.value = cpf.GRANULARITY["element_size"]
    granularity.granular_spectrum_length.value = cpf.GRANULARITY["granular_spectrum_length"]
    add(granularity)

    colocalization = MeasureColocalization()
    colocalization.images_list.value = ", ".join(names)
    colocalization.objects_list.value = ", ".join(cpf.DETAILED_OBJECTS)
    colocalization.images_or_objects.value = "Within objects"
    colocalization.do_all.value = False
    colocalization.do_corr_and_slope.value = True
    for flag in ("do_manders", "do_rwc", "do_overlap", "do_costes"):
        getattr(colocalization, flag).value = False
    add(colocalization)

    radial = MeasureObjectIntensityDistribution()
    radial.images_list.value = ", ".join(names)
    radial.objects[0].object_name.value = cpf.DETAILED_OBJECTS[0]
    radial.objects[0].center_choice.value = "These objects"
    radial.bin_counts[0].wants_scaled.value = True
    radial.bin_counts[0].bin_count.value = cpf.RADIAL_BINS
    radial.wants_zernikes.value = "None"
    add(radial)

    for objects in ("Nuclei", "Cells"):
        convert = ConvertObjectsToImage()
        convert.object_name.value = objects
        convert.image_name.value = f"{objects}Labels"
        convert.image_mode.value = "uint16"
        add(convert)
        save = SaveImages()
        save.image_name.value = f"{objects}Labels"
        save.file_name_method.value = "Single name"
        save.single_file_name.value = "\\g<ImageIndex>_" + objects.lower()
        save.file_format.value = "tiff"
        save.bit_depth.value = "16-bit integer"
        save.pathname.value = "Default Output Folder sub-folder|labels"
        save.overwrite.value = True
        save.tiff_compress.value = False
        add(save)

    export = ExportToSpreadsheet()
    export.delimiter.value = 'Comma (",")'
    export.directory.value = "Default Output Folder|"
    export.wants_prefix.value = False
    export.wants_overwrite_without_warning.value = True
    export.add_metadata.value = True
    export.nan_representation.value = "NaN"
    export.wants_everything.value = True
    add(export)
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the .cppipe to write")
    parser.add_argument("--channels", default=RXRX_CHANNELS, help="comma-separated channels")
    parser.add_argument("--nucleus-channel", default="nucleus")
    parser.add_argument("--cytoplasm-channel", default="er")
    args = parser.parse_args()
    channels = args.channels.split(",")
    for chosen in (args.nucleus_channel, args.cytoplasm_channel):
        if chosen not in channels:
            parser.error(f"{chosen!r} is not one of --channels {channels}")
    pipeline = build(channels, args.nucleus_channel, args.cytoplasm_channel)
    with open(args.output, "w") as handle:
        pipeline.dump(handle)


if __name__ == "__main__":
    main()
