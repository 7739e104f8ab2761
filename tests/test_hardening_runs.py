"""Hardening of run folders, memory banks and checkpoints (issue 18), and the CLI's catch-all.

Every detector is fitted once on a tiny synthetic dataset (32 x 32 pixels) and saved; the tests
tamper with copies of those run folders. Whatever is done to a run file, ``load_detector`` (and
``predict`` on what loads) raises a :class:`~pcad.errors.PcadError` naming the file, never
another exception, and ``pcad eval`` / ``pcad sensitivity`` print one line.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcad.cli import info_cmd
from pcad.cli.main import EXIT_ERROR, EXIT_INTERNAL, main
from pcad.data import MVTec3DDataset
from pcad.detectors import load_detector
from pcad.detectors.patches import MAX_IMAGE_SIZE, MAX_SIGMA, check_image_size, check_sigma
from pcad.engine import train
from pcad.errors import FileFormatError, InvalidInputError, PcadError
from pcad.features.checkpoint import load_checkpoint
from pcad.memory import MemoryBank
from synth.dataset import DatasetConfig, generate
from tests.helpers import run_pcad

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CATEGORY = "plate_holes"
SMALL = {"image_size": 32}
FPFH = {**SMALL, "point_backbone": "fpfh", "epochs": 1, "batch_size": 2}
CONFIGS = {
    "fpfh": SMALL, "btf": SMALL, "patchcore-rgb": SMALL,
    "cfm": {**SMALL, "epochs": 1},
    "m3dm": FPFH,
    "lsfa": {**FPFH, "queue_samples": 2, "global_queue": 2, "compact_start": 0.0},
    "synthsup": {**SMALL, "epochs": 1},
}
#: every file of every run (the property test damages each one)
RUN_FILES = [(name, f) for name, files in {
    "fpfh": ["detector.json", "bank.npz"],
    "btf": ["detector.json", "bank.npz"],
    "patchcore-rgb": ["bank.npz"],
    "cfm": ["detector.json", "cfm.pt"],
    "m3dm": ["detector.json", "bank_xyz.npz", "bank_fusion.npz", "uff.pt"],
    "lsfa": ["detector.json", "adapters.pt", "bank_rgb.npz"],
    "synthsup": ["detector.json", "synthsup.pt"],
}.items() for f in files]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs_data") / "synth"
    generate(DatasetConfig(categories=(CATEGORY,), train=3, validation=0, test_good=1,
                           test_defect=1, defects=("dent",), size=(32, 32), seed=0),
             root, progress=False)
    torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """Every detector fitted on ``data`` and saved: name -> run folder."""
    base = tmp_path_factory.mktemp("runs")
    for name, config in CONFIGS.items():
        train(data, CATEGORY, name, base / name, config=config, progress=False)
    return {name: base / name for name in CONFIGS}


@pytest.fixture(scope="module")
def sample(data):
    return next(iter(MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz")))


def copy_run(runs: dict[str, Path], name: str, dest: Path) -> Path:
    run = dest / f"{name}-run"
    shutil.copytree(runs[name], run)
    return run


def edit_record(run: Path, edit) -> None:
    meta = run / "detector.json"
    record = json.loads(meta.read_text())
    edit(record)
    meta.write_text(json.dumps(record))


def rewrite_bank(path: Path, meta_edit=None, arrays_edit=None) -> None:
    with np.load(path) as z:
        feats, idx, meta = z["features"], z["indices"], json.loads(str(z["meta"]))
    if meta_edit is not None:
        meta_edit(meta)
    if arrays_edit is not None:
        feats, idx = arrays_edit(feats, idx)
    with open(path, "wb") as fh:
        np.savez(fh, features=feats, indices=idx, meta=np.array(json.dumps(meta)))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


class Payload:
    """A pickle that would create ``MARKER`` when unpickled by an unsafe loader."""

    marker: Path = Path()

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def cli(*argv: str | Path) -> tuple[int, str, str]:
    return run_pcad(argv)


def assert_one_line(status: int, err: str, expected: int, *words: str) -> str:
    assert status == expected, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("pcad: error:")]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1], err
    for w in words:
        assert w in lines[0], (w, err)
    return lines[0]


# --------------------------------------------------------------- property: any damage, no escape


def damaged_bytes(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncated, byte-flipped, replaced or extended variants of ``data``."""
    n = len(data)

    @st.composite
    def flip(draw):
        b = bytearray(data)
        for pos in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
            b[pos] ^= draw(st.integers(1, 255))
        return bytes(b)

    return st.one_of(
        st.integers(0, n - 1).map(lambda k: data[:k]),
        flip(),
        st.binary(max_size=512),
        st.binary(min_size=1, max_size=64).map(lambda tail: data + tail),
        st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=32)).map(
            lambda t: data[:t[0]] + t[1] + data[t[0] + len(t[1]):]),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=5)


