"""The torch background-plane foreground (:mod:`pcad.geometry.planes_torch`) gives the numpy
one's masks (:func:`pcad.geometry.planes.foreground_mask`): on rendered parts at several
sizes, tilted noisy tables, a scan without a table, an all-invalid scan and a border with
fewer than 3 valid pixels, run with CPU tensors (and on CUDA where present). The flip count
(pixels whose class differs) must be 0. :func:`~pcad.detectors.patches.prepare_foregrounds_torch`
fills a :class:`~pcad.detectors.patches.SampleForeground` with the numpy pieces, and the
batched dilation is scipy's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from pcad.detectors.patches import (
    PART_DILATE,
    SampleForeground,
    prepare_foregrounds,
    prepare_foregrounds_torch,
)
from pcad.errors import InvalidInputError
from pcad.geometry.planes import foreground_mask
from pcad.geometry.planes_torch import dilate_masks, foreground_masks, foreground_masks_groups
from pcad.io import read_xyz_tiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _table(h: int, w: int, seed: int, tilt: float = 0.2, noise: float = 2e-4,
           holes: float = 0.05) -> np.ndarray:
    """A tilted noisy table with a box on it and random unmeasured pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    z = 1.0 + tilt * xx / w - 0.5 * tilt * yy / h + rng.normal(0, noise, (h, w))
    xyz = np.stack([xx * 0.002, yy * 0.002, z], -1).astype(np.float32)
    xyz[h // 3: 2 * h // 3, w // 4: 3 * w // 5, 2] -= rng.uniform(0.01, 0.06)
    xyz[rng.random((h, w)) < holes] = 0.0
    return xyz


@pytest.fixture(scope="module")
def rendered(tiny_dataset, tmp_path_factory) -> list[np.ndarray]:
    """Rendered test scans of two parts at two sizes (64 x 64 and 96 x 128)."""
    for module in ("trimesh", "noise"):  # the renderer's; a bare GPU machine may lack them
        pytest.importorskip(module, reason=f"{module} is not installed: no rendered scans")
    clouds = []
    for size in ((64, 64), (96, 128)):
        root = tiny_dataset(tmp_path_factory, f"fg_torch_{size[0]}", "gear", train=1,
                            test_good=1, test_defect=1, size=size,
                            categories=("gear", "potato"))
        paths = sorted(Path(root).glob("*/*/*/xyz/*.tiff"))
        clouds += [read_xyz_tiff(p) for p in paths]
    assert len(clouds) >= 8
    return clouds


def _scans(rendered: list[np.ndarray]) -> list[np.ndarray]:
    yy, xx = np.mgrid[:50, :70].astype(np.float32)
    no_table = np.stack([(xx - 35) * 0.01, (yy - 25) * 0.01,
                         1.0 + 0.03 * np.sin(xx / 9.0) + 0.02 * np.cos(yy / 7.0)], -1)
    few_border = np.zeros((40, 40, 3), np.float32)
    few_border[0, 0], few_border[0, 1] = (0.1, 0.2, 1.0), (0.2, 0.2, 1.0)
    few_border[15:25, 15:25] = (0.3, 0.3, 0.9)
    return [*rendered, _table(224, 224, 1), _table(400, 400, 2, noise=1e-3),
            _table(120, 90, 3, holes=0.6), no_table.astype(np.float32),
            np.zeros((32, 48, 3), np.float32), few_border]


@pytest.mark.parametrize("device", DEVICES)
def test_masks_equal_numpy(rendered, device):
    scans = _scans(rendered)
    flips, total_fg = 0, 0
    for xyz in scans:
        ref = foreground_mask(xyz)
        got = foreground_masks(torch.from_numpy(xyz)[None].to(device))[0].cpu().numpy()
        assert got.dtype == bool and got.shape == ref.shape
        flips += int((got != ref).sum())
        total_fg += int(ref.sum())
    assert flips == 0
    assert total_fg > 0  # the scans do have foreground


@pytest.mark.parametrize("device", DEVICES)
def test_groups_batch_equal_numpy(rendered, device):
    """Several shapes in one call (padded ring points of different lengths) and a batch of
    several scans per shape give each scan's own numpy mask."""
    scans = _scans(rendered)
    by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
    for x in scans:
        by_shape.setdefault(x.shape[:2], []).append(x)
    groups = [torch.from_numpy(np.stack(v)).to(device) for v in by_shape.values()]
    for masks, clouds in zip(foreground_masks_groups(groups), by_shape.values(), strict=True):
        for m, x in zip(masks.cpu().numpy(), clouds, strict=True):
            np.testing.assert_array_equal(m, foreground_mask(x))


def test_bad_shape_is_an_error():
    with pytest.raises(InvalidInputError, match="B, H, W, 3"):
        foreground_masks(torch.zeros(4, 4, 3))


def test_dilate_equals_scipy():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 30, 41)) < 0.02
    masks[0, 0, 0] = masks[1, -1, -1] = True  # corners: the zero border
    for it in (1, PART_DILATE):
        got = dilate_masks(torch.from_numpy(masks), it).numpy()
        for g, m in zip(got, masks, strict=True):
            np.testing.assert_array_equal(g, binary_dilation(m, iterations=it))


