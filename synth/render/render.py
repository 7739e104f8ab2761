"""Render one sample: a part (good or with a defect) seen by the virtual sensor.

Pipeline (all seeded from one ``seed``): pose -> (geometric defect on the finely subdivided
mesh, its centre drawn among the vertices the camera sees) -> ray cast -> structured-light
sensor model (projector shadow, grazing-angle and random dropouts, depth noise) for ``xyz`` ->
albedo, optional colour contamination, lighting and camera noise for ``rgb`` -> ground truth.

Ground truth per pixel (object pixels only, whether or not the sensor kept the xyz value):

- geometric defects: the seen surface point's offset is the barycentric interpolation of the
  vertex offsets of the hit triangle, and the pixel is anomalous iff its norm is at least the
  synthesizer's ``threshold_abs`` (:mod:`synth.result`);
- holes: pixels whose ray hits a removed face of the intact part;
- contamination: pixels whose stain weight is at least ``gt_threshold``.

Example:
    >>> from synth.objects import make_object
    >>> from synth.render import Camera, render_sample
    >>> s = render_sample(make_object("plate"), Camera.for_size(64, 64), seed=0, defect="dent")
    >>> s.rgb.shape, s.xyz.dtype, s.gt.dtype
    ((64, 64, 3), dtype('float32'), dtype('bool'))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import trimesh

from pcad.checks import check_fraction, check_positive
from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.geometry import bbox_diagonal
from synth.apply import apply_defect
from synth.defects import create_defect, list_defects, register_defect
from synth.field import normalize01, perlin_field
from synth.regions import falloff, irregular_radius
from synth.render.camera import Camera
from synth.render.conditions import Conditions
from synth.render.scene import (
    OBJECT,
    PLANE,
    Hits,
    Pose,
    build_scene,
    cast,
    occluded_from,
    place_object,
)
from synth.render.shading import (
    MAT_COLOUR,
    Lighting,
    albedo,
    background_albedo,
    shade,
    to_uint8,
)

CONTAMINATION = "contamination"
RGB_DEFECTS = (CONTAMINATION,)
COMBINED = "combined"
COMBINED_GEOMETRIC = ("bump", "dent", "crack", "hole")
MIN_OBJECT_FRACTION = 0.002


def render_defects() -> list[str]:
    """Defect names a rendered sample accepts (from the registry): the geometric ones, then the
    appearance and composite ones made here (``contamination``, ``combined``)."""
    return [*list_defects(kind="geometric"), *list_defects(kind="appearance", made_by="render"),
            *list_defects(kind="composite", made_by="render")]


@dataclass(frozen=True)
class SensorConfig:
    """Structured-light sensor and scene settings (all relative or unitless)."""

    depth_noise: float = 0.0003     # relative depth noise (sigma / depth)
    dropout: float = 0.002          # random invalid pixels
    grazing_deg: float = 82.0       # rays more oblique than this are not measured
    baseline: float = 0.12          # projector offset along x, fraction of the distance
    rgb_noise: float = 1.5          # camera noise, 8-bit steps
    fill: float = 0.65              # part span / image size
    tilt_deg: float = 6.0           # pose tilt jitter
    light_jitter: float = 1.0       # 0 = fixed light, 1 = full jitter
    subdivide_px: float = 2.0       # edge length of the defect mesh, in pixel footprints

    def __post_init__(self) -> None:
        for name in ("depth_noise", "dropout", "baseline", "rgb_noise", "tilt_deg",
                     "light_jitter"):
            check_positive(getattr(self, name), f"sensor.{name}", allow_zero=True)
        check_fraction(self.fill, "sensor.fill", inclusive_zero=False)
        check_positive(self.subdivide_px, "sensor.subdivide_px")
        if not 0 < self.grazing_deg <= 90:
            raise InvalidInputError(f"sensor.grazing_deg: must be in (0, 90], got "
                                    f"{self.grazing_deg}")


@dataclass
class RenderedSample:
    """``rgb (H, W, 3) uint8``, ``xyz (H, W, 3) float32`` (zeros = no measurement),
    ``gt (H, W) bool``, ``object_mask (H, W) bool`` (pixels showing the part) and ``meta``.

    The terms of the ground-truth rule, per pixel: ``offset_norm`` (norm of the seen surface
    point's displacement, 0 off the part), ``hole`` (the intact part was seen here and its
    surface is gone) and ``stain`` (contamination weight)."""

    rgb: np.ndarray
    xyz: np.ndarray
    gt: np.ndarray
    object_mask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    offset_norm: np.ndarray | None = None
    hole: np.ndarray | None = None
    stain: np.ndarray | None = None


def _streams(seed: int) -> dict[str, int]:
    names = ("pose", "light", "defect", "sensor", "texture", "stain", "combined", "centre")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: int(c.generate_state(1)[0]) for n, c in zip(names, children, strict=True)}


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(V, 3)`` area-weighted unit vertex normals (zero for unreferenced vertices)."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    out = np.zeros_like(vertices, dtype=np.float64)
    for corner in range(3):
        for k in range(3):
            out[:, k] += np.bincount(faces[:, corner], weights=fn[:, k],
                                     minlength=len(vertices))
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, length, out=np.zeros_like(out), where=length > 0)


def refine_near(vertices: np.ndarray, faces: np.ndarray, centre: np.ndarray,
                radius: float | None, max_edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Subdivide the faces that come within ``radius`` of ``centre`` (all faces when radius is
    None) until their edges are shorter than ``max_edge``. Original vertices keep their
    indices; T-junctions appear only beyond ``radius``, where a defect moves nothing, so the
    surface stays closed."""
    if radius is None:
        sel = np.ones(len(faces), bool)
    else:
        tri = vertices[faces]
        reach = np.linalg.norm(tri - tri.mean(axis=1, keepdims=True), axis=2).max(axis=1)
        dist = np.linalg.norm(tri.mean(axis=1) - centre, axis=1)
        sel = dist <= radius + reach + max_edge
    v, f = trimesh.remesh.subdivide_to_size(vertices, faces[sel], max_edge=max_edge,
                                            max_iter=12)
    return np.asarray(v, np.float64), np.vstack([faces[~sel], f]).astype(np.int64)


