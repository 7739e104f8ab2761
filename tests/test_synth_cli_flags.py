"""``pcad synth`` on scans, its flags and warnings; ``make-dataset``'s sensor and defect-range
flags; ``viz sample`` on ``pcad synth``'s output (issue 17, item 3).

The scan is a gear rendered by pcad's renderer (part on its table, 96 x 96): a defect must land
on the part (the renderer's object mask) in at least 95 % of 20 seeds, from the command line and
from :func:`synth.apply_to_scan`; ``--anywhere`` / ``anywhere=True`` opt out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from pcad.cli.defect_flags import (
    DEFECT_PARAMETERS,
    DEFECT_RANGE_DEFAULTS,
    PARAMETER_FLAGS,
    SENSOR_DEFAULTS,
    flag_of,
    parse_defect_ranges,
    parse_sensor,
)
from pcad.cli.main import EXIT_ERROR, build_parser, main
from pcad.errors import InvalidInputError
from pcad.io import read_mask_png, read_xyz_tiff, write_xyz_tiff
from synth import apply_to_scan
from synth.defects import defect_parameters, list_defects

SEEDS = range(20)
MIN_ON_PART = 0.95


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def gear(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """``(scan.tiff, xyz (96, 96, 3), object mask (96, 96) bool)`` of a rendered gear."""
    from synth.objects import make_object
    from synth.render.camera import Camera
    from synth.render.render import render_sample

    r = render_sample(make_object("gear", 0), Camera.for_size(96, 96), seed=0)
    path = tmp_path_factory.mktemp("gear") / "scan.tiff"
    write_xyz_tiff(path, r.xyz)
    assert 0.1 < r.object_mask.mean() < 0.5  # a part on a table: both are in the image
    return path, read_xyz_tiff(path), r.object_mask


def on_part(xyz: np.ndarray, obj: np.ndarray, centre: list[float]) -> bool:
    """Whether the measured pixel nearest to the defect's centre shows the part."""
    d = np.linalg.norm(xyz.astype(np.float64) - np.asarray(centre), axis=-1)
    d[~np.any(xyz != 0, axis=-1)] = np.inf
    return bool(obj[np.unravel_index(int(np.argmin(d)), d.shape)])


def synth_centres(capsys: pytest.CaptureFixture[str], scan: Path, tmp: Path,
                  *extra: str) -> list[list[float]]:
    centres = []
    for seed in SEEDS:
        status, out, err = cli(capsys, "synth", scan, "-o", tmp / f"s{seed}.tiff", "--defect",
                               "bump", "--seed", str(seed), "--json", *extra)
        assert status == 0, err
        centres.append(json.loads(out)["params"]["centre"])
    return centres


