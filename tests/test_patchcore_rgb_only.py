"""``patchcore-rgb`` on RGB-only data (no xyz): the whole image is scored, and the ablation
options (``layers``, ``aggregate_kernel``, ``image_score``) work and are checked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, load_detector
from pcad.detectors.patches import SampleForeground, foreground_max
from pcad.errors import InvalidInputError
from synth.dataset import DatasetConfig, generate

FAST = {"image_size": 64}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 x 64 gear: 4 training, 2 good and 1 contaminated test sample, with xyz on disk
    (read with ``modality="rgb"`` for the RGB-only samples, with xyz to find the background)."""
    root = tmp_path_factory.mktemp("rgbonly") / "synth"
    generate(DatasetConfig(categories=("gear",), train=4, validation=0, test_good=2,
                           test_defect=1, defects=("contamination",), size=(64, 64), seed=0),
             root, progress=False)
    torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
    return root


@pytest.fixture(scope="module")
def train_rgb(data):
    samples = list(MVTec3DDataset(data, "gear", "train", modality="rgb"))
    assert samples and all(s.xyz is None for s in samples)
    return samples


def _background_patch(sample_xyz: np.ndarray, side: int = 10) -> tuple[int, int]:
    """Top-left corner of a ``side`` square with no part pixel (far off the foreground)."""
    part = SampleForeground(sample_xyz).part(dilate=6)
    h, w = part.shape
    for y in range(0, h - side + 1, 2):
        for x in range(0, w - side + 1, 2):
            if not part[y:y + side, x:x + side].any():
                return y, x
    raise AssertionError("no background square in the test image")


@pytest.mark.parametrize("mode", ["foreground-max", "map-max", "auto"])
def test_rgb_only_scores_the_whole_map(data, train_rgb, mode):
    det = create_detector("patchcore-rgb", image_score=mode, coreset_ratio=1.0,
                          **FAST).fit(train_rgb)
    test = list(MVTec3DDataset(data, "gear", "test", modality="rgb"))
    with_xyz = list(MVTec3DDataset(data, "gear", "test", modality="rgb+xyz"))
    for s in test:
        score, amap = det.predict(s)
        assert s.xyz is None and amap.shape == s.rgb.shape[:2]
        assert score == pytest.approx(float(amap.max()), rel=1e-6)
        assert score == foreground_max(amap, None)

    # an anomaly off any foreground (a magenta square on the background mat) still counts
    good = next(i for i, s in enumerate(test) if s.label == 0)
    s, full = test[good], with_xyz[good]
    y, x = _background_patch(full.xyz)
    painted = s.rgb.copy()
    painted[y:y + 10, x:x + 10] = (255, 0, 255)
    s2 = replace(s, rgb=painted)
    base, amap = det.predict(s)
    score2, amap2 = det.predict(s2)
    assert score2 > base
    # the maximum is where the paint is
    iy, ix = np.unravel_index(int(np.argmax(amap2)), amap2.shape)
    assert abs(iy - (y + 5)) <= 12 and abs(ix - (x + 5)) <= 12

    # with xyz, foreground-max ignores that square (off the part), map-max does not
    full2 = replace(full, rgb=painted)
    fscore, famap = det.predict(full2)
    if mode == "foreground-max":  # ("auto" of patchcore-rgb is map-max, with xyz too)
        assert fscore == foreground_max(famap, full2.xyz) < float(famap.max())
    else:
        assert fscore == pytest.approx(float(famap.max()), rel=1e-6)


def test_foreground_max_without_cloud():
    amap = np.zeros((16, 16), np.float32)
    amap[15, 0] = 3.0
    assert foreground_max(amap, None) == 3.0
    xyz = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(InvalidInputError, match="without its cloud"):
        foreground_max(amap, None, foreground=SampleForeground(xyz))


def test_score_modes_share_the_map(data, train_rgb):
    """Every image-score rule gives the same map; ``patch-max`` is the largest patch
    distance, at least the blurred map's maximum; ``auto`` is the map's maximum (the default
    chosen by benchmarks/bench_patchcore_ablation.py)."""
    s = list(MVTec3DDataset(data, "gear", "test", modality="rgb"))[-1]
    out = {m: create_detector("patchcore-rgb", image_score=m, sigma=4.0, **FAST)
           .fit(train_rgb).predict(s)
           for m in ("auto", "reweighted", "map-max", "patch-max", "foreground-max")}
    for m, (_, amap) in out.items():
        assert np.array_equal(amap, out["auto"][1]), m
    assert out["auto"][0] == out["map-max"][0] == out["foreground-max"][0]
    assert out["auto"][0] == float(out["auto"][1].max())
    assert out["patch-max"][0] >= out["map-max"][0]
    assert out["reweighted"][0] < out["patch-max"][0]  # the re-weight is a factor in (0, 1)


def test_layers_and_aggregation_options(data, train_rgb, tmp_path):
    s = MVTec3DDataset(data, "gear", "test", modality="rgb")[0]
    one = create_detector("patchcore-rgb", layers=[4], coreset_ratio=1.0, **FAST).fit(train_rgb)
    assert one.bank.dim == 40  # block 4 of EfficientNet-Lite0: 40 channels
    flat = create_detector("patchcore-rgb", aggregate_kernel=1, coreset_ratio=1.0,
                           **FAST).fit(train_rgb)
    agg = create_detector("patchcore-rgb", coreset_ratio=1.0, **FAST).fit(train_rgb)
    assert flat.bank.dim == agg.bank.dim == 152
    assert not np.allclose(flat.predict(s)[1], agg.predict(s)[1])
    one.save(tmp_path / "run")
    again = load_detector(tmp_path / "run")
    assert again.config["layers"] == [4]
    a, ma = one.predict(s)
    b, mb = again.predict(s)
    assert a == b and np.array_equal(ma, mb)


@pytest.mark.parametrize("bad", [{"layers": []}, {"layers": "4"}, {"layers": [True]},
                                 {"aggregate_kernel": 2}, {"aggregate_kernel": 0},
                                 {"image_score": "mean"}])
def test_bad_options(bad):
    with pytest.raises(InvalidInputError):
        create_detector("patchcore-rgb", **bad)
