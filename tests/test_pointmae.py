"""Point-MAE encoder, its checkpoint loader, patch features and the pretrain CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from pcad.cli.main import main
from pcad.errors import InvalidInputError
from pcad.features import PointMAEEncoder, load_point_encoder, point_patch_features
from pcad.features.point_grid import patch_cells
from pcad.features.pointmae import (
    default_fetch_idx,
    encoder_state_dict,
    infer_arch,
    shipped_weights_path,
)
from pcad.features.pointmae_pretrain import PretrainConfig, chamfer_l2
from pcad.io import write_points, write_xyz_tiff

TINY = {"trans_dim": 24, "depth": 4, "num_heads": 2, "num_group": 16, "group_size": 8,
        "tokenizer_dims": (8, 16, 32)}


def tiny_encoder(seed: int = 0, **kw) -> PointMAEEncoder:
    """A tiny encoder with seeded random weights (BatchNorm statistics included)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = PointMAEEncoder(**{**TINY, **kw})
        for name, t in enc.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.normal_(0, 0.2)
    return enc.freeze()


def official_checkpoint(enc: PointMAEEncoder, prefix: str = "") -> dict:
    """``enc`` in the layout of Point-MAE's pretrain.pth: the full Point_MAE model under
    ``base_model`` (encoder, decoder, mask token, head) plus optimizer and epoch."""
    d = enc.trans_dim
    sd = {f"{prefix}MAE_encoder.{k}": v.clone() for k, v in enc.state_dict().items()}
    sd.update({
        f"{prefix}mask_token": torch.zeros(1, 1, d),
        f"{prefix}decoder_pos_embed.0.weight": torch.zeros(128, 3),
        f"{prefix}decoder_pos_embed.2.weight": torch.zeros(d, 128),
        f"{prefix}MAE_decoder.blocks.0.norm1.weight": torch.ones(d),
        f"{prefix}MAE_decoder.blocks.0.attn.qkv.weight": torch.zeros(3 * d, d),
        f"{prefix}MAE_decoder.norm.weight": torch.ones(d),
        f"{prefix}increase_dim.0.weight": torch.zeros(3 * 32, d, 1),
        f"{prefix}increase_dim.0.bias": torch.zeros(3 * 32),
    })
    return {"base_model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
            "epoch": 300}


@pytest.fixture
def cloud() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 400, 3, generator=g) * torch.tensor([2.0, 1.0, 0.5])


