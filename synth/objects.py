"""Built-in procedural industrial parts: meshes made in code, with seeded shape variation.

Each part family is a function ``(rng, variation) -> trimesh.Trimesh`` registered by name.
Units are millimetres. Every mesh is watertight, consistently wound with outward normals
(``mesh.is_volume``), centred on its bounding box and has a few thousand faces at most.

``variation`` is a manufacturing tolerance, a fraction in ``[0, 0.5]``: with ``variation=0`` a
family returns its nominal part, whatever the seed; otherwise each dimension (and each hole
position, tooth height, noise amplitude...) is jittered by up to about that fraction, drawn
only from the generator made from ``seed``, so that good samples differ as real parts do while
the same ``(seed, variation)`` always gives the same bytes. Discrete features (hole and tooth
counts) are fixed per family.

Families:

===============  ====================================================================
``bracket``      L-shaped angle bracket, two holes in the base leg, one in the upright
``cookie``       flattened organic blob (rounded disc) with a seeded Perlin surface
``flange``       hub flange (revolved profile) with a bore
``gear``         18-tooth involute spur gear with a keyed central bore
``hex_nut``      M10-like hexagon nut with a bore and 30 degree chamfers
``pin``          capsule-shaped dowel pin
``pipe``         tube with a socket (bell) end, hollow along z
``plate``        plain rectangular plate
``plate_holes``  rectangular plate with four through holes whose positions vary
``potato``       rounder organic blob with a strong low-frequency Perlin deformation
``ring``         torus (O-ring)
``shaft``        stepped solid shaft with chamfered ends and a retaining-ring groove
``washer``       flat washer
===============  ====================================================================

Rendering hints: :data:`OBJECT_TEXTURES` (and :func:`object_texture`) give each family a default
albedo colour (linear RGB floats in ``[0, 1]``), a surface kind (``"metal"``, ``"plastic"`` or
``"organic"``, see :data:`TEXTURE_KINDS`) and a roughness in ``[0, 1]``.

Example:
    >>> from synth.objects import list_objects, make_object, object_texture
    >>> list_objects()[:4]
    ['bracket', 'cookie', 'flange', 'gear']
    >>> gear = make_object("gear", seed=3, variation=0.05)
    >>> gear.is_watertight, gear.is_volume
    (True, True)
    >>> object_texture("cookie")["kind"]
    'organic'
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import trimesh
from shapely.geometry import Point, Polygon, box
from shapely.geometry.polygon import orient

from pcad.checks import check_positive
from pcad.errors import InvalidInputError
from synth.field import seeded_transform
from synth.perlin import pnoise3

PartFn = Callable[[np.random.Generator, float], trimesh.Trimesh]

MAX_VARIATION = 0.5
"""Largest accepted ``variation``: beyond +-50 % no tolerance is sane."""

TEXTURE_KINDS = ("metal", "plastic", "organic")
"""Surface kinds a renderer can map to a material model (specular metal, dielectric, diffuse)."""

OBJECT_TEXTURES: dict[str, dict[str, Any]] = {}
"""Per family: ``{"albedo": (r, g, b), "kind": one of TEXTURE_KINDS, "roughness": float}``.

