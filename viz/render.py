"""PNG renders of point clouds: Open3D offscreen in a subprocess, matplotlib as the fallback.

Open3D's offscreen renderer needs an EGL or Vulkan context (on a headless CPU machine Mesa's
``mesa-vulkan-drivers`` provide one); without it Open3D segfaults or aborts instead of raising.
:func:`render_png` therefore renders in a child process (``python -m viz._render_child``), and
when the child fails, times out or writes no image, it warns with
:class:`RenderFallbackWarning` (saying why) and draws the PNG with matplotlib instead. The
caller never crashes.

Example:
    >>> import numpy as np, tempfile, os, warnings
    >>> from viz.render import render_png
    >>> p = np.random.default_rng(0).normal(size=(500, 3))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = os.path.join(tmp.name, "cloud.png")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     backend = render_png(p, out, values=p[:, 2], backend="matplotlib")
    >>> backend, os.path.getsize(out) > 0
    ('matplotlib', True)
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_points, check_values
from pcad.errors import InvalidInputError
from pcad.geometry import bbox_diagonal
from pcad.io import atomic_save
from viz.colors import NAN_RGB, colorize

BACKENDS = ("auto", "open3d", "matplotlib")


class RenderFallbackWarning(UserWarning):
    """Open3D offscreen rendering failed; the PNG was drawn with matplotlib."""


def _child_argv(npz: str, png: str) -> list[str]:
    """The command of the render child (replaced in tests to simulate a crash)."""
    return [sys.executable, "-m", "viz._render_child", npz, png]


def _camera(points: np.ndarray, elev: float, azim: float) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray, float]:
    lo, hi = points.min(0).astype(np.float64), points.max(0).astype(np.float64)
    center = (lo + hi) / 2
    radius = max(bbox_diagonal(points) / 2, 1e-9)
    e, a = np.radians(elev), np.radians(azim)
    direction = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    fov = 40.0
    dist = radius / np.sin(np.radians(fov / 2)) * 0.85
    return center, center + dist * direction, np.array([0.0, 0.0, 1.0]), fov


def _reason(proc: subprocess.CompletedProcess | None, timeout: float) -> str:
    if proc is None:
        return f"timed out after {timeout:g} s"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"the renderer process was killed by {name}"
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else "no message"
    return f"the renderer process exited with status {proc.returncode}: {last[:200]}"


def render_open3d(points: np.ndarray, colors: np.ndarray, path: Path, *, width: int,
                  height: int, point_size: float, elev: float, azim: float,
                  background: tuple[float, float, float], timeout: float) -> str | None:
    """Render in the child process; returns None on success, else why it failed."""
    center, eye, up, fov = _camera(points, elev, azim)
    with tempfile.TemporaryDirectory(prefix="pcad-render-") as tmp:
        npz = os.path.join(tmp, "in.npz")
        png = os.path.join(tmp, "out.png")
        np.savez(npz, points=points, colors=colors.astype(np.float32) / 255.0,
                 size=np.array([width, height]), point_size=point_size, eye=eye, center=center,
                 up=up, fov=fov, background=np.array([*background, 1.0], np.float32))
        env = dict(os.environ)
        env.setdefault("EGL_PLATFORM", "surfaceless")
        try:
            proc = subprocess.run(_child_argv(npz, png), capture_output=True, text=True,
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return _reason(None, timeout)
        except OSError as exc:
            return f"the renderer process could not start: {exc}"
        if proc.returncode != 0:
            return _reason(proc, timeout)
        try:
            from PIL import Image

            with Image.open(png) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - any unreadable output is a failure
            return f"the renderer wrote no readable PNG ({exc.__class__.__name__})"
        if arr.shape[:2] != (height, width) or arr.std() == 0:
            return "the renderer wrote a blank image"
        data = Path(png).read_bytes()
    atomic_save(path, lambda tmp_path: tmp_path.write_bytes(data))
    return None


def render_matplotlib(points: np.ndarray, colors: np.ndarray, path: Path, *, width: int,
                      height: int, point_size: float, elev: float, azim: float,
                      background: tuple[float, float, float], title: str = "") -> None:
    """Draw the cloud with matplotlib's Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=background)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1), projection="3d", facecolor=background)
    ax.scatter(points[:, 0], points[:, 1], points[:, 2], c=colors / 255.0,
               s=point_size ** 2, depthshade=False, linewidths=0)
    lo, hi = points.min(0), points.max(0)
    ax.set_box_aspect(np.maximum(hi - lo, 1e-9 * max(float(np.max(hi - lo)), 1e-9)))
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi,
                                              facecolor=background))


def render_png(points: Any, path: str | os.PathLike[str], *, values: Any = None,
               colors: Any = None, cmap: str = "viridis", vmin: float | None = None,
               vmax: float | None = None, width: int = 800, height: int = 600,
               point_size: float = 3.0, elev: float = 30.0, azim: float = -60.0,
               background: tuple[float, float, float] = (1.0, 1.0, 1.0),
               backend: str = "auto", timeout: float = 60.0) -> str:
    """Render ``points (N, 3)`` to a PNG file and return the backend that drew it.

    Args:
        values: ``(N,)`` numbers coloured through ``cmap`` (NaN in magenta), or
        colors: ``(N, 3)`` uint8 RGB (or floats in [0, 1]); neither: one grey-blue colour.
        elev, azim: viewing direction in degrees (matplotlib's convention, for both backends).
        backend: ``"auto"`` (Open3D in a subprocess, matplotlib with a warning when that
            fails), ``"open3d"`` (the same, but failure raises) or ``"matplotlib"``.
        timeout: seconds the Open3D child may take.

    Returns:
        ``"open3d"`` or ``"matplotlib"``.

    Raises:
        InvalidInputError: bad points, values or colours; an unknown backend; with
            ``backend="open3d"``, a failed render (the message says why).
    """
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    pts = check_points(points, "points", min_points=1)
    if values is not None and colors is not None:
        raise InvalidInputError("give values or colors, not both")
    if values is not None:
        rgb = colorize(check_values(values, len(pts)), cmap, vmin, vmax, NAN_RGB)
    elif colors is not None:
        c = np.asarray(colors)
        if c.shape != (len(pts), 3):
            raise InvalidInputError(f"colors: expected shape ({len(pts)}, 3), got {c.shape}")
        if np.issubdtype(c.dtype, np.floating):
            if not np.isfinite(c).all():
                raise InvalidInputError("colors: NaN or infinite values")
            c = np.clip(c * (255.0 if c.max() <= 1.0 else 1.0), 0, 255)
        rgb = c.astype(np.uint8)
    else:
        rgb = np.tile(np.array([[70, 110, 160]], np.uint8), (len(pts), 1))
    path = Path(path)
    opts = dict(width=int(width), height=int(height), point_size=float(point_size),
                elev=float(elev), azim=float(azim), background=tuple(background))
    if backend in ("auto", "open3d"):
        why = render_open3d(pts, rgb, path, timeout=timeout, **opts)
        if why is None:
            return "open3d"
        if backend == "open3d":
            raise InvalidInputError(f"open3d offscreen rendering failed: {why}")
        warnings.warn(RenderFallbackWarning(
            f"open3d offscreen rendering failed ({why}); drew {path.name} with matplotlib "
            "instead (install an EGL/Vulkan driver, e.g. Debian's mesa-vulkan-drivers, for "
            "Open3D renders)"), stacklevel=2)
    render_matplotlib(pts, rgb, path, **opts)
    return "matplotlib"
