"""The ``standardise`` option of vitad, uniad, fader and onenip: in a unified run
(``"category"``) each category's tokens are standardised with that category's own channel
statistics, at fit and at predict; a single-category run, a category the fit never saw and
``"global"`` use the statistics over every training token; runs save and load them, runs
saved before the option load with the global ones, bad entries are one-line errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector, load_detector
from pcad.detectors.tokens import channel_stats
from pcad.engine import open_split
from pcad.errors import FileFormatError, InvalidInputError
from tests.helpers import saved_before

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = {"vitad": {"epochs": 2}, "uniad": {"epochs": 2}, "fader": {"epochs": 2},
         "onenip": {"epochs": 2, "variants": 1}}


def _fit(det, samples):
    if det.needs_defect_source:  # onenip: pcad's synthesizer, as pcad train gives it
        from synth.supervision import DefectSource

        return det.fit(samples, defect_source=DefectSource(**det.defect_source_options()))
    return det.fit(samples)


def _two_categories(plate_bumps, det):
    train = list(open_split(plate_bumps, "plate", "train", det))
    return [replace(s, category="other") if i % 2 else s for i, s in enumerate(train)]


def test_defaults_and_bad_values():
    assert {create_detector(n).config["standardise"] for n in ("uniad", "onenip")} \
        == {"category"}
    assert {create_detector(n).config["standardise"] for n in ("vitad", "fader")} == {"global"}
    with pytest.raises(InvalidInputError, match="standardise") as info:
        create_detector("vitad", standardise="per-sample")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", list(QUICK))
def test_each_category_is_standardised_with_its_own_statistics(name, plate_bumps,
                                                               plate_bumps_test, tmp_path):
    det = create_detector(name, image_size=64, modality="both", device="cpu",
                          standardise="category", **QUICK[name])
    train = _two_categories(plate_bumps, det)
    _fit(det, train)
    assert sorted(det.category_stats) == ["other", "plate"]
    raw = {s.path: det.tokens(s, where="training set")[0] for s in train}
    for cat in ("plate", "other"):
        rows = np.concatenate([raw[s.path] for s in train if s.category == cat])
        mean, std = channel_stats(torch.from_numpy(rows), det.std_floor)
        torch.testing.assert_close(det.category_stats[cat]["mean"], mean)
        torch.testing.assert_close(det.category_stats[cat]["std"], std)
        s = replace(plate_bumps_test[-1], category=cat)
        z, _ = det.standardised_tokens(s)
        toks = det.tokens(s)[0]
        torch.testing.assert_close(z, (torch.from_numpy(toks) - mean) / std)
    # a category the fit never saw: the statistics over every training token
    s = replace(plate_bumps_test[-1], category="unseen")
    z, _ = det.standardised_tokens(s)
    torch.testing.assert_close(z, (torch.from_numpy(det.tokens(s)[0]) - det.stats["mean"])
                               / det.stats["std"])
    det.save(tmp_path / "run")
    loaded = load_detector(tmp_path / "run")
    assert sorted(loaded.category_stats) == ["other", "plate"]
    for cat in ("plate", "other"):
        s = replace(plate_bumps_test[-1], category=cat)
        assert loaded.predict(s)[0] == det.predict(s)[0]


def test_global_and_single_category_runs_keep_one_set_of_statistics(plate_bumps):
    det = create_detector("uniad", image_size=64, modality="both", device="cpu", epochs=2)
    _fit(det, list(open_split(plate_bumps, "plate", "train", det)))
    assert det.category_stats == {}  # one category: nothing per category
    glob = create_detector("uniad", image_size=64, modality="both", device="cpu", epochs=2,
                           standardise="global")
    _fit(glob, _two_categories(plate_bumps, glob))
    assert glob.category_stats == {}


def test_old_runs_load_with_global_statistics_and_bad_entries_are_errors(plate_bumps,
                                                                         plate_bumps_test,
                                                                         tmp_path):
    det = create_detector("uniad", image_size=64, modality="both", device="cpu", epochs=2,
                          standardise="global")
    _fit(det, _two_categories(plate_bumps, det))
    det.save(tmp_path / "run")
    saved_before(tmp_path / "run", "standardise")
    old = load_detector(tmp_path / "run")
    assert old.config["standardise"] == "global" and old.category_stats == {}
    assert old.predict(plate_bumps_test[0])[0] == det.predict(plate_bumps_test[0])[0]

    cat = create_detector("uniad", image_size=64, modality="both", device="cpu", epochs=2)
    _fit(cat, _two_categories(plate_bumps, cat))
    cat.save(tmp_path / "cat")
    state_path = tmp_path / "cat" / cat.state_file
    state = torch.load(state_path, weights_only=False)
    good = state["category_stats"]
    for bad in ({**good, "std": -good["std"]}, {**good, "mean": good["mean"][:, :3]},
                {**good, "names": ["plate"]}, "stats"):
        torch.save({**state, "category_stats": bad}, state_path)
        with pytest.raises(FileFormatError, match="category_stats") as info:
            load_detector(tmp_path / "cat")
        assert "\n" not in str(info.value)
