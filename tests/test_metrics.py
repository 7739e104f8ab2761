"""Tests of pcad.metrics: hand-computed AUPRO cases, a brute-force AUPRO reference, sklearn
parity for AUROC / AP / F1-max, memory, hypothesis properties and bad input."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pcad.errors import InvalidInputError
from pcad.metrics import (
    aupro,
    aupro_at,
    average_precision,
    evaluate,
    f1_max,
    flatten_pixels,
    image_auroc,
    pixel_auroc,
    pixel_average_precision,
    pixel_curve,
    pixel_f1_max,
    pro_curve,
    trapezoid,
)

TIGHT = 1e-12
LIMITS = (0.3, 0.1, 0.05, 0.01)


def row(*values: float) -> np.ndarray:
    """A (1, W) map or mask."""
    return np.array([values])


# --------------------------------------------------------------------------------------------
# Hand-computed AUPRO cases
# --------------------------------------------------------------------------------------------

# Case A: one 1x4 image, map [4, 3, 2, 1], gt [1, 0, 1, 0].
# Pixels 0 and 2 are not adjacent: two regions of size 1; normal pixels: 1 and 3 (n_ok = 2).
# Descending thresholds:  t=4: region 1 reached  -> (FPR, PRO) = (0, 0.5)
#                         t=3: a normal pixel     -> (0.5, 0.5)
#                         t=2: region 2 reached  -> (0.5, 1)
#                         t=1: a normal pixel     -> (1, 1)
# Framed curve: (0,0) (0,.5) (.5,.5) (.5,1) (1,1) (1,1).
# limit 0.3:  PRO interpolated at 0.3 on the flat segment (0,.5)-(.5,.5) is 0.5;
#             area = 0 (vertical) + 0.5 * 0.3 = 0.15 -> 0.15 / 0.3 = 0.5
# limit 0.5:  a curve point: area = 0.5 * 0.5 = 0.25 -> 0.25 / 0.5 = 0.5
# limit 0.75: area = 0.25 + 1 * 0.25 = 0.5 -> 0.5 / 0.75 = 2/3
# limit 1:    area = 0.25 + 1 * 0.5 = 0.75
CASE_A = ([row(4.0, 3.0, 2.0, 1.0)], [row(1, 0, 1, 0)])


def test_case_a_curve_and_limits():
    fprs, pros = pro_curve(*CASE_A)
    assert fprs.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    assert pros.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert aupro(*CASE_A, fpr_limit=0.3) == pytest.approx(0.5, abs=TIGHT)
    assert aupro(*CASE_A, fpr_limit=0.5) == pytest.approx(0.5, abs=TIGHT)
    assert aupro(*CASE_A, fpr_limit=0.75) == pytest.approx(2 / 3, abs=TIGHT)
    assert aupro(*CASE_A, fpr_limit=1.0) == pytest.approx(0.75, abs=TIGHT)


# Case B (ties, and interpolation on a sloped segment): one 1x4 image, map [2, 2, 1, 1],
# gt [1, 0, 0, 0]: one region of size 1, n_ok = 3.
# t=2 takes the region pixel AND a normal pixel together (they tie): (1/3, 1); t=1: (1, 1).
# Framed curve: (0,0) (1/3,1) (1,1) (1,1): the first segment is a slope PRO = 3 * FPR.
# limit 0.3:  PRO(0.3) = 0.9, area = 0.5 * 0.9 * 0.3 = 0.135 -> 0.45
# limit 0.1:  PRO(0.1) = 0.3, area = 0.5 * 0.3 * 0.1 = 0.015 -> 0.15
# limit 0.05: PRO = 0.15, area = 0.5 * 0.15 * 0.05 -> 0.075
# limit 0.01: PRO = 0.03, area = 0.5 * 0.03 * 0.01 -> 0.015
# limit 1:    1/6 + 2/3 = 5/6
# Had the tie been broken region-first the curve would be (0,1) at once (AUPRO 1.0);
# normal-first would give (1/3, 0) then (1/3, 1) (AUPRO@0.3 = 0). Merging gives the slope.
CASE_B = ([row(2.0, 2.0, 1.0, 1.0)], [row(1, 0, 0, 0)])


def test_case_b_ties_make_a_slope_interpolated_at_the_limit():
    fprs, pros = pro_curve(*CASE_B)
    np.testing.assert_allclose(fprs, [0.0, 1 / 3, 1.0, 1.0], atol=TIGHT)
    np.testing.assert_allclose(pros, [0.0, 1.0, 1.0, 1.0], atol=TIGHT)
    got = aupro_at(*CASE_B, limits=(0.3, 0.1, 0.05, 0.01, 1.0))
    expected = {"0.3": 0.45, "0.1": 0.15, "0.05": 0.075, "0.01": 0.015, "1.0": 5 / 6}
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=TIGHT), key


# Case C (8-connectivity, pooling, a good image that only adds false positives):
# image 1, 2x3:  map [[0.9, 0.1, 0.4],     gt [[1, 0, 0],
#                     [0.2, 0.8, 0.6]]         [0, 1, 1]]
#   (0,0) touches (1,1) diagonally: ONE 8-connected region {0.9, 0.8, 0.6} of size 3
#   (4-connectivity would give {0.9} and {0.8, 0.6}). Normal pixels: 0.1, 0.4, 0.2.
# image 2 (good), 1x2: map [0.85, 0.3], gt [0, 0]: two more normal pixels -> n_ok = 5.
# t=0.9 -> (0, 1/3); t=0.85 (good image) -> (0.2, 1/3); t=0.8 -> (0.2, 2/3);
# t=0.6 -> (0.2, 1); t=0.4 -> (0.4, 1); 0.3 -> (0.6, 1); 0.2 -> (0.8, 1); 0.1 -> (1, 1).
# limit 0.3: 0.2 * 1/3 + (0.3 - 0.2) * 1 = 1/15 + 1/10 = 1/6 -> (1/6) / 0.3 = 5/9
# limit 0.1: PRO stays 1/3 on [0, 0.2]: area 0.1/3 -> 1/3
#            (4-connectivity: PRO 1/2 there -> 0.5; without the good image, n_ok = 3, and
#            the curve would reach PRO 1 at FPR 0 -> 1.0)
# limit 1:   1/15 + 0.8 = 13/15
CASE_C = (
    [np.array([[0.9, 0.1, 0.4], [0.2, 0.8, 0.6]]), row(0.85, 0.3)],
    [np.array([[1, 0, 0], [0, 1, 1]]), row(0, 0)],
)


def test_case_c_eight_connectivity_and_good_image():
    curve = pixel_curve(*CASE_C)
    assert (curve.n_regions, curve.n_pos, curve.n_neg) == (1, 3, 5)
    got = aupro_at(*CASE_C, limits=(0.3, 0.1, 1.0))
    assert got["0.3"] == pytest.approx(5 / 9, abs=TIGHT)
    assert got["0.1"] == pytest.approx(1 / 3, abs=TIGHT)
    assert got["1.0"] == pytest.approx(13 / 15, abs=TIGHT)
    # Dropping the good image removes its false positives.
    assert aupro(CASE_C[0][:1], CASE_C[1][:1], 0.1) == pytest.approx(1.0, abs=TIGHT)


def test_ties_across_images_are_one_threshold():
    # The region pixel (image 1) and the normal pixel of a good image (image 2) tie at 5:
    # one point (FPR, PRO) = (1/3, 1), the same slope as case B, AUPRO@0.3 = 0.45.
    maps = [row(5.0, 1.0), row(5.0, 1.0)]
    masks = [row(1, 0), row(0, 0)]
    fprs, pros = pro_curve(maps, masks)
    assert len(fprs) == 4  # (0,0), t=5, t=1, (1,1)
    assert aupro(maps, masks) == pytest.approx(0.45, abs=TIGHT)


def test_signed_zero_and_infinities_tie():
    # -0.0 == 0.0 and inf == inf are one threshold each; infinite scores are ranked normally.
    maps = [row(np.inf, np.inf, -0.0, 0.0, -np.inf)]
    masks = [row(1, 0, 1, 0, 0)]
    finite = [row(9.0, 9.0, 0.0, 0.0, -9.0)]
    assert len(pixel_curve(maps, masks).thresholds) == 3
    for lim in (0.3, 0.5, 1.0):
        assert aupro(maps, masks, lim) == pytest.approx(aupro(finite, masks, lim), abs=TIGHT)


def test_trapezoid_official_rule():
    assert trapezoid([0.0, 1.0], [0.0, 1.0], x_max=0.5) == pytest.approx(0.125)
    # A vertical step exactly at x_max is kept (area 0), nothing beyond.
    assert trapezoid([0.0, 0.5, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0], x_max=0.5) == 0.0
    assert trapezoid([0.0, 0.5, 1.0], [1.0, 1.0, 1.0]) == 1.0
    with pytest.raises(InvalidInputError, match="x_max"):
        trapezoid([0.0, 0.5], [0.0, 1.0], x_max=0.75)


# --------------------------------------------------------------------------------------------
# Brute-force AUPRO reference
# --------------------------------------------------------------------------------------------


def brute_pro_points(maps, masks):
    """Loop over every distinct threshold; per-region overlap averaged; FPR over normal pixels."""
    labelled = [ndimage.label(np.asarray(m) > 0, structure=np.ones((3, 3))) for m in masks]
    n_regions = sum(k for _, k in labelled)
    n_ok = sum(int((lab == 0).sum()) for lab, _ in labelled)
    thresholds = sorted({float(v) for m in maps for v in np.ravel(m)}, reverse=True)
    points = [(0.0, 0.0)]
    for t in thresholds:
        false_pos, overlap = 0, 0.0
        for amap, (lab, k) in zip(maps, labelled, strict=True):
            predicted = np.asarray(amap, dtype=np.float64) >= t
            false_pos += int((predicted & (lab == 0)).sum())
            for r in range(1, k + 1):
                region = lab == r
                overlap += predicted[region].sum() / region.sum()
        points.append((false_pos / n_ok, overlap / n_regions))
    points.append((1.0, 1.0))
    return points


def brute_area(points, limit):
    """Integrate the polyline segment by segment up to ``limit``, interpolating the last one."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_lim) * (limit - x0)
            break
    return area / limit


