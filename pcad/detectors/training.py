"""Training helpers every trained detector shares: contrastive losses, schedule, the loop.

- :func:`info_nce`: the MoCo-v3 style InfoNCE of M3DM's and LSFA's code.
- :func:`nearest_distance`: distance to the nearest row of a (large) feature queue, chunked,
  differentiable (LSFA's compactness).
- :func:`warmup_cosine_lr`: MAE's per-iteration linear warm-up + half-cycle cosine schedule.
- :func:`zero_loss`: a zero connected to every parameter (a rank with nothing to do in DDP).
- :func:`run_training`: the seeded, data-parallel training loop (AdamW, :func:`warmup_cosine_lr`)
  of M3DM's UFF and of the LSFA adapters.

Example:
    >>> import torch
    >>> from pcad.detectors.training import info_nce
    >>> q = torch.eye(3)
    >>> round(float(info_nce(q, q)), 4)  # T = 1: 2 T (log(e + 2) - 1)
    1.1029
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pcad.errors import InvalidInputError

__all__ = ["info_nce", "nearest_distance", "run_training", "warmup_cosine_lr", "zero_loss"]


# ------------------------------------------------------------------------------------- losses


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE of paired rows as in M3DM's and LSFA's ``contrastive_loss`` (MoCo v3).

    ``q, k``: ``(m, d)``; row ``i`` of ``q`` and of ``k`` form the positive pair, every other
    row of ``k`` is a negative. Both are L2-normalised, ``logits = q k^T / T``, and the loss is
    the cross-entropy towards the diagonal, times ``2 T``. Fewer than two rows give 0 (no
    negative), still connected to the graph.
    """
    if q.shape != k.shape or q.ndim != 2:
        raise InvalidInputError(f"info_nce: q and k must be (m, d) of one shape, got "
                                f"{tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[0] < 2:
        return (q.sum() + k.sum()) * 0.0
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = qn @ kn.T / temperature
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


def nearest_distance(x: torch.Tensor, bank: torch.Tensor, chunk_bytes: float = 64 * 2**20
                     ) -> torch.Tensor:
    """``(m,)`` Euclidean distance from each row of ``x (m, C)`` to its nearest row of
    ``bank (M, C)``, differentiable with respect to ``x``.

    The nearest row is found without gradient in chunks of ``chunk_bytes`` (the ``m x M``
    distance matrix is never held whole, nor kept for the backward pass); the distance to it
    is then recomputed with gradient as ``sqrt(clamp(|x - b|^2, 1e-12))``. The gradient is the
    one of ``min_b |x - b|`` (a minimum's gradient flows to its argmin only).
    """
    if x.ndim != 2 or bank.ndim != 2 or x.shape[1] != bank.shape[1] or len(bank) == 0:
        raise InvalidInputError(f"nearest_distance: expected x (m, C) and a non-empty bank "
                                f"(M, C), got {tuple(x.shape)} and {tuple(bank.shape)}")
    with torch.no_grad():
        xd, bd = x.detach(), bank.detach()
        b_sq = (bd * bd).sum(1)
        rows = max(1, int(chunk_bytes // (4 * len(bank))))
        idx = torch.empty(len(x), dtype=torch.long, device=x.device)
        for s in range(0, len(x), rows):
            d2 = torch.addmm(b_sq[None], xd[s:s + rows], bd.T, alpha=-2.0)
            idx[s:s + rows] = d2.argmin(dim=1)
    diff = x - bank[idx]
    return (diff * diff).sum(1).clamp_min(1e-12).sqrt()


# ----------------------------------------------------------------------------------- training


def warmup_cosine_lr(epoch: float, epochs: int, warmup_epochs: float, lr: float,
                     min_lr: float = 0.0) -> float:
    """MAE's per-iteration schedule (``util/lr_sched.py``, used by M3DM and LSFA): linear
    warm-up from 0 over ``warmup_epochs``, then a half-cycle cosine to ``min_lr`` at
    ``epochs``; ``epoch`` is fractional (iteration / iterations per epoch)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs)
                                                           / span))


def zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero that depends on every parameter (a rank with nothing to do still joins DDP's
    gradient average)."""
    return sum(p.sum() * 0.0 for p in module.parameters())


def run_training(module: nn.Module, n_items: int,
                 step_loss: Callable[[nn.Module, int, int, torch.Tensor], torch.Tensor], *,
                 epochs: int, batch_size: int, lr: float, weight_decay: float,
                 warmup_epochs: float, seed: int, progress: bool = False, desc: str = "training",
                 epoch_start: Callable[[int], None] | None = None) -> list[float]:
    """Train ``module`` (already on its device) and return the mean loss of each epoch.

    Every epoch walks a seeded permutation of the ``n_items`` items (a CPU
    ``torch.Generator(seed)``, identical on every rank) in global batches of ``batch_size``
    (the last one shorter; none dropped). ``step_loss(model, epoch, step, local_indices)``
    returns the mean loss over this rank's :func:`~pcad.distributed.batch_slice` of the batch;
    it is weighted by ``len(slice) * world / len(batch)`` so that DDP's gradient average
    (``model`` is :func:`~pcad.distributed.wrap_module` of ``module``) is the gradient of the
    mean over the global batch; for one process the weight is 1. AdamW(betas 0.9, 0.95) with
    :func:`warmup_cosine_lr` set before every step. ``epoch_start(epoch)`` runs first in each
    epoch.
    """
    from tqdm import tqdm

    from pcad import distributed as dist

    model = dist.wrap_module(module)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.9, 0.95),
                            weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    steps = max(1, math.ceil(n_items / batch_size))
    history: list[float] = []
    world = dist.get_context().world_size
    module.train()
    for epoch in tqdm(range(epochs), disable=not (progress and dist.is_main()), desc=desc,
                      unit="epoch"):
        if epoch_start is not None:
            epoch_start(epoch)
        order = torch.randperm(n_items, generator=gen)
        total = 0.0
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = warmup_cosine_lr(epoch + step / steps, epochs, warmup_epochs, lr)
            batch = order[step * batch_size:(step + 1) * batch_size]
            local = dist.batch_slice(batch)
            loss = step_loss(model, epoch, epoch * steps + step, local)
            loss = loss * (len(local) * world / len(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        history.append(dist.all_reduce_mean(total) / n_items)
    module.eval()
    return history

