"""Data-parallel training under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on GPU).

``torchrun --nproc_per_node 2 -m pcad train --data D --category C --detector cfm --out RUN``
starts two processes; each reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT`` from its environment. :func:`get_context` turns that into a
:class:`DistContext` (initialising the default process group once). Without those variables
(plain ``python -m pcad`` or a notebook) everything here is the identity of a world of one
process: no process group, no communication, and every trained detector behaves and computes
exactly as before.

The rule every trained detector follows (``cfm``, the memory-bank detectors, and any detector
whose class declares the capability ``supports_distributed = True``,
:class:`pcad.detectors.base.Detector`):

1. **Features are sharded.** Each rank extracts features only for its contiguous block of the
   training samples, :func:`shard` (``shard_range``: blocks in rank order, sizes differ by at
   most one).
2. **Features are gathered in the single-process order.** :func:`all_gather_arrays` concatenates
   every rank's array along axis 0 in rank order; as the blocks are contiguous and in rank
   order, every rank then holds exactly the array a single process would have built (the
   per-rank lengths may differ, e.g. a different number of foreground patches per sample).
   Statistics computed from it (standardisation, memory banks) are the same on every rank.
3. **Training steps are data-parallel on identical global batches.** The seeded shuffling
   (a ``torch.Generator`` seeded from the config, on CPU) is run identically on every rank, so
   every rank walks the same global batches in the same order. Each global batch is split by
   :func:`batch_slice` (the rank's contiguous share; equal when the batch size is a multiple
   of the world size, else sizes differ by at most one, possibly zero). The model is wrapped by
   :func:`wrap_module` (DistributedDataParallel), which *averages* the gradients over ranks.
   **Uneven batches are handled by weighting, not by dropping or padding:** each rank's loss is
   ``sum(per-item loss over its slice) * world_size / len(global batch)`` (see
   :func:`slice_loss_scale`), so the DDP average
   ``(1 / W) * sum_r (W / B) * sum_{i in slice r} grad_i = (1 / B) * sum_i grad_i`` is exactly
   the gradient of the single-process *mean* loss over the whole global batch, including a
   last batch of any size (a rank with an empty slice contributes a zero gradient). The
   single-process path therefore needs no change: it keeps the plain mean over every batch,
   the last short batch included, as it always did. (Same maths; floating-point summation
   order differs, so weights agree to about 1e-6, not bit for bit.) Initial weights are seeded
   identically, and DDP also broadcasts rank 0's parameters when it wraps the module.
4. **Only rank 0 writes.** :func:`pcad.engine.train` saves the run and ``train.json`` (with
   ``world_size``) on rank 0 only; every rank then waits at :func:`barrier`. Progress bars are
   shown on rank 0 only.

Backends: ``gloo`` on a machine without CUDA. Where CUDA is available the process group is
created as ``"cpu:gloo,cuda:nccl"`` (``DistContext.backend == "nccl"``): CUDA tensors go
through NCCL and CPU tensors (a detector trained with ``device="cpu"``, and the CPU
collectives of this module) through gloo. ``PCAD_DIST_BACKEND`` overrides the choice (e.g.
``gloo`` to run CPU-only on a GPU machine). Each rank uses ``cuda:LOCAL_RANK``.

Example:
    >>> from pcad import distributed as dist
    >>> ctx = dist.get_context()          # no torchrun: a world of one
    >>> ctx.world_size, ctx.rank, dist.is_main()
    (1, 0, True)
    >>> dist.shard_range(10)
    (0, 10)
    >>> block_range(10, rank=1, world_size=4)
    (3, 6)
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from pcad.errors import InvalidInputError

T = TypeVar("T")

__all__ = ["DistContext", "all_gather_arrays", "all_reduce_mean", "barrier", "batch_slice",
           "block_range", "broadcast_object", "get_context", "is_main", "shard", "shard_range",
           "slice_loss_scale", "wrap_module"]

#: environment variables torchrun sets that a distributed run needs
_ENV = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node),
    the process-group ``backend`` (``None`` for a world of one) and its default ``device``
    (``cuda:LOCAL_RANK`` where CUDA is available, else ``cpu``)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device


_CONTEXT: DistContext | None = None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"environment variable {name}: expected an integer, got "
                                f"{value!r}") from None


def _destroy() -> None:  # pragma: no cover - runs at interpreter exit of torchrun workers
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        try:
            tdist.destroy_process_group()
        except Exception:
            pass


def get_context() -> DistContext:
    """This process's :class:`DistContext`.

    Without ``RANK`` / ``WORLD_SIZE`` in the environment (not launched by torchrun), or with
    ``WORLD_SIZE=1``: rank 0 of a world of one, no process group. Under torchrun with a world
    of two or more: initialises the default process group on the first call (``gloo``;
    ``cpu:gloo,cuda:nccl`` where CUDA is available; ``PCAD_DIST_BACKEND`` overrides), sets the
    CUDA device to ``LOCAL_RANK``, and returns the same context on every later call.
    """
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    world = _env_int("WORLD_SIZE", 1) if all(k in os.environ for k in _ENV) else 1
    if world <= 1:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _CONTEXT = DistContext(0, 1, 0, None, device)
        return _CONTEXT

    import torch.distributed as tdist

    if not tdist.is_available():  # pragma: no cover - every standard torch build has it
        raise InvalidInputError("distributed training: this torch build has no "
                                "torch.distributed")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    override = os.environ.get("PCAD_DIST_BACKEND", "").strip().lower() or None
    cuda = torch.cuda.is_available() and override != "gloo"
    if override not in (None, "gloo", "nccl"):
        raise InvalidInputError(f"PCAD_DIST_BACKEND: expected 'gloo' or 'nccl', got "
                                f"{override!r}")
    if override == "nccl" and not torch.cuda.is_available():
        raise InvalidInputError("PCAD_DIST_BACKEND=nccl, but no CUDA device is available")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise InvalidInputError(
                f"distributed training: LOCAL_RANK {local_rank}, but this node has "
                f"{torch.cuda.device_count()} CUDA device(s) (NCCL needs one per process); "
                "start at most that many processes per node, or set PCAD_DIST_BACKEND=gloo")
        backend, init = "nccl", "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        if not tdist.is_gloo_available():
            raise InvalidInputError("distributed training on CPU needs the gloo backend, "
                                    "which this torch build lacks")
        backend, init = "gloo", "gloo"
        device = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=init, rank=rank, world_size=world)
        atexit.register(_destroy)
    _CONTEXT = DistContext(rank, world, local_rank, backend, device)
    return _CONTEXT


def is_main() -> bool:
    """True on rank 0 (the one that writes files and shows progress)."""
    return get_context().rank == 0


def barrier() -> None:
    """Wait for every rank (no-op for a world of one)."""
    if get_context().world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()


def block_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of block ``rank`` when ``n`` items are cut into ``world_size``
    contiguous blocks in rank order; the first ``n % world_size`` blocks hold one more item.

    Example:
        >>> [block_range(5, r, 2) for r in range(2)]
        [(0, 3), (3, 5)]
    """
    if world_size < 1:
        raise InvalidInputError(f"world_size: expected >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise InvalidInputError(f"rank: expected 0 <= rank < {world_size}, got {rank}")
    if n < 0:
        raise InvalidInputError(f"n: expected >= 0, got {n}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_range(n: int) -> tuple[int, int]:
    """This rank's contiguous block ``[start, stop)`` of ``n`` items (:func:`block_range`)."""
    ctx = get_context()
    return block_range(int(n), ctx.rank, ctx.world_size)


def shard(items: Sequence[T]) -> list[T]:
    """``items[start:stop]`` for this rank's :func:`shard_range` (all items for a world of
    one)."""
    start, stop = shard_range(len(items))
    return list(items[start:stop])


def batch_slice(batch_indices: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch: ``batch_indices[start:stop]`` for
    :func:`block_range` of its length (equal shares when the batch size is a multiple of the
    world size; else sizes differ by one, and a rank may get none). Pair with
    :func:`slice_loss_scale` so that DDP's gradient average equals the single-process gradient
    of the mean loss over the whole batch. The batch itself for a world of one."""
    ctx = get_context()
    if ctx.world_size == 1:
        return batch_indices
    start, stop = block_range(len(batch_indices), ctx.rank, ctx.world_size)
    return batch_indices[start:stop]


def slice_loss_scale(global_batch: int) -> float:
    """``world_size / global_batch``: multiply the *sum* of the per-item losses of this rank's
    :func:`batch_slice` by this, and DDP's gradient average is the gradient of the mean loss
    over the whole global batch, whatever the slice sizes (``1 / global_batch`` for a world of
    one: the plain mean)."""
    if global_batch < 1:
        raise InvalidInputError(f"global_batch: expected >= 1, got {global_batch}")
    return get_context().world_size / global_batch


def _collective_device(ctx: DistContext) -> torch.device:
    # gloo serves CPU tensors in both the "gloo" and the "cpu:gloo,cuda:nccl" process groups
    return torch.device("cpu")


def all_gather_arrays(x: np.ndarray) -> np.ndarray:
    """Every rank's ``x`` concatenated along axis 0 in rank order (the per-rank lengths may
    differ; the dtype and the trailing shape must agree, else every rank raises
    :class:`~pcad.errors.InvalidInputError`). ``x`` itself for a world of one.

    Example:
        >>> all_gather_arrays(np.arange(3)).tolist()    # a world of one
        [0, 1, 2]
    """
    ctx = get_context()
    x = np.asarray(x)
    if ctx.world_size == 1:
        return x
    import torch.distributed as tdist

    if x.ndim == 0:
        raise InvalidInputError("all_gather_arrays: x must have at least one dimension, got a "
                                "scalar")
    meta: list[Any] = [None] * ctx.world_size
    tdist.all_gather_object(meta, (x.shape, x.dtype.str))
    shapes, dtypes = [m[0] for m in meta], [m[1] for m in meta]
    if len(set(dtypes)) > 1 or len({tuple(s[1:]) for s in shapes}) > 1:
        desc = ", ".join(f"rank {r}: {np.dtype(d)} {tuple(s)}"
                         for r, (s, d) in enumerate(zip(shapes, dtypes, strict=True)))
        raise InvalidInputError(f"all_gather_arrays: the ranks' arrays must share dtype and "
                                f"trailing shape; got {desc}")
    lengths = [int(s[0]) for s in shapes]
    try:  # bool travels as uint8 (not every backend reduces bool tensors)
        t = torch.from_numpy(np.ascontiguousarray(x.view(np.uint8) if x.dtype == bool else x))
    except TypeError:  # object / string dtypes: pickle them
        parts: list[Any] = [None] * ctx.world_size
        tdist.all_gather_object(parts, x)
        return np.concatenate(parts, axis=0)
    longest = max(lengths)
    dev = _collective_device(ctx)
    padded = torch.zeros((longest, *x.shape[1:]), dtype=t.dtype, device=dev)
    padded[:len(t)] = t.to(dev)
    gathered = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    tdist.all_gather(gathered, padded)
    out = np.concatenate([g[:k].cpu().numpy() for g, k in zip(gathered, lengths, strict=True)],
                         axis=0)
    return out.astype(x.dtype, copy=False)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; ``obj`` itself for a world of
    one)."""
    ctx = get_context()
    if ctx.world_size == 1:
        return obj
    import torch.distributed as tdist

    box = [obj if ctx.rank == src else None]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: float) -> float:
    """The mean of ``value`` over the ranks (``value`` for a world of one)."""
    ctx = get_context()
    if ctx.world_size == 1:
        return float(value)
    import torch.distributed as tdist

    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device(ctx))
    tdist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def wrap_module(module: nn.Module) -> nn.Module:
    """``DistributedDataParallel(module)`` for a world of two or more (``device_ids`` set when
    the module's parameters are on CUDA), ``module`` itself otherwise. Move the module to its
    device first; DDP broadcasts rank 0's parameters and buffers when it wraps."""
    ctx = get_context()
    if ctx.world_size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    param = next(module.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[param.device.index])
    return DistributedDataParallel(module)


def _reset_for_tests() -> None:
    """Forget the cached context (tests that change the environment)."""
    global _CONTEXT
    _CONTEXT = None