def random_case(rng, n_images, levels, good_fraction=0.3, max_side=7, dtype=np.float64):
    """Maps with many ties (``levels`` distinct values), sizes differing, some good images."""
    while True:
        maps, masks = [], []
        for _ in range(n_images):
            h, w = rng.integers(1, max_side + 1, size=2)
            maps.append((rng.integers(0, levels, size=(h, w)) / levels).astype(dtype))
            if rng.random() < good_fraction:
                masks.append(np.zeros((h, w), dtype=np.uint8))
            else:
                masks.append((rng.random((h, w)) < 0.3).astype(np.uint8) * 255)
        total = sum(m.size for m in masks)
        pos = sum(int((m > 0).sum()) for m in masks)
        if 0 < pos < total:
            return maps, masks


@pytest.mark.parametrize("seed", range(25))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    levels = [2, 3, 5, 10, 1000][seed % 5]
    dtype = np.float32 if seed % 2 else np.float64
    maps, masks = random_case(rng, n_images=int(rng.integers(1, 6)), levels=levels, dtype=dtype)
    points = brute_pro_points(maps, masks)
    fprs, pros = pro_curve(maps, masks)
    np.testing.assert_allclose(fprs, [p[0] for p in points], rtol=0, atol=TIGHT)
    np.testing.assert_allclose(pros, [p[1] for p in points], rtol=0, atol=TIGHT)
    # Limits: the standard ones, 1, and limits that fall exactly on curve points.
    on_curve = [float(x) for x in fprs[1:-1] if 0 < x <= 1][:3]
    limits = (*LIMITS, 1.0, 0.5, 0.123, *on_curve)
    got = aupro_at(maps, masks, limits)
    for lim in limits:
        assert got[str(float(lim))] == pytest.approx(brute_area(points, lim), abs=TIGHT), lim
        assert aupro(maps, masks, lim) == got[str(float(lim))]


