"""Hardening of ``pcad make-dataset`` (issue 18): concurrent runs, kills, caps, failed starts.

- two runs into one ``--out``: the second is refused naming the first's pid (lock file
  ``<out>/.pcad-lock``), the first completes with the bytes of a single run;
- temporary files carry their writer's pid: a resumed run removes a dead writer's only;
- a lock left by a dead process is taken over (flock, and the O_EXCL fallback);
- ``kill -9`` of the parent of ``--workers 2``: the workers exit within seconds;
- a kill between the renames of one sample: the resumed run rewrites that sample;
- ``--size``, ``--points`` and sample counts are capped before anything is written; a start
  that failed leaves nothing that blocks a corrected rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pcad.io.lock as lock_mod
import synth.dataset.runner as runner
from pcad.cli.main import EXIT_ERROR, build_parser, main
from pcad.errors import InvalidInputError
from pcad.io.atomic import is_stale_temp, temp_owner
from pcad.io.lock import LOCK_NAME, FolderLockedError, folder_lock, host_id
from synth.dataset import DatasetConfig, generate
from synth.dataset.inject import InjectConfig, inject
from synth.dataset.sample import remove_stale_temps

REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
KW = {"categories": ("gear",), "train": 1, "validation": 0, "test_good": 1, "test_defect": 1,
      "defects": ("dent",), "size": (48, 48), "seed": 3}
CFG = DatasetConfig(**KW)
ARGS = ("--categories", "gear", "--train", "1", "--validation", "0", "--test-good", "1",
        "--test-defect", "1", "--defects", "dent", "--size", "48", "48", "--seed", "3",
        "--quiet")


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def pcad_cmd(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "pcad", *map(str, argv)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A clean single-process run of CFG: its folder and file hashes."""
    root = tmp_path_factory.mktemp("reference") / "ds"
    generate(CFG, root, progress=False)
    return root, tree(root)


@pytest.fixture
def sleeper():
    """A live process (not ours to write anything): its pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------- one run per folder


@POSIX
def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path, reference,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    source, ref = reference
    out = tmp_path / "ds"
    build_parser()  # import every subcommand now, so that the second run starts at once
    # the first run: its three samples last a few seconds, the refusals take milliseconds
    first = subprocess.Popen(pcad_cmd("make-dataset", "--out", out, *ARGS),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / LOCK_NAME).exists() or not (out / "dataset.json").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        status, stdout, stderr = cli(capsys, "make-dataset", "--out", out, *ARGS)
        assert status == EXIT_ERROR and stdout == ""
        assert stderr.startswith(f"pcad: error: {out}: in use by pcad (pid {first.pid} on ")
        assert stderr.count("\n") == 1 and "choose another --out" in stderr
        # inject mode follows the same rules
        status, _, stderr = cli(capsys, "make-dataset", "--from-mvtec3d", source, "--out", out,
                                "--quiet")
        assert status == EXIT_ERROR and f"in use by pcad (pid {first.pid} " in stderr
        assert first.poll() is None, "the first run ended too early for this test"
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    # the first run was not disturbed: the bytes of a single run, no temporaries, no lock
    assert tree(out) == ref


# ------------------------------------------------------------------------ pid-tagged temps


def test_temporary_files_name_their_writer(tmp_path: Path) -> None:
    from pcad.io import atomic_save

    seen = []
    atomic_save(tmp_path / "a.png", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert temp_owner(seen[0]) == (os.getpid(), host_id())
    assert seen[0].startswith(".a.png.") and seen[0].endswith(".tmp.png")


def test_only_a_dead_writers_temporaries_are_removed(tmp_path: Path, sleeper: int) -> None:
    host, d = host_id(), tmp_path / "gear" / "test" / "dent" / "rgb"
    d.mkdir(parents=True)
    names = {
        "dead": f".000.png.{dead_pid()}-{host}.ab12_x.tmp.png",
        "live": f".001.png.{sleeper}-{host}.cd34_y.tmp.png",
        "own": f".002.png.{os.getpid()}-{host}.ef56_z.tmp.png",  # a pid reused after a restart
        "legacy": ".003.png.k1ll3d.tmp.png",  # an older pcad's, without pid
        "foreign-fresh": f".004.png.12-{'0' * 8 if host != '0' * 8 else '1' * 8}.g7_w.tmp.png",
        "foreign-old": f".005.png.12-{'0' * 8 if host != '0' * 8 else '1' * 8}.h8_v.tmp.png",
    }
    for name in names.values():
        (d / name).write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(d / names["foreign-old"], (old, old))
    (d / "000.png").write_bytes(b"a finished file")  # never a temporary
    assert not is_stale_temp(d / names["own"])
    assert remove_stale_temps(tmp_path) == 4
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["000.png", names["live"], names["foreign-fresh"]])


def test_a_resumed_run_keeps_a_live_writers_temporaries(tmp_path: Path, sleeper: int,
                                                        reference) -> None:
    _, ref = reference
    out = tmp_path / "ds"
    generate(CFG, out, progress=False)
    d = out / "gear" / "test" / "dent" / "xyz"
    (out / "gear" / "test" / "dent" / "meta" / "000.json").unlink()  # a sample to redo
    live = d / f".000.tiff.{sleeper}-{host_id()}.q1_w.tmp.tiff"
    dead = d / f".000.tiff.{dead_pid()}-{host_id()}.q2_w.tmp.tiff"
    live.write_bytes(b"in flight")
    dead.write_bytes(b"left by a kill")
    assert generate(CFG, out, progress=False)["written"] == 1
    assert live.read_bytes() == b"in flight" and not dead.exists()
    live.unlink()
    assert tree(out) == ref


# ---------------------------------------------------------------------- lock takeover


LOCK_AND_DIE = """
import os, signal, sys
from pcad.io.lock import folder_lock
with folder_lock(sys.argv[1]):
    os.kill(os.getpid(), signal.SIGKILL)
