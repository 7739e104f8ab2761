"""``prototypes-ot``: options, the OT helpers (``pot`` computes every plan), fit / predict
shapes, save / load, determinism and a quality floor on a tiny fixed dataset of bump defects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import ot
import pytest
from sklearn.metrics import roc_auc_score

from pcad.detectors import create_detector, detector_info, list_detectors, load_detector
from pcad.detectors import prototypes_ot as mod
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
NAME = "prototypes-ot"
BOTH = {"image_size": 64, "modality": "both", "device": "cpu"}
#: measured I-AUROC on this data: 1.0 ("both"; 0.94 with "rgb"); the floor leaves a margin
QUALITY_FLOOR = 0.85

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    """64 x 64 plates: 6 train, 4 good + 4 bump test samples."""
    return tiny_dataset(tmp_path_factory, "prototypes_ot_data", CATEGORY, train=6, test_good=4,
                        test_defect=4, defects=("bump",))


@pytest.fixture(scope="module")
def fitted(data):
    det = create_detector(NAME, **BOTH)
    return det.fit(list(open_split(data, CATEGORY, "train", det)))


@pytest.fixture(scope="module")
def test_set(data, fitted) -> list:
    return list(open_split(data, CATEGORY, "test", fitted))


def test_registered_with_documented_options():
    assert NAME in list_detectors()
    cls = detector_info(NAME).obj
    assert cls.supports_distributed is False and cls.modalities == ("rgb",)
    for key, _default, meaning in cls.options():
        assert meaning, key
    assert create_detector(NAME).config["modality"] == "auto"
    assert create_detector(NAME, modality="xyz").modalities == ("xyz",)
    assert create_detector(NAME, modality="both").modalities == ("rgb", "xyz")


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"k": 0}, "k"), ({"local_k": 0}, "local_k"),
    ({"cell": 3, "image_size": 64}, "cell"), ({"alpha": 1.5}, "alpha"), ({"mix": -0.1}, "mix"),
    ({"iters": -1}, "iters"), ({"reg": 0}, "reg"), ({"solver": "lp"}, "solver"),
    ({"max_patches": 0}, "max_patches"), ({"image_score": "mean"}, "image_score"),
    ({"image_size": 60}, "image_size"), ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector(NAME, **config)
    assert "\n" not in str(info.value)


def test_plans_are_pots():
    """The plans are ``ot.emd``'s / ``ot.sinkhorn``'s, and the clustering calls ot.sinkhorn."""
    rng = np.random.default_rng(3)
    cost = rng.random((5, 3))
    a, b = ot.unif(5), ot.unif(3)
    assert np.array_equal(mod.transport_plan(cost, "emd"), ot.emd(a, b, cost))
    want = ot.sinkhorn(a, b, cost, 0.1 * cost.max(), numItermax=mod.SINKHORN_ITERS,
                       stopThr=mod.SINKHORN_TOL, warn=False)
    assert np.array_equal(mod.transport_plan(cost, "sinkhorn", 0.1), want)
    plan = mod.transport_plan(cost, "emd")  # uniform marginals
    np.testing.assert_allclose(plan.sum(1), a)
    np.testing.assert_allclose(plan.sum(0), b)


def test_ot_is_what_the_detector_calls(fitted, test_set, monkeypatch):
    calls = {"emd": 0, "sinkhorn": 0}

    def counting(name):
        original = getattr(ot, name)

        def wrapped(*args, **kw):
            calls[name] += 1
            return original(*args, **kw)
        return wrapped

    monkeypatch.setattr(ot, "emd", counting("emd"))
    monkeypatch.setattr(ot, "sinkhorn", counting("sinkhorn"))
    fitted.patch_scores(test_set[0])
    assert calls == {"emd": 2, "sinkhorn": 0}  # local + global plans
    det = create_detector(NAME, **{**BOTH, "iters": 2, "k": 3, "solver": "sinkhorn"})
    det.fit_tokens(np.random.default_rng(0).random((2, 64, 4)))
    assert calls["sinkhorn"] == 2 * (1 + 16)  # global + one per cell, 2 iterations each


def test_ot_prototypes_find_the_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    p = mod.ot_prototypes(x, 2, 10, 0.05, np.random.default_rng(1))
    assert sorted(np.round(p[:, 0]).tolist()) == [0.0, 5.0]
    assert mod.ot_prototypes(x[:3], 8, 2, 0.05, rng).shape == (3, 2)  # k capped at n


def test_fit_predict_shapes(fitted, test_set):
    assert fitted.fitted and fitted.config["modality"] == "both"
    width = 40 + 112 + 33  # two effnet blocks + FPFH
    assert tuple(fitted.state["global_protos"].shape) == (16, width)
    assert tuple(fitted.state["local_protos"].shape) == (16 * 2, width)
    assert tuple(fitted.state["local_pos"].shape) == (32, 2)
    for s in test_set:
        score, amap = fitted.predict(s)
        assert isinstance(score, float) and np.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32
        assert np.isfinite(amap).all() and amap.min() >= 0
    grid = fitted.patch_scores(test_set[0])
    assert grid.shape == fitted.grid == (8, 8) and grid.dtype == np.float32


def test_quality_floor_on_bumps(fitted, test_set):
    labels = [s.label for s in test_set]
    assert sorted(set(labels)) == [0, 1]
    auroc = roc_auc_score(labels, [fitted.predict(s)[0] for s in test_set])
    assert auroc >= QUALITY_FLOOR, auroc


def test_sinkhorn_solver_and_spatial_cost_change_the_map(data, fitted, test_set):
    train = list(open_split(data, CATEGORY, "train", fitted))
    other = create_detector(NAME, **{**BOTH, "solver": "sinkhorn", "alpha": 0.2}).fit(train)
    a, b = fitted.patch_scores(test_set[0]), other.patch_scores(test_set[0])
    assert np.isfinite(b).all() and not np.array_equal(a, b)


def test_save_load_round_trip(fitted, test_set, tmp_path):
    fitted.save(tmp_path / "run")
    again = load_detector(tmp_path / "run")
    assert type(again) is type(fitted) and again.config == fitted.config
    for s in test_set[:3]:
        (a, ma), (b, mb) = fitted.predict(s), again.predict(s)
        assert np.float64(a).tobytes() == np.float64(b).tobytes()
        assert ma.tobytes() == mb.tobytes()
    with pytest.raises(InvalidInputError, match="not 'cfm'"):
        detector_info("cfm").obj.load(tmp_path / "run")
    (tmp_path / "run" / mod.STATE_FILE).write_bytes(b"junk")
    with pytest.raises(Exception, match=mod.STATE_FILE):
        load_detector(tmp_path / "run")


def test_same_seed_same_bytes_other_seed_differs(data):
    cfg = {"image_size": 64, "device": "cpu", "iters": 4}

    def fit(seed: int):
        det = create_detector(NAME, seed=seed, **cfg)
        train = list(open_split(data, CATEGORY, "train", det))
        det.fit(train)
        return det, train[0]

    (a, sample), (b, _), (c, _) = fit(0), fit(0), fit(1)
    for k, v in a.state.items():
        assert v.numpy().tobytes() == b.state[k].numpy().tobytes(), k
    assert a.predict(sample)[1].tobytes() == b.predict(sample)[1].tobytes()
    assert a.predict(sample)[0] != c.predict(sample)[0]


def test_rgb_only_sample_and_missing_modality(data, fitted):
    rgb = create_detector(NAME, image_size=64, modality="rgb", device="cpu", iters=2)
    train = list(open_split(data, CATEGORY, "train", rgb))
    rgb.fit(train)
    sample = dataclasses.replace(train[0], xyz=None)
    score, amap = rgb.predict(sample)  # no cloud: the whole map's maximum
    assert score == pytest.approx(float(amap.max()))
    with pytest.raises(InvalidInputError, match="needs organized point clouds"):
        fitted.predict(sample)
    with pytest.raises(InvalidInputError, match="call fit"):
        create_detector(NAME).predict(train[0])
    auto = create_detector(NAME, image_size=64, device="cpu", iters=1)
    assert auto.fit([dataclasses.replace(s, xyz=None) for s in train[:2]]) \
        .config["modality"] == "rgb"