@pytest.mark.parametrize("seed", range(5))
def test_aupro_equals_the_trapezoid_of_the_full_curve(seed):
    # aupro / aupro_at only build the curve up to the largest limit: same value, bit for bit.
    rng = np.random.default_rng(50 + seed)
    maps, masks = random_case(rng, n_images=6, levels=[3, 30, 10**6][seed % 3], max_side=15)
    fprs, pros = pro_curve(maps, masks)
    got = aupro_at(maps, masks, (*LIMITS, 0.5, 1.0))
    for lim in (*LIMITS, 0.5, 1.0):
        expected = min(max(trapezoid(fprs, pros, x_max=lim) / lim, 0.0), 1.0)
        assert got[str(lim)] == expected
        assert aupro(maps, masks, lim) == expected


def test_images_of_different_sizes_and_stacked_input():
    rng = np.random.default_rng(7)
    shapes = [(5, 9), (8, 3), (1, 11), (6, 6)]
    maps = [rng.integers(0, 6, size=s) / 6 for s in shapes]
    masks = [(rng.random(s) < 0.25) for s in shapes]
    masks[2][:] = False  # a good image
    points = brute_pro_points(maps, masks)
    for lim in LIMITS:
        assert aupro(maps, masks, lim) == pytest.approx(brute_area(points, lim), abs=TIGHT)
    # An (N, H, W) array equals the list of its images.
    same = [rng.random((4, 5)) for _ in range(3)]
    same_masks = [rng.random((4, 5)) < 0.3 for _ in range(3)]
    assert aupro(np.stack(same), np.stack(same_masks)) == aupro(same, same_masks)