def _geometric(mesh_obj: trimesh.Trimesh, pose: Pose, camera: Camera, cfg: SensorConfig,
               intact: Hits, name: str, seed: int, centre_seed: int, params: dict[str, Any]
               ) -> tuple[trimesh.Trimesh, np.ndarray, dict[str, Any]]:
    """Apply a geometric defect around a seeded point the camera sees, on the part refined
    near that point. Returns the defective mesh (object frame), its per-vertex offsets and the
    defect's parameters."""
    defect = create_defect(name, **params)
    seen = intact.geometry == OBJECT
    pts = pose.to_object(intact.points(camera)[seen])
    centre = pts[np.random.default_rng(centre_seed).integers(len(pts))]
    v0 = np.asarray(mesh_obj.vertices, np.float64)
    diag = bbox_diagonal(v0, "vertices")
    footprint = pose.plane_z / camera.fx
    support = defect.support(diag)
    # about one vertex per `subdivide_px` pixels, and at least 40 across the defect's support
    max_edge = cfg.subdivide_px * footprint
    f0 = np.asarray(mesh_obj.faces, np.int64)
    if support is not None:
        max_edge = max(max_edge, support / 40.0)
        # CAD triangulations have long slivers: even them out first (coarsely, everywhere) so
        # that the fine refinement stays local to the support
        v0, f0 = trimesh.remesh.subdivide_to_size(v0, f0, max_edge=max(diag / 50.0, max_edge),
                                                  max_iter=12)
    v, f = refine_near(np.asarray(v0, np.float64), np.asarray(f0, np.int64), centre, support,
                       max_edge)
    used = np.zeros(len(v), bool)
    used[f.reshape(-1)] = True
    if not used.all():
        raise DegenerateGeometryError("mesh: unreferenced vertices; clean the mesh first")
    normals = vertex_normals(v, f)
    nearest = int(np.argmin(np.linalg.norm(v - centre, axis=1)))
    res = apply_defect(v, defect, normals=normals, seed=seed, centre_candidates=[nearest])
    offsets = np.zeros_like(v)
    keep = np.ones(len(v), bool)
    keep[res.removed] = False
    offsets[keep] = res.offsets
    damaged = trimesh.Trimesh(v + offsets, f[keep[f].all(axis=1)], process=False)
    return damaged, offsets, res.params


