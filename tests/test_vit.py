"""DINO ViT-B/8 backbone: official key names, checkpoint formats, forward pass, pos-embed."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcad.errors import FileFormatError, InvalidInputError
from pcad.features import create_backbone, list_backbones
from pcad.features.base import IMAGENET_MEAN, IMAGENET_STD
from pcad.features.vit import (
    DINO_VITB8_FILE,
    DinoViT,
    infer_vit_config,
    read_vit_state_dict,
)

# tiny architecture used throughout: D = 32, 2 blocks, 2 heads, patch 8, native grid 4 x 4
DIM, DEPTH, HEADS, PATCH, GRID = 32, 2, 2, 8, 4


# ----------------------------------------------------------------------------- helpers


def official_shapes(dim: int = 768, depth: int = 12, patch: int = 8, grid: int = 28,
                    mlp: int = 4) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of facebookresearch/dino ``vit_base(patch_size=8)``'s state dict, in
    order (written from vision_transformer.py, independently of pcad's module)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, grid * grid + 1, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (mlp * dim, dim), b + "mlp.fc1.bias": (mlp * dim,),
            b + "mlp.fc2.weight": (dim, mlp * dim), b + "mlp.fc2.bias": (dim,),
        })
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def official_state_dict(seed: int = 0, **dims: int) -> dict[str, torch.Tensor]:
    """Random weights in the official format (LayerNorm weights around 1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_shapes(**dims).items():
        v = torch.randn(shape, generator=g)
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            v = 1.0 + 0.1 * v
        elif k.endswith(".bias"):
            v = 0.05 * v
        elif k in ("cls_token", "pos_embed"):
            v = 0.5 * v
        else:
            v = v / math.sqrt(shape[1] if len(shape) == 2 else 3 * shape[-1] ** 2)
        sd[k] = v
    return sd


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return official_state_dict(seed, dim=DIM, depth=DEPTH, patch=PATCH, grid=GRID)


def dino_interpolate(pos_embed: torch.Tensor, h: int, w: int, patch: int) -> torch.Tensor:
    """DINO's ``interpolate_pos_encoding`` transcribed (``w`` there is the image height)."""
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    w0, h0 = h // patch + 0.1, w // patch + 0.1
    patch_pos = F.interpolate(
        pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], patch_pos), dim=1)