def test_memory_is_a_small_multiple_of_the_input(monkeypatch):
    # ~300k pixels in images of three sizes, continuous float32 scores (almost every score
    # distinct: the worst case for the curve's size). A per-threshold approach would need
    # K x N bytes; building the official float64 change maps alone takes 12 bytes per pixel.
    monkeypatch.setattr("pcad.metrics.ranking.CHUNK", 4096)  # as for a large test set
    rng = np.random.default_rng(3)
    shapes = [(300, 400), (250, 350), (200, 500)]
    maps = [rng.random(s, dtype=np.float32) for s in shapes]
    masks = []
    for s in shapes:
        m = np.zeros(s, dtype=np.uint8)
        m[40:90, 60:140] = 255
        m[150:170, 10:30] = 255
        masks.append(m)
    masks[0][:] = 0  # a good image
    n_pixels = sum(m.size for m in maps)
    peaks = {}
    tracemalloc.start()
    try:
        for name, call in [
            ("aupro_at", lambda: aupro_at(maps, masks)),
            ("evaluate", lambda: evaluate(None, None, maps, masks)),
        ]:
            tracemalloc.reset_peak()
            result = call()
            peaks[name] = tracemalloc.get_traced_memory()[1] / n_pixels
    finally:
        tracemalloc.stop()
    assert set(result["aupro"]) == {"0.3", "0.1", "0.05", "0.01"}
    # Inputs: 5 bytes per pixel. Sorting needs ~22 bytes per pixel and the curve 28 bytes per
    # distinct score (measured: ~36 for both calls).
    assert max(peaks.values()) < 48, peaks


# --------------------------------------------------------------------------------------------
# AUROC / AP / F1-max: hand values and sklearn parity
# --------------------------------------------------------------------------------------------