def _stain(points_obj: np.ndarray, diag: float, rng: np.random.Generator, seed: int
           ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Colour contamination weights ``(N,)`` on object points and the stain colour."""
    centre = points_obj[rng.integers(len(points_obj))]
    radius = diag * rng.uniform(0.05, 0.12)
    g = normalize01(perlin_field(points_obj / diag, 6.0, 4, 0.5, 2.0, seed=seed))
    r = irregular_radius(radius, g, 0.5)
    w = falloff(np.linalg.norm(points_obj - centre, axis=1) / r, "poly")
    beta = rng.uniform(0.55, 0.9)
    colour = np.array(rng.choice([[0.25, 0.15, 0.08], [0.55, 0.45, 0.15], [0.1, 0.1, 0.1],
                                  [0.6, 0.2, 0.1]]))
    info = {"centre": centre.tolist(), "radius_abs": radius, "blend": beta,
            "colour": colour.tolist(), "gt_threshold": 0.1}
    return w * beta, colour, info


@register_defect(COMBINED, kind="composite", made_by="render",
                 description="a random geometric defect (bump, dent, crack or hole) plus "
                 "contamination, rendered")
@register_defect(CONTAMINATION, kind="appearance", made_by="render",
                 description="an RGB-only stain of the part's albedo through a Perlin-shaped "
                 "region, rendered")
def render_sample(mesh: trimesh.Trimesh, camera: Camera, seed: int, defect: str | None = None,
                  defect_params: dict[str, Any] | None = None,
                  sensor: SensorConfig | None = None, colour: tuple[float, float, float] = (
                      0.6, 0.6, 0.62), material: str = "metal",
                  texture: np.ndarray | None = None,
                  background_seed: int | None = None,
                  params_by_type: dict[str, dict[str, Any]] | None = None,
                  conditions: Conditions | None = None) -> RenderedSample:
    """Render the part ``mesh`` (object frame, any units) as one dataset sample.

    Args:
        mesh: a watertight or open triangle mesh with non-zero area.
        camera: the sensor's intrinsics (image size). seed: the sample's seed.
        defect: ``None`` (good), a geometric defect name, ``"contamination"`` or
            ``"combined"`` (a random geometric defect plus contamination).
        defect_params: parameters of the geometric defect (relative sizes).
        sensor: :class:`SensorConfig`. colour, material, texture: the part's look.
        params_by_type: parameters per geometric defect type (used for whichever type is
            applied, ``combined`` included); ``defect_params`` override them.
        background_seed: seed of the background mat's texture (one per category in a dataset,
            as a real station's mat); drawn from ``seed`` when None.
        conditions: the ranges of pose, light, exposure and mat
            (:mod:`synth.render.conditions`); None or standard: the renderer's own jitter,
            byte for byte. Other conditions add ``meta["conditions"]`` (the values drawn).
    """
    cfg = sensor or SensorConfig()
    if defect is not None and defect not in render_defects():
        raise InvalidInputError(f"defect: unknown type {defect!r}; expected one of "
                                f"{render_defects()}")
    if len(mesh.faces) == 0 or float(mesh.area) <= 0:
        raise DegenerateGeometryError("mesh: empty or zero-area mesh")
    s = _streams(seed)
    cond = conditions or Conditions()
    extra = cond.draw(seed)
    diag = float(np.linalg.norm(mesh.extents))
    pose = place_object(mesh, camera, np.random.default_rng(s["pose"]),
                        cfg.fill * extra["fill_scale"], cfg.tilt_deg * cond.tilt_factor,
                        cond.shift)
    pose.plane_z += extra["mat_drop"] * diag
    meta: dict[str, Any] = {"seed": seed, "defect": defect or "good", "pose": pose.to_json(),
                            "sensor": asdict(cfg)}
    if not cond.is_standard:
        meta["conditions"] = {"name": cond.name, **extra}
    geometric = defect if defect in list_defects(kind="geometric") else None
    if defect == COMBINED:
        geometric = str(np.random.default_rng(s["combined"]).choice(COMBINED_GEOMETRIC))
    params = dict((params_by_type or {}).get(geometric, {}))
    params.update(defect_params or {})
    intact_scene = build_scene(pose.apply(mesh), camera, pose.plane_z)
    intact = cast(camera, intact_scene)
    scene, hits = intact_scene, intact
    if geometric is not None:
        damaged, offsets, dparams = _geometric(mesh, pose, camera, cfg, intact, geometric,
                                               s["defect"], s["centre"], params)
        scene = build_scene(pose.apply(damaged), camera, pose.plane_z)
        hits = cast(camera, scene)
        meta["geometric"] = {"type": geometric, **dparams}
    obj = hits.geometry == OBJECT
    if obj.mean() < MIN_OBJECT_FRACTION:
        raise DegenerateGeometryError("the camera does not see the part (fewer than "
                                      f"{MIN_OBJECT_FRACTION:.1%} of the pixels)")
    pts = hits.points(camera)
    gt = np.zeros(obj.shape, bool)
    offset_norm = np.zeros(obj.shape)
    hole = np.zeros(obj.shape, bool)
    stain_map = np.zeros(obj.shape)
    if geometric is not None:
        faces = damaged.faces[hits.face[obj]]
        off = (offsets[faces] * hits.bary[obj][..., None]).sum(axis=1)
        offset_norm[obj] = np.linalg.norm(off, axis=1)
        gt[obj] = offset_norm[obj] >= dparams["threshold_abs"]
        if dparams.get("defect") == "hole":
            # pixels where the intact part was seen and its surface is gone
            gone = (hits.geometry != OBJECT) | (hits.depth > intact.depth * (1 + 1e-6))
            hole = (intact.geometry == OBJECT) & gone
            gt |= hole
    # --- RGB -------------------------------------------------------------------------------
    alb = np.zeros(pts.shape)
    pts_obj = pose.to_object(pts[obj])
    alb[obj] = albedo(pts_obj, diag, np.asarray(colour, np.float64), material, s["texture"],
                      texture)
    plane = hits.geometry == PLANE
    bg_seed = s["texture"] + 7 if background_seed is None else int(background_seed)
    if extra["mat_seed"] is not None:
        bg_seed = extra["mat_seed"]
    mat = np.asarray(MAT_COLOUR) * extra["mat_brightness"] * np.asarray(extra["mat_tint"])
    alb[plane] = background_albedo(pts[plane], diag * 2.0, bg_seed, mat, extra["mat_contrast"])
    if defect in (*RGB_DEFECTS, COMBINED):
        w, stain, info = _stain(pts_obj, diag, np.random.default_rng(s["stain"]), s["stain"])
        alb[obj] = alb[obj] * (1.0 - w[:, None]) + stain[None, :] * w[:, None]
        stain_map[obj] = w
        gt[obj] |= w >= info["gt_threshold"] * info["blend"]
        meta["contamination"] = info
    light = Lighting.sample(np.random.default_rng(s["light"]), cfg.light_jitter,
                            cond.light_elevation_deg, cond.light_intensity, cond.light_ambient)
    linear = shade(hits.geometry, hits.normal, camera.directions(), alb, light, material)
    if extra["exposure"] != 1.0:
        linear = np.clip(linear * extra["exposure"], 0.0, 1.0)
    sensor_rng = np.random.default_rng(s["sensor"])
    rgb = to_uint8(linear, sensor_rng, cfg.rgb_noise * extra["gain"])
    meta["lighting"] = {"direction": light.direction.tolist(), "intensity": light.intensity,
                        "ambient": light.ambient}
    # --- xyz: structured-light sensor ------------------------------------------------------
    valid = np.isfinite(hits.depth)
    d = camera.directions()
    cosang = np.abs((hits.normal * d).sum(-1)) / np.linalg.norm(d, axis=-1)
    valid &= cosang >= np.cos(np.radians(cfg.grazing_deg))
    if cfg.baseline > 0:
        source = np.array([cfg.baseline * pose.plane_z, 0.0, 0.0])
        valid &= ~occluded_from(scene, pts, source)
    valid &= sensor_rng.random(valid.shape) >= cfg.dropout
    scale = 1.0 + cfg.depth_noise * sensor_rng.standard_normal(valid.shape)
    xyz = np.where(valid[..., None], pts * scale[..., None], 0.0).astype(np.float32)
    meta.update(n_object_pixels=int(obj.sum()), n_valid=int(valid.sum()),
                n_anomalous=int(gt.sum()))
    return RenderedSample(rgb, xyz, gt, obj, meta, offset_norm, hole, stain_map)
