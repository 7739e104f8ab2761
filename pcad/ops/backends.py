"""Backends of :mod:`pcad.ops`: which are installed, which one ``backend="auto"`` picks.

Backends (an op implements a subset, see :data:`OP_BACKENDS`):

==================  ==========  ==============================================================
name                devices     what
==================  ==========  ==============================================================
``torch``           cpu, cuda   pure-torch reference: the contract every other backend meets
``numba``           cpu         compiled kd-tree kernels (exact, equal to the reference)
``scipy``           cpu         ``scipy.spatial.cKDTree`` (kNN; distances recomputed exactly)
``fpsample``        cpu         ``fpsample`` bucket FPS (QuickFPS); see :func:`pcad.ops.fps`
``torch_cluster``   cpu, cuda   ``torch_cluster`` when importable (fps, knn)
``pointnet2_ops``   cuda        ``pointnet2_ops`` when importable (fps, ball query, three_nn)
``triton``          cuda        pcad's Triton kernels (:mod:`pcad.ops._triton`), exact; CPU
                                tensors only under Triton's interpreter (``TRITON_INTERPRET=1``)
==================  ==========  ==============================================================

Optional packages are probed lazily, once, with ``import`` inside ``try/except Exception``
(a broken build raises ``OSError`` or ``RuntimeError``, not only ``ImportError``);
``pointnet2_ops`` is probed only when CUDA is available and its compiled ``_ext`` module is
present, because importing it without one starts a JIT compilation.

This module imports torch only inside the functions that need it (parsing a ``torch.device``,
asking ``torch.cuda``), so its tables and :func:`env_backend` cost no torch import. With
``static=True``, :func:`usable`, :func:`available_backends` and :func:`resolve_backend` answer
from the installed files alone (:func:`installed`: ``importlib.util.find_spec``, nothing
imported) and the CUDA devices of :func:`pcad.devices.cuda_devices`, or a given ``cuda``: the
same rules and answers as the import probe, short of catching an installed package that fails
to import (``pcad info`` reports backends this way).

``backend="auto"`` takes the first available backend of :data:`AUTO_ORDER` for the op and the
tensor's device type. The environment variable ``PCAD_OPS_BACKEND`` overrides ``"auto"``
(never an explicit ``backend=`` argument): either one name (``PCAD_OPS_BACKEND=torch``), used
by every op that implements it (the others stay on auto), or per-op names
(``PCAD_OPS_BACKEND="fps=numba,knn=torch"``). A forced backend that is not installed, or does
not run on the tensor's device, raises :class:`BackendUnavailableError`.

Example:
    >>> from pcad.ops import available_backends
    >>> "torch" in available_backends("cpu")
    True
    >>> available_backends("cpu", op="fps")[0]
    'numba'
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import os
import re
import warnings
from typing import TYPE_CHECKING

from pcad.errors import InvalidInputError, PcadError

if TYPE_CHECKING:
    import torch

ENV_VAR = "PCAD_OPS_BACKEND"

BACKENDS = ("torch", "numba", "scipy", "fpsample", "torch_cluster", "pointnet2_ops", "triton")

DEVICES: dict[str, tuple[str, ...]] = {
    "torch": ("cpu", "cuda"),
    "numba": ("cpu",),
    "scipy": ("cpu",),
    "fpsample": ("cpu",),
    "torch_cluster": ("cpu", "cuda"),
    "pointnet2_ops": ("cuda",),
    "triton": ("cuda", "cpu"),  # cpu: through the interpreter only (see usable)
}

OP_BACKENDS: dict[str, tuple[str, ...]] = {
    "fps": ("torch", "numba", "fpsample", "torch_cluster", "pointnet2_ops", "triton"),
    "knn": ("torch", "numba", "scipy", "torch_cluster", "triton"),
    "ball_query": ("torch", "numba", "pointnet2_ops", "triton"),
    "three_nn": ("torch", "numba", "scipy", "torch_cluster", "pointnet2_ops", "triton"),
}

# Fastest first. fpsample is never picked by "auto": its start index is not honoured (see fps);
# nor is triton on the CPU (its interpreter is for tests).
AUTO_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    ("fps", "cpu"): ("numba", "torch_cluster", "torch"),
    ("fps", "cuda"): ("triton", "pointnet2_ops", "torch_cluster", "torch"),
    ("knn", "cpu"): ("numba", "scipy", "torch_cluster", "torch"),
    ("knn", "cuda"): ("triton", "torch_cluster", "torch"),
    ("ball_query", "cpu"): ("numba", "torch"),
    ("ball_query", "cuda"): ("triton", "pointnet2_ops", "torch"),
    ("three_nn", "cpu"): ("numba", "scipy", "torch_cluster", "torch"),
    ("three_nn", "cuda"): ("triton", "pointnet2_ops", "torch_cluster", "torch"),
}

_MODULES = {
    "numba": "numba",
    "scipy": "scipy.spatial",
    "fpsample": "fpsample",
    "torch_cluster": "torch_cluster",
    "pointnet2_ops": "pointnet2_ops.pointnet2_utils",
    "triton": "triton",
}

_INSTALL = {
    "numba": "pip install numba",
    "scipy": "pip install scipy",
    "fpsample": "pip install fpsample",
    "torch_cluster": "pip install --no-build-isolation torch-cluster (needs a compiler)",
    "pointnet2_ops": (
        "pip install 'git+https://github.com/erikwijmans/Pointnet2_PyTorch.git"
        "#subdirectory=pointnet2_ops_lib' (needs nvcc)"
    ),
    "triton": "pip install triton (CUDA builds of torch install it)",
}


class BackendUnavailableError(PcadError, RuntimeError):
    """A backend was asked for (by argument or ``PCAD_OPS_BACKEND``) but cannot run here."""


@functools.cache
def probe(name: str) -> tuple[bool, str]:
    """``(installed, reason)`` of a backend, probed once per process."""
    if name not in BACKENDS:
        return False, f"unknown backend {name!r}"
    if name == "torch":
        return True, ""
    if name == "pointnet2_ops":
        import torch

        if not torch.cuda.is_available():
            return False, "pointnet2_ops runs on CUDA only and CUDA is not available"
        try:
            if importlib.util.find_spec("pointnet2_ops") is None:
                return False, "pointnet2_ops is not installed"
            if importlib.util.find_spec("pointnet2_ops._ext") is None:
                return False, "pointnet2_ops has no compiled _ext (importing it would JIT-compile)"
        except (ImportError, ValueError) as exc:
            return False, f"pointnet2_ops cannot be found: {exc!r}"
    try:
        importlib.import_module(_MODULES[name])
    except ImportError as exc:
        return False, f"{name} is not installed ({exc})"
    except Exception as exc:  # a broken build: undefined symbol, CUDA version mismatch...
        warnings.warn(f"pcad.ops: {name} is installed but fails to import: {exc!r}",
                      RuntimeWarning, stacklevel=2)
        return False, f"{name} fails to import: {exc!r}"
    return True, ""


def _find(module: str) -> str | None:
    """None when ``module`` (dotted) is installed, found by its files without importing
    anything (not even its parent packages); else the first dotted prefix that is missing."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        spec = None
    for i, part in enumerate(parts[1:], start=1):
        if spec is None:
            return ".".join(parts[:i])
        locations = spec.submodule_search_locations
        spec = (importlib.machinery.PathFinder.find_spec(part, list(locations))
                if locations else None)
    return None if spec is not None else module


