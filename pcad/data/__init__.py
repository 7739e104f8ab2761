"""Dataset readers and preprocessing: MVTec 3D-AD, Eyecandies, Real3D-AD, Anomaly-ShapeNet.

- :class:`MVTec3DDataset`: organized RGB + xyz samples in the MVTec 3D-AD layout (the real
  dataset, pcad's synthetic datasets, converted Eyecandies), RGB-only datasets included.
- :class:`Real3DDataset`, :class:`AnomalyShapeNetDataset`: point clouds with per-point masks.
- :func:`convert_eyecandies`: raw Eyecandies (depth PNG + depth range + pose) to MVTec layout.
- :mod:`pcad.data.preprocess`: BTF/M3DM plane removal, largest cluster, nearest-only resizing
  and square padding of RGB, xyz and gt together.

Every reader returns :class:`Sample` objects and raises, on bad files,
:class:`~pcad.errors.FileFormatError` naming the file; on bad arguments (an unknown category or
split, listing those that exist) :class:`~pcad.errors.InvalidInputError`; on a missing dataset
root ``FileNotFoundError``.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io import write_rgb
    >>> from pcad.data import MVTec3DDataset, list_categories
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name)
    >>> rgb_dir = root / "rope" / "train" / "good" / "rgb"
    >>> write_rgb(rgb_dir / "000.png", np.zeros((4, 9, 3), np.uint8))
    >>> ds = MVTec3DDataset(root, "rope")
    >>> list_categories(root), ds.modality, ds[0].xyz is None, ds[0].rgb.shape
    (['rope'], 'rgb', True, (4, 9, 3))
    >>> tmp.cleanup()
"""

from pcad.data.eyecandies import (
    EYECANDIES_CATEGORIES,
    ConversionReport,
    backproject_depth,
    convert_eyecandies,
)
from pcad.data.mvtec3d import (
    MVTec3DDataset,
    MVTec3DEntry,
    list_categories,
    list_defect_types,
)
from pcad.data.pointclouds import PointCloudDataset, PointEntry, parse_defect_type
from pcad.data.preprocess import (
    PaddedScan,
    PreprocessOptions,
    background_plane_mask,
    largest_cluster,
    largest_cluster_mask,
    pad_to_square,
    preprocess_scan,
    remove_background_plane,
    resize_mask,
    resize_organized,
    resize_rgb,
)
from pcad.data.real3d import REAL3D_CATEGORIES, Real3DDataset
from pcad.data.sample import GOOD, Sample
from pcad.data.shapenet import AnomalyShapeNetDataset

__all__ = [
    "EYECANDIES_CATEGORIES",
    "GOOD",
    "REAL3D_CATEGORIES",
    "AnomalyShapeNetDataset",
    "ConversionReport",
    "MVTec3DDataset",
    "MVTec3DEntry",
    "PaddedScan",
    "PointCloudDataset",
    "PointEntry",
    "PreprocessOptions",
    "Real3DDataset",
    "Sample",
    "backproject_depth",
    "background_plane_mask",
    "convert_eyecandies",
    "largest_cluster",
    "largest_cluster_mask",
    "list_categories",
    "list_defect_types",
    "pad_to_square",
    "parse_defect_type",
    "preprocess_scan",
    "remove_background_plane",
    "resize_mask",
    "resize_organized",
    "resize_rgb",
]
