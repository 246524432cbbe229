"""Token heatmaps (paper Fig. 5): where in an image a feature's direction points.

A heatmap is the cosine of a feature direction with each centred patch token of an image, on the
ViT's patch grid. Per channel, it is compared with the image by the Pearson correlation between
the heatmap and the channel averaged over each patch (which channel the feature "looks at";
negative with all channels = background).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.labels import task_labels

log = logging.getLogger(__name__)


def patch_alignment(
    patch_tokens: np.ndarray, direction: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Cosine of `direction` with each centred patch token, `patch_token - centre`.

    `patch_tokens` is (n, grid_h, grid_w, d) (any leading shape works; the last axis is d) and
    the result has the leading shape. `centre` is (d,) or broadcasts against the tokens, e.g.
    one control mean per grid position (grid_h, grid_w, d), which removes the positional part of
    ViT patch tokens. A patch equal to its centre has no direction and gets 0.
    """
    tokens = np.asarray(patch_tokens)
    direction = np.asarray(direction, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    if tokens.ndim < 1:
        raise ValueError("patch_tokens: expected an array (n, grid_h, grid_w, d)")
    d = tokens.shape[-1]
    if direction.shape != (d,):
        raise ValueError(
            f"direction: expected shape ({d},) to match patch tokens, got {direction.shape}"
        )
    if centre.ndim < 1 or centre.shape[-1] != d or centre.ndim > tokens.ndim:
        raise ValueError(
            f"centre: expected shape ({d},) or per grid position (grid_h, grid_w, {d}) to match "
            f"patch tokens, got {centre.shape}"
        )
    direction_norm = float(np.linalg.norm(direction))
    if not np.isfinite(direction_norm) or direction_norm == 0.0:
        raise ValueError(
            f"direction: expected a finite non-zero vector, its norm is {direction_norm}"
        )
    centred = tokens.astype(np.float64) - centre
    norms = np.linalg.norm(centred, axis=-1)
    dots = centred @ (direction / direction_norm)
    cosine = np.zeros(norms.shape, dtype=np.float64)
    np.divide(dots, norms, out=cosine, where=norms > 0)
    return np.clip(cosine, -1.0, 1.0)


def upsample_to_pixels(heat: np.ndarray, patch_size: int) -> np.ndarray:
    """Nearest-neighbour upsampling of a patch-grid map, (..., gh, gw) -> (..., gh*p, gw*p):
    every pixel takes the value of the patch it lies in."""
    heat = np.asarray(heat)
    _check_patch_size(patch_size)
    if heat.ndim not in (2, 3):
        raise ValueError(
            f"heat: expected (grid_h, grid_w) or (n, grid_h, grid_w), got shape {heat.shape}"
        )
    return np.repeat(np.repeat(heat, patch_size, axis=-2), patch_size, axis=-1)


def pool_to_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
    """Block mean over each patch: (C, H, W) or (H, W) -> (C, H/p, W/p) (C = 1 for 2-D input)."""
    image = np.asarray(image, dtype=np.float64)
    _check_patch_size(patch_size)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W) or (H, W), got shape {image.shape}")
    channels, height, width = image.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image: height and width ({height}x{width}) must be multiples of the patch size "
            f"{patch_size}"
        )
    blocks = image.reshape(
        channels, height // patch_size, patch_size, width // patch_size, patch_size
    )
    return blocks.mean(axis=(2, 4))


def _check_patch_size(patch_size: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int | np.integer):
        raise TypeError(f"patch_size: expected a positive integer, got {patch_size!r}")
    if patch_size < 1:
        raise ValueError(f"patch_size: expected a positive integer, got {patch_size}")


# --------------------------------------------------------------------------- channels


def channel_correlations(heat: np.ndarray, image: np.ndarray, patch_size: int) -> np.ndarray:
    """Pearson r between the heatmap (grid_h, grid_w) and each channel of `image` (C, H, W)
    averaged over each patch; NaN where the heatmap or the pooled channel is constant."""
    return patch_correlations(heat, pool_to_patches(image, patch_size), np.shape(image))


