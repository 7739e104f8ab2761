"""Point-MAE masked point modelling on a folder of clouds, written as an official checkpoint.

Training (Pang et al. 2022, ``Point_MAE`` in ``models/Point_MAE.py``, at a small scale):

- every epoch each training cloud is subsampled to ``points`` points (a random subset),
  mapped into the unit sphere (``pc_norm``, as the encoder does at inference with
  ``normalize=True``), then scaled by ``U(2/3, 3/2)`` and rotated by a uniform random
  rotation; a mesh is first reduced to a random **single view** (the sampled points whose
  face normal looks towards a random direction), because at inference the encoder sees one
  camera view of the object;
- FPS + kNN split it into ``num_group`` groups of ``group_size`` points; a random 60 % of
  the groups are masked (``mask_ratio``);
- the encoder (:class:`~pcad.features.pointmae.PointMAEEncoder`, as ``MAE_encoder``) sees the
  visible groups' tokens; a light decoder (``MAE_decoder``, ``decoder_depth`` blocks, with
  ``mask_token`` and ``decoder_pos_embed``) sees them plus one mask token per masked group;
  a linear head (``increase_dim``, a 1x1 Conv1d) predicts each masked group's
  ``group_size`` normalized points; the loss is Chamfer-L2 (squared distances, mean over
  both directions, Point-MAE's ``cdl2``);
- AdamW (lr ``1e-3``, weight decay 0.05 except on biases and norms), linear warm-up over the
  first 10 % of the steps, cosine decay to 1 % of the lr; no drop path, no dropout.
- Denormal floats are flushed to zero while training (``torch.set_flush_denormal``; the
  previous setting is restored): values that underflowed into denormals during training
  made the epochs on an x86 CPU about 10 times slower.

Every random choice comes from ``seed`` (a ``numpy.random.Generator`` for the data, a
``torch.Generator`` for the weights and masks), so the same seed gives the same checkpoint
bytes on the same CPU (and thread count). The tokenizer only runs on the visible groups
(Point-MAE tokenizes every group and then drops the masked ones; the BatchNorm statistics
then come from the visible 40 %).

The checkpoint is the official layout, ``{"base_model": {"MAE_encoder.encoder...": ...,
"MAE_decoder...": ..., "mask_token": ..., "increase_dim.0.weight": ...}, "pcad": record}``
(``encoder_only`` keeps only ``MAE_encoder.*``; ``half`` stores float16 tensors), written
atomically. The record holds ``arch``, the encoder's constructor arguments for inference
(``normalize=True``, ``max_points = points`` so that inference sees the training point
density, ``num_group = min(4 * num_group, points)``) and ``training`` (data, settings, the
loss of every epoch). :func:`~pcad.features.pointmae.load_point_encoder` reads it.

**The shipped checkpoint** ``pcad/features/weights/pointmae_pcad_small.pth`` (the default of
:func:`~pcad.features.pointmae.load_point_encoder`) was made with ``make point-weights``::

    # 13 procedural parts of synth.objects x seeds 0-7, variation 0.05 -> 104 STL meshes
    python -c "... make_object(name, seed=s, variation=0.05).export(...)"
    pcad pretrain-points --data build/point-weights/parts \\
        --out pcad/features/weights/pointmae_pcad_small.pth --epochs 100 --seed 0 \\
        --num-group 128 --group-size 32 --trans-dim 192 --depth 6 --points 2048 \\
        --batch-size 8 --threads 2 --half --encoder-only

- data: 104 meshes (bracket, cookie, flange, gear, hex_nut, pin, pipe, plate, plate_holes,
  potato, ring, shaft, washer; 8 seeds each), 8192 area samples per mesh, random single
  views of 2048 points per epoch;
- architecture: trans_dim 192, depth 6, 6 heads, tokenizer widths (64, 128, 256), decoder
  2 blocks (not stored); features = normed outputs of blocks (1, 3, 5) -> 576 channels;
  inference: ``normalize=True``, at most 2048 points (stride), 512 groups x 32;
- training: 100 epochs of 13 steps (1300 steps, batch 8), seed 0, 2 torch threads, float16
  storage (5.66 MB, 90 encoder tensors); mean Chamfer-L2 of the epochs 0.0764 (first),
  0.0049 (3rd), 0.0046 (50th), 0.00375 (last, normalized units: the unit sphere). An idle
  2-core Xeon needs about 2.6 s per epoch (5 s of CPU), 4.5 minutes in all; this run, on a
  machine shared with other jobs, took 41 minutes.

The record inside the file holds the same numbers
(``torch.load(path, weights_only=True)["pcad"]``).

Example:
    >>> import numpy as np
    >>> from pcad.features.pointmae_pretrain import PretrainConfig, TrainCloud, pretrain
    >>> rng = np.random.default_rng(0)
    >>> clouds = [TrainCloud(rng.normal(size=(300, 3)).astype(np.float32), None, f"c{i}")
    ...           for i in range(3)]
    >>> cfg = PretrainConfig(epochs=1, points=128, num_group=16, group_size=8, trans_dim=24,
    ...                      depth=2, num_heads=2, batch_size=2)
    >>> model, history = pretrain(clouds, cfg)
    >>> len(history), model.MAE_encoder.out_channels
    (1, 48)
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_int, check_positive
from pcad.errors import InvalidInputError
from pcad.features.pointmae import Block, PointMAEEncoder
from pcad.ops import gather

__all__ = [
    "PointMAEPretrainModel",
    "PretrainConfig",
    "TrainCloud",
    "chamfer_l2",
    "checkpoint_dict",
    "collect_clouds",
    "pretrain",
    "run_pretrain",
    "save_checkpoint",
]

FORMAT = "pcad.pointmae/1"
#: Points drawn per mesh (and kept per organized or point cloud) relative to ``points``.
POOL_FACTOR = 4
SCALE_RANGE = (2.0 / 3.0, 1.5)
WARMUP_FRACTION = 0.1
MIN_LR_FRACTION = 0.01


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain` (CLI: ``pcad pretrain-points``)."""

    epochs: int = 25
    seed: int = 0
    points: int = 2048
    num_group: int = 128
    group_size: int = 32
    trans_dim: int = 192
    depth: int = 6
    num_heads: int = 6
    tokenizer_dims: tuple[int, int, int] = (64, 128, 256)
    decoder_depth: int = 2
    mask_ratio: float = 0.6
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    views: bool = True

    def validate(self) -> PretrainConfig:
        """Check every value; raises InvalidInputError naming the option."""
        check_int(self.epochs, "epochs", 1)
        check_int(self.seed, "seed", 0)
        check_int(self.points, "points", 1)
        check_int(self.num_group, "num_group", 1)
        check_int(self.group_size, "group_size", 1)
        check_int(self.trans_dim, "trans_dim", 1)
        check_int(self.depth, "depth", 1)
        check_int(self.num_heads, "num_heads", 1)
        check_int(self.decoder_depth, "decoder_depth", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_positive(self.lr, "lr")
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        if len(tuple(self.tokenizer_dims)) != 3:
            raise InvalidInputError(f"tokenizer_dims: expected 3 widths, got "
                                    f"{self.tokenizer_dims!r}")
        for i, w in enumerate(self.tokenizer_dims):
            check_int(w, f"tokenizer_dims[{i}]", 1)
        if self.trans_dim % self.num_heads:
            raise InvalidInputError(f"trans_dim: {self.trans_dim} is not divisible by "
                                    f"num_heads {self.num_heads}")
        if self.points < max(self.num_group, self.group_size):
            raise InvalidInputError(
                f"points: {self.points} points per cloud are fewer than num_group "
                f"{self.num_group} or group_size {self.group_size}")
        ratio = check_positive(self.mask_ratio, "mask_ratio")
        n_mask = int(ratio * self.num_group)
        if n_mask < 1 or n_mask >= self.num_group:
            raise InvalidInputError(
                f"mask_ratio: {ratio} of {self.num_group} groups masks {n_mask}; at least one "
                "group must be masked and one visible")
        return self

    @property
    def need(self) -> int:
        """Fewest points a training cloud may have."""
        return max(self.num_group, self.group_size)

    def inference_arch(self) -> dict[str, Any]:
        """Encoder arguments recorded for inference (see the module docstring)."""
        return {
            "trans_dim": self.trans_dim, "depth": self.depth, "num_heads": self.num_heads,
            "encoder_dims": self.trans_dim, "tokenizer_dims": list(self.tokenizer_dims),
            "num_group": min(4 * self.num_group, self.points), "group_size": self.group_size,
            "normalize": True, "max_points": self.points,
        }


@dataclass
class TrainCloud:
    """One training cloud: ``points (n, 3) float32``, optional ``normals (n, 3)`` (meshes:
    used to cut random single views) and the file it came from."""

    points: np.ndarray
    normals: np.ndarray | None
    source: str
    kind: str = field(default="points")


# ------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------


class TransformerDecoder(nn.Module):
    """Point-MAE's ``TransformerDecoder``: ``blocks`` then ``norm`` on the last tokens."""

    def __init__(self, dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, n_last: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, -n_last:])