def test_classification_hand_values():
    # Pairs (positive, negative): 0.35 > 0.1, 0.35 < 0.4, 0.8 > both -> 3 of 4 -> 0.75.
    assert image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # With a tie: positives {1, 3}, negatives {1, 2}: 0.5 + 0 + 1 + 1 = 2.5 of 4.
    assert image_auroc([1, 1, 2, 3], [0, 1, 0, 1]) == 0.625
    # AP: t=0.8 -> R 0.5, P 1; t=0.35 -> R 1, P 2/3: 0.5 * 1 + 0.5 * 2/3 = 5/6.
    assert average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)
    # F1 = 2TP / (TP + FP + P): t=0.8 -> 2/3, t=0.4 -> 1/2, t=0.35 -> 4/5, t=0.1 -> 2/3.
    assert f1_max([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == (pytest.approx(0.8), 0.35)
    # Equal best F1 at two thresholds: the higher threshold is returned.
    # Scores [4, 3, 2, 1], labels [1, 0, 0, 1]: t=4 -> 2/3, t=3 -> 1/2, t=2 -> 2/5,
    # t=1 -> 4/6 = 2/3.
    assert f1_max([4, 3, 2, 1], [1, 0, 0, 1]) == (pytest.approx(2 / 3), 4.0)
    # With no negative, AP and F1-max are 1.
    assert average_precision([0.2, 0.1], [1, 1]) == 1.0
    assert f1_max([0.2, 0.1], [1, 1]) == (1.0, 0.1)


def sklearn_f1_by_threshold(labels, scores):
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return dict(zip(thresholds.tolist(), f1[:-1].tolist(), strict=True))


@pytest.mark.parametrize("seed", range(12))
def test_image_metrics_match_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 300))
    scores = rng.integers(0, [3, 10, 50, 10**6][seed % 4], size=n) / 7.0  # many ties
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=TIGHT)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=TIGHT
    )
    f1, threshold = f1_max(scores, labels)
    by_threshold = sklearn_f1_by_threshold(labels, scores)
    assert f1 == pytest.approx(max(by_threshold.values()), abs=TIGHT)
    assert by_threshold[threshold] == pytest.approx(f1, abs=TIGHT)


def test_chunked_reductions_equal_one_chunk(monkeypatch):
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 40, size=1000) / 3.0
    labels = rng.random(1000) < 0.3
    whole = (image_auroc(scores, labels), average_precision(scores, labels), f1_max(scores, labels))
    monkeypatch.setattr("pcad.metrics.ranking.CHUNK", 3)
    assert image_auroc(scores, labels) == whole[0]
    assert average_precision(scores, labels) == pytest.approx(whole[1], abs=TIGHT)
    assert f1_max(scores, labels) == whole[2]


@pytest.mark.parametrize("seed", range(6))
def test_pixel_metrics_match_sklearn(seed):
    rng = np.random.default_rng(200 + seed)
    maps, masks = random_case(rng, n_images=4, levels=[4, 20, 10**5][seed % 3], max_side=20)
    flat_scores = np.concatenate([m.ravel() for m in maps])
    flat_labels = np.concatenate([m.ravel() > 0 for m in masks])
    assert pixel_auroc(maps, masks) == pytest.approx(
        roc_auc_score(flat_labels, flat_scores), abs=TIGHT
    )
    assert pixel_average_precision(maps, masks) == pytest.approx(
        average_precision_score(flat_labels, flat_scores), abs=TIGHT
    )
    f1, threshold = pixel_f1_max(maps, masks)
    by_threshold = sklearn_f1_by_threshold(flat_labels, flat_scores)
    assert f1 == pytest.approx(max(by_threshold.values()), abs=TIGHT)
    assert by_threshold[threshold] == pytest.approx(f1, abs=TIGHT)
    scores, labels = flatten_pixels(maps, masks)
    assert np.array_equal(scores, flat_scores) and np.array_equal(labels, flat_labels)


