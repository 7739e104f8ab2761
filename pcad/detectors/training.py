"""Training helpers every trained detector shares: contrastive losses, schedule, the loop.

- :func:`info_nce`: the MoCo-v3 style InfoNCE of M3DM's and LSFA's code.
- :func:`nearest_distance`: distance to the nearest row of a (large) feature queue, chunked,
  differentiable (LSFA's compactness).
- :func:`warmup_cosine_lr`: MAE's per-iteration linear warm-up + half-cycle cosine schedule.
- :func:`zero_loss`: a zero connected to every parameter (a rank with nothing to do in DDP).
- :func:`run_training`: the seeded, data-parallel training loop (AdamW, :func:`warmup_cosine_lr`)
  of M3DM's UFF and of the LSFA adapters.
- :class:`EpochLoop`: the epoch bookkeeping every training loop shares (run_training, CFM's and
  synthsup's own loops): live loss on the progress bar, and, inside a
  :func:`training_session` (what ``pcad train`` opens on its run folder), ``train_log.csv``
  (``epoch,steps,loss,lr,seconds``, one row per finished epoch, rewritten atomically) and a
  checkpoint ``checkpoint.pt`` after every epoch (modules, optimizer, generators, the global
  torch RNG, epoch, history; atomic) that ``resume=True`` continues from, bit-identically.

Example:
    >>> import torch
    >>> from pcad.detectors.training import info_nce
    >>> q = torch.eye(3)
    >>> round(float(info_nce(q, q)), 4)  # T = 1: 2 T (log(e + 2) - 1)
    1.1029
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pcad.errors import InvalidInputError
from pcad.trainlog import LOG_COLUMNS, write_train_log

__all__ = ["CHECKPOINT_FILE", "LOG_COLUMNS", "LOG_FILE", "EpochLoop", "StateSlot",
           "TrainingSession", "check_resume", "info_nce", "nearest_distance", "read_checkpoint",
           "run_training", "training_session", "warmup_cosine_lr", "write_train_log",
           "zero_loss"]

#: the per-epoch log a training session writes in its folder (columns
#: :data:`pcad.trainlog.LOG_COLUMNS`)
LOG_FILE = "train_log.csv"
#: the checkpoint a training session writes after every epoch (removed when the run is saved)
CHECKPOINT_FILE = "checkpoint.pt"


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
                 epoch_start: Callable[[int], None] | None = None,
                 extra_state: Mapping[str, Any] | None = None) -> list[float]:
    """Train ``module`` (already on its device) and return the mean loss of each epoch.

    Every epoch walks a seeded permutation of the ``n_items`` items (a CPU
    ``torch.Generator(seed)``, identical on every rank) in global batches of ``batch_size``
    (the last one shorter; none dropped). ``step_loss(model, epoch, step, local_indices)``
    returns the mean loss over this rank's :func:`~pcad.distributed.batch_slice` of the batch;
    it is weighted by ``len(slice) * world / len(batch)`` so that DDP's gradient average
    (``model`` is :func:`~pcad.distributed.wrap_module` of ``module``) is the gradient of the
    mean over the global batch; for one process the weight is 1. AdamW(betas 0.9, 0.95) with
    :func:`warmup_cosine_lr` set before every step. ``epoch_start(epoch)`` runs first in each
    epoch. The epochs run in an :class:`EpochLoop` (live loss; log and checkpoint inside a
    :func:`training_session`); ``extra_state`` adds what ``step_loss`` keeps between epochs
    (generators, :class:`StateSlot` s) to its checkpoint.
    """
    from pcad import distributed as dist

    model = dist.wrap_module(module)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.9, 0.95),
                            weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    steps = max(1, math.ceil(n_items / batch_size))
    world = dist.get_context().world_size
    loop = EpochLoop(desc, epochs, {"module": module, "optimizer": opt, "generator": gen,
                                    **(extra_state or {})},
                     progress=progress, identity={"n_items": n_items, "batch_size": batch_size})
    module.train()
    current = lr
    for epoch in loop:
        if epoch_start is not None:
            epoch_start(epoch)
        order = torch.randperm(n_items, generator=gen)
        total = 0.0
        for step in range(steps):
            current = warmup_cosine_lr(epoch + step / steps, epochs, warmup_epochs, lr)
            for group in opt.param_groups:
                group["lr"] = current
            batch = order[step * batch_size:(step + 1) * batch_size]
            local = dist.batch_slice(batch)
            loss = step_loss(model, epoch, epoch * steps + step, local)
            loss = loss * (len(local) * world / len(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        loop.end_epoch(dist.all_reduce_mean(total) / n_items, steps=(epoch + 1) * steps,
                       lr=current)
    module.eval()
    return loop.history


# --------------------------------------------------------------------- sessions, checkpoints


@dataclass
class TrainingSession:
    """Where a training run keeps its log and checkpoint: ``folder``; ``run`` identifies the run
    (detector, config, data: a checkpoint of another run is refused), ``resume`` continues from
    ``folder/checkpoint.pt``, ``quiet`` silences the per-epoch lines."""

    folder: Path
    run: dict[str, Any] = field(default_factory=dict)
    resume: bool = False


_SESSION: contextvars.ContextVar[TrainingSession | None] = contextvars.ContextVar(
    "pcad_training_session", default=None)


@contextlib.contextmanager
def training_session(folder: str | os.PathLike[str], run: Mapping[str, Any] | None = None,
                     resume: bool = False) -> Iterator[TrainingSession]:
    """Within the block every :class:`EpochLoop` logs to ``folder/train_log.csv`` and
    checkpoints to ``folder/checkpoint.pt`` (``resume``: starts from it). ``run`` is a
    JSON-able record of what is trained; a checkpoint written for another record is refused.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> tmp = tempfile.TemporaryDirectory()
        >>> net = nn.Linear(2, 1)
        >>> with training_session(tmp.name, {"detector": "demo"}):
        ...     loop = EpochLoop("demo", 2, {"net": net})
        ...     for epoch in loop:
        ...         loop.end_epoch(0.5, steps=1, lr=0.1)
        >>> (Path(tmp.name) / LOG_FILE).read_text().splitlines()[0]
        'epoch,steps,loss,lr,seconds'
        >>> read_checkpoint(tmp.name)["epoch"]
        2
        >>> tmp.cleanup()
    """
    session = TrainingSession(Path(folder), _jsonable(dict(run or {})), bool(resume))
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


def _jsonable(record: Any) -> Any:
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def read_checkpoint(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` (None when there is none); an unreadable one is an error."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise InvalidInputError(f"--resume: {path}: not a readable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or "run" not in ckpt or "epoch" not in ckpt:
        raise InvalidInputError(f"--resume: {path}: not a pcad training checkpoint")
    return ckpt


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def check_resume(folder: str | os.PathLike[str], run: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint in ``folder`` to resume ``run`` from; a one-line error when there is none
    or when it was written for another detector, configuration or data (naming what differs).
    """
    ckpt = read_checkpoint(folder)
    path = Path(folder) / CHECKPOINT_FILE
    if ckpt is None:
        done = (Path(folder) / "train.json").is_file()
        why = "the run finished (train.json exists)" if done else \
            "the detector trains no network, or training never finished an epoch"
        raise InvalidInputError(f"--resume: no checkpoint {path} ({why}); train without "
                                "--resume (with --overwrite to replace the folder)")
    diff = _differences(json.loads(ckpt["run"]), _jsonable(dict(run)))
    if diff:
        shown = "; ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise InvalidInputError(f"--resume: {path} is from another run ({shown}); resume with "
                                "the same detector, options and data, or use --overwrite")
    return ckpt


