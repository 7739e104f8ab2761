"""Base class and registry of defect types.

A defect type is a dataclass whose fields are its parameters (with defaults and a ``check`` in
the field metadata); :meth:`Defect.displace` turns a surface into a signed displacement along
the normals and an optional set of removed points. :func:`synth.apply_defect` does the rest
(offsets, ground truth, organized grids), so every type obeys the same ground-truth rule.

Sizes (``strength``, ``radius``, ``width``, ``length``) are fractions of the object's
bounding-box diagonal by default, or absolute units with ``units="absolute"``.

Example:
    >>> from synth.defects import create_defect, list_defects
    >>> "bump" in list_defects()
    True
    >>> create_defect("dent", radius=0.1).radius
    0.1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pcad.checks import check_fraction, check_int, check_positive
from pcad.errors import InvalidInputError
from synth.field import normalize01, perlin_field
from synth.parameterize import MODES, surface_coords
from synth.regions import FALLOFFS, pick_centre

_REGISTRY: dict[str, type[Defect]] = {}


def register_defect(name: str):
    """Class decorator: make a :class:`Defect` subclass available as ``create_defect(name)``."""

    def wrap(cls: type[Defect]) -> type[Defect]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_defects() -> list[str]:
    """Names of the registered defect types, sorted."""
    return sorted(_REGISTRY)


def defect_class(name: str) -> type[Defect]:
    """The class registered under ``name``; unknown names raise InvalidInputError."""
    if name not in _REGISTRY:
        raise InvalidInputError(f"defect: unknown type {name!r}; expected one of {list_defects()}")
    return _REGISTRY[name]


def create_defect(name: str, **params: Any) -> Defect:
    """Instantiate the defect type ``name`` with ``params`` (unknown parameters are an error).

    Parameters whose value is ``None`` take the type's default.
    """
    cls = defect_class(name)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise InvalidInputError(
            f"defect {name!r}: unknown parameter(s) {unknown}; accepted: {sorted(names)}"
        )
    return cls(**{k: v for k, v in params.items() if v is not None})


def param(default: Any, check: str, doc: str, **bounds: Any) -> Any:
    """A dataclass field with a validation rule (``positive``, ``nonneg``, ``fraction``,
    ``int``, ``bool`` or ``choice``) and a one-line description."""
    return field(default=default, metadata={"check": check, "doc": doc, **bounds})


@dataclass
class SurfaceContext:
    """What a defect sees: ``points``/``normals`` ``(N, 3) float64`` (unit normals), the
    bounding-box ``diag``, the seeded ``rng``, whether the input was an organized grid, and
    optionally the point indices allowed as the defect's centre."""

    points: np.ndarray
    normals: np.ndarray
    diag: float
    rng: np.random.Generator
    organized: bool = False
    candidates: np.ndarray | None = None

    def pick_centre(self) -> int:
        """Draw the defect's centre (among ``candidates`` when given)."""
        return pick_centre(len(self.points), self.rng, self.candidates)


@dataclass
class Displacement:
    """A defect's effect: signed ``magnitude (N,)`` along the normals (absolute units),
    ``removed (N,) bool``, the absolute ``peak`` strength and extra facts for ``params``."""

    magnitude: np.ndarray
    removed: np.ndarray
    peak: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Defect:
    """Base of every defect type: ground-truth threshold and units shared by all."""

    name: ClassVar[str] = "base"

    units: str = param("relative", "choice", "sizes as fractions of the bbox diagonal, or "
                       "absolute", choices=("relative", "absolute"))
    gt_threshold: float = param(0.1, "fraction", "a point is anomalous if displaced by at least "
                                "this fraction of the peak strength")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule = f.metadata.get("check")
            value = getattr(self, f.name)
            label = f"{self.name}.{f.name}"
            if rule == "positive":
                setattr(self, f.name, check_positive(value, label))
            elif rule == "nonneg":
                setattr(self, f.name, check_positive(value, label, allow_zero=True))
            elif rule == "fraction":
                setattr(self, f.name, check_fraction(value, label, inclusive_zero=False))
            elif rule == "int":
                setattr(self, f.name, check_int(value, label, f.metadata.get("min", 1),
                                                f.metadata.get("max")))
            elif rule == "bool":
                if not isinstance(value, (bool, np.bool_)):
                    raise InvalidInputError(f"{label}: expected true or false, got {value!r}")
            elif rule == "choice" and value not in f.metadata["choices"]:
                raise InvalidInputError(
                    f"{label}: expected one of {f.metadata['choices']}, got {value!r}")

    def size(self, value: float, diag: float) -> float:
        """A size parameter in absolute units."""
        return value * diag if self.units == "relative" else value

    def support(self, diag: float) -> float | None:
        """Radius (absolute units) around the centre beyond which nothing moves, or None
        when the defect may act on the whole surface."""
        return None

    def params(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict (with the type's name)."""
        return {"defect": self.name, **dataclasses.asdict(self)}

    def displace(self, ctx: SurfaceContext) -> Displacement:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class NoiseDefect(Defect):
    """A defect shaped by a seeded Perlin field on a surface parameterization."""

    scale: float = param(4.0, "positive", "noise lattice cells per bbox diagonal")
    octaves: int = param(4, "int", "fBm octaves", min=1, max=16)
    persistence: float = param(0.5, "positive", "amplitude ratio between octaves")
    lacunarity: float = param(2.0, "positive", "frequency ratio between octaves")
    mode: str = param("local", "choice", "surface parameterization", choices=MODES)
    falloff: str = param("cosine", "choice", "radial falloff of the region", choices=FALLOFFS)

    def centre_and_field(self, ctx: SurfaceContext, radius_abs: float
                         ) -> tuple[int, np.ndarray, dict[str, Any]]:
        """Draw the centre, then the field seed; return the centre index, the field
        normalized to ``[0, 1]`` over the points, and facts for ``params``."""
        centre = ctx.pick_centre()
        field_seed = int(ctx.rng.integers(2**31))
        coords = surface_coords(ctx.points, self.mode, centre, ctx.diag, radius_abs,
                                ctx.normals[centre])
        raw = perlin_field(coords, self.scale, self.octaves, self.persistence, self.lacunarity,
                           seed=field_seed)
        info = {"centre_index": centre, "centre": ctx.points[centre].tolist(),
                "field_seed": field_seed}
        return centre, normalize01(raw), info