def json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, (*prefix, i))


def load_and_predict(run: Path, sample) -> str:
    """Load ``run`` and predict ``sample``: only a PcadError may escape, or a
    FileNotFoundError when the edited config names a weights file that does not exist (the
    CLI prints it as one line, as every file-system error). Returns ``"ok"`` or the error's
    message; any other exception type fails the test by escaping."""
    try:
        det = load_detector(run)
    except PcadError as exc:
        return str(exc)
    try:
        det.predict(sample)
    except (PcadError, FileNotFoundError) as exc:
        return str(exc)
    return "ok"


@pytest.mark.parametrize("name, filename", RUN_FILES)
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_damaged_run_file_raises_only_pcad_errors(runs, sample, name, filename, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(runs, name, Path(tmp))
        path = run / filename
        path.write_bytes(data.draw(damaged_bytes(path.read_bytes()), label="bytes"))
        assert load_and_predict(run, sample)  # "ok" or a non-empty message


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_edited_run_record_raises_only_pcad_errors(runs, sample, name, data):
    """A value of ``detector.json`` (any depth) replaced by any JSON value, or removed."""
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(runs, name, Path(tmp))
        record = json.loads((run / "detector.json").read_text())
        path = data.draw(st.sampled_from(sorted(json_paths(record), key=str)), label="path")
        value = data.draw(JSON_VALUES, label="value")
        remove = data.draw(st.booleans(), label="remove")
        if not path:
            record = value
        else:
            parent = record
            for key in path[:-1]:
                parent = parent[key]
            if remove:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        (run / "detector.json").write_text(json.dumps(record))
        assert load_and_predict(run, sample)  # "ok" or a non-empty message


# ------------------------------------------------------------------------ each case of the issue


def expect_load_error(run: Path, error: type[PcadError], *words: str) -> str:
    with pytest.raises(error) as info:
        load_detector(run)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.mark.parametrize("name, filename", [("cfm", "cfm.pt"), ("m3dm", "uff.pt"),
                                            ("lsfa", "adapters.pt"),
                                            ("synthsup", "synthsup.pt")])
def test_truncated_or_empty_torch_file(runs, tmp_path, name, filename):
    run = copy_run(runs, name, tmp_path)
    truncate(run / filename)
    expect_load_error(run, FileFormatError, str(run / filename), "empty or truncated")
    (run / filename).write_bytes(b"")
    expect_load_error(run, FileFormatError, str(run / filename), "empty or truncated")


def test_garbage_torch_file(runs, tmp_path):
    run = copy_run(runs, "cfm", tmp_path)
    (run / "cfm.pt").write_bytes(b"garbage" * 50)
    expect_load_error(run, FileFormatError, str(run / "cfm.pt"), "cannot be read")


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickled_torch_file_is_refused_without_running_it(runs, tmp_path, how):
    run = copy_run(runs, "cfm", tmp_path)
    Payload.marker = tmp_path / "executed"
    if how == "pickle":
        (run / "cfm.pt").write_bytes(pickle.dumps(Payload()))
    else:
        torch.save({"f_2d3d": Payload()}, run / "cfm.pt")
    msg = expect_load_error(run, FileFormatError, str(run / "cfm.pt"), "weights-only")
    assert "\n" not in msg and len(msg) < 400
    assert not Payload.marker.exists()


def test_torch_file_of_another_structure(runs, tmp_path):
    run = copy_run(runs, "cfm", tmp_path)
    torch.save([1, 2], run / "cfm.pt")
    expect_load_error(run, FileFormatError, "cfm.pt", "expected a dict with keys")
    saved = torch.load(runs["cfm"] / "cfm.pt", weights_only=True)
    saved["stats"] = {"rgb_mean": torch.zeros(3)}
    torch.save(saved, run / "cfm.pt")
    expect_load_error(run, FileFormatError, "cfm.pt", "stats 'rgb_mean'", "(152,)")


def test_weight_shape_mismatch(runs, tmp_path):
    run = copy_run(runs, "cfm", tmp_path)
    saved = torch.load(run / "cfm.pt", weights_only=True)
    saved["f_2d3d"]["0.weight"] = torch.zeros(5, 5)
    torch.save(saved, run / "cfm.pt")
    expect_load_error(run, FileFormatError, "cfm.pt", "['f_2d3d']", "shape mismatch",
                      "0.weight")


def test_huge_network_sizes_in_the_record_allocate_nothing(runs, tmp_path):
    run = copy_run(runs, "cfm", tmp_path)
    edit_record(run, lambda r: r["state"].update(hidden=10**6))  # 1.2 GB per layer if built
    expect_load_error(run, FileFormatError, "cfm.pt", "shape mismatch")
    edit_record(run, lambda r: r["state"].update(hidden=10**10))
    expect_load_error(run, FileFormatError, "cfm.pt", "make no network")
    edit_record(run, lambda r: r["state"].update(hidden=-3))
    expect_load_error(run, FileFormatError, "detector.json", "'state.hidden'")


@pytest.mark.parametrize("edit, words", [
    (lambda r: r.pop("config"), ["no 'config'"]),
    (lambda r: r.update(config=None), ["'config' must be an object", "got null"]),
    (lambda r: r.update(config=[1, 2]), ["'config' must be an object", "got a list"]),
    (lambda r: r.update(state=None), ["'state' must be an object"]),
    (lambda r: r["state"].pop("rgb_dim"), ["'state.rgb_dim'"]),
    (lambda r: r["state"].update(history="x"), ["bad 'state' record", "ValueError"]),
    (lambda r: r.update(detector=None), ["'detector' must be a detector name"]),
    (lambda r: r["config"].update(bogus=1), ["bad 'config'", "unknown option(s) ['bogus']"]),
    (lambda r: r["config"].update(image_size=10**6), ["image_size", str(MAX_IMAGE_SIZE)]),
])
def test_damaged_record(runs, tmp_path, edit, words):
    run = copy_run(runs, "cfm", tmp_path)
    edit_record(run, edit)
    expect_load_error(run, FileFormatError, str(run / "detector.json"), *words)


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", ["expected a JSON object, got a list"]),
    ("null", ["expected a JSON object, got null"]),
    ('{"detector": "cfm", "conf', ["not JSON"]),
    ("\udcff", ["not JSON"]),
])
def test_record_not_an_object(runs, tmp_path, text, words):
    run = copy_run(runs, "cfm", tmp_path)
    (run / "detector.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    expect_load_error(run, FileFormatError, str(run / "detector.json"), *words)


@pytest.mark.parametrize("name, edit, words", [
    ("m3dm", lambda r: r["state"].pop("stats"), ["'state.stats'"]),
    ("m3dm", lambda r: r["state"].update(stats=[1]), ["'state.stats'"]),
    ("m3dm", lambda r: r["state"]["stats"]["rgb"].__setitem__(1, 0.0), ["std", "positive"]),
    ("m3dm", lambda r: r["state"].update(w_image=[1.0]), ["'state.w_image'", "3 numbers"]),
    ("lsfa", lambda r: r["state"].pop("rgb_dim"), ["'state.rgb_dim'"]),
    ("synthsup", lambda r: r["state"].update(in_channels="x"), ["'state.in_channels'"]),
    ("btf", lambda r: r["state"].update(scales={"rgb": "x", "xyz": 1.0}),
     ["'state.scales.rgb'", "the string 'x'"]),
    ("btf", lambda r: r["state"].update(scales=[1]), ["'state.scales'"]),
    ("btf", lambda r: r["state"].update(scales={"depth": 1.0}), ["'state.scales'"]),
    # sizes that would hang or allocate terabytes before anything is read
    ("synthsup", lambda r: r["config"].update(layers=2**70), ["bad 'config'", "layers"]),
    ("fpfh", lambda r: r["config"].update(sigma=1e9), ["bad 'config'", "sigma", "64"]),
    ("synthsup", lambda r: r["state"]["defect_counts"].update(bump=float("inf")),
     ["bad 'state' record", "OverflowError"]),
])
def test_damaged_state_record(runs, tmp_path, name, edit, words):
    run = copy_run(runs, name, tmp_path)
    edit_record(run, edit)
    expect_load_error(run, FileFormatError, str(run / "detector.json"), *words)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "npy", "half-zip"])
