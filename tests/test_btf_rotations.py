"""btf's ``rotations`` option: each training sample enters the banks with quarter-turn copies
of its image plane (the backbone on the turned image, the FPFH grid turned with it); the
leave-one-out statistics score each sample as captured against the other samples and all
their copies, none of its own; bad values are one-line errors; runs saved before the option
load with 1."""

from __future__ import annotations

import numpy as np
import pytest

import pcad.detectors.btf as btf_module
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, load_detector
from pcad.detectors.btf import quarter_turns
from pcad.detectors.patches import SampleForeground
from pcad.errors import InvalidInputError
from pcad.memory import MemoryBank
from tests.helpers import saved_before

CATEGORY = "plate_holes"
OPTS = {"image_size": 64, "coreset_ratio": 1.0}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train_set(tmp_path_factory, tiny_dataset):
    data = tiny_dataset(tmp_path_factory, "rotations", CATEGORY, train=4, test_good=1,
                        test_defect=0)
    return list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))


@pytest.fixture(scope="module")
def fitted(train_set):
    return {r: create_detector("btf", rotations=r, **OPTS).fit(train_set) for r in (1, 4)}


def test_quarter_turns():
    assert [quarter_turns(r) for r in (1, 2, 4)] == [[0], [0, 2], [0, 1, 2, 3]]


def test_banks_hold_every_turned_copy(fitted, train_set):
    one, four = fitted[1], fitted[4]
    assert one.config["rotations"] == 1 and four.config["rotations"] == 4
    h, w = four.grid
    n_patch = h * w
    rgb1, rgb4 = one.source_banks["rgb"].features, four.source_banks["rgb"].features
    xyz1, xyz4 = one.source_banks["xyz"].features, four.source_banks["xyz"].features
    assert len(rgb4) == 4 * len(rgb1) == 4 * len(train_set) * n_patch
    assert len(four.bank.features) == 4 * len(one.bank.features)
    for i, sample in enumerate(train_set):
        own = slice(i * n_patch, (i + 1) * n_patch)
        rows = 4 * n_patch
        # copy 0 is the sample as captured, the same features as without rotations
        np.testing.assert_array_equal(rgb4[i * rows:i * rows + n_patch], rgb1[own])
        np.testing.assert_array_equal(xyz4[i * rows:i * rows + n_patch], xyz1[own])
        for k in (1, 2, 3):
            at = slice(i * rows + k * n_patch, i * rows + (k + 1) * n_patch)
            turned = np.ascontiguousarray(np.rot90(sample.rgb, k))
            np.testing.assert_allclose(rgb4[at], four._rgb.batch([turned])[0], atol=1e-5)
            grid = xyz1[own].reshape(h, w, -1)
            np.testing.assert_array_equal(xyz4[at], np.rot90(grid, k).reshape(n_patch, -1))


def test_a_turned_training_image_is_in_the_rgb_bank(fitted, train_set):
    turned = np.ascontiguousarray(np.rot90(train_set[1].rgb, 1))
    feats = fitted[4]._rgb.batch([turned])[0]
    assert float(fitted[4].source_banks["rgb"].score(feats).max()) < 1e-3
    assert float(fitted[1].source_banks["rgb"].score(feats).max()) > 0.1


def test_loo_scores_a_sample_against_the_others_and_their_copies(train_set, monkeypatch):
    seen: list[np.ndarray] = []
    stacks: list[dict] = []
    real_stats, real_sources = btf_module.loo_stats, btf_module.BTFDetector.fit_sources

    def record_sources(self, stacked, items):
        stacks.append(stacked)
        return real_sources(self, stacked, items)

    monkeypatch.setattr(btf_module, "loo_stats", lambda s: seen.append(np.array(s))
                        or real_stats(s))
    monkeypatch.setattr(btf_module.BTFDetector, "fit_sources", record_sources)
    det = create_detector("btf", rotations=4, **OPTS).fit(train_set)
    monkeypatch.undo()
    n_patch = det.grid[0] * det.grid[1]
    rows = 4 * n_patch
    for i in (0, 2):
        sample = train_set[i]
        fore = SampleForeground(sample.xyz, OPTS["image_size"])
        for j, m in enumerate(det.modalities):
            x = stacks[0][m]
            keep = np.ones(len(x), bool)
            keep[i * rows:(i + 1) * rows] = False  # none of the sample's own copies
            others = MemoryBank(coreset_ratio=1.0).fit(x[keep])
            own = x[i * rows:i * rows + n_patch]
            _, (want,) = det.score_patches(others, [own], [sample], [fore])
            assert seen[0][i, j] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("value", [0, 3, 8, "4", 2.5, True])
def test_bad_rotations(value):
    with pytest.raises(InvalidInputError, match="rotations"):
        create_detector("btf", rotations=value)


def test_old_runs_load_with_one_rotation(fitted, tmp_path):
    fitted[4].save(tmp_path / "run")
    saved_before(tmp_path / "run", "rotations")
    assert load_detector(tmp_path / "run").config["rotations"] == 1
    assert create_detector("btf").config["rotations"] == 1  # the default: as captured
