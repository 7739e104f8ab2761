"""Issue #18, security: a safe torch for checkpoints, archive extraction that no link can lead
out of (without tarfile's extraction filter), and size caps on archives, TIFFs and PNGs.

Every hostile input is built in the test's ``tmp_path``; "nothing written outside" is checked by
listing the whole ``tmp_path`` tree (symlinks included) before and after.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import data_scripts.fetch as fetch
from data_scripts.fetch import (
    MAX_EXTRACT_BYTES,
    MAX_EXTRACT_MEMBERS,
    ExtractError,
    extract,
)
from data_scripts.get_dataset import main as get_dataset_main
from pcad.errors import FileFormatError, InvalidInputError, PcadError
from pcad.features import checkpoint
from pcad.features.checkpoint import MIN_SAFE_TORCH, check_torch_version, load_checkpoint
from pcad.io import organized
from pcad.io.organized import (
    MAX_IMAGE_PIXELS,
    read_mask_png,
    read_rgb,
    read_xyz_tiff,
    write_mask_png,
    write_rgb,
    write_xyz_tiff,
)

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# torch >= 2.10
# --------------------------------------------------------------------------------------------


def test_pyproject_and_makefile_require_a_safe_torch():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=2\.10"', pyproject) and '"torch>=2.1"' not in pyproject
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^TORCH\s*\?=\s*torch==(\d+)\.(\d+)", makefile, re.M)
    assert pinned and (int(pinned[1]), int(pinned[2])) >= MIN_SAFE_TORCH
    # the fallback when the pinned build is unavailable is bounded too
    assert re.search(r'\|\| \$\(PY\) -m pip install -q "torch>=2\.10"', makefile)
    assert MIN_SAFE_TORCH == (2, 10)


@pytest.mark.parametrize("version", ["2.13.0+cpu", "2.10.0", "2.10.0a0+git1234", "3.0.1"])
def test_safe_torch_versions_pass(version):
    check_torch_version(version)


@pytest.mark.parametrize("version", ["2.5.1", "2.6.0+cu124", "2.9.1", "1.13.1", "nightly", ""])
def test_old_torch_refuses_to_unpickle(tmp_path, monkeypatch, version):
    path = tmp_path / "cfm.pt"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setattr(torch, "__version__", version)

    def must_not_run(*args, **kwargs):
        raise AssertionError("torch.load ran on an unsafe torch")

    monkeypatch.setattr(checkpoint.torch, "load", must_not_run)
    with pytest.raises(PcadError, match=r"cannot load checkpoints or run folders safely") as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert "\n" not in msg and "torch>=2.10" in msg and "CVE-2025-32434" in msg
    # an in-memory state dict unpickles nothing: still accepted
    assert load_checkpoint({"w": torch.zeros(1)})[1] == "weights"


def test_old_torch_refuses_a_run_folder(tmp_path, monkeypatch):
    """Detectors read their run files through the same loader (``read_run_file``)."""
    from pcad.detectors.base import read_run_file

    torch.save({"w": torch.zeros(2)}, tmp_path / "cfm.pt")
    assert torch.equal(read_run_file(tmp_path, "cfm.pt", "cfm")["w"], torch.zeros(2))
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(PcadError, match=r"^torch 2\.5\.1 cannot load checkpoints or run folders"):
        read_run_file(tmp_path, "cfm.pt", "cfm")


def test_current_torch_loads(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, path)
    obj, source = load_checkpoint(path)
    assert source == str(path) and torch.equal(obj["w"], torch.ones(2))


# --------------------------------------------------------------------------------------------
# archives: links through links, without tarfile's filter
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_tar_filter(monkeypatch):
    """A Python without tarfile's extraction filters (3.10.0-3.10.11, 3.11.0-3.11.3): no
    ``tarfile.data_filter``, and ``extractall`` trusts every member."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    if hasattr(tarfile, "fully_trusted_filter"):
        monkeypatch.setattr(tarfile.TarFile, "extraction_filter",
                            staticmethod(tarfile.fully_trusted_filter))
    assert not hasattr(tarfile, "data_filter")


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return info


def sym(name: str, target: str) -> tarfile.TarInfo:
    return _member(name, tarfile.SYMTYPE, target)


def hard(name: str, target: str) -> tarfile.TarInfo:
    return _member(name, tarfile.LNKTYPE, target)


