"""Stages of workflow/rules/heatmaps.smk: token heatmaps (paper Fig. 5) and the single-cell
check (Table 3 / Fig. 6E) of the features most selective for each label."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.device import resolve_device, set_threads
from cellconcepts.files import PathLike, atomic_path, read_results_csv, write_frame
from cellconcepts.report.tables import write_table
from cellconcepts.store.images import ImageStore, open_image_store, read_groups
from cellconcepts.store.layout import ImageFiles

log = logging.getLogger(__name__)


def heatmap_patch_tokens(
    *,
    images: PathLike,
    image_obs: PathLike,
    obs: PathLike,
    codes: PathLike,
    best_selectivity: PathLike,
    encoder: PathLike,
    choice: PathLike,
    patch_tokens: PathLike,
    selected: PathLike,
    architecture: Mapping[str, Any],
    task: Mapping[str, Any],
    exclude: Sequence[str],
    images_per_label: int,
    threads: int | None = None,
    execution: Mapping[str, Any],
    encoder_config: PathLike | None = None,
) -> None:
    """Patch tokens at the chosen layer for the images each label's heatmap is drawn on (its
    most selective feature's most active images), plus the mean patch tokens of up to 256
    control images per grid position (the last entry), the heatmaps' centre."""
    from cellconcepts.microscopy import heatmaps as hm
    from cellconcepts.microscopy.extract import extract_patch_tokens, load_image_encoder

    set_threads(threads)
    device = str(resolve_device(execution["device"]))
    table = pd.read_parquet(obs)
    chosen = hm.select_heatmap_images(
        table,
        sp.load_npz(codes).tocsr(),
        read_results_csv(best_selectivity),
        task=task,
        exclude=exclude,
        images_per_label=images_per_label,
    )
    chosen, rows = hm.patch_token_rows(chosen, where=f"{codes} ({task['name']!r} labels)")
    layer = json.loads(Path(choice).read_text())["layer"]
    pixels = open_image_store(ImageFiles(Path(images), Path(image_obs))).images
    model = load_image_encoder(encoder, architecture, device, config=encoder_config)
    batch = execution["batch_size"]
    patches = extract_patch_tokens(
        model, pixels[rows], layer, batch_size=batch, device=device, where=str(images)
    )
    sample = hm.sample_control_images(table["is_control"].to_numpy())
    centre = extract_patch_tokens(
        model, pixels[sample], layer, batch_size=batch, device=device
    ).mean(axis=0)
    with atomic_path(patch_tokens) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.concatenate([patches, centre[None]]).astype(np.float32))
    write_frame(chosen, selected)
    log.info(
        "patch tokens %s at layer %d for %d images (+ the mean of %d control images per "
        "grid position, the last entry)",
        patches.shape[1:],
        layer,
        len(rows),
        len(sample),
    )