def chamfer_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chamfer-L2 of ``(M, K, 3)`` point sets: mean squared distance to the nearest point,
    both directions, summed (Point-MAE's ``ChamferDistanceL2``)."""
    d = (pred[:, :, None, :] - target[:, None, :, :]).pow(2).sum(-1)  # (M, K, K)
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


class PointMAEPretrainModel(nn.Module):
    """Point-MAE pretraining model; parameter names as the official ``Point_MAE``."""

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        c = config
        self.mask_ratio = float(c.mask_ratio)
        self.group_size = int(c.group_size)
        self.MAE_encoder = PointMAEEncoder(
            trans_dim=c.trans_dim, depth=c.depth, num_heads=c.num_heads,
            num_group=c.num_group, group_size=c.group_size,
            tokenizer_dims=tuple(c.tokenizer_dims), normalize=True, max_points=c.points)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.trans_dim))
        self.decoder_pos_embed = nn.Sequential(
            nn.Linear(3, 128), nn.GELU(), nn.Linear(128, c.trans_dim))
        self.MAE_decoder = TransformerDecoder(c.trans_dim, c.decoder_depth, c.num_heads)
        self.increase_dim = nn.Sequential(nn.Conv1d(c.trans_dim, 3 * c.group_size, 1))

    def init_weights(self, generator: torch.Generator) -> PointMAEPretrainModel:
        """Point-MAE's initialisation, drawn from ``generator``: truncated normal (std 0.02)
        for the encoder's Linear/Conv1d weights, the heads and ``mask_token``; Xavier-uniform
        for the decoder blocks; zero biases; unit norms."""
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                if name.startswith("MAE_decoder."):
                    nn.init.xavier_uniform_(m.weight, generator=generator)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02, generator=generator)
        return self

    def forward(self, points: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        """Chamfer-L2 loss of a batch ``(B, N, 3)`` of prepared (normalized) clouds."""
        enc = self.MAE_encoder
        with torch.no_grad():
            neighborhood, centers, _, _ = enc._group(points, lengths, points)
        b, g = centers.shape[:2]
        n_mask = int(self.mask_ratio * g)
        order = torch.stack([torch.randperm(g, generator=generator)
                             for _ in range(b)]).to(centers.device)
        vis, msk = order[:, n_mask:], order[:, :n_mask]
        k = neighborhood.shape[2]
        nb_vis = gather(neighborhood.reshape(b, g, 3 * k), vis).reshape(b, -1, k, 3)
        c_vis, c_msk = gather(centers, vis), gather(centers, msk)
        x = enc.encoder(nb_vis)
        x = enc.norm(enc.blocks(x, enc.pos_embed(c_vis))[-1])
        pos = torch.cat([self.decoder_pos_embed(c_vis), self.decoder_pos_embed(c_msk)], 1)
        x = torch.cat([x, self.mask_token.expand(b, n_mask, -1)], 1)
        rec = self.MAE_decoder(x, pos, n_mask)  # (B, M, D)
        head = self.increase_dim[0]  # a 1x1 Conv1d, applied as a matrix product
        pred = F.linear(rec, head.weight[..., 0], head.bias).reshape(-1, k, 3)
        target = gather(neighborhood.reshape(b, g, 3 * k), msk).reshape(-1, k, 3)
        return chamfer_l2(pred, target)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def _seed_of(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _subset(points: np.ndarray, normals: np.ndarray | None, n: int, seed: int):
    if len(points) <= n:
        return points, normals
    idx = np.sort(np.random.default_rng(seed).choice(len(points), n, replace=False))
    return points[idx], (None if normals is None else normals[idx])


def _mvtec_samples(root: Path) -> list[tuple[Any, int, Path]]:
    """``(dataset, index, xyz path)`` of every good training sample of every category."""
    from pcad.data.mvtec3d import MVTec3DDataset, list_categories

    out: list[tuple[Any, int, Path]] = []
    for cat in list_categories(root):
        if not (root / cat / "train" / "good" / "xyz").is_dir():
            continue
        ds = MVTec3DDataset(root, cat, "train", modality="xyz")
        out.extend((ds, i, e.xyz) for i, e in enumerate(ds.entries)
                   if e.label == 0 and e.xyz is not None)
    return out


def _point_files(root: Path) -> list[Path]:
    from pcad.io import SUPPORTED_EXTENSIONS

    return sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix())


def collect_clouds(
    data: str | os.PathLike[str], config: PretrainConfig,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[TrainCloud], dict[str, Any]]:
    """Training clouds of ``data`` and a summary for the record.

    ``data`` is either an MVTec 3D-AD style root (every category's ``train/good/xyz/*.tiff``,
    foreground points only: :func:`~pcad.features.fpfh.point_mask`) or a folder (searched
    recursively, hidden entries skipped) of meshes, point clouds and xyz TIFFs read with
    :func:`pcad.io.read_input`; meshes are sampled by area (``POOL_FACTOR * points``
    samples, seeded by ``seed`` and the file's rank). Each cloud keeps at most
    ``POOL_FACTOR * points`` points (a seeded random subset).

    Raises:
        FileNotFoundError: ``data`` is not a folder.
        InvalidInputError: nothing to train on, or a cloud with fewer points than the
            groups need (the message names the file and the counts).
    """
    from pcad.features.fpfh import point_mask
    from pcad.io import read_input

    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: --data is not a folder")
    pool = POOL_FACTOR * config.points
    clouds: list[TrainCloud] = []
    mvtec = _mvtec_samples(root)
    if mvtec:
        kind = "mvtec3d"
        for i, (ds, index, path) in enumerate(mvtec):
            xyz = ds[index].xyz
            pts = xyz[point_mask(xyz)]
            pts, _ = _subset(pts, None, pool, _seed_of(config.seed, 1, i))
            clouds.append(TrainCloud(np.ascontiguousarray(pts), None,
                                     path.relative_to(root).as_posix(), "organized"))
            if progress and (i + 1) % 100 == 0:
                progress(f"read {i + 1}/{len(mvtec)} clouds")
    else:
        kind = "files"
        files = _point_files(root)
        if not files:
            raise InvalidInputError(
                f"{root}: no training data: no <category>/train/good/xyz/*.tiff (MVTec 3D-AD "
                "layout) and no mesh, point cloud or xyz TIFF file")
        for i, path in enumerate(files):
            got = read_input(path, n_points=pool, seed=_seed_of(config.seed, 2, i))
            pts, nrm = got.points, (got.normals if got.kind == "mesh" else None)
            if got.kind == "organized" and got.organized is not None:
                pts = got.organized[point_mask(got.organized)]
            pts, nrm = _subset(np.asarray(pts, np.float32), nrm, pool,
                               _seed_of(config.seed, 3, i))
            clouds.append(TrainCloud(np.ascontiguousarray(pts, dtype=np.float32), nrm,
                                     path.relative_to(root).as_posix(), got.kind))
    if not clouds:
        raise InvalidInputError(f"{root}: no train/good clouds found")
    for c in clouds:
        if len(c.points) < config.need:
            raise InvalidInputError(
                f"{root / c.source}: {len(c.points)} points, fewer than the groups need "
                f"(num_group {config.num_group}, group_size {config.group_size})")
        if not np.isfinite(c.points).all():
            raise InvalidInputError(f"{root / c.source}: NaN or infinite coordinates")
        if float(np.ptp(c.points, axis=0).max()) <= 0:
            raise InvalidInputError(f"{root / c.source}: all points coincide")
    kinds: dict[str, int] = {}
    for c in clouds:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    summary = {"path": str(data), "layout": kind, "clouds": len(clouds),
               "kinds": dict(sorted(kinds.items())),
               "first_sources": [c.source for c in clouds[:5]]}
    return clouds, summary


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _prepare(cloud: TrainCloud, config: PretrainConfig, rng: np.random.Generator) -> np.ndarray:
    """One epoch's view of a cloud: view cut, subset, unit sphere, scale, rotation."""
    pts = cloud.points
    if config.views and cloud.normals is not None:
        v = rng.normal(size=3)
        seen = cloud.normals @ (v / max(float(np.linalg.norm(v)), 1e-12)) > 0
        if int(seen.sum()) >= config.need:
            pts = pts[seen]
    n = min(len(pts), config.points)
    pts = pts[rng.permutation(len(pts))[:n]].astype(np.float64)
    pts = pts - pts.mean(0)
    pts = pts / max(float(np.linalg.norm(pts, axis=1).max()), 1e-12)
    pts = pts * rng.uniform(*SCALE_RANGE)
    return (pts @ _rotation(rng).T).astype(np.float32)


def _batch(items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(p) for p in items)
    out = np.zeros((len(items), n, 3), np.float32)
    for i, p in enumerate(items):
        out[i, :len(p)] = p
    return torch.from_numpy(out), torch.tensor([len(p) for p in items], dtype=torch.int64)


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------


def _lr_at(step: int, total: int, base: float) -> float:
    warm = max(1, int(WARMUP_FRACTION * total))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    low = base * MIN_LR_FRACTION
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


def _optimizer(model: nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "token" in name
         else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr,
                             foreach=True)


def pretrain(
    clouds: list[TrainCloud], config: PretrainConfig,
    progress: Callable[[int, int, float, float], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[PointMAEPretrainModel, list[float]]:
    """Train a :class:`PointMAEPretrainModel` on ``clouds``; returns it (eval mode) and the
    mean loss of every epoch. ``progress(epoch, epochs, loss, seconds)`` after each epoch."""
    config.validate()
    if not clouds:
        raise InvalidInputError("clouds: nothing to train on")
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 4]))
    with torch.random.fork_rng(devices=[]):  # default inits must not touch the global RNG
        model = PointMAEPretrainModel(config)
    # initialised on the CPU from the seeded generator, then moved: the same start on any
    # device (the masks too are drawn on the CPU); the model comes back on the CPU
    from pcad.detectors.patches import resolve_device

    dev = resolve_device(device)
    model.init_weights(gen).to(dev).train()
    opt = _optimizer(model, config)
    per_epoch = math.ceil(len(clouds) / config.batch_size)
    total = per_epoch * config.epochs
    history: list[float] = []
    step = 0
    flushed = _flushes_denormals()
    torch.set_flush_denormal(True)
    try:
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            order = rng.permutation(len(clouds))
            losses = []
            for lo in range(0, len(order), config.batch_size):
                items = [_prepare(clouds[i], config, rng)
                         for i in order[lo:lo + config.batch_size]]
                pts, lens = _batch(items)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, config.lr)
                loss = model(pts.to(dev), lens.to(dev), gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
            history.append(float(np.mean(losses)))
            if progress is not None:
                progress(epoch + 1, config.epochs, history[-1], time.perf_counter() - t0)
    finally:
        torch.set_flush_denormal(flushed)
    return model.cpu().eval(), history


def _flushes_denormals() -> bool:
    """Whether torch currently flushes denormal floats to zero (no getter exists)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
    return bool((tiny * 1.0).item() == 0.0)


# ------------------------------------------------------------------------------------------
# checkpoint
# ------------------------------------------------------------------------------------------


def checkpoint_dict(
    model: PointMAEPretrainModel, config: PretrainConfig, history: list[float],
    data: Mapping[str, Any] | None = None, *, steps: int | None = None, half: bool = False,
    encoder_only: bool = False,
) -> dict[str, Any]:
    """``{"base_model": state dict, "pcad": record}`` (see the module docstring)."""
    sd = model.state_dict()
    if encoder_only:
        sd = {k: v for k, v in sd.items() if k.startswith("MAE_encoder.")}
    sd = {k: (v.detach().clone().half() if half and v.is_floating_point()
              else v.detach().clone()).contiguous() for k, v in sd.items()}
    cfg = asdict(config)
    cfg["tokenizer_dims"] = list(config.tokenizer_dims)
    from pcad import __version__

    record = {
        "format": FORMAT,
        "arch": config.inference_arch(),
        "training": {
            "config": cfg,
            "data": dict(data or {}),
            "loss": "chamfer_l2",
            "loss_history": [float(x) for x in history],
            "final_loss": float(history[-1]) if history else None,
            "steps": steps,
            "dtype": "float16" if half else "float32",
            "encoder_only": bool(encoder_only),
            "pcad": __version__,
            "torch": torch.__version__.split("+")[0],
            "threads": torch.get_num_threads(),
        },
    }
    return {"base_model": sd, "pcad": record}


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> int:
    """Atomically write ``obj`` with ``torch.save``; returns the size in bytes.

    The bytes are produced in memory first (so the zip's internal folder name is always
    ``archive``, not the temporary file's name) and then written with
    :func:`pcad.io.atomic_write`.
    """
    from pcad.io import atomic_write

    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    data = buf.getvalue()
    with atomic_write(path) as f:
        f.write(data)
    return len(data)


def train_log_path(out: str | os.PathLike[str]) -> Path:
    """The per-epoch log (:data:`pcad.trainlog.LOG_COLUMNS`) of a pretraining that
    writes ``out``: ``<out>.train_log.csv`` beside it.

    >>> train_log_path("w/pointmae.pth").as_posix()
    'w/pointmae.pth.train_log.csv'
    """
    out = Path(out)
    return out.with_name(out.name + ".train_log.csv")


def run_pretrain(
    data: str | os.PathLike[str], out: str | os.PathLike[str], config: PretrainConfig, *,
    half: bool = False, encoder_only: bool = False,
    log: Callable[[str], None] | None = None, device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Collect the clouds of ``data``, pretrain, write the checkpoint to ``out``.

    The checkpoint is written only when training finishes; ``<out>.train_log.csv``
    (:func:`train_log_path`) gets a row after every epoch. Returns a summary (``out``, ``bytes``,
    ``final_loss``, ``clouds``, ``epochs``, ``seconds``).
    """
    config.validate()
    out_path = Path(out)
    if out_path.is_dir():
        raise InvalidInputError(f"--out {out_path}: is a folder, expected a checkpoint file path")
    t0 = time.perf_counter()
    clouds, summary = collect_clouds(data, config, log)
    if log:
        log(f"{len(clouds)} training clouds ({summary['layout']}: "
            f"{', '.join(f'{n} {k}' for k, n in summary['kinds'].items())})")

    from pcad.trainlog import write_train_log

    rows: list[list[Any]] = []
    log_path = train_log_path(out_path)
    per_epoch = math.ceil(len(clouds) / config.batch_size)

    def report(epoch: int, epochs: int, loss: float, seconds: float) -> None:
        rows.append([epoch, epoch * per_epoch, loss, _lr_at(epoch * per_epoch - 1,
                     per_epoch * epochs, config.lr), round(time.perf_counter() - t0, 3)])
        write_train_log(log_path, rows)  # atomic: an interrupted run leaves a whole CSV
        if log:
            log(f"epoch {epoch}/{epochs}: chamfer-L2 {loss:.6f} ({seconds:.1f} s)")

    model, history = pretrain(clouds, config, report, device=device)
    steps = math.ceil(len(clouds) / config.batch_size) * config.epochs
    ckpt = checkpoint_dict(model, config, history, summary, steps=steps, half=half,
                           encoder_only=encoder_only)
    size = save_checkpoint(ckpt, out_path)
    return {"out": str(out_path), "bytes": size, "final_loss": history[-1],
            "clouds": len(clouds), "epochs": config.epochs,
            "seconds": time.perf_counter() - t0}
