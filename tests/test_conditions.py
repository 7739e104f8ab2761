"""``make-dataset --conditions {standard,strong}`` (synth.render.conditions): standard is the
generator's old output byte for byte, strong is deterministic, changes the test splits only and
widens pose, light, exposure and mat; resuming with other conditions and bad values are
one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pcad.errors import InvalidInputError
from synth.dataset import DatasetConfig, generate
from synth.render.conditions import STRONG, conditions_for
from tests.helpers import run_pcad

#: the tiny dataset below, as the generator writes it with ``--conditions standard``: the hashes
#: the unchanged generator has written on the machines it ran on. First taken with the code of
#: commit 6d31b91 (before --conditions existed) on the development machine:
#: c23741359c35c65fa3318be633a2295b8457fd7e3ec5966500a21ae93593e53e. On 2026-12-06 a fresh
#: ``make install`` (numpy 2.4.6, scipy 1.17.1, trimesh 5.2.0, open3d 0.20.0, numba 0.68.1,
#: pillow 13.0.0, tifffile 2026.3.3, manifold3d 3.5.4) on another machine gave
#: adbe995d71bf29237ebfcd27c5b0209fd2e6eb3c19cbf7d8a4407a36c5f322d0 from the unchanged code (no
#: version of those, swapped one at a time for an older one, gave the first bytes back); on
#: 2026-12-07 the same package versions on an AMD EPYC machine gave the first hash again. So the
#: bytes depend on the machine as well as on the dependency set; either hash is the old output,
#: and a code change that moves the bytes gives a third one and fails here.
TINY = {"categories": ("plate",), "size": (48, 48), "train": 1, "validation": 1,
        "test_good": 1, "test_defect": 1, "defects": ("dent", "contamination"), "seed": 5}
TINY_SHA256 = ("c23741359c35c65fa3318be633a2295b8457fd7e3ec5966500a21ae93593e53e",
               "adbe995d71bf29237ebfcd27c5b0209fd2e6eb3c19cbf7d8a4407a36c5f322d0")
TINY_ARGS = ["--categories", "plate", "--size", "48", "48", "--train", "1", "--validation", "1",
             "--test-good", "1", "--test-defect", "1", "--defects", "dent", "contamination",
             "--seed", "5", "--quiet"]


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for rel, digest in _files(root).items():
        h.update(rel.encode())
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny dataset under standard (via the CLI, the default) and strong (API) twice."""
    base = tmp_path_factory.mktemp("conditions")
    status, _, err = run_pcad(["make-dataset", "--out", base / "standard", *TINY_ARGS])
    assert status == 0, err
    for name in ("strong", "strong-again"):
        generate(DatasetConfig(**TINY, conditions="strong"), base / name, progress=False)
    return {"standard": base / "standard", "strong": base / "strong",
            "strong-again": base / "strong-again"}


def test_standard_is_the_old_output_byte_for_byte(tiny):
    assert _tree_hash(tiny["standard"]) in TINY_SHA256
    record = json.loads((tiny["standard"] / "dataset.json").read_text())
    assert "conditions" not in record["config"]
    assert "conditions" not in DatasetConfig().to_json()


def test_strong_is_deterministic_and_changes_the_test_samples_only(tiny):
    strong, again, standard = (_files(tiny[k]) for k in ("strong", "strong-again", "standard"))
    assert strong == again
    assert set(strong) == set(standard)
    for rel in standard:
        same = strong[rel] == standard[rel]
        if "/test/" in rel and "/meta/" in rel or "/test/" in rel and "/rgb/" in rel:
            assert not same, rel
        elif "/test/" not in rel and rel != "dataset.json":
            assert same, rel  # train, validation, camera: the standard bytes
    meta = json.loads((tiny["strong"] / "plate/test/dent/meta/000.json").read_text())
    assert meta["conditions"]["name"] == "strong"
    assert 0.6 <= meta["conditions"]["exposure"] <= 1.6
    train = json.loads((tiny["strong"] / "plate/train/good/meta/000.json").read_text())
    assert "conditions" not in train
    record = json.loads((tiny["strong"] / "dataset.json").read_text())
    assert record["config"]["conditions"] == "strong"


