"""``pbas``: fit / predict shapes, save / load, determinism, option errors, the hypersphere and
the synthesis, the training loop (log, resume) and a quality floor on a tiny fixed dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pcad.detectors import create_detector, detector_info, list_detectors, load_detector
from pcad.detectors.pbas import PBASNet
from pcad.detectors.training import EpochLoop, training_session
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
#: the fitted detector of the module: RGB + FPFH patches, the default training
BOTH = {"image_size": 64, "modality": "both", "device": "cpu"}
#: measured I-AUROC on this data: 1.0 ("both"); the floor leaves a margin
QUALITY_FLOOR = 0.85

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    """64 x 64 plates: 6 train, 4 good + 4 bump test samples."""
    return tiny_dataset(tmp_path_factory, "pbas_data", CATEGORY, train=6, test_good=4,
                        test_defect=4, defects=("bump",))


@pytest.fixture(scope="module")
def fitted(data):
    det = create_detector("pbas", **BOTH)
    return det.fit(list(open_split(data, CATEGORY, "train", det)))


@pytest.fixture(scope="module")
def test_set(data, fitted) -> list:
    return list(open_split(data, CATEGORY, "test", fitted))


def test_registered_with_documented_options():
    assert "pbas" in list_detectors()
    cls = detector_info("pbas").obj
    assert cls.supports_distributed is False and cls.modalities == ("rgb",)
    for key, _default, meaning in cls.options():
        assert meaning, key
    assert create_detector("pbas").config["modality"] == "auto"
    assert create_detector("pbas", modality="xyz").modalities == ("xyz",)
    assert create_detector("pbas", n_scales=2, min_scale=0.25).scales == (0.25, 0.5)


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"hidden": 0}, "hidden"), ({"dim": 10**6}, "dim"),
    ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"radius_quantile": 0}, "radius_quantile"), ({"radius_quantile": 1.5}, "radius_quantile"),
    ({"n_scales": 0}, "n_scales"), ({"min_scale": 0}, "min_scale"),
    ({"min_scale": 100}, "min_scale"), ({"direction_jitter": -1}, "direction_jitter"),
    ({"center_weight": -1}, "center_weight"), ({"image_score": "mean"}, "image_score"),
    ({"image_size": 60}, "image_size"), ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("pbas", **config)
    assert "\n" not in str(info.value)


def test_sphere_and_synthesis():
    torch.manual_seed(0)
    net = PBASNet(6, hidden=8, dim=4)
    x = torch.randn(200, 6)
    net.init_sphere(x, 0.9)
    a = net.adapt(x).detach()
    assert torch.allclose(net.center, a.mean(0), atol=1e-5)
    dist = (a - net.center).norm(dim=1)
    assert float((dist <= net.radius).float().mean()) == pytest.approx(0.9, abs=0.02)
    assert float(net.center_loss(net.center[None].repeat(3, 1))) == 0.0
    fake = net.synthesize(a, (0.5, 1.0), 0.0, torch.Generator().manual_seed(0))
    fd = (fake - net.center).norm(dim=1)
    r = float(net.radius)
    assert bool((fd >= dist.clamp_min(r) + 0.5 * r - 1e-4).all())
    assert bool((fd <= dist.clamp_min(r) + 2.0 * r + 1e-4).all())
    cos = torch.nn.functional.cosine_similarity(fake - net.center, a - net.center)
    assert bool((cos > 0.999).all())  # no jitter: straight away from the centre


def test_fit_predict_shapes(fitted, test_set):
    assert fitted.fitted and len(fitted.history) == fitted.config["epochs"]
    assert fitted.history[-1] < fitted.history[0]  # the discriminator learns
    assert fitted.stats["mean"].numel() == 152 + 33  # two effnet blocks + FPFH
    for s in test_set:
        score, amap = fitted.predict(s)
        assert isinstance(score, float) and np.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32
        assert np.isfinite(amap).all() and amap.min() >= 0
    grid = fitted.patch_scores(test_set[0])
    assert grid.shape == fitted.grid == (8, 8) and grid.dtype == np.float32
    assert (grid >= 0).all()


def test_quality_floor_on_bumps(fitted, test_set):
    labels = [s.label for s in test_set]
    assert sorted(set(labels)) == [0, 1]
    auroc = roc_auc_score(labels, [fitted.predict(s)[0] for s in test_set])
    assert auroc >= QUALITY_FLOOR, auroc


def test_save_load_round_trip(fitted, test_set, tmp_path):
    fitted.save(tmp_path / "run")
    again = load_detector(tmp_path / "run")
    assert type(again) is type(fitted) and again.config == fitted.config
    assert again.history == fitted.history
    for s in test_set[:3]:
        (a, ma), (b, mb) = fitted.predict(s), again.predict(s)
        assert np.float64(a).tobytes() == np.float64(b).tobytes()
        assert ma.tobytes() == mb.tobytes()
    with pytest.raises(InvalidInputError, match="not 'cfm'"):
        detector_info("cfm").obj.load(tmp_path / "run")


def test_same_seed_same_bytes_other_seed_differs(data):
    cfg = {"image_size": 64, "epochs": 4, "device": "cpu"}

    def fit(seed: int):
        det = create_detector("pbas", seed=seed, **cfg)
        train = list(open_split(data, CATEGORY, "train", det))
        det.fit(train)
        return det, train[0]

    (a, sample), (b, _), (c, _) = fit(0), fit(0), fit(1)
    for k, v in a.net.state_dict().items():
        assert v.numpy().tobytes() == b.net.state_dict()[k].numpy().tobytes(), k
    assert a.predict(sample)[1].tobytes() == b.predict(sample)[1].tobytes()
    assert a.predict(sample)[0] != c.predict(sample)[0]


def test_rgb_only_sample_and_missing_modality(data, fitted):
    rgb = create_detector("pbas", image_size=64, modality="rgb", epochs=2, device="cpu")
    train = list(open_split(data, CATEGORY, "train", rgb))
    rgb.fit(train)
    sample = dataclasses.replace(train[0], xyz=None)
    score, amap = rgb.predict(sample)  # no cloud: the whole map's maximum
    assert score == pytest.approx(float(amap.max()))
    with pytest.raises(InvalidInputError, match="needs organized point clouds"):
        fitted.predict(sample)
    with pytest.raises(InvalidInputError, match="call fit"):
        create_detector("pbas").predict(train[0])


def test_auto_modality_follows_the_training_samples(data):
    train = list(open_split(data, CATEGORY, "train", create_detector("pbas", image_size=64)))
    both = create_detector("pbas", image_size=64, epochs=1, device="cpu").fit(train[:3])
    assert both.config["modality"] == "both"
    rgb_only = [dataclasses.replace(s, xyz=None) for s in train[:3]]
    rgb = create_detector("pbas", image_size=64, epochs=1, device="cpu").fit(rgb_only)
    assert rgb.config["modality"] == "rgb" and rgb.stats["mean"].numel() == 152


def test_training_log_and_resume(data, tmp_path, monkeypatch):
    cfg = {"image_size": 64, "epochs": 3, "device": "cpu"}
    train = list(open_split(data, CATEGORY, "train", create_detector("pbas", **cfg)))
    run = {"detector": "pbas", "config": cfg}
    with training_session(tmp_path / "whole", run):
        whole = create_detector("pbas", **cfg).fit(train)
    assert len((tmp_path / "whole" / "train_log.csv").read_text().splitlines()) == 4
    original = EpochLoop.end_epoch

    def end_epoch(self, loss, **kw):
        original(self, loss, **kw)
        if len(self.history) >= 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(EpochLoop, "end_epoch", end_epoch)
        with pytest.raises(KeyboardInterrupt), training_session(tmp_path / "cut", run):
            create_detector("pbas", **cfg).fit(train)
    with training_session(tmp_path / "cut", run, resume=True):
        resumed = create_detector("pbas", **cfg).fit(train)
    assert resumed.history == whole.history
    for k, v in whole.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