def installed(name: str, cuda: bool | None = None) -> tuple[bool, str]:
    """``(installed, reason)`` of a backend from its files alone, importing nothing: what
    :func:`probe` answers for a working install (``cuda``: whether CUDA is available, for
    ``pointnet2_ops``; None asks :func:`pcad.devices.cuda_devices`).

    Example:
        >>> installed("torch"), installed("nonesuch")
        ((True, ''), (False, "unknown backend 'nonesuch'"))
    """
    if name not in BACKENDS:
        return False, f"unknown backend {name!r}"
    if name == "torch":
        return True, ""
    if name == "pointnet2_ops":
        if not _cuda_available(cuda, static=True):
            return False, "pointnet2_ops runs on CUDA only and CUDA is not available"
        if _find("pointnet2_ops") is not None:
            return False, "pointnet2_ops is not installed"
        if _find("pointnet2_ops._ext") is not None:
            return False, "pointnet2_ops has no compiled _ext (importing it would JIT-compile)"
    missing = _find(_MODULES[name])
    if missing is not None:
        return False, f"{name} is not installed (No module named {missing!r})"
    return True, ""


def _cuda_available(cuda: bool | None, static: bool) -> bool:
    if cuda is not None:
        return cuda
    if static:
        from pcad.devices import cuda_devices

        return bool(cuda_devices())
    import torch

    return bool(torch.cuda.is_available())


_DEVICE_NAME = re.compile(r"(cpu|cuda)(:(0|[1-9][0-9]*))?")


def _device_type(device: torch.device | str) -> str:
    if isinstance(device, str) and _DEVICE_NAME.fullmatch(device):
        return device.partition(":")[0]  # what torch.device(device).type says, without torch
    import torch

    return torch.device(device).type


def usable(name: str, device_type: str, *, static: bool = False,
           cuda: bool | None = None) -> tuple[bool, str]:
    """``(usable, reason)``: installed and able to run on tensors of ``device_type``.

    ``static``: judge from the installed files (:func:`installed`) instead of importing the
    backend (:func:`probe`); ``cuda``: whether CUDA is available (None: ask torch, or
    :func:`pcad.devices.cuda_devices` when ``static``).

    Example:
        >>> usable("numba", "cuda")
        (False, 'numba runs on cpu tensors only')
        >>> usable("torch", "cpu", static=True)
        (True, '')
    """
    if device_type not in DEVICES.get(name, ()):
        return False, f"{name} runs on {'/'.join(DEVICES.get(name, ()))} tensors only"
    if name == "triton" and device_type == "cpu" and not triton_interpreted():
        return False, "triton runs CPU tensors only through its interpreter (TRITON_INTERPRET=1)"
    if name == "triton" and device_type == "cuda" and not _cuda_available(cuda, static):
        return False, "triton: CUDA is not available"
    ok, reason = installed(name, cuda) if static else probe(name)
    if ok and name == "torch_cluster" and device_type == "cuda":
        if static:
            ok = _find("torch_cluster._version_cuda") is None
            return ok, "" if ok else "torch_cluster was built without CUDA"
        return _torch_cluster_has_cuda()
    return ok, reason


