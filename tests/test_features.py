"""Feature extractors: EfficientNet-Lite0 (packaged weights), plug-ins, FPFH, raw xyz, grids."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from torch import nn

from pcad.errors import FileFormatError, InvalidInputError
from pcad.features import (
    EfficientNetLite0,
    backbone_info,
    create_backbone,
    efficientnet_lite0_weights_path,
    fpfh_map,
    list_backbones,
    point_mask,
    point_spacing,
    raw_xyz_map,
    read_state_dict,
    register_architecture_source,
    register_backbone,
    to_patch_grid,
)
from pcad.features.plugin import DownloadRefused, offline_guard

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def packaged_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def effnet() -> EfficientNetLite0:
    return create_backbone("effnet-lite0")


def _pink_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Natural-image-like (1/f spectrum) RGB batch in [0, 1], (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    out = []
    for _ in range(n):
        def field() -> np.ndarray:
            phase = np.exp(2j * np.pi * rng.random(amp.shape))
            return np.fft.irfft2(amp * phase, s=(size, size))

        base = field()
        x = np.stack([base + 0.3 * field() for _ in range(3)])
        x = (x - x.mean()) / x.std() * 0.25 + 0.45
        out.append(np.clip(x, 0, 1))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def _bn_agreement(net: EfficientNetLite0, x: torch.Tensor) -> float:
    """Median over BatchNorm layers of corr(batch mean of the BN input, running_mean)."""
    corrs: list[float] = []

    def hook(mod: nn.BatchNorm2d, inp: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        mu = inp[0].mean((0, 2, 3)).numpy()
        corrs.append(float(np.corrcoef(mu, mod.running_mean.numpy())[0, 1]))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            net.classify(x)
    finally:
        for h in handles:
            h.remove()
    return float(np.median(corrs))


# ----------------------------------------------------------------------------- effnet


def test_effnet_state_dict_matches_package_exactly(packaged_state_dict):
    own = EfficientNetLite0().state_dict()
    assert len(packaged_state_dict) == 296
    assert list(own) == list(packaged_state_dict)
    assert all(own[k].shape == v.shape for k, v in packaged_state_dict.items())
    n_params = sum(p.numel() for p in EfficientNetLite0().parameters())
    assert n_params == 4_652_008


def test_effnet_loads_packaged_weights_strictly(effnet, packaged_state_dict):
    assert not effnet.training
    assert not any(p.requires_grad for p in effnet.parameters())
    for k, v in effnet.state_dict().items():
        assert torch.equal(v, packaged_state_dict[k]), k


def test_effnet_shapes_and_strides(effnet):
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        f = effnet(img)
    assert f.shape == (1, 152, 28, 28) and f.dtype == torch.float32
    assert (effnet.out_channels, effnet.stride, effnet.layers) == (152, 8, (4, 10))
    assert torch.isfinite(f).all()
    # odd, non-square input: ceil(H / stride)
    with torch.no_grad():
        g = effnet(torch.rand(2, 3, 100, 150))
    assert g.shape == (2, 152, 13, 19)
    deep = create_backbone("effnet-lite0", layers=(15, 10, 4))
    with torch.no_grad():
        h = deep(img)
    assert (deep.out_channels, deep.stride, h.shape) == (472, 8, (1, 472, 28, 28))
    mid = create_backbone("effnet-lite0", layers=(10,), aggregate_kernel=1)
    with torch.no_grad():
        assert mid(img).shape == (1, 112, 14, 14) and mid.stride == 16


def test_effnet_deterministic_and_input_forms_agree(effnet):
    img = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        a = effnet(img)
        b = effnet(img)
        c = effnet(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
        d = effnet(np.stack([img, img]))
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-5)
    assert torch.equal(d[0], d[1]) and torch.allclose(d[:1], a, atol=1e-5)


def test_effnet_weights_agree_with_their_batchnorm_statistics(effnet):
    # The packaged BatchNorm running means were estimated on ImageNet activations. With the
    # real weights and a correct architecture the activations our module produces on
    # natural-like images line up with them; random weights do not.
    x = _pink_images(4, 160, seed=0)
    assert _bn_agreement(effnet, x) > 0.6
    rnd = create_backbone("effnet-lite0", pretrained=False)
    g = torch.Generator().manual_seed(0)
    for m in rnd.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
    assert abs(_bn_agreement(rnd, x)) < 0.3


def test_effnet_rejects_mismatched_weights_naming_keys(packaged_state_dict, tmp_path):
    sd = dict(packaged_state_dict)
    sd.pop("_blocks.3._bn1.running_var")
    sd["_blocks.99._extra.weight"] = torch.zeros(3)
    sd["_fc.weight"] = torch.zeros(10, 1280)
    with pytest.raises(InvalidInputError) as info:
        create_backbone("effnet-lite0", weights=sd)
    msg = str(info.value)
    assert "_blocks.3._bn1.running_var" in msg and "missing keys (1)" in msg
    assert "_blocks.99._extra.weight" in msg and "unexpected keys (1)" in msg
    assert "_fc.weight: checkpoint (10, 1280) vs model (1000, 1280)" in msg
    # a file path, and a checkpoint of another architecture entirely
    path = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(InvalidInputError, match=r"missing keys \(296\).*\.\.\. \(291 more\)"):
        create_backbone("effnet-lite0", weights=path)
    bad = dict(packaged_state_dict)
    bad["_conv_stem.weight"] = torch.full_like(bad["_conv_stem.weight"], float("nan"))
    with pytest.raises(InvalidInputError, match="_conv_stem.weight"):
        create_backbone("effnet-lite0", weights=bad)


def test_effnet_layers_and_input_errors(effnet):
    for bad in ((16,), ("",), (None,), (float("inf"),), ()):  # e.g. from an edited run
        with pytest.raises(InvalidInputError, match="layers"):
            EfficientNetLite0(layers=bad)
    with pytest.raises(InvalidInputError, match="image"):
        effnet(np.zeros((32, 32), np.uint8))
    with pytest.raises(InvalidInputError, match="image"):
        effnet(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(InvalidInputError, match="dtype"):
        effnet(np.zeros((32, 32, 3), np.int32))


def test_read_state_dict_unwraps_and_reports(tmp_path):
    lin = nn.Linear(2, 2)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in lin.state_dict().items()}}
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped, path)
    assert sorted(read_state_dict(path)) == ["bias", "weight"]
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FileFormatError, match="junk.pt"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, path)
    with pytest.raises(FileFormatError, match="not a state dict"):
        read_state_dict(path)


# ----------------------------------------------------------------------------- plug-ins


class _TinyNet(nn.Module):
    """A miniature ResNet-like layout: stem, layer1 (stride 2), layer2 (stride 4), head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, 1, 1)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.BatchNorm2d(6), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(6, 10, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(10, 5)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def tiny_source():
    built: list[_TinyNet] = []

    def build(name: str) -> nn.Module:
        if name != "tiny":
            raise InvalidInputError(f"tinytest:{name}: unknown")
        built.append(_TinyNet())
        return built[-1]

    register_architecture_source("tinytest", build, lambda name: ("layer2", "layer1"))
    return built


def test_plugin_loads_local_checkpoint(tiny_source, tmp_path):
    torch.manual_seed(0)
    ref = _TinyNet()
    path = tmp_path / "tiny.pth"
    torch.save({"model": ref.state_dict()}, path)
    net = create_backbone("tinytest:tiny", weights=path)
    assert net.layers == ("layer1", "layer2")  # finest first
    assert (net.out_channels, net.stride) == (16, 2)
    loaded = tiny_source[-1]
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with torch.no_grad():
        f = net(torch.rand(1, 3, 32, 32))
    assert f.shape == (1, 16, 16, 16)
    # the forward pass stopped after layer2 and left no hook behind
    assert all(not m._forward_hooks for m in loaded.modules())
    only = create_backbone("tinytest:tiny", weights=path, layers=("layer2",))
    assert (only.out_channels, only.stride) == (10, 4)


def test_plugin_rejects_mismatched_checkpoint(tiny_source, tmp_path):
    sd = _TinyNet().state_dict()
    sd["layer2.0.weight"] = torch.zeros(12, 6, 3, 3)
    sd.pop("fc.bias")
    sd["head.weight"] = torch.zeros(1)
    with pytest.raises(InvalidInputError) as info:
        create_backbone("tinytest:tiny", weights=sd)
    msg = str(info.value)
    assert "layer2.0.weight: checkpoint (12, 6, 3, 3) vs model (10, 6, 3, 3)" in msg
    assert "fc.bias" in msg and "head.weight" in msg


def test_plugin_errors(tiny_source):
    with pytest.raises(InvalidInputError, match="weights=PATH"):
        create_backbone("tinytest:tiny")
    with pytest.raises(InvalidInputError, match="SOURCE:NAME"):
        create_backbone("nosuchlib:tiny", weights={})
    with pytest.raises(InvalidInputError, match="unknown layers"):
        create_backbone("tinytest:tiny", random_init=True, layers=("layer9",))
    with pytest.raises(InvalidInputError, match=r"\(B, C, h, w\)"):
        create_backbone("tinytest:tiny", random_init=True, layers=("fc",))


@pytest.mark.parametrize("lib", ["timm", "torchvision"])
def test_plugin_library_missing_or_unknown_model(lib, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(nn.Linear(1, 1).state_dict(), path)
    if importlib.util.find_spec(lib) is None:
        with pytest.raises(ModuleNotFoundError, match=f"'{lib}' package is not installed"):
            create_backbone(f"{lib}:wide_resnet50_2", weights=path)
    else:
        with pytest.raises(InvalidInputError, match="unknown"):
            create_backbone(f"{lib}:no_such_model_xyz", weights=path)
        with pytest.raises(InvalidInputError, match="missing keys"):
            create_backbone(f"{lib}:resnet18", weights=path)


def test_offline_guard_refuses_downloads_and_restores():
    before = (torch.hub.get_dir(), torch.hub.load_state_dict_from_url,
              os.environ.get("HF_HUB_OFFLINE"))
    with offline_guard():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.listdir(torch.hub.get_dir()) == []
        with pytest.raises(DownloadRefused, match="never downloads"):
            torch.hub.load_state_dict_from_url("https://example.invalid/w.pth")
    after = (torch.hub.get_dir(), torch.hub.load_state_dict_from_url,
             os.environ.get("HF_HUB_OFFLINE"))
    assert after == before


# ----------------------------------------------------------------------------- registry


def test_registry_lists_and_creates():
    assert {"effnet-lite0", "fpfh", "raw_xyz"} <= set(list_backbones())
    assert "effnet-lite0" in list_backbones("eff*", kind="rgb")
    assert list_backbones("eff*", kind="points") == []
    assert backbone_info("fpfh").info["kind"] == "points"
    assert create_backbone("fpfh").out_channels == 33
    with pytest.raises(InvalidInputError, match="not registered"):
        create_backbone("resnet-9000")
    with pytest.raises(InvalidInputError, match="no weights"):
        create_backbone("fpfh", weights="x.pth")
    with pytest.raises(InvalidInputError, match="kind"):
        list_backbones(kind="audio")


def test_register_backbone_refuses_a_taken_name():
    @register_backbone("pcad-test-dummy", kind="points")
    def make(weights=None):
        return "dummy"

    assert create_backbone("pcad-test-dummy") == "dummy"
    register_backbone("pcad-test-dummy", kind="points")(make)  # same factory: fine
    with pytest.raises(InvalidInputError, match="already registered"):
        register_backbone("pcad-test-dummy")(lambda weights=None: None)
    with pytest.raises(InvalidInputError, match="':'"):
        register_backbone("timm:x")


# ----------------------------------------------------------------------------- points


def test_fpfh_map_shape_zeros_finite_deterministic(organized_scan):
    f = fpfh_map(organized_scan, remove_background=False)
    valid = np.any(organized_scan != 0, axis=-1)
    assert f.shape == (60, 80, 33) and f.dtype == np.float32
    assert np.isfinite(f).all()
    assert (f[~valid] == 0).all()
    assert (np.abs(f[valid]).sum(axis=1) > 0).all()
    # Open3D FPFH: three 11-bin histograms, each summing to 200 (own SPFH + neighbours)
    np.testing.assert_allclose(f[valid].reshape(-1, 3, 11).sum(-1), 200, rtol=1e-4)
    assert np.array_equal(f, fpfh_map(organized_scan, remove_background=False))


def test_fpfh_radii_follow_the_point_spacing(organized_scan):
    # Radii are relative to the spacing: the same shape in millimetres gives the same FPFH.
    f_m = fpfh_map(organized_scan, remove_background=False)
    f_mm = fpfh_map(organized_scan * 1000, remove_background=False)
    # (up to ties between equidistant grid neighbours at the 100-neighbour cap)
    np.testing.assert_allclose(f_mm, f_m, atol=2.0)  # histograms sum to 200
    assert np.abs(f_mm - f_m).mean() < 1e-2
    assert point_spacing(organized_scan * 1000) == pytest.approx(
        1000 * point_spacing(organized_scan), rel=1e-4)
    assert point_spacing(organized_scan) == pytest.approx(0.01, rel=0.05)


def _box_on_plane() -> np.ndarray:
    yy, xx = np.mgrid[:50, :50].astype(np.float32)
    xyz = np.stack([(xx - 25) * 0.01, (yy - 25) * 0.01, np.full_like(xx, 1.0)], -1)
    xyz[15:35, 15:35, 2] -= 0.08  # a box standing on the plane, towards the camera
    xyz[:, :3] = 0  # no measurement
    return xyz


def test_background_removal_and_raw_xyz():
    xyz = _box_on_plane()
    mask = point_mask(xyz)
    assert mask.sum() == 400 and mask[15:35, 15:35].all()
    f = fpfh_map(xyz)
    assert (f[~mask] == 0).all() and (np.abs(f[mask]).sum(1) > 0).all()
    raw = raw_xyz_map(xyz)
    assert np.array_equal(raw[mask], xyz[mask]) and (raw[~mask] == 0).all()
    raw_all = create_backbone("raw_xyz", remove_background=False)(xyz)
    assert np.array_equal(raw_all, xyz)
    roi = np.zeros((50, 50), bool)
    roi[20:30, 20:30] = True
    assert (np.abs(fpfh_map(xyz, valid=roi)).sum(-1) > 0).sum() == 100


def test_fpfh_input_errors():
    with pytest.raises(InvalidInputError, match="at least 5"):
        fpfh_map(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InvalidInputError, match=r"\(H, W, 3\)"):
        fpfh_map(np.zeros((10, 3), np.float32))
    bad = _box_on_plane()
    bad[20, 20] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        fpfh_map(bad)


def test_to_patch_grid_averages_valid_pixels_only():
    rng = np.random.default_rng(0)
    fm = rng.normal(size=(6, 9, 4)).astype(np.float32)
    valid = rng.random((6, 9)) > 0.3
    valid[:3, :3] = False  # an empty cell
    g, cov = to_patch_grid(fm, valid, (2, 3), return_coverage=True)
    assert g.shape == (2, 3, 4) and cov.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            cell = (slice(3 * i, 3 * i + 3), slice(3 * j, 3 * j + 3))
            v = valid[cell]
            want = fm[cell][v].mean(0) if v.any() else np.zeros(4)
            np.testing.assert_allclose(g[i, j], want, rtol=1e-5, atol=1e-6)
            assert cov[i, j] == pytest.approx(v.mean())
    assert (g[0, 0] == 0).all() and cov[0, 0] == 0
    # grids that do not divide the image: cells as adaptive_avg_pool2d, overlaps allowed
    full = to_patch_grid(fm, np.ones((6, 9), bool), (4, 4))
    want = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(fm).permute(2, 0, 1)[None], (4, 4))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="grid"):
        to_patch_grid(fm, valid, (7, 3))
    with pytest.raises(InvalidInputError, match="valid"):
        to_patch_grid(fm, valid[:5], (2, 3))
