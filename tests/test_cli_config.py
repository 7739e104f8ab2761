"""``--config`` / ``--print-config`` / ``--help-options``, defaults in ``--help``, and a
``pcad --help`` that imports neither torch nor the detectors (issue 17, items 2 and 7)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from pcad.cli import names
from pcad.cli.config import load_config
from pcad.cli.main import main


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's --help and usage errors
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


TRAIN = ["train", "--data", "d", "--category", "gear", "--out", "o"]


@pytest.mark.parametrize("fmt,suffix", [("yaml", ".yaml"), ("toml", ".toml")])
def test_train_config_round_trip(tmp_path, fmt, suffix):
    status, text, err = _run([*TRAIN, "--detector", "cfm", "-o", "epochs=3",
                              "--print-config", "--config-format", fmt])
    assert status == 0, err
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg["detector"] == "cfm" and cfg["category"] == "gear"
    assert cfg["option"]["epochs"] == 3 and cfg["option"]["lr"] == 0.001
    status, again, err = _run(["train", "--config", str(path), "--print-config",
                               "--config-format", fmt])
    assert status == 0, err
    assert again == text


def test_command_line_beats_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d\ncategory: gear\nout: o\ndetector: cfm\nimage-size: 128\n"
                    "option:\n  epochs: 5\n  lr: 0.01\n")
    status, text, err = _run(["train", "--config", str(path), "--image-size", "64",
                              "-o", "epochs=7", "--category", "cookie", "--print-config"])
    assert status == 0, err
    cfg = load_config(_write(tmp_path / "out.yaml", text))
    assert cfg["image_size"] == 64 and cfg["category"] == "cookie"
    assert cfg["option"]["epochs"] == 7 and cfg["option"]["lr"] == 0.01


def _write(path, text):
    path.write_text(text)
    return path


def test_config_fills_positionals_and_checks_types(tmp_path):
    good = _write(tmp_path / "s.toml", 'input = "in.ply"\noutput = "out.ply"\nseed = 3\n')
    status, text, err = _run(["synth", "--config", str(good), "--print-config"])
    assert status == 0, err
    cfg = load_config(_write(tmp_path / "o.yaml", text))
    assert cfg["input"] == "in.ply" and cfg["seed"] == 3 and cfg["defect"] == "perlin"
    bad = _write(tmp_path / "b.yaml", "seed: many\n")
    status, _, err = _run(["synth", "--config", str(bad), "x.ply", "-o", "y.ply"])
    assert status == 2 and "seed" in err and len(err.strip().splitlines()) == 1
    bad = _write(tmp_path / "d.yaml", "defect: nonsense\n")
    status, _, err = _run(["synth", "--config", str(bad), "x.ply", "-o", "y.ply"])
    assert status == 2 and "defect" in err and "nonsense" in err


def test_unknown_key_is_one_line_error(tmp_path):
    path = _write(tmp_path / "c.yaml", "quiet: true\nbogus_key: 1\n")
    for command in (["train"], ["eval"], ["make-dataset"], ["sensitivity"]):
        status, out, err = _run([*command, "--config", str(path)])
        assert status == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "bogus_key" in lines[0]
        assert f"pcad {command[0]}" in lines[0]


def test_bad_config_file(tmp_path):
    status, _, err = _run(["train", "--config", str(tmp_path / "missing.yaml")])
    assert status == 2 and "missing.yaml" in err
    path = _write(tmp_path / "c.json", "{}")
    status, _, err = _run(["train", "--config", str(path)])
    assert status == 2 and ".toml" in err
    path = _write(tmp_path / "l.yaml", "- 1\n- 2\n")
    status, _, err = _run(["train", "--config", str(path)])
    assert status == 2 and "mapping" in err


@pytest.mark.parametrize("command", ["synth", "make-dataset", "train", "eval", "predict",
                                     "sensitivity"])
def test_print_config_includes_defaults(command):
    status, text, err = _run([command, "--print-config"])
    assert status == 0, err
    import yaml

    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict) and cfg
    assert "config" not in cfg and "print_config" not in cfg and "func" not in cfg
    expected = {"synth": ("points", 16384), "make-dataset": ("train", 10),
                "train": ("detector", "btf"), "sensitivity": ("n_per_defect", 3)}
    if command in expected:
        key, value = expected[command]
        assert cfg[key] == value
    if command == "train":
        assert cfg["option"]["sigma"] == 4.0  # a detector option with its default


def test_help_options_lists_every_detector_option():
    from pcad.detectors import detector_info, list_detectors

    for name in list_detectors():
        status, text, err = _run(["train", "--detector", name, "--help-options"])
        assert status == 0, err
        cls = detector_info(name).obj
        for key, _default, meaning in cls.options():
            assert meaning, f"{name}: option {key!r} has no help line (option_help)"
            line = next(x for x in text.splitlines() if x.split()[:1] == [key])
            assert meaning in line
    status, _, err = _run(["train", "--detector", "nope", "--help-options"])
    assert status == 2 and "nope" in err


@pytest.mark.parametrize("command", [["synth"], ["make-dataset"], ["train"], ["eval"],
                                     ["sensitivity"], ["viz", "sweep"]])
def test_help_shows_defaults(command):
    status, text, _ = _run([*command, "--help"])
    assert status == 0
    assert "(default: " in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_static_names_match_registries():
    from pcad.detectors import list_detectors
    from synth.dataset.config import DEFAULT_DEFECTS, MAX_POINTS, MAX_SIDE
    from synth.dataset.inject import InjectConfig
    from synth.defects import list_defects
    from synth.render import render_defects
    from synth.supervision import DEFECT_TYPES

    assert names.DETECTORS == tuple(list_detectors())
    assert names.GEOMETRIC_DEFECTS == tuple(list_defects(kind="geometric"))
    assert names.RENDER_DEFECTS == tuple(render_defects())
    assert names.DATASET_DEFAULT_DEFECTS == tuple(DEFAULT_DEFECTS)
    assert names.INJECT_DEFAULT_DEFECTS == tuple(InjectConfig.defects)
    assert names.SUPERVISION_DEFECTS == tuple(DEFECT_TYPES)
    assert (names.DATASET_MAX_SIDE, names.DATASET_MAX_POINTS) == (MAX_SIDE, MAX_POINTS)
    from synth.render.conditions import CONDITIONS

    assert names.DATASET_CONDITIONS == CONDITIONS


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["synth", "--help"]])
def test_help_imports_no_torch(argv):
    code = ("import sys\nfrom pcad.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'synth', 'viz', 'pcad.detectors', 'trimesh') "
            "if m in sys.modules)\nprint('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          check=False, timeout=120)
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:] + proc.stderr[-500:]
