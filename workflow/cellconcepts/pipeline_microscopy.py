"""Microscopy stages, one function per rule: images -> ViT tokens -> layer choice -> heatmaps.

An image store is a directory with ``images.npy`` (n, C, H, W; memory-mapped) and
``obs.parquet`` (one row per image, with a unique ``image_id``). The simulator also writes
``masks.npy`` (per-cell labels), ``cells.parquet`` (which cells were truly perturbed) and
``groups.csv`` (the planted gene groups and the channel each change lives in).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from cellconcepts import cellpainting, heatmaps, image_embed, io, obs, vit  # noqa: E402
from cellconcepts.dictionary import decoder_directions, load_model  # noqa: E402
from cellconcepts.image_store import ImageStore, open_image_store  # noqa: E402,F401
from cellconcepts.mae import MAEConfig, train_mae  # noqa: E402
from cellconcepts.pipeline import _set_threads, probe_tasks  # noqa: E402
from cellconcepts.report import write_table  # noqa: E402
from cellconcepts.training import resolve_device  # noqa: E402
from cellconcepts.whiten import Whitening  # noqa: E402

log = logging.getLogger(__name__)

PathLike = str | Path

# Rows of images embedded per chunk: bounds memory for screens of millions of crops.
EMBED_CHUNK_IMAGES = 4096
# Control images whose patch tokens give the per-position centre of the heatmaps.
CENTRE_CONTROL_IMAGES = 256


# --------------------------------------------------------------------------- image stores


def simulate_cellpainting(params: Mapping[str, Any], out_dir: PathLike) -> None:
    """Demo: a simulated Cell Painting knock-out screen with per-cell ground truth."""
    screen = cellpainting.simulate_screen(**params)
    cellpainting.write_screen(screen, out_dir)
    log.info(
        "simulated %d images %s, %d cells (%d perturbed), %d genes",
        len(screen.images),
        screen.images.shape[1:],
        len(screen.cells),
        int(screen.cells["perturbed"].sum()),
        screen.obs["gene"].nunique(),
    )


# --------------------------------------------------------------------------- model


def _mae_settings(params: Mapping[str, Any]) -> tuple[MAEConfig, dict[str, Any]]:
    """Split the config's `mae` section into the MAE architecture and the training settings."""
    names = {f.name for f in fields(MAEConfig)}
    config = MAEConfig(**{k: v for k, v in params.items() if k in names})
    return config, {k: v for k, v in params.items() if k not in names}


