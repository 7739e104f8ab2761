"""data_scripts against a local HTTP server on 127.0.0.1 serving tiny archives.

The server honours ``Range: bytes=N-`` and can cut a response in half once, so resuming,
checksum errors, HTML answers and all-or-nothing extraction are tested without any external
network.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from data_scripts.datasets import REGISTRY, get_info, list_datasets
from data_scripts.fetch import (
    ChecksumError,
    DownloadError,
    DownloadInterrupted,
    ExtractError,
    archive_kind,
    download,
    extract,
    verify,
)
from data_scripts.get_dataset import main as get_dataset_main
from pcad.data import MVTec3DDataset, Real3DDataset

# --------------------------------------------------------------------------------------------
# the loopback server
# --------------------------------------------------------------------------------------------


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)  # send half the body, then close
    html: set[str] = field(default_factory=set)  # answer with an HTML page
    honour_range: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``state.files``; honours ``Range: bytes=N-``."""

    server: _Server

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            cut = self.path in state.cut_once
            state.cut_once.discard(self.path)
        if self.path in state.html:
            body = b"<html><body>Please confirm the download</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and state.honour_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    httpd = _Server(("127.0.0.1", 0), RangeHandler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# tiny archives
# --------------------------------------------------------------------------------------------


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


TINY = {"pkg/README.txt": b"tiny dataset\n", "pkg/a/b.bin": bytes(range(256)) * 40}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Names of partial or temporary files and folders under ``folder``."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".")
                  or p.name.endswith(".part"))


# --------------------------------------------------------------------------------------------
# download + verify
# --------------------------------------------------------------------------------------------


def test_download_verify_extract(server, tmp_path):
    url, state = server
    blob = tar_bytes(TINY)
    state.files["/tiny.tar.gz"] = blob
    dest = download(url + "/tiny.tar.gz", tmp_path / "dl" / "tiny.tar.gz", sha(blob), timeout=10)
    assert dest.read_bytes() == blob and leftovers(tmp_path) == []
    assert verify(dest, sha(blob)) == sha(blob)
    assert verify(dest, md5=hashlib.md5(blob).hexdigest()) == sha(blob)
    out = extract(dest, tmp_path / "x")
    assert (out / "pkg" / "README.txt").read_bytes() == TINY["pkg/README.txt"]
    assert (out / "pkg" / "a" / "b.bin").read_bytes() == TINY["pkg/a/b.bin"]
    assert leftovers(tmp_path) == []
    # a second call finds the verified file and downloads nothing
    n = len(state.requests)
    assert download(url + "/tiny.tar.gz", dest, sha(blob)) == dest
    assert len(state.requests) == n
    with pytest.raises(ExtractError, match="already exists"):
        extract(dest, out)
    extract(dest, out, overwrite=True)
    assert (out / "pkg" / "README.txt").exists() and leftovers(tmp_path) == []


def test_wrong_checksum_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    url, state = server
    state.files["/f.tar.gz"] = tar_bytes(TINY)
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match="SHA-256 mismatch") as info:
        download(url + "/f.tar.gz", tmp_path / "f.tar.gz", wrong, timeout=10)
    assert wrong in str(info.value) and "deleted" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ChecksumError, match="MD5 mismatch"):
        download(url + "/f.tar.gz", tmp_path / "f.tar.gz", md5="1" * 32, timeout=10)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download(url + "/f.tar.gz", tmp_path / "f.tar.gz", "abc")


def test_unknown_checksum_needs_an_explicit_opt_out(server, tmp_path):
    url, state = server
    blob = tar_bytes(TINY)
    state.files["/f.tar.gz"] = blob
    with pytest.raises(ChecksumError, match="--no-verify"):
        download(url + "/f.tar.gz", tmp_path / "f.tar.gz")
    assert state.requests == [] and list(tmp_path.iterdir()) == []
    dest = download(url + "/f.tar.gz", tmp_path / "f.tar.gz", allow_unverified=True, timeout=10)
    assert dest.read_bytes() == blob
    with pytest.raises(ChecksumError, match="no checksum"):
        verify(dest)
    assert verify(dest, allow_unverified=True) == sha(blob)