def _selected_heats(
    store: ImageStore,
    patch_tokens: PathLike,
    selected: PathLike,
    model: PathLike,
    whitening: PathLike,
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """The selected images, their heatmaps, and the patch size."""
    from cellconcepts.dictionary.models import decoder_directions, load_model
    from cellconcepts.dictionary.whitening import Whitening
    from cellconcepts.microscopy.heatmaps import feature_heats

    chosen = pd.read_csv(selected)
    tokens = np.load(patch_tokens, mmap_mode="r")
    dictionary, _ = load_model(model)
    directions = Whitening.load(whitening).pullback(decoder_directions(dictionary))
    heats = feature_heats(tokens, chosen, directions)
    return chosen, heats, store.images.shape[-1] // tokens.shape[2]


def _read_is_control(obs: PathLike, image_obs: PathLike, n_images: int) -> np.ndarray:
    """The token store's is_control column, checked to hold one entry per image."""
    is_control = pd.read_parquet(obs, columns=["is_control"])["is_control"].to_numpy(bool)
    if len(is_control) != n_images:
        raise ValueError(
            f"{obs}: {len(is_control)} tokens but {n_images} images in {image_obs}; "
            "rerun the workflow from the image store"
        )
    return is_control


def token_heatmaps(
    *,
    images: PathLike,
    image_obs: PathLike,
    obs: PathLike,
    patch_tokens: PathLike,
    selected: PathLike,
    model: PathLike,
    whitening: PathLike,
    channels: Sequence[PathLike],
    summary: Sequence[PathLike],
    figure: Sequence[PathLike],
    plate_column: str | Sequence[str] = "plate",
    groups: PathLike | None = None,
    masks: PathLike | None = None,
    cells: PathLike | None = None,
) -> None:
    """Paper Fig. 5: heatmap-channel correlations per image, raw and against each channel's
    change from the plate's control images (`microscopy.heatmaps.ControlReference`, with the
    cell masks where the screen has them; every plate's controls for a plate without any, said
    in the log and the table's `control_reference` column; the controls are the token store's
    ``obs``, where the dataset's `control` key was applied), summarised per label against the
    channel the label's change is known to live in (``groups``, simulated screens), beside the
    same for the ground-truth heatmap of each image's perturbed cells (``cells``), the
    attribution's reference (not a bound)."""
    from cellconcepts.microscopy import heatmaps as hm
    from cellconcepts.microscopy.figures import plot_feature_heatmaps

    store = open_image_store(
        ImageFiles(
            Path(images),
            Path(image_obs),
            masks=None if masks is None else Path(masks),
            cells=None if cells is None else Path(cells),
        )
    )
    chosen, heats, patch_size = _selected_heats(store, patch_tokens, selected, model, whitening)
    names = hm.channel_names(store.images.shape[1])
    plates = hm.image_plates(store.obs, plate_column)
    is_control = _read_is_control(obs, image_obs, len(plates))
    reference = hm.control_reference(
        store.images, plates, is_control, patch_size, store.masks, where=str(obs)
    )
    table = hm.feature_attribution(
        chosen, heats, store.images, plates, reference, patch_size, names, store.masks, store.cells
    )
    write_table(table, channels[0], caption="heatmap-channel Pearson r per image")
    per_label = hm.channel_summary(table, names, read_groups(groups) if groups else None)
    write_table(per_label, summary[0], caption="mean heatmap-channel r per label")
    first = (chosen["rank"] == 0).to_numpy()
    plot_feature_heatmaps(
        figure[0],
        store.images[chosen["row"].to_numpy()[first]],
        heats[first],
        names,
        table.loc[first, names].to_numpy(),
        [f"{label}\nfeature {f}" for label, f in chosen.loc[first, ["label", "feature"]].values],
        patch_size,
    )


def single_cell_check(
    *,
    images: PathLike,
    image_obs: PathLike,
    masks: PathLike,
    cells: PathLike,
    patch_tokens: PathLike,
    selected: PathLike,
    model: PathLike,
    whitening: PathLike,
    alignment: PathLike,
    per_image: Sequence[PathLike],
    summary: Sequence[PathLike],
    figure: Sequence[PathLike],
) -> None:
    """Paper Table 3 / Fig. 6E: per-cell alignment by true category, per selected label; with
    the check's oracle reference, the recall and precision it gives a heatmap that is exactly the
    perturbed cells (`microscopy.heatmaps.oracle_heats`) on the same images."""
    from cellconcepts.microscopy.figures import plot_single_cell_histograms
    from cellconcepts.microscopy.heatmaps import perturbed_cell_heats
    from cellconcepts.microscopy.single_cell import single_cell_by_label

    store = open_image_store(
        ImageFiles(Path(images), Path(image_obs), masks=Path(masks), cells=Path(cells))
    )
    chosen, heats, patch_size = _selected_heats(store, patch_tokens, selected, model, whitening)
    per_cell, by_image, tests = single_cell_by_label(
        chosen, heats, store.masks, store.cells, patch_size
    )
    truth = perturbed_cell_heats(store.masks, store.cells, chosen["row"].to_numpy(), patch_size)
    _, _, oracle = single_cell_by_label(chosen, truth, store.masks, store.cells, patch_size)
    reference = oracle.drop_duplicates("label").set_index("label")[["recall", "precision"]]
    tests = tests.join(reference.add_prefix("oracle_"), on="label")
    write_frame(per_cell, alignment)
    write_table(by_image, per_image[0], caption="single-cell check")
    write_table(tests, summary[0], caption="single-cell alignment tests per label")
    plot_single_cell_histograms(
        figure[0], per_cell, "alignment by cell category, all heatmap labels"
    )
