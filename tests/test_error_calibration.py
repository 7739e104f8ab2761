"""The nearest-neighbour error calibration of vitad / uniad / fader / prototypes-ot / hetnet / pbas
(:mod:`pcad.detectors.error_calibration`): the reference is the error of the nearest training
token (against a brute-force search), a training token scores at most 1, runs save and load it,
runs saved before it score the raw errors, bad options and bad run files are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector, load_detector
from pcad.detectors.error_calibration import FLOOR, ErrorCalibration, coreset_errors
from pcad.engine import open_split
from pcad.errors import FileFormatError, InvalidInputError
from tests.helpers import saved_before

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ("vitad", "uniad", "fader", "prototypes-ot", "hetnet", "pbas")
#: short fits
QUICK = {"vitad": {"epochs": 3}, "uniad": {"epochs": 3}, "fader": {"epochs": 3},
         "prototypes-ot": {"iters": 2}, "hetnet": {"epochs": 2}, "pbas": {"epochs": 3}}


def raw_errors(det, sample):
    """``(z (n, C), raw errors (n,), fg (n,))`` of ``sample`` under ``det``."""
    if det.name == "hetnet":
        feats, fg = det.teachers(sample)
        with torch.no_grad():
            return (*det.patch_errors(feats), fg)
    if det.name == "pbas":
        feats, fg = det.patches(sample)
        z = det._standardise(feats)
        with torch.no_grad():
            return z, torch.nn.functional.softplus(det.net(z)), fg
    toks, fg, *_ = det.tokens(sample)
    if det.name == "prototypes-ot":
        z, d = det.token_costs(toks)
        return torch.from_numpy(z.astype(np.float32)), torch.from_numpy(d), fg
    z = det._standardise(toks, sample.category)  # uniad's own category's statistics
    with torch.no_grad():
        return z, det.decoder.distances(z[None])[0], fg


def test_reference_is_the_nearest_training_tokens_error():
    g = torch.Generator().manual_seed(0)
    tokens, errors = torch.randn(300, 12, generator=g), torch.rand(300, generator=g) + 0.5
    cal = ErrorCalibration(tokens, errors)
    z = torch.randn(50, 12, generator=g)
    nearest = torch.cdist(z.double(), tokens.double()).argmin(1)
    torch.testing.assert_close(cal.reference(z), errors[nearest])
    d = torch.rand(50, generator=g)
    torch.testing.assert_close(cal(z, d), d / errors[nearest])
    # the floor: FLOOR x the median training error
    errors[:10] = 0.0
    cal = ErrorCalibration(tokens, errors)
    assert cal.floor == pytest.approx(FLOOR * float(errors.median()))
    assert float(cal.reference(tokens[:10]).min()) == pytest.approx(cal.floor)


def test_bad_shapes_and_saved_states():
    with pytest.raises(ValueError, match="expected"):
        ErrorCalibration(torch.zeros(3, 2), torch.zeros(2))
    good = {"tokens": torch.zeros(3, 2), "errors": torch.ones(3)}
    assert len(ErrorCalibration.from_state(good, 2, "f").tokens) == 3
    for bad in ({"tokens": torch.zeros(3, 2)}, {**good, "errors": -torch.ones(3)},
                {**good, "tokens": torch.zeros(3, 5)}, "nope",
                {**good, "errors": torch.full((3,), float("nan"))}):
        with pytest.raises(FileFormatError, match="calibration"):
            ErrorCalibration.from_state(bad, 2, "f")


@pytest.mark.parametrize("name", NAMES)
def test_option(name):
    assert create_detector(name).config["calibration"] == "nearest"
    with pytest.raises(InvalidInputError, match="calibration") as info:
        create_detector(name, calibration="knn")
    assert "\n" not in str(info.value)
    assert create_detector("onenip").config["calibration"] == "none"  # see test_onenip


@pytest.mark.parametrize("name", NAMES)
def test_training_tokens_score_at_most_one_and_runs_round_trip(plate_bumps, plate_bumps_test,
                                                               tmp_path, name):
    det = create_detector(name, image_size=64, modality="both", device="cpu",
                          calibration="nearest", **QUICK[name])
    train = list(open_split(plate_bumps, "plate", "train", det))
    det.fit(train)
    assert det.calibration is not None
    # a training token's nearest training token is itself: d / max(d, floor) <= 1
    for s in train[:2]:
        assert float(det.patch_scores(s).max()) <= 1.0 + 1e-6
    det.save(tmp_path / "run")
    loaded = load_detector(tmp_path / "run")
    for s in plate_bumps_test[:3]:
        assert loaded.predict(s)[0] == det.predict(s)[0]
    # the calibrated map is the raw one over the reference
    s = plate_bumps_test[-1]
    raw = create_detector(name, image_size=64, modality="both", device="cpu",
                          calibration="none", **QUICK[name]).fit(train)
    z, d, fg = raw_errors(raw, s)
    want = (d / det.calibration.reference(z)).numpy()
    got = det.patch_scores(s).reshape(-1)
    np.testing.assert_allclose(got[fg], want[fg], rtol=1e-5)


@pytest.mark.parametrize("name", ["uniad", "prototypes-ot", "hetnet", "pbas"])
def test_old_runs_score_raw_errors_and_a_missing_state_is_an_error(plate_bumps,
                                                                   plate_bumps_test, tmp_path,
                                                                   name):
    det = create_detector(name, image_size=64, modality="both", device="cpu",
                          calibration="none", **QUICK[name])
    det.fit(list(open_split(plate_bumps, "plate", "train", det)))
    assert det.calibration is None
    det.save(tmp_path / "run")
    record = saved_before(tmp_path / "run", "calibration")
    old = load_detector(tmp_path / "run")
    assert old.config["calibration"] == "none"
    assert old.predict(plate_bumps_test[0])[0] == det.predict(plate_bumps_test[0])[0]
    record["config"]["calibration"] = "nearest"  # edited: no saved calibration
    (tmp_path / "run" / "detector.json").write_text(json.dumps(record))
    with pytest.raises(FileFormatError, match="calibration"):
        load_detector(tmp_path / "run")


def test_coreset_errors_are_the_mean_error_of_the_nearest_training_tokens():
    g = torch.Generator().manual_seed(1)
    tokens, errors = torch.randn(400, 6, generator=g), torch.rand(400, generator=g)
    centres, means = coreset_errors(tokens, errors, 32)
    assert centres.shape == (32, 6) and means.shape == (32,)
    owner = torch.cdist(tokens.double(), centres.double()).argmin(1)
    want = torch.stack([errors[owner == i].double().mean() for i in range(32)]).float()
    torch.testing.assert_close(means, want)
    # every centre is a training token
    assert all(bool((tokens == c).all(1).any()) for c in centres)


def test_calibration_size_keeps_a_coreset_and_keep_limits_the_search(plate_bumps,
                                                                      plate_bumps_test):
    assert create_detector("pbas").config["calibration_size"] == 512
    assert create_detector("uniad").config["calibration_size"] is None
    with pytest.raises(InvalidInputError, match="calibration_size") as info:
        create_detector("pbas", calibration_size=0)
    assert "\n" not in str(info.value)
    det = create_detector("pbas", image_size=64, modality="both", device="cpu", epochs=3,
                          calibration_size=16)
    det.fit(list(open_split(plate_bumps, "plate", "train", det)))
    assert len(det.calibration.tokens) == 16
    s = plate_bumps_test[-1]
    feats, fg = det.patches(s)
    z = det._standardise(feats)
    with torch.no_grad():
        d = torch.nn.functional.softplus(det.net(z))
    full = det.calibrate(z, d)
    part = det.calibrate(z, d, fg)
    torch.testing.assert_close(part[fg], full[fg])
    torch.testing.assert_close(part[~fg], d[~fg])  # off the part: not searched
    np.testing.assert_allclose(det.patch_scores(s).reshape(-1)[fg], full[fg].numpy(),
                               rtol=1e-6)


def test_groups_restrict_the_search_to_the_samples_category():
    g = torch.Generator().manual_seed(2)
    tokens, errors = torch.randn(200, 5, generator=g), torch.rand(200, generator=g) + 0.5
    groups = ["a" if i % 3 else "b" for i in range(200)]
    cal = ErrorCalibration(tokens, errors, groups=groups)
    z = torch.randn(40, 5, generator=g)
    for name in ("a", "b"):
        rows = torch.tensor([i for i, x in enumerate(groups) if x == name])
        nearest = rows[torch.cdist(z.double(), tokens[rows].double()).argmin(1)]
        torch.testing.assert_close(cal.reference(z, name), errors[nearest])
    everywhere = errors[torch.cdist(z.double(), tokens.double()).argmin(1)]
    for other in (None, "c"):  # no category, or one not fitted: every token
        torch.testing.assert_close(cal.reference(z, other), everywhere)
    # one group only: no restriction kept, as without groups
    assert ErrorCalibration(tokens, errors, groups=["a"] * 200).groups == {}
    # the groups survive a save and a load; a bad index is a FileFormatError
    state = cal.state()
    assert state["group_names"] == ["b", "a"]  # in order of first appearance
    again = ErrorCalibration.from_state(state, 5, "f")
    torch.testing.assert_close(again.reference(z, "b"), cal.reference(z, "b"))
    for bad in ({**state, "group_index": state["group_index"] + 5},
                {**state, "group_names": "ab"},
                {k: v for k, v in state.items() if k != "group_names"}):
        with pytest.raises(FileFormatError, match="group"):
            ErrorCalibration.from_state(bad, 5, "f")
    with pytest.raises(ValueError, match="groups"):
        ErrorCalibration(tokens, errors, groups=["a"])


@pytest.mark.parametrize("name", NAMES)
def test_unified_fit_calibrates_each_category_against_its_own_tokens(name, plate_bumps,
                                                                    plate_bumps_test,
                                                                    tmp_path):
    from dataclasses import replace

    det = create_detector(name, image_size=64, modality="both", device="cpu", **QUICK[name])
    train = list(open_split(plate_bumps, "plate", "train", det))
    train = [replace(s, category="other") if i % 2 else s for i, s in enumerate(train)]
    det.fit(train)
    assert sorted(det.calibration.groups) == ["other", "plate"]
    # each category's references are its own samples' patches on the part (hetnet: and their
    # photometric copies)
    copies = 1 + det.config.get("photometric_views", 0)
    on_part = [copies * (len(z) if fg is None else int(np.sum(fg)))
               for z, _, fg in (raw_errors(det, t) for t in train)]
    assert {k: len(v) for k, v in det.calibration.groups.items()} == {
        "plate": sum(on_part[0::2]), "other": sum(on_part[1::2])}
    s = plate_bumps_test[-1]
    for cat in ("plate", "other"):
        z, d, fg = raw_errors(det, replace(s, category=cat))
        want = (d / det.calibration.reference(z, cat)).numpy()
        got = det.patch_scores(replace(s, category=cat)).reshape(-1)
        np.testing.assert_allclose(got[fg], want[fg], rtol=1e-5)
    det.save(tmp_path / "run")
    loaded = load_detector(tmp_path / "run")
    assert sorted(loaded.calibration.groups) == ["other", "plate"]
    assert loaded.predict(s)[0] == det.predict(s)[0]
    # with calibration_size k: a coreset of k tokens per category
    small = create_detector(name, image_size=64, modality="both", device="cpu", **QUICK[name],
                            calibration_size=4).fit(train)
    assert {k: len(v) for k, v in small.calibration.groups.items()} == {"plate": 4,
                                                                       "other": 4}