"""


@POSIX
def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path, reference) -> None:
    _, ref = reference
    out = tmp_path / "ds"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", LOCK_AND_DIE, str(out)], cwd=REPO)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    held = json.loads((out / LOCK_NAME).read_text())
    assert held["pid"] == proc.pid and held["host_id"] == host_id()
    report = generate(CFG, out, progress=False)  # an empty folder but for the dead lock
    assert report["written"] == 3
    assert tree(out) == ref  # the lock file is gone too


def test_exclusive_file_fallback(tmp_path: Path, sleeper: int,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Where flock is missing (Windows) the lock file is created with O_EXCL."""
    monkeypatch.setattr(lock_mod, "fcntl", None)
    path = tmp_path / LOCK_NAME
    with folder_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(FolderLockedError, match=f"pid {os.getpid()} "):
            with folder_lock(tmp_path):
                pass
    assert not path.exists()
    # a dead pid of this host: taken over
    path.write_text(json.dumps({"pid": dead_pid(), "host": "h", "host_id": host_id()}))
    with folder_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    # a live pid, or a process of another host: refused, the lock left as it was
    for holder in ({"pid": sleeper, "host": "here", "host_id": host_id()},
                   {"pid": 1, "host": "elsewhere", "host_id": "zzzzzzzz"}):
        path.write_text(json.dumps(holder))
        with pytest.raises(FolderLockedError,
                           match=f"in use by pcad \\(pid {holder['pid']} on {holder['host']}\\)"):
            with folder_lock(tmp_path):
                pass
        assert json.loads(path.read_text()) == holder


# ------------------------------------------------------------ workers die with the parent


