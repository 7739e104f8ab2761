"""``pcad info``: versions of the key packages, point-op backends and devices."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
from typing import Any

PACKAGES = ("numpy", "scipy", "torch", "open3d", "trimesh", "noise", "numba", "plotly",
            "matplotlib", "tifffile", "pillow", "faiss-cpu", "torch-cluster", "pointnet2-ops")
MODULES = {"pillow": "PIL", "faiss-cpu": "faiss", "torch-cluster": "torch_cluster",
           "pointnet2-ops": "pointnet2_ops"}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def collect() -> dict[str, Any]:
    """Everything ``pcad info`` reports, as a dict."""
    from pcad import __version__

    versions = {name: _version(name) for name in PACKAGES}
    devices = ["cpu"]
    cuda = False
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                    for i in range(torch.cuda.device_count())] if cuda else []
    except Exception:  # noqa: BLE001
        pass
    backends = {
        "perlin": ["numpy"] + (["numba"] if _importable("numba") else [])
        + (["torch"] if versions["torch"] else []),
        "point_ops": ["torch"]
        + (["torch_cluster"] if _importable("torch_cluster") else [])
        + (["pointnet2_ops"] if cuda and _importable("pointnet2_ops") else []),
        "nearest_neighbours": ["torch"] + (["faiss"] if _importable("faiss") else []),
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
    for op, names in info["backends"].items():
        print(f"  {op:<19} {', '.join(names)}")
    print(f"devices: {', '.join(info['devices'])}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, backends and devices")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