def test_damaged_bank_file(runs, tmp_path, damage):
    run = copy_run(runs, "btf", tmp_path)
    bank = run / "bank.npz"
    if damage == "truncated":
        truncate(bank)
    elif damage == "empty":
        bank.write_bytes(b"")
    elif damage == "text":
        bank.write_text("hello world")
    elif damage == "npy":
        np.save(open(bank, "wb"), np.zeros(3))  # noqa: SIM115 - closed by the garbage collector
    else:
        truncate(bank, 0.9)
    expect_load_error(run, FileFormatError, str(bank), "not a pcad memory bank file")


@pytest.mark.parametrize("meta_edit, arrays_edit, words", [
    (lambda m: m["config"].update(bogus=1), None, ["unknown key(s) ['bogus']"]),
    (lambda m: m.update(config=[1]), None, ["no config object"]),
    (lambda m: m.update(version="x"), None, ["version must be an int"]),
    (lambda m: m.update(version=99), None, ["newer"]),
    (lambda m: m["config"].update(backend="nope"), None, ["bad config", "backend"]),
    (lambda m: m["config"].update(coreset_ratio="x"), None, ["bad config", "coreset_ratio"]),
    (None, lambda f, i: (f * np.nan, i), ["NaN or infinite"]),
    (None, lambda f, i: (f.astype(str), i), ["must be floats"]),
    (None, lambda f, i: (f[:0], i[:0]), ["inconsistent arrays"]),
    (None, lambda f, i: (f, i[:1]), ["inconsistent arrays"]),
])
def test_bad_bank_contents(runs, tmp_path, meta_edit, arrays_edit, words):
    run = copy_run(runs, "btf", tmp_path)
    rewrite_bank(run / "bank.npz", meta_edit, arrays_edit)
    expect_load_error(run, FileFormatError, str(run / "bank.npz"), *words)


