"""Registry of the four public datasets: where they are, their checksums, how they are laid out.

A checksum or URL that is not known from a primary source is ``None``: :func:`fetch.download`
then refuses to run without ``--sha256``/``--md5`` or an explicit ``--no-verify``, and the
command line asks for ``--url`` (or a local ``--archive``) instead of guessing.

Example:
    >>> from data_scripts.datasets import get_info, list_datasets
    >>> list_datasets()
    ['anomaly_shapenet', 'eyecandies', 'mvtec3d', 'real3d']
    >>> get_info("mvtec3d").layout
    'mvtec3d'
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["REGISTRY", "DatasetInfo", "RemoteFile", "get_info", "list_datasets"]

EYECANDIES_CATEGORIES = (
    "CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto", "GummyBear",
    "HazelnutTruffle", "LicoriceSandwich", "Lollipop", "Marshmallow", "PeppermintCandy",
)  # fmt: skip


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable archive: ``url`` None when no direct link is known."""

    filename: str
    url: str | None = None
    sha256: str | None = None
    md5: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: ``layout`` is ``"mvtec3d"``, ``"eyecandies-raw"`` (converted to the MVTec
    layout after extraction), ``"real3d"`` or ``"shapenet"``."""

    name: str
    title: str
    homepage: str
    license: str
    layout: str
    files: tuple[RemoteFile, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


REGISTRY: dict[str, DatasetInfo] = {
    "mvtec3d": DatasetInfo(
        name="mvtec3d",
        title="MVTec 3D-AD",
        homepage="https://www.mvtec.com/company/research/datasets/mvtec-3d-ad",
        license="CC BY-NC-SA 4.0",
        layout="mvtec3d",
        files=(
            RemoteFile(
                filename="mvtec_3d_anomaly_detection.tar.xz",
                url=(
                    "https://www.mydrive.ch/shares/45920/dd1eb345346df066c63b5c95676b961b/"
                    "download/428824485-1643285832/mvtec_3d_anomaly_detection.tar.xz"
                ),
                md5="d8bb2800fbf3ac88e798da6ae10dc819",
            ),
        ),
        notes=(
            "URL and MD5 as used by anomalib (DownloadInfo of mvtec_3d); no SHA-256 is "
            "published. MVTec rotates download links: if this one fails, get a fresh link from "
            "the homepage and pass it with --url.",
        ),
    ),
    "eyecandies": DatasetInfo(
        name="eyecandies",
        title="Eyecandies",
        homepage="https://eyecan-ai.github.io/eyecandies/download",
        license="see the homepage (not stated in the sources checked)",
        layout="eyecandies-raw",
        files=tuple(RemoteFile(filename=f"{c}.zip", category=c) for c in EYECANDIES_CATEGORIES),
        notes=(
            "One archive per category on Google Drive; the file ids are on the homepage and "
            "not recorded here: pass each link with --url (or files with --archive).",
            "The '.zip' archives are tar files; extraction goes by content, not by name.",
            "Converted to the MVTec 3D-AD layout (pcad.data.convert_eyecandies).",
        ),
    ),
    "real3d": DatasetInfo(
        name="real3d",
        title="Real3D-AD",
        homepage="https://github.com/M-3LAB/Real3D-AD",
        license="CC BY 4.0",
        layout="real3d",
        files=(
            RemoteFile(
                filename="Real3D-AD-PCD.zip",
                url=(
                    "https://drive.google.com/uc?export=download&id="
                    "1oM4qjhlIMsQc_wiFIFIVBvuuR8nyk2k0"
                ),
            ),
        ),
        notes=(
            "Google Drive link from the README (real3d-ad-pcd.zip); no checksum is published. "
            "Large Google Drive files answer with an HTML confirmation page, which is reported "
            "as an error: download in a browser and pass --archive.",
        ),
    ),
    "anomaly_shapenet": DatasetInfo(
        name="anomaly_shapenet",
        title="Anomaly-ShapeNet (v2)",
        homepage="https://huggingface.co/datasets/Chopper233/Anomaly-ShapeNet",
        license="CC BY 4.0",
        layout="shapenet",
        files=(RemoteFile(filename="Anomaly-ShapeNet-v2.zip"),),
        notes=(
            "Hosted on Hugging Face and Baidu; the exact file URL was not verified, pass it "
            "with --url. No checksum is published.",
        ),
    ),
}


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(REGISTRY)


def get_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ``KeyError`` listing the names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown dataset {name!r}; known: {', '.join(list_datasets())}"
        ) from None