def triton_interpreted() -> bool:
    """Whether Triton kernels run through Triton's interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def _torch_cluster_has_cuda() -> tuple[bool, str]:
    import torch

    try:
        ok = int(torch.ops.torch_cluster.cuda_version()) != -1
    except Exception as exc:  # an old build without the op
        return False, f"torch_cluster: cannot tell its CUDA support ({exc!r})"
    return ok, "" if ok else "torch_cluster was built without CUDA"


def available_backends(device: torch.device | str = "cpu", op: str | None = None, *,
                       static: bool = False, cuda: bool | None = None) -> list[str]:
    """Installed backends that run on ``device``.

    With ``op`` (``"fps"``, ``"knn"``, ``"ball_query"``, ``"three_nn"``): those implementing
    it, in the order ``backend="auto"`` prefers (the first is the one it picks), followed by
    those it never picks. Without ``op``: every usable backend, in :data:`BACKENDS` order.
    ``static``, ``cuda``: as in :func:`usable`.
    """
    dev = _device_type(device)
    if op is None:
        return [b for b in BACKENDS if usable(b, dev, static=static, cuda=cuda)[0]]
    _check_op(op)
    order = list(AUTO_ORDER.get((op, dev), ()))
    order += [b for b in OP_BACKENDS[op] if b not in order]
    return [b for b in order if usable(b, dev, static=static, cuda=cuda)[0]]


def _check_op(op: str) -> None:
    if op not in OP_BACKENDS:
        raise InvalidInputError(f"op: unknown op {op!r}, expected one of {sorted(OP_BACKENDS)}")


def env_backend(op: str) -> str | None:
    """The backend that ``PCAD_OPS_BACKEND`` forces for ``op``, or None."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    if "=" not in raw:
        _check_name(raw, ENV_VAR)
        return raw if raw in OP_BACKENDS[op] else None
    forced = None
    for part in raw.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in OP_BACKENDS:
            raise InvalidInputError(
                f"{ENV_VAR}: expected 'name' or 'op=name,...' with op in "
                f"{sorted(OP_BACKENDS)}, got {raw!r}"
            )
        _check_name(value, ENV_VAR)
        if key == op:
            forced = value
    return forced


def _check_name(name: str, where: str) -> None:
    if name not in BACKENDS:
        raise InvalidInputError(
            f"{where}: unknown backend {name!r}, expected 'auto' or one of {list(BACKENDS)}"
        )


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (half types compute in float32).

    Example:
        >>> import torch
        >>> compute_dtype(torch.zeros(2, dtype=torch.float16), torch.zeros(2))
        torch.float32
    """
    import torch

    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def resolve_backend(
    op: str, backend: str, device: torch.device | str, skip: tuple[str, ...] = (), *,
    static: bool = False, cuda: bool | None = None,
) -> str:
    """The backend that runs ``op`` on ``device`` for the ``backend`` argument.

    ``skip``: backends that ``"auto"`` must pass over for this call (e.g. torch_cluster's
    CUDA kNN for ``k > 100``); an explicit or forced choice is not affected. ``static``,
    ``cuda``: as in :func:`usable` (``static=True`` imports neither torch nor a backend when
    ``device`` is a name such as ``"cpu"`` or ``"cuda:0"``).

    Example:
        >>> resolve_backend("fps", "torch", "cpu")
        'torch'
        >>> auto = resolve_backend("knn", "auto", "cpu")
        >>> resolve_backend("knn", "auto", "cpu", static=True) == auto
        True
    """
    _check_op(op)
    dev = _device_type(device)
    if not isinstance(backend, str):
        raise InvalidInputError(f"backend: expected a string, got {backend!r}")
    forced_by = "backend"
    if backend == "auto":
        forced = env_backend(op)
        if forced is None:
            for name in AUTO_ORDER.get((op, dev), ()):
                if name not in skip and usable(name, dev, static=static, cuda=cuda)[0]:
                    return name
            return "torch"
        backend, forced_by = forced, ENV_VAR
    _check_name(backend, forced_by)
    if backend not in OP_BACKENDS[op]:
        raise InvalidInputError(
            f"{forced_by}: backend {backend!r} does not implement {op}; "
            f"choose from {list(OP_BACKENDS[op])}"
        )
    if dev not in DEVICES[backend]:
        raise BackendUnavailableError(
            f"{forced_by}: backend {backend!r} runs on {'/'.join(DEVICES[backend])} tensors, "
            f"got a {dev} tensor"
        )
    ok, reason = usable(backend, dev, static=static, cuda=cuda)
    if not ok:
        hint = f"; install it with {_INSTALL[backend]}" if backend in _INSTALL else ""
        raise BackendUnavailableError(f"{forced_by}: backend {backend!r} unavailable: "
                                      f"{reason}{hint}")
    return backend
