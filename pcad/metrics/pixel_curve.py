"""One sort of all pixels of all test images: every pixel-level curve at once.

:func:`pixel_curve` labels the 8-connected ground-truth regions of every mask, pools all pixels
of all images (good images included), sorts their scores once in descending order and keeps,
at the end of every run of equal scores, the cumulative counts: anomalous pixels (TP), normal
pixels (FP) and the sum over regions of the fraction of the region already reached (the PRO
numerator, accumulated as ``cumsum(1 / |region|)`` over region pixels). No per-threshold mask
is ever built; the peak memory is a few arrays of the total pixel count (about 30 bytes per
pixel with float64 maps, 22 with float32, while sorting) plus the output, 28 bytes per
distinct score.

Example:
    >>> import numpy as np
    >>> from pcad.metrics.pixel_curve import pixel_curve
    >>> c = pixel_curve([np.array([[4.0, 3.0, 2.0, 1.0]])], [np.array([[1, 0, 1, 0]])])
    >>> c.thresholds.tolist(), c.tps.tolist(), c.fps.tolist(), c.n_regions
    ([4.0, 3.0, 2.0, 1.0], [1, 1, 2, 2], [0, 1, 1, 2], 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from pcad.checks import check_maps_and_masks
from pcad.errors import InvalidInputError
from pcad.metrics.ranking import descending_order, run_ends

#: 3x3 all-ones structuring element: 8-connectivity, as the official MVTec evaluation.
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


@dataclass(frozen=True)
class PixelCurve:
    """Cumulative pixel counts at every distinct score, highest score first.

    Attributes:
        thresholds: ``(K,)`` the distinct pixel scores, descending.
        tps: ``(K,) int64`` anomalous pixels with score ``>= thresholds[k]``.
        fps: ``(K,) int64`` normal pixels with score ``>= thresholds[k]``.
        pro_sums: ``(K,) float64`` sum over regions of the fraction of the region's pixels
            with score ``>= thresholds[k]`` (divide by ``n_regions`` for the PRO).
        n_pos: anomalous pixels in all masks.
        n_neg: normal pixels in all masks (good images included).
        n_regions: 8-connected ground-truth regions, pooled over all images.
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    pro_sums: np.ndarray
    n_pos: int
    n_neg: int
    n_regions: int


