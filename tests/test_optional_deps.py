"""pcad without open3d, trimesh, noise, fpsample and plotly (a bare GPU machine, issue 13):
the detector/engine/data import chain and an m3dm fit + predict with the Point-MAE feature run
in a child process where importing those packages raises ImportError; and the scipy DBSCAN of
the largest-cluster step equals Open3D's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pcad.data.preprocess import PreprocessOptions, dbscan_labels, largest_cluster_mask
from tests.test_m3dm_lsfa import tiny_point_checkpoint

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("open3d", "trimesh", "noise", "fpsample", "plotly")
CATEGORY = "plate"

BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    BLOCKED = {BLOCKED!r}
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {{name}}")
            return None
    sys.meta_path.insert(0, _Block())
    for _m in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
        del sys.modules[_m]
""")

CHILD = BLOCKER + textwrap.dedent("""
    import json
    data, weights = sys.argv[1], sys.argv[2]
    import pcad.data, pcad.detectors, pcad.engine  # noqa: F401
    import synth
    from pcad.detectors import create_detector
    from pcad.engine import open_split
    import torch
    noise2 = synth.pnoise2(torch.rand(100), torch.rand(100), octaves=2)
    det = create_detector("m3dm", image_size=64, point_backbone="pointmae",
                          point_weights=weights, num_group=32, group_size=8, epochs=1,
                          batch_size=4, device="cpu")
    det.fit(list(open_split(data, "plate", "train", det)))
    score, amap = det.predict(open_split(data, "plate", "test", det)[0])
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
    print(json.dumps({"score": float(score), "map": list(amap.shape), "loaded": loaded,
                      "noise": bool(torch.isfinite(noise2).all())}))
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "nodeps", CATEGORY, train=4, test_good=1,
                        test_defect=1, defects=("dent",))


def _child(code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_blocker_blocks():
    proc = _child(BLOCKER + "import open3d\n")
    assert proc.returncode != 0 and "blocked for this test: open3d" in proc.stderr


def test_pointmae_m3dm_without_optional_packages(data, tmp_path):
    weights = tiny_point_checkpoint(tmp_path / "tiny.pth")
    proc = _child(CHILD, str(data), str(weights))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["noise"]
    assert np.isfinite(out["score"]) and out["map"] == [64, 64]


def test_preprocess_without_open3d():
    """The whole M3DM chain (plane removal, padding, largest cluster) runs with open3d
    blocked, through the scipy DBSCAN."""
    code = BLOCKER + textwrap.dedent("""
        import numpy as np
        from pcad.data.preprocess import PreprocessOptions, preprocess_scan
        yy, xx = np.mgrid[:30, :50].astype(np.float32)
        xyz = np.stack([xx * 0.002, yy * 0.002, np.full_like(xx, 0.5)], -1)
        xyz[10:20, 20:30, 2] -= 0.02
        xyz[2, 2, 2] -= 0.05  # a lone point: not the largest cluster
        out = preprocess_scan(xyz, options=PreprocessOptions(multiple=10, eps=0.005,
                                                             min_points=5))
        print(int(np.any(out.xyz != 0, axis=-1).sum()))
    """)
    proc = _child(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "100"


# ------------------------------------------------------------------ DBSCAN: scipy vs Open3D


@pytest.mark.parametrize(("eps", "min_points"), [(0.05, 3), (0.06, 4), (0.08, 8)])
def test_dbscan_scipy_equals_open3d(eps, min_points):
    """Random points near the percolation threshold: hundreds of clusters, many border points
    shared between clusters, noise. The labels must agree exactly (tolerance: none; only
    pairs at a distance equal to eps up to rounding could differ, and there are none here)."""
    pytest.importorskip("open3d")
    pts = np.random.default_rng(1).random((4000, 3))
    want = dbscan_labels(pts, eps, min_points, backend="open3d")
    got = dbscan_labels(pts, eps, min_points, backend="scipy")
    assert want.max() >= 1 and (want == -1).any()
    np.testing.assert_array_equal(got, want)


def test_largest_cluster_mask_scipy_equals_open3d(organized_scan):
    """Foreground masks of the largest-cluster step: identical with both backends (stated
    tolerance: 0 differing pixels)."""
    pytest.importorskip("open3d")
    scan = organized_scan.copy()
    scan[:3, :3] = scan[:3, :3] + 10.0  # a far-away clump
    masks = [largest_cluster_mask(scan, PreprocessOptions(eps=0.05, min_points=4,
                                                          relative=True, cluster_backend=b))
             for b in ("open3d", "scipy")]
    assert masks[0].any() and not masks[0].all()
    np.testing.assert_array_equal(masks[1], masks[0])


def test_dbscan_scipy_small_cases():
    p = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5, 0, 0], [5.05, 0, 0]], float)
    assert dbscan_labels(p, 0.15, 2, backend="scipy").tolist() == [0, 0, 0, 1, 1]
    assert dbscan_labels(p, 0.15, 3, backend="scipy").tolist() == [0, 0, 0, -1, -1]
    # a point at exactly eps is outside (Open3D's radius search is strict)
    assert dbscan_labels(np.array([[0, 0, 0], [1.0, 0, 0]]), 1.0, 2,
                         backend="scipy").tolist() == [-1, -1]
    assert dbscan_labels(np.zeros((0, 3)), 0.1, 2, backend="scipy").shape == (0,)


def test_cluster_backend_is_checked():
    from pcad.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="cluster_backend"):
        PreprocessOptions(cluster_backend="cuml")
