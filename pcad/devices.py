"""Device names of pcad's ``device`` options and ``--device`` flags, checked without torch.

A device is ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
:func:`check_device` checks the spelling only (this module imports no torch, so the command
line can check ``--device`` while it parses); whether the device is present is
:func:`pcad.detectors.patches.resolve_device`'s question. :func:`cuda_devices` lists the CUDA
GPUs torch can use, from the installed files and the NVIDIA driver's ``/proc`` entries where
they tell (``pcad info`` reports devices without importing torch).

Example:
    >>> from pcad.devices import check_device
    >>> check_device("cuda:0"), check_device("auto")
    ('cuda:0', 'auto')
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcad.errors import InvalidInputError

__all__ = ["DEVICE_HELP", "DEVICES", "check_device", "cuda_devices", "nvidia_gpus",
           "torch_build"]

#: the device names besides ``"cuda:N"``
DEVICES = ("auto", "cpu", "cuda")
#: what a ``--device`` flag's help says
DEVICE_HELP = ("where features are computed: auto (CUDA when available), cpu, cuda or cuda:N "
               "(default: auto, or the -o device= / run's own option)")


def check_device(value: Any, name: str = "device") -> str:
    """``value`` checked as a device name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    (any ``N >= 0``, written back without leading zeros); a ``torch.device`` is taken by its
    name. Returns the name.

    Raises:
        InvalidInputError: anything else (one line naming ``name`` and the accepted forms).

    Example:
        >>> check_device("cuda:01")
        'cuda:1'
        >>> try:
        ...     check_device("gpu")
        ... except InvalidInputError as exc:
        ...     print(exc)
        device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'
    """
    if type(value).__name__ == "device" and type(value).__module__.startswith("torch"):
        value = str(value)
    if isinstance(value, str):
        if value in DEVICES:
            return value
        head, sep, index = value.partition(":")
        if head == "cuda" and sep and index.isascii() and index.isdigit():
            return f"cuda:{int(index)}"
    raise InvalidInputError(f"{name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got "
                            f"{value!r:.60}")


#: the NVIDIA driver's per-GPU entries (Linux)
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def torch_build() -> str | None:
    """What the installed torch was built for, read from its files without importing it:
    ``"cuda"`` (``lib/libtorch_cuda.so`` or ``libc10_cuda.so``, ``torch_cuda.dll`` on
    Windows, beside torch's package), ``"cpu"`` (a ``+cpu`` version, or a ``lib`` folder with
    ``libtorch_cpu`` and no CUDA library), ``"none"`` (torch is not installed), or None when the
    files do not tell (an unusual layout, a ROCm build).

    Example:
        >>> torch_build() in ("cuda", "cpu", "none", None)
        True
    """
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return "none"
    try:
        if importlib.metadata.version("torch").endswith("+cpu"):
            return "cpu"
    except importlib.metadata.PackageNotFoundError:
        pass
    if spec.origin is None:
        return None
    lib = Path(spec.origin).parent / "lib"
    try:
        names = {p.name for p in lib.iterdir()}
    except OSError:
        return None
    if names & {"libtorch_cuda.so", "libc10_cuda.so", "torch_cuda.dll", "c10_cuda.dll"}:
        return "cuda"
    if any(n.startswith(("libtorch_hip", "libc10_hip", "torch_hip")) for n in names):
        return None  # ROCm: torch.cuda runs on HIP; only torch can tell
    if names & {"libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"}:
        return "cpu"
    return None


def nvidia_gpus(proc: Path = NVIDIA_PROC, dev: Path = Path("/dev"),
                env: Mapping[str, str] | None = None) -> list[str] | None:
    """Names of the NVIDIA GPUs CUDA would number ``cuda:0``, ``cuda:1``, ..., read from the
    driver's files (``PROC/<bus id>/information``: ``Model:``, ``Device Minor:``, ``GPU
    Excluded:``), without CUDA: the GPUs the driver lists, not excluded, whose
    ``DEV/nvidia<minor>`` this process may open, filtered by ``CUDA_VISIBLE_DEVICES`` (of
    ``env``, by default ``os.environ``).

    Returns ``[]`` on Linux without the driver (no ``PROC``, and no ``DEV/nvidiactl``,
    ``nvidia0`` or WSL's ``dxg``), and None when the files cannot tell: not Linux, WSL, a
    sandbox that shows the device nodes but not ``PROC``, unreadable or unexpected entries,
    ``CUDA_VISIBLE_DEVICES`` other than indices, or GPUs of different models whose CUDA order
    (fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) is not the bus order. Whether the
    driver is recent enough for torch's CUDA is not checked.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "gpus" / "0000:01:00.0").mkdir(parents=True)
        >>> _ = (root / "gpus" / "0000:01:00.0" / "information").write_text(
        ...     "Model: \\t NVIDIA H200\\nDevice Minor: \\t 0\\nGPU Excluded: \\t No\\n")
        >>> _ = (root / "nvidia0").write_text("")
        >>> found = nvidia_gpus(root / "gpus", root, env={})
        >>> found if sys.platform.startswith("linux") else ["NVIDIA H200"]
        ['NVIDIA H200']
        >>> nvidia_gpus(root / "gpus", root, env={"CUDA_VISIBLE_DEVICES": ""}) in ([], None)
        True
    """
    if not sys.platform.startswith("linux"):
        return None
    if not proc.is_dir():  # no driver, unless its files are hidden (WSL's dxg, a sandbox)
        nodes = ("dxg", "nvidiactl", "nvidia0")
        return None if any((dev / node).exists() for node in nodes) else []
    gpus: list[tuple[str, str]] = []  # (bus id, model)
    try:
        for entry in sorted(proc.iterdir()):
            fields = {}
            for line in (entry / "information").read_text().splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    fields[key.strip()] = value.strip()
            model, minor = fields.get("Model"), fields.get("Device Minor", "")
            if not model or not minor.isdigit():
                return None
            if fields.get("GPU Excluded", "No").lower() == "yes":
                continue
            node = dev / f"nvidia{int(minor)}"
            if node.exists() and os.access(node, os.R_OK | os.W_OK):
                gpus.append((entry.name.lower(), model))
    except OSError:
        return None
    env = os.environ if env is None else env
    if len({model for _, model in gpus}) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return None
    names = [model for _, model in gpus]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return names
    if not visible.strip():
        return []
    picks = [p.strip() for p in visible.split(",")]
    if not all(p.isascii() and p.isdigit() for p in picks):
        return None  # UUIDs, MIG instances, a -1 that ends the list: only CUDA can tell
    index = [int(p) for p in picks]
    if len(set(index)) != len(index) or any(i >= len(names) for i in index):
        return None
    return [names[i] for i in index]


def cuda_devices() -> list[str]:
    """Names of the CUDA devices torch can use here, in index order (``cuda:0`` first); ``[]``
    when there is none. Answered without importing torch when the files tell
    (:func:`torch_build` is ``"cpu"`` or ``"none"``, or ``"cuda"`` and :func:`nvidia_gpus`
    answers); otherwise by importing torch (``torch.cuda.device_count``, ``get_device_name``).

    Example:
        >>> all(isinstance(name, str) for name in cuda_devices())
        True
    """
    build = torch_build()
    if build in ("cpu", "none"):
        return []
    if build == "cuda":
        found = nvidia_gpus()
        if found is not None:
            return found
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a torch that cannot start CUDA has no CUDA device
        return []