def test_bank_header_claiming_more_than_the_file_holds(tmp_path):
    """A features header claiming 10^12 rows is refused before anything is allocated."""
    good = tmp_path / "good.npz"
    MemoryBank(coreset_ratio=1.0).fit(np.eye(4, dtype=np.float32)).save(good)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)})
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            blob = zin.read(item)
            if item.filename == "features.npy":  # the same 64 bytes of data
                blob = header.getvalue() + np.eye(4, dtype=np.float32).tobytes()
            zout.writestr(item, blob)
    with pytest.raises(FileFormatError, match=r"claims shape \(1000000000000, 4\)"):
        MemoryBank.load(bad)
    assert np.array_equal(MemoryBank.load(good).features, np.eye(4, dtype=np.float32))


def test_missing_run_files_say_incomplete(runs, tmp_path):
    for name, filename in [("btf", "bank.npz"), ("cfm", "cfm.pt"), ("m3dm", "bank_rgb.npz")]:
        run = copy_run(runs, name, tmp_path / name)
        (run / filename).unlink()
        expect_load_error(run, InvalidInputError, f"incomplete {name} run", filename)


@pytest.mark.parametrize("name, other, what", [
    ("btf", "fpfh", "bank.npz"),
    ("fpfh", "btf", "bank.npz"),
    ("m3dm", None, "bank_xyz.npz"),
])
def test_run_with_other_features_names_the_run(runs, sample, tmp_path, name, other, what):
    run = copy_run(runs, name, tmp_path)
    if other is None:  # one bank of the run replaced by another of its banks
        shutil.copy(run / "bank_rgb.npz", run / what)
    else:
        shutil.copy(runs[other] / what, run / what)
    det = load_detector(run)
    with pytest.raises(InvalidInputError) as info:
        det.predict(sample)
    msg = str(info.value)
    assert msg.startswith(f"run {run}: ") and what in msg
    assert "other features or by another detector" in msg


def test_record_renamed_to_another_detector(runs, sample, tmp_path):
    run = copy_run(runs, "fpfh", tmp_path)
    edit_record(run, lambda r: r.update(detector="btf"))
    with pytest.raises(InvalidInputError, match=f"run {run}: its memory bank"):
        load_detector(run).predict(sample)


def test_image_size_and_sigma_caps():
    assert check_image_size(MAX_IMAGE_SIZE) == MAX_IMAGE_SIZE
    with pytest.raises(InvalidInputError, match=f"<= {MAX_IMAGE_SIZE}"):
        check_image_size(MAX_IMAGE_SIZE + 8)
    assert check_sigma(MAX_SIGMA) == MAX_SIGMA
    for bad in (MAX_SIGMA * 2, -1.0):
        with pytest.raises(InvalidInputError, match="sigma"):
            check_sigma(bad)


