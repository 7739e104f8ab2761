"""Child process of :func:`viz.render.render_png`: Open3D offscreen rendering of one cloud.

Run as ``python -m viz._render_child IN.npz OUT.png``. Open3D aborts or segfaults (instead of
raising) when no EGL/Vulkan context can be made, so this runs in its own process; the parent
falls back to matplotlib when it fails. ``IN.npz`` holds ``points (N, 3)``, ``colors (N, 3)``
in [0, 1], ``size (2,)`` (width, height), ``point_size``, ``eye``, ``center``, ``up`` and
``background (4,)``.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import numpy as np
    import open3d as o3d

    data = np.load(argv[0])
    width, height = (int(v) for v in data["size"])
    renderer = o3d.visualization.rendering.OffscreenRenderer(width, height)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(data["points"].astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(data["colors"].astype(np.float64))
    mat = o3d.visualization.rendering.MaterialRecord()
    mat.shader = "defaultUnlit"
    mat.point_size = float(data["point_size"])
    renderer.scene.view.set_post_processing(False)  # no tone mapping: exact colours
    renderer.scene.set_background(data["background"].astype(np.float32))
    renderer.scene.add_geometry("cloud", cloud, mat)
    renderer.setup_camera(float(data["fov"]), data["center"].astype(np.float32),
                          data["eye"].astype(np.float32), data["up"].astype(np.float32))
    image = renderer.render_to_image()
    if not o3d.io.write_image(argv[1], image):
        print(f"could not write {argv[1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