def reference_block(sd: dict[str, torch.Tensor], i: int, t: torch.Tensor,
                    heads: int) -> torch.Tensor:
    """One DINO block written out with explicit matrix products and softmax."""
    p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
    b, n, d = t.shape
    dh = d // heads
    y = F.layer_norm(t, (d,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
    qkv = y @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]
    q, k, v = (z.reshape(b, n, heads, dh).transpose(1, 2) for z in qkv.split(d, dim=-1))
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
    o = (attn @ v).transpose(1, 2).reshape(b, n, d)
    t = t + o @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    y = F.layer_norm(t, (d,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
    hidden = F.gelu(y @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
    return t + hidden @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]


def reference_features(sd: dict[str, torch.Tensor], image: np.ndarray, heads: int,
                       patch: int) -> torch.Tensor:
    """``(1, D, H / p, W / p)``: normalized last-block patch tokens, computed by hand."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    gh, gw = x.shape[2] // patch, x.shape[3] // patch
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    t = torch.cat((sd["cls_token"], t.flatten(2).transpose(1, 2)), dim=1)
    side = math.isqrt(sd["pos_embed"].shape[1] - 1)
    pos = sd["pos_embed"] if (gh, gw) == (side, side) else dino_interpolate(
        sd["pos_embed"], x.shape[2], x.shape[3], patch)
    t = t + pos
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        t = reference_block(sd, i, t, heads)
    t = F.layer_norm(t, (t.shape[-1],), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return t[:, 1:].transpose(1, 2).reshape(1, -1, gh, gw)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    return tiny_state_dict()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_sd) -> str:
    path = tmp_path_factory.mktemp("dino") / DINO_VITB8_FILE
    torch.save(tiny_sd, path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tiny_file) -> DinoViT:
    return create_backbone("dino-vitb8", weights=tiny_file)


# ----------------------------------------------------------------------------- ViT-B/8


def test_vitb8_state_dict_has_the_official_keys_and_shapes():
    with torch.device("meta"):  # shapes only, no memory
        net = DinoViT()
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    official = official_shapes()
    assert len(official) == 150
    assert list(own) == list(official)
    assert own == official
    assert sum(math.prod(s) for s in official.values()) == 85_807_872
    assert (net.out_channels, net.stride, net.grid, net.layers) == (768, 8, 28, (11,))
    assert net.blocks[0].attn.num_heads == 12
    assert net.blocks[0].norm1.eps == net.norm.eps == 1e-6


@pytest.mark.slow
def test_vitb8_loads_an_official_checkpoint_and_maps_224_to_28x28():
    sd = official_state_dict(seed=1)
    assert infer_vit_config(sd) == {"embed_dim": 768, "depth": 12, "patch_size": 8,
                                    "img_size": 224}
    net = create_backbone("dino-vitb8", weights=sd)
    assert (net.embed_dim, net.depth, net.num_heads, net.patch_size) == (768, 12, 12, 8)
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())
    with torch.no_grad():
        f = net(random_image(224, 224))  # the only full-size forward pass
    assert f.shape == (1, 768, 28, 28) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    # the final LayerNorm: per-token mean over channels ~ mean of norm.bias
    assert torch.allclose(f.mean(1), sd["norm.bias"].mean().expand(1, 28, 28), atol=0.05)


# ----------------------------------------------------------------------------- loading


def test_registered_and_weights_required():
    assert "dino-vitb8" in list_backbones("dino*", kind="rgb")
    with pytest.raises(InvalidInputError, match=DINO_VITB8_FILE) as err:
        create_backbone("dino-vitb8")
    assert "local path" in str(err.value)
    with pytest.raises(FileNotFoundError):
        create_backbone("dino-vitb8", weights="/nonexistent/dino_vitbase8_pretrain.pth")
    with pytest.raises(InvalidInputError, match="weights"):
        create_backbone("dino-vitb8", weights=3)


def test_strict_load_infers_the_architecture(tiny, tiny_sd):
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads, tiny.patch_size, tiny.grid) == (
        DIM, DEPTH, 1, PATCH, GRID)  # heads default: max(1, 32 // 64)
    assert (tiny.out_channels, tiny.stride) == (DIM, PATCH)
    assert not tiny.training and not any(p.requires_grad for p in tiny.parameters())
    own = tiny.state_dict()
    assert list(own) == list(tiny_sd)
    assert all(torch.equal(own[k], v) for k, v in tiny_sd.items())
    assert torch.equal(tiny.pixel_mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert torch.equal(tiny.pixel_std.flatten(), torch.tensor(IMAGENET_STD))


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_forward_equals_a_handwritten_reference(tiny_sd, heads):
    net = create_backbone("dino-vitb8", weights=tiny_sd, num_heads=heads)
    assert net.num_heads == heads
    for h, w in [(32, 32), (48, 64), (24, 40)]:  # native grid, then interpolated
        img = random_image(h, w, seed=h + w)
        with torch.no_grad():
            got = net(img)
        want = reference_features(tiny_sd, img, heads, PATCH)
        assert got.shape == (1, DIM, h // PATCH, w // PATCH)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_attention_block_fused_and_manual_agree_with_reference(tiny_sd):
    net = DinoViT(embed_dim=DIM, depth=DEPTH, num_heads=HEADS, img_size=GRID * PATCH)
    net.load_state_dict(tiny_sd)
    block = net.blocks[1]
    t = torch.randn(3, 1 + 17, DIM, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        block.attn.fused = True
        fused = block(t)
        block.attn.fused = False
        manual = block(t)
        want = reference_block(tiny_sd, 1, t, HEADS)
        # the attention alone: SDPA vs softmax(q k^T / sqrt(d)) v
        block.attn.fused = True
        a_fused = block.attn(t)
        block.attn.fused = False
        a_manual = block.attn(t)
    torch.testing.assert_close(a_fused, a_manual, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused, manual, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused, want, atol=1e-5, rtol=1e-5)


def _teacher_checkpoint(sd: dict[str, torch.Tensor]) -> dict[str, object]:
    """DINO main_dino.py's save_dict: student under DDP, teacher with a DINOHead."""
    dino_head = {"head.mlp.0.weight": torch.zeros(64, DIM), "head.mlp.0.bias": torch.zeros(64),
                 "head.last_layer.weight_g": torch.ones(16, 1),
                 "head.last_layer.weight_v": torch.zeros(16, 8)}
    teacher = {"backbone." + k: v for k, v in sd.items()} | dino_head
    student = {"module.backbone." + k: torch.zeros_like(v) for k, v in sd.items()}
    student |= {"module." + k: v for k, v in dino_head.items()}
    return {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []},
            "epoch": 100, "args": argparse.Namespace(arch="vit_base", patch_size=8, lr=5e-4),
            "dino_loss": {"center": torch.zeros(1, 16)}}


@pytest.mark.parametrize("variant", ["model", "state_dict", "module", "module+backbone",
                                     "teacher", "timm-head"])
def test_wrapped_and_prefixed_checkpoints(variant, tiny_sd, tiny, tmp_path):
    if variant == "model":
        obj: object = {"model": tiny_sd, "epoch": 3}
    elif variant == "state_dict":
        obj = {"state_dict": {"module." + k: v for k, v in tiny_sd.items()}}
    elif variant == "module":
        obj = {"module." + k: v for k, v in tiny_sd.items()}
    elif variant == "module+backbone":
        obj = {"model": {"module.backbone." + k: v for k, v in tiny_sd.items()}}
    elif variant == "teacher":
        obj = _teacher_checkpoint(tiny_sd)
    else:  # timm's vit_base_patch8_224.dino state dict, here saved with a classifier head
        obj = dict(tiny_sd) | {"head.weight": torch.zeros(10, DIM), "head.bias": torch.zeros(10)}
    path = tmp_path / f"{variant}.pth"
    torch.save(obj, path)
    assert set(read_vit_state_dict(path)) == set(tiny_sd)
    net = create_backbone("dino-vitb8", weights=str(path))
    img = random_image(32, 32)
    with torch.no_grad():
        assert torch.equal(net(img), tiny(img))


def test_unreadable_checkpoints(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FileFormatError, match="bad.pth"):
        create_backbone("dino-vitb8", weights=bad)
    nested = tmp_path / "nested.pth"
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, nested)
    with pytest.raises(FileFormatError, match="nested.pth.*not a state dict"):
        read_vit_state_dict(nested)
    with pytest.raises(FileFormatError, match="head"):
        read_vit_state_dict({"head.weight": torch.zeros(2, 2)})
    with pytest.raises(FileFormatError, match="two keys"):
        read_vit_state_dict({"norm.weight": torch.ones(2), "module.norm.weight": torch.ones(2)})
    with pytest.raises(FileFormatError):
        create_backbone("dino-vitb8", weights=tmp_path)  # a directory


def test_wrong_architecture_names_the_keys(tiny_sd):
    sd = dict(tiny_sd)
    del sd["blocks.1.mlp.fc2.bias"]
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(DIM)
    with pytest.raises(InvalidInputError) as err:
        create_backbone("dino-vitb8", weights=sd)
    msg = str(err.value)
    assert "missing keys (1): blocks.1.mlp.fc2.bias" in msg
    assert "unexpected keys (1): blocks.0.attn.q_norm.weight" in msg

    sd = dict(tiny_sd) | {"blocks.1.mlp.fc1.weight": torch.zeros(2 * DIM, DIM)}
    with pytest.raises(InvalidInputError, match=r"blocks\.1\.mlp\.fc1\.weight: checkpoint"):
        create_backbone("dino-vitb8", weights=sd)

    # the caller asks for ViT-B/8 explicitly: the tiny checkpoint is refused
    with pytest.raises(InvalidInputError, match=r"shape mismatch.*cls_token"):
        create_backbone("dino-vitb8", weights=tiny_sd, embed_dim=768, depth=DEPTH)
    with pytest.raises(InvalidInputError, match=r"missing keys.*blocks\.2\."):
        create_backbone("dino-vitb8", weights=tiny_sd, depth=3)

    # not a ViT at all (a ResNet): built on the meta device, so reporting it is cheap
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 2048)}
    with pytest.raises(InvalidInputError) as err:
        create_backbone("dino-vitb8", weights=resnet)
    assert "missing keys (150): cls_token, pos_embed" in str(err.value)
    assert "unexpected keys (2): conv1.weight, fc.weight" in str(err.value)

    with pytest.raises(InvalidInputError, match="NaN or inf"):
        create_backbone("dino-vitb8",
                        weights=dict(tiny_sd) | {"norm.bias": torch.full((DIM,), np.nan)})
    with pytest.raises(InvalidInputError, match="num_heads"):
        create_backbone("dino-vitb8", weights=tiny_sd, num_heads=3)


