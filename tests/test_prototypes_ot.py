"""``prototypes-ot``: options, the OT helpers (``pot`` computes every plan), fit / predict
shapes, save / load, determinism and a quality floor on a tiny fixed dataset of bump defects."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from pcad.detectors import create_detector
from pcad.detectors import prototypes_ot as mod
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
NAME = "prototypes-ot"
BOTH = {"image_size": 64, "modality": "both", "device": "cpu"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(plate_bumps_fit):
    return plate_bumps_fit('prototypes-ot')


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


def test_ot_is_what_the_detector_calls(fitted, plate_bumps_test, monkeypatch):
    calls = {"emd": 0, "sinkhorn": 0}

    def counting(name):
        original = getattr(ot, name)

        def wrapped(*args, **kw):
            calls[name] += 1
            return original(*args, **kw)
        return wrapped

    monkeypatch.setattr(ot, "emd", counting("emd"))
    monkeypatch.setattr(ot, "sinkhorn", counting("sinkhorn"))
    fitted.patch_scores(plate_bumps_test[0])
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


def test_fit_predict_shapes(fitted, plate_bumps_test):
    assert fitted.fitted and fitted.config["modality"] == "both"
    width = 40 + 112 + 33  # two effnet blocks + FPFH
    assert tuple(fitted.state["global_protos"].shape) == (16, width)
    assert tuple(fitted.state["local_protos"].shape) == (16 * 2, width)
    assert tuple(fitted.state["local_pos"].shape) == (32, 2)
    grid = fitted.patch_scores(plate_bumps_test[0])
    assert grid.shape == fitted.grid == (8, 8) and grid.dtype == np.float32


def test_sinkhorn_solver_and_spatial_cost_change_the_map(plate_bumps, fitted, plate_bumps_test):
    train = list(open_split(plate_bumps, CATEGORY, "train", fitted))
    other = create_detector(NAME, **{**BOTH, "solver": "sinkhorn", "alpha": 0.2}).fit(train)
    a, b = fitted.patch_scores(plate_bumps_test[0]), other.patch_scores(plate_bumps_test[0])
    assert np.isfinite(b).all() and not np.array_equal(a, b)