@pytest.mark.parametrize("device", DEVICES)
def test_prepare_torch_equals_numpy_pieces(rendered, device):
    clouds = [*rendered[:3], _table(80, 100, 4), rendered[-1]]
    nan_cloud = _table(64, 64, 5)
    nan_cloud[3, 3, 0] = np.nan
    fores = [SampleForeground(x, 32) for x in clouds] + [SampleForeground(nan_cloud, 32), None]
    prepare_foregrounds_torch(fores, part=True, device=device)
    for f, x in zip(fores, clouds, strict=False):
        ref = SampleForeground(x, 32)
        assert f._resized_mask is not None and PART_DILATE in f._parts  # computed here
        assert f.resized.dtype == np.float32
        np.testing.assert_array_equal(f.resized, ref.resized)
        np.testing.assert_array_equal(f.resized_mask, ref.resized_mask)
        np.testing.assert_array_equal(f.mask, ref.mask)
        np.testing.assert_array_equal(f.part(), ref.part())
    bad = fores[len(clouds)]
    assert bad._resized_mask is None and bad._mask is None  # left to the numpy path
    with pytest.raises(InvalidInputError, match="NaN"):
        _ = bad.resized_mask


def test_prepare_without_part_skips_full_fit(rendered):
    f = SampleForeground(rendered[0], 32)
    prepare_foregrounds_torch([f], part=False)
    assert f._resized_mask is not None and f._mask is None and not f._parts


def test_cpu_device_keeps_numpy_path(rendered, monkeypatch):
    """``prepare_foregrounds`` on the CPU never calls the torch path."""
    import pcad.detectors.patches as patches

    def boom(*args, **kwargs):
        raise AssertionError("torch path used on the CPU")

    monkeypatch.setattr(patches, "prepare_foregrounds_torch", boom)
    f = SampleForeground(rendered[0], 32)
    prepare_foregrounds([f], workers=1, device="cpu")
    np.testing.assert_array_equal(f.resized_mask, SampleForeground(rendered[0], 32).resized_mask)


@pytest.mark.parametrize(("name", "config"), [
    ("m3dm", {"epochs": 1, "point_backbone": "pointmae", "image_score": "foreground-max"}),
    ("cfm", {"epochs": 1}),
    ("fpfh", {}),
])
def test_detectors_score_the_same_with_torch_pieces(tiny_dataset, tmp_path_factory, tmp_path,
                                                    monkeypatch, name, config):
    """The CUDA wiring, run on the CPU: with every batch's foregrounds filled by
    :func:`prepare_foregrounds_torch` first, ``predict_batch`` gives the numpy path's scores
    and maps bit for bit (the pieces are the same arrays)."""
    import dataclasses

    import pcad.detectors.cfm as cfm
    import pcad.detectors.multimodal as multimodal
    import pcad.detectors.patchcore as patchcore
    import pcad.detectors.patches as patches
    from pcad.engine import open_split, train

    data = tiny_dataset(tmp_path_factory, "fg_torch_det", "gear", train=3, test_good=1,
                        test_defect=1)
    det = train(data, "gear", name, tmp_path / "run",
                config={"image_size": 64, "device": "cpu", **config}, progress=False)
    samples = list(open_split(data, "gear", "test", det))
    first = samples[0]
    assert first.xyz is not None
    crop = dataclasses.replace(first, **{k: None if getattr(first, k) is None
                                         else getattr(first, k)[:, :48].copy()
                                         for k in ("rgb", "xyz", "mask")})
    samples.append(crop)  # two shapes in one batch
    import pcad.features.point_grid as point_grid

    batched = point_grid.point_patch_features_batch

    def chunked(*args, **kwargs):  # Point-MAE's CUDA path (the prepared pieces), on the CPU
        return batched(*args, **{**kwargs, "chunk": 4})

    monkeypatch.setattr(point_grid, "point_patch_features_batch", chunked)
    expected = det.predict_batch(samples)
    calls = []
    original = patches.prepare_foregrounds

    def via_torch(fores, workers=1, part=True, device=None):
        calls.append(len(fores))
        prepare_foregrounds_torch(fores, part=part, device="cpu")
        assert all(f is None or f.image_size is None or f._resized_mask is not None
                   for f in fores)
        original(fores, workers, part)

    for module in (patches, multimodal, cfm, patchcore):
        monkeypatch.setattr(module, "prepare_foregrounds", via_torch)
    got = det.predict_batch(samples)
    assert calls  # the detector's batch went through the torch pieces
    for (score, amap), (ref_score, ref_map) in zip(got, expected, strict=True):
        assert score == ref_score
        np.testing.assert_array_equal(amap, ref_map)