def tar_of(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar of ``members``: TarInfo for links and folders, ``(name, data)`` for files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
            else:
                tf.addfile(m)
    return buf.getvalue()


def tree(root: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Every path under ``root`` (links not followed) with its kind and content/target."""
    out: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif stat.S_ISDIR(mode):
                out[str(p.relative_to(root))] = ("dir", None)
            else:
                out[str(p.relative_to(root))] = ("file", p.read_bytes())
    return out


def deep_sandbox(tmp_path: Path) -> Path:
    """A folder 8 levels below ``tmp_path``: should a check ever let a link chain through,
    what climbs (at most 7 levels in these archives) stays inside ``tmp_path``."""
    sandbox = tmp_path.joinpath(*(f"d{i}" for i in range(8)))
    sandbox.mkdir(parents=True)
    return sandbox


def dotdot_chain(depth: int = 2) -> list:
    """``a/b -> ..``, ``a/b/c0 -> ..``, ``a/b/c0/c1 -> ..``...: each link textually stays
    inside (``a/b/c0/..`` is ``a/b``) but really climbs one folder above the previous one;
    then a file through the chain, ``depth`` folders above the extraction folder."""
    links = [sym("a/b", "..")]
    path = "a/b"
    for i in range(depth):
        path += f"/c{i}"
        links.append(sym(path, ".."))
    return [*links, (f"{path}/escaped.txt", b"pwned")]


def test_the_dotdot_chain_escapes_without_a_filter(tmp_path, no_tar_filter):
    """Control: with the filter absent, extracting the chain unchecked writes outside. This
    archive passes the textual checks that used to guard the extraction."""
    archive = tmp_path / "chain.tgz"
    archive.write_bytes(tar_of(dotdot_chain(2)))
    root = tmp_path / "x" / "y" / "root"
    root.mkdir(parents=True)
    with tarfile.open(archive) as tf:
        tf.extractall(root)
    assert (tmp_path / "x" / "escaped.txt").read_bytes() == b"pwned"


def _cases() -> dict[str, list]:
    return {
        "dotdot-chain": dotdot_chain(2),
        "dotdot-chain-deep": dotdot_chain(6),
        # a/b is the folder itself, so a/b/../secret is one folder above it: outside
        "hardlink-through-symlink": [sym("a/b", ".."), hard("h", "a/b/../secret"),
                                     ("h", b"pwned")],
        "symlink-through-symlink": [sym("a/b", ".."), sym("up", "a/b/..")],
        # the later link d -> . makes the earlier p/x -> ../d/.. climb out
        "later-link-opens-earlier": [_member("p", tarfile.DIRTYPE), sym("p/x", "../d/.."),
                                     sym("d", ".")],
        "hardlink-etc-passwd": [("ok.txt", b"ok"), hard("passwd", "/etc/passwd")],
        "hardlink-dotdot": [hard("h", "../secret")],
        "absolute-member": [("ok.txt", b"ok"), ("/tmp/pcad-r4-absolute.txt", b"x")],
        "symlink-absolute": [sym("etc", "/etc")],
        "member-under-symlinked-dir": [_member("sub", tarfile.DIRTYPE), sym("d", "sub"),
                                       ("d/file.txt", b"x")],
        "file-replaces-symlink": [("in.txt", b"in"), sym("s", "in.txt"), ("s", b"x")],
        "symlink-loop": [sym("x", "y"), sym("y", "x")],
        "hardlink-to-nothing": [hard("h", "missing.txt")],
        "link-replaces-folder": [sym(".", "sub")],
        "device": [_member("dev", tarfile.CHRTYPE)],
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_hostile_tar_is_refused_without_the_filter(tmp_path, no_tar_filter, case):
    archive = tmp_path / "evil.tgz"
    archive.write_bytes(tar_of(_cases()[case]))
    sandbox = deep_sandbox(tmp_path)
    (sandbox / "secret").write_bytes(b"secret")  # what the hard links aim at
    before = tree(tmp_path)
    with pytest.raises(ExtractError, match="refused") as ei:
        extract(archive, sandbox / "out")
    assert "\n" not in str(ei.value) and str(archive) in str(ei.value)
    assert tree(tmp_path) == before  # nothing written anywhere, no temporary folder left
    assert not Path("/tmp/pcad-r4-absolute.txt").exists()


@pytest.mark.parametrize("case", ["dotdot-chain", "hardlink-through-symlink",
                                  "later-link-opens-earlier", "member-under-symlinked-dir"])
def test_hostile_tar_is_refused_with_the_filter_too(tmp_path, case):
    archive = tmp_path / "evil.tgz"
    archive.write_bytes(tar_of(_cases()[case]))
    sandbox = deep_sandbox(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(ExtractError, match="refused"):
        extract(archive, sandbox / "out")
    assert tree(tmp_path) == before


def test_messages_name_the_member_and_the_reason(tmp_path, no_tar_filter):
    sandbox = deep_sandbox(tmp_path)

    def refusal(members: list) -> str:
        archive = tmp_path / "m.tgz"
        archive.write_bytes(tar_of(members))
        with pytest.raises(ExtractError) as ei:
            extract(archive, sandbox / "out")
        return str(ei.value)

    assert "member 'a/b/c0' goes through the symlink 'a/b'" in refusal(dotdot_chain(1))
    assert "link 'up' -> 'a/b/..' leaves the folder" in refusal(_cases()["symlink-through-symlink"])
    assert "'d/file.txt' goes through the symlink 'd'" in refusal(
        _cases()["member-under-symlinked-dir"])
    assert "names no earlier file" in refusal(_cases()["hardlink-to-nothing"])
    assert "appears 2 times" in refusal(_cases()["file-replaces-symlink"])


def test_safe_links_still_extract_without_the_filter(tmp_path, no_tar_filter):
    archive = tmp_path / "ok.tgz"
    archive.write_bytes(tar_of([
        _member("pkg", tarfile.DIRTYPE), ("pkg/a.txt", b"a"), hard("pkg/b.txt", "pkg/a.txt"),
        sym("pkg/c.txt", "a.txt"), sym("top", "pkg/c.txt"), _member("sub", tarfile.DIRTYPE),
        sym("pkg/up", ".."), sym("pkg/sibling", "../sub"), sym("dangling", "nowhere/x"),
    ]))
    out = extract(archive, tmp_path / "out")
    assert (out / "pkg" / "b.txt").read_bytes() == b"a"
    assert (out / "top").read_bytes() == b"a" and os.readlink(out / "top") == "pkg/c.txt"
    assert os.readlink(out / "pkg" / "up") == ".." and (out / "pkg" / "sibling").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tgz", "out"]


def test_resolve_follows_the_archive_links():
    resolve = fetch._resolve
    links = {"a/b": ".."}
    assert resolve("a/b/c", links) == "c"
    assert resolve("a/b/..", links) is None
    assert resolve("a/x/../y", {}) == "a/y"
    assert resolve("x", {"x": "y", "y": "x"}) is None  # a loop
    assert resolve("x", {"x": "/etc"}) is None
    assert resolve("A/B/c", links) == "c"  # case-insensitive file systems: checked both ways


# zip: zipfile never creates links; absolute, `..` and link members are refused anyway


def zip_of(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.mark.parametrize("blob", [
    zip_of({"ok.txt": b"ok", "../evil.txt": b"x"}),
    zip_of({"ok.txt": b"ok", "a/../../evil.txt": b"x"}),
    zip_of({"/abs/evil.txt": b"x"}),
    zip_of({"C:/evil.txt": b"x"}),
    zip_of({"ok.txt": b"ok"}, {"link": "../../etc/passwd"}),
    zip_of({"ok.txt": b"ok"}, {"inside": "ok.txt"}),
], ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink-out", "symlink-in"])
def test_hostile_zip_is_refused(tmp_path, blob):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(blob)
    sandbox = deep_sandbox(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(ExtractError, match="refused"):
        extract(archive, sandbox / "out")
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------------------------
# archive caps
# --------------------------------------------------------------------------------------------


def test_archive_cap_defaults_are_documented():
    assert MAX_EXTRACT_BYTES == 256 * 2**30 and MAX_EXTRACT_MEMBERS == 1_000_000
    doc = extract.__doc__ or ""
    assert "max_bytes" in doc and "max_members" in doc and "MAX_EXTRACT_BYTES" in doc


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_decompression_bomb_is_refused_before_writing(tmp_path, kind):
    zeros = bytes(4 << 20)  # 4 MiB of zeros: a few KiB compressed
    blob = tar_of([("bomb.bin", zeros)]) if kind == "tar" else zip_of({"bomb.bin": zeros})
    assert len(blob) < 64 << 10
    archive = tmp_path / f"bomb.{kind}"
    archive.write_bytes(blob)
    with pytest.raises(ExtractError, match=r"bytes, more than max_bytes=1048576; refused"):
        extract(archive, tmp_path / "out", max_bytes=1 << 20)
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]
    out = extract(archive, tmp_path / "out", max_bytes=8 << 20)  # a larger cap lets it through
    assert (out / "bomb.bin").stat().st_size == 4 << 20


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_member_count_cap(tmp_path, kind):
    files = {f"f{i:03d}.txt": b"" for i in range(50)}
    blob = tar_of(list(files.items())) if kind == "tar" else zip_of(files)
    archive = tmp_path / f"many.{kind}"
    archive.write_bytes(blob)
    with pytest.raises(ExtractError, match=r"members, more than max_members=10; refused"):
        extract(archive, tmp_path / "out", max_members=10)
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]
    assert len(list(extract(archive, tmp_path / "out", max_members=50).iterdir())) == 50


def test_archive_larger_than_the_free_space_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tar_of([("a.bin", bytes(1000))]))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda _p: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(ExtractError, match="only 100 bytes are free"):
        extract(archive, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz"]


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_members": -1}, {"max_bytes": 1.5}])
def test_bad_caps_are_refused(tmp_path, kwargs):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tar_of([("a.bin", b"a")]))
    with pytest.raises(InvalidInputError):
        extract(archive, tmp_path / "out", **kwargs)


def test_get_dataset_caps_on_the_command_line(tmp_path, capsys):
    archive = tmp_path / "real3d.tgz"
    archive.write_bytes(tar_of([(f"Real3D-AD-PCD/duck/train/{i}.pcd", b"x") for i in range(5)]))
    rc = get_dataset_main(["real3d", "--out", str(tmp_path / "o"), "--archive", str(archive),
                           "--no-verify", "--max-extract-members", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("get_dataset: error: ") and "max_members=3" in err[-1]
    rc = get_dataset_main(["real3d", "--out", str(tmp_path / "o"), "--archive", str(archive),
                           "--no-verify", "--max-extract-gib", "-1"])
    assert rc == 2 and "--max-extract-gib" in capsys.readouterr().err
    assert not (tmp_path / "o" / "raw" / "real3d" / "real3d").exists()


# --------------------------------------------------------------------------------------------
# TIFF and PNG pixel caps
# --------------------------------------------------------------------------------------------


def test_pixel_cap_is_documented():
    assert MAX_IMAGE_PIXELS == 2**26 and "MAX_IMAGE_PIXELS" in (organized.__doc__ or "")
    organized.check_pixel_count("a.png", 8192, 8192)
    with pytest.raises(FileFormatError, match=r"a\.png: the image is 8192 x 8193"):
        organized.check_pixel_count("a.png", 8192, 8193)
    with pytest.raises(InvalidInputError):
        organized.check_pixel_count("a.png", 1, 1, max_pixels=0)


def test_compressible_tiff_over_the_cap_is_refused_before_decoding(tmp_path, monkeypatch):
    """A zlib TIFF of zeros is tiny on disk; the cap is checked before a pixel is decoded."""
    path = tmp_path / "bomb.tiff"
    tifffile.imwrite(path, np.zeros((512, 512, 3), np.float32), photometric="rgb",
                     compression="zlib")
    assert path.stat().st_size < 64 << 10  # 3 MiB of pixels
    assert read_xyz_tiff(path).shape == (512, 512, 3)  # under the default cap
    monkeypatch.setattr(organized, "MAX_IMAGE_PIXELS", 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=r"512 x 512 = 262144 pixels, more than the "
                                                  r"cap of 100000; refused before decoding"):
            read_xyz_tiff(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (3 << 20) // 2  # decoding would have needed 3 MiB


def _tiff_claiming(tmp_path: Path, height: int, width: int, dtype=np.float32) -> Path:
    """A valid 8 x 8 zlib TIFF whose header then claims ``height x width`` pixels."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((8, 8, 3), dtype), photometric="rgb", compression="zlib",
                     metadata=None)
    blob = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(blob))) as tif:
        tags, order = tif.pages[0].tags, tif.byteorder
        for name, value in (("ImageWidth", width), ("ImageLength", height),
                            ("RowsPerStrip", height)):
            assert tags[name].dtype == 4  # LONG
            struct.pack_into(order + "I", blob, tags[name].valueoffset, value)
    path = tmp_path / "claims.tiff"
    path.write_bytes(bytes(blob))
    return path