``albedo`` is a linear RGB colour with floats in ``[0, 1]``; ``roughness`` is in ``[0, 1]``
(0 mirror-like, 1 fully diffuse). Read it through :func:`object_texture`, which returns a copy.
"""

_PARTS: dict[str, PartFn] = {}

_STEEL = (0.62, 0.63, 0.65)
_ALUMINIUM = (0.80, 0.81, 0.83)


def _part(name: str, albedo: tuple[float, float, float], kind: str,
          roughness: float) -> Callable[[PartFn], PartFn]:
    """Register a part family under ``name`` with its default rendering hints."""
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"texture kind {kind!r} not in {TEXTURE_KINDS}")

    def wrap(fn: PartFn) -> PartFn:
        _PARTS[name] = fn
        OBJECT_TEXTURES[name] = {"albedo": tuple(float(c) for c in albedo), "kind": kind,
                                 "roughness": float(roughness)}
        return fn

    return wrap


# --------------------------------------------------------------------------------------------
# helpers


def _u(rng: np.random.Generator, variation: float, size: int | None = None) -> Any:
    """Uniform jitter in ``[-variation, variation]``; always draws from ``rng`` (fixed stream).

    At ``variation=0`` this is exactly ``0.0`` whatever was drawn, so nominal parts do not
    depend on the seed.
    """
    return variation * rng.uniform(-1.0, 1.0, size=size)


def _j(rng: np.random.Generator, value: float, variation: float) -> float:
    """``value`` jittered by up to ``+-variation`` (relative)."""
    return value * (1.0 + _u(rng, variation))


def _center(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Translate ``mesh`` so that its bounding-box centre is the origin."""
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    return mesh


def _revolve(profile: list[tuple[float, float]], sections: int = 96) -> trimesh.Trimesh:
    """Solid of revolution about z of a closed simple ``(r, z)`` profile (any winding)."""
    pts = np.asarray(profile, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) < 0:  # clockwise: flip
        pts = pts[::-1]
    line = np.vstack([pts, pts[:1]])
    return trimesh.creation.revolve(line, sections=sections)


def _cylinder(radius: float, height: float, center: tuple[float, float, float],
              axis: str = "z", sections: int = 48) -> trimesh.Trimesh:
    """A drill body: cylinder of ``radius`` and ``height`` along ``axis`` centred at ``center``."""
    tf = np.eye(4)
    if axis == "x":
        tf = trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])
    elif axis == "y":
        tf = trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
    tf[:3, 3] = center
    return trimesh.creation.cylinder(radius=radius, height=height, sections=sections,
                                     transform=tf)


