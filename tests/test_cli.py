"""Tests of the ``pcad`` command line: ``synth`` on every input kind, ``info``, ``demo``, bad input.

Most tests call :func:`pcad.cli.main.main` in-process; a few run the installed console script
in a subprocess to prove that the entry point works and that errors end without a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from pcad.cli.main import EXIT_ERROR, main
from pcad.io import (
    read_mask_png,
    read_points,
    read_xyz_tiff,
    write_points,
    write_xyz_tiff,
)
from synth import list_defects
from synth.defects import defect_info

N_CLOUD = 3000
GRID_SHAPE = (60, 80)
JSON_KEYS = {"input", "output", "n_points", "n_anomalous", "max_offset", "defect", "params",
             "seed"}
#: CLI option -> (value given, value expected in params)
OPTION_VALUES = {
    "scale": ("3.5", 3.5),
    "strength": ("0.03", 0.03),
    "octaves": ("3", 3),
    "persistence": ("0.4", 0.4),
    "lacunarity": ("2.5", 2.5),
    "radius": ("0.12", 0.12),
    "mode": ("local", "local"),
}


# ------------------------------------------------------------------------------------ helpers


def accepted(defect: str) -> set[str]:
    """Parameters the defect type accepts."""
    return {f.name for f in dataclasses.fields(defect_info(defect).obj)}


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``pcad ARGV`` in-process; return (status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def synth_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict:
    """Run ``pcad synth ARGV --json``; check success and that stdout is one JSON object."""
    status, out, err = cli(capsys, "synth", *argv, "--json")
    assert status == 0, err
    assert err == ""
    assert out.endswith("\n") and out.count("\n") == 1  # exactly one line
    record = json.loads(out)
    assert isinstance(record, dict)
    assert JSON_KEYS <= record.keys()
    return record


def assert_cli_error(status: int, out: str, err: str, keyword: str) -> None:
    """Exit status 2, nothing on stdout, one ``pcad: error:`` line naming the problem."""
    assert status == EXIT_ERROR
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pcad: error: ")
    assert keyword.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err


def gt_mask(offsets: np.ndarray, threshold: float) -> np.ndarray:
    return np.linalg.norm(np.asarray(offsets, np.float64), axis=-1) >= threshold


def sphere_points(n: int = N_CLOUD, seed: int = 5) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def wavy_grid() -> np.ndarray:
    """(60, 80, 3) float32 surface in front of a camera; rows 0-2 and 41 have no measurement."""
    yy, xx = np.mgrid[: GRID_SHAPE[0], : GRID_SHAPE[1]].astype(np.float32)
    xyz = np.stack([(xx - 40) * 0.01, (yy - 30) * 0.01,
                    1.0 + 0.03 * np.sin(xx / 9.0) + 0.02 * np.cos(yy / 7.0)], axis=-1)
    xyz = xyz.astype(np.float32)
    xyz[:3] = 0.0
    xyz[41] = 0.0
    return xyz


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    pts = sphere_points()
    files = {"ply": d / "sphere.ply", "npz": d / "sphere.npz", "stl": d / "box.stl",
             "tiff": d / "scan.tiff"}
    write_points(files["ply"], pts)
    write_points(files["npz"], pts)
    trimesh.creation.box(extents=[2.0, 1.0, 0.5]).export(files["stl"])
    write_xyz_tiff(files["tiff"], wavy_grid())
    return files


# ------------------------------------------------------------------------- synth: point clouds


@pytest.mark.parametrize("defect", list_defects(kind="geometric"))
def test_synth_cloud_every_defect(inputs: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], defect: str) -> None:
    out = tmp_path / f"{defect}.ply"
    rec = synth_json(capsys, inputs["ply"], "-o", out, "--defect", defect, "--seed", "3")
    assert rec["input"] == str(inputs["ply"]) and rec["output"] == str(out)
    assert rec["defect"] == defect == rec["params"]["defect"]
    assert rec["seed"] == 3 and rec["params"]["seed"] == 3
    assert rec["params"]["input_kind"] == "points"
    data = read_points(out)
    n_removed = rec["n_removed"]
    assert data.points.shape == (N_CLOUD - n_removed, 3) == (rec["n_points"], 3)
    assert data.mask.shape == (rec["n_points"],)
    assert data.offsets.shape == data.points.shape
    assert int(data.mask.sum()) == rec["n_anomalous"] > 0
    norms = np.linalg.norm(data.offsets.astype(np.float64), axis=1)
    assert norms.max() == pytest.approx(rec["max_offset"], rel=1e-6, abs=1e-12)
    if defect == "hole":
        assert n_removed > 0
        assert not data.offsets.any()  # a hole removes points, it moves none
    else:
        assert n_removed == 0
        np.testing.assert_array_equal(data.mask,
                                      gt_mask(data.offsets, rec["params"]["threshold_abs"]))
        assert 0 < rec["n_anomalous"] <= N_CLOUD


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".npz", ".txt"])
def test_synth_cloud_output_formats(inputs: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], ext: str) -> None:
    ref = tmp_path / "ref.npz"
    synth_json(capsys, inputs["npz"], "-o", ref, "--defect", "bump", "--seed", "1")
    out = tmp_path / f"bump{ext}"
    rec = synth_json(capsys, inputs["npz"], "-o", out, "--defect", "bump", "--seed", "1")
    assert rec["files"] == [str(out)]
    expected = read_points(ref)
    got = read_points(out)
    assert got.points.shape == (N_CLOUD, 3)
    np.testing.assert_array_equal(got.points, expected.points)
    np.testing.assert_array_equal(got.mask, expected.mask)
    assert int(got.mask.sum()) == rec["n_anomalous"]
    if ext == ".txt":
        assert got.offsets is None  # x y z label only
    else:
        np.testing.assert_array_equal(got.offsets, expected.offsets)
        np.testing.assert_array_equal(got.mask,
                                      gt_mask(got.offsets, rec["params"]["threshold_abs"]))
        # the output is the input moved by the offsets
        np.testing.assert_allclose(got.points - got.offsets, sphere_points(), atol=1e-6)


def test_synth_npz_cloud_holds_every_array(inputs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hole.npz"
    rec = synth_json(capsys, inputs["ply"], "-o", out, "--defect", "hole", "--radius", "0.1")
    with np.load(out) as z:
        assert {"points", "mask", "offsets", "normals", "removed"} <= set(z.files)
        removed = z["removed"]
        assert removed.shape == (rec["n_removed"],) and removed.dtype == np.int64
        assert z["points"].shape == (N_CLOUD - removed.size, 3)
        keep = np.setdiff1d(np.arange(N_CLOUD), removed)
        np.testing.assert_array_equal(z["points"], sphere_points()[keep])
        assert z["mask"].sum() == rec["n_anomalous"] > 0


# -------------------------------------------------------------------------------- synth: meshes


@pytest.mark.parametrize("defect", ["perlin", "dent", "hole"])
def test_synth_mesh(inputs: dict[str, Path], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str], defect: str) -> None:
    out = tmp_path / f"box_{defect}.npz"
    rec = synth_json(capsys, inputs["stl"], "-o", out, "--defect", defect, "--points", "3000")
    assert rec["params"]["input_kind"] == "mesh"
    data = read_points(out)
    assert data.points.shape == (3000 - rec["n_removed"], 3) == (rec["n_points"], 3)
    assert data.mask.shape == (rec["n_points"],)
    assert int(data.mask.sum()) == rec["n_anomalous"] > 0
    if defect != "hole":
        np.testing.assert_array_equal(data.mask,
                                      gt_mask(data.offsets, rec["params"]["threshold_abs"]))
    # the samples stay on (or displaced slightly off) the box [-1, 1] x [-.5, .5] x [-.25, .25]
    slack = rec["max_offset"] + 1e-5
    assert (np.abs(data.points) <= np.array([1.0, 0.5, 0.25]) + slack).all()


def test_synth_mesh_points_option(inputs: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "box.ply"
    rec = synth_json(capsys, inputs["stl"], "-o", out, "--points", "1234", "--defect", "bump")
    assert rec["n_points"] == 1234
    assert read_points(out).points.shape == (1234, 3)


# ---------------------------------------------------------------------- synth: organized xyz


@pytest.mark.parametrize("defect", list_defects(kind="geometric"))
def test_synth_organized(inputs: dict[str, Path], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str], defect: str) -> None:
    grid = wavy_grid()
    invalid = ~np.any(grid != 0, axis=-1)
    tif = tmp_path / f"{defect}.tiff"
    # the wavy grid is all surface, no background plane: --anywhere (tests/test_synth_cli_flags.py
    # covers the default, on the part)
    rec = synth_json(capsys, inputs["tiff"], "-o", tif, "--defect", defect, "--seed", "2",
                     "--anywhere")
    gt_png = tmp_path / f"{defect}_gt.png"
    assert rec["files"] == [str(tif), str(gt_png)]
    assert rec["params"]["input_kind"] == "organized"
    xyz = read_xyz_tiff(tif)
    mask = read_mask_png(gt_png)
    assert xyz.shape == (*GRID_SHAPE, 3) and xyz.dtype == np.float32
    assert mask.shape == GRID_SHAPE and mask.dtype == bool
    assert int(mask.sum()) == rec["n_anomalous"] > 0
    assert not xyz[invalid].any(), "pixels without measurement must stay (0, 0, 0)"
    assert not mask[invalid].any(), "pixels without measurement are never anomalous"

    npz = tmp_path / f"{defect}.npz"
    rec2 = synth_json(capsys, inputs["tiff"], "-o", npz, "--defect", defect, "--seed", "2",
                      "--anywhere")
    assert rec2["n_anomalous"] == rec["n_anomalous"]
    with np.load(npz) as z:
        points, offsets, mask_npz = z["points"], z["offsets"], z["mask"]
        removed = z["removed"]
    assert points.shape == (*GRID_SHAPE, 3) and mask_npz.shape == GRID_SHAPE
    np.testing.assert_array_equal(points, xyz)
    np.testing.assert_array_equal(mask_npz, mask)
    if defect == "hole":
        assert removed.size == rec["n_removed"] > 0
        gone = np.zeros(grid.shape[:2], bool).ravel()
        gone[removed] = True
        gone = gone.reshape(GRID_SHAPE)
        assert not invalid[gone].any()  # only measured pixels can be removed
        assert not xyz[gone].any() and mask[gone].all()
    else:
        assert rec["n_removed"] == 0
        np.testing.assert_array_equal(mask, gt_mask(offsets, rec["params"]["threshold_abs"]))
        valid = ~invalid
        np.testing.assert_allclose(xyz[valid], (grid + offsets)[valid], atol=1e-6)


def test_synth_organized_nan_pixels_mean_no_measurement(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    import tifffile  # write_xyz_tiff refuses NaN; some datasets store missing pixels that way

    grid = wavy_grid()
    grid[20, 30:35] = np.nan
    grid[50, 7, 2] = np.inf
    src = tmp_path / "nan.tiff"
    tifffile.imwrite(src, grid, photometric="rgb")
    out = tmp_path / "out.tiff"
    rec = synth_json(capsys, src, "-o", out, "--defect", "bump", "--radius", "0.3",
                     "--anywhere")  # no background plane in the wavy grid
    xyz, mask = read_xyz_tiff(out), read_mask_png(tmp_path / "out_gt.png")
    assert np.isfinite(xyz).all()
    for r, c in [(20, 30), (20, 34), (50, 7)]:
        assert not xyz[r, c].any() and not mask[r, c]
    assert int(mask.sum()) == rec["n_anomalous"] > 0


def test_synth_organized_rejects_cloud_output(inputs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scan.ply"
    assert_cli_error(*cli(capsys, "synth", inputs["tiff"], "-o", out), "organized")
    assert not out.exists()


# ------------------------------------------------------------------------------ synth: --json


@pytest.mark.parametrize("defect", list_defects(kind="geometric"))
def test_json_params_hold_the_options_given(inputs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            defect: str) -> None:
    ok = accepted(defect)
    argv: list[str] = []
    for opt, (text, _) in OPTION_VALUES.items():
        if opt in ok and not (defect == "crack" and opt == "mode"):
            argv += [f"--{opt}", text]
    if defect == "crack":  # a crack always lies in the local tangent frame
        argv += ["--mode", "local"]
    assert len(argv) >= 10
    rec = synth_json(capsys, inputs["npz"], "-o", tmp_path / "o.ply", "--defect", defect,
                     "--seed", "9", *argv)
    params = rec["params"]
    for opt, (_, value) in OPTION_VALUES.items():
        if opt in ok:
            assert params[opt] == value, opt
    assert rec["seed"] == params["seed"] == 9
    assert params["units"] == "relative"
    assert isinstance(rec["max_offset"], float) and math.isfinite(rec["max_offset"])
    assert rec["n_points"] + rec["n_removed"] == N_CLOUD


def test_json_absolute_units(inputs: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    rec = synth_json(capsys, inputs["npz"], "-o", tmp_path / "o.npz", "--absolute",
                     "--strength", "0.05")
    assert rec["params"]["units"] == "absolute"
    assert rec["params"]["peak_abs"] == pytest.approx(0.05)
    assert 0 < rec["max_offset"] <= 0.05 * (1 + 1e-6)
    rel = synth_json(capsys, inputs["npz"], "-o", tmp_path / "r.npz", "--strength", "0.05")
    assert rel["params"]["peak_abs"] == pytest.approx(0.05 * rel["params"]["diag"])


def test_human_readable_output(inputs: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.txt"
    status, stdout, err = cli(capsys, "synth", inputs["ply"], "-o", out, "--defect", "dent")
    assert status == 0 and err == ""
    assert stdout.startswith("dent: ") and str(out) in stdout and "anomalous" in stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(stdout)
    assert out.is_file()


# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize(("key", "ext", "defect"), [
    ("ply", ".ply", "perlin"), ("ply", ".pcd", "crack"), ("npz", ".npz", "hole"),
    ("stl", ".ply", "bump"), ("tiff", ".tiff", "dent"), ("tiff", ".npz", "perlin"),
])
def test_same_seed_same_bytes(inputs: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], key: str, ext: str,
                              defect: str) -> None:
    def run(name: str, seed: str) -> list[bytes]:
        out = tmp_path / f"{name}{ext}"
        rec = synth_json(capsys, inputs[key], "-o", out, "--defect", defect, "--seed", seed,
                         "--points", "2000", *(["--anywhere"] if key == "tiff" else []))
        return [Path(f).read_bytes() for f in rec["files"]]

    first, second, other = run("a", "4"), run("b", "4"), run("c", "5")
    assert first == second
    assert first[0] != other[0]


# ------------------------------------------------------------------------- synth: bad input


def _bad_inputs(d: Path) -> dict[str, Path]:
    """Input files that must be refused, by name."""
    files: dict[str, Path] = {}
    files["empty"] = d / "empty.npy"
    np.save(files["empty"], np.zeros((0, 3), np.float32))
    files["few"] = d / "few.npy"
    np.save(files["few"], sphere_points(5))
    for name, value in (("nan", np.nan), ("inf", np.inf), ("neginf", -np.inf)):
        pts = sphere_points(200)
        pts[17, 1] = value
        files[name] = d / f"{name}.npy"
        np.save(files[name], pts)
    files["collinear"] = d / "collinear.npy"
    np.save(files["collinear"], (np.linspace(0, 1, 200)[:, None] * [1.0, 2.0, 3.0]))
    files["single"] = d / "single.ply"
    write_points(files["single"], np.tile([[1.0, 2.0, 3.0]], (100, 1)))
    files["flat_mesh"] = d / "flat.stl"
    line = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]], float)
    trimesh.Trimesh(line, [[0, 1, 2], [1, 2, 3]], process=False).export(files["flat_mesh"])
    files["foo"] = d / "cloud.foo"
    files["foo"].write_text("0 0 0\n1 0 0\n0 1 0\n")
    files["missing"] = d / "missing.ply"
    files["truncated"] = d / "truncated.ply"
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n"
              b"property float x\nproperty float y\nproperty float z\nend_header\n")
    files["truncated"].write_bytes(header + sphere_points(10).tobytes())
    files["garbage_tiff"] = d / "garbage.tiff"
    files["garbage_tiff"].write_bytes(b"this is not a TIFF file at all" * 20)
    files["empty_tiff"] = d / "blank.tiff"
    write_xyz_tiff(files["empty_tiff"], np.zeros((20, 20, 3), np.float32))
    return files


BAD_INPUTS = [
    ("empty", "empty"),
    ("few", "at least 10"),
    ("nan", "NaN"),
    ("inf", "infinite"),
    ("neginf", "infinite"),
    ("collinear", "collinear"),
    ("single", "single point"),
    ("flat_mesh", "zero-area"),
    ("foo", "extension"),
    ("missing", "no such file"),
    ("truncated", "truncated"),
    ("garbage_tiff", "TIFF"),
    ("empty_tiff", "valid pixels"),
]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(("name", "keyword"), BAD_INPUTS)
def test_bad_input_file(bad_inputs: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str], name: str, keyword: str) -> None:
    src = bad_inputs[name]
    before = src.read_bytes() if src.exists() else None
    out = tmp_path / "out.npz"
    assert_cli_error(*cli(capsys, "synth", src, "-o", out, "--points", "500"), keyword)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either
    assert (src.read_bytes() if src.exists() else None) == before
    # the message names the file the problem came from
    status, out_text, err = cli(capsys, "synth", src, "-o", tmp_path / "o.ply", "--json")
    assert status == EXIT_ERROR and out_text == ""
    assert src.name in err


@pytest.mark.parametrize(("name", "keyword"), [("nan", "NaN"), ("truncated", "truncated"),
                                               ("flat_mesh", "zero-area")])
def test_failure_leaves_existing_output_intact(bad_inputs: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str], name: str,
                                               keyword: str) -> None:
    out = tmp_path / "keep.ply"
    out.write_bytes(b"precious bytes\x00\x01")
    assert_cli_error(*cli(capsys, "synth", bad_inputs[name], "-o", out), keyword)
    assert out.read_bytes() == b"precious bytes\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.ply"]


BAD_VALUES = [
    (opt, value, "must be > 0" if value != "nan" else "finite")
    for opt in ("strength", "scale", "radius", "persistence", "lacunarity")
    for value in ("-0.5", "0", "nan")
] + [
    ("strength", "inf", "finite"),
    ("octaves", "0", "must be >= 1"),
    ("octaves", "-1", "must be >= 1"),
    ("octaves", "17", "<= 16"),
]


@pytest.mark.parametrize(("opt", "value", "keyword"), BAD_VALUES)
def test_bad_parameter_value(inputs: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str], opt: str, value: str,
                             keyword: str) -> None:
    out = tmp_path / "o.ply"
    out.write_bytes(b"old")
    status, stdout, err = cli(capsys, "synth", inputs["ply"], "-o", out, f"--{opt}={value}")
    assert_cli_error(status, stdout, err, keyword)
    assert opt in err  # names the parameter
    assert out.read_bytes() == b"old"


@pytest.mark.parametrize(("defect", "argv", "keyword"), [
    ("hole", ["--strength", "0.1"], "takes no such parameter"),
    ("crack", ["--radius", "0.1"], "takes no such parameter"),
    ("crack", ["--mode", "global"], "expected one of"),
])
def test_parameter_the_defect_does_not_accept(inputs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], defect: str,
                                              argv: list[str], keyword: str) -> None:
    out = tmp_path / "o.ply"
    assert_cli_error(*cli(capsys, "synth", inputs["ply"], "-o", out, "--defect", defect,
                          *argv), keyword)
    assert not out.exists()


@pytest.mark.parametrize(("argv", "keyword"), [
    (["--points", "5"], "--points"),
    (["--points", "0"], "--points"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_sampling_options(inputs: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], argv: list[str],
                              keyword: str) -> None:
    out = tmp_path / "o.ply"
    assert_cli_error(*cli(capsys, "synth", inputs["stl"], "-o", out, *argv), keyword)
    assert not out.exists()


@pytest.mark.parametrize(("name", "keyword"), [
    ("o.tiff", "cannot write an unorganized"),
    ("o.tif", "cannot write an unorganized"),
    ("o.foo", "extension"),
    ("noext", "extension"),
])
def test_output_extension_that_cannot_hold_the_result(inputs: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      name: str, keyword: str) -> None:
    out = tmp_path / name
    assert_cli_error(*cli(capsys, "synth", inputs["npz"], "-o", out), keyword)
    assert list(tmp_path.iterdir()) == []


def test_output_equal_to_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "cloud.ply"
    write_points(src, sphere_points())
    before = src.read_bytes()
    assert_cli_error(*cli(capsys, "synth", src, "-o", src), "overwrite the input")
    monkeypatch.chdir(tmp_path)  # the same file under another spelling
    assert_cli_error(*cli(capsys, "synth", "cloud.ply", "-o", "./sub/../cloud.ply"),
                     "overwrite the input")
    assert src.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]


def test_argparse_errors_exit_2(inputs: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["synth", str(inputs["ply"]), "-o", str(tmp_path / "o.ply"), "--defect",
                  "scratch"],
                 ["synth", str(inputs["ply"])],  # no -o
                 ["synth", str(inputs["ply"]), "-o", str(tmp_path / "o.ply"), "--octaves",
                  "1.5"],
                 []):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert "error" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- info


def test_info_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(capsys, "info")
    assert status == 0 and err == ""
    assert out.startswith("pcad ")
    for word in ("packages:", "numpy", "backends:", "perlin", "devices: cpu"):
        assert word in out


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    from pcad import __version__

    status, out, _ = cli(capsys, "info", "--json")
    assert status == 0
    info = json.loads(out)
    assert {"pcad", "packages", "backends", "devices"} <= info.keys()
    assert info["pcad"] == __version__
    assert info["packages"]["numpy"] == np.__version__
    assert "numpy" in info["backends"]["perlin"]
    assert info["devices"][0] == "cpu"


# -------------------------------------------------------------------------------------- demo


def test_demo_without_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    status, stdout, err = cli(capsys, "demo", "--out", out, "--points", "3000", "--objects",
                              "plate", "ring", "--no-html", "--no-dataset")
    assert status == 0 and err == ""
    assert ".html" not in stdout  # no page is advertised when none was written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["points"] == 3000 and summary["seed"] == 0
    rows = summary["rows"]
    assert {(r["object"], r["defect"]) for r in rows} == {
        (o, d) for o in ("plate", "ring") for d in list_defects(kind="geometric")}
    assert len(rows) == 2 * len(list_defects(kind="geometric"))
    for row in rows:
        path = Path(row["file"])
        assert path.is_file() and path.suffix == ".ply"
        data = read_points(path)
        assert data.points.shape == (row["n_points"], 3)
        assert row["n_points"] + row["n_removed"] == 3000
        assert int(data.mask.sum()) == row["n_anomalous"]
    assert not list(out.glob("*.html"))


def test_demo_with_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    status, stdout, _ = cli(capsys, "demo", "--out", out, "--points", "3000", "--objects",
                            "washer", "--size", "64", "64", "--workers", "1")
    assert status == 0
    dataset = json.loads((out / "dataset" / "dataset.json").read_text())
    assert dataset["complete"] and dataset["config"]["size"] == [64, 64]
    assert (out / "dataset" / "washer" / "test" / "hole" / "gt" / "000.png").is_file()
    assert (out / "dataset_preview.png").stat().st_size > 0
    page = out / "washer.html"
    assert page.is_file()
    text = page.read_text(encoding="utf-8")
    assert "plotly" in text.lower() and '"updatemenus"' in text  # one view, a defect selector
    report = out / "report.html"  # the demo ends by pointing at its report
    assert report.is_file() and stdout.strip().splitlines()[-1].endswith(f"open {report}")
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert len(rows) == len(list_defects(kind="geometric"))


@pytest.mark.parametrize(("argv", "keyword"), [
    (["--objects", "plate", "teapot"], "teapot"),
    (["--points", "5"], "--points"),
])
def test_demo_bad_arguments_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          argv: list[str], keyword: str) -> None:
    out = tmp_path / "demo"
    assert_cli_error(*cli(capsys, "demo", "--out", out, "--no-html", *argv), keyword)
    assert not out.exists()


# ------------------------------------------------------------------- the installed entry point


def _pcad_command() -> list[str]:
    script = Path(sys.executable).with_name("pcad")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pcad"]


def test_console_script_synth(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli.tiff"
    proc = subprocess.run([*_pcad_command(), "synth", str(inputs["tiff"]), "-o", str(out),
                           "--defect", "bump", "--anywhere", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["output"] == str(out) and rec["defect"] == "bump"
    assert out.is_file() and (tmp_path / "cli_gt.png").is_file()
    assert int(read_mask_png(tmp_path / "cli_gt.png").sum()) == rec["n_anomalous"]


def test_console_script_error_is_one_line(bad_inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o.ply"
    proc = subprocess.run([*_pcad_command(), "synth", str(bad_inputs["collinear"]), "-o",
                           str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == EXIT_ERROR
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("pcad: error: ")
    assert "collinear" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_python_m_pcad(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pcad", "--version"], capture_output=True,
                          text=True, timeout=120, check=False)
    from pcad import __version__

    assert proc.returncode == 0 and proc.stdout.strip() == f"pcad {__version__}"
    proc = subprocess.run([sys.executable, "-m", "pcad", "synth", str(tmp_path / "none.ply"),
                           "-o", str(tmp_path / "o.ply")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.strip().splitlines() == [
        f"pcad: error: {tmp_path / 'none.ply'}: no such file"]