def test_tiff_header_claiming_a_huge_image_is_refused(tmp_path):
    # 10^10 pixels: 120 GB of float32 xyz, from a 255-byte file
    path = _tiff_claiming(tmp_path, 100_000, 100_000)
    assert path.stat().st_size < 1024
    with pytest.raises(FileFormatError, match=r"100000 x 100000 = 10000000000 pixels, more "
                                              r"than the cap of 67108864") as ei:
        read_xyz_tiff(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)


def test_tiff_wrong_dtype_or_shape_is_refused_from_the_header(tmp_path):
    path = _tiff_claiming(tmp_path, 100_000, 100_000, dtype=np.uint8)
    with pytest.raises(FileFormatError, match="expected float32 or float64 xyz values, got uint8"):
        read_xyz_tiff(path)
    stack = tmp_path / "stack.tiff"
    tifffile.imwrite(stack, np.zeros((4, 8, 8, 3), np.float32), photometric="rgb")
    with pytest.raises(FileFormatError, match=r"shape \(H, W, 3\), got \(4, 8, 8, 3\)"):
        read_xyz_tiff(stack)


def test_valid_tiff_reads_as_before(tmp_path):
    xyz = np.random.default_rng(0).random((7, 5, 3)).astype(np.float32)
    write_xyz_tiff(tmp_path / "a.tiff", xyz)
    assert np.array_equal(read_xyz_tiff(tmp_path / "a.tiff"), tifffile.imread(tmp_path / "a.tiff"))


