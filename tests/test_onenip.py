"""``onenip``: what is OneNIP's own (the shared behaviour is in test_modality_detectors.py):
one normal image prompt per category chosen deterministically (nearest the category's mean
tokens) and saved, the prompt changes the reconstruction, the refiner learns the synthesized
masks (its loss falls), a category without prompt (``unknown_category``), option errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector, load_detector
from pcad.detectors.onenip import OneNIPNet, PromptDecoderLayer, epoch_rows
from pcad.engine import open_split
from pcad.errors import InvalidInputError

QUICK = {"image_size": 64, "modality": "both", "device": "cpu", "epochs": 8, "variants": 1}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _source():
    from synth.supervision import DefectSource

    return DefectSource(seed=0)


@pytest.fixture(scope="module")
def two_categories(plate_bumps) -> list:
    """plate_bumps' 6 training plates, the last 3 relabelled as category ``"other"``."""
    det = create_detector("onenip", **QUICK)
    train = list(open_split(plate_bumps, "plate", "train", det))
    return [s if i < 3 else dataclasses.replace(s, category="other")
            for i, s in enumerate(train)]


@pytest.fixture(scope="module")
def fitted(two_categories):
    return create_detector("onenip", **QUICK).fit(two_categories, defect_source=_source())


@pytest.mark.parametrize(("config", "word"), [
    ({"neighbor_mask": 2}, "neighbor_mask"), ({"variants": 0}, "variants"),
    ({"refiner_layers": 0}, "refiner_layers"), ({"refiner_hidden": 0}, "refiner_hidden"),
    ({"loss": "mse"}, "loss"), ({"map": "mean"}, "map"),
    ({"unknown_category": "skip"}, "unknown_category"), ({"dim": 66}, "multiple of heads"),
    ({"holdout_defects": [1]}, "holdout_defects"), ({"textures": 3}, "textures"),
    ({"variants": 2, "variants_per_epoch": 3}, "variants_per_epoch"),
    ({"variants_per_epoch": 0}, "variants_per_epoch"),
    ({"modality": "depth"}, "modality"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("onenip", **config)
    assert "\n" not in str(info.value)


def test_fit_needs_a_defect_source(two_categories):
    with pytest.raises(InvalidInputError, match="defect source") as info:
        create_detector("onenip", **QUICK).fit(two_categories[:2])
    assert "\n" not in str(info.value)


def test_prompt_cross_attention_sees_the_prompt_token_at_its_own_place():
    """The decoder's cross-attention reads the prompt's tokens, never masked: changing the
    prompt's token 0 changes output token 0, although the test token 0 itself is masked."""
    torch.manual_seed(0)
    net = OneNIPNet((3, 5), (4, 4), dim=16, depth=1, heads=4, neighbor_mask=3).eval()
    layer: PromptDecoderLayer = net.decoder[0]
    memory, prompt = torch.randn(1, 16, 16), torch.randn(1, 16, 16)
    other = prompt.clone()
    other[0, 0] += 10.0
    with torch.no_grad():
        a = layer(memory, prompt, net.pos, net.mask)
        b = layer(memory, other, net.pos, net.mask)
        moved = memory.clone()
        moved[0, 0] += 10.0  # the test token 0 is in its own masked neighbourhood
        c = layer(moved, prompt, net.pos, net.mask)
    assert float((a - b)[0, 0].abs().max()) > 1e-3
    assert float((a - c)[0, 0].abs().max()) < 1e-6


def test_token_masks_are_area_fractions():
    det = create_detector("onenip", image_size=64, modality="rgb")  # a 4 x 4 token grid
    mask = np.zeros((64, 64), bool)
    mask[:8, :16] = True  # half of token 0's 16 x 16 pixels
    frac = det._token_mask(mask)
    assert frac.shape == (16,) and frac[0] == pytest.approx(0.5) and frac[1:].sum() == 0


def test_one_prompt_per_category_nearest_its_mean_saved_and_loaded(fitted, two_categories,
                                                                   tmp_path):
    assert sorted(fitted.prompts) == ["other", "plate"]
    for cat, members in (("plate", two_categories[:3]), ("other", two_categories[3:])):
        # each category's tokens with its own statistics (standardise="category")
        x = torch.stack([fitted._standardise(fitted.tokens(s)[0], cat) for s in members])
        best = int(torch.argmin(((x - x.mean(0)) ** 2).sum(dim=(1, 2))))
        assert torch.allclose(fitted.prompts[cat], x[best], atol=1e-5)
        assert fitted.prompt_sources[cat] == str(members[best].path)
    fitted.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "detector.json").read_text())["state"]
    assert record["prompt_categories"] == ["other", "plate"]
    assert record["prompt_sources"] == [fitted.prompt_sources["other"],
                                        fitted.prompt_sources["plate"]]
    back = load_detector(tmp_path / "run")
    for cat in ("plate", "other"):
        assert torch.equal(back.prompts[cat], fitted.prompts[cat].cpu())
    sample = two_categories[4]
    assert back.predict(sample)[0] == pytest.approx(fitted.predict(sample)[0], abs=1e-6)


def test_the_prompt_changes_the_reconstruction(fitted, plate_bumps_test):
    sample = plate_bumps_test[-1]
    _, rec_a, _, _ = fitted.reconstruction(sample, prompt=fitted.prompts["plate"])
    _, rec_b, _, _ = fitted.reconstruction(sample, prompt=fitted.prompts["other"])
    _, rec_own, _, _ = fitted.reconstruction(sample)  # its category's (plate)
    assert torch.equal(rec_own, rec_a)
    assert float((rec_a - rec_b).abs().max()) > 1e-3


def test_the_refiner_learns_the_synthesized_masks(fitted):
    hist = fitted.refiner_history
    assert len(hist) == QUICK["epochs"] and all(np.isfinite(hist))
    assert hist[-1] < 0.8 * hist[0]
    assert len(fitted.history) == QUICK["epochs"]


def test_a_category_without_prompt(fitted, plate_bumps_test, tmp_path):
    """``unknown_category="nearest"`` (default): the prompt nearest the sample's tokens;
    ``"error"``: a one-line error naming the fitted categories."""
    sample = dataclasses.replace(plate_bumps_test[0], category="never-seen")
    x = fitted._standardise(fitted.tokens(sample)[0])
    dists = {k: float(((p - x) ** 2).sum()) for k, p in fitted.prompts.items()}
    nearest = min(dists, key=dists.get)
    assert torch.equal(fitted.prompt_for("never-seen", x), fitted.prompts[nearest])
    _, rec, _, _ = fitted.reconstruction(sample)
    _, rec_n, _, _ = fitted.reconstruction(sample, prompt=fitted.prompts[nearest])
    assert torch.equal(rec, rec_n)
    fitted.save(tmp_path / "run")
    strict = load_detector(tmp_path / "run")
    strict.config["unknown_category"] = "error"
    with pytest.raises(InvalidInputError, match="no prompt for category 'never-seen'") as info:
        strict.predict(sample)
    assert "\n" not in str(info.value) and "plate" in str(info.value)
    assert np.isfinite(strict.predict(plate_bumps_test[0])[0])


def test_variants_take_turns_across_epochs():
    """Each epoch trains on every clean sample and ``per_epoch`` of its variants; over
    ``variants / per_epoch`` epochs each variant once; with all variants, the rows are the
    items (the training before the option, row for row)."""
    items = torch.arange(3 * 3)  # 3 samples, clean + 2 variants of 4 each epoch
    seen = set()
    for epoch in range(2):
        rows = epoch_rows(items, epoch, variants=4, per_epoch=2)
        assert sorted(rows[::3].tolist()) == [0, 5, 10]  # the clean rows, every epoch
        seen |= set(rows.tolist())
    assert seen == set(range(15))  # all 4 variants of the 3 samples after 2 epochs
    torch.testing.assert_close(epoch_rows(torch.arange(15), 7, 4, 4), torch.arange(15))


def test_variants_per_epoch_is_seeded_and_changes_the_training(two_categories):
    base = {**QUICK, "variants": 2, "epochs": 2}
    det = create_detector("onenip", **base, variants_per_epoch=1)
    det.fit(two_categories, defect_source=_source())
    again = create_detector("onenip", **base, variants_per_epoch=1)
    again.fit(two_categories, defect_source=_source())
    assert det.history == again.history  # seeded
    every = create_detector("onenip", **base).fit(two_categories, defect_source=_source())
    assert every.config["variants_per_epoch"] is None and every.history != det.history


def test_the_map_is_calibrated_per_category_and_old_runs_map_raw_values(two_categories,
                                                                        plate_bumps_test,
                                                                        tmp_path):
    """``calibration="nearest"``: the map over its value on the nearest clean training token
    of the sample's category (each training sample scored with its category's prompt), so a
    training token scores at most 1; a run saved before the option maps the raw values."""
    assert create_detector("onenip").config["calibration"] == "none"
    fitted = create_detector("onenip", **QUICK, calibration="nearest").fit(
        two_categories, defect_source=_source())
    assert sorted(fitted.calibration.groups) == ["other", "plate"]
    for s in (two_categories[0], two_categories[4]):  # float32 rounding: 1e-5
        assert float(fitted.patch_scores(s).max()) <= 1.0 + 1e-5
    s = plate_bumps_test[-1]
    x, fg = fitted.standardised_tokens(s)
    raw = fitted.map_values(x[None], fitted.prompts["plate"][None])[0]
    want = (raw / fitted.calibration.reference(x, "plate")).numpy()
    np.testing.assert_allclose(fitted.patch_scores(s).reshape(-1)[fg], want[fg], rtol=1e-5)
    fitted.save(tmp_path / "run")
    assert load_detector(tmp_path / "run").predict(s)[0] == fitted.predict(s)[0]
    rec_path = tmp_path / "run" / "detector.json"
    record = json.loads(rec_path.read_text())
    for key in ("calibration", "calibration_size", "variants_per_epoch"):
        del record["config"][key]  # a run saved before the options
    rec_path.write_text(json.dumps(record))
    old = load_detector(tmp_path / "run")
    assert old.config["calibration"] == "none" and old.config["variants_per_epoch"] is None
    np.testing.assert_allclose(old.patch_scores(s).reshape(-1)[fg], raw.numpy()[fg],
                               rtol=1e-5)
