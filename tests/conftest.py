"""Shared fixtures: seeded clouds, small meshes and the real CAD meshes of ../shared."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:  # imported by the fixture: tests/test_ops.py runs where trimesh is absent
    import trimesh

SHARED_MESHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"
MESH_SUFFIXES = (".stl", ".ply", ".obj", ".off")


def shared_mesh_paths() -> list[Path]:
    """The real third-party meshes, or [] when the shared folder is absent."""
    if not SHARED_MESHES.is_dir():
        return []
    return sorted(p for p in SHARED_MESHES.iterdir() if p.suffix.lower() in MESH_SUFFIXES)


@pytest.fixture
def sphere_cloud() -> tuple[np.ndarray, np.ndarray]:
    """4000 points on the unit sphere and their exact outward normals (float32)."""
    rng = np.random.default_rng(123)
    p = rng.normal(size=(4000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p.astype(np.float32), p.astype(np.float32)


@pytest.fixture
def box_mesh() -> trimesh.Trimesh:
    import trimesh

    return trimesh.creation.box(extents=[2.0, 1.0, 0.5])


@pytest.fixture
def organized_scan() -> np.ndarray:
    """A (60, 80, 3) float32 wavy surface seen from a camera at the origin; rows 0-4 and a
    block of pixels have no measurement (zeros)."""
    yy, xx = np.mgrid[:60, :80].astype(np.float32)
    xyz = np.zeros((60, 80, 3), np.float32)
    xyz[..., 0] = (xx - 40) * 0.01
    xyz[..., 1] = (yy - 30) * 0.01
    xyz[..., 2] = 1.0 + 0.03 * np.sin(xx / 9.0) + 0.02 * np.cos(yy / 7.0)
    xyz[:5] = 0.0
    xyz[40:46, 10:20] = 0.0
    return xyz


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: on a busy 2-core machine under ``-n 2`` the OpenMP
    pools of two workers oversubscribe the cores and small torch ops get up to 100x slower;
    results are the same. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny_dataset(tmp_path_factory, name: str, category: str, **config) -> Path:
    """A small generated dataset (64 x 64, seed 0, no validation split unless ``config`` says
    otherwise) under a fresh temporary folder; returns its root. Torch is set back to one
    thread afterwards: numba's OpenMP layer in the generator resets the thread count."""
    import torch

    from synth.dataset import DatasetConfig, generate

    root = tmp_path_factory.mktemp(name) / "synth"
    kw = {"categories": (category,), "validation": 0, "size": (64, 64), "seed": 0, **config}
    generate(DatasetConfig(**kw), root, progress=False)
    torch.set_num_threads(1)
    return root


@pytest.fixture(scope="session")
def tiny_dataset():
    """The factory :func:`_tiny_dataset` (``tiny_dataset(tmp_path_factory, name, category,
    **config) -> root``), for the modules' own dataset fixtures."""
    return _tiny_dataset


#: the small training of each modality detector fitted on :func:`plate_bumps` (with
#: ``modality="both"``, 64 px): what their quality floors were measured with
PLATE_BUMPS_FIT: dict[str, dict] = {"vitad": {"epochs": 20}, "uniad": {"epochs": 20},
                                    "pbas": {}, "prototypes-ot": {},
                                    "onenip": {"epochs": 20, "variants": 2},
                                    "fader": {"epochs": 20},
                                    "hetnet": {}}


@pytest.fixture(scope="session")
def plate_bumps(tmp_path_factory) -> Path:
    """64 x 64 plates: 6 train, 4 good + 4 bump test samples (the modality detectors' data)."""
    return _tiny_dataset(tmp_path_factory, "plate_bumps", "plate", train=6, test_good=4,
                         test_defect=4, defects=("bump",))


@pytest.fixture(scope="session")
def plate_bumps_test(plate_bumps) -> list:
    """The test samples of :func:`plate_bumps` (RGB and clouds)."""
    from pcad.data import MVTec3DDataset

    return list(MVTec3DDataset(plate_bumps, "plate", "test", modality="rgb+xyz"))


@pytest.fixture(scope="session")
def plate_bumps_fit(plate_bumps):
    """``fitted(name)``: detector ``name`` fitted once per session on :func:`plate_bumps`
    (RGB + FPFH patches, :data:`PLATE_BUMPS_FIT`)."""
    from pcad.detectors import create_detector
    from pcad.engine import open_split

    cache: dict = {}

    def fitted(name: str):
        if name not in cache:
            det = create_detector(name, image_size=64, modality="both", device="cpu",
                                  **PLATE_BUMPS_FIT[name])
            train = list(open_split(plate_bumps, "plate", "train", det))
            if det.needs_defect_source:  # onenip: pcad's synthesizer, as pcad train gives it
                from synth.supervision import DefectSource

                cache[name] = det.fit(train, defect_source=DefectSource(
                    **det.defect_source_options()))
            else:
                cache[name] = det.fit(train)
        return cache[name]

    return fitted