def _drill(mesh: trimesh.Trimesh, tools: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """Boolean difference ``mesh - union(tools)`` with manifold3d."""
    return trimesh.boolean.difference([mesh, *tools], engine="manifold")


def _extrude(poly: Polygon, height: float) -> trimesh.Trimesh:
    """Extrude a shapely polygon (holes allowed) along +z, triangulated with earcut."""
    return trimesh.creation.extrude_polygon(orient(poly, 1.0), height, engine="earcut")


@functools.lru_cache(maxsize=4)
def _unit_sphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (unit length, float64) and faces of an icosphere; read-only cached arrays."""
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    v = np.array(s.vertices, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = np.array(s.faces, dtype=np.int64)
    v.flags.writeable = False
    f.flags.writeable = False
    return v, f


def _noise(dirs: np.ndarray, scale: float, octaves: int,
           seed: int | np.random.Generator) -> np.ndarray:
    """Seeded fBm Perlin noise at ``dirs`` (float64), as :func:`synth.field.perlin_field`.

    Same seeded rotation and offset (``synth.field.seeded_transform``) but always on the plain
    numpy backend, so that the mesh bytes do not depend on ``PCAD_PERLIN_BACKEND`` nor pay a
    numba start-up on the first call (2562 points take about a millisecond).
    """
    rot, offset = seeded_transform(3, seed)
    q = (dirs * scale) @ rot.T + offset
    out = pnoise3(q[:, 0], q[:, 1], q[:, 2], octaves=octaves, backend="numpy")
    return np.asarray(out, dtype=np.float64)


def _blob(rng: np.random.Generator, v: float, semi_axes: tuple[float, float, float],
          squareness: float, nominal_seed: int, nominal_amp: float, sample_amp: float,
          scale: float, octaves: int) -> trimesh.Trimesh:
    """Star-shaped organic body: an icosphere (subdivisions 4) radially displaced by Perlin noise.

    Each unit direction ``d`` is moved to ``d * rho(d) * (1 + n(d))`` and then scaled by the
    jittered ``semi_axes``: ``rho`` rounds the vertical cross-section towards a rectangle
    (superellipse exponent ``squareness``; 2 is an ellipsoid), ``n`` is a fixed nominal field
    (``nominal_amp``, seeded with ``nominal_seed``) plus a per-sample field drawn from ``rng``
    (amplitude ``sample_amp * v``). A radial graph over the sphere stays embedded and keeps
    every face's winding, so the result is watertight with outward normals for any noise.
    """
    dirs, faces = _unit_sphere(4)
    axes = [_j(rng, a, v) for a in semi_axes]
    horiz = np.hypot(dirs[:, 0], dirs[:, 1])
    rho = (horiz ** squareness + np.abs(dirs[:, 2]) ** squareness) ** (-1.0 / squareness)
    disp = nominal_amp * _noise(dirs, scale, octaves, np.random.default_rng(nominal_seed))
    sample = _noise(dirs, scale * (1.0 + 0.2 * _u(rng, 1.0)), octaves, rng)
    disp = disp + (sample_amp * v) * sample
    radius = rho * np.maximum(1.0 + disp, 0.3)
    verts = dirs * radius[:, None] * np.asarray(axes)
    return _center(trimesh.Trimesh(verts, faces.copy(), process=False))


# --------------------------------------------------------------------------------------------
# legacy simple parts


@_part("washer", albedo=(0.70, 0.70, 0.72), kind="metal", roughness=0.35)
def _washer(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    r_out = _j(rng, 30.0, v)
    return trimesh.creation.annulus(r_min=_j(rng, 0.45, v) * r_out, r_max=r_out,
                                    height=_j(rng, 4.0, v), sections=96)


@_part("pin", albedo=(0.78, 0.78, 0.80), kind="metal", roughness=0.2)
def _pin(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    return trimesh.creation.capsule(height=_j(rng, 40.0, v), radius=_j(rng, 6.0, v),
                                    count=[48, 48])


@_part("ring", albedo=(0.08, 0.08, 0.09), kind="plastic", roughness=0.7)
def _ring(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    return trimesh.creation.torus(major_radius=_j(rng, 25.0, v), minor_radius=_j(rng, 6.0, v),
                                  major_sections=96, minor_sections=32)


@_part("plate", albedo=_ALUMINIUM, kind="metal", roughness=0.4)
def _plate(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=[_j(rng, 80.0, v), _j(rng, 50.0, v), _j(rng, 5.0, v)])


@_part("flange", albedo=_STEEL, kind="metal", roughness=0.35)
def _flange(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    r = _j(rng, 35.0, v)
    r_in, r_hub = 0.3 * r, _j(rng, 0.5, v) * r
    t, hub = _j(rng, 6.0, v), _j(rng, 14.0, v)
    return _center(_revolve([(r_in, 0.0), (r, 0.0), (r, t), (r_hub, t), (r_hub, t + hub),
                             (r_in, t + hub)]))


# --------------------------------------------------------------------------------------------
# machined parts


@_part("plate_holes", albedo=_ALUMINIUM, kind="metal", roughness=0.4)
def _plate_holes(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """80 x 50 x 6 plate, four 9 mm through holes near the corners, positions jittered."""
    length, width, thick = _j(rng, 80.0, v), _j(rng, 50.0, v), _j(rng, 6.0, v)
    plate = trimesh.creation.box(extents=[length, width, thick])
    nominal = np.array([[-0.32, -0.28], [0.32, -0.28], [-0.32, 0.28], [0.32, 0.28]])
    radii = 0.09 * width * (1.0 + _u(rng, v, 4))
    frac = nominal + 0.25 * _u(rng, v, (4, 2))  # up to 12.5 % of the side at variation 0.5
    holes = []
    for (fx, fy), r in zip(frac, radii, strict=True):
        margin = r + 1.5
        x = float(np.clip(fx * length, -length / 2 + margin, length / 2 - margin))
        y = float(np.clip(fy * width, -width / 2 + margin, width / 2 - margin))
        holes.append(_cylinder(float(r), thick + 2.0, (x, y, 0.0)))
    return _center(_drill(plate, holes))


@_part("bracket", albedo=_STEEL, kind="metal", roughness=0.45)
def _bracket(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """L angle bracket (60 base x 40 upright x 30 wide, 5 thick), 2 + 1 holes of 6 mm."""
    a, h, t, w = _j(rng, 60.0, v), _j(rng, 40.0, v), _j(rng, 5.0, v), _j(rng, 30.0, v)
    profile = np.array([[0, 0], [a, 0], [a, h], [a - t, h], [a - t, t], [0, t]])
    tris = np.array([[0, 1, 4], [0, 4, 5], [1, 2, 3], [1, 3, 4]])
    mesh = trimesh.creation.extrude_triangulation(profile, tris, height=w)
    # the profile's y becomes z (up) and the extrusion runs along -y: y in [-w, 0]
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    radii = 3.0 * (1.0 + _u(rng, v, 3))
    jit = 0.2 * _u(rng, v, (3, 2))
    base_len = a - t
    tools = []
    for i, fy in enumerate((0.27, 0.73)):  # base leg: holes along z
        r = float(radii[i])
        x = float(np.clip((0.45 + jit[i, 0]) * base_len, r + 1.5, base_len - r - 1.5))
        y = float(np.clip(-(fy + jit[i, 1]) * w, -w + r + 1.5, -r - 1.5))
        tools.append(_cylinder(r, 3.0 * t, (x, y, t / 2)))
    r = float(radii[2])  # upright leg: one hole along x
    y = float(np.clip(-(0.5 + jit[2, 0]) * w, -w + r + 1.5, -r - 1.5))
    z = float(np.clip(t + (0.55 + jit[2, 1]) * (h - t), t + r + 1.0, h - r - 1.5))
    tools.append(_cylinder(r, 3.0 * t, (a - t / 2, y, z), axis="x"))
    return _center(_drill(mesh, tools))


def _involute(alpha: np.ndarray) -> np.ndarray:
    return np.tan(alpha) - alpha


GEAR_TEETH = 18


@_part("gear", albedo=(0.55, 0.56, 0.58), kind="metal", roughness=0.3)
def _gear(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """18-tooth involute spur gear, module 3 (pitch diameter 54), 10 thick, keyed 16 mm bore.

    The module, face width, bore and key are jittered; each tooth's addendum (tip radius) is
    jittered on its own, within a fifth of ``variation``, as worn or badly cut teeth would be.
    """
    z = GEAR_TEETH
    m = _j(rng, 3.0, v)
    thick = _j(rng, 10.0, v)
    r_bore = m * _j(rng, 8.0 / 3.0, v)  # bore, key and teeth scale with the module
    key_w, key_d = r_bore * _j(rng, 0.5, v), r_bore * _j(rng, 0.25, v)
    r_p = m * z / 2.0
    alpha_p = np.deg2rad(20.0)
    r_b = r_p * np.cos(alpha_p)
    r_f = r_p - 1.25 * m * (1.0 + 0.2 * _u(rng, v))
    r_a = r_p + m * (1.0 + 0.2 * _u(rng, v, z))  # per-tooth tip radius
    psi0 = np.pi / (2 * z) + _involute(alpha_p)  # half tooth angle at (and below) the base

    def half_angle(r: np.ndarray) -> np.ndarray:
        return psi0 - _involute(np.arccos(np.minimum(1.0, r_b / r)))

    pts = []
    for k in range(z):
        theta = 2 * np.pi * k / z
        flank_r = np.linspace(max(r_f, r_b), r_a[k], 7)
        if r_f < r_b:
            flank_r = np.concatenate([[r_f], flank_r])
        psi = half_angle(flank_r)
        tip = np.linspace(-psi[-1], psi[-1], 5)[1:-1]
        root = np.linspace(theta + psi[0], theta + 2 * np.pi / z - psi[0], 6)[1:-1]
        ang = np.concatenate([theta - psi, theta + tip, (theta + psi)[::-1], root])
        rad = np.concatenate([flank_r, np.full(3, r_a[k]), flank_r[::-1], np.full(4, r_f)])
        pts.append(np.column_stack([rad * np.cos(ang), rad * np.sin(ang)]))
    outline = Polygon(np.concatenate(pts))
    bore = Point(0.0, 0.0).buffer(r_bore, quad_segs=16).union(
        box(-key_w / 2, 0.0, key_w / 2, r_bore + key_d))
    body = outline.difference(bore)
    if not body.is_valid or body.geom_type != "Polygon":  # pragma: no cover - guard
        raise RuntimeError("gear: invalid outline")
    return _center(_extrude(body, thick))


@_part("hex_nut", albedo=(0.74, 0.75, 0.72), kind="metal", roughness=0.3)
def _hex_nut(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """M10-like hexagon nut: 17 across flats, 8 high, 8.5 bore, 30 degree chamfers both sides."""
    s, h = _j(rng, 17.0, v), _j(rng, 8.0, v)
    r_bore = s * _j(rng, 0.25, v)  # relative to the size, so the wall never vanishes
    rot = _u(rng, v) * np.pi / 6  # angular position of the flats
    r_corner = s / np.sqrt(3.0)
    ang = rot + np.arange(6) * np.pi / 3
    hexagon = Polygon(np.column_stack([r_corner * np.cos(ang), r_corner * np.sin(ang)]))
    nut = _extrude(hexagon.difference(Point(0.0, 0.0).buffer(r_bore, quad_segs=12)), h)
    # chamfer: keep the inside of a double cone touching the flats' circle at the faces
    r0, r1 = 0.95 * s / 2, 1.02 * r_corner
    c = (r1 - r0) * np.tan(np.deg2rad(30.0))
    cone = _revolve([(0.5 * r_bore, -1.0), (r0 - 1.0 / np.tan(np.deg2rad(30.0)), -1.0),
                     (r1, c), (r1, h - c),
                     (r0 - 1.0 / np.tan(np.deg2rad(30.0)), h + 1.0), (0.5 * r_bore, h + 1.0)])
    nut = trimesh.boolean.intersection([nut, cone], engine="manifold")
    return _center(nut)


@_part("shaft", albedo=_STEEL, kind="metal", roughness=0.25)
def _shaft(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """Stepped shaft along z, 95 long, diameters 16/24/20/14, 0.8 chamfers, one ring groove."""
    radii = [_j(rng, r, v) for r in (8.0, 12.0, 10.0, 7.0)]
    lengths = [_j(rng, d, v) for d in (20.0, 35.0, 25.0, 15.0)]
    ch = _j(rng, 0.8, v)
    g_pos, g_w, g_d = _j(rng, 0.5, v), _j(rng, 1.2, v), _j(rng, 0.6, v)
    zs = np.concatenate([[0.0], np.cumsum(lengths)])
    prof: list[tuple[float, float]] = [(0.0, 0.0), (radii[0] - ch, 0.0), (radii[0], ch)]
    for i, r in enumerate(radii):
        if i > 0:
            prof.append((r, zs[i]))
        if i == 2:  # retaining-ring groove in the third section
            zg = zs[2] + g_pos * lengths[2]
            prof += [(r, zg - g_w / 2), (r - g_d, zg - g_w / 2), (r - g_d, zg + g_w / 2),
                     (r, zg + g_w / 2)]
        if i < len(radii) - 1:
            prof.append((r, zs[i + 1]))
    prof += [(radii[-1], zs[-1] - ch), (radii[-1] - ch, zs[-1]), (0.0, zs[-1])]
    return _center(_revolve(prof))


@_part("pipe", albedo=(0.86, 0.86, 0.83), kind="plastic", roughness=0.5)
def _pipe(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """Tube along z: 25 outer / 20 inner diameter, 90 long, with a 25 mm socket end."""
    r_in, wall, length = _j(rng, 10.0, v), _j(rng, 2.5, v), _j(rng, 90.0, v)
    socket, taper = _j(rng, 25.0, v), _j(rng, 3.0, v)
    r_out = r_in + wall
    rs_in = r_out + 0.2
    rs_out = rs_in + wall
    z1 = length - socket - taper
    return _center(_revolve([(r_in, 0.0), (r_out, 0.0), (r_out, z1), (rs_out, z1 + taper),
                             (rs_out, length), (rs_in, length), (rs_in, z1 + taper),
                             (r_in, z1 + taper)]))


# --------------------------------------------------------------------------------------------
# organic parts


@_part("cookie", albedo=(0.80, 0.60, 0.36), kind="organic", roughness=0.85)
def _cookie(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """Flattened blob ~60 x 56 x 16: a rounded disc whose surface varies by a few percent."""
    return _blob(rng, v, (30.0, 28.0, 8.0), squareness=3.0, nominal_seed=11,
                 nominal_amp=0.05, sample_amp=0.6, scale=2.5, octaves=3)


@_part("potato", albedo=(0.72, 0.56, 0.34), kind="organic", roughness=0.9)
def _potato(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    """Lumpy ellipsoid ~70 x 50 x 40 with a strong low-frequency deformation."""
    return _blob(rng, v, (35.0, 25.0, 20.0), squareness=2.0, nominal_seed=23,
                 nominal_amp=0.25, sample_amp=1.5, scale=1.5, octaves=2)


# --------------------------------------------------------------------------------------------
# public API


def list_objects() -> list[str]:
    """Names of the built-in part families, sorted.

    Example:
        >>> "gear" in list_objects()
        True
    """
    return sorted(_PARTS)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in _PARTS:
        raise InvalidInputError(f"object: unknown built-in part {name!r}; "
                                f"expected one of {list_objects()}")


def object_texture(name: str) -> dict[str, Any]:
    """Default rendering hints of the part family ``name`` (a fresh copy of its entry).

    Returns ``{"albedo": (r, g, b), "kind": "metal" | "plastic" | "organic",
    "roughness": float}``; see :data:`OBJECT_TEXTURES`.

    Example:
        >>> object_texture("gear")["kind"], len(object_texture("gear")["albedo"])
        ('metal', 3)
    """
    _check_name(name)
    return dict(OBJECT_TEXTURES[name])


def make_object(name: str, seed: int | np.random.Generator = 0,
                variation: float = 0.0) -> trimesh.Trimesh:
    """Build the part ``name`` (millimetres), its dimensions jittered by ``variation``.

    Args:
        name: one of :func:`list_objects`.
        seed: int or ``numpy.random.Generator``; the only source of randomness.
        variation: relative tolerance in ``[0, 0.5]``; 0 gives the nominal part for any seed.

    Returns:
        A new watertight ``trimesh.Trimesh`` with outward normals, centred on its bounding box.

    Raises:
        InvalidInputError: unknown ``name``, a bad ``seed``, or ``variation`` negative, NaN,
            infinite or above 0.5.

    Example:
        >>> a = make_object("potato", seed=1, variation=0.1)
        >>> b = make_object("potato", seed=1, variation=0.1)
        >>> a.vertices.tobytes() == b.vertices.tobytes(), a.is_volume
        (True, True)
    """
    _check_name(name)
    variation = check_positive(variation, "variation", allow_zero=True)
    if variation > MAX_VARIATION:
        raise InvalidInputError(f"variation: must be <= {MAX_VARIATION} (a relative "
                                f"manufacturing tolerance), got {variation!r}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidInputError(f"seed: expected an int or numpy Generator, got {seed!r}")
        if seed < 0:
            raise InvalidInputError(f"seed: must be >= 0, got {seed}")
        rng = np.random.default_rng(int(seed))
    return _PARTS[name](rng, variation)
