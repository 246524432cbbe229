"""Object-level segmentation quality of predicted label masks against ground-truth masks.

A predicted object matches a true object when their intersection over union (IoU) exceeds a
threshold. IoUs come from a contingency table of (true, predicted) labels over pixels, built
with one ``np.unique`` over paired pixel labels, so no Python loop runs over objects. Above a
threshold of 0.5 a match is unique (an object cannot have IoU > 0.5 with two disjoint objects);
below it, :func:`scipy.optimize.linear_sum_assignment` pairs objects one-to-one among the pairs
above the threshold, maximising the number of matches and then their summed IoU.

Precision = matched / predicted, recall = matched / true, F1 = 2 matched / (true + predicted).
When both counts are zero (nothing to find, nothing found) all three are 1; when only one is
zero, the undefined ratio is 0 (as F1 is). ``mean_iou`` is the mean over true objects of their
best IoU with any predicted object (0 for a true object overlapping none), NaN without true
objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = ["ObjectMatch", "match_objects", "segmentation_quality"]


@dataclass(frozen=True)
class ObjectMatch:
    """Object counts and matching scores of one predicted label image against its truth."""

    n_true: int
    n_pred: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float


def _as_labels(mask: np.ndarray, name: str) -> np.ndarray:
    """mask as a 2-D non-negative integer label image."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D label image, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: expected an integer label image (0 = background), got dtype {arr.dtype}"
        )
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError(f"{name}: expected labels >= 0 (0 = background), got {arr.min()}")
    return arr


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-pixel object index (0 = background, objects 1..K in label order) and K."""
    uniq, inverse = np.unique(labels.ravel(), return_inverse=True)
    has_background = uniq.shape[0] > 0 and uniq[0] == 0
    codes = inverse.astype(np.int64) + (0 if has_background else 1)
    return codes, int(uniq.shape[0] - has_background)


def _scores(n_true: int, n_pred: int, n_matched: int) -> tuple[float, float, float]:
    """(precision, recall, f1) with the zero-count conventions of the module docstring."""
    if n_true == 0 and n_pred == 0:
        return 1.0, 1.0, 1.0
    precision = n_matched / n_pred if n_pred else 0.0
    recall = n_matched / n_true if n_true else 0.0
    return precision, recall, 2.0 * n_matched / (n_true + n_pred)


def _match(
    pred: np.ndarray, truth: np.ndarray, iou_threshold: float
) -> tuple[int, int, int, np.ndarray]:
    """(n_true, n_pred, n_matched, best IoU of every true object)."""
    pred = _as_labels(pred, "pred")
    truth = _as_labels(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(
            f"pred, truth: expected label images of the same shape, got pred {pred.shape} and "
            f"truth {truth.shape}"
        )
    if not (np.isfinite(iou_threshold) and 0.0 <= iou_threshold < 1.0):
        raise ValueError(f"iou_threshold: expected a value in [0, 1), got {iou_threshold}")
    t_codes, n_true = _compact(truth)
    p_codes, n_pred = _compact(pred)
    best = np.zeros(n_true, dtype=np.float64)
    if n_true == 0 or n_pred == 0:
        return n_true, n_pred, 0, best

    area_t = np.bincount(t_codes, minlength=n_true + 1)[1:]
    area_p = np.bincount(p_codes, minlength=n_pred + 1)[1:]
    both = (t_codes > 0) & (p_codes > 0)
    pair_key, inter = np.unique(
        (t_codes[both] - 1) * n_pred + (p_codes[both] - 1), return_counts=True
    )
    t_idx, p_idx = np.divmod(pair_key, n_pred)
    iou = inter / (area_t[t_idx] + area_p[p_idx] - inter)
    np.maximum.at(best, t_idx, iou)

    candidate = iou > iou_threshold
    if iou_threshold >= 0.5:
        n_matched = int(np.count_nonzero(candidate))  # IoU > 0.5 pairs are one-to-one
    else:
        ct, cp, ciou = t_idx[candidate], p_idx[candidate], iou[candidate]
        rows, ct = np.unique(ct, return_inverse=True)
        cols, cp = np.unique(cp, return_inverse=True)
        # Each match is worth 1 plus a tie-break < 1 in total, so the assignment maximises the
        # number of matches first and their summed IoU second; non-candidates are worth 0.
        weight = np.zeros((rows.shape[0], cols.shape[0]))
        weight[ct, cp] = 1.0 + ciou / (min(weight.shape) + 1.0)
        r, c = linear_sum_assignment(weight, maximize=True)
        n_matched = int(np.count_nonzero(weight[r, c] > 0))
    return n_true, n_pred, n_matched, best


def match_objects(
    pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = 0.5
) -> ObjectMatch:
    """Match the objects of a predicted 2-D label image to those of the true one.

    Labels are arbitrary non-negative integers (0 = background); a pair matches when its IoU
    is strictly greater than ``iou_threshold`` (so IoU exactly 0.5 does not match at 0.5).
    """
    n_true, n_pred, n_matched, best = _match(pred, truth, iou_threshold)
    precision, recall, f1 = _scores(n_true, n_pred, n_matched)
    return ObjectMatch(
        n_true=n_true,
        n_pred=n_pred,
        n_matched=n_matched,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=float(best.mean()) if n_true else float("nan"),
    )


def segmentation_quality(
    pred_masks: np.ndarray | Sequence[np.ndarray],
    truth_masks: np.ndarray | Sequence[np.ndarray],
    image_ids: Sequence[str],
    *,
    iou_threshold: float = 0.5,
) -> tuple[pd.DataFrame, dict[str, float | int]]:
    """Per-image object matching of label stacks (n, H, W), and a pooled summary.

    Returns a table with one row per image (image_id, n_true, n_pred, n_matched, precision,
    recall, f1, mean_iou) and a summary from pooled counts: n_images, n_true, n_pred,
    n_matched, precision = sum matched / sum predicted, recall = sum matched / sum true, f1 from
    those, and mean_iou over all true objects of all images.
    """
    for name, stack in (("pred_masks", pred_masks), ("truth_masks", truth_masks)):
        if isinstance(stack, np.ndarray) and stack.ndim != 3:
            raise ValueError(f"{name}: expected a (n, H, W) stack, got shape {stack.shape}")
    ids = list(image_ids)
    if not len(pred_masks) == len(truth_masks) == len(ids):
        raise ValueError(
            f"pred_masks, truth_masks, image_ids: expected the same number of images, got "
            f"{len(pred_masks)}, {len(truth_masks)} and {len(ids)}"
        )
    rows = []
    best_all = []
    for i, image_id in enumerate(ids):
        try:
            n_true, n_pred, n_matched, best = _match(pred_masks[i], truth_masks[i], iou_threshold)
        except ValueError as err:
            raise ValueError(f"image {i} ({image_id!r}): {err}") from err
        precision, recall, f1 = _scores(n_true, n_pred, n_matched)
        best_all.append(best)
        rows.append(
            {
                "image_id": image_id,
                "n_true": n_true,
                "n_pred": n_pred,
                "n_matched": n_matched,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "mean_iou": float(best.mean()) if n_true else float("nan"),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "image_id",
            "n_true",
            "n_pred",
            "n_matched",
            "precision",
            "recall",
            "f1",
            "mean_iou",
        ],
    )
    n_true = int(table["n_true"].sum())
    n_pred = int(table["n_pred"].sum())
    n_matched = int(table["n_matched"].sum())
    precision, recall, f1 = _scores(n_true, n_pred, n_matched)
    best = np.concatenate(best_all) if best_all else np.zeros(0)
    summary: dict[str, float | int] = {
        "n_images": len(ids),
        "n_true": n_true,
        "n_pred": n_pred,
        "n_matched": n_matched,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_iou": float(best.mean()) if best.size else float("nan"),
    }
    return table, summary