def test_interrupted_download_resumes_on_retry(server, tmp_path):
    url, state = server
    blob = tar_bytes({"big.bin": np.random.default_rng(0).bytes(200_000)})
    state.files["/big.tar.gz"] = blob
    state.cut_once.add("/big.tar.gz")
    dest = tmp_path / "big.tar.gz"
    part = tmp_path / "big.tar.gz.part"
    with pytest.raises(DownloadInterrupted, match="resume"):
        download(url + "/big.tar.gz", dest, sha(blob), retries=0, timeout=10)
    assert not dest.exists() and 0 < part.stat().st_size < len(blob)
    half = part.stat().st_size
    download(url + "/big.tar.gz", dest, sha(blob), retries=0, timeout=10)
    assert dest.read_bytes() == blob and not part.exists()
    assert state.requests[-1] == ("/big.tar.gz", f"bytes={half}-")  # a Range request


def test_interrupted_download_retries_by_itself(server, tmp_path):
    url, state = server
    blob = tar_bytes(TINY)
    state.files["/t.tgz"] = blob
    state.cut_once.add("/t.tgz")
    dest = download(url + "/t.tgz", tmp_path / "t.tgz", sha(blob), retries=1, backoff=0.0,
                    timeout=10)
    assert dest.read_bytes() == blob and leftovers(tmp_path) == []
    assert [r[1] is not None for r in state.requests] == [False, True]


def test_resume_when_server_ignores_range_and_stale_part(server, tmp_path):
    url, state = server
    blob = tar_bytes(TINY)
    state.files["/t.tgz"] = blob
    state.honour_range = False
    (tmp_path / "t.tgz.part").write_bytes(blob[:100])
    download(url + "/t.tgz", tmp_path / "t.tgz", sha(blob), timeout=10)  # restarted from 0
    assert (tmp_path / "t.tgz").read_bytes() == blob
    # a corrupt .part of the full size: the range is unsatisfiable, the checksum fails
    state.honour_range = True
    (tmp_path / "u.tgz.part").write_bytes(b"x" * len(blob))
    state.files["/u.tgz"] = blob
    with pytest.raises(ChecksumError):
        download(url + "/u.tgz", tmp_path / "u.tgz", sha(blob), timeout=10)
    assert not (tmp_path / "u.tgz.part").exists()
    # resume=False starts over
    (tmp_path / "u.tgz.part").write_bytes(b"junk")
    download(url + "/u.tgz", tmp_path / "u.tgz", sha(blob), resume=False, timeout=10)
    assert (tmp_path / "u.tgz").read_bytes() == blob


def test_http_errors_and_html_pages(server, tmp_path):
    url, state = server
    state.html.add("/drive")
    with pytest.raises(DownloadError, match="HTML page"):
        download(url + "/drive", tmp_path / "d.zip", "0" * 64, timeout=10)
    with pytest.raises(DownloadError, match="404"):
        download(url + "/missing.zip", tmp_path / "m.zip", "0" * 64, timeout=10)
    with pytest.raises(ValueError, match="http"):
        download("ftp://127.0.0.1/x", tmp_path / "x", "0" * 64)
    with pytest.raises(DownloadError, match="cannot connect"):
        download("http://127.0.0.1:9/x", tmp_path / "x", "0" * 64, timeout=2, retries=0)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------