def _pool(maps: list[np.ndarray], masks: list[np.ndarray]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """All pixels of checked maps and masks: ``(scores (N,), region ids (N,), region sizes
    (R + 1,), regions per image)``; region ids are 8-connected ground-truth regions numbered
    from 1 across the images (0: normal pixel); ``sizes[0]`` is a placeholder 0."""
    n_total = sum(m.size for m in maps)
    score_dtype = np.result_type(np.float32, *(m.dtype for m in maps))
    id_dtype = np.int32 if n_total < np.iinfo(np.int32).max else np.int64
    scores = np.empty(n_total, dtype=score_dtype)
    region = np.empty(n_total, dtype=id_dtype)
    sizes = [np.zeros(1, dtype=np.int64)]  # sizes[0]: placeholder for the background id 0
    per_image = []
    n_regions = 0
    start = 0
    for amap, mask in zip(maps, masks, strict=True):
        stop = start + amap.size
        scores[start:stop] = amap.ravel()
        labels, k = ndimage.label(mask, structure=EIGHT_CONNECTED)
        ids = region[start:stop]
        ids[...] = labels.ravel()
        if k:
            sizes.append(np.bincount(ids, minlength=k + 1)[1:].astype(np.int64))
            np.add(ids, n_regions, out=ids, where=ids > 0)
        n_regions += int(k)
        per_image.append(int(k))
        start = stop
    return scores, region, np.concatenate(sizes), per_image


def _sorted_curve(sorted_scores: np.ndarray, sorted_region: np.ndarray,
                  region_sizes: np.ndarray, n_pos: int, n_regions: int) -> PixelCurve:
    """The :class:`PixelCurve` of pixels sorted by descending score, from their region ids
    (indices into ``region_sizes``; 0: normal), the anomalous pixel count ``n_pos`` and the
    region count ``n_regions`` of these pixels."""
    n_total = sorted_scores.shape[0]
    keep = run_ends(sorted_scores)
    thresholds = sorted_scores[keep]

    # Only the anomalous pixels are visited: with P of them and K distinct scores, this needs
    # O(P + K) memory instead of cumulative sums over all N pixels.
    pos_index = np.flatnonzero(sorted_region)  # (P,) sorted positions of anomalous pixels
    inv_size = np.zeros(region_sizes.shape[0], dtype=np.float64)
    inv_size[1:] = 1.0 / region_sizes[1:]
    cum_overlap = np.zeros(pos_index.shape[0] + 1, dtype=np.float64)  # (P + 1,), from 0
    np.cumsum(inv_size[sorted_region[pos_index]], out=cum_overlap[1:])
    ends = np.flatnonzero(keep)
    del keep
    ends += 1  # (K,) pixels with score >= each threshold
    tps = np.searchsorted(pos_index, ends).astype(np.int64, copy=False)
    del pos_index
    pro_sums = cum_overlap[tps]  # overlap summed over the first tps anomalous pixels
    fps = ends.astype(np.int64, copy=False)
    fps -= tps
    return PixelCurve(thresholds, tps, fps, pro_sums, n_pos, n_total - n_pos, n_regions)


def pixel_curve_unchecked(maps: list[np.ndarray], masks: list[np.ndarray]) -> PixelCurve:
    """:func:`pixel_curve` without the input checks: ``maps`` float and ``masks`` bool arrays
    already checked to have equal shapes (what the evaluators call after checking once)."""
    scores, region, region_sizes, _ = _pool(maps, masks)
    order = descending_order(scores)
    sorted_scores = scores[order]
    del scores
    sorted_region = region[order]
    del region, order
    return _sorted_curve(sorted_scores, sorted_region, region_sizes,
                         int(region_sizes.sum()), region_sizes.shape[0] - 1)


class PixelRanking:
    """All pixels of all test images sorted once; the :class:`PixelCurve` of any subset of the
    images without sorting again (per-defect metrics of one test set).

    The curve of a subset equals :func:`pixel_curve` of that subset's maps and masks (tied
    scores may be visited in another order, which changes only the rounding of ``pro_sums``
    when a run of tied scores holds pixels of regions of different sizes). Holds about 12 bytes
    per pixel with float32 maps (sorted scores, region ids, image ids).

    Args:
        anomaly_maps: sequence of ``N`` ``(H_i, W_i)`` maps (see :func:`pixel_curve`).
        gt_masks: sequence of ``N`` ``(H_i, W_i)`` masks, anomalous where > 0.

    Example:
        >>> import numpy as np
        >>> maps = [np.array([[4.0, 1.0]]), np.array([[3.0, 2.0]])]
        >>> masks = [np.array([[1, 0]]), np.array([[0, 1]])]
        >>> ranking = PixelRanking(maps, masks)
        >>> ranking.curve().tps.tolist(), ranking.curve([1]).tps.tolist()
        ([1, 1, 2, 2], [0, 1])
        >>> ranking.curve([1]).tps.tolist() == pixel_curve(maps[1:], masks[1:]).tps.tolist()
        True
    """

    def __init__(self, anomaly_maps: Any, gt_masks: Any) -> None:
        maps, masks = check_maps_and_masks(anomaly_maps, gt_masks)
        scores, region, self.region_sizes, per_image = _pool(maps, masks)
        self.n_images = len(maps)
        #: ``(R + 1,)`` the image of each region (entry 0: unused)
        self.region_image = np.concatenate(
            [np.zeros(1, np.int64), np.repeat(np.arange(self.n_images), per_image)])
        image = np.repeat(np.arange(self.n_images, dtype=np.int32), [m.size for m in maps])
        order = descending_order(scores)
        #: ``(N,)`` every pixel's score, descending; its region id; its image index
        self.scores = scores[order]
        del scores
        self.region = region[order]
        del region
        self.image = image[order]

    @property
    def n_pixels(self) -> int:
        """All pixels of all images."""
        return int(self.scores.shape[0])

    def curve(self, images: Any = None) -> PixelCurve:
        """The :class:`PixelCurve` of the images ``images`` (indices, each counted once), or of
        every image when None."""
        if images is None:
            return _sorted_curve(self.scores, self.region, self.region_sizes,
                                 int(self.region_sizes.sum()), self.region_sizes.shape[0] - 1)
        idx = np.asarray(images, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.n_images:
            raise InvalidInputError(f"images: expected one or more indices in [0, "
                                    f"{self.n_images}), got {idx.tolist()}")
        chosen = np.zeros(self.n_images, dtype=bool)
        chosen[idx] = True
        sel = chosen[self.image]
        in_subset = chosen[self.region_image]
        in_subset[0] = False
        return _sorted_curve(self.scores[sel], self.region[sel], self.region_sizes,
                             int(self.region_sizes[in_subset].sum()), int(in_subset.sum()))


def pixel_curve(anomaly_maps: Any, gt_masks: Any) -> PixelCurve:
    """Cumulative TP, FP and per-region overlap at every distinct score of all pixels.

    Args:
        anomaly_maps: sequence of ``(H_i, W_i)`` numeric maps (no NaN; sizes may differ per
            image) or one ``(N, H, W)`` array.
        gt_masks: sequence of ``(H_i, W_i)`` masks, anomalous where > 0, map ``i``'s shape.
            Pixel metrics are computed at the ground truth's resolution: resize the maps first.

    Returns:
        A :class:`PixelCurve`.
    """
    return pixel_curve_unchecked(*check_maps_and_masks(anomaly_maps, gt_masks))
