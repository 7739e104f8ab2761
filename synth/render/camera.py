"""Pinhole camera of the virtual structured-light sensor (MVTec 3D-AD conventions).

The camera sits at the origin and looks along +z; image rows grow along +y and columns along
+x. A pixel's ray is ``((u - cx) / fx, (v - cy) / fy, 1)``, so a ray parameter equals the depth
``z`` and the organized cloud holds camera coordinates.

Example:
    >>> from synth.render.camera import Camera
    >>> cam = Camera.for_size(4, 6)
    >>> cam.rays().shape
    (4, 6, 6)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pcad.checks import check_int


@dataclass(frozen=True)
class Camera:
    """Intrinsics of an ``height x width`` pinhole camera (pixels)."""

    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def for_size(cls, height: int, width: int, fov_deg: float = 40.0) -> Camera:
        """A camera whose larger image side spans ``fov_deg`` degrees."""
        height = check_int(height, "height", minimum=1)
        width = check_int(width, "width", minimum=1)
        f = 0.5 * max(height, width) / np.tan(np.radians(fov_deg) / 2)
        return cls(height, width, float(f), float(f), (width - 1) / 2.0, (height - 1) / 2.0)

    def directions(self) -> np.ndarray:
        """``(H, W, 3) float64`` ray directions with unit z."""
        v, u = np.mgrid[: self.height, : self.width].astype(np.float64)
        return np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy,
                         np.ones_like(u)], axis=-1)

    def rays(self, origin: np.ndarray | None = None) -> np.ndarray:
        """``(H, W, 6) float32`` rays (origin, direction) for Open3D's RaycastingScene."""
        d = self.directions()
        o = np.zeros_like(d) if origin is None else np.broadcast_to(origin, d.shape)
        return np.concatenate([o, d], axis=-1).astype(np.float32)

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` pixel coordinates (u, v) of camera-frame ``points (N, 3)``."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack([p[:, 0] / p[:, 2] * self.fx + self.cx,
                         p[:, 1] / p[:, 2] * self.fy + self.cy], axis=1)

    def to_json(self) -> dict[str, Any]:
        """Parameters for ``calibration/camera_parameters.json``."""
        return {"model": "pinhole", **asdict(self),
                "intrinsics": [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0, 0, 1]],
                "frame": "camera at the origin looking along +z; xyz in the mesh's units"}