def test_checkpoint_errors_are_one_short_line(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2)}, path)
    truncate(path)
    with pytest.raises(FileFormatError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: cannot be read as a torch checkpoint (empty or " \
                              "truncated file)"


def test_valid_runs_still_load_and_predict(runs, sample):
    for name, run in runs.items():
        det = load_detector(run)
        assert det.run_path == run
        score, amap = det.predict(sample)
        assert np.isfinite(score) and amap.shape == sample.shape, name


# -------------------------------------------------------------------------------------- CLI


def eval_argv(data: Path, run: Path, out: Path) -> list:
    return ["eval", "--data", data, "--category", CATEGORY, "--run", run, "--out", out,
            "--quiet"]


@pytest.mark.parametrize("damage, words", [
    (lambda run: truncate(run / "cfm.pt"), ["cfm.pt", "empty or truncated"]),
    (lambda run: (run / "cfm.pt").write_bytes(pickle.dumps(Payload())), ["weights-only"]),
    (lambda run: edit_record(run, lambda r: r.update(config=None)), ["'config'"]),
    (lambda run: edit_record(run, lambda r: r["config"].update(image_size=10**6)),
     ["image_size"]),
])
def test_cli_eval_tampered_cfm_run(runs, data, tmp_path, damage, words):
    Payload.marker = tmp_path / "executed"
    run = copy_run(runs, "cfm", tmp_path)
    damage(run)
    status, out, err = cli(*eval_argv(data, run, tmp_path / "res"))
    assert_one_line(status, err, EXIT_ERROR, str(run), *words)
    assert not Payload.marker.exists()


def test_cli_eval_tampered_bank_and_other_detector(runs, data, tmp_path):
    run = copy_run(runs, "btf", tmp_path / "a")
    truncate(run / "bank.npz")
    status, _, err = cli(*eval_argv(data, run, tmp_path / "res-a"))
    assert_one_line(status, err, EXIT_ERROR, str(run / "bank.npz"), "not a pcad memory bank")
    run = copy_run(runs, "btf", tmp_path / "b")
    shutil.copy(runs["fpfh"] / "bank.npz", run / "bank.npz")
    status, _, err = cli(*eval_argv(data, run, tmp_path / "res-b"))
    assert_one_line(status, err, EXIT_ERROR, f"run {run}", "another detector")


def test_cli_sensitivity_with_truncated_bank(runs, data, tmp_path):
    run = copy_run(runs, "btf", tmp_path)
    truncate(run / "bank.npz")
    status, _, err = cli("sensitivity", "--data", data, "--category", CATEGORY, "--run", run,
                         "--strengths", "0.01", "--out", tmp_path / "sens", "--quiet")
    assert_one_line(status, err, EXIT_ERROR, str(run / "bank.npz"))


@pytest.mark.parametrize("exc", [MemoryError(),
                                 RuntimeError("DefaultCPUAllocator: can't allocate memory: "
                                              "you tried to allocate 12000000000000 bytes")])
def test_cli_out_of_memory_is_one_line_with_a_hint(monkeypatch, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(info_cmd, "run", boom)
    status, out, err = cli("info")
    line = assert_one_line(status, err, EXIT_ERROR, "out of memory", "--points", "image_size")
    assert out == "" and line.startswith("pcad: error: out of memory")


def test_cli_unexpected_exception_is_an_internal_error(monkeypatch):
    def boom(args):
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr(info_cmd, "run", boom)
    status, _, err = cli("info")
    line = assert_one_line(status, err, EXIT_INTERNAL)
    assert line == ("pcad: error: internal error: ZeroDivisionError: boom; second line (run "
                    "with --debug for the traceback)")
    assert EXIT_INTERNAL not in (0, EXIT_ERROR)


def test_cli_debug_raises_with_the_traceback(monkeypatch, runs, data, tmp_path):
    def boom(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(info_cmd, "run", boom)
    with pytest.raises(ZeroDivisionError, match="boom"):
        main(["--debug", "info"])
    run = copy_run(runs, "btf", tmp_path)
    (run / "bank.npz").write_bytes(b"")
    with pytest.raises(FileFormatError, match="bank.npz"):
        main(["--debug", *map(str, eval_argv(data, run, tmp_path / "res"))])
