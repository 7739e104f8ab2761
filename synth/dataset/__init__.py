"""Synthetic multimodal datasets (RGB + organized xyz + exact gt) in the MVTec 3D-AD layout."""

from synth.dataset.config import (
    DEFAULT_CATEGORIES,
    DEFAULT_DEFECTS,
    Category,
    DatasetConfig,
    SampleTask,
    categories_from,
    sample_seed,
)
from synth.dataset.runner import generate
from synth.dataset.sample import make_sample, sample_paths

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_DEFECTS",
    "Category",
    "DatasetConfig",
    "SampleTask",
    "categories_from",
    "generate",
    "make_sample",
    "sample_paths",
    "sample_seed",
]
