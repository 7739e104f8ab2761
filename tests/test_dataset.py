"""Tests of the dataset generator (``synth.dataset``, ``pcad make-dataset``).

They prove its promises on tiny datasets (48x48 to 48x64 images, one or two categories, one
or two samples per split): the MVTec 3D-AD layout file by file, ground truth equal to the
renderer's documented rule, byte-identical output for any worker count, Dask or resume after
a crash, the Real3D-AD format, inject mode, real third-party meshes and the command line's
error handling.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import synth.dataset.runner as runner
import synth.dataset.sample as sample_mod
from pcad.cli.main import EXIT_ERROR, main
from pcad.geometry import foreground_mask
from pcad.io import read_mask_png, read_mesh, read_points, read_rgb, read_xyz_tiff
from synth.dataset import (
    DEFAULT_DEFECTS,
    Category,
    DatasetConfig,
    SampleTask,
    generate,
    make_sample,
    sample_seed,
)
from synth.dataset.inject import InjectConfig, inject
from synth.dataset.sample import part_mesh, render_task
from synth.render import Camera, render_sample
from synth.render.render import COMBINED_GEOMETRIC
from tests.conftest import SHARED_MESHES, shared_mesh_paths

REPO = Path(__file__).resolve().parents[1]

#: the layout test: two built-in parts, all six default defects, a non-square image
LAYOUT_CFG = DatasetConfig(categories=("gear", "cookie"), train=2, validation=1, test_good=1,
                           test_defect=1, size=(48, 64), seed=5)
#: determinism, resume and Dask: one part, geometric, hole, colour and combined defects
REF_KW = {"categories": ("gear",), "train": 2, "validation": 1, "test_good": 1,
          "test_defect": 1, "defects": ("dent", "hole", "contamination", "combined"),
          "size": (48, 48), "seed": 7}
REF_CFG = DatasetConfig(**REF_KW)
GEOMETRIC = ("bump", "dent", "crack", "hole")


# ------------------------------------------------------------------------------------ helpers


def tree(root: Path) -> dict[str, str]:
    """``relative posix path -> sha256`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[str]:
    """Leftover temporary files of pcad.io.atomic (``.<name>.<random>.tmp<ext>``)."""
    return [p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and p.name.startswith(".") and ".tmp" in p.name]


def assert_no_half_samples(root: Path) -> int:
    """Every visible sample file (rgb, xyz, gt) has its meta (the commit marker, written last);
    returns the number of finished samples."""
    n_meta = 0
    for p in root.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.parent.name in ("rgb", "xyz", "gt"):
            meta = p.parent.parent / "meta" / f"{p.stem}.json"
            assert meta.is_file(), f"{p} was written but its sample has no {meta.name}"
        elif p.parent.name == "meta":
            n_meta += 1
            for role, ext in (("rgb", ".png"), ("xyz", ".tiff")):
                assert (p.parent.parent / role / f"{p.stem}{ext}").is_file(), p
    return n_meta


def expected_mvtec_files(cfg: DatasetConfig) -> set[str]:
    """The MVTec 3D-AD layout, written out independently of ``sample_paths``."""
    files = {"dataset.json"}
    for cat in cfg.categories:
        files.add(f"{cat.name}/calibration/camera_parameters.json")
        for split, n in cfg.splits():
            for i in range(n):
                d, stem = f"{cat.name}/{split}", f"{i:03d}"
                files |= {f"{d}/rgb/{stem}.png", f"{d}/xyz/{stem}.tiff", f"{d}/meta/{stem}.json"}
                if split.startswith("test/"):
                    files.add(f"{d}/gt/{stem}.png")
    return files


def rule_terms(r, meta: dict) -> dict[str, np.ndarray]:
    """The three terms of the ground-truth rule documented in synth/render/render.py."""
    shape = r.gt.shape
    terms = {"offset": np.zeros(shape, bool), "hole": np.zeros(shape, bool),
             "stain": np.zeros(shape, bool)}
    if "geometric" in meta:
        terms["offset"] = r.offset_norm >= meta["geometric"]["threshold_abs"]
        terms["hole"] = np.asarray(r.hole, bool)
    if "contamination" in meta:
        c = meta["contamination"]
        terms["stain"] = r.stain >= c["gt_threshold"] * c["blend"]
    return terms


def rerender(task: SampleTask, cfg: DatasetConfig, meta: dict):
    """Render a sample again from its written meta (its seed after make_sample's retries)."""
    mesh, look = part_mesh(task, cfg, meta["sample_seed"])
    return render_task(task, cfg, mesh, look, meta["seed"])


def png_array(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``pcad ARGV`` in-process; return (status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def layout_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout") / "ds"
    report = generate(LAYOUT_CFG, root, progress=False)
    assert report["written"] == report["planned"] == len(LAYOUT_CFG.plan()) == 20
    assert report["skipped"] == 0
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The file hashes of a clean single-process run of REF_CFG."""
    root = tmp_path_factory.mktemp("reference") / "ds"
    generate(REF_CFG, root, workers=1, progress=False)
    out = tree(root)
    assert len(out) == len(expected_mvtec_files(REF_CFG))
    return out


# ------------------------------------------------------------------------ 1. MVTec 3D-AD layout


def test_mvtec3d_layout_file_by_file(layout_ds: Path) -> None:
    root, cfg = layout_ds, LAYOUT_CFG
    h, w = cfg.size
    assert (h, w) == (48, 64)
    assert len(cfg.defects) == 6 and set(cfg.defects) == set(DEFAULT_DEFECTS)
    files = set(tree(root))
    assert files == expected_mvtec_files(cfg)
    # no empty or extra folders: every folder holds a file of the layout
    dirs = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}
    assert dirs == {a.as_posix() for f in files for a in Path(f).parents} - {"."}
    for cat in ("gear", "cookie"):
        assert sorted(p.name for p in (root / cat).iterdir()) == [
            "calibration", "test", "train", "validation"]
        assert sorted(p.name for p in (root / cat / "test").iterdir()) == sorted(
            ["good", *DEFAULT_DEFECTS])
        for split in ("train", "validation"):
            assert sorted(p.name for p in (root / cat / split).iterdir()) == ["good"]
            assert sorted(p.name for p in (root / cat / split / "good").iterdir()) == [
                "meta", "rgb", "xyz"]
        for kind in ("good", *DEFAULT_DEFECTS):
            assert sorted(p.name for p in (root / cat / "test" / kind).iterdir()) == [
                "gt", "meta", "rgb", "xyz"]
        assert sorted(p.name for p in (root / cat / "train/good/rgb").iterdir()) == [
            "000.png", "001.png"]
        assert sorted(p.name for p in (root / cat / "train/good/xyz").iterdir()) == [
            "000.tiff", "001.tiff"]

    record = json.loads((root / "dataset.json").read_text())
    assert record["complete"] is True
    assert record["generator"] == "pcad"
    assert record["config"] == cfg.to_json()
    assert record["counts"] == {c: {"train/good": 2, "validation/good": 1, "test/good": 1,
                                    **{f"test/{d}": 1 for d in DEFAULT_DEFECTS}}
                                for c in ("gear", "cookie")}

    camera = Camera.for_size(h, w)
    for cat in ("gear", "cookie"):
        cam = json.loads((root / cat / "calibration" / "camera_parameters.json").read_text())
        assert cam == json.loads(json.dumps(camera.to_json()))
        assert (cam["height"], cam["width"]) == (48, 64)

    n_checked = 0
    for task in cfg.plan():
        d = root / task.category.name / task.split
        stem = f"{task.index:03d}"
        mode, rgb = png_array(d / "rgb" / f"{stem}.png")
        assert mode == "RGB" and rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
        assert np.array_equal(read_rgb(d / "rgb" / f"{stem}.png"), rgb)
        assert rgb.std() > 0  # an image, not a constant
        xyz = tifffile.imread(d / "xyz" / f"{stem}.tiff")
        assert xyz.shape == (h, w, 3) and xyz.dtype == np.float32
        assert np.isfinite(xyz).all()
        z = xyz[..., 2]
        invalid = z == 0
        assert np.all(xyz[invalid] == 0), "an invalid pixel must be exactly (0, 0, 0)"
        assert np.all(z[~invalid] > 0), "every valid pixel lies in front of the camera"
        assert 0.5 * h * w < (~invalid).sum() < h * w  # the plane is seen, a few dropouts
        # organized cloud in camera coordinates: pixel (row v, column u) projects onto itself
        v, u = np.nonzero(~invalid)
        uv = camera.project(xyz[v, u].astype(np.float64))
        assert np.allclose(uv, np.stack([u, v], axis=1), atol=0.01)
        meta = json.loads((d / "meta" / f"{stem}.json").read_text())
        assert (meta["category"], meta["split"], meta["index"]) == (
            task.category.name, task.split, task.index)
        assert meta["sample_seed"] == sample_seed(cfg.seed, task.category.name, task.split,
                                                  task.index)
        if task.split.startswith("test/"):
            mode, gt = png_array(d / "gt" / f"{stem}.png")
            assert mode == "L" and gt.dtype == np.uint8 and gt.shape == (h, w)
            assert set(np.unique(gt).tolist()) <= {0, 255}
            if task.defect is None:
                assert not gt.any(), "test/good ground truth must be all zero"
            else:
                assert (gt == 255).any(), f"{d}/gt/{stem}.png is empty"
                assert meta["n_anomalous"] == int((gt == 255).sum())
            n_checked += 1
    assert n_checked == 2 * 7


# ------------------------------------------------------------------- 2. gt == the render's rule


def test_ground_truth_follows_the_render_rule(layout_ds: Path) -> None:
    root, cfg = layout_ds, LAYOUT_CFG
    seen_terms = set()
    for task in cfg.plan():
        d = root / task.category.name / task.split
        stem = f"{task.index:03d}"
        written_meta = json.loads((d / "meta" / f"{stem}.json").read_text())
        sample = make_sample(task, cfg)
        assert json.loads(json.dumps(sample.meta)) == written_meta
        if written_meta["attempt"] == 0:
            assert written_meta["seed"] == written_meta["sample_seed"]
        r = rerender(task, cfg, written_meta)
        # the arrays are the files, byte for byte
        assert read_rgb(d / "rgb" / f"{stem}.png").tobytes() == r.rgb.tobytes()
        assert read_rgb(d / "rgb" / f"{stem}.png").tobytes() == sample.arrays["rgb"].tobytes()
        xyz = tifffile.imread(d / "xyz" / f"{stem}.tiff")
        assert xyz.tobytes() == r.xyz.tobytes() == sample.arrays["xyz"].tobytes()
        if not task.split.startswith("test/"):
            assert "gt" not in sample.arrays and not r.gt.any()
            continue
        gt = read_mask_png(d / "gt" / f"{stem}.png")
        terms = rule_terms(r, written_meta)
        rule = terms["offset"] | terms["hole"] | terms["stain"]
        assert np.array_equal(gt, rule), f"{task}: gt differs from the documented rule"
        assert np.array_equal(gt, r.gt)
        # gt lies on the part, or where the intact part was and a hole removed it
        assert not (gt & ~(r.object_mask | terms["hole"])).any()
        defect = task.defect
        if defect is None:
            assert "geometric" not in written_meta and "contamination" not in written_meta
            assert not gt.any()
        elif defect in GEOMETRIC:
            assert written_meta["geometric"]["type"] == defect
            assert "contamination" not in written_meta
            assert (terms["offset"] | terms["hole"]).any()
            if defect != "hole":
                assert not terms["hole"].any()
        elif defect == "contamination":
            assert "geometric" not in written_meta and terms["stain"].any()
        else:
            assert defect == "combined"
            assert written_meta["geometric"]["type"] in COMBINED_GEOMETRIC
            assert terms["stain"].any()
        seen_terms |= {k for k, v in terms.items() if v.any()}
    assert seen_terms == {"offset", "hole", "stain"}


# ------------------------------------------------------------------------------ 3. determinism


def test_same_bytes_for_any_worker_count(tmp_path: Path, reference: dict[str, str]) -> None:
    report = generate(REF_CFG, tmp_path / "w2", workers=2, progress=False)
    assert report["written"] == len(REF_CFG.plan())
    assert tree(tmp_path / "w2") == reference


def test_sample_depends_only_on_its_key(tmp_path: Path, reference: dict[str, str]) -> None:
    more = DatasetConfig(**{**REF_KW, "train": 4, "test_good": 2})
    generate(more, tmp_path / "more", progress=False)
    other = tree(tmp_path / "more")
    shared = {k for k in reference if k != "dataset.json"}
    assert shared < set(other)
    for k in shared:
        assert other[k] == reference[k], f"{k} changed with the --train count"
    extra = set(other) - set(reference)
    assert {f"gear/train/good/rgb/{i:03d}.png" for i in (2, 3)} <= extra
    assert "gear/test/good/rgb/001.png" in extra
    assert other["dataset.json"] != reference["dataset.json"]
    # the seed matters: another seed draws other samples
    generate(DatasetConfig(**{**REF_KW, "seed": 8}), tmp_path / "seed8", progress=False)
    seed8 = tree(tmp_path / "seed8")
    assert set(seed8) == set(reference)
    assert all(seed8[k] != reference[k] for k in reference if "/rgb/" in k or "/xyz/" in k)


# ------------------------------------------------------------------------------------ 4. resume


def test_resume_after_a_crash_between_samples(tmp_path: Path, reference: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    real = runner.run_task
    done = []

    def crashing(cfg, root, task):
        if len(done) == 3:
            raise RuntimeError("simulated crash")
        done.append(task)
        return real(cfg, root, task)

    monkeypatch.setattr(runner, "run_task", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(REF_CFG, out, progress=False)
    assert json.loads((out / "dataset.json").read_text())["complete"] is False
    assert assert_no_half_samples(out) == 3
    assert temp_files(out) == []
    monkeypatch.undo()
    report = generate(REF_CFG, out, progress=False)
    assert report["skipped"] == 3 and report["written"] == len(REF_CFG.plan()) - 3
    assert tree(out) == reference
    # a rerun of a complete dataset writes nothing and changes nothing
    report = generate(REF_CFG, out, progress=False)
    assert report["written"] == 0 and report["skipped"] == len(REF_CFG.plan())
    assert tree(out) == reference


def test_resume_after_a_failure_inside_a_sample(tmp_path: Path, reference: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    real = sample_mod.write_xyz_tiff
    calls = []

    def failing(path, xyz):
        calls.append(path)
        if len(calls) == 3:  # the rgb of the third sample is already staged
            raise OSError("disk full (simulated)")
        real(path, xyz)

    monkeypatch.setattr(sample_mod, "write_xyz_tiff", failing)
    with pytest.raises(OSError, match="simulated"):
        generate(REF_CFG, out, progress=False)
    assert assert_no_half_samples(out) == 2
    assert temp_files(out) == []
    assert not (out / "gear/validation/good/rgb/000.png").exists()
    monkeypatch.undo()
    report = generate(REF_CFG, out, progress=False)
    assert report["skipped"] == 2
    assert tree(out) == reference


KILL_SCRIPT = """
import os, signal, sys
import synth.dataset.sample as S
from synth.dataset import DatasetConfig, generate
real, calls = S.write_xyz_tiff, []
def killing(path, xyz):
    calls.append(path)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, xyz)
S.write_xyz_tiff = killing
generate(DatasetConfig(**{kw!r}), sys.argv[1], progress=False)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_resume_after_a_hard_kill(tmp_path: Path, reference: dict[str, str]) -> None:
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(kw=REF_KW), str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads((out / "dataset.json").read_text())["complete"] is False
    # killed while staging sample 4: its staged files stay hidden temporaries
    assert assert_no_half_samples(out) == 3
    assert all(Path(t).name.startswith(".") for t in temp_files(out))
    report = generate(REF_CFG, out, progress=False)
    assert report["skipped"] == 3 and report["written"] == len(REF_CFG.plan()) - 3
    assert temp_files(out) == [], "the resumed run must remove the killed run's temporaries"
    assert tree(out) == reference


# -------------------------------------------------------------------------------------- 5. Dask


def test_dask_cluster_gives_the_same_bytes(tmp_path: Path, reference: dict[str, str]) -> None:
    from dask.distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                           host="127.0.0.1", dashboard_address=None)
    try:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        report = generate(REF_CFG, tmp_path / "dask", scheduler=cluster.scheduler_address,
                          progress=False)
    finally:
        cluster.close()
    assert report["written"] == len(REF_CFG.plan()) and report["skipped"] == 0
    assert tree(tmp_path / "dask") == reference


# ------------------------------------------------------------------------------- 6. real meshes


@pytest.mark.parametrize("path", shared_mesh_paths() or [None],
                         ids=lambda p: p.name if p else "absent")
def test_real_mesh_renders(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"{SHARED_MESHES} is absent: no real meshes to render")
    size = (48, 48)
    r = render_sample(read_mesh(path), Camera.for_size(*size), seed=0)
    assert r.xyz.shape == (*size, 3) and np.isfinite(r.xyz).all()
    assert r.object_mask.sum() > 0.01 * size[0] * size[1], "the part is not in view"
    on_part = r.object_mask & (r.xyz[..., 2] != 0)
    assert on_part.sum() > 0 and (r.xyz[on_part][:, 2] > 0).all()
    assert not r.gt.any()

    cat = Category(path.stem, str(path))
    cfg = DatasetConfig(categories=(cat,), defects=("dent",), size=size)
    task = SampleTask(cat, "test/dent", 0)
    s = make_sample(task, cfg)
    assert np.isfinite(s.arrays["xyz"]).all()
    assert s.arrays["gt"].any(), f"{path.name}: the dent is not in the ground truth"
    assert s.meta["geometric"]["type"] == "dent" and s.meta["variation"] == 0.0
    assert s.meta["object"] == str(path)
    r = rerender(task, cfg, s.meta)
    terms = rule_terms(r, s.meta)
    assert np.array_equal(s.arrays["gt"], terms["offset"] | terms["hole"] | terms["stain"])
    assert (r.xyz[r.object_mask & (r.xyz[..., 2] != 0)][:, 2] > 0).all()


# ------------------------------------------------------------------------------ 7. Real3D-AD


def test_real3d_format(tmp_path: Path) -> None:
    cfg = DatasetConfig(categories=("gear",), train=2, validation=1, test_good=1,
                        test_defect=1, defects=("dent", "hole", "contamination"),
                        size=(48, 48), seed=3, format="real3d", points=500)
    root = tmp_path / "r3"
    report = generate(cfg, root, progress=False)
    assert report["written"] == len(cfg.plan()) == 7
    kinds = ("good", "dent", "hole", "contamination")
    expected = {"dataset.json", "gear/train/000.pcd", "gear/train/001.pcd",
                "gear/validation/000.pcd"}
    expected |= {f"gear/test/{k}_000.pcd" for k in kinds}
    expected |= {f"gear/gt/{k}_000.txt" for k in kinds}
    expected |= {"gear/meta/train_good_000.json", "gear/meta/train_good_001.json",
                 "gear/meta/validation_good_000.json"}
    expected |= {f"gear/meta/test_{k}_000.json" for k in kinds}
    assert set(tree(root)) == expected
    assert json.loads((root / "dataset.json").read_text())["complete"] is True

    protos = []
    for rel in ("train/000.pcd", "train/001.pcd", "validation/000.pcd"):
        d = read_points(root / "gear" / rel)
        assert d.points.shape == (500, 3) and d.points.dtype == np.float32
        assert np.isfinite(d.points).all()
        assert d.normals is not None and d.normals.shape == (500, 3)
        assert np.allclose(np.linalg.norm(d.normals, axis=1), 1, atol=1e-3)
        protos.append(d.points)
    assert not np.array_equal(protos[0], protos[1])  # two different part instances

    for k in kinds:
        scan = read_points(root / "gear" / "test" / f"{k}_000.pcd")
        raw = np.loadtxt(root / "gear" / "gt" / f"{k}_000.txt", ndmin=2)
        assert raw.shape == (len(scan.points), 4) and len(scan.points) > 50
        assert np.allclose(raw[:, :3], scan.points, rtol=1e-6, atol=1e-5)
        assert (scan.points[:, 2] > 0).all()  # partial scan: no invalid (0, 0, 0) pixels
        labels = raw[:, 3]
        assert set(np.unique(labels).tolist()) <= {0.0, 1.0}
        gt = read_points(root / "gear" / "gt" / f"{k}_000.txt")
        assert gt.mask is not None and np.array_equal(gt.mask, labels == 1)
        meta = json.loads((root / "gear" / "meta" / f"test_{k}_000.json").read_text())
        if k == "good":
            assert not labels.any()
        else:
            assert labels.sum() > 0, f"{k}: no anomalous point in a defect scan"
            assert labels.sum() <= meta["n_anomalous"]


def test_real3d_defect_scan_always_has_anomalous_points() -> None:
    """Regression: the retry must look at the labelled points, not at the image's gt. In this
    sample the first render's crack lies only on pixels without a measurement (1 gt pixel, no
    point), which made an all-normal 'defect' scan."""
    cfg = DatasetConfig(categories=("hex_nut",), test_defect=3, defects=("crack",),
                        size=(48, 48), seed=0, format="real3d")
    s = make_sample(SampleTask(Category("hex_nut"), "test/crack", 2), cfg)
    assert s.arrays["labels"].any()
    assert len(s.arrays["labels"]) == len(s.arrays["points"])


# ------------------------------------------------------------------------------- 8. inject mode


def test_inject_mode(tmp_path: Path) -> None:
    src_cfg = DatasetConfig(categories=("gear",), train=1, validation=1, test_good=2,
                            test_defect=1, defects=("dent",), size=(48, 48), seed=2)
    source, out = tmp_path / "src", tmp_path / "inj"
    generate(src_cfg, source, progress=False)
    src_tree = tree(source)
    report = inject(InjectConfig(str(source), defects=("dent", "hole"), test_defect=2), out,
                    progress=False)
    assert report["written"] == 4 and report["categories"] == ["gear"]
    files = tree(out)
    cat = out / "gear"
    # the good parts are copied byte for byte; the source's own defects are not
    for sub in ("train", "validation", "test/good", "calibration"):
        copied = {k: v for k, v in files.items() if k.startswith(f"gear/{sub}/")}
        original = {k: v for k, v in src_tree.items() if k.startswith(f"gear/{sub}/")}
        assert copied and copied == original, sub
    assert sorted(p.name for p in (cat / "test").iterdir()) == ["dent", "good", "hole"]
    assert json.loads((out / "dataset.json").read_text())["complete"] is True
    assert src_tree == tree(source), "inject must not touch its source"

    for d in ("dent", "hole"):
        for i in range(2):
            base, stem = cat / "test" / d, f"{i:03d}"
            assert {p.parent.name for p in base.rglob(f"{stem}.*")} == {"rgb", "xyz", "gt",
                                                                       "meta"}
            meta = json.loads((base / "meta" / f"{stem}.json").read_text())
            src_xyz_path = Path(meta["source_xyz"])
            assert src_xyz_path.parent == source / "gear" / "test" / "good" / "xyz"
            assert src_xyz_path.name == f"{i % 2:03d}.tiff"
            src_xyz = read_xyz_tiff(src_xyz_path)
            xyz = tifffile.imread(base / "xyz" / f"{stem}.tiff")
            assert xyz.shape == src_xyz.shape and xyz.dtype == np.float32
            assert np.isfinite(xyz).all()
            mode, gt_img = png_array(base / "gt" / f"{stem}.png")
            assert mode == "L" and set(np.unique(gt_img).tolist()) <= {0, 255}
            gt = gt_img == 255
            fg = foreground_mask(src_xyz)
            changed = np.any(xyz != src_xyz, axis=-1)
            assert gt.any(), f"{d} {stem}: empty ground truth"
            assert not (gt & ~fg).any(), "gt off the source scan's foreground"
            assert not (changed & ~fg).any(), "xyz changed off the foreground"
            assert not (gt & ~changed).any(), "an anomalous pixel with unchanged geometry"
            assert meta["n_anomalous"] == int(gt.sum()) and meta["defect"] == d
            if d == "hole":
                assert np.all(xyz[gt] == 0)  # removed surface: no measurement
            # geometry only: the RGB image is the source's, byte for byte
            rgb_src = source / "gear" / "test" / "good" / "rgb" / f"{i % 2:03d}.png"
            assert (base / "rgb" / f"{stem}.png").read_bytes() == rgb_src.read_bytes()

    # a rerun writes nothing, and removes the temporaries a killed run would have left
    stale = cat / "test" / "hole" / "xyz" / ".001.tiff.k1ll3d.tmp.tiff"
    stale.write_bytes(b"half")
    again = inject(InjectConfig(str(source), defects=("dent", "hole"), test_defect=2), out,
                   progress=False)
    assert again["written"] == 0
    assert not stale.exists()
    assert tree(out) == files


# ------------------------------------------------------------------------------------- 9. CLI

COUNTS = ("--train", "1", "--validation", "0", "--test-good", "1", "--test-defect", "1",
          "--defects", "dent", "--size", "48", "48", "--quiet")
TINY = ("--categories", "gear", *COUNTS)


def test_cli_make_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    status, stdout, stderr = cli(capsys, "make-dataset", "--out", out, *TINY)
    assert status == 0, stderr
    assert stdout.startswith(f"wrote 3 samples to {out} in ") and stdout.count("\n") == 1
    assert stderr == ""
    assert {"gear/train/good/rgb/000.png", "gear/test/good/gt/000.png",
            "gear/test/dent/gt/000.png"} <= set(tree(out))
    assert read_mask_png(out / "gear/test/dent/gt/000.png").any()
    first = tree(out)
    status, stdout, _ = cli(capsys, "make-dataset", "--out", out, *TINY, "--json")
    report = json.loads(stdout)
    assert status == 0 and report["written"] == 0 and report["skipped"] == 3
    assert tree(out) == first
    # inject mode through the CLI
    status, stdout, stderr = cli(capsys, "make-dataset", "--from-mvtec3d", out, "--out",
                                 tmp_path / "inj", "--defects", "bump", "--test-defect", "1",
                                 "--quiet", "--json")
    assert status == 0, stderr
    assert json.loads(stdout)["written"] == 1
    assert read_mask_png(tmp_path / "inj/gear/test/bump/gt/000.png").any()


@pytest.fixture(scope="module")
def cli_existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset written by an earlier run, which bad commands must leave intact."""
    out = tmp_path_factory.mktemp("cli") / "existing"
    assert main(["make-dataset", "--out", str(out), *TINY]) == 0
    return out


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 4)


def _zero_area(p: Path) -> None:
    p.write_text("solid z\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 1 1\n"
                 "vertex 2 2 2\nendloop\nendfacet\nendsolid z\n")


def _empty(p: Path) -> None:
    p.write_bytes(b"")


BAD_INPUT = {
    "garbage-mesh": (("--objects", "{mesh}"), _garbage, "no faces"),
    "zero-area-mesh": (("--objects", "{mesh}"), _zero_area, "zero-area"),
    "empty-mesh": (("--objects", "{mesh}"), _empty, "empty"),
    "missing-mesh": (("--objects", "{tmp}/nope.stl"), None, "no such file"),
    "size-zero": (("--size", "0", "0"), None, "--size"),
    "negative-train": (("--train", "-1"), None, "--train"),
    "unknown-defect": (("--defects", "scratch"), None, "unknown type 'scratch'"),
    "unknown-category": (("--categories", "teapot"), None, "unknown built-in part 'teapot'"),
    "zero-workers": (("--workers", "0"), None, "--workers"),
    "not-a-dataset": (("--from-mvtec3d", "{tmp}"), None, "no MVTec 3D-AD category"),
    "missing-source": (("--from-mvtec3d", "{tmp}/nowhere"), None, "no such folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_cli_bad_input(case: str, tmp_path: Path, cli_existing: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    extra, make, keyword = BAD_INPUT[case]
    mesh = tmp_path / f"{case}.stl"
    if make is not None:
        make(mesh)
    (tmp_path / "unrelated.txt").write_text("x")
    argv = [a.format(mesh=mesh, tmp=tmp_path) for a in extra]
    # later options win in argparse, so TINY's values are overridden by the bad ones; a mesh
    # file is its own category (--categories would filter it out)
    base = COUNTS if extra[0] == "--objects" else TINY
    before = tree(cli_existing)
    for out in (cli_existing, tmp_path / "new"):
        status, stdout, stderr = cli(capsys, "make-dataset", "--out", out, *base, *argv)
        assert status == EXIT_ERROR, (case, stdout, stderr)
        assert stderr.startswith("pcad: error: ") and stderr.count("\n") == 1, stderr
        assert keyword in stderr, stderr
        assert "Traceback" not in stderr and stdout == ""
    assert tree(cli_existing) == before
    assert not (tmp_path / "new").exists()


def test_cli_refuses_a_different_dataset(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert cli(capsys, "make-dataset", "--out", out, *TINY, "--seed", "1")[0] == 0
    before = tree(out)
    status, _, stderr = cli(capsys, "make-dataset", "--out", out, *TINY, "--seed", "2")
    assert status == EXIT_ERROR
    assert stderr.startswith("pcad: error: ") and stderr.count("\n") == 1
    assert "different dataset" in stderr
    assert tree(out) == before
    # inject mode refuses it too
    status, _, stderr = cli(capsys, "make-dataset", "--from-mvtec3d", out, "--out", out,
                            "--quiet")
    assert status == EXIT_ERROR and "different dataset" in stderr
    assert tree(out) == before


def test_cli_refuses_a_non_empty_folder(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    status, _, stderr = cli(capsys, "make-dataset", "--out", out, *TINY)
    assert status == EXIT_ERROR
    assert stderr.startswith("pcad: error: ") and stderr.count("\n") == 1
    assert "not empty" in stderr
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    # an output path that is a file
    status, _, stderr = cli(capsys, "make-dataset", "--out", out / "notes.txt", *TINY)
    assert status == EXIT_ERROR and "not a folder" in stderr
    assert (out / "notes.txt").read_text() == "my notes"
