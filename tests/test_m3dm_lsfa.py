"""Tests of the ``m3dm`` and ``lsfa`` detectors (and their shared :mod:`pcad.detectors.multimodal`,
:mod:`pcad.detectors.patches` and :mod:`pcad.detectors.training`)
on a tiny synthetic dataset (64 x 64, 6 training samples), mostly with the fast FPFH point
features; the Point-MAE path runs on a tiny checkpoint written by the tests (and on the one
shipped with pcad when it is installed).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcad.cli.main import main
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, list_detectors, load_detector
from pcad.detectors.base import upsample_map
from pcad.detectors.fusion import fuse_normalized
from pcad.detectors.lsfa import (
    AdapterBlock,
    LSFAAdapters,
    LSFADetector,
    compactness,
    heads_for,
    masked_mean,
    rotate_cells,
)
from pcad.detectors.m3dm import UFF, M3DMDetector
from pcad.detectors.patches import MultimodalFeatures
from pcad.detectors.training import info_nce, nearest_distance, warmup_cosine_lr
from pcad.engine import evaluate_run, train
from pcad.errors import FileFormatError, InvalidInputError, PcadError
from pcad.memory import MemoryBank

CATEGORY = "plate_holes"
NAMES = ("m3dm", "lsfa")
# the one-class-SVM fusions (M3DM's) throughout; the LOO-normalised default ("zsum") is
# tested in tests/test_monotone_fusion.py
BASE = {"image_size": 64, "point_backbone": "fpfh", "fusion": "ocsvm", "map_fusion": "ocsvm"}
FAST = {
    "m3dm": {**BASE, "epochs": 3, "batch_size": 4},
    "lsfa": {**BASE, "epochs": 3, "batch_size": 2, "queue_samples": 3, "global_queue": 4,
             "compact_start": 0.0},
}


# one torch thread per module (a busy 2-core machine; see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "m3dm_data", CATEGORY, train=6, test_good=2,
                        test_defect=2, defects=("dent", "hole"))


@pytest.fixture(scope="module")
def train_set(data):
    return list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))


@pytest.fixture(scope="module")
def eval_set(data):
    return list(MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz"))


@pytest.fixture(scope="module")
def feats(train_set):
    """Frozen features of the training set, ``(N, n, C)`` (FPFH is slow: computed once)."""
    f = MultimodalFeatures("test", 64, point_backbone="fpfh")
    parts = [f(s) for s in train_set]
    return tuple(np.stack([p[i] for p in parts]) for i in range(3))


def fit(name: str, feats, train_set, **config):
    return create_detector(name, **{**FAST[name], **config}).fit_features(*feats, train_set)


@pytest.fixture(scope="module")
def fitted(feats, train_set):
    return {name: fit(name, feats, train_set) for name in NAMES}


def predictions(det, samples):
    return [det.predict(s) for s in samples]


def assert_same_predictions(a, b):
    for (s1, m1), (s2, m2) in zip(a, b, strict=True):
        assert s1 == s2
        np.testing.assert_array_equal(m1, m2)


def tiny_point_checkpoint(path: Path) -> Path:
    """A random, tiny Point-MAE encoder saved as a plain state dict (2 blocks of width 32)."""
    from pcad.features.pointmae import PointMAEEncoder

    torch.manual_seed(0)
    enc = PointMAEEncoder(trans_dim=32, depth=2, num_heads=1, num_group=32, group_size=8,
                          tokenizer_dims=(16, 32, 64), pos_hidden=16)
    torch.save(enc.state_dict(), path)
    return path


# ----------------------------------------------------------------------------- registry / config


def test_registered_with_defaults():
    names = list_detectors()
    assert "m3dm" in names and "lsfa" in names
    m, s = create_detector("m3dm"), create_detector("lsfa")
    assert isinstance(m, M3DMDetector) and isinstance(s, LSFADetector)
    assert m.modalities == s.modalities == ("rgb", "xyz")
    assert m.BANKS == ("xyz", "rgb", "fusion")
    assert s.BANKS == ("xyz", "rgb", "xyz_ln", "fusion_ln")
    assert create_detector("lsfa", banks="triple").BANKS == ("xyz", "rgb", "fusion")
    assert m.config["fused_balance"] == "norm" and s.config["banks"] == "split"
    for det in (m, s):
        c = det.config
        # FPFH: the shipped Point-MAE's point bank is far weaker on the procedural parts
        # (benchmarks/bench_point_features.py); Point-MAE is point_backbone="pointmae"
        assert c["image_size"] == 224 and c["point_backbone"] == "fpfh"
        assert c["rgb_backbone"] == "effnet-lite0" and c["coreset_ratio"] == 0.1
        assert c["fusion"] == c["map_fusion"] == "zsum" and c["ocsvm_nu"] == 0.5
        assert c["image_score"] == "dlf" and c["bank_score"] == "foreground-max"
        assert c["svm_patches"] == "all"
    assert m.config["bank_weights"] == {"xyz": 1.0, "rgb": 0.1, "fusion": 1.0}
    assert (m.config["epochs"], m.config["batch_size"], m.config["lr"]) == (3, 16, 3e-3)
    assert s.config["bank_weights"] == {"xyz": 1.0, "rgb": 0.1, "xyz_ln": 1.0, "fusion_ln": 1.0}
    assert create_detector("lsfa", banks="double").config["bank_weights"] == {"xyz": 1.0,
                                                                              "rgb": 0.1}
    assert create_detector("lsfa", banks="triple").config["bank_weights"] == {
        "xyz": 1.0, "rgb": 0.1, "fusion": 1.0}
    assert (s.config["epochs"], s.config["batch_size"], s.config["lr"]) == (2, 8, 3e-4)
    assert (s.config["la_weight"], s.config["rotation_weight"], s.config["compact_weight"],
            s.config["global_compact_weight"], s.config["ga_weight"]) == (1, 0.05, 0.9, 0.4, 0.1)
    assert create_detector("m3dm", bank_weights={"rgb": 0.5}).config["bank_weights"]["rgb"] == 0.5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("config, word", [
    ({"image_size": 60}, "multiple of 8"), ({"epochs": -1}, "epochs"), ({"lr": -1}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"point_backbone": "pointnet"}, "point_backbone"),
    ({"point_weights": "x.pth"}, "point_backbone='pointmae'"),
    ({"bank_score": "mean"}, "bank_score"), ({"fusion": "max"}, "fusion"),
    ({"map_fusion": "max"}, "map_fusion"), ({"svm_patches": "some"}, "svm_patches"),
    ({"image_score": "mean"}, "image_score"), ({"device": "tpu"}, "device"),
    ({"bank_weights": {"normals": 1.0}}, "bank_weights"), ({"coreset_ratio": 0}, "coreset"),
    ({"colour": 1}, "unknown option"),
])
def test_bad_config(name, config, word):
    with pytest.raises(InvalidInputError, match=word):
        create_detector(name, **config)


def test_bad_lsfa_config():
    with pytest.raises(InvalidInputError, match="fused_balance"):
        create_detector("m3dm", fused_balance="sum")
    with pytest.raises(InvalidInputError, match="banks"):
        create_detector("lsfa", banks="quad")
    with pytest.raises(InvalidInputError, match="bank_weights"):
        create_detector("lsfa", banks="double", bank_weights={"fusion": 1.0})
    with pytest.raises(InvalidInputError, match="epochs"):
        create_detector("m3dm", epochs=0)  # only lsfa has an untrained variant
    with pytest.raises(InvalidInputError, match="compact_start"):
        create_detector("lsfa", compact_start=1.5)
    with pytest.raises(InvalidInputError, match="queue_samples"):
        create_detector("lsfa", queue_samples=0)


# ----------------------------------------------------------------------------- loss terms


def test_info_nce_matches_manual_log_softmax():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for t in (1.0, 0.2):
        qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
        total = 0.0
        for i in range(7):
            logits = [float(qn[i] @ kn[j]) / t for j in range(7)]
            total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
        assert float(info_nce(q, k, t)) == pytest.approx(2 * t * total / 7, rel=1e-5)
    one = torch.randn(1, 5, requires_grad=True)
    assert float(info_nce(one, one).detach()) == 0.0
    info_nce(one, one).backward()  # connected, zero gradient
    assert one.grad is not None and not one.grad.any()
    with pytest.raises(InvalidInputError, match="info_nce"):
        info_nce(q, k[:, :4])


def test_nearest_distance_matches_manual_min():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=g, requires_grad=True)
    bank = torch.randn(23, 4, generator=g)
    d = nearest_distance(x, bank, chunk_bytes=4 * 23 * 2)  # 2 rows per chunk
    ref = torch.stack([min((x[i] - bank[j]).norm() for j in range(23)) for i in range(9)])
    torch.testing.assert_close(d, ref, rtol=1e-5, atol=1e-6)
    d.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    torch.cdist(x, bank).min(dim=1).values.sum().backward()
    torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-5)
    # a query equal to a bank row: distance ~0, finite gradient
    z = bank[:1].clone().requires_grad_(True)
    dz = nearest_distance(z, bank)
    dz.sum().backward()
    assert float(dz.detach()) < 1e-5 and torch.isfinite(z.grad).all()


def test_compactness_matches_manual():
    g = torch.Generator().manual_seed(2)
    b, n, cr, cp = 3, 5, 4, 3
    a_rgb, a_pts = torch.randn(b, n, cr, generator=g), torch.randn(b, n, cp, generator=g)
    fg = torch.rand(b, n, generator=g) > 0.4
    fg[:, 0] = True
    queues = (torch.randn(11, cr, generator=g), torch.randn(8, cp, generator=g),
              torch.randn(4, cr, generator=g), torch.randn(4, cp, generator=g))
    g_rgb, g_pts = masked_mean(a_rgb, fg), masked_mean(a_pts, fg)

    def dmin(v, bank):
        return min(float((v - r).norm()) for r in bank)

    total = 0.0
    for i in range(b):
        lc_rgb = np.mean([dmin(a_rgb[i, j], queues[0]) for j in range(n)])
        lc_pts = np.mean([dmin(a_pts[i, j], queues[1]) for j in range(n) if fg[i, j]])
        gr = a_rgb[i][fg[i]].mean(0)
        gp = a_pts[i][fg[i]].mean(0)
        torch.testing.assert_close(g_rgb[i], gr)
        total += lc_rgb + lc_pts + 0.4 * (dmin(gr, queues[2]) + dmin(gp, queues[3]))
    got = compactness(a_rgb, a_pts, fg, g_rgb, g_pts, queues, 0.4)
    assert float(got) == pytest.approx(total / b, rel=1e-5)


def test_compactness_with_owners_skips_each_samples_own_rows():
    g = torch.Generator().manual_seed(5)
    b, n, cr, cp = 3, 4, 4, 3
    a_rgb, a_pts = torch.randn(b, n, cr, generator=g), torch.randn(b, n, cp, generator=g)
    fg = torch.ones(b, n, dtype=torch.bool)
    g_rgb, g_pts = masked_mean(a_rgb, fg), masked_mean(a_pts, fg)
    # the queue holds each batch sample's own (exact) rows and rows of samples 7 and 8
    q_rgb = torch.cat([a_rgb.reshape(-1, cr), torch.randn(5, cr, generator=g)])
    q_pts = torch.cat([a_pts.reshape(-1, cp), torch.randn(5, cp, generator=g)])
    o_loc = torch.cat([torch.arange(b).repeat_interleave(n), torch.tensor([7, 7, 8, 8, 8])])
    qg_rgb = torch.cat([g_rgb, torch.randn(2, cr, generator=g)])
    qg_pts = torch.cat([g_pts, torch.randn(2, cp, generator=g)])
    o_glob = torch.tensor([0, 1, 2, 7, 8])
    queues = (q_rgb, q_pts, qg_rgb, qg_pts)
    owners = (torch.arange(b), o_loc, o_loc, o_glob, o_glob)
    # without owners every sample finds itself in the queue: the local terms are ~0
    plain = compactness(a_rgb, a_pts, fg, g_rgb, g_pts, queues, 0.4)
    assert float(plain) < 1e-4
    got = compactness(a_rgb, a_pts, fg, g_rgb, g_pts, queues, 0.4, owners)
    want = np.mean([float(compactness(
        a_rgb[i:i + 1], a_pts[i:i + 1], fg[i:i + 1], g_rgb[i:i + 1], g_pts[i:i + 1],
        (q_rgb[o_loc != i], q_pts[o_loc != i], qg_rgb[o_glob != i], qg_pts[o_glob != i]), 0.4))
        for i in range(b)])
    assert float(got) == pytest.approx(want, rel=1e-5) and float(got) > 0.1
    # a queue of the sample's own rows only: nothing to be compact towards, 0 with a gradient
    a = a_rgb[:1].clone().requires_grad_(True)
    alone = compactness(a, a_pts[:1], fg[:1], g_rgb[:1], g_pts[:1],
                        (a_rgb[0], a_pts[0], g_rgb[:1], g_pts[:1]), 0.4,
                        (torch.tensor([0]), torch.zeros(n, dtype=torch.long),
                         torch.zeros(n, dtype=torch.long), torch.tensor([0]), torch.tensor([0])))
    alone.backward()
    assert float(alone) == 0.0 and a.grad is not None


def test_lsfa_loss_is_the_weighted_sum_of_its_terms():
    g = torch.Generator().manual_seed(3)
    b, n, cr, cp = 3, 6, 8, 6
    rgb, pts = torch.randn(b, n, cr, generator=g), torch.randn(b, n, cp, generator=g)
    rot = torch.randn(b, n, cr, generator=g)
    fg = torch.rand(b, n, generator=g) > 0.3
    fg[:, :2] = True
    weights = {"la": 1.0, "rotation": 0.05, "compact": 0.9, "global_compact": 0.4, "ga": 0.1}
    torch.manual_seed(0)
    ad = LSFAAdapters(cr, cp, num_heads=2, head_dim=5, weights=weights)
    queues = (torch.randn(10, cr, generator=g), torch.randn(7, cp, generator=g),
              torch.randn(3, cr, generator=g), torch.randn(3, cp, generator=g))
    sel = torch.tensor([0, 2, 3])
    loss, terms, a_rgb, a_pts, gr, gp = ad(rgb, pts, fg, rot, sel, queues)
    with torch.no_grad():
        ar, ap = ad.rgb_block(rgb), ad.pts_block(pts)
        q, k = ad.rgb_head(ar[fg]), ad.pts_head(ap[fg])
        la = (info_nce(q, k) + info_nce(k, q)) / 2
        q_rot = ad.rgb_head(ad.rgb_block(rot)[fg])
        l_rot = info_nce(q[sel], q_rot[sel])
        g_r = torch.stack([ar[i][fg[i]].mean(0) for i in range(b)])
        g_p = torch.stack([ap[i][fg[i]].mean(0) for i in range(b)])
        ga = info_nce(ad.rgb_head(g_r), ad.pts_head(g_p))  # the point side: the code's bug 1
        ifc = compactness(ar, ap, fg, g_r, g_p, queues, 0.4)
    expected = la + 0.05 * l_rot + 0.9 * ifc + 0.1 * ga
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    for key, ref in (("la", la), ("rotation", l_rot), ("ga", ga), ("compact", ifc)):
        torch.testing.assert_close(terms[key], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a_rgb, ar)
    torch.testing.assert_close(gp, g_p)
    loss.backward()
    assert all(p.grad is not None for p in ad.parameters())
    # no queues, no rotation: no such terms
    loss2, terms2, *_ = ad(rgb, pts, fg)
    assert set(terms2) == {"la", "ga"}


def test_uff_loss_matches_manual():
    g = torch.Generator().manual_seed(4)
    rgb, pts = torch.randn(10, 6, generator=g), torch.randn(10, 4, generator=g)
    torch.manual_seed(0)
    uff = UFF(6, 4, head_dim=8)
    chi_rgb = uff.rgb_mlp[2](F.gelu(uff.rgb_mlp[0](F.layer_norm(rgb, (6,), uff.rgb_norm.weight,
                                                                  uff.rgb_norm.bias))))
    chi_pts = uff.pts_mlp[2](F.gelu(uff.pts_mlp[0](F.layer_norm(pts, (4,), uff.pts_norm.weight,
                                                                  uff.pts_norm.bias))))
    expected = info_nce(uff.rgb_head(chi_rgb), uff.pts_head(chi_pts))
    torch.testing.assert_close(uff(rgb, pts), expected)
    torch.testing.assert_close(uff.fuse(rgb, pts), torch.cat([chi_pts, chi_rgb], 1))
    assert uff.fuse(rgb, pts).shape == (10, 10)
    assert float(uff(rgb[:0], pts[:0]).detach()) == 0.0


def test_adapter_block_is_a_prenorm_vit_block():
    torch.manual_seed(0)
    blk = AdapterBlock(8, 2)
    x = torch.randn(2, 5, 8)
    h = blk.norm1(x)
    qkv = blk.qkv(h).reshape(2, 5, 3, 2, 4)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, heads, n, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    y = x + blk.proj(att.transpose(1, 2).reshape(2, 5, 8))
    y = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(blk(x), y, rtol=1e-5, atol=1e-6)
    assert blk.qkv.bias is None
    assert heads_for(768, 12) == 12 and heads_for(152, 12) == 8 and heads_for(33, 12) == 11
    assert heads_for(7, 12) == 7
    with pytest.raises(InvalidInputError, match="num_heads"):
        AdapterBlock(10, 3)


def test_rotate_cells():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(10, 12, 3), dtype=np.uint8)
    out = rotate_cells(img, 4, np.random.default_rng(1))
    turns = np.random.default_rng(1).integers(0, 4, size=(2, 3))
    for i in range(2):
        for j in range(3):
            cell = img[4 * i:4 * i + 4, 4 * j:4 * j + 4]
            np.testing.assert_array_equal(out[4 * i:4 * i + 4, 4 * j:4 * j + 4],
                                          np.rot90(cell, turns[i, j], axes=(0, 1)))
    np.testing.assert_array_equal(out[8:], img[8:])  # the partial border row of cells
    assert (turns != 0).any()


def test_warmup_cosine_schedule():
    assert warmup_cosine_lr(0.0, 3, 1, 1e-3) == 0.0
    assert warmup_cosine_lr(0.5, 3, 1, 1e-3) == pytest.approx(5e-4)
    assert warmup_cosine_lr(1.0, 3, 1, 1e-3) == pytest.approx(1e-3)
    assert warmup_cosine_lr(2.0, 3, 1, 1e-3) == pytest.approx(5e-4)
    assert warmup_cosine_lr(3.0, 3, 1, 1e-3) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lr(0.0, 2, 0, 1e-3) == pytest.approx(1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_on_a_fixed_batch(name, feats):
    """One batch of two samples, twelve epochs (one step each): the loss goes down."""
    rgb, pts, fg = (a[:2] for a in feats)
    extra = {"rotation_weight": 0.0, "compact_weight": 0.0} if name == "lsfa" else {}
    det = create_detector(name, **{**FAST[name], "batch_size": 2, "epochs": 12, "warmup_epochs": 0,
                          "lr": 1e-3, **extra})
    det.train_networks(rgb, pts, fg, None, progress=False)
    h = det.history
    assert len(h) == 12 and all(np.isfinite(h))
    assert h[-1] < h[0] and h[-1] == min(h)


def test_lsfa_compactness_runs_with_full_queues(fitted):
    det = fitted["lsfa"]
    # queues of 3 samples fill after two batches of 2; the last step used them
    assert set(det.last_terms) == {"la", "rotation", "ga", "compact"}
    assert all(math.isfinite(v) and v >= 0 for v in det.last_terms.values())


def test_lsfa_compact_others_trains_against_other_samples(fitted, feats, train_set,
                                                          monkeypatch):
    import pcad.detectors.lsfa as lsfa_mod

    seen = []
    real = lsfa_mod.compactness

    def spy(*args, **kwargs):
        seen.append(args[7] if len(args) > 7 else kwargs.get("owners"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lsfa_mod, "compactness", spy)
    det = fit("lsfa", feats, train_set, compact_others=True)
    ref = fitted["lsfa"]
    outer = [o for o in seen if o is not None]  # (the per-sample calls inside have none)
    assert outer
    for batch, *queued in outer:  # every queued row is owned by a training sample
        assert all(len(o) and int(o.min()) >= 0 and int(o.max()) < len(train_set)
                   for o in queued)
        assert len(batch) >= 1
    assert math.isfinite(det.last_terms["compact"]) and det.last_terms["compact"] > 0
    # the sample's own earlier features no longer count: another loss and other adapters
    assert det.history != ref.history


# ----------------------------------------------------------------------------- fit / predict


def test_lsfa_epochs_0_is_the_unadapted_double_lib(feats, train_set, eval_set, tmp_path):
    """``epochs=0``: no adapters; the banks hold the frozen features (the ablation baseline)."""
    det = fit("lsfa", feats, train_set, epochs=0)
    assert det.adapters is None and det.history == []
    rgb, pts, fg = (a[:2] for a in feats)
    out = det.transform(rgb, pts, fg)
    np.testing.assert_array_equal(out["xyz"], pts)
    np.testing.assert_array_equal(out["rgb"], rgb)
    x = (pts.reshape(-1, pts.shape[2]) - det.stats["xyz"][0]) / det.stats["xyz"][1]
    assert det.banks["xyz"].score(x).min() == pytest.approx(0.0, abs=1e-4)  # in the bank
    det.save(tmp_path / "run")
    assert not (tmp_path / "run" / "adapters.pt").exists()
    back = load_detector(tmp_path / "run", expect="lsfa")
    assert back.adapters is None
    assert_same_predictions(predictions(back, eval_set[:2]), predictions(det, eval_set[:2]))



@pytest.mark.parametrize("name", NAMES)
def test_fit_predict(name, fitted, eval_set):
    det = fitted[name]
    assert det.fitted and len(det.history) == FAST[name]["epochs"]
    assert all(np.isfinite(det.history))
    assert set(det.banks) == set(det.BANKS) and set(det.stats) == set(det.BANKS)
    assert det.w_image.shape == det.w_patch.shape == (len(det.BANKS),)
    for s in eval_set[::2]:
        score, amap = det.predict(s)
        assert isinstance(score, float) and math.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32 and np.isfinite(amap).all()
        patches, scores = det.bank_scores(s)
        assert set(patches) == set(det.BANKS)
        lam = np.array([det.config["bank_weights"][b] for b in det.BANKS])
        fused = sum(det.w_patch[j] * lam[j] * patches[b].astype(np.float64)
                    for j, b in enumerate(det.BANKS))
        np.testing.assert_allclose(amap, upsample_map(fused, s.shape, 4.0), rtol=1e-6,
                                   atol=1e-6)
        image = sum(det.w_image[j] * lam[j] * scores[b] for j, b in enumerate(det.BANKS))
        assert score == pytest.approx(image)
        for b in det.BANKS:
            assert patches[b].shape == det.grid == (8, 8) and (patches[b] >= 0).all()


def test_m3dm_fused_bank_is_uff_output(fitted, feats):
    det = fitted["m3dm"]
    rgb, pts, fg = (a[:1] for a in feats)
    out = det.transform(rgb, pts, fg)
    np.testing.assert_array_equal(out["xyz"], pts)
    np.testing.assert_array_equal(out["rgb"], rgb)
    with torch.no_grad():
        chi_rgb, chi_pts = det.uff.parts(torch.from_numpy(rgb), torch.from_numpy(pts))
    # fused_balance="norm": each part over its mean norm on the training foreground patches
    n_pts, n_rgb = det.part_norms
    ref = np.concatenate([chi_pts.numpy() / n_pts, chi_rgb.numpy() / n_rgb], axis=-1)
    np.testing.assert_allclose(out["fusion"], ref, rtol=1e-5)
    assert out["fusion"].shape == (1, 64, 33 + 152)
    with torch.no_grad():
        all_rgb, all_pts = det.uff.parts(torch.from_numpy(feats[0][feats[2]]),
                                         torch.from_numpy(feats[1][feats[2]]))
    assert n_pts == pytest.approx(all_pts.norm(dim=-1).mean().item(), rel=1e-5)
    assert n_rgb == pytest.approx(all_rgb.norm(dim=-1).mean().item(), rel=1e-5)
    assert abs(n_rgb / n_pts - 1) > 0.1  # the two parts do differ in scale here


@pytest.mark.parametrize("fusion", ["zsum", "ocsvm"])
def test_lsfa_split_double_scores_images_by_the_double_lib_and_maps_by_layer_normed_banks(
        feats, train_set, eval_set, fusion):
    opts = {"epochs": 1, "fusion": fusion, "map_fusion": fusion}
    split = fit("lsfa", feats, train_set, banks="split-double", **opts)
    double = fit("lsfa", feats, train_set, banks="double", **opts)
    assert split.BANKS == ("xyz", "rgb", "xyz_ln", "fusion_ln")
    assert split.IMAGE_BANKS == ("xyz", "rgb")
    assert split.MAP_BANKS == ("xyz_ln", "rgb", "fusion_ln")
    rgb, pts, fg = (a[:2] for a in feats)
    out = split.transform(rgb, pts, fg)

    def unit_ln(x):
        x = x.astype(np.float64)
        z = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
        return z / np.sqrt(x.shape[-1])

    np.testing.assert_allclose(out["xyz_ln"], unit_ln(out["xyz"]), atol=1e-5)
    np.testing.assert_allclose(out["fusion_ln"], np.concatenate(
        [unit_ln(out["xyz"]), unit_ln(out["rgb"])], axis=-1), atol=1e-5)
    for b in ("xyz", "rgb"):  # the same adapters: the same two banks as the double lib
        np.testing.assert_array_equal(out[b], double.transform(rgb, pts, fg)[b])
    np.testing.assert_array_equal(split.bank_mask("image"), [1, 1, 0, 0])
    np.testing.assert_array_equal(split.bank_mask("map"), [0, 1, 1, 1])
    for sample in eval_set[-3:]:
        score, amap = split.predict(sample)
        # the image score is the double lib's: the layer-normed banks do not enter it
        assert score == pytest.approx(double.predict(sample)[0], rel=1e-9, abs=1e-12)
        patches, scores = split.bank_scores(sample)
        # predict scores only the image banks; the skipped ones change nothing
        assert split.scored_banks() == ("xyz", "rgb")
        part, some = split.bank_scores(sample, scored=split.scored_banks())
        assert np.isnan([some["xyz_ln"], some["fusion_ln"]]).all()
        assert [some["xyz"], some["rgb"]] == [scores["xyz"], scores["rgb"]]
        for b in split.BANKS:
            np.testing.assert_array_equal(part[b], patches[b])
        assert split.fuse(patches, scores, sample)[0] == score
        if fusion == "zsum":  # the map fuses the three map banks only
            stack = np.stack([patches[b].astype(np.float64) for b in split.BANKS], axis=-1)
            grid = fuse_normalized(stack, split.z_patch, np.array([0.0, 1, 1, 1]))
            np.testing.assert_allclose(split._fused_grid(patches), grid, rtol=1e-12)
        else:
            assert split.w_patch[0] * split.bank_mask("map")[0] == 0
            np.testing.assert_array_equal(split.fusion_weights("image", fusion)[2:], [0, 0])


def test_lsfa_split_scores_images_by_every_bank_and_maps_as_split_double(
        feats, train_set, eval_set):
    opts = {"epochs": 1, "fusion": "zsum", "map_fusion": "zsum"}  # the defaults
    split = fit("lsfa", feats, train_set, banks="split", **opts)
    other = fit("lsfa", feats, train_set, banks="split-double", **opts)
    assert split.IMAGE_BANKS is None and split.MAP_BANKS == other.MAP_BANKS
    assert split.scored_banks() == split.BANKS == ("xyz", "rgb", "xyz_ln", "fusion_ln")
    np.testing.assert_array_equal(split.z_image, other.z_image)  # the same LOO statistics
    for sample in eval_set[-3:]:
        score, amap = split.predict(sample)
        np.testing.assert_array_equal(amap, other.predict(sample)[1])  # the same map
        _, scores = split.bank_scores(sample)
        vec = np.array([scores[b] for b in split.BANKS])
        assert score == pytest.approx(
            float(fuse_normalized(vec, split.z_image, np.ones(4))), rel=1e-12)
        # one bank's evidence up, the image score up: every bank counts
        for j, b in enumerate(split.BANKS):
            more = dict(scores, **{b: scores[b] + split.z_image[j, 1]})
            assert split.fuse(_, more, sample)[0] == pytest.approx(score + 1.0, rel=1e-9)


@pytest.mark.parametrize("epochs", [0, 1])
def test_lsfa_triple_fused_bank_is_balanced_adapted_concat(feats, train_set, epochs):
    det = fit("lsfa", feats, train_set, epochs=epochs, banks="triple")
    rgb, pts, fg = feats
    out = det.transform(rgb[:2], pts[:2], fg[:2])
    n_pts, n_rgb = det.part_norms
    np.testing.assert_allclose(out["fusion"], np.concatenate(
        [out["xyz"] / n_pts, out["rgb"] / n_rgb], axis=-1), rtol=1e-5)
    every = det.transform(rgb, pts, fg)
    assert n_pts == pytest.approx(float(np.linalg.norm(every["xyz"][fg], axis=-1).mean()),
                                  rel=1e-5)
    assert n_rgb == pytest.approx(float(np.linalg.norm(every["rgb"][fg], axis=-1).mean()),
                                  rel=1e-5)
    double = fit("lsfa", feats, train_set, epochs=epochs, banks="double")
    assert double.BANKS == ("xyz", "rgb") and double.part_norms == (1.0, 1.0)
    for b in double.BANKS:  # the same adapted point and RGB banks
        np.testing.assert_array_equal(double.transform(rgb[:2], pts[:2], fg[:2])[b], out[b])


def test_m3dm_fused_balance_none_is_plain_concat(feats, train_set, tmp_path):
    det = fit("m3dm", feats, train_set, fused_balance="none")
    assert det.part_norms == (1.0, 1.0)
    rgb, pts, fg = (a[:1] for a in feats)
    with torch.no_grad():
        chi_rgb, chi_pts = det.uff.parts(torch.from_numpy(rgb), torch.from_numpy(pts))
    np.testing.assert_allclose(det.transform(rgb, pts, fg)["fusion"],
                               torch.cat([chi_pts, chi_rgb], dim=-1).numpy(), rtol=1e-6)
    # a run saved before fused_balance existed has no part_norms: loaded as M3DM's concat
    det.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["state"]["part_norms"] == [1.0, 1.0]
    del record["state"]["part_norms"]
    (tmp_path / "run" / "detector.json").write_text(json.dumps(record))
    assert load_detector(tmp_path / "run").part_norms == (1.0, 1.0)
    record["state"]["part_norms"] = [1.0, -2.0]
    (tmp_path / "run" / "detector.json").write_text(json.dumps(record))
    with pytest.raises(FileFormatError, match="part_norms"):
        load_detector(tmp_path / "run")


def test_leave_one_out_fusion_inputs(feats, train_set, monkeypatch):
    """Whatever the coreset (here 10 %), the SVMs and the LOO statistics see each training
    sample scored against every patch of the other samples (not the coreset minus its own
    entries, which leaves its patches without a near neighbour where the coreset is sparse)."""
    seen = []
    monkeypatch.setattr(M3DMDetector, "_ocsvm", lambda self, x: seen.append(x) or np.ones(3))
    det = fit("m3dm", feats, train_set, coreset_ratio=0.1, bank_score="reweighted")
    assert all(len(det.banks[b]) < feats[0].shape[0] * feats[0].shape[1] for b in det.BANKS)
    img, pix = seen
    n_samples, n = feats[0].shape[:2]
    assert img.shape == (n_samples, 3) and pix.shape == (n_samples * n, 3)
    full = det._transform_all(*feats)
    lam = np.array([1.0, 0.1, 1.0])
    for i in (0, 4):
        for j, b in enumerate(det.BANKS):
            mean, std = det.stats[b]
            x = ((full[b].reshape(n_samples * n, -1) - mean) / std).astype(np.float32)
            others = MemoryBank(coreset_ratio=1.0).fit(np.delete(x, np.s_[i * n:(i + 1) * n], 0))
            patch, score = others.score_image(x[i * n:(i + 1) * n], n_reweight=3)
            assert img[i, j] == pytest.approx(lam[j] * score, rel=1e-5)
            np.testing.assert_allclose(pix[i * n:(i + 1) * n, j], lam[j] * patch, rtol=1e-5,
                                       atol=1e-6)
    assert (img > 0).all()  # no training sample matches itself


def test_fusion_options(fitted, feats, train_set, eval_set):
    from pcad.detectors.patches import foreground_max

    ref = fitted["lsfa"]
    ones = np.ones(len(ref.BANKS))
    det = fit("lsfa", feats, train_set, fusion="sum", map_fusion="sum",
              image_score="foreground-max")
    np.testing.assert_array_equal(det.w_image, ones)
    np.testing.assert_array_equal(det.w_patch, ones)
    score, amap = det.predict(eval_set[-1])
    assert score == foreground_max(amap, eval_set[-1].xyz)
    # each SVM on its own: the other keeps the default's weights
    maps_only = fit("lsfa", feats, train_set, fusion="sum")
    np.testing.assert_array_equal(maps_only.w_image, ones)
    np.testing.assert_array_equal(maps_only.w_patch, ref.w_patch)
    image_only = fit("lsfa", feats, train_set, map_fusion="sum")
    np.testing.assert_array_equal(image_only.w_image, ref.w_image)
    np.testing.assert_array_equal(image_only.w_patch, ones)
    fg_only = fit("lsfa", feats, train_set, svm_patches="foreground")
    np.testing.assert_array_equal(fg_only.w_image, ref.w_image)
    assert not np.array_equal(fg_only.w_patch, ref.w_patch)
    # PatchCore's re-weighted bank scores (M3DM's) give other image scores, the same maps
    rew = fit("lsfa", feats, train_set, bank_score="reweighted")
    s1, m1 = rew.predict(eval_set[-1])
    s2, m2 = ref.predict(eval_set[-1])
    assert s1 != s2
    np.testing.assert_array_equal(m1, m2)
    with pytest.raises(InvalidInputError, match="foreground-max"):
        create_detector("lsfa", **FAST["lsfa"]).fit_features(*feats)  # no samples to find the part


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, fitted, feats, train_set, eval_set):
    again = fit(name, feats, train_set)
    assert again.history == fitted[name].history
    np.testing.assert_array_equal(again.w_image, fitted[name].w_image)
    assert_same_predictions(predictions(again, eval_set[:3]), predictions(fitted[name],
                                                                          eval_set[:3]))
    other = fit(name, feats, train_set, seed=1)
    assert other.history != fitted[name].history


@pytest.mark.parametrize("name", NAMES)
def test_fit_equals_fit_features(name, fitted, train_set, eval_set):
    """``fit`` = feature extraction + ``fit_features``."""
    det = create_detector(name, **FAST[name]).fit(train_set)
    assert det.history == fitted[name].history
    assert_same_predictions(predictions(det, eval_set[:1]), predictions(fitted[name],
                                                                        eval_set[:1]))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, fitted, eval_set, tmp_path):
    det = fitted[name]
    det.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["detector"] == name and record["config"]["epochs"] == 3
    assert sorted(p.name for p in (tmp_path / "run").glob("bank_*.npz")) == sorted(
        f"bank_{b}.npz" for b in det.BANKS)
    back = load_detector(tmp_path / "run", expect=name)
    assert type(back) is type(det) and back.history == det.history
    assert back.stats == det.stats
    assert_same_predictions(predictions(back, eval_set), predictions(det, eval_set))
    state = "uff.pt" if name == "m3dm" else "adapters.pt"
    (tmp_path / "run" / state).unlink()
    with pytest.raises(InvalidInputError, match=state):
        load_detector(tmp_path / "run")


@pytest.mark.parametrize("name", NAMES)
def test_cli_train_and_eval(name, data, tmp_path, capsys):
    run, res = tmp_path / "run", tmp_path / "res"
    opts = ["-o", "point_backbone=fpfh", "-o", "epochs=2", "-o", "batch_size=4"]
    status = main(["train", "--data", str(data), "--category", CATEGORY, "--detector", name,
                   "--image-size", "64", "--out", str(run), "--quiet", *opts])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    det = load_detector(run, expect=name)
    assert det.config["image_size"] == 64 and len(det.history) == 2
    assert json.loads((run / "train.json").read_text())["n_train"] == 6
    status = main(["eval", "--data", str(data), "--category", CATEGORY, "--run", str(run),
                   "--out", str(res), "--json", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics == json.loads(out)
    assert metrics["detector"] == name and metrics["n_test"] == 6
    assert 0.0 <= metrics["i_auroc"] <= 1.0 and 0.0 <= metrics["aupro"]["0.3"] <= 1.0
    assert len(list((res / "maps").rglob("*.tiff"))) == 6
    # the engine gives the same scores as the CLI's run
    again = evaluate_run(data, CATEGORY, run, tmp_path / "res2", progress=False)
    assert again["i_auroc"] == metrics["i_auroc"]


# ----------------------------------------------------------------------------- Point-MAE


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return tiny_point_checkpoint(tmp_path_factory.mktemp("pointmae") / "tiny.pth")


POINTMAE = {"point_backbone": "pointmae", "num_group": 32, "group_size": 8}


@pytest.mark.parametrize("name", NAMES)
def test_pointmae_backbone_end_to_end(name, data, tiny_weights, tmp_path, eval_set):
    config = {**FAST[name], **POINTMAE, "point_weights": str(tiny_weights), "epochs": 1}
    det = train(data, CATEGORY, name, tmp_path / "run", config=config, progress=False)
    rgb, pts, fg = det.patch_features(eval_set[0])
    assert pts.shape == (64, 64) and fg.any()  # 2 blocks x 32 channels
    m = evaluate_run(data, CATEGORY, tmp_path / "run", tmp_path / "res", progress=False)
    assert m["n_test"] == 6 and math.isfinite(m["i_auroc"])


def test_default_pointmae_weights(data, tmp_path):
    """The Point-MAE checkpoint shipped with pcad (``point_backbone="pointmae"`` without
    ``point_weights``; 256 groups so that the ~700 foreground points of a 64 x 64 sample
    suffice whatever its record says)."""
    from pcad.features.pointmae import shipped_weights_path

    try:
        shipped_weights_path()
    except FileNotFoundError:
        pytest.skip("no Point-MAE checkpoint shipped in this installation")
    det = train(data, CATEGORY, "m3dm", tmp_path / "run",
                config={"image_size": 64, "epochs": 1, "num_group": 256,
                        "point_backbone": "pointmae"},
                progress=False)
    assert det.config["point_backbone"] == "pointmae" and det.config["point_weights"] is None
    m = evaluate_run(data, CATEGORY, tmp_path / "run", tmp_path / "res", progress=False)
    assert m["n_test"] == 6 and math.isfinite(m["i_auroc"])


@pytest.mark.parametrize("name", NAMES)
def test_fewer_points_than_groups(name, train_set, tiny_weights):
    det = create_detector(name, **{**FAST[name], **POINTMAE, "num_group": 100000,
                          "point_weights": str(tiny_weights)})
    with pytest.raises(InvalidInputError, match=rf"training set: detector '{name}'.*100000"):
        det.fit(train_set)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", NAMES)
def test_no_foreground(name, fitted, train_set, eval_set):
    blank = replace(eval_set[0], xyz=np.zeros_like(eval_set[0].xyz))
    with pytest.raises(InvalidInputError, match=rf"test sample: detector '{name}'.*no "
                                                r"foreground"):
        fitted[name].predict(blank)
    bad = [*train_set[:2], replace(train_set[2], xyz=np.zeros_like(train_set[2].xyz))]
    with pytest.raises(InvalidInputError, match=rf"training set: detector '{name}'.*no "
                                                r"foreground"):
        create_detector(name, **FAST[name]).fit(bad)


@pytest.mark.parametrize("name", NAMES)
def test_rgb_only_dataset(name, data, tmp_path):
    import shutil

    root = tmp_path / "rgb_only"
    shutil.copytree(data, root)
    for xyz in sorted(root.rglob("xyz"), reverse=True):
        shutil.rmtree(xyz)
    with pytest.raises(PcadError, match="xyz"):
        train(root, CATEGORY, name, tmp_path / "run", config=FAST[name], progress=False)
    assert not (tmp_path / "run" / "detector.json").exists()
    samples = MVTec3DDataset(root, CATEGORY, "train")
    with pytest.raises(InvalidInputError, match=rf"'{name}' needs .*\(xyz\)"):
        create_detector(name, **FAST[name]).fit(samples)


@pytest.mark.parametrize("name", NAMES)
def test_other_errors(name, feats, eval_set, tmp_path):
    det = create_detector(name, **FAST[name])
    with pytest.raises(InvalidInputError, match="fit"):
        det.predict(eval_set[0])
    with pytest.raises(InvalidInputError, match="fit"):
        det.save(tmp_path / "run")
    with pytest.raises(InvalidInputError, match="at least 2 training samples"):
        det.fit_features(*(a[:1] for a in feats))
    with pytest.raises(InvalidInputError, match="training set is empty"):
        det.fit([])
    with pytest.raises(InvalidInputError, match=r"\(N, n, C\)"):
        det.fit_features(feats[0][0], feats[1][0], feats[2][0])