def _spread(conditions: str, n: int = 10) -> dict[str, float]:
    """Spreads over ``n`` good samples of one plate: light intensity std, elevation range
    (deg), largest tilt (deg), centre-shift std (fraction of depth), mean brightness std."""
    from synth.objects import make_object
    from synth.render import Camera, render_sample
    from synth.render.scene import lying_rotation

    mesh = make_object("plate", seed=0, variation=0.0)
    base = lying_rotation(mesh)
    intensity, elev, tilt, shift, bright = [], [], [], [], []
    for seed in range(n):
        s = render_sample(mesh, Camera.for_size(40, 40), seed,
                          conditions=conditions_for(conditions))
        light, pose = s.meta["lighting"], s.meta["pose"]
        intensity.append(light["intensity"])
        elev.append(np.degrees(np.arcsin(-light["direction"][2])))
        rel = np.asarray(pose["rotation"]) @ base.T  # tilt @ spin; spin keeps the z axis
        tilt.append(np.degrees(np.arccos(np.clip(rel[2, 2], -1, 1))))
        shift.append(np.linalg.norm(pose["translation"][:2]) / pose["plane_z"])
        bright.append(float(s.rgb.mean()))
    return {"intensity": float(np.std(intensity)), "elevation": float(np.ptp(elev)),
            "tilt": float(np.max(tilt)), "shift": float(np.std(shift)),
            "brightness": float(np.std(bright))}


def test_strong_widens_pose_light_and_exposure():
    standard, strong = _spread("standard"), _spread("strong")
    for key, value in standard.items():
        assert strong[key] > 1.3 * value, (key, value, strong[key])
    assert standard["tilt"] <= 6.0 + 1e-6 < strong["tilt"] <= 18.0 + 1e-6
    assert standard["elevation"] <= 40.0 < strong["elevation"] <= 60.0


def test_standard_draws_nothing_extra():
    from synth.render.conditions import Conditions

    assert conditions_for("standard") == Conditions() and conditions_for("standard").is_standard
    assert not STRONG.is_standard
    assert STRONG.draw(3) == STRONG.draw(3) != STRONG.draw(4)
    assert Conditions().draw(3)["exposure"] == 1.0


def test_resume_with_other_conditions_is_refused(tiny, tmp_path):
    status, _, err = run_pcad(["make-dataset", "--out", tiny["standard"], *TINY_ARGS,
                               "--conditions", "strong"])
    assert status != 0
    assert err.strip().count("\n") == 0
    assert "--conditions standard" in err and "--conditions strong" in err
    status, _, err = run_pcad(["make-dataset", "--out", tiny["strong"], *TINY_ARGS])
    assert status != 0 and "made with --conditions strong" in err
    # the same conditions resume (nothing to write)
    status, out, err = run_pcad(["make-dataset", "--out", tiny["strong"], *TINY_ARGS,
                                 "--conditions", "strong"])
    assert status == 0 and out.startswith("wrote 0 samples"), err


def test_bad_conditions_are_one_line_errors(tmp_path):
    status, _, err = run_pcad(["make-dataset", "--out", tmp_path / "x", "--conditions",
                               "wild"])
    assert status != 0 and err.strip().count("\n") == 0
    assert "--conditions: expected one of ('standard', 'strong'), got 'wild'" in err
    assert not (tmp_path / "x").exists()
    status, _, err = run_pcad(["make-dataset", "--out", tmp_path / "y", "--from-mvtec3d",
                               tmp_path, "--conditions", "strong"])
    assert status != 0 and "--from-mvtec3d: takes no --conditions" in err
    with pytest.raises(InvalidInputError, match="--conditions"):
        DatasetConfig(conditions="Strong")


def test_print_config_and_help_know_conditions(tmp_path):
    status, out, _ = run_pcad(["make-dataset", "--out", tmp_path / "x", "--conditions",
                               "strong", "--print-config"])
    assert status == 0 and "conditions: strong" in out
    status, out, _ = run_pcad(["make-dataset", "--out", tmp_path / "x", "--print-config"])
    assert status == 0 and "conditions: standard" in out
    config = tmp_path / "c.yaml"
    config.write_text("conditions: wild\n")
    status, _, err = run_pcad(["make-dataset", "--out", tmp_path / "x", "--config", config])
    assert status != 0 and "--conditions" in err
