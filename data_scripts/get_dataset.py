"""Download, verify, extract and convert one public dataset.

Usage::

    python data_scripts/get_dataset.py NAME --out DIR [--url URL ...] [--sha256 HEX ...]
        [--md5 HEX ...] [--archive PATH ...] [--no-verify] [--categories C ...] [--list]
        [--max-extract-gib GIB] [--max-extract-members N]

``NAME`` is one of ``mvtec3d``, ``eyecandies``, ``real3d``, ``anomaly_shapenet``. Files go to:

- ``DIR/downloads/<file>``: the verified archives (``.part`` while downloading; rerun to
  resume an interrupted download);
- ``DIR/raw/<NAME>/<archive name>/``: the extracted archives (all or nothing);
- the dataset root printed at the end: the extracted folder holding the categories, or for
  Eyecandies ``DIR/eyecandies_mvtec/`` (converted to the MVTec 3D-AD layout).

Without ``--url``/``--archive`` the registry's links are used; a dataset with no known link or
checksum needs ``--url`` and ``--sha256`` (or ``--no-verify``, an explicit choice). The last
line of output is a JSON object: ``{"dataset", "root", "categories", "archives"}``. An archive
that would unpack to more than ``--max-extract-gib`` (256 GiB) or hold more than
``--max-extract-members`` (1,000,000) members is refused before anything is written. Errors end
with ``get_dataset: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``data_scripts`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_scripts.datasets import DatasetInfo, RemoteFile, get_info, list_datasets  # noqa: E402
from data_scripts.fetch import (  # noqa: E402
    MAX_EXTRACT_BYTES,
    MAX_EXTRACT_MEMBERS,
    FetchError,
    download,
    extract,
    verify,
)
from pcad.checks import check_int, check_positive  # noqa: E402

__all__ = ["locate_root", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="get_dataset",
        description="Download, verify, extract and convert a public 3D anomaly dataset.",
    )
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(list_datasets())}")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--url", action="append", default=[], help="archive URL (repeatable)")
    p.add_argument("--sha256", action="append", default=[], help="SHA-256 per URL/archive")
    p.add_argument("--md5", action="append", default=[], help="MD5 per URL/archive")
    p.add_argument("--archive", action="append", default=[], type=Path,
                   help="an already downloaded archive (repeatable) instead of downloading")
    p.add_argument("--no-verify", action="store_true",
                   help="accept files whose checksum is unknown (explicit opt-out)")
    p.add_argument("--categories", nargs="+", default=None,
                   help="Eyecandies: categories to download/convert (default all)")
    p.add_argument("--retries", type=int, default=2, help="automatic resumes per download")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout, seconds")
    p.add_argument("--max-extract-gib", type=float, default=MAX_EXTRACT_BYTES / 2**30,
                   help="refuse an archive unpacking to more GiB (default %(default)g)")
    p.add_argument("--max-extract-members", type=int, default=MAX_EXTRACT_MEMBERS,
                   help="refuse an archive with more members (default %(default)d)")
    p.add_argument("--list", action="store_true", help="list the datasets and exit")
    return p


def _aligned(values: list[str], n: int, flag: str) -> list[str | None]:
    if not values:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"{flag}: give one value per URL/archive ({n}), got {len(values)}")
    return list(values)


def _url_filename(url: str, fallback: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return name if name and name not in (".", "..") else fallback


def _plan(info: DatasetInfo, args: argparse.Namespace) -> list[RemoteFile]:
    """The files to fetch: the command line's, or the registry's."""
    if args.url:
        n = len(args.url)
        shas, mds = _aligned(args.sha256, n, "--sha256"), _aligned(args.md5, n, "--md5")
        return [
            RemoteFile(filename=_url_filename(u, f"{info.name}-{i}.archive"), url=u,
                       sha256=s, md5=m)
            for i, (u, s, m) in enumerate(zip(args.url, shas, mds, strict=True))
        ]
    files = list(info.files)
    if args.categories:
        wanted = set(args.categories)
        files = [f for f in files if f.category is None or f.category in wanted]
        unknown = wanted - {f.category for f in info.files if f.category}
        if unknown and any(f.category for f in info.files):
            raise ValueError(f"--categories: unknown {sorted(unknown)}")
    missing = [f.filename for f in files if f.url is None]
    if missing:
        hint = " ".join(info.notes)
        raise ValueError(
            f"{info.title}: no direct download link is known for {', '.join(missing)}; pass "
            f"--url (and --sha256) or --archive. {hint}"
        )
    if args.sha256 or args.md5:
        n = len(files)
        shas, mds = _aligned(args.sha256, n, "--sha256"), _aligned(args.md5, n, "--md5")
        files = [
            RemoteFile(f.filename, f.url, s or f.sha256, m or f.md5, f.category)
            for f, s, m in zip(files, shas, mds, strict=True)
        ]
    return files


def _fetch(info: DatasetInfo, args: argparse.Namespace, log: Callable[[str], None]) -> list[Path]:
    """Downloaded (or given) and verified archives."""
    out: Path = args.out
    if args.archive:
        n = len(args.archive)
        shas, mds = _aligned(args.sha256, n, "--sha256"), _aligned(args.md5, n, "--md5")
        for path, s, m in zip(args.archive, shas, mds, strict=True):
            verify(path, s, md5=m, allow_unverified=args.no_verify)
            log(f"verified {path}" if (s or m) else f"using {path} unverified (--no-verify)")
        return list(args.archive)
    paths = []
    for f in _plan(info, args):
        assert f.url is not None
        dest = out / "downloads" / f.filename
        log(f"downloading {f.url} -> {dest}")
        download(f.url, dest, f.sha256, md5=f.md5, allow_unverified=args.no_verify,
                 retries=args.retries, timeout=args.timeout)
        paths.append(dest)
    return paths


def locate_root(start: Path, has_categories: Callable[[Path], list[str]], depth: int = 3) -> Path:
    """The folder at or below ``start`` (breadth first, up to ``depth`` levels) for which
    ``has_categories`` lists something; ``ValueError`` if none."""
    frontier = [start]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for d in frontier:
            if has_categories(d):
                return d
            nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
        frontier = nxt
    raise ValueError(f"{start}: no dataset categories found in the extracted files")


def _category_lister(layout: str) -> Callable[[Path], list[str]]:
    from pcad.data import list_categories
    from pcad.data.real3d import Real3DDataset
    from pcad.data.shapenet import AnomalyShapeNetDataset

    if layout == "mvtec3d":
        return list_categories
    if layout == "real3d":
        return Real3DDataset.list_categories
    return AnomalyShapeNetDataset.list_categories


def _archive_stem(path: Path) -> str:
    name = path.name
    for ext in (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".tar", ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return path.stem or name


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    """Carry out the steps; returns the summary printed as JSON."""
    info = get_info(args.name)
    out: Path = args.out
    max_bytes = max(1, int(check_positive(args.max_extract_gib, "--max-extract-gib") * 2**30))
    max_members = check_int(args.max_extract_members, "--max-extract-members")
    archives = _fetch(info, args, log)
    extracted = []
    for a in archives:
        dest = out / "raw" / info.name / _archive_stem(a)
        if dest.exists():
            log(f"already extracted: {dest}")
        else:
            log(f"extracting {a} -> {dest}")
            extract(a, dest, max_bytes=max_bytes, max_members=max_members)
        extracted.append(dest)
    if info.layout == "eyecandies-raw":
        from pcad.data import convert_eyecandies
        from pcad.data.eyecandies import find_raw_root
        from pcad.data.mvtec3d import list_categories

        root = out / "eyecandies_mvtec"
        for d in extracted:
            raw = find_raw_root(d)
            log(f"converting {raw} -> {root}")
            convert_eyecandies(raw, root, args.categories if args.categories else None)
        cats = list_categories(root)
    else:
        lister = _category_lister(info.layout)
        roots = [locate_root(d, lister) for d in extracted]
        root = roots[0]
        cats = sorted({c for r in roots for c in lister(r)})
    return {"dataset": info.name, "root": str(root), "categories": cats,
            "archives": [str(a) for a in archives]}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in list_datasets():
            info = get_info(name)
            print(f"{name}: {info.title} ({info.license}) {info.homepage}")
        return 0
    if not args.name or args.out is None:
        parser.error("NAME and --out are required (or --list)")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        summary = run(args, log)
    except (FetchError, ValueError, KeyError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"get_dataset: error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