def test_evaluate_agrees_with_the_single_metrics():
    rng = np.random.default_rng(11)
    maps, masks = random_case(rng, n_images=8, levels=12, max_side=12)
    labels = [int(m.any()) for m in masks]
    labels[0], labels[1] = 1, 0
    scores = rng.random(8)
    out = evaluate(scores, labels, maps, masks)
    assert out["i_auroc"] == image_auroc(scores, labels)
    assert out["ap_image"] == average_precision(scores, labels)
    assert (out["f1_max_image"], out["f1_threshold_image"]) == f1_max(scores, labels)
    assert out["p_auroc"] == pixel_auroc(maps, masks)
    assert out["ap_pixel"] == pytest.approx(pixel_average_precision(maps, masks), abs=TIGHT)
    assert (out["f1_max_pixel"], out["f1_threshold_pixel"]) == pixel_f1_max(maps, masks)
    assert out["aupro"] == aupro_at(maps, masks, LIMITS)
    assert out["n_test"] == 8 and out["n_anomalous"] == sum(labels)
    assert out["n_anomalous_pixels"] + out["n_normal_pixels"] == sum(m.size for m in masks)
    json.dumps(out)  # plain Python types only


def test_evaluate_defaults_image_scores_to_map_max_and_labels_to_masks():
    out = evaluate(None, None, *CASE_C, limits=(0.3,))
    # image scores = max(map) = [0.9, 0.85], labels from masks = [1, 0] -> I-AUROC 1.
    assert out["i_auroc"] == 1.0 and out["n_anomalous"] == 1 and out["n_test"] == 2
    assert out["aupro"] == {"0.3": pytest.approx(5 / 9, abs=TIGHT)}


# --------------------------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------------------------


@st.composite
def pixel_cases(draw):
    """1-4 images of 1-6 x 1-6 pixels, integer scores 0..5 (ties), at least one anomalous and
    one normal pixel."""
    n = draw(st.integers(1, 4))
    maps, masks = [], []
    for _ in range(n):
        shape = draw(st.tuples(st.integers(1, 6), st.integers(1, 6)))
        maps.append(draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 5))))
        masks.append(draw(hnp.arrays(np.bool_, shape)))
    if sum(m.size for m in masks) == 1:  # room for both classes
        maps.append(np.zeros((1, 1), dtype=np.int64))
        masks.append(~masks[0])
    flat = np.concatenate([m.ravel() for m in masks])
    if flat.all():
        masks[0].flat[0] = False
    if not flat.any():
        masks[-1].flat[-1] = True
    return maps, masks


@settings(max_examples=60, deadline=None)
@given(pixel_cases(), st.sampled_from([1.0, 0.3, 0.1, 0.05, 0.01, 0.7]))
def test_aupro_is_in_unit_interval(case, limit):
    assert 0.0 <= aupro(*case, fpr_limit=limit) <= 1.0


@settings(max_examples=60, deadline=None)
@given(pixel_cases(), st.integers(0, 2**31))
def test_perfect_separation_gives_one(case, seed):
    _, masks = case
    rng = np.random.default_rng(seed)
    maps = [np.where(m, 10.0 + rng.random(m.shape), rng.random(m.shape)) for m in masks]
    for value in aupro_at(maps, masks, (*LIMITS, 1.0)).values():
        assert value == pytest.approx(1.0, abs=TIGHT)
    assert pixel_auroc(maps, masks) == 1.0


@settings(max_examples=60, deadline=None)
@given(pixel_cases())
def test_invariant_to_strictly_increasing_transforms(case):
    maps, masks = case
    # Exact in float64 for integer scores 0..5, and strictly increasing.
    transformed = [2.0 ** m - 100.0 for m in maps]
    assert aupro_at(transformed, masks) == aupro_at(maps, masks)
    assert pixel_auroc(transformed, masks) == pixel_auroc(maps, masks)
    scores = np.array([m.max() for m in maps])
    labels = np.array([m.any() for m in masks])
    if labels.any() and not labels.all():
        assert image_auroc(2.0 ** scores, labels) == image_auroc(scores, labels)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

