"""Base class and registry of defect types.

A geometric defect type is a dataclass whose fields are its parameters (with defaults and a
``check`` in the field metadata); :meth:`Defect.displace` turns a surface into a signed
displacement along the normals and an optional set of removed points. :func:`synth.apply_defect`
does the rest (offsets, ground truth, organized grids), so every type obeys the same
ground-truth rule.

Sizes (``strength``, ``radius``, ``width``, ``length``) are fractions of the object's
bounding-box diagonal by default, or absolute units with ``units="absolute"``.

The registry (:class:`pcad.registry.Registry`) is the one vocabulary of defect names. Every
entry has a ``kind`` info field:

- ``"geometric"``: a :class:`Defect` subclass (``bump``, ``dent``, ``crack``, ``hole``,
  ``perlin``), made by :func:`create_defect` and applied by every generator;
- ``"appearance"``: an RGB-only change, registered as its generator, with ``made_by`` naming
  it: ``"render"`` (``contamination``, :func:`synth.render.render_sample`, ``pcad
  make-dataset``) or ``"source"`` (``texture``, ``colour``, ``graft``, ``scratch``, ``blur``,
  :class:`synth.supervision.DefectSource`, synthsup's training defects);
- ``"composite"``: ``combined`` (a geometric defect plus contamination, ``made_by="render"``).

Example:
    >>> from synth.defects import create_defect, defect_info, list_defects
    >>> list_defects(kind="geometric")
    ['bump', 'crack', 'dent', 'hole', 'perlin']
    >>> list_defects(kind="appearance")
    ['blur', 'colour', 'contamination', 'graft', 'scratch', 'texture']
    >>> defect_info("texture").info["made_by"]
    'source'
    >>> create_defect("dent", radius=0.1).radius
    0.1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from pcad.checks import check_fraction, check_int, check_positive
from pcad.errors import InvalidInputError
from pcad.registry import Entry, Registry
from synth.field import normalize01, perlin_field
from synth.parameterize import MODES, surface_coords
from synth.regions import FALLOFFS, pick_centre

#: the ``kind`` info field of a registered defect (module docstring)
KINDS = ("geometric", "appearance", "composite")
#: the generators of appearance and composite defects (their ``made_by`` info field)
MADE_BY = ("render", "source")
_MAKERS = {"render": "pcad make-dataset's renderer (synth.render.render_sample)",
           "source": "synthsup's defect source (synth.supervision.DefectSource)"}
# synth.defects registers the geometric types, the other two modules the rest
_DEFECTS: Registry[Any] = Registry(
    "defect", builtins=("synth.defects", "synth.render.render", "synth.supervision"))

T = TypeVar("T")


def register_defect(name: str, *, overwrite: bool = False, kind: str = "geometric",
                    **info: Any) -> Callable[[T], T]:
    """Decorator registering a defect type under ``name`` with ``info``.

    A ``"geometric"`` type (the default ``kind``) must be a :class:`Defect` subclass; its
    ``name`` is set and :func:`create_defect` builds it. ``"appearance"`` and ``"composite"``
    types are registered as their generator and need ``made_by`` (one of :data:`MADE_BY`).

    Raises:
        InvalidInputError: ``name`` is held by another object (unless ``overwrite``), ``kind``
            is unknown, a geometric type is not a Defect subclass, or ``made_by`` is missing.
    """
    if kind not in KINDS:
        raise InvalidInputError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind != "geometric" and info.get("made_by") not in MADE_BY:
        raise InvalidInputError(f"defect {name!r}: kind {kind!r} needs made_by, one of "
                                f"{MADE_BY}; got {info.get('made_by')!r}")
    add = _DEFECTS.register(name, overwrite=overwrite, kind=kind, **info)

    def wrap(obj: T) -> T:
        if kind == "geometric" and not (isinstance(obj, type) and issubclass(obj, Defect)):
            raise InvalidInputError(f"defect {name!r}: a geometric defect type must be a "
                                    f"Defect subclass, got {obj!r}")
        add(obj)
        if kind == "geometric":
            obj.name = name  # type: ignore[attr-defined]
        return obj

    return wrap


def list_defects(pattern: str | None = None, *, kind: str | None = None,
                 **info: Any) -> list[str]:
    """Registered defect names, sorted, filtered by a shell ``pattern``, a ``kind`` and
    equality on other info fields (e.g. ``made_by="render"``)."""
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"kind: expected one of {KINDS} or None, got {kind!r}")
    if kind is not None:
        info["kind"] = kind
    return _DEFECTS.names(pattern, **info)


def defect_info(name: str) -> Entry[Any]:
    """The registry entry of ``name`` (``obj``, ``info["kind"]``...); unknown names raise
    InvalidInputError listing the known ones."""
    return _DEFECTS.info(name)


def defect_parameters(name: str) -> tuple[tuple[str, str, Any, tuple[Any, ...] | None, str], ...]:
    """The parameters of the geometric defect type ``name``, in field order: ``(parameter,
    type name, default, choices or None, one-line doc)`` for each (what ``pcad synth`` makes
    its flags from).

    Example:
        >>> defect_parameters("hole")[-1][:4]
        ('rim', 'float', 1.5, None)
    """
    cls = _geometric_class(name)
    return tuple((f.name, f.type if isinstance(f.type, str) else f.type.__name__, f.default,
                  f.metadata.get("choices"), f.metadata.get("doc", ""))
                 for f in dataclasses.fields(cls))


def _geometric_class(name: str) -> type[Defect]:
    geometric = list_defects(kind="geometric")
    if not isinstance(name, str) or name not in _DEFECTS:
        raise InvalidInputError(f"defect: unknown type {name!r}; expected one of {geometric}")
    entry = _DEFECTS.info(name)
    if entry.info["kind"] != "geometric":
        raise InvalidInputError(
            f"defect {name!r}: {_MAKERS[entry.info['made_by']]} makes this {entry.info['kind']} "
            f"defect; it is not a geometric Defect type (those are {geometric})")
    return entry.obj


def create_defect(name: str, **params: Any) -> Defect:
    """Instantiate the geometric defect type ``name`` with ``params`` (unknown parameters are
    an error).

    Parameters whose value is ``None`` take the type's default. Appearance and composite names
    are refused with a clear error (they are not :class:`Defect` types).
    """
    cls = _geometric_class(name)
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
