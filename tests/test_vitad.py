"""``vitad``: fit / predict shapes, save / load, determinism, option errors, the training loop
(log, resume) and a quality floor on a tiny fixed dataset of bump defects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pcad.detectors import create_detector, detector_info, list_detectors, load_detector
from pcad.detectors.training import EpochLoop, training_session
from pcad.detectors.vitad import ViTADDecoder, decoder_taps
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
#: the fitted detector of the module: RGB + FPFH tokens, small and quick
BOTH = {"image_size": 64, "modality": "both", "epochs": 20, "device": "cpu"}
#: measured I-AUROC on this data: 1.0 ("both"); the floor leaves a margin
QUALITY_FLOOR = 0.85


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    """64 x 64 plates: 6 train, 4 good + 4 bump test samples."""
    return tiny_dataset(tmp_path_factory, "vitad_data", CATEGORY, train=6, test_good=4,
                        test_defect=4, defects=("bump",))


@pytest.fixture(scope="module")
def fitted(data):
    det = create_detector("vitad", **BOTH)
    return det.fit(list(open_split(data, CATEGORY, "train", det)))


@pytest.fixture(scope="module")
def test_set(data, fitted) -> list:
    return list(open_split(data, CATEGORY, "test", fitted))


def test_registered_with_documented_options():
    assert "vitad" in list_detectors()
    cls = detector_info("vitad").obj
    assert cls.supports_distributed is False and cls.modalities == ("rgb",)
    for key, _default, meaning in cls.options():
        assert meaning, key
    assert create_detector("vitad").config["modality"] == "auto"
    assert create_detector("vitad", modality="xyz").modalities == ("xyz",)
    assert create_detector("vitad", modality="both").modalities == ("rgb", "xyz")


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"dim": 130}, "multiple of heads"),
    ({"depth": 0}, "depth"), ({"heads": 0}, "heads"), ({"epochs": 0}, "epochs"),
    ({"lr": -1}, "lr"), ({"image_score": "mean"}, "image_score"), ({"dim": 10**6}, "dim"),
    ({"image_size": 60}, "image_size"), ({"image_size": 40}, "pool"), ({"pool": 0}, "pool"),
    ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("vitad", **config)
    assert "\n" not in str(info.value)


def test_decoder_reads_each_level_from_its_block():
    assert decoder_taps(2, 3) == [2, 0] and decoder_taps(3, 5) == [4, 2, 0]
    dec = ViTADDecoder((4, 6), n_tokens=9, dim=8, depth=3, heads=2)
    outs = dec(torch.randn(2, 9, 10))
    assert [tuple(o.shape) for o in outs] == [(2, 9, 4), (2, 9, 6)]
    d = dec.distances(torch.randn(2, 9, 10))
    assert d.shape == (2, 9) and bool(((d >= 0) & (d <= 2)).all())


def test_fit_predict_shapes(fitted, test_set):
    assert fitted.fitted and len(fitted.history) == BOTH["epochs"]
    assert fitted.history[-1] < 0.5 * fitted.history[0]  # the decoder learns
    assert fitted.decoder.level_dims == (40, 112, 33)  # two effnet blocks + FPFH
    for s in test_set:
        score, amap = fitted.predict(s)
        assert isinstance(score, float) and np.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32
        assert np.isfinite(amap).all() and amap.min() >= 0
    grid = fitted.patch_scores(test_set[0])  # 2 x 2 patches per token (pool 2)
    assert fitted.grid == (8, 8) and grid.shape == fitted.token_grid == (4, 4)
    assert grid.dtype == np.float32 and (grid >= 0).all()


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
        det = create_detector("vitad", seed=seed, **cfg)
        train = list(open_split(data, CATEGORY, "train", det))
        det.fit(train)
        return det, train[0]

    (a, sample), (b, _), (c, _) = fit(0), fit(0), fit(1)
    for k, v in a.decoder.state_dict().items():
        assert v.numpy().tobytes() == b.decoder.state_dict()[k].numpy().tobytes(), k
    assert a.predict(sample)[1].tobytes() == b.predict(sample)[1].tobytes()
    assert a.predict(sample)[0] != c.predict(sample)[0]


def test_rgb_only_sample_and_missing_modality(data, fitted):
    rgb = create_detector("vitad", image_size=64, modality="rgb", epochs=2, device="cpu")
    train = list(open_split(data, CATEGORY, "train", rgb))
    rgb.fit(train)
    sample = dataclasses.replace(train[0], xyz=None)
    score, amap = rgb.predict(sample)  # no cloud: the whole map's maximum
    assert score == pytest.approx(float(amap.max()))
    with pytest.raises(InvalidInputError, match="needs organized point clouds"):
        fitted.predict(sample)
    with pytest.raises(InvalidInputError, match="call fit"):
        create_detector("vitad").predict(train[0])


def test_auto_modality_follows_the_training_samples(data):
    """``modality="auto"`` (the default) trains on both when the samples have clouds, on RGB
    alone when they do not, and records the choice."""
    train = list(open_split(data, CATEGORY, "train", create_detector("vitad", image_size=64)))
    both = create_detector("vitad", image_size=64, epochs=1, device="cpu").fit(train[:3])
    assert both.config["modality"] == "both"
    rgb_only = [dataclasses.replace(s, xyz=None) for s in train[:3]]
    rgb = create_detector("vitad", image_size=64, epochs=1, device="cpu").fit(rgb_only)
    assert rgb.config["modality"] == "rgb"
    score, amap = rgb.predict(rgb_only[0])
    assert score == pytest.approx(float(amap.max()))


def test_training_log_and_resume(data, tmp_path, monkeypatch):
    cfg = {"image_size": 64, "epochs": 3, "device": "cpu"}
    train = list(open_split(data, CATEGORY, "train", create_detector("vitad", **cfg)))
    run = {"detector": "vitad", "config": cfg}
    with training_session(tmp_path / "whole", run):
        whole = create_detector("vitad", **cfg).fit(train)
    assert len((tmp_path / "whole" / "train_log.csv").read_text().splitlines()) == 4
    original = EpochLoop.end_epoch

    def end_epoch(self, loss, **kw):
        original(self, loss, **kw)
        if len(self.history) >= 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(EpochLoop, "end_epoch", end_epoch)
        with pytest.raises(KeyboardInterrupt), training_session(tmp_path / "cut", run):
            create_detector("vitad", **cfg).fit(train)
    with training_session(tmp_path / "cut", run, resume=True):
        resumed = create_detector("vitad", **cfg).fit(train)
    assert resumed.history == whole.history
    for k, v in whole.decoder.state_dict().items():
        assert torch.equal(v, resumed.decoder.state_dict()[k]), k
