"""Configuration of a synthetic dataset and the plan of its samples.

Sample ``i`` of a split depends only on ``(seed, category, split, i)``: its seed is drawn from
``numpy.random.SeedSequence([seed, crc32(category), crc32(split), i])``, so the bytes of a
sample do not depend on the worker count, the order of work, or which other samples exist.

Example:
    >>> from synth.dataset.config import DatasetConfig
    >>> cfg = DatasetConfig(categories=("gear",), train=2, validation=1, test_good=1,
    ...                     test_defect=1, defects=("dent",))
    >>> [f"{t.split}:{t.index}" for t in cfg.plan()]
    ['train/good:0', 'train/good:1', 'validation/good:0', 'test/good:0', 'test/dent:0']
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_choice, check_int, check_positive
from pcad.errors import InvalidInputError
from synth.objects import MAX_VARIATION, list_objects
from synth.render.conditions import CONDITIONS, Conditions, conditions_for
from synth.render.render import SensorConfig, render_defects

GENERATOR_VERSION = "1"
FORMATS = ("mvtec3d", "real3d")
DEFAULT_CATEGORIES = ("bracket", "cookie", "gear", "hex_nut", "plate_holes", "potato", "shaft")
DEFAULT_DEFECTS = ("bump", "dent", "crack", "hole", "contamination", "combined")
#: per-sample ranges of the geometric defects' sizes (fractions of the part's diagonal): each
#: defective sample draws its own values, so a test set holds subtle and pronounced defects
DEFAULT_DEFECT_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "bump": {"strength": (0.012, 0.03), "radius": (0.06, 0.12)},
    "dent": {"strength": (0.012, 0.03), "radius": (0.06, 0.12)},
    "crack": {"strength": (0.004, 0.008), "width": (0.01, 0.02)},
    "hole": {"radius": (0.04, 0.08)},
}
MESH_SUFFIXES = (".stl", ".obj", ".ply", ".off")
#: largest image side (``--size``): rendering takes about 400 bytes per pixel, so a
#: 4096 x 4096 sample needs about 7 GB while it is made
MAX_SIDE = 4096
#: most points per training prototype (``--points``, real3d format)
MAX_POINTS = 5_000_000
#: most samples in one dataset (every category and split together)
MAX_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Category:
    """A category: a built-in part (``mesh`` is None) or a user mesh file."""

    name: str
    mesh: str | None = None


@dataclass(frozen=True)
class SampleTask:
    """One sample to make: its category, split (``train/good``, ``test/<defect>``...), index."""

    category: Category
    split: str
    index: int

    @property
    def defect(self) -> str | None:
        """The defect of a test split, or None for good samples."""
        kind = self.split.split("/")[1]
        return None if kind == "good" else kind


def sample_seed(seed: int, category: str, split: str, index: int) -> int:
    """The seed of one sample (module docstring)."""
    key = [seed, zlib.crc32(category.encode()), zlib.crc32(split.encode()), index]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def categories_from(objects: list[str] | None, names: list[str] | None) -> tuple[Category, ...]:
    """Categories from ``--objects`` (``builtin`` or mesh files / folders) and ``--categories``.

    Built-in names must exist; a folder contributes every mesh file in it; a mesh file becomes
    a category named after its stem.
    """
    cats: list[Category] = []
    for obj in objects or ["builtin"]:
        if obj == "builtin":
            wanted = names or list(DEFAULT_CATEGORIES)
            known = list_objects()
            for n in wanted:
                if n not in known:
                    raise InvalidInputError(f"categories: unknown built-in part {n!r}; "
                                            f"expected one of {known}")
                cats.append(Category(n))
            continue
        path = Path(obj)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
            if not files:
                raise InvalidInputError(f"{path}: no mesh files ({', '.join(MESH_SUFFIXES)})")
        elif path.exists():
            files = [path]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for f in files:
            if names and f.stem not in names:
                continue
            cats.append(Category(f.stem, str(f.resolve())))
    seen = set()
    for c in cats:
        if c.name in seen:
            raise InvalidInputError(f"categories: two categories are named {c.name!r}")
        seen.add(c.name)
    if not cats:
        raise InvalidInputError("categories: nothing selected")
    return tuple(cats)


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that defines a dataset's bytes (written to ``dataset.json``).

    Every value is checked here, before anything is written: ``size`` sides in
    ``[8, MAX_SIDE]``, ``points`` in ``[10, MAX_POINTS]``, ``variation`` at most
    :data:`synth.objects.MAX_VARIATION`, at most ``MAX_SAMPLES`` samples in all.

    ``conditions`` (:data:`synth.render.conditions.CONDITIONS`): ``"standard"`` renders every
    split with the renderer's own pose, light and mat jitter; ``"strong"`` renders the test
    splits (good and defective) under the wider ranges of
    :data:`synth.render.conditions.STRONG` (tilt 0-18 deg, shift +-12 % of the view, distance
    x 0.8-1.1, light elevation 55 +- 30 deg, intensity 0.85 +- 0.35, ambient 0.25 +- 0.12,
    exposure x 0.6-1.6, sensor gain x 1-2.5, a mat of its own per sample: brightness
    x 0.6-1.5, tint x 0.8-1.25 per channel, contrast 0.10-0.45, lowered by 0-0.1 x the part's
    diagonal) while train and validation stay standard, byte for byte. A standard dataset's
    ``dataset.json`` has no ``conditions`` key (the same bytes as before the option existed).

    Example:
        >>> DatasetConfig(size=(100000, 100000))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: --size height: must be >= 8 and <= 4096, got 100000
    """

    categories: tuple[str | Category, ...] = DEFAULT_CATEGORIES
    train: int = 10
    validation: int = 2
    test_good: int = 4
    test_defect: int = 4
    defects: tuple[str, ...] = DEFAULT_DEFECTS
    size: tuple[int, int] = (256, 256)
    seed: int = 0
    format: str = "mvtec3d"
    variation: float = 0.03
    points: int = 16384
    sensor: SensorConfig = field(default_factory=SensorConfig)
    defect_ranges: dict[str, dict[str, tuple[float, float]]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_DEFECT_RANGES.items()})
    conditions: str = "standard"

    def __post_init__(self) -> None:
        cats = tuple(c if isinstance(c, Category) else Category(c) for c in self.categories)
        object.__setattr__(self, "categories", cats)
        for name in ("train", "validation", "test_good", "test_defect"):
            check_int(getattr(self, name), f"--{name.replace('_', '-')}", minimum=0)
        h, w = self.size
        check_int(h, "--size height", minimum=8, maximum=MAX_SIDE)
        check_int(w, "--size width", minimum=8, maximum=MAX_SIDE)
        check_int(self.seed, "--seed", minimum=0)
        check_int(self.points, "--points", minimum=10, maximum=MAX_POINTS)
        check_positive(self.variation, "--variation", allow_zero=True)
        if self.variation > MAX_VARIATION:
            raise InvalidInputError(f"--variation: must be <= {MAX_VARIATION}, "
                                    f"got {self.variation}")
        check_choice(self.format, "--format", FORMATS)
        check_choice(self.conditions, "--conditions", CONDITIONS)
        allowed = render_defects()
        for d in self.defects:
            if d not in allowed:
                raise InvalidInputError(f"--defects: unknown type {d!r}; expected {allowed}")
        if self.test_defect > 0 and not self.defects:
            raise InvalidInputError("--defects: empty list with --test-defect > 0")
        if len(set(self.defects)) != len(self.defects):
            raise InvalidInputError("--defects: a type is listed twice")
        self._check_ranges()
        total = len(cats) * sum(n for _, n in self.splits())
        if total > MAX_SAMPLES:
            raise InvalidInputError(f"dataset: {total} samples planned, at most {MAX_SAMPLES} "
                                    "(lower --train/--validation/--test-good/--test-defect)")

    def _check_ranges(self) -> None:
        from synth.defects import create_defect, list_defects

        for kind, params in self.defect_ranges.items():
            if kind not in list_defects(kind="geometric"):
                raise InvalidInputError(f"defect_ranges: unknown geometric defect {kind!r}")
            for name, bounds in params.items():
                lo, hi = (check_positive(b, f"defect_ranges.{kind}.{name}") for b in bounds)
                if lo > hi:
                    raise InvalidInputError(f"defect_ranges.{kind}.{name}: {lo} > {hi}")
            create_defect(kind, **{n: b[0] for n, b in params.items()})  # names and values

    def draw_params(self, sample_seed_: int) -> dict[str, dict[str, float]]:
        """This sample's geometric defect sizes, drawn uniformly within ``defect_ranges``."""
        rng = np.random.default_rng(np.random.SeedSequence([sample_seed_, 7919]))
        return {kind: {name: float(rng.uniform(*self.defect_ranges[kind][name]))
                       for name in sorted(self.defect_ranges[kind])}
                for kind in sorted(self.defect_ranges)}

    def conditions_of(self, split: str) -> Conditions:
        """The acquisition conditions of ``split``: ``conditions`` for the test splits,
        standard for train and validation."""
        return conditions_for(self.conditions if split.startswith("test") else "standard")

    def splits(self) -> list[tuple[str, int]]:
        """``(split, count)`` in writing order."""
        out = [("train/good", self.train), ("validation/good", self.validation),
               ("test/good", self.test_good)]
        return out + [(f"test/{d}", self.test_defect) for d in self.defects]

    def plan(self) -> list[SampleTask]:
        """Every sample of the dataset, category by category."""
        return [SampleTask(c, split, i) for c in self.categories
                for split, n in self.splits() for i in range(n)]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"] = [asdict(c) for c in self.categories]
        d["size"] = list(self.size)
        d["defects"] = list(self.defects)
        d["defect_ranges"] = {k: {n: list(b) for n, b in v.items()}
                              for k, v in self.defect_ranges.items()}
        if self.conditions == "standard":  # the record of every dataset made before the option
            del d["conditions"]
        return d