def test_cli_defect_lands_on_the_part(gear: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    scan, xyz, obj = gear
    hits = [on_part(xyz, obj, c) for c in synth_centres(capsys, scan, tmp_path)]
    assert np.mean(hits) >= MIN_ON_PART, f"{sum(hits)} of {len(hits)} seeds on the part"
    anywhere = [on_part(xyz, obj, c)
                for c in synth_centres(capsys, scan, tmp_path, "--anywhere")]
    assert np.mean(anywhere) < MIN_ON_PART  # the opt-out draws among all measured pixels


def test_api_defect_lands_on_the_part(gear: tuple[Path, np.ndarray, np.ndarray]) -> None:
    _, xyz, obj = gear
    hits = [on_part(xyz, obj, apply_to_scan(xyz, "dent", seed=s).params["centre"])
            for s in SEEDS]
    assert np.mean(hits) >= MIN_ON_PART
    anywhere = [on_part(xyz, obj, apply_to_scan(xyz, "dent", seed=s, anywhere=True)
                        .params["centre"]) for s in SEEDS]
    assert np.mean(anywhere) < MIN_ON_PART
    with pytest.raises(InvalidInputError, match="anywhere"):
        apply_to_scan(xyz, "dent", anywhere=True, foreground=obj)
    with pytest.raises(InvalidInputError, match="anywhere"):
        apply_to_scan(xyz, "dent", anywhere="yes")


def test_scan_without_background_names_anywhere(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    yy, xx = np.mgrid[:40, :40].astype(np.float32) / 40
    src = tmp_path / "flat.tiff"
    write_xyz_tiff(src, np.stack([xx, yy, np.ones_like(xx)], axis=-1))
    status, out, err = cli(capsys, "synth", src, "-o", tmp_path / "o.tiff")
    assert status == EXIT_ERROR and out == ""
    assert err.startswith("pcad: error: ") and "--anywhere" in err
    assert not (tmp_path / "o.tiff").exists()
    status, _, err = cli(capsys, "synth", src, "-o", tmp_path / "o.tiff", "--anywhere",
                         "--defect", "dent", "--radius", "0.2")
    assert status == 0, err
    assert read_mask_png(tmp_path / "o_gt.png").any()


# ---------------------------------------------------------------------------------- flags


def _synth_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return sub.choices["synth"]


def test_flag_table_equals_the_registry() -> None:
    registry = {n: {p: d for p, _, d, _, _ in defect_parameters(n)}
                for n in list_defects(kind="geometric")}
    assert DEFECT_PARAMETERS == registry, (
        "pcad/cli/defect_flags.py DEFECT_PARAMETERS differs from the registry; it should be "
        f"{registry!r}")
    for name in registry:
        for param, kind, _, choices, _ in defect_parameters(name):
            assert param in PARAMETER_FLAGS, f"{name}.{param} has no entry in PARAMETER_FLAGS"
            flag_kind, flag_choices, doc = PARAMETER_FLAGS[param]
            assert flag_kind == kind and doc, (name, param)
            assert set(choices or ()) <= set(flag_choices or ()), (name, param)
    assert set(PARAMETER_FLAGS) == {p for ps in registry.values() for p in ps}


def test_every_defect_parameter_has_a_flag_in_help() -> None:
    parser = _synth_parser()
    options = {s for a in parser._actions for s in a.option_strings}
    help_text = " ".join(parser.format_help().split())
    for name in list_defects(kind="geometric"):
        for param, _, default, _, _ in defect_parameters(name):
            flag = flag_of(param)
            assert flag in options, f"{name}.{param}: no flag {flag} in pcad synth"
            assert flag in help_text
            if param not in ("units", "region"):  # region: pcad synth's own default
                assert str(default) in help_text, (name, param, default)
    for flag in ("--region", "--signed", "--length", "--width", "--gt-threshold", "--rim",
                 "--anywhere"):
        assert flag in options


def test_flags_reach_the_defect(gear: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    scan = gear[0]
    cases = {"crack": (["--length", "0.3", "--width", "0.02", "--wiggle", "0.1",
                        "--gt-threshold", "0.2"],
                       {"length": 0.3, "width": 0.02, "wiggle": 0.1, "gt_threshold": 0.2}),
             "perlin": (["--region", "threshold", "--signed", "--threshold", "0.7",
                         "--falloff", "linear"],
                        {"region": "threshold", "signed": True, "threshold": 0.7,
                         "falloff": "linear"}),
             "hole": (["--rim", "2.5", "--irregularity", "0.1", "--absolute", "--radius", "9"],
                      {"rim": 2.5, "irregularity": 0.1, "units": "absolute", "radius": 9.0})}
    for defect, (argv, expected) in cases.items():
        status, out, err = cli(capsys, "synth", scan, "-o", tmp_path / f"{defect}.npz",
                               "--defect", defect, "--json", *argv)
        assert status == 0, err
        params = json.loads(out)["params"]
        assert {k: params[k] for k in expected} == expected
    status, out, _ = cli(capsys, "synth", scan, "-o", tmp_path / "p.npz", "--json")
    assert status == 0 and json.loads(out)["params"]["region"] == "ball"  # synth's default


@pytest.mark.parametrize(("argv", "flag"), [
    (["--defect", "bump", "--region", "ball"], "--region"),
    (["--defect", "hole", "--strength", "0.1"], "--strength"),
    (["--defect", "bump", "--strength", "-1"], "--strength"),
    (["--defect", "crack", "--mode", "global"], "--mode"),
    (["--defect", "perlin", "--threshold", "2"], "--threshold"),
    (["--defect", "hole", "--gt-threshold", "0"], "--gt-threshold"),
])
def test_errors_name_flags(gear: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str], argv: list[str],
                           flag: str) -> None:
    status, out, err = cli(capsys, "synth", gear[0], "-o", tmp_path / "o.tiff", *argv)
    assert status == EXIT_ERROR and out == ""
    line = err.strip()
    assert line.startswith("pcad: error: ") and "\n" not in line
    assert flag in line, line
    for internal in ("unknown parameter", f"{argv[1]}.", "gt_threshold"):
        assert internal not in line, line
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------- warnings


@pytest.mark.parametrize(("argv", "keyword"), [
    (["--defect", "perlin", "--region", "global"], "more than half"),
    (["--defect", "bump", "--strength", "5"], "bounding-box diagonal"),
    (["--defect", "bump", "--strength", "1e-4", "--gt-threshold", "1"], "no anomalous"),
])
def test_degenerate_results_warn(gear: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], argv: list[str],
                                 keyword: str) -> None:
    out = tmp_path / "o.tiff"
    status, stdout, err = cli(capsys, "synth", gear[0], "-o", out, *argv)
    assert status == 0
    assert out.is_file() and "wrote" in stdout
    lines = err.strip().splitlines()
    assert lines and all(x.startswith("pcad: warning: ") for x in lines), err
    assert any(keyword in x for x in lines), err
    assert any("--" in x for x in lines)  # names a flag to change


def test_ordinary_results_do_not_warn(gear: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    for defect in list_defects(kind="geometric"):
        status, _, err = cli(capsys, "synth", gear[0], "-o", tmp_path / f"{defect}.tiff",
                             "--defect", defect, "--seed", "1")
        assert status == 0 and err == "", (defect, err)


# ---------------------------------------------------------------------------- make-dataset


def test_sensor_and_range_defaults_equal_the_library() -> None:
    import dataclasses

    from synth.dataset.config import DEFAULT_DEFECT_RANGES
    from synth.render.render import SensorConfig

    assert SENSOR_DEFAULTS == {f.name: f.default for f in dataclasses.fields(SensorConfig)}
    assert DEFECT_RANGE_DEFAULTS == DEFAULT_DEFECT_RANGES


def test_sensor_and_range_parsing() -> None:
    assert parse_sensor(["dropout=0", "fill=0.5"]) == {"dropout": 0.0, "fill": 0.5}
    ranges = parse_defect_ranges(["hole.radius=0.02:0.03", "bump.strength=0.02"])
    assert ranges["hole"] == {"radius": (0.02, 0.03)}
    assert ranges["bump"] == {"strength": (0.02, 0.02), "radius": (0.06, 0.12)}
    for bad, word in ((["dropout"], "KEY=VALUE"), (["nope=1"], "nope"), (["fill=x"], "number")):
        with pytest.raises(InvalidInputError, match=word):
            parse_sensor(bad)
    for bad, word in ((["hole.mode=1:2"], "numeric"), (["gear.radius=1"], "DEFECT"),
                      (["hole.radius=0.3:0.1"], ">"), (["hole.radius=a:b"], "LO:HI")):
        with pytest.raises(InvalidInputError, match=word):
            parse_defect_ranges(bad)


@pytest.mark.parametrize(("argv", "keyword"), [
    (["--sensor", "fill=2"], "--sensor fill"),
    (["--sensor", "colour=1"], "--sensor"),
    (["--defect-range", "hole.radius=-1:1"], "--defect-range hole.radius"),
    (["--defect-range", "hole.region=1:2"], "--defect-range"),
])
def test_make_dataset_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], keyword: str) -> None:
    status, out, err = cli(capsys, "make-dataset", "--out", tmp_path / "ds", "--quiet", *argv)
    assert status == EXIT_ERROR and out == ""
    assert err.startswith("pcad: error: ") and keyword in err, err
    assert not (tmp_path / "ds").exists()