def patch_correlations(heat: np.ndarray, pooled: np.ndarray, shape: tuple = ()) -> np.ndarray:
    """Pearson r between the heatmap (grid_h, grid_w) and each channel of a patch-grid map
    (C, grid_h, grid_w); NaN where either is constant."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != pooled.shape[1:]:
        raise ValueError(
            f"heat: shape {heat.shape} does not match the image's patch grid {pooled.shape[1:]} "
            f"(image {shape})"
        )
    x = heat.ravel() - heat.mean()
    y = pooled.reshape(len(pooled), -1)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x @ x) * np.einsum("ij,ij->i", y, y))
    constant = (np.ptp(heat) == 0) | (np.ptp(pooled.reshape(len(pooled), -1), axis=1) == 0)
    r = np.full(len(pooled), np.nan)
    np.divide(y @ x, denominator, out=r, where=~constant & (denominator > 0))
    return np.clip(r, -1.0, 1.0)


def patch_coverage(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Fraction of each patch's pixels inside a cell (label image, 0 = background)."""
    return pool_to_patches((np.asarray(mask) > 0).astype(np.float64), patch_size)[0]


class ControlReference:
    """What each patch of an image would hold in every channel without a perturbation,
    learnt from the control images of its plate.

    With cell masks, per plate and channel a line ``intensity = a + b * coverage`` is fitted
    over the control patches (coverage = fraction of the patch inside a cell), so a patch is
    compared with a control patch holding as much cell: every channel is brighter where cells
    are, and this takes that part out. Without masks, the control mean at the same grid
    position is the reference.
    """

    # The key of the fit over every plate's controls, for plates without controls of their own.
    POOLED = "all plates"

    def __init__(self, fits: Mapping[str, np.ndarray], with_masks: bool) -> None:
        self.fits = dict(fits)
        self.with_masks = with_masks

    @classmethod
    def fit(
        cls,
        images: np.ndarray,
        plates: np.ndarray,
        control_rows: np.ndarray,
        patch_size: int,
        masks: np.ndarray | None = None,
        *,
        pooled_fallback: bool = False,
    ) -> ControlReference:
        """Fit on ``images[control_rows]`` plate by plate (``plates``: one per image row).
        With ``pooled_fallback``, also one fit over every plate's controls (key `POOLED`),
        which `change` uses for plates without controls of their own."""

        def fit_rows(rows: np.ndarray) -> np.ndarray:
            pooled = np.stack([pool_to_patches(images[r], patch_size) for r in rows])
            if masks is None:
                return pooled.mean(axis=0)
            cover = np.stack([patch_coverage(masks[r], patch_size) for r in rows]).ravel()
            design = np.column_stack([np.ones_like(cover), cover])
            values = pooled.transpose(1, 0, 2, 3).reshape(pooled.shape[1], -1).T
            return np.linalg.lstsq(design, values, rcond=None)[0]  # (2, C)

        fits = {
            str(plate): fit_rows(control_rows[plates[control_rows] == plate])
            for plate in np.unique(plates[control_rows])
        }
        if pooled_fallback:
            fits[cls.POOLED] = fit_rows(control_rows)
        return cls(fits, masks is not None)

    def source(self, plate: str) -> str:
        """Whose controls ``plate``'s images are compared with: the plate's own, or every
        plate's (`POOLED`) where it has none and the pooled fit exists."""
        if str(plate) in self.fits and str(plate) != self.POOLED:
            return str(plate)
        if self.POOLED in self.fits:
            return self.POOLED
        raise ValueError(
            f"plate {plate!r}: no control image to compare with; plates with controls: "
            f"{sorted(self.fits)}"
        )

    def change(
        self, image: np.ndarray, plate: str, patch_size: int, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """(C, grid_h, grid_w): the image's patches minus what its plate's controls (or, see
        `source`, every plate's) predict."""
        pooled = pool_to_patches(image, patch_size)
        fit = self.fits[self.source(plate)]
        if not self.with_masks:
            return pooled - fit
        if mask is None:
            raise ValueError("change: this reference was fitted with masks; pass the mask")
        cover = patch_coverage(mask, patch_size)
        return pooled - (fit[0][:, None, None] + fit[1][:, None, None] * cover[None])


def channel_correlation_table(
    heats: np.ndarray,
    images: np.ndarray,
    patch_size: int,
    channel_names: Sequence[str],
    image_ids: Sequence[object],
) -> pd.DataFrame:
    """One row per heatmap: `image_id`, the Pearson r with each channel (a column per channel
    name), `top_channel` (largest r) and `top_abs_channel` (largest |r|); the top columns are
    missing where every r is NaN. `images[i]` is the image of `heats[i]`."""
    heats = np.asarray(heats)
    names = [str(name) for name in channel_names]
    if heats.ndim != 3:
        raise ValueError(f"heats: expected (n, grid_h, grid_w), got shape {heats.shape}")
    if len(images) != len(heats) or len(image_ids) != len(heats):
        raise ValueError(
            f"heats ({len(heats)}), images ({len(images)}) and image_ids ({len(image_ids)}) "
            "must have one entry per heatmap"
        )
    check_channel_names(names, np.shape(images)[1])
    reserved = {"image_id", "top_channel", "top_abs_channel"} & set(names)
    if reserved:
        raise ValueError(f"channel_names: {sorted(reserved)} clash with the table's own columns")
    r = np.empty((len(heats), len(names)))
    for i in range(len(heats)):
        r[i] = channel_correlations(heats[i], images[i], patch_size)
    table = pd.DataFrame(r, columns=names)
    table.insert(0, "image_id", list(image_ids))
    table["top_channel"] = [_largest(row, names) for row in r]
    table["top_abs_channel"] = [_largest(np.abs(row), names) for row in r]
    return table


def control_change_correlations(
    heats: np.ndarray,
    changes: np.ndarray,
    channel_names: Sequence[str],
    suffix: str = "_vs_control",
) -> pd.DataFrame:
    """Per heatmap, the Pearson r with each channel's change from the controls
    (`ControlReference.change`, (n, C, grid_h, grid_w)): columns ``<channel><suffix>`` and
    ``top_channel<suffix>``."""
    names = [str(name) for name in channel_names]
    r = np.stack([patch_correlations(h, c) for h, c in zip(heats, changes, strict=True)])
    table = pd.DataFrame(r, columns=[f"{n}{suffix}" for n in names])
    table[f"top_channel{suffix}"] = [_largest(row, names) for row in r]
    return table


# --------------------------------------------------------------------------- controls

# Control images drawn (per plate, for the channel reference) to centre the heatmaps' patch
# tokens and to fit `ControlReference`; the seed fixes the draw so reruns agree.
CENTRE_CONTROL_IMAGES = 256
CONTROL_SEED = 0


def sample_control_images(
    is_control: np.ndarray, n: int = CENTRE_CONTROL_IMAGES, seed: int = CONTROL_SEED
) -> np.ndarray:
    """Up to `n` control rows drawn without replacement (seeded), sorted: the images whose mean
    patch tokens per grid position centre the heatmaps."""
    controls = np.flatnonzero(is_control)
    return np.sort(
        np.random.default_rng(seed).choice(controls, size=min(n, len(controls)), replace=False)
    )


def sample_plate_controls(
    is_control: np.ndarray,
    plates: np.ndarray,
    n: int = CENTRE_CONTROL_IMAGES,
    seed: int = CONTROL_SEED,
    *,
    where: str = "is_control",
) -> np.ndarray:
    """Up to `n` control rows per plate (one seeded generator over the plates in sorted order),
    sorted: the images `ControlReference` is fitted on."""
    if not is_control.any():
        raise ValueError(
            f"{where}: no control image (the dataset's `control` key, or its is_control "
            "column); the heatmaps' channel attribution compares each image with controls"
        )
    controls = np.flatnonzero(is_control)
    rng = np.random.default_rng(seed)
    chosen = []
    for plate in np.unique(plates[controls]):
        mine = controls[plates[controls] == plate]
        chosen.append(rng.choice(mine, size=min(n, len(mine)), replace=False))
    return np.sort(np.concatenate(chosen))


def image_plates(obs: pd.DataFrame, plate_column: str | Sequence[str]) -> np.ndarray:
    """One plate key per image row, the plate columns joined by "/" (the whole screen is one
    plate, "all", without any of the columns)."""
    columns = [plate_column] if isinstance(plate_column, str) else list(plate_column)
    present = [c for c in columns if c in obs.columns]
    if not present:
        return np.full(len(obs), "all", dtype=object)
    return obs[present].astype(str).agg("/".join, axis=1).to_numpy()


def control_reference(
    images: np.ndarray,
    plates: np.ndarray,
    is_control: np.ndarray,
    patch_size: int,
    masks: np.ndarray | None = None,
    *,
    n: int = CENTRE_CONTROL_IMAGES,
    seed: int = CONTROL_SEED,
    where: str = "is_control",
) -> ControlReference:
    """`ControlReference` fitted on up to `n` sampled control images per plate
    (`sample_plate_controls`), with the pooled fit for plates without controls (said in the
    log: their plate effects stay in their channel changes)."""
    controls = sample_plate_controls(is_control, plates, n, seed, where=where)
    reference = ControlReference.fit(
        images, plates, controls, patch_size, masks, pooled_fallback=True
    )
    without = sorted(set(map(str, plates)) - set(map(str, plates[controls])))
    if without:
        log.warning(
            "plates without control images: %s; their images are compared with the controls "
            "of every plate (%d images from %s), so plate effects stay in their channel "
            "changes",
            without,
            len(controls),
            sorted(set(map(str, plates[controls]))),
        )
    log.info(
        "channel change from %d control images of %d plates (%s)",
        len(controls),
        len(reference.fits) - 1,
        "matched on cell coverage" if masks is not None else "same grid position",
    )
    return reference


def channel_names(n_channels: int) -> list[str]:
    """The Cell Painting channel names for images with their number of channels, else
    ``channel_<i>``."""
    from cellconcepts.sources.cellpainting import CHANNELS

    if n_channels == len(CHANNELS):
        return list(CHANNELS)
    return [f"channel_{i}" for i in range(n_channels)]


def feature_attribution(
    selected: pd.DataFrame,
    heats: np.ndarray,
    images: np.ndarray,
    plates: np.ndarray,
    reference: ControlReference,
    patch_size: int,
    names: Sequence[str],
    masks: np.ndarray | None = None,
    cells: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per selected image (``selected``: label, feature, row, image_id; ``heats[i]`` its
    heatmap): `label`, `feature`, its `control_reference` (`ControlReference.source`), the
    heatmap-channel r (`channel_correlation_table`) and the r with each channel's change from
    the controls (`control_change_correlations`); with ``masks`` and ``cells`` (a simulated
    screen), the same against the ground-truth heatmap of the perturbed cells, the
    attribution's reference. ``images``, ``plates``, ``masks``: the whole store, by row."""
    rows = selected["row"].to_numpy()
    table = channel_correlation_table(
        heats, images[rows], patch_size, names, selected["image_id"].tolist()
    )
    changes = np.stack(
        [
            reference.change(images[r], plates[r], patch_size, None if masks is None else masks[r])
            for r in rows
        ]
    )
    attributions = [table, control_change_correlations(heats, changes, names)]
    if cells is not None and masks is not None:
        truth = perturbed_cell_heats(masks, cells, rows, patch_size)
        attributions.append(
            control_change_correlations(truth, changes, names, suffix="_oracle_vs_control")
        )
    table = pd.concat(attributions, axis=1)
    table.insert(0, "label", selected["label"].to_numpy())
    table.insert(1, "feature", selected["feature"].to_numpy())
    table.insert(2, "control_reference", [reference.source(plates[r]) for r in rows])
    return table


def oracle_heats(masks: np.ndarray, perturbed: Sequence[np.ndarray], patch_size: int):
    """Ground-truth heatmaps of a simulated screen: per image, the fraction of each patch
    covered by its perturbed cells (``perturbed[i]``: their labels in ``masks[i]``)."""
    return np.stack(
        [
            pool_to_patches(np.isin(mask, labels).astype(np.float64), patch_size)[0]
            for mask, labels in zip(masks, perturbed, strict=True)
        ]
    )


def perturbed_cell_heats(
    masks: np.ndarray, cells: pd.DataFrame, rows: np.ndarray, patch_size: int
) -> np.ndarray:
    """`oracle_heats` of the images ``rows`` of a simulated screen: ``cells`` (image_index,
    cell_label, perturbed) says which cells of ``masks[row]`` are perturbed."""
    perturbed = cells[cells["perturbed"]].groupby("image_index")["cell_label"]
    labels = [perturbed.get_group(r).to_numpy() if r in perturbed.groups else [] for r in rows]
    return oracle_heats(masks[rows], labels, patch_size)


def _largest(values: np.ndarray, names: Sequence[str]) -> str | None:
    """Name of the largest value, ignoring NaN (None when all are NaN)."""
    if np.all(np.isnan(values)):
        return None
    return names[int(np.nanargmax(values))]


def check_channel_names(names: Sequence[str], n_channels: int) -> None:
    if len(names) != n_channels:
        raise ValueError(
            f"channel_names: {len(names)} names {list(names)} for images with {n_channels} channels"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"channel_names: names must be unique, got {list(names)}")


# --------------------------------------------------------------------------- single cells


def select_heatmap_images(
    table: pd.DataFrame,
    codes: sp.csr_matrix,
    best_selectivity: pd.DataFrame,
    *,
    task: Mapping[str, Any],
    exclude: Sequence[str],
    images_per_label: int,
) -> pd.DataFrame:
    """Per label of `task`: its most selective feature and the label's images where that
    feature is most active. ICFL codes are signed: the label's dominant sign (of the summed
    codes over its images) is kept, images are ranked by their code in that sign, and the
    heatmap then follows the feature direction times that sign."""
    best = best_selectivity[best_selectivity["task"] == task["name"]]
    if best.empty:
        raise ValueError(f"heatmaps.task: no selectivity rows for task {task['name']!r}")
    labels = task_labels(table, task)
    rows = []
    for _, entry in best.iterrows():
        label = str(entry["label"])
        if label in exclude:
            continue
        feature = int(entry["best_feature"])
        members = np.flatnonzero((labels == label).to_numpy())
        activation = codes[members][:, feature].toarray().ravel()
        sign = 1.0 if activation.sum() >= 0 else -1.0
        order = np.argsort(-sign * activation, kind="stable")
        picked = [i for i in order if sign * activation[i] > 0][:images_per_label]
        if not picked:
            log.warning("label %s: feature %d is active in none of its images", label, feature)
        for rank, i in enumerate(picked):
            rows.append(
                {
                    "label": label,
                    "feature": feature,
                    "best_avg_selectivity": float(entry["best_avg"]),
                    "rank": rank,
                    "row": int(members[i]),
                    "image_id": str(table["token_id"].iloc[members[i]]),
                    "activation": float(activation[i]),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "label",
            "feature",
            "best_avg_selectivity",
            "rank",
            "row",
            "image_id",
            "activation",
        ],
    )


def patch_token_rows(
    selected: pd.DataFrame, where: str = "selected"
) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct image rows whose patch tokens are extracted (sorted), and ``selected`` with
    `patch_index`: the position of each selected image's row among them."""
    if selected.empty:
        raise ValueError(
            f"{where}: no feature is active in any image of the labels; nothing to draw "
            "heatmaps for"
        )
    rows = np.unique(selected["row"].to_numpy())
    return selected.assign(patch_index=np.searchsorted(rows, selected["row"].to_numpy())), rows


def feature_heats(
    patch_tokens: np.ndarray, selected: pd.DataFrame, directions: np.ndarray
) -> np.ndarray:
    """Alignment heatmaps (one per selected row): cosine of the feature's direction in token
    space (``directions`` (d, M), the decoder pulled back through the whitening) with each
    patch token centred on the control mean at its grid position (the last entry of
    ``patch_tokens``)."""
    centre = np.asarray(patch_tokens[-1], dtype=np.float64)
    # A label whose feature fires with negative codes is aligned with the negative direction.
    signs = np.sign(selected.groupby("label")["activation"].transform("sum")).to_numpy()
    heats = np.empty((len(selected), *patch_tokens.shape[1:3]), dtype=np.float64)
    for i, (feature, index) in enumerate(
        zip(selected["feature"].to_numpy(), selected["patch_index"].to_numpy(), strict=True)
    ):
        direction = directions[:, feature] * (signs[i] if signs[i] != 0 else 1.0)
        heats[i] = patch_alignment(patch_tokens[index : index + 1], direction, centre)[0]
    return heats


# Per-image correlation columns beside the raw ones: against the change from the controls, and
# the same for the oracle heatmap of a simulated screen (its perturbed cells).
ATTRIBUTIONS = ("_vs_control", "_oracle_vs_control")


def channel_summary(
    table: pd.DataFrame, names: Sequence[str], groups: pd.DataFrame | None
) -> pd.DataFrame:
    """Mean heatmap-channel r per label and its top channel (signed, and by |r| for the raw
    r), for the raw correlations and for each of `ATTRIBUTIONS` the table holds; for
    simulated screens (``groups``: the planted groups and the channel each change lives in),
    the expected channel's rank (1 = top) and whether it is on top, for each."""
    names = list(names)
    kinds = [""] + [k for k in ATTRIBUTIONS if f"{names[0]}{k}" in table.columns]
    columns = [f"{n}{k}" for k in kinds for n in names]
    summary = table.groupby("label", sort=True)[columns].mean()
    summary.insert(0, "feature", table.groupby("label")["feature"].first())
    summary.insert(1, "n_images", table.groupby("label").size())
    for kind in kinds:
        values = summary[[f"{n}{kind}" for n in names]].set_axis(names, axis=1)
        summary[f"top_channel{kind}"] = values.idxmax(axis=1)
        if not kind:
            summary["top_abs_channel"] = values.abs().idxmax(axis=1)
    if groups is not None:
        expected = groups.set_index("gene_group")["channel"]
        summary["expected_channel"] = expected.reindex(summary.index).to_numpy()
        summary["expected_is_top_abs"] = summary["top_abs_channel"] == summary["expected_channel"]
        for kind in kinds:
            values = summary[[f"{n}{kind}" for n in names]].set_axis(names, axis=1)
            ranks = values.rank(axis=1, ascending=False, method="min")
            summary[f"expected_rank{kind}"] = [
                ranks.loc[label, c] if c in names else np.nan
                for label, c in summary["expected_channel"].items()
            ]
            summary[f"expected_r{kind}"] = [
                values.loc[label, c] if c in names else np.nan
                for label, c in summary["expected_channel"].items()
            ]
            summary[f"expected_is_top{kind}"] = summary[f"expected_rank{kind}"] == 1
        log.info(
            "expected channel on top for %s of %d labels",
            ", ".join(
                f"{int(summary[f'expected_is_top{k}'].sum())} ({k.strip('_') or 'raw'})"
                for k in kinds
            ),
            len(summary),
        )
    return summary.reset_index()