@dataclass
class StateSlot:
    """A piece of loop state that is neither a module, an optimizer nor a generator (e.g.
    LSFA's queues): ``get()`` returns it (tensors, lists, numbers), ``set(value)`` restores it.
    """

    get: Callable[[], Any]
    set: Callable[[Any], None]


def _get_state(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, StateSlot):
        return obj.get()
    state = obj.state_dict()
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()} \
        if isinstance(obj, nn.Module) else state


def _set_state(obj: Any, value: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(value)
    elif isinstance(obj, StateSlot):
        obj.set(value)
    else:
        obj.load_state_dict(value)


class EpochLoop:
    """The epochs of one training loop: ``for epoch in loop: ...; loop.end_epoch(loss, ...)``.

    ``state`` names what an epoch changes: modules and optimizers (``state_dict``),
    ``torch.Generator`` objects and :class:`StateSlot` s; the global torch RNG (CPU and CUDA) is
    saved too. Outside a :func:`training_session` the loop only shows its progress bar (loss
    and lr as postfix). Inside one, each :meth:`end_epoch` (on the main process under
    torchrun) rewrites ``train_log.csv`` and ``checkpoint.pt`` atomically; with ``resume`` the
    loop first restores the checkpoint's state and starts at its epoch, so the result is the
    one of an uninterrupted run. ``history``: the mean loss of every epoch (resumed ones
    included). ``identity`` (JSON-able) must match the checkpoint's when resuming.
    """

    def __init__(self, desc: str, epochs: int, state: Mapping[str, Any], *,
                 progress: bool = False, identity: Mapping[str, Any] | None = None) -> None:
        from pcad import distributed as dist

        self.desc, self.epochs, self.state = desc, int(epochs), dict(state)
        self.progress = bool(progress) and dist.is_main()
        self.session = _SESSION.get()
        self.identity = _jsonable({"loop": desc, "epochs": self.epochs, **(identity or {})})
        self.history: list[float] = []
        self.rows: list[list[Any]] = []
        self.start, self._elapsed0, self._t0 = 0, 0.0, time.perf_counter()
        self._write = self.session is not None and dist.is_main()
        if self.session is not None and self.session.resume:
            self._restore()

    def _restore(self) -> None:
        ckpt = check_resume(self.session.folder, self.session.run)
        path = self.session.folder / CHECKPOINT_FILE
        diff = _differences(ckpt.get("loop", {}), self.identity)
        if diff:
            raise InvalidInputError(f"--resume: {path} is from another training loop "
                                    f"({'; '.join(diff[:4])}); use --overwrite")
        for name, obj in self.state.items():
            if name not in ckpt["state"]:
                raise InvalidInputError(f"--resume: {path} holds no state {name!r}")
            _set_state(obj, ckpt["state"][name])
        torch.set_rng_state(ckpt["rng"])
        if torch.cuda.is_available() and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.start = int(ckpt["epoch"])
        self.history = [float(x) for x in ckpt["history"]]
        self.rows = [list(r) for r in ckpt["rows"]]
        self._elapsed0 = float(ckpt["seconds"])

    def __iter__(self) -> Iterator[int]:
        from tqdm import tqdm

        self._bar = tqdm(range(self.start, self.epochs), disable=not self.progress,
                         desc=self.desc, unit="epoch", initial=self.start, total=self.epochs)
        self._t0 = time.perf_counter()
        try:
            yield from self._bar
        finally:
            self._bar.close()

    def end_epoch(self, loss: float, *, steps: int, lr: float) -> None:
        """Record the epoch just finished (its mean ``loss``, optimizer ``steps`` so far in all,
        the ``lr`` of its last step): postfix, log row, checkpoint."""
        epoch = len(self.history)
        self.history.append(float(loss))
        seconds = self._elapsed0 + time.perf_counter() - self._t0
        self.rows.append([epoch + 1, int(steps), float(loss), float(lr), round(seconds, 3)])
        bar = getattr(self, "_bar", None)
        if bar is not None and self.progress:
            bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}")
        if not self._write:
            return
        from pcad.io import atomic_save

        folder = self.session.folder
        write_train_log(folder / LOG_FILE, self.rows)
        ckpt = {"run": json.dumps(self.session.run, sort_keys=True), "loop": self.identity,
                "epoch": epoch + 1, "history": list(self.history), "rows": self.rows,
                "seconds": seconds, "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "state": {name: _get_state(obj) for name, obj in self.state.items()}}
        atomic_save(folder / CHECKPOINT_FILE, lambda tmp: torch.save(ckpt, tmp))
