"""ViTAD's metric set (pcad.metrics.vitad and evaluate's new keys) against hand-computed values,
scikit-learn's average precision and a brute-force F1-max sweep."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pcad.errors import InvalidInputError
from pcad.metrics import (
    VITAD_METRICS,
    aupro,
    average_precision,
    evaluate,
    f1_max,
    mad,
    mean_metrics,
    vitad_metrics,
)


def brute_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """F1 at every threshold ``score >= t`` (every distinct score), the best one."""
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = int(np.sum(pred & labels))
        fp = int(np.sum(pred & ~labels))
        fn = int(np.sum(~pred & labels))
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def test_image_ap_and_f1_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 0], bool)
    # AP = 1/2 * (1/1) + 1/2 * (2/3); F1 at t = 0.7: TP 2, FP 1, FN 0 -> 4/5
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores))
    assert f1_max(scores, labels)[0] == pytest.approx(0.8)
    assert f1_max(scores, labels)[0] == pytest.approx(brute_f1_max(scores, labels))


def test_ties_against_sklearn_and_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=30).astype(float)  # many ties
        labels = rng.random(30) < 0.4
        labels[0] = True
        assert average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores))
        assert f1_max(scores, labels)[0] == pytest.approx(brute_f1_max(scores, labels))


def test_evaluate_holds_vitad_set_by_hand():
    maps = [np.array([[0.9, 0.2], [0.6, 0.4]]), np.array([[0.5, 0.1]])]
    masks = [np.array([[1, 0], [0, 1]]), np.zeros((1, 2), int)]
    m = evaluate([0.9, 0.3], [1, 0], maps, masks, limits=(0.1,))  # 0.3 not among the limits
    # pixels by score: P N N P N N -> AP = 1/2 * 1 + 1/2 * 2/4; F1-max 2/3 (t = 0.9 or 0.4)
    assert m["p_ap"] == pytest.approx(0.75) and m["p_ap"] == m["ap_pixel"]
    assert m["p_f1_max"] == pytest.approx(2 / 3) and m["p_f1_max"] == m["f1_max_pixel"]
    flat_s = np.concatenate([a.ravel() for a in maps])
    flat_l = np.concatenate([a.ravel() for a in masks]).astype(bool)
    assert m["p_ap"] == pytest.approx(average_precision_score(flat_l, flat_s))
    assert m["p_f1_max"] == pytest.approx(brute_f1_max(flat_s, flat_l))
    assert m["i_ap"] == 1.0 and m["i_f1_max"] == 1.0 and m["i_auroc"] == 1.0
    # P-AUROC: pairs (positive > negative): 0.9 beats 4, 0.4 beats 2 of 4 -> 6/8
    assert m["p_auroc"] == pytest.approx(0.75)
    assert m["aupro_0.3"] == pytest.approx(aupro(maps, masks, fpr_limit=0.3))
    assert list(m["aupro"]) == ["0.1"]  # the requested limits are unchanged
    seven = [m[k] for k, _ in VITAD_METRICS]
    assert len(seven) == 7 and m["mad"] == pytest.approx(np.mean(seven))


def test_vitad_metrics_mad_and_means():
    m = {"i_auroc": 1.0, "ap_image": 0.5, "f1_max_image": 0.5, "p_auroc": 0.75,
         "ap_pixel": 0.25, "f1_max_pixel": 0.25, "aupro": {"0.3": 0.25}}
    v = vitad_metrics(m)
    assert v["i_ap"] == 0.5 and v["aupro_0.3"] == 0.25
    assert v["mad"] == pytest.approx((1 + 0.5 + 0.5 + 0.75 + 0.25 + 0.25 + 0.25) / 7)
    assert mad(v) == v["mad"]
    other = {**v, "i_auroc": 0.5, "mad": 0.1, "n_test": 3}
    mean = mean_metrics({"a": {**v, "n_test": 5, "aupro": {"0.3": 1.0, "0.1": 0.5}},
                         "b": {**other, "aupro": {"0.3": 0.5}}})
    assert mean["i_auroc"] == 0.75 and mean["n_test"] == 8
    assert mean["mad"] == pytest.approx((v["mad"] + 0.1) / 2)
    assert mean["aupro"] == {"0.3": 0.75}  # only the limits every category has
    with pytest.raises(InvalidInputError, match="p_ap"):
        mad({k: 1.0 for k, _ in VITAD_METRICS if k != "p_ap"})
    with pytest.raises(InvalidInputError, match="no category"):
        mean_metrics({})