def test_make_dataset_sensor_and_ranges_are_used(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    status, _, err = cli(capsys, "make-dataset", "--out", root, "--categories", "gear",
                         "--train", "0", "--validation", "0", "--test-good", "0",
                         "--test-defect", "1", "--defects", "hole", "--size", "32", "32",
                         "--quiet", "--sensor", "dropout=0", "depth_noise=0.001",
                         "--defect-range", "hole.radius=0.05")
    assert status == 0, err
    config = json.loads((root / "dataset.json").read_text())["config"]
    assert config["sensor"]["dropout"] == 0 and config["sensor"]["depth_noise"] == 0.001
    assert config["defect_ranges"]["hole"] == {"radius": [0.05, 0.05]}
    meta = json.loads(next((root / "gear" / "test" / "hole" / "meta").iterdir()).read_text())
    assert "0.05" in json.dumps(meta)


# ------------------------------------------------------------------------------ viz sample


def test_viz_sample_reads_synth_output(gear: tuple[Path, np.ndarray, np.ndarray],
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bump.tiff"
    status, stdout, err = cli(capsys, "synth", gear[0], "-o", out, "--defect", "bump", "--json")
    assert status == 0, err
    n = json.loads(stdout)["n_anomalous"]
    page = tmp_path / "page.html"
    status, _, err = cli(capsys, "viz", "sample", out, "-o", page)
    assert status == 0, err
    text = page.read_text()
    assert f"gt mask ({n} px)" in text and "bump.tiff" in text