def wavy_scan(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    xyz = np.stack([xx * 0.01, yy * 0.01, 0.5 + 0.05 * np.sin(xx / 7) * np.cos(yy / 9)], -1)
    xyz[:, : w // 4] = 0
    xyz[h // 2:, w // 2:] = 0
    return xyz.astype(np.float32)


# ------------------------------------------------------------------------------------------
# architecture and official key names
# ------------------------------------------------------------------------------------------


def official_keys(depth: int) -> list[str]:
    """The parameter and buffer names of Point-MAE's MaskTransformer (models/Point_MAE.py)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = []
    for seq in ("first_conv", "second_conv"):
        keys += [f"encoder.{seq}.0.weight", f"encoder.{seq}.0.bias"]
        keys += [f"encoder.{seq}.1.{b}" for b in bn]
        keys += [f"encoder.{seq}.3.weight", f"encoder.{seq}.3.bias"]
    keys += ["pos_embed.0.weight", "pos_embed.0.bias", "pos_embed.2.weight", "pos_embed.2.bias"]
    for i in range(depth):
        keys += [f"blocks.blocks.{i}.{k}" for k in (
            "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight",
            "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
            "mlp.fc2.weight", "mlp.fc2.bias")]
    return keys + ["norm.weight", "norm.bias"]


def test_default_architecture_has_the_official_names_and_shapes() -> None:
    with torch.device("meta"):
        enc = PointMAEEncoder()
    sd = enc.state_dict()
    assert sorted(sd) == sorted(official_keys(12))
    assert tuple(sd["encoder.first_conv.0.weight"].shape) == (128, 3, 1)
    assert tuple(sd["encoder.second_conv.0.weight"].shape) == (512, 512, 1)
    assert tuple(sd["encoder.second_conv.3.weight"].shape) == (384, 512, 1)
    assert tuple(sd["blocks.blocks.0.attn.qkv.weight"].shape) == (1152, 384)
    assert "blocks.blocks.0.attn.qkv.bias" not in sd
    assert (enc.num_group, enc.group_size, enc.fetch_idx, enc.out_channels) == (
        1024, 128, (3, 7, 11), 1152)


def test_default_fetch_idx() -> None:
    assert default_fetch_idx(12) == (3, 7, 11)
    assert default_fetch_idx(6) == (1, 3, 5)
    assert default_fetch_idx(3) == (0, 1, 2)
    assert default_fetch_idx(1) == (0,)
    for depth in range(1, 30):
        idx = default_fetch_idx(depth)
        assert idx[-1] == depth - 1 and len(set(idx)) == len(idx) == min(3, depth)


def test_official_size_checkpoint_loads_with_m3dm_defaults() -> None:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in PointMAEEncoder().state_dict().items()}
    sd = {f"module.MAE_encoder.{k}": (torch.zeros(s, dtype=torch.int64)
                                      if k.endswith("num_batches_tracked") else torch.zeros(s))
          for k, s in shapes.items()}
    sd["module.mask_token"] = torch.zeros(1, 1, 384)
    enc = load_point_encoder({"base_model": sd})
    assert (enc.trans_dim, enc.depth, enc.num_heads) == (384, 12, 6)
    assert (enc.num_group, enc.group_size) == (1024, 128)
    assert enc.out_channels == 1152 and not enc.normalize and enc.max_points is None
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


# ------------------------------------------------------------------------------------------
# grouping and forward
# ------------------------------------------------------------------------------------------


def fps_numpy(p: np.ndarray, m: int) -> np.ndarray:
    """Plain farthest point sampling from index 0 (float32 squared distances)."""
    idx = [0]
    dist = np.full(len(p), np.inf, np.float32)
    for _ in range(m - 1):
        d = p - p[idx[-1]]
        dist = np.minimum(dist, d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])
        dist[idx] = -1
        idx.append(int(np.argmax(dist)))
    return np.array(idx)


def test_grouping_matches_a_numpy_scipy_reference(cloud: torch.Tensor) -> None:
    enc = tiny_encoder(num_group=24, group_size=10)
    nb, centers, cidx, gidx = enc.group(cloud)
    assert tuple(nb.shape) == (2, 24, 10, 3) and tuple(centers.shape) == (2, 24, 3)
    for b in range(2):
        p = cloud[b].numpy()
        ref_c = fps_numpy(p, 24)
        np.testing.assert_array_equal(cidx[b].numpy(), ref_c)
        np.testing.assert_array_equal(centers[b].numpy(), p[ref_c])
        _, ref_g = cKDTree(p).query(p[ref_c], k=10)
        for row, ref_row in zip(gidx[b].numpy(), ref_g, strict=True):
            assert set(row.tolist()) == set(ref_row.tolist())
        np.testing.assert_allclose(nb[b].numpy(), p[gidx[b].numpy()] - p[ref_c][:, None],
                                   atol=1e-6)


def test_forward_shapes_dtypes_and_determinism(cloud: torch.Tensor) -> None:
    enc = tiny_encoder()
    feats, centers = enc(cloud)
    assert feats.shape == (2, 16, enc.out_channels) and enc.out_channels == 3 * 24
    assert feats.dtype == torch.float32 and centers.dtype == torch.float32
    assert centers.shape == (2, 16, 3) and bool(torch.isfinite(feats).all())
    again, _ = enc(cloud)
    assert torch.equal(feats, again)
    # the items of a batch do not see each other
    single, _ = enc(cloud[1:])
    torch.testing.assert_close(single[0], feats[1], rtol=1e-5, atol=1e-5)


def test_ragged_lengths(cloud: torch.Tensor) -> None:
    enc = tiny_encoder()
    lengths = torch.tensor([400, 250])
    feats, centers = enc(cloud, lengths)
    alone, c_alone = enc(cloud[1:, :250])
    torch.testing.assert_close(feats[1], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(centers[1], c_alone[0])


def test_features_are_normed_block_outputs(cloud: torch.Tensor) -> None:
    enc = tiny_encoder(fetch_idx=(1, 3))
    feats, _ = enc(cloud)
    nb, centers, _, _ = enc.group(cloud)
    x = enc.encoder(nb)
    pos = enc.pos_embed(centers)
    outs = []
    for block in enc.blocks.blocks:
        x = block(x + pos)
        outs.append(enc.norm(x))
    torch.testing.assert_close(feats, torch.cat([outs[1], outs[3]], -1), rtol=1e-5, atol=1e-5)


def test_normalize_and_max_points_keep_centers_in_input_frame(cloud: torch.Tensor) -> None:
    enc = tiny_encoder(normalize=True, max_points=200)
    feats, centers = enc(cloud)
    kept, lens, work = enc.prepare(cloud)
    assert lens.tolist() == [200, 200] and kept.shape[1] == 200
    np.testing.assert_array_equal(kept[0].numpy(), cloud[0, ::2].numpy())  # stride 400/200
    assert float(work.norm(dim=-1).max()) == pytest.approx(1.0, abs=1e-5)
    member = (centers[0][:, None, :] == cloud[0][None, :, :]).all(-1).any(-1)
    assert bool(member.all())
    # the features do not depend on the cloud's position or scale
    moved, _ = enc(cloud * 3.0 + 5.0)
    torch.testing.assert_close(moved, feats, rtol=1e-3, atol=1e-3)


def test_fewer_points_than_groups_names_the_counts() -> None:
    enc = tiny_encoder()
    with pytest.raises(InvalidInputError, match=r"10 points.*num_group=16"):
        enc(torch.rand(1, 10, 3))
    enc = tiny_encoder(num_group=4, group_size=32)
    with pytest.raises(InvalidInputError, match=r"20 points.*group_size=32"):
        enc(torch.rand(1, 20, 3))
    with pytest.raises(InvalidInputError, match=r"item 1 has 12 points"):
        tiny_encoder()(torch.rand(2, 50, 3), torch.tensor([50, 12]))


def test_bad_point_tensors() -> None:
    enc = tiny_encoder()
    with pytest.raises(InvalidInputError, match="points"):
        enc(np.zeros((1, 50, 3), np.float32))
    with pytest.raises(InvalidInputError, match="points"):
        enc(torch.zeros(50, 3))
    bad = torch.rand(1, 50, 3)
    bad[0, 3, 1] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        enc(bad)


# ------------------------------------------------------------------------------------------
# checkpoint loading
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_format_loads_with_prefixes_and_decoder_keys(
        tmp_path: Path, cloud: torch.Tensor, prefix: str) -> None:
    enc = tiny_encoder(seed=3)
    path = tmp_path / "pretrain.pth"
    torch.save(official_checkpoint(enc, prefix), path)
    loaded = load_point_encoder(path, num_group=16, group_size=8, num_heads=2)
    assert loaded.arch == enc.arch
    for k, v in enc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.testing.assert_close(loaded(cloud)[0], enc(cloud)[0])


def test_plain_state_dict_and_half_precision(cloud: torch.Tensor) -> None:
    enc = tiny_encoder(seed=4)
    loaded = load_point_encoder(enc.state_dict(), num_group=16, group_size=8, num_heads=2)
    torch.testing.assert_close(loaded(cloud)[0], enc(cloud)[0])
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in enc.state_dict().items()}
    loaded = load_point_encoder({"base_model": half}, num_group=16, group_size=8, num_heads=2)
    assert loaded.norm.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.norm.weight, enc.norm.weight.half().float())


def test_finetuned_format_with_cls_token(cloud: torch.Tensor) -> None:
    enc = tiny_encoder(seed=5, cls_token=True)
    sd = {f"base_model.{k}": v for k, v in enc.state_dict().items()}
    sd["base_model.cls_head_finetune.0.weight"] = torch.zeros(256, 48)
    loaded = load_point_encoder({"base_model": sd}, num_group=16, group_size=8, num_heads=2)
    assert loaded.use_cls
    feats, _ = loaded(cloud)
    assert feats.shape == (2, 16, 72)  # the cls token is not among the outputs
    torch.testing.assert_close(feats, enc(cloud)[0])


def test_encoder_state_dict_and_infer_arch() -> None:
    enc = tiny_encoder()
    sd = encoder_state_dict(official_checkpoint(enc, "module.")["base_model"])
    assert sorted(sd) == sorted(enc.state_dict())
    arch = infer_arch(sd)
    assert (arch["trans_dim"], arch["depth"], arch["encoder_dims"]) == (24, 4, 24)
    assert arch["tokenizer_dims"] == [8, 16, 32] and arch["mlp_ratio"] == 4.0
    assert arch["qkv_bias"] is False and arch["cls_token"] is False


def test_wrong_architecture_names_the_keys() -> None:
    ckpt = official_checkpoint(tiny_encoder())
    sd = ckpt["base_model"]
    sd["MAE_encoder.blocks.blocks.1.attn.qkv.weight"] = torch.zeros(5, 24)
    del sd["MAE_encoder.blocks.blocks.2.norm2.bias"]
    sd["MAE_encoder.head.weight"] = torch.zeros(3, 3)
    with pytest.raises(InvalidInputError) as info:
        load_point_encoder(ckpt, num_group=16, group_size=8)
    msg = str(info.value)
    assert "blocks.blocks.1.attn.qkv.weight: checkpoint (5, 24) vs model (72, 24)" in msg
    assert "missing keys (1): blocks.blocks.2.norm2.bias" in msg
    assert "unexpected keys (1): head.weight" in msg


def test_foreign_checkpoint_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unexpected keys"):
        load_point_encoder({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_point_encoder(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_point_encoder(bad)


def test_shipped_checkpoint_loads_and_gives_finite_features() -> None:
    path = shipped_weights_path()
    assert path.stat().st_size < 10_000_000
    record = torch.load(path, map_location="cpu", weights_only=True)["pcad"]
    assert record["format"] == "pcad.pointmae/1"
    assert np.isfinite(record["training"]["final_loss"])
    enc = load_point_encoder()
    assert enc.arch.items() >= record["arch"].items()
    assert enc.normalize and enc.out_channels == len(enc.fetch_idx) * enc.trans_dim
    feats, fg = point_patch_features(wavy_scan(), 64, (16, 16), enc, remove_background=False)
    assert feats.shape == (256, enc.out_channels) and feats.dtype == np.float32
    assert bool(np.isfinite(feats).all()) and fg.any() and float(np.abs(feats[fg]).max()) > 0


# ------------------------------------------------------------------------------------------
# patch features
# ------------------------------------------------------------------------------------------


def test_patch_cells_match_adaptive_pooling() -> None:
    assert patch_cells(8, 4).tolist() == [[0], [0], [1], [1], [2], [2], [3], [3]]
    for n_in, n_out in ((7, 3), (10, 4), (5, 5), (9, 1)):
        cells = patch_cells(n_in, n_out)
        eye = torch.eye(n_in, dtype=torch.float64)[None]
        pooled = torch.nn.functional.adaptive_avg_pool1d(eye, n_out)[0]  # (n_in, n_out)
        for i in range(n_in):
            assert set(cells[i][cells[i] >= 0].tolist()) == set(
                np.flatnonzero(pooled[i].numpy() > 0).tolist())


def idw_reference(pixels: np.ndarray, centers: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """M3DM's interpolating_points in numpy: 3 nearest centres, weights 1 / (d^2 + 1e-8)."""
    d2 = ((pixels[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :3]
    w = 1.0 / (np.take_along_axis(d2, nn, 1) + 1e-8)
    w /= w.sum(1, keepdims=True)
    return (feats[nn] * w[..., None]).sum(1)


@pytest.mark.parametrize("size,grid", [(48, (12, 12)), (40, (7, 9))])
def test_point_patch_features_match_a_dense_reference(size: int, grid: tuple[int, int]) -> None:
    from pcad.data.preprocess import resize_organized

    enc = tiny_encoder(num_group=32)
    xyz = wavy_scan()
    feats, fg = point_patch_features(xyz, size, grid, enc, remove_background=False)
    dense, fg_dense = point_patch_features(xyz, size, grid, enc, remove_background=False,
                                           dense=True)
    assert feats.shape == (grid[0] * grid[1], enc.out_channels) and fg.dtype == bool
    np.testing.assert_array_equal(fg, fg_dense)
    np.testing.assert_allclose(feats, dense, rtol=1e-4, atol=1e-5)
    assert not feats[~fg].any()
    # explicit numpy reference: interpolate, then average the foreground pixels of each cell
    img = resize_organized(xyz, size)
    mask = np.any(img != 0, axis=-1)
    pts = torch.from_numpy(img[mask])[None]
    g_feats, centers = enc(pts)
    per_pixel = idw_reference(img[mask], centers[0].numpy().astype(np.float64),
                              g_feats[0].numpy().astype(np.float64))
    fmap = np.zeros((size, size, enc.out_channels))
    fmap[mask] = per_pixel
    rows, cols = patch_cells(size, grid[0]), patch_cells(size, grid[1])
    ref = np.zeros((grid[0], grid[1], enc.out_channels))
    count = np.zeros(grid)
    for r, c in zip(*np.nonzero(mask), strict=True):
        for i in rows[r][rows[r] >= 0]:
            for j in cols[c][cols[c] >= 0]:
                ref[i, j] += fmap[r, c]
                count[i, j] += 1
    ref /= np.maximum(count, 1)[..., None]
    np.testing.assert_array_equal(fg, count.reshape(-1) > 0)
    np.testing.assert_allclose(feats, ref.reshape(-1, enc.out_channels), rtol=1e-4, atol=1e-5)


def test_point_patch_features_deterministic_and_background_removal() -> None:
    enc = tiny_encoder()
    xyz = wavy_scan()
    a = point_patch_features(xyz, 32, (8, 8), enc, remove_background=False)
    b = point_patch_features(xyz, 32, (8, 8), enc, remove_background=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # a box on a table: with background removal only the box's patches are foreground
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    scene = np.stack([xx * 0.01, yy * 0.01, np.full_like(xx, 1.0)], -1)
    scene[16:48, 16:48, 2] -= 0.1
    _, fg = point_patch_features(scene, 64, (8, 8), enc)
    expect = np.zeros((8, 8), bool)
    expect[2:6, 2:6] = True
    np.testing.assert_array_equal(fg, expect.reshape(-1))


def test_point_patch_features_errors() -> None:
    enc = tiny_encoder()
    with pytest.raises(InvalidInputError, match=r"no foreground point.*\(20, 30, 3\)"):
        point_patch_features(np.zeros((20, 30, 3), np.float32), 16, (4, 4), enc)
    few = np.zeros((20, 20, 3), np.float32)
    few[5:7, 5:7] = 1.0 + np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    with pytest.raises(InvalidInputError, match=r"4 points.*num_group=16"):
        point_patch_features(few, 20, (4, 4), enc, remove_background=False)
    with pytest.raises(InvalidInputError, match="grid"):
        point_patch_features(wavy_scan(), 16, (32, 4), enc)
    with pytest.raises(InvalidInputError, match="xyz"):
        point_patch_features(np.zeros((20, 30)), 16, (4, 4), enc)
    with pytest.raises(InvalidInputError, match="encoder"):
        point_patch_features(wavy_scan(), 16, (4, 4), object())


# ------------------------------------------------------------------------------------------
# pretraining
# ------------------------------------------------------------------------------------------

TINY_CLI = ["--epochs", "2", "--trans-dim", "16", "--depth", "2", "--num-heads", "2",
            "--points", "128", "--num-group", "8", "--group-size", "16", "--batch-size", "2",
            "--quiet"]


def test_chamfer_l2() -> None:
    a = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    b = torch.tensor([[[0.0, 0, 0], [3, 0, 0]]])
    # a -> b: 0 and 1; b -> a: 0 and 4 (squared distances), means summed
    assert float(chamfer_l2(a, b)) == pytest.approx(0.5 + 2.0)
    assert float(chamfer_l2(a, a)) == 0.0


def test_config_validation() -> None:
    with pytest.raises(InvalidInputError, match="points"):
        PretrainConfig(points=16, num_group=32).validate()
    with pytest.raises(InvalidInputError, match="num_heads"):
        PretrainConfig(trans_dim=20, num_heads=6).validate()
    with pytest.raises(InvalidInputError, match="mask_ratio"):
        PretrainConfig(num_group=2, mask_ratio=0.3).validate()
    with pytest.raises(InvalidInputError, match="epochs"):
        PretrainConfig(epochs=0).validate()


@pytest.fixture
def mesh_folder(tmp_path: Path) -> Path:
    d = tmp_path / "meshes"
    d.mkdir()
    trimesh.creation.box(extents=[2.0, 1.0, 0.5]).export(d / "box.stl")
    trimesh.creation.icosphere(subdivisions=2).export(d / "sphere.obj")
    rng = np.random.default_rng(0)
    write_points(d / "cloud.ply", rng.normal(size=(300, 3)).astype(np.float32))
    (d / "notes.txt.bak").write_text("ignored")
    return d


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_pretrain_cli_end_to_end_and_same_bytes(
        mesh_folder: Path, tmp_path: Path, cloud: torch.Tensor,
        capsys: pytest.CaptureFixture[str]) -> None:
    outs = [tmp_path / "a.pth", tmp_path / "b.pth"]
    for out in outs:
        status, stdout, err = run_cli(["pretrain-points", "--data", mesh_folder, "--out", out,
                                       "--seed", "5", *TINY_CLI], capsys)
        assert status == 0, err
        assert "wrote" in stdout and "3 clouds" in stdout
    assert outs[0].read_bytes() == outs[1].read_bytes()
    ckpt = torch.load(outs[0], weights_only=True)
    keys = list(ckpt["base_model"])
    assert "MAE_encoder.encoder.first_conv.0.weight" in keys
    assert "MAE_encoder.blocks.blocks.1.attn.qkv.weight" in keys
    assert "mask_token" in keys and any(k.startswith("MAE_decoder.") for k in keys)
    assert "increase_dim.0.weight" in keys
    record = ckpt["pcad"]
    assert record["arch"]["max_points"] == 128 and record["arch"]["num_group"] == 32
    assert len(record["training"]["loss_history"]) == 2
    assert record["training"]["data"]["kinds"] == {"mesh": 2, "points": 1}
    enc = load_point_encoder(outs[0])
    assert (enc.trans_dim, enc.depth, enc.num_heads, enc.num_group, enc.group_size) == (
        16, 2, 2, 32, 16)
    feats, _ = enc(cloud)
    assert feats.shape == (2, 32, 32) and bool(torch.isfinite(feats).all())
    # another seed gives other weights
    other = tmp_path / "c.pth"
    assert run_cli(["pretrain-points", "--data", mesh_folder, "--out", other, "--seed", "6",
                    *TINY_CLI], capsys)[0] == 0
    assert other.read_bytes() != outs[0].read_bytes()


def test_pretrain_cli_on_an_mvtec_layout(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    yy, xx = np.mgrid[:40, :40].astype(np.float32)
    for cat in ("bagel", "tire"):
        for i in range(2):
            xyz = np.stack([xx * 0.01, yy * 0.01, np.full_like(xx, 1.0)], -1)
            xyz[10:30, 8 + i:30, 2] -= 0.05 + 0.01 * np.sin(xx[10:30, 8 + i:30])
            write_xyz_tiff(root / cat / "train" / "good" / "xyz" / f"{i:03d}.tiff", xyz)
    (root / "tire" / "test" / "crack" / "xyz").mkdir(parents=True)  # not read
    out = tmp_path / "m.pth"
    status, stdout, err = run_cli(["pretrain-points", "--data", root, "--out", out,
                                   "--half", "--encoder-only", *TINY_CLI], capsys)
    assert status == 0, err
    ckpt = torch.load(out, weights_only=True)
    assert all(k.startswith("MAE_encoder.") for k in ckpt["base_model"])
    assert ckpt["base_model"]["MAE_encoder.norm.weight"].dtype == torch.float16
    assert ckpt["pcad"]["training"]["data"]["layout"] == "mvtec3d"
    assert ckpt["pcad"]["training"]["data"]["clouds"] == 4
    assert load_point_encoder(out).norm.weight.dtype == torch.float32


@pytest.mark.parametrize("case", ["empty", "missing", "small", "epochs", "heads", "points",
                                  "mvtec-empty"])
def test_pretrain_cli_bad_input(case: str, mesh_folder: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    data = mesh_folder
    extra: list[str] = []
    if case == "empty":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "missing":
        data = tmp_path / "nope"
    elif case == "small":
        data = tmp_path / "small"
        write_points(data / "tiny.xyz", np.random.default_rng(0).normal(size=(12, 3)))
    elif case == "epochs":
        extra = ["--epochs", "0"]
    elif case == "heads":
        extra = ["--trans-dim", "15"]
    elif case == "points":
        extra = ["--points", "4"]
    elif case == "mvtec-empty":
        data = tmp_path / "ds"
        (data / "bagel" / "train" / "good" / "xyz").mkdir(parents=True)
    out = tmp_path / "out" / "w.pth"
    status, stdout, err = run_cli(["pretrain-points", "--data", data, "--out", out,
                                   *TINY_CLI, *extra], capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcad: error: "), err
    assert not out.exists() and not (tmp_path / "out").exists()
    expected = {"empty": "no training data", "missing": "not a folder", "small": "tiny.xyz",
                "epochs": "epochs", "heads": "num_heads", "points": "points",
                "mvtec-empty": "no training data"}[case]
    assert expected in lines[0]
