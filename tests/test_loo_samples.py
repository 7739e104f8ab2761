"""The ``loo_samples`` option of btf, m3dm and lsfa: the leave-one-out statistics of the
fused image score come from a seeded subset of the training samples when there are more than
``loo_samples``, each still scored against every patch of all the other samples; a training
set no larger than it is scored whole (as before the option); runs saved before the option
load with every sample; bad values are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

import pcad.detectors.btf as btf_module
import pcad.detectors.multimodal as multimodal_module
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, load_detector
from pcad.detectors.fusion import MIN_LOO_SAMPLES, loo_indices
from pcad.detectors.patches import MultimodalFeatures
from pcad.errors import InvalidInputError
from tests.helpers import saved_before

CATEGORY = "plate_holes"
M3DM = {"image_size": 64, "point_backbone": "fpfh", "epochs": 1, "batch_size": 4}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train_set(tmp_path_factory, tiny_dataset):
    data = tiny_dataset(tmp_path_factory, "loo", CATEGORY, train=6, test_good=1, test_defect=0)
    return list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))


def _loo_scores(monkeypatch, module, fit) -> np.ndarray:
    """The per-sample leave-one-out scores ``fit()`` hands to ``loo_stats`` (the image
    scores: the first call)."""
    seen: list[np.ndarray] = []
    real = module.loo_stats

    def record(scores):
        seen.append(np.array(scores))
        return real(scores)

    monkeypatch.setattr(module, "loo_stats", record)
    fit()
    monkeypatch.undo()
    return seen[0]


def test_loo_indices():
    assert loo_indices(6, None, 0).tolist() == list(range(6))
    assert loo_indices(6, 6, 0).tolist() == list(range(6))
    a = loo_indices(240, 32, 0)
    assert len(a) == 32 and len(set(a.tolist())) == 32 and (np.diff(a) > 0).all()
    assert a.min() >= 0 and a.max() < 240
    assert a.tolist() == loo_indices(240, 32, 0).tolist()
    assert a.tolist() != loo_indices(240, 32, 1).tolist()


def test_btf_subset_scores_equal_the_full_runs_rows(train_set, monkeypatch):
    full = _loo_scores(monkeypatch, btf_module, lambda: create_detector(
        "btf", image_size=64, loo_samples=None).fit(train_set))
    det = create_detector("btf", image_size=64, loo_samples=3, seed=2)
    sub = _loo_scores(monkeypatch, btf_module, lambda: det.fit(train_set))
    chosen = loo_indices(len(train_set), 3, 2)
    assert full.shape == (6, 2) and sub.shape == (3, 2)
    # each chosen sample is scored against every other sample's patches, as in the full run
    np.testing.assert_array_equal(sub, full[chosen])
    np.testing.assert_allclose(det.z_image[:, 0], full[chosen].mean(axis=0))
    # the default (32) scores a training set of 6 whole
    default = _loo_scores(monkeypatch, btf_module,
                          lambda: create_detector("btf", image_size=64).fit(train_set))
    np.testing.assert_array_equal(default, full)


@pytest.mark.parametrize("name", ["m3dm", "lsfa"])
def test_multibank_subset_scores_equal_the_full_runs_rows(train_set, monkeypatch, name):
    f = MultimodalFeatures("test", 64, point_backbone="fpfh")
    parts = [f(s) for s in train_set]
    feats = tuple(np.stack([p[i] for p in parts]) for i in range(3))
    opts = M3DM if name == "m3dm" else {**M3DM, "batch_size": 2, "queue_samples": 3,
                                        "global_queue": 4, "compact_start": 0.0}
    full = _loo_scores(monkeypatch, multimodal_module, lambda: create_detector(
        name, **opts, loo_samples=None).fit_features(*feats, train_set))
    det = create_detector(name, **opts, loo_samples=4, fusion="ocsvm",
                          svm_patches="foreground")
    sub = _loo_scores(monkeypatch, multimodal_module,
                      lambda: det.fit_features(*feats, train_set))
    chosen = loo_indices(6, 4, det.config["seed"])
    assert sub.shape == (4, len(det.BANKS))
    np.testing.assert_array_equal(sub, full[chosen])
    assert det.z_patch.shape == (len(det.BANKS), 2) and np.isfinite(det.w_image).all()


def test_old_runs_load_with_every_sample(train_set, tmp_path):
    det = create_detector("btf", image_size=64, fusion="joint").fit(train_set)
    det.save(tmp_path / "run")
    saved_before(tmp_path / "run", "loo_samples")
    assert load_detector(tmp_path / "run").config["loo_samples"] is None
    assert create_detector("btf").config["loo_samples"] == 32


@pytest.mark.parametrize("name", ["btf", "m3dm", "lsfa"])
@pytest.mark.parametrize("value", [MIN_LOO_SAMPLES - 1, "many", 2.5])
def test_bad_loo_samples(name, value):
    with pytest.raises(InvalidInputError, match="loo_samples") as info:
        create_detector(name, loo_samples=value)
    assert "\n" not in str(info.value)