# ----------------------------------------------------------------------------- forward


def test_output_shape_input_forms_and_determinism(tiny, tiny_file):
    img = random_image(48, 40, seed=3)
    with torch.no_grad():
        a = tiny(img)
        b = tiny(img)
        c = create_backbone("dino-vitb8", weights=tiny_file)(img)
        batch = tiny(torch.from_numpy(np.stack([img, img[::-1].copy()])))
        floats = tiny(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0)
    assert a.shape == (1, DIM, 6, 5) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(a, c)
    assert batch.shape == (2, DIM, 6, 5)
    torch.testing.assert_close(batch[:1], a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(floats, a, atol=1e-6, rtol=1e-6)


def test_sizes_not_multiple_of_the_patch_are_refused(tiny):
    for h, w in [(36, 32), (32, 30), (4, 4)]:
        with pytest.raises(InvalidInputError, match="multiples of the patch size 8"):
            tiny(random_image(h, w))


def test_intermediate_layers_and_aggregation(tiny_sd):
    both = create_backbone("dino-vitb8", weights=tiny_sd, layers=(0, -1))
    last = create_backbone("dino-vitb8", weights=tiny_sd)
    pooled = create_backbone("dino-vitb8", weights=tiny_sd, aggregate_kernel=3)
    img = random_image(32, 32, seed=9)
    with torch.no_grad():
        f = both(img)
        g = last(img)
        p = pooled(img)
    assert both.layers == (0, 1) and both.out_channels == 2 * DIM and f.shape[1] == 2 * DIM
    torch.testing.assert_close(f[:, DIM:], g)
    torch.testing.assert_close(p, F.avg_pool2d(g, 3, 1, 1, count_include_pad=False))
    for bad in ((2,), ("",), (None,), ()):  # e.g. from an edited run
        with pytest.raises(InvalidInputError, match="layers"):
            create_backbone("dino-vitb8", weights=tiny_sd, layers=bad)


# ----------------------------------------------------------------------------- pos-embed


def test_pos_embed_native_size_is_a_no_op(tiny):
    assert tiny.interpolate_pos_encoding(GRID, GRID) is tiny.pos_embed


@pytest.mark.parametrize("gh,gw", [(6, 8), (2, 3), (9, 4), (1, 1), (28, 28)])
def test_pos_embed_interpolation_grid_and_dino_formula(tiny, gh, gw):
    with torch.no_grad():
        pos = tiny.interpolate_pos_encoding(gh, gw)
        want = dino_interpolate(tiny.pos_embed, gh * PATCH, gw * PATCH, PATCH)
    assert pos.shape == (1, 1 + gh * gw, DIM)
    assert torch.equal(pos[:, 0], tiny.pos_embed[:, 0])
    torch.testing.assert_close(pos, want, atol=0, rtol=0)


def test_pos_embed_interpolation_keeps_axes_and_constants():
    net = DinoViT(embed_dim=8, depth=1, num_heads=1, img_size=GRID * PATCH)
    rows = torch.arange(GRID, dtype=torch.float32).view(GRID, 1).expand(GRID, GRID)
    with torch.no_grad():
        net.pos_embed[0, 1:] = rows.reshape(-1, 1).expand(-1, 8)  # varies down the rows only
        pos = net.interpolate_pos_encoding(8, 3)[0, 1:, 0].reshape(8, 3)
        assert torch.allclose(pos, pos[:, :1].expand(8, 3))  # constant along each row
        assert bool((pos[1:, 0] >= pos[:-1, 0]).all())  # increasing downwards
        assert pos[0, 0] < 0.5 and pos[-1, 0] > GRID - 1.5
        net.pos_embed[0, 1:] = 0.25
        flat = net.interpolate_pos_encoding(7, 5)[0, 1:]
    torch.testing.assert_close(flat, torch.full_like(flat, 0.25))


# ----------------------------------------------------------------------------- detectors


def test_rgb_features_of_memory_bank_detectors_use_the_dino_checkpoint(tiny_file, tiny_sd):
    from pcad.detectors.patches import RGBFeatures

    rgb = random_image(50, 70, seed=11)
    for size in (32, 64):
        feats = RGBFeatures("dino-vitb8", tiny_file, image_size=size)
        out = feats(rgb)
        g = size // PATCH
        assert out.shape == (g * g, DIM) and out.dtype == np.float32
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out, feats(rgb))
    with pytest.raises(InvalidInputError, match=DINO_VITB8_FILE):
        RGBFeatures("dino-vitb8", None, image_size=32)(rgb)
