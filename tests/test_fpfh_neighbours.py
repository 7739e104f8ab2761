"""``fpfh_neighbours`` of ``btf``, ``fpfh``, ``m3dm``, ``lsfa`` and ``cfm`` (and of the learned
detectors on :mod:`pcad.detectors.tokens`' features, BTF's 100 by default): the FPFH patches use it
(against Open3D's own features through :func:`pcad.features.fpfh_map`), bad values are
refused, runs saved before the option existed load and score with BTF's 100, and an export
passes the run's value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, load_detector
from pcad.detectors.patches import (
    FPFH_DEFAULT_NEIGHBOURS,
    FPFH_NEIGHBOURS,
    SampleForeground,
    fpfh_patches,
)
from pcad.errors import InvalidInputError
from pcad.features import fpfh_map, to_patch_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64
NAMES = ("btf", "fpfh", "m3dm", "lsfa", "cfm")
#: the learned detectors: the option exists, BTF's 100 by default (hetnet: 200)
LEARNED = ("vitad", "uniad", "fader", "pbas", "hetnet", "prototypes-ot", "onenip")
#: small fits of the multi-bank detectors (frozen features: the option is about them)
FAST = {"m3dm": {"coreset_ratio": 1.0}, "lsfa": {"epochs": 0, "coreset_ratio": 1.0},
        "cfm": {"epochs": 1}, "pbas": {"epochs": 1}, "hetnet": {"epochs": 1}}


@pytest.fixture(scope="module")
def data(tiny_dataset, tmp_path_factory):
    return tiny_dataset(tmp_path_factory, "fpfh_nn", "potato", train=3, test_good=1,
                        test_defect=1, defects=("bump",))


@pytest.fixture(scope="module")
def scans(data):
    return list(MVTec3DDataset(data, "potato", "test"))


def test_patches_use_the_neighbour_cap(scans):
    xyz = scans[0].xyz
    fg = SampleForeground(xyz, SIZE)
    grid = (SIZE // 8, SIZE // 8)
    for n in (30, 200):
        got = fpfh_patches(xyz, SIZE, grid, foreground=fg, neighbours=n)
        ref = fpfh_map(fg.resized, remove_background=False, valid=fg.resized_mask,
                       fpfh_max_nn=n)
        want = to_patch_grid(ref, fg.resized_mask, grid).reshape(-1, 33)
        np.testing.assert_array_equal(got, want)
    # the cap binds on a curved part: fewer neighbours give other histograms
    assert not np.allclose(fpfh_patches(xyz, SIZE, grid, foreground=fg, neighbours=30),
                           fpfh_patches(xyz, SIZE, grid, foreground=fg, neighbours=200))
    # the default is BTF's
    np.testing.assert_array_equal(fpfh_patches(xyz, SIZE, grid, foreground=fg),
                                  fpfh_patches(xyz, SIZE, grid, foreground=fg,
                                               neighbours=FPFH_NEIGHBOURS))


@pytest.mark.parametrize("name", NAMES + LEARNED)
def test_option_default_and_bad_values(name):
    default = FPFH_NEIGHBOURS if name in LEARNED and name != "hetnet" else \
        FPFH_DEFAULT_NEIGHBOURS
    assert create_detector(name).config["fpfh_neighbours"] == default
    assert create_detector(name, fpfh_neighbours=64.0).config["fpfh_neighbours"] == 64
    for bad in (2, "many", 10.5):
        with pytest.raises(InvalidInputError, match="fpfh_neighbours"):
            create_detector(name, fpfh_neighbours=bad)


@pytest.mark.parametrize("name", [*NAMES, "pbas", "hetnet"])
def test_run_saved_before_the_option_scores_with_btfs_neighbours(data, scans, tmp_path,
                                                                 name):
    train = list(MVTec3DDataset(data, "potato", "train"))
    fast = FAST.get(name, {})
    old = create_detector(name, image_size=SIZE, fpfh_neighbours=FPFH_NEIGHBOURS, device="cpu",
                          **fast)
    old.fit(train)
    old.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    del record["config"]["fpfh_neighbours"]
    (tmp_path / "run" / "detector.json").write_text(json.dumps(record))
    loaded = load_detector(tmp_path / "run")
    assert loaded.config["fpfh_neighbours"] == FPFH_NEIGHBOURS
    for s in scans:
        assert loaded.predict(s)[0] == old.predict(s)[0]
    # a new run keeps what it was fitted with
    new = create_detector(name, image_size=SIZE, fpfh_neighbours=40, device="cpu",
                          **fast).fit(train)
    new.save(tmp_path / "new")
    assert load_detector(tmp_path / "new").config["fpfh_neighbours"] == 40


def test_export_inputs_follow_the_run(scans):
    from pcad.export import sample_inputs

    xyz = scans[0].xyz
    fg = SampleForeground(xyz, SIZE)
    grid = (SIZE // 8, SIZE // 8)
    cfg = {"image_size": SIZE, "fpfh_neighbours": 40}
    got = sample_inputs({"detector": "btf", "config": cfg}, xyz)["xyz_features"].numpy()
    np.testing.assert_array_equal(got, fpfh_patches(xyz, SIZE, grid, foreground=fg,
                                                    neighbours=40))
    # an export made before the option: BTF's 100
    got = sample_inputs({"detector": "btf", "config": {"image_size": SIZE}}, xyz)
    np.testing.assert_array_equal(got["xyz_features"].numpy(),
                                  fpfh_patches(xyz, SIZE, grid, foreground=fg))


def test_multibank_features_use_the_option(scans):
    """m3dm / lsfa's point bank and cfm's point side read FPFH with the detector's cap; the
    learned detectors (pbas, ...) keep BTF's."""
    xyz = scans[0].xyz
    fg = SampleForeground(xyz, SIZE)
    grid = (SIZE // 8, SIZE // 8)
    det = create_detector("m3dm", image_size=SIZE, fpfh_neighbours=40)
    pts, _ = det.features.points(xyz, fg)
    np.testing.assert_array_equal(pts, fpfh_patches(xyz, SIZE, grid, foreground=fg,
                                                    neighbours=40))
    assert create_detector("cfm", fpfh_neighbours=40)._features.fpfh_neighbours == 40
    assert create_detector("pbas")._features.fpfh_neighbours == FPFH_NEIGHBOURS
    assert create_detector("hetnet")._features.fpfh_neighbours == FPFH_DEFAULT_NEIGHBOURS
    for name in LEARNED:
        assert create_detector(name, fpfh_neighbours=40)._features.fpfh_neighbours == 40
    # and so do the export's inputs, with 100 for a run exported before the option
    from pcad.export import sample_inputs

    cfg = {**create_detector("m3dm", image_size=SIZE).config, "fpfh_neighbours": 40}
    got = sample_inputs({"detector": "m3dm", "config": cfg}, xyz)["xyz_features"].numpy()
    np.testing.assert_array_equal(got, pts)
    del cfg["fpfh_neighbours"]
    got = sample_inputs({"detector": "lsfa", "config": cfg}, xyz)["xyz_features"].numpy()
    np.testing.assert_array_equal(got, fpfh_patches(xyz, SIZE, grid, foreground=fg))
