"""``pcad info``: versions of the key packages, point-op backends and devices.

The point-op backends reported are the ones the ops really run with ``backend="auto"``, per
op and device (:func:`op_backends`: :func:`pcad.ops.backends.resolve_backend`, so the
environment variable ``PCAD_OPS_BACKEND`` counts), with every installed backend beside them.

Nothing here imports torch, numba or faiss (``pcad info`` starts in a fraction of a second):
packages are found by their files (``importlib.metadata``, ``importlib.util.find_spec``), the
backends by ``resolve_backend(..., static=True)`` and the CUDA devices by
:func:`pcad.devices.cuda_devices` (which imports torch only where the files cannot tell). An
installed package that fails to import is reported as installed; the ops' own import probe
still catches it when they run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
from typing import Any

PACKAGES = ("numpy", "scipy", "torch", "open3d", "trimesh", "noise", "numba", "plotly",
            "matplotlib", "tifffile", "pillow", "faiss-cpu", "torch-cluster", "pointnet2-ops",
            "triton")
MODULES = {"pillow": "PIL", "faiss-cpu": "faiss", "torch-cluster": "torch_cluster",
           "pointnet2-ops": "pointnet2_ops"}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    """Whether top-level ``module`` is installed, from its files (nothing imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def op_backends(device_types: list[str], cuda: bool | None = None) -> dict[str, dict[str, str]]:
    """``{device type: {op: backend}}``: the backend each :mod:`pcad.ops` op runs with
    ``backend="auto"`` on that device (an error message in place of a name when
    ``PCAD_OPS_BACKEND`` forces one that cannot run there), judged from the installed files
    (``resolve_backend(..., static=True)``; ``cuda``: whether CUDA is available, None to
    find out).

    Example:
        >>> from pcad.ops.backends import resolve_backend
        >>> op_backends(["cpu"])["cpu"]["fps"] == resolve_backend("fps", "auto", "cpu")
        True
    """
    from pcad.errors import PcadError
    from pcad.ops.backends import OP_BACKENDS, resolve_backend

    out: dict[str, dict[str, str]] = {}
    for dev in device_types:
        out[dev] = {}
        for op in OP_BACKENDS:
            try:
                out[dev][op] = resolve_backend(op, "auto", dev, static=True, cuda=cuda)
            except PcadError as exc:
                out[dev][op] = f"error: {exc}"
    return out


def collect() -> dict[str, Any]:
    """Everything ``pcad info`` reports, as a dict."""
    from pcad import __version__
    from pcad.devices import cuda_devices
    from pcad.ops.backends import available_backends

    versions = {name: _version(name) for name in PACKAGES}
    gpus = cuda_devices()
    cuda = bool(gpus)
    devices = ["cpu"] + [f"cuda:{i} ({name})" for i, name in enumerate(gpus)]
    kinds = ["cpu"] + (["cuda"] if cuda else [])
    faiss = _installed("faiss")
    backends = {
        "perlin": ["numpy"] + (["numba"] if _installed("numba") else [])
        + (["torch"] if versions["torch"] else []),
        # what backend="auto" runs, per device and op; then every usable backend per device
        "point_ops": op_backends(kinds, cuda),
        "point_ops_installed": {dev: available_backends(dev, static=True, cuda=cuda)
                                for dev in kinds},
        # the memory banks' search (pcad.memory.NearestNeighbours, backend "auto")
        "nearest_neighbours": {dev: "faiss" if faiss and dev == "cpu" else "torch"
                               for dev in kinds},
    }
    return {"pcad": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions, "backends": backends,
            "devices": devices}


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"pcad {info['pcad']}  (Python {info['python']}, {info['platform']})")
    print("packages:")
    for name, ver in info["packages"].items():
        print(f"  {name:<14} {ver or '-- not installed'}")
    print("backends:")
    b = info["backends"]
    print(f"  {'perlin':<19} {', '.join(b['perlin'])}")
    for dev, ops in b["point_ops"].items():
        used = ", ".join(f"{op} {name}" for op, name in ops.items())
        print(f"  {'point_ops ' + dev:<19} {used} (installed: "
              f"{', '.join(b['point_ops_installed'][dev])})")
    nn = ", ".join(f"{dev} {name}" for dev, name in b["nearest_neighbours"].items())
    print(f"  {'nearest_neighbours':<19} {nn}")
    print(f"devices: {', '.join(info['devices'])}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, backends and devices")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