def _png_claiming(path: Path, height: int, width: int) -> Path:
    """A valid 8 x 8 grayscale PNG whose IHDR then claims ``height x width`` (CRC fixed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    blob = bytearray(buf.getvalue())
    assert blob[12:16] == b"IHDR"
    struct.pack_into(">II", blob, 16, width, height)
    struct.pack_into(">I", blob, 29, zlib.crc32(bytes(blob[12:29])))
    path.write_bytes(bytes(blob))
    return path


@pytest.mark.parametrize("reader", [read_mask_png, read_rgb])
def test_png_header_claiming_a_huge_image_is_refused(tmp_path, monkeypatch, reader):
    # 81 Mpixels: over pcad's cap, under PIL's own bomb threshold (89 Mpixels, no warning)
    path = _png_claiming(tmp_path / "claims.png", 9000, 9000)
    with pytest.raises(FileFormatError, match=r"9000 x 9000 = 81000000 pixels, more than the "
                                              r"cap of 67108864"):
        reader(path)
    # PIL's global check switched off (some programs do): pcad's cap still holds
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = _png_claiming(tmp_path / "claims2.png", 60_000, 60_000)
    with pytest.raises(FileFormatError, match="60000 x 60000 = 3600000000 pixels"):
        reader(path)


def test_compressible_png_over_the_cap_is_refused(tmp_path, monkeypatch):
    mask = np.zeros((600, 600), bool)
    mask[10:20, 10:20] = True
    write_mask_png(tmp_path / "m.png", mask)
    write_rgb(tmp_path / "c.png", np.zeros((600, 600, 3), np.uint8))
    assert read_mask_png(tmp_path / "m.png").sum() == 100  # under the default cap
    assert read_rgb(tmp_path / "c.png").shape == (600, 600, 3)
    monkeypatch.setattr(organized, "MAX_IMAGE_PIXELS", 100_000)
    for name, reader in (("m.png", read_mask_png), ("c.png", read_rgb)):
        with pytest.raises(FileFormatError, match="600 x 600 = 360000 pixels, more than the cap "
                                                  "of 100000"):
            reader(tmp_path / name)


def test_eyecandies_depth_png_is_capped(tmp_path):
    from pcad.data.eyecandies import read_depth

    png = _png_claiming(tmp_path / "depth.png", 9000, 9000)
    (tmp_path / "info.yaml").write_text("min_depth: 0.1\nmax_depth: 1.0\n")
    with pytest.raises(FileFormatError, match="81000000 pixels, more than the cap"):
        read_depth(png, tmp_path / "info.yaml")