def train_image_mae(
    images_dir: PathLike,
    architecture: Mapping[str, Any],
    mae_params: Mapping[str, Any],
    encoder_dir: PathLike,
    history_path: PathLike,
    checkpoint_path: PathLike,
    *,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """Train the demo's masked autoencoder on the image store; save its encoder."""
    _set_threads(threads)
    store = open_image_store(images_dir)
    vit_config = vit.ViTConfig.from_dict(dict(architecture))
    _check_images_fit(store.images, vit_config, images_dir)
    mae_config, train_settings = _mae_settings(mae_params)
    model, history = train_mae(
        store.images,
        vit_config,
        mae_config,
        device=str(resolve_device(device)),
        checkpoint_path=checkpoint_path,
        **train_settings,
    )
    vit.save_pretrained(
        model.encoder, encoder_dir, extra_meta={"mae": dict(mae_params), "images": str(images_dir)}
    )
    history.to_csv(history_path, index=False)
    log.info("MAE trained: loss %.4f -> %.4f", history.loss.iloc[0], history.loss.iloc[-1])


def _check_images_fit(images: np.ndarray, config: vit.ViTConfig, where: PathLike) -> None:
    _, channels, height, width = images.shape
    if channels != config.in_chans or height != config.img_size or width != config.img_size:
        raise ValueError(
            f"{where}: images are {channels}x{height}x{width} but the model expects "
            f"{config.in_chans}x{config.img_size}x{config.img_size} "
            "(microscopy.model.architecture: in_chans, img_size)"
        )


def load_image_encoder(
    encoder_path: PathLike, architecture: Mapping[str, Any], device: str
) -> vit.ViTEncoder:
    """The encoder of a directory this workflow saved, or of other weights (a file, or e.g. an
    OpenPhenom Hugging Face directory) whose architecture the config describes."""
    path = Path(encoder_path)
    config: vit.ViTConfig | None = vit.ViTConfig.from_dict(dict(architecture))
    if path.is_dir() and (path / "config.json").exists():
        if json.loads((path / "config.json").read_text()).get("model_type") == vit.MODEL_TYPE:
            config = None
    return vit.load_encoder(path, config, device=device)


# --------------------------------------------------------------------------- embedding


def embed_image_layers(
    images_dir: PathLike,
    encoder_path: PathLike,
    architecture: Mapping[str, Any],
    layer: int | str,
    out_dir: PathLike,
    *,
    batch_size: int,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """One token per image (mean of patch tokens) at every layer to probe, one .npy per layer.

    With a fixed `layer` only that layer is extracted; with "best" every block's output is.
    Written into a temporary directory renamed into place, in chunks of images.
    """
    _set_threads(threads)
    device = str(resolve_device(device))
    store = open_image_store(images_dir)
    encoder = load_image_encoder(encoder_path, architecture, device)
    _check_images_fit(store.images, encoder.config, images_dir)
    valid = image_embed.available_layers(encoder)
    layers = valid if layer == "best" else [int(layer)]
    if layers[0] not in valid:
        raise ValueError(
            f"microscopy.layer: {layer} is not a block of this model (valid: 1..{valid[-1]})"
        )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(store.images)
    outputs: dict[int, np.ndarray] = {}
    for start in range(0, n, EMBED_CHUNK_IMAGES):
        stop = min(start + EMBED_CHUNK_IMAGES, n)
        tokens = image_embed.extract_crop_tokens(
            encoder, store.images[start:stop], layers, batch_size=batch_size, device=device
        )
        for number, values in tokens.items():
            if number not in outputs:
                outputs[number] = np.lib.format.open_memmap(
                    tmp / _layer_file(number),
                    mode="w+",
                    dtype=np.float32,
                    shape=(n, values.shape[1]),
                )
            outputs[number][start:stop] = values
    for array in outputs.values():
        array.flush()
    (tmp / "layers.json").write_text(json.dumps({"layers": layers}))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("embedded %d images at layers %s", n, layers)


def _layer_file(layer: int) -> str:
    return f"layer_{layer:03d}.npy"


def choose_layer_store(
    layers_dir: PathLike,
    images_dir: PathLike,
    store_dir: PathLike,
    *,
    layer: int | str,
    layer_task: str,
    tasks: Sequence[Mapping[str, Any]],
    control: str | Mapping[str, Any] | None,
    split: Mapping[str, Any],
    probe: Mapping[str, Any],
    table_path: PathLike,
    figure_path: PathLike,
    choice_path: PathLike,
    threads: int | None = None,
) -> None:
    """Probe every extracted layer on every task; the chosen layer's tokens become the store.

    "best" picks the layer with the highest BTA on `layer_task` (the paper picked its layers
    this way, on the functional gene-group task); the earliest layer wins ties.
    """
    _set_threads(threads)
    layers_dir = Path(layers_dir)
    layers = json.loads((layers_dir / "layers.json").read_text())["layers"]
    images = open_image_store(images_dir)
    table = images.obs.copy()
    table["token_id"] = table["image_id"].astype(str)
    annotated = obs.annotate_obs(
        table, control=control, split=split, label_columns=[t["column"] for t in tasks]
    )
    if layer_task not in [t["name"] for t in tasks]:
        raise ValueError(
            f"microscopy.layer_task: {layer_task!r} is not a task of this dataset "
            f"(tasks: {[t['name'] for t in tasks]})"
        )
    tokens = {str(n): np.load(layers_dir / _layer_file(n), mmap_mode="r") for n in layers}
    rows = probe_tasks(tokens, annotated, tasks, probe)
    probes = pd.DataFrame(rows).rename(columns={"representation": "layer"})
    probes["layer"] = probes["layer"].astype(int)
    on_task = probes[probes.task == layer_task].sort_values("layer")
    best_layer = int(on_task.loc[on_task["bta"].idxmax(), "layer"])
    chosen = best_layer if layer == "best" else int(layer)
    probes["chosen"] = probes["layer"] == chosen
    write_table(probes, table_path, caption="probe BTA of each layer's tokens per task")
    plot_layer_probing(probes, chosen, layer_task, figure_path)
    io.write_token_store(store_dir, tokens[str(chosen)], annotated)
    Path(choice_path).write_text(
        json.dumps(
            {
                "layer": chosen,
                "selected_by": "best BTA on " + layer_task if layer == "best" else "config",
                "bta": float(on_task.set_index("layer").loc[chosen, "bta"]),
                "best_layer": best_layer,
            },
            indent=2,
        )
    )
    log.info("layer %d chosen (best on %s: layer %d)", chosen, layer_task, best_layer)


def plot_layer_probing(
    probes: pd.DataFrame, chosen: int, layer_task: str, png_path: PathLike
) -> None:
    """Probe BTA against layer, one line per task, the chosen layer marked."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for task, table in probes.groupby("task", sort=False):
        table = table.sort_values("layer")
        ax.plot(
            table["layer"],
            table["bta"],
            marker="o",
            linewidth=2.5 if task == layer_task else 1.2,
            label=task,
        )
    ax.axvline(chosen, color="grey", linestyle=":", label=f"chosen layer {chosen}")
    ax.set_xlabel("layer (block output)")
    ax.set_ylabel("balanced test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=150)
    fig.savefig(Path(png_path).with_suffix(".pdf"))
    plt.close(fig)


# --------------------------------------------------------------------------- heatmaps


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
    from cellconcepts.pipeline import task_labels

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


def heatmap_patch_tokens(
    images_dir: PathLike,
    encoder_path: PathLike,
    architecture: Mapping[str, Any],
    choice_path: PathLike,
    store_dir: PathLike,
    codes_path: PathLike,
    best_selectivity_path: PathLike,
    tokens_path: PathLike,
    selected_path: PathLike,
    *,
    task: Mapping[str, Any],
    exclude: Sequence[str],
    images_per_label: int,
    batch_size: int,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """Patch tokens at the chosen layer for the images each label's heatmaps are drawn on."""
    _set_threads(threads)
    device = str(resolve_device(device))
    store = io.TokenStore.open(store_dir)
    selected = select_heatmap_images(
        store.obs,
        sp.load_npz(codes_path).tocsr(),
        pd.read_csv(best_selectivity_path),
        task=task,
        exclude=exclude,
        images_per_label=images_per_label,
    )
    if selected.empty:
        raise ValueError(
            f"{codes_path}: no feature is active in any image of the {task['name']!r} labels; "
            "nothing to draw heatmaps for"
        )
    rows = np.unique(selected["row"].to_numpy())
    selected["patch_index"] = np.searchsorted(rows, selected["row"].to_numpy())
    layer = json.loads(Path(choice_path).read_text())["layer"]
    images = open_image_store(images_dir).images
    encoder = load_image_encoder(encoder_path, architecture, device)
    patches = image_embed.extract_patch_tokens(
        encoder, images[rows], layer, batch_size=batch_size, device=device
    )
    controls = np.flatnonzero(store.obs["is_control"].to_numpy())
    sample = np.sort(
        np.random.default_rng(0).choice(
            controls, size=min(CENTRE_CONTROL_IMAGES, len(controls)), replace=False
        )
    )
    centre = image_embed.extract_patch_tokens(
        encoder, images[sample], layer, batch_size=batch_size, device=device
    ).mean(axis=0)
    with io.atomic_path(tokens_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.concatenate([patches, centre[None]]).astype(np.float32))
    selected.to_csv(selected_path, index=False)
    log.info(
        "patch tokens %s at layer %d for %d images (+ the mean of %d control images per "
        "grid position, the last entry)",
        patches.shape[1:],
        layer,
        len(rows),
        len(sample),
    )


def feature_heats(
    patch_tokens: np.ndarray,
    selected: pd.DataFrame,
    model_path: PathLike,
    whitening_path: PathLike,
) -> np.ndarray:
    """Alignment heatmaps (one per selected row): cosine of the feature's direction, carried
    into the token space through the whitening, with each patch token centred on the control
    mean at its grid position (the last entry of `patch_tokens`)."""
    model, _ = load_model(model_path)
    whitening = Whitening.load(whitening_path)
    directions = whitening.pullback(decoder_directions(model))
    centre = np.asarray(patch_tokens[-1], dtype=np.float64)
    # A label whose feature fires with negative codes is aligned with the negative direction.
    signs = np.sign(selected.groupby("label")["activation"].transform("sum")).to_numpy()
    heats = np.empty((len(selected), *patch_tokens.shape[1:3]), dtype=np.float64)
    for i, (feature, index) in enumerate(
        zip(selected["feature"].to_numpy(), selected["patch_index"].to_numpy(), strict=True)
    ):
        direction = directions[:, feature] * (signs[i] if signs[i] != 0 else 1.0)
        heats[i] = heatmaps.patch_alignment(patch_tokens[index : index + 1], direction, centre)[0]
    return heats


# --------------------------------------------------------------------------- summary


def label_selectivity_table(
    best_selectivity: Mapping[str, PathLike],
    out_path: PathLike,
    *,
    task: str,
    exclude: Sequence[str],
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Best avg selectivity of any feature per label of `task` (rows) and model (columns),
    with a last row giving the fraction of labels at or above `threshold` per model."""
    columns = {}
    for variant, path in best_selectivity.items():
        best = pd.read_csv(path)
        best = best[(best["task"] == task) & ~best["label"].astype(str).isin(exclude)]
        columns[variant] = best.set_index(best["label"].astype(str))["best_avg"]
    table = pd.DataFrame(columns).sort_index()
    table.index.name = "label"
    fraction = (table >= threshold).mean(axis=0).rename(f"fraction >= {threshold:g}")
    table = pd.concat([table, fraction.to_frame().T]).reset_index(names="label")
    write_table(table, out_path, caption=f"best avg selectivity per {task} label")
    for variant, value in fraction.items():
        log.info("%s: %.0f%% of %s labels at >= %g", variant, 100 * value, task, threshold)
    return table


def _channel_names(store: ImageStore) -> list[str]:
    n_channels = store.images.shape[1]
    if n_channels == len(cellpainting.CHANNELS):
        return list(cellpainting.CHANNELS)
    return [f"channel_{i}" for i in range(n_channels)]


def _selected_heats(
    images_dir: PathLike,
    tokens_path: PathLike,
    selected_path: PathLike,
    model_path: PathLike,
    whitening_path: PathLike,
) -> tuple[ImageStore, pd.DataFrame, np.ndarray, int]:
    """The image store, the selected images, their heatmaps, and the patch size."""
    store = open_image_store(images_dir)
    selected = pd.read_csv(selected_path)
    patch_tokens = np.load(tokens_path, mmap_mode="r")
    heats = feature_heats(patch_tokens, selected, model_path, whitening_path)
    patch_size = store.images.shape[-1] // patch_tokens.shape[2]
    return store, selected, heats, patch_size


def token_heatmaps(
    images_dir: PathLike,
    tokens_path: PathLike,
    selected_path: PathLike,
    model_path: PathLike,
    whitening_path: PathLike,
    *,
    channels_path: PathLike,
    summary_path: PathLike,
    figure_path: PathLike,
) -> None:
    """Paper Fig. 5: heatmap-channel correlations per image, summarised per label against the
    channel the label's change is known to live in (simulated screens)."""
    store, selected, heats, patch_size = _selected_heats(
        images_dir, tokens_path, selected_path, model_path, whitening_path
    )
    names = _channel_names(store)
    images = store.images[selected["row"].to_numpy()]
    table = heatmaps.channel_correlation_table(
        heats, images, patch_size, names, selected["image_id"].tolist()
    )
    table.insert(0, "label", selected["label"].to_numpy())
    table.insert(1, "feature", selected["feature"].to_numpy())
    write_table(table, channels_path, caption="heatmap-channel Pearson r per image")

    summary = table.groupby("label", sort=True)[names].mean()
    summary.insert(0, "feature", table.groupby("label")["feature"].first())
    summary.insert(1, "n_images", table.groupby("label").size())
    summary["top_channel"] = summary[names].idxmax(axis=1)
    summary["top_abs_channel"] = summary[names].abs().idxmax(axis=1)
    if store.groups is not None:
        expected = store.groups.set_index("gene_group")["channel"]
        summary["expected_channel"] = expected.reindex(summary.index).to_numpy()
        summary["expected_is_top"] = summary["top_channel"] == summary["expected_channel"]
        summary["expected_is_top_abs"] = summary["top_abs_channel"] == summary["expected_channel"]
        log.info(
            "expected channel is the top channel for %d of %d labels (%d by |r|)",
            int(summary["expected_is_top"].sum()),
            len(summary),
            int(summary["expected_is_top_abs"].sum()),
        )
    write_table(summary.reset_index(), summary_path, caption="mean heatmap-channel r per label")
    first = (selected["rank"] == 0).to_numpy()
    heatmaps.plot_feature_heatmaps(
        figure_path,
        images[first],
        heats[first],
        names,
        table.loc[first, names].to_numpy(),
        [f"{label}\nfeature {f}" for label, f in selected.loc[first, ["label", "feature"]].values],
        patch_size,
    )


def single_cell_alignment(
    images_dir: PathLike,
    tokens_path: PathLike,
    selected_path: PathLike,
    model_path: PathLike,
    whitening_path: PathLike,
    *,
    cells_path: PathLike,
    per_image_path: PathLike,
    summary_path: PathLike,
    figure_path: PathLike,
) -> None:
    """Paper Table 3 / Fig. 6E: per-cell alignment by true category, per selected label."""
    store, selected, heats, patch_size = _selected_heats(
        images_dir, tokens_path, selected_path, model_path, whitening_path
    )
    if store.masks is None or store.cells is None:
        raise ValueError(f"{images_dir}: the single-cell check needs masks.npy and cells.parquet")
    per_cell, per_image, tests = [], [], []
    for label, rows in selected.groupby("label", sort=True):
        positions = rows.index.to_numpy()
        image_rows = rows["row"].to_numpy()
        cells = store.cells[store.cells["image_index"].isin(image_rows)].copy()
        cells["row"] = (
            pd.Series(range(len(image_rows)), index=image_rows)
            .loc[cells["image_index"].to_numpy()]
            .to_numpy()
        )
        result = heatmaps.single_cell_check(
            heats[positions],
            store.masks[image_rows],
            cells,
            patch_size,
            rows["image_id"].tolist(),
        )
        feature = int(rows["feature"].iloc[0])
        for frame, out in zip(result, (per_cell, per_image, tests), strict=True):
            out.append(frame.assign(label=label, feature=feature))
    per_cell_table = pd.concat(per_cell, ignore_index=True)
    per_cell_table.to_csv(cells_path, index=False)
    write_table(
        pd.concat(per_image, ignore_index=True), per_image_path, caption="single-cell check"
    )
    summary = pd.concat(tests, ignore_index=True)
    overall = pd.concat(per_image, ignore_index=True)
    overall = overall[overall["image_id"] == "all"].set_index("label")
    # What a random 'dark' call with the same number of dark cells would give.
    overall["recall_by_chance"] = overall["dark"] / overall["total_cells"]
    overall["precision_by_chance"] = overall["unperturbed"] / overall["total_cells"]
    summary = summary.merge(
        overall[["recall", "recall_by_chance", "precision", "precision_by_chance"]],
        left_on="label",
        right_index=True,
        how="left",
    )
    write_table(summary, summary_path, caption="single-cell alignment tests per label")
    heatmaps.plot_single_cell_histograms(
        figure_path, per_cell_table, "alignment by cell category, all heatmap labels"
    )