def test_extract_kinds_by_content(tmp_path):
    for i, (name, blob) in enumerate([
        ("a.zip", zip_bytes(TINY)),
        ("b.tar.xz", tar_bytes(TINY, "w:xz")),
        ("c.tar", tar_bytes(TINY, "w")),
        ("CandyCane.zip", tar_bytes(TINY, "w:bz2")),  # Eyecandies: tar files named .zip
    ]):
        p = tmp_path / name
        p.write_bytes(blob)
        out = extract(p, tmp_path / f"out{i}")
        assert (out / "pkg" / "a" / "b.bin").read_bytes() == TINY["pkg/a/b.bin"]
    assert archive_kind(tmp_path / "CandyCane.zip") == "tar"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["truncated-tar", "garbage", "truncated-zip", "bad-crc-zip"])
def test_corrupt_archive_leaves_nothing_half_extracted(tmp_path, kind):
    members = {f"pkg/file{i}.bin": np.random.default_rng(i).bytes(30_000) for i in range(4)}
    if kind == "truncated-tar":
        blob = tar_bytes(members)
        blob = blob[: int(len(blob) * 0.7)]
    elif kind == "garbage":
        blob = b"definitely not an archive" * 50
    elif kind == "truncated-zip":
        blob = zip_bytes(members)[:-200]
    else:
        blob = bytearray(zip_bytes(members))
        blob[200] ^= 0xFF  # inside the first member's data: CRC mismatch
        blob = bytes(blob)
    p = tmp_path / "bad.archive"
    p.write_bytes(blob)
    with pytest.raises(ExtractError):
        extract(p, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []


def _tar_with(info: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if info.isreg():
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        else:
            tf.addfile(info)
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("blob", [
    _tar_with(tarfile.TarInfo("../evil.txt")),
    _tar_with(tarfile.TarInfo("pkg/../../evil.txt")),
    _tar_with(tarfile.TarInfo("/tmp/evil.txt")),
    _tar_with(_link("pkg/link", "../../evil.txt", tarfile.SYMTYPE)),
    _tar_with(_link("pkg/abs", "/etc/passwd", tarfile.SYMTYPE)),
    _tar_with(_link("hard", "../outside", tarfile.LNKTYPE)),
    _tar_with(_link("dev", "", tarfile.CHRTYPE)),
    zip_bytes({"ok.txt": b"ok", "../evil.txt": b"x"}),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out",
        "device", "zip-dotdot"])
def test_path_traversal_is_refused(tmp_path, blob):
    p = tmp_path / "evil.archive"
    p.write_bytes(blob)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    with pytest.raises(ExtractError, match="refused"):
        extract(p, sandbox / "out")
    assert list(sandbox.iterdir()) == []  # nothing extracted, no temporary folder
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_inside_the_archive_is_allowed(tmp_path):
    p = tmp_path / "ok.tgz"
    p.write_bytes(_tar_with(_link("pkg/link", "../ok.txt", tarfile.SYMTYPE)))
    out = extract(p, tmp_path / "out")
    assert (out / "pkg" / "link").is_symlink() and (out / "ok.txt").read_text() == "ok"


# --------------------------------------------------------------------------------------------
# registry and the command line
# --------------------------------------------------------------------------------------------


def test_registry():
    assert list_datasets() == ["anomaly_shapenet", "eyecandies", "mvtec3d", "real3d"]
    mvtec = get_info("mvtec3d")
    assert mvtec.files[0].md5 and mvtec.files[0].url.startswith("https://")
    assert len(get_info("eyecandies").files) == 10
    for info in REGISTRY.values():
        assert info.homepage.startswith("https://") and info.license
        for f in info.files:  # a checksum is either known (hex) or None, never a placeholder
            assert f.sha256 is None or len(f.sha256) == 64
            assert f.md5 is None or len(f.md5) == 32
    with pytest.raises(KeyError, match="known"):
        get_info("mvtec2d")


def _real3d_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(name: str, write) -> None:
            tmp = io.StringIO()
            write(tmp)
            data = tmp.getvalue().encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        pts = np.random.default_rng(0).random((20, 3))
        lines = "\n".join(f"{x:.6f} {y:.6f} {z:.6f} {int(x > 0.5)}" for x, y, z in pts) + "\n"
        header = ("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 20\n"
                  "HEIGHT 1\nPOINTS 20\nDATA ascii\n")
        body = "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts) + "\n"
        add("Real3D-AD-PCD/duck/train/0_template.pcd", lambda f: f.write(header + body))
        add("Real3D-AD-PCD/duck/test/3_bulge.pcd", lambda f: f.write(header + body))
        add("Real3D-AD-PCD/duck/gt/3_bulge.txt", lambda f: f.write(lines))
    return buf.getvalue()


def test_get_dataset_real3d_end_to_end(server, tmp_path, capsys):
    url, state = server
    blob = _real3d_archive()
    state.files["/real3d-ad-pcd.tar.gz"] = blob
    state.cut_once.add("/real3d-ad-pcd.tar.gz")  # interrupted once, resumed within the call
    rc = get_dataset_main(["real3d", "--out", str(tmp_path), "--url",
                           url + "/real3d-ad-pcd.tar.gz", "--sha256", sha(blob),
                           "--timeout", "10"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["categories"] == ["duck"]
    root = Path(summary["root"])
    assert root.name == "Real3D-AD-PCD"
    s = Real3DDataset(root, "duck", "test")[0]
    assert s.defect == "bulge" and s.points.shape == (20, 3) and s.mask.any()
    assert leftovers(tmp_path) == []
    # a rerun finds everything in place
    assert get_dataset_main(["real3d", "--out", str(tmp_path), "--url",
                             url + "/real3d-ad-pcd.tar.gz", "--sha256", sha(blob)]) == 0


def test_get_dataset_eyecandies_converts(server, tmp_path, capsys):
    from tests.test_data_readers import make_raw_eyecandies

    raw = make_raw_eyecandies(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(raw / "Eyecandies", arcname="Eyecandies")
    state_url, state = server
    state.files["/CandyCane.zip"] = buf.getvalue()  # a tar named .zip, as the real ones
    rc = get_dataset_main(["eyecandies", "--out", str(tmp_path / "out"), "--url",
                           state_url + "/CandyCane.zip", "--no-verify", "--timeout", "10"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["categories"] == ["CandyCane"]
    test = MVTec3DDataset(summary["root"], "CandyCane", "test")
    assert [s.defect for s in test] == ["bad", "good"]


def test_get_dataset_errors(server, tmp_path, capsys):
    url, state = server
    blob = _real3d_archive()
    state.files["/r.tar.gz"] = blob
    # no URL known for Anomaly-ShapeNet: asks for --url, downloads nothing
    assert get_dataset_main(["anomaly_shapenet", "--out", str(tmp_path)]) == 2
    assert "--url" in capsys.readouterr().err
    # a URL without a checksum needs --no-verify
    assert get_dataset_main(["real3d", "--out", str(tmp_path), "--url", url + "/r.tar.gz"]) == 2
    assert "--no-verify" in capsys.readouterr().err
    assert state.requests == []
    # a wrong checksum: clear error, no archive left
    assert get_dataset_main(["real3d", "--out", str(tmp_path), "--url", url + "/r.tar.gz",
                             "--sha256", "f" * 64, "--timeout", "10"]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert leftovers(tmp_path) == [] and not list((tmp_path / "downloads").iterdir())
    # unknown dataset, local archive with --archive, --list
    assert get_dataset_main(["mvtec2d", "--out", str(tmp_path)]) == 2
    assert "known" in capsys.readouterr().err
    local = tmp_path / "local.tar.gz"
    local.write_bytes(blob)
    assert get_dataset_main(["real3d", "--out", str(tmp_path / "o"), "--archive", str(local),
                             "--sha256", sha(blob)]) == 0
    capsys.readouterr()
    assert get_dataset_main(["--list"]) == 0
    assert "mvtec3d" in capsys.readouterr().out
