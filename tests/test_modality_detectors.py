"""What every detector on :mod:`pcad.detectors.tokens`' modality patches must do (vitad,
uniad, pbas, prototypes-ot, onenip): documented options, maps, a quality floor on plate bumps,
byte-identical save/load, determinism, RGB-only samples, ``modality="auto"`` and, for the
trained ones, ``--resume``. Each detector's own file tests what is its own."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pcad.detectors import create_detector, detector_info, list_detectors, load_detector
from pcad.detectors.training import EpochLoop, training_session
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
#: measured I-AUROC on plate bumps: 1.0 for each with "both"; the floor leaves a margin
QUALITY_FLOOR = 0.85


def _net(name: str):
    return lambda det: det.decoder.state_dict() if name in ("vitad", "uniad", "onenip",
                                                                    "fader") else (
        det.net.state_dict() if name in ("pbas", "hetnet") else det.state)


#: per detector: a quick training (``quick``), the one the determinism test fits (``seed``),
#: the one resume compares (``resume``; None: nothing is trained by gradient), the detector
#: whose loader must refuse the run (``other``)
SPECS = {
    "vitad": {"quick": {"epochs": 2}, "seed": {"epochs": 4}, "resume": {"epochs": 3},
              "other": "cfm"},
    "uniad": {"quick": {"epochs": 2}, "seed": {"epochs": 3},
              "resume": {"epochs": 3, "jitter_prob": 0.5}, "other": "vitad"},
    "pbas": {"quick": {"epochs": 2}, "seed": {"epochs": 4}, "resume": {"epochs": 3},
             "other": "cfm"},
    "fader": {"quick": {"epochs": 2}, "seed": {"epochs": 3}, "resume": {"epochs": 3},
              "other": "uniad"},
    "prototypes-ot": {"quick": {"iters": 2}, "seed": {"iters": 4}, "resume": None,
                      "other": "cfm"},
    "onenip": {"quick": {"epochs": 2, "variants": 1}, "seed": {"epochs": 3, "variants": 1},
               "resume": {"epochs": 3, "variants": 1}, "other": "uniad"},
    "hetnet": {"quick": {"epochs": 2}, "seed": {"epochs": 3}, "resume": {"epochs": 3},
               "other": "pbas"},
}
NAMES = sorted(SPECS)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fit(det, samples: list):
    """``det.fit(samples)``; a detector trained on synthetic defects (onenip) gets pcad's
    defect source, as ``pcad train`` gives it."""
    if det.needs_defect_source:
        from synth.supervision import DefectSource

        return det.fit(samples, defect_source=DefectSource(**det.defect_source_options()))
    return det.fit(samples)


def _stats(det) -> dict:
    if det.name == "hetnet":  # per teacher: the first (the RGB backbone's) has "mean0"
        return {"mean": det.stats["mean0"]}
    return det.state if det.name == "prototypes-ot" else det.stats


@pytest.fixture(scope="module")
def train_samples(plate_bumps) -> list:
    det = create_detector("pbas", image_size=64, modality="both")
    return list(open_split(plate_bumps, CATEGORY, "train", det))


def test_every_modality_detector_is_covered():
    from pcad.detectors.tokens import ModalityPatchesMixin

    ours = [n for n in list_detectors()
            if issubclass(detector_info(n).obj, ModalityPatchesMixin)]
    assert ours == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_documented_options(name):
    cls = detector_info(name).obj
    assert cls.supports_distributed is False and cls.modalities == ("rgb",)
    for key, _default, meaning in cls.options():
        assert meaning, key
    assert create_detector(name).config["modality"] == "auto"
    assert create_detector(name, modality="xyz").modalities == ("xyz",)
    assert create_detector(name, modality="both").modalities == ("rgb", "xyz")


@pytest.mark.parametrize("name", NAMES)
def test_maps_and_quality_floor_on_bumps(name, plate_bumps_fit, plate_bumps_test):
    fitted = plate_bumps_fit(name)
    scores = []
    for s in plate_bumps_test:
        score, amap = fitted.predict(s)
        assert isinstance(score, float) and np.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32
        assert np.isfinite(amap).all() and amap.min() >= 0
        scores.append(score)
    grid = fitted.patch_scores(plate_bumps_test[0])
    assert grid.dtype == np.float32 and (grid >= 0).all()
    labels = [s.label for s in plate_bumps_test]
    assert sorted(set(labels)) == [0, 1]
    auroc = roc_auc_score(labels, scores)
    assert auroc >= QUALITY_FLOOR, auroc


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, plate_bumps_fit, plate_bumps_test, tmp_path):
    fitted = plate_bumps_fit(name)
    fitted.save(tmp_path / "run")
    state_file = sys.modules[type(fitted).__module__].STATE_FILE
    assert (tmp_path / "run" / state_file).is_file()
    again = load_detector(tmp_path / "run")
    assert type(again) is type(fitted) and again.config == fitted.config
    assert getattr(again, "history", None) == getattr(fitted, "history", None)
    for s in plate_bumps_test[:3]:
        (a, ma), (b, mb) = fitted.predict(s), again.predict(s)
        assert np.float64(a).tobytes() == np.float64(b).tobytes()
        assert ma.tobytes() == mb.tobytes()
    other = SPECS[name]["other"]
    with pytest.raises(InvalidInputError, match=f"not '{other}'"):
        detector_info(other).obj.load(tmp_path / "run")
    (tmp_path / "run" / state_file).write_bytes(b"junk")
    with pytest.raises(Exception, match=state_file):
        load_detector(tmp_path / "run")


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_other_seed_differs(name, train_samples, plate_bumps_test):
    cfg = {"image_size": 64, "device": "cpu", **SPECS[name]["seed"]}
    a, b, c = (_fit(create_detector(name, seed=seed, **cfg), train_samples)
               for seed in (0, 0, 1))
    state = _net(name)
    for k, v in state(a).items():
        assert v.numpy().tobytes() == state(b)[k].numpy().tobytes(), k
    # a test sample: calibrated (vitad, uniad, fader), a training sample scores 1 at any seed
    sample = plate_bumps_test[-1]
    assert a.predict(sample)[1].tobytes() == b.predict(sample)[1].tobytes()
    assert a.predict(sample)[0] != c.predict(sample)[0]


@pytest.mark.parametrize("name", NAMES)
def test_rgb_only_sample_and_missing_modality(name, plate_bumps_fit, train_samples):
    quick = {"image_size": 64, "device": "cpu", **SPECS[name]["quick"]}
    rgb = _fit(create_detector(name, modality="rgb", **quick), train_samples)
    sample = dataclasses.replace(train_samples[0], xyz=None)
    score, amap = rgb.predict(sample)  # no cloud: the whole map's maximum
    assert score == pytest.approx(float(amap.max()))
    with pytest.raises(InvalidInputError, match="needs organized point clouds"):
        plate_bumps_fit(name).predict(sample)
    with pytest.raises(InvalidInputError, match="call fit"):
        create_detector(name).predict(train_samples[0])


@pytest.mark.parametrize("name", NAMES)
def test_auto_modality_follows_the_training_samples(name, train_samples):
    """``modality="auto"`` (the default) trains on both when the samples have clouds, on RGB
    alone when they do not, and records the choice."""
    quick = {"image_size": 64, "device": "cpu", **SPECS[name]["quick"]}
    both = _fit(create_detector(name, **quick), train_samples[:3])
    assert both.config["modality"] == "both"
    rgb_only = [dataclasses.replace(s, xyz=None) for s in train_samples[:3]]
    rgb = _fit(create_detector(name, **quick), rgb_only)
    assert rgb.config["modality"] == "rgb" and _stats(rgb)["mean"].numel() == 152
    score, amap = rgb.predict(rgb_only[0])
    assert score == pytest.approx(float(amap.max()))


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n]["resume"] is not None])
def test_training_log_and_resume(name, train_samples, tmp_path, monkeypatch):
    cfg = {"image_size": 64, "device": "cpu", **SPECS[name]["resume"]}
    run = {"detector": name, "config": cfg}
    with training_session(tmp_path / "whole", run):
        whole = _fit(create_detector(name, **cfg), train_samples)
    assert len((tmp_path / "whole" / "train_log.csv").read_text().splitlines()) == 4
    original = EpochLoop.end_epoch

    def end_epoch(self, loss, **kw):
        original(self, loss, **kw)
        if len(self.history) >= 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(EpochLoop, "end_epoch", end_epoch)
        with pytest.raises(KeyboardInterrupt), training_session(tmp_path / "cut", run):
            _fit(create_detector(name, **cfg), train_samples)
    with training_session(tmp_path / "cut", run, resume=True):
        resumed = _fit(create_detector(name, **cfg), train_samples)
    assert resumed.history == whole.history
    state = _net(name)
    for k, v in state(whole).items():
        assert torch.equal(v, state(resumed)[k]), k