MAPS, MASKS = CASE_C


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: aupro(MAPS, MASKS[:1]), "different lengths, 2 maps and 1 masks"),
        (lambda: aupro([], []), "empty"),
        (lambda: aupro([np.zeros((0, 3))], [np.zeros((0, 3))]), r"anomaly_maps\[0\]: empty"),
        (lambda: aupro(MAPS[0], MASKS[0]), "wrap a single image in a list"),
        (lambda: aupro([np.zeros(4)], [np.zeros(4)]), r"anomaly_maps\[0\].*\(H, W\)"),
        (lambda: aupro(5, MASKS), "sequence"),
        (lambda: aupro([np.array([["a"]])], [np.array([[1]])]), "numeric"),
        (
            lambda: aupro([MAPS[0], np.zeros((2, 2))], MASKS),
            r"anomaly_maps\[1\] has shape \(2, 2\) but gt_masks\[1\] has shape \(1, 2\)",
        ),
        (
            lambda: aupro([MAPS[0], row(np.nan, 0.0)], MASKS),
            r"anomaly_maps\[1\]: 1 of 2 values are NaN",
        ),
        (lambda: aupro(MAPS, [MASKS[0], row(np.nan, 0.0)]), r"gt_masks\[1\].*NaN"),
        (lambda: aupro(MAPS, [np.zeros((2, 3)), np.zeros((1, 2))]), "no anomalous pixel"),
        (lambda: aupro(MAPS, [np.ones((2, 3)), np.ones((1, 2))]), "normal pixels"),
        (lambda: aupro(MAPS, MASKS, fpr_limit=0), "fpr_limit"),
        (lambda: aupro(MAPS, MASKS, fpr_limit=-0.1), "fpr_limit"),
        (lambda: aupro(MAPS, MASKS, fpr_limit=1.5), "fpr_limit"),
        (lambda: aupro(MAPS, MASKS, fpr_limit=math.nan), "fpr_limit"),
        (lambda: aupro(MAPS, MASKS, fpr_limit=True), "fpr_limit"),
        (lambda: aupro_at(MAPS, MASKS, limits=()), "limits: empty"),
        (lambda: aupro_at(MAPS, MASKS, limits=(0.3, 2.0)), r"limits\[1\]"),
        (lambda: image_auroc([0.1, 0.2], [1]), "labels: expected 2 labels .one per score., got 1"),
        (lambda: image_auroc([], []), "empty"),
        (lambda: image_auroc([0.1, np.nan], [0, 1]), "NaN"),
        (lambda: image_auroc([0.1, 0.2], [0.0, np.nan]), "NaN"),
        (lambda: image_auroc([[0.1, 0.2]], [[0, 1]]), "1-D"),
        (lambda: image_auroc([0.1, 0.2], [1, 1]), "no normal sample"),
        (lambda: image_auroc([0.1, 0.2], [0, 0]), "no anomalous sample"),
        (lambda: average_precision([0.1, 0.2], [0, 0]), "no anomalous sample"),
        (lambda: f1_max([0.1, 0.2], [0, 0]), "no anomalous sample"),
        (lambda: pixel_auroc(MAPS, [np.zeros((2, 3)), np.zeros((1, 2))]), "no anomalous"),
        (lambda: pixel_auroc(MAPS, [np.ones((2, 3)), np.ones((1, 2))]), "no normal"),
        (lambda: pixel_f1_max([MAPS[0], np.zeros((3, 3))], MASKS), r"\[1\] has shape"),
        (lambda: evaluate([0.1], [1, 0], MAPS, MASKS), "image_scores: expected 2 scores"),
        (lambda: evaluate([0.1, 0.2], [1], MAPS, MASKS), "image_labels"),
        (lambda: evaluate([0.1, 0.2], [1, 1], MAPS, MASKS), "image AUROC is undefined"),
        (lambda: evaluate([0.1, np.nan], [1, 0], MAPS, MASKS), "image_scores.*NaN"),
        (lambda: evaluate(None, None, MAPS, MASKS, limits=(0.0,)), "limits"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call()


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        aupro(MAPS, MASKS, fpr_limit=2)
