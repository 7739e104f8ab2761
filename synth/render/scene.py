"""Place a part on a background plane in front of the camera and cast every pixel's ray.

The part lies flat: its smallest principal extent points along the viewing axis, it gets a
seeded in-plane rotation and small tilt, and rests on a plane that fills the view. The
distance is chosen so the part spans ``fill`` of the image's smaller side.

Example:
    >>> import numpy as np, trimesh
    >>> from synth.render.camera import Camera
    >>> from synth.render.scene import build_scene, cast, place_object
    >>> cam = Camera.for_size(32, 32)
    >>> pose = place_object(trimesh.creation.box(extents=[4, 3, 1]), cam,
    ...                     np.random.default_rng(0))
    >>> mesh = pose.apply(trimesh.creation.box(extents=[4, 3, 1]))
    >>> hits = cast(cam, build_scene(mesh, cam, pose.plane_z))
    >>> bool((hits.geometry == 0).any())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from pcad.errors import DegenerateGeometryError
from synth.render.camera import Camera

if TYPE_CHECKING:  # open3d is imported on first use: importing synth.render stays light
    import open3d as o3d

MISS = -1
OBJECT = 0
PLANE = 1


@dataclass
class Pose:
    """Rigid transform object -> camera (``rotation (3, 3)``, ``translation (3,)``) and the
    background plane depth ``plane_z``."""

    rotation: np.ndarray
    translation: np.ndarray
    plane_z: float

    def apply(self, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
        """A copy of ``mesh`` in camera coordinates."""
        out = mesh.copy()
        out.vertices = mesh.vertices @ self.rotation.T + self.translation
        return out

    def to_object(self, points: np.ndarray) -> np.ndarray:
        """Camera-frame points back to the object's frame."""
        return (points - self.translation) @ self.rotation

    def to_json(self) -> dict:
        return {"rotation": self.rotation.tolist(), "translation": self.translation.tolist(),
                "plane_z": self.plane_z}


def lying_rotation(mesh: trimesh.Trimesh) -> np.ndarray:
    """Rotation that turns the mesh's axis of least extent (area-weighted PCA) towards +z."""
    tri = mesh.triangles_center
    w = mesh.area_faces
    if w.sum() <= 0:
        raise DegenerateGeometryError("mesh: zero-area mesh")
    mu = (tri * w[:, None]).sum(0) / w.sum()
    cov = ((tri - mu) * w[:, None]).T @ (tri - mu) / w.sum()
    _, vecs = np.linalg.eigh(cov)
    rot = vecs[:, ::-1].T.copy()  # rows: largest, middle, smallest axis
    if np.linalg.det(rot) < 0:
        rot[2] = -rot[2]
    return rot


def place_object(mesh: trimesh.Trimesh, camera: Camera, rng: np.random.Generator,
                 fill: float = 0.65, tilt_deg: float = 6.0, shift: float = 0.05) -> Pose:
    """Seeded pose: lying flat, random in-plane angle, tilt up to ``tilt_deg``, centre shifted
    by up to ``shift`` of the view, resting on the background plane."""
    base = lying_rotation(mesh)
    spin = Rotation.from_euler("z", rng.uniform(0, 2 * np.pi)).as_matrix()
    tilt_axis = rng.normal(size=2)
    tilt_axis = np.append(tilt_axis / np.linalg.norm(tilt_axis), 0.0)
    tilt = Rotation.from_rotvec(tilt_axis * np.radians(rng.uniform(0, tilt_deg))).as_matrix()
    rot = tilt @ spin @ base
    v = (mesh.vertices - mesh.bounds.mean(axis=0)) @ rot.T
    span = 2.0 * np.linalg.norm(v[:, :2], axis=1).max()
    f = min(camera.fx, camera.fy)
    depth = f * span / (fill * min(camera.height, camera.width))
    z_front = depth
    t = np.array([0.0, 0.0, z_front - v[:, 2].min()])
    view = depth * min(camera.height, camera.width) / f
    t[:2] = rng.uniform(-shift, shift, size=2) * view
    t = t - mesh.bounds.mean(axis=0) @ rot.T
    plane_z = float(z_front + (v[:, 2].max() - v[:, 2].min()))
    return Pose(rot, t, plane_z)


def plane_mesh(camera: Camera, plane_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of a quad at depth ``plane_z`` covering the whole view (x4)."""
    hx = 2.0 * plane_z * max(camera.cx + 1, camera.width - camera.cx) / camera.fx
    hy = 2.0 * plane_z * max(camera.cy + 1, camera.height - camera.cy) / camera.fy
    v = np.array([[-hx, -hy, plane_z], [hx, -hy, plane_z], [hx, hy, plane_z],
                  [-hx, hy, plane_z]])
    return v, np.array([[0, 2, 1], [0, 3, 2]])


@dataclass
class Hits:
    """Per-pixel ray-cast result: ``depth (H, W)`` (inf on a miss), ``geometry (H, W)``
    (:data:`OBJECT`, :data:`PLANE` or :data:`MISS`), ``face (H, W)`` (object face index, -1
    elsewhere), ``bary (H, W, 3)`` barycentric weights of the face's vertices, and
    ``normal (H, W, 3)`` unit geometric normals facing the camera."""

    depth: np.ndarray
    geometry: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    normal: np.ndarray

    def points(self, camera: Camera) -> np.ndarray:
        """``(H, W, 3) float64`` hit points (zeros on a miss)."""
        d = np.where(np.isfinite(self.depth), self.depth, 0.0)
        return camera.directions() * d[..., None]


def build_scene(mesh_cam: trimesh.Trimesh, camera: Camera, plane_z: float
                ) -> o3d.t.geometry.RaycastingScene:
    """Open3D ray-casting scene of the part (camera frame, geometry 0) and the plane (1)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh_cam.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh_cam.faces, np.uint32)))
    pv, pf = plane_mesh(camera, plane_z)
    scene.add_triangles(o3d.core.Tensor(pv.astype(np.float32)),
                        o3d.core.Tensor(pf.astype(np.uint32)))
    return scene


def cast(camera: Camera, scene: o3d.t.geometry.RaycastingScene) -> Hits:
    """Cast every pixel's ray into a scene made by :func:`build_scene`."""
    import open3d as o3d

    out = scene.cast_rays(o3d.core.Tensor(camera.rays()))
    t = out["t_hit"].numpy().astype(np.float64)
    gid = out["geometry_ids"].numpy().astype(np.int64)
    gid[gid == o3d.t.geometry.RaycastingScene.INVALID_ID] = MISS
    prim = out["primitive_ids"].numpy().astype(np.int64)
    uv = out["primitive_uvs"].numpy().astype(np.float64)
    face = np.where(gid == OBJECT, prim, -1)
    bary = np.stack([1.0 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]], axis=-1)
    normal = out["primitive_normals"].numpy().astype(np.float64)
    d = camera.directions()
    flip = (normal * d).sum(-1) > 0
    normal[flip] *= -1.0
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    return Hits(np.where(gid == MISS, np.inf, t), gid, face, bary, normal)


def occluded_from(scene: o3d.t.geometry.RaycastingScene, points: np.ndarray,
                  source: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: hit ``points`` that a light source at ``source`` cannot see
    (the projector shadow of a structured-light sensor)."""
    import open3d as o3d

    vec = points - source
    dist = np.linalg.norm(vec, axis=-1)
    rays = np.concatenate([np.broadcast_to(source, points.shape),
                           vec / np.maximum(dist[..., None], 1e-12)], axis=-1).astype(np.float32)
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    return t < dist * (1.0 - 1e-4)