def descendants(pid: int) -> set[int]:
    """Every live (non-zombie) descendant of ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            parents[int(d.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            out.add(pid)
    return out


@POSIX
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    parent = subprocess.Popen(pcad_cmd("make-dataset", "--out", out, *ARGS, "--train", "40",
                                       "--workers", "2"),
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        # wait until both workers are at work (a sample is written)
        while not list(out.glob("gear/*/*/meta/*.json")):
            assert parent.poll() is None, parent.stderr.read().decode()
            assert time.monotonic() < deadline, "no sample written in 90 s"
            time.sleep(0.1)
        workers = descendants(parent.pid)
        assert len(workers) >= 2, workers
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(workers), f"workers {alive(workers)} outlived their killed parent"
        written = sorted(out.rglob("*"))
        time.sleep(1.0)
        assert sorted(out.rglob("*")) == written, "something still writes into the dataset"
        assert len(list(out.glob("gear/train/good/meta/*.json"))) < 40
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in alive(workers | descendants(parent.pid)):  # orphans of a failed check
            os.kill(pid, signal.SIGKILL)


ORPHAN_CHILD = """
import os, sys, time
from pathlib import Path
import synth.dataset.runner as R
R._set_parent_death_signal = lambda: False  # as where prctl is missing: the portable fallback
R._worker_init(os.getppid())
Path(sys.argv[1]).write_text("ready")
time.sleep(30)
"""
ORPHAN_PARENT = """
import subprocess, sys, time
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
"""  # then exits, its child still running


@POSIX
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_worker_without_prctl_exits_when_orphaned(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", ORPHAN_PARENT, ORPHAN_CHILD,
                           str(tmp_path / "ready")], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    child = {int(proc.stdout.split()[0])}
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not alive(child), "the orphaned worker kept running"
    finally:
        for pid in alive(child):
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------- a kill between a sample's renames

KILL_BETWEEN_RENAMES = """
import os, signal, sys
import pcad.io.atomic as A
from synth.dataset import DatasetConfig, generate
real = A.os.replace
def replace(src, dst):
    if str(dst).endswith("/test/dent/gt/000.png"):  # after the renames of rgb and xyz
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
A.os.replace = replace
generate(DatasetConfig(**{kw!r}), sys.argv[1], progress=False)
"""


@POSIX
def test_a_sample_cut_between_its_renames_is_rewritten(tmp_path: Path, reference) -> None:
    _, ref = reference
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES.format(kw=KW), str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    d = out / "gear" / "test" / "dent"
    assert (d / "rgb" / "000.png").exists() and (d / "xyz" / "000.tiff").exists()
    assert not (d / "gt" / "000.png").exists() and not (d / "meta" / "000.json").exists()
    (d / "rgb" / "000.png").write_bytes(b"not this sample's rgb")  # proves the rewrite
    report = generate(CFG, out, progress=False)
    assert report["written"] == 1 and report["skipped"] == 2
    assert tree(out) == ref


# ---------------------------------------------------------- caps, and failed starts


CAPS = {
    "size": (("--size", "100000", "100000"), "--size height: must be >= 8 and <= 4096, "
             "got 100000"),
    "size-width": (("--size", "48", "5000"), "--size width: must be >= 8 and <= 4096, got 5000"),
    "points": (("--format", "real3d", "--points", "100000000000"), "--points: must be >= 10 "
               "and <= 5000000"),
    "samples": (("--train", "2000000"), "at most 1000000"),
    "variation": (("--variation", "0.9"), "--variation: must be <= 0.5"),
}


@pytest.mark.parametrize("case", sorted(CAPS))
def test_caps_are_checked_before_anything_is_written(case: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    extra, message = CAPS[case]
    out = tmp_path / "new"
    status, stdout, stderr = cli(capsys, "make-dataset", "--out", out, *ARGS, *extra)
    assert status == EXIT_ERROR and stdout == ""
    assert stderr.startswith("pcad: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert not out.exists()
    if case == "size":  # the corrected rerun goes through
        assert cli(capsys, "make-dataset", "--out", out, *ARGS)[0] == 0


def test_a_failed_start_leaves_nothing_behind(tmp_path: Path, reference,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, ref = reference

    def failing(cfg, root, task):
        raise MemoryError("simulated: the first sample does not fit")

    monkeypatch.setattr(runner, "run_task", failing)
    with pytest.raises(MemoryError):
        generate(DatasetConfig(**{**KW, "seed": 4}), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    # into a folder the user made: it is left empty
    (tmp_path / "mine").mkdir()
    with pytest.raises(MemoryError):
        generate(DatasetConfig(**{**KW, "seed": 4}), tmp_path / "mine", progress=False)
    assert list((tmp_path / "mine").iterdir()) == []
    monkeypatch.undo()
    generate(CFG, tmp_path / "mine", progress=False)
    assert tree(tmp_path / "mine") == ref


def test_a_record_without_samples_does_not_block_another_configuration(
        tmp_path: Path, reference, capsys: pytest.CaptureFixture[str]) -> None:
    """What a failed start of an older pcad left: dataset.json (complete: false) and the
    camera files of another configuration, no sample."""
    _, ref = reference
    out = tmp_path / "ds"
    other = DatasetConfig(**{**KW, "categories": ("cookie",), "size": (64, 64)})
    (out / "cookie" / "calibration").mkdir(parents=True)
    (out / "cookie" / "calibration" / "camera_parameters.json").write_text("{}")
    (out / "dataset.json").write_text(json.dumps({"generator": "pcad", "complete": False,
                                                  "config": other.to_json(), "counts": {}}))
    assert cli(capsys, "make-dataset", "--out", out, *ARGS)[0] == 0
    assert tree(out) == ref
    # once samples exist, another configuration is still refused
    status, _, stderr = cli(capsys, "make-dataset", "--out", out, *ARGS, "--seed", "9")
    assert status == EXIT_ERROR and "holds a different dataset" in stderr
    assert tree(out) == ref


def test_a_refused_folder_is_left_as_it_was(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """No dataset.json but a file where a run would put its camera file: refused, and the
    failure clean-up does not take that file for its own."""
    out = tmp_path / "mine"
    (out / "gear" / "calibration").mkdir(parents=True)
    (out / "gear" / "calibration" / "camera_parameters.json").write_text("my camera")
    status, _, stderr = cli(capsys, "make-dataset", "--out", out, *ARGS)
    assert status == EXIT_ERROR and "not empty and has no dataset.json" in stderr
    assert tree(out) == {"gear/calibration/camera_parameters.json":
                         hashlib.sha256(b"my camera").hexdigest()}


def test_an_unreadable_record_is_refused(tmp_path: Path, reference,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = reference
    for text in ("{not json", "[1, 2]"):
        out = tmp_path / f"ds{len(text)}"
        out.mkdir()
        (out / "dataset.json").write_text(text)
        for argv in (("--out", out, *ARGS), ("--from-mvtec3d", source, "--out", out, "--quiet")):
            status, _, stderr = cli(capsys, "make-dataset", *argv)
            assert status == EXIT_ERROR and stderr.startswith(f"pcad: error: {out}")
            assert "not touching this folder" in stderr and stderr.count("\n") == 1
        assert (out / "dataset.json").read_text() == text


def test_inject_source_without_good_scans(tmp_path: Path) -> None:
    """A category with an empty train/good/xyz: refused before anything is written (it was a
    ZeroDivisionError after the good splits had been copied)."""
    (tmp_path / "src" / "gear" / "train" / "good" / "xyz").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="no good scan to put defects on"):
        inject(InjectConfig(str(tmp_path / "src"), defects=("dent",), test_defect=1),
               tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
