"""viz: plotly figures of clouds, defects, sweeps, anomaly maps and curves; offline HTML pages.

Every page embeds plotly.js (it works offline). Figures: :func:`cloud_figure` (a cloud coloured
by any per-point value, NaN in magenta), :func:`defect_figure` (before/after with displacement
colours and the gt), :func:`sweep_figure` of :func:`compute_sweep` (a parameter sweep with one
slider per parameter), :func:`anomaly_map_figure` (organized or unorganized clouds),
:func:`overlay_figure` / :func:`overlay_image` (RGB, anomaly map, gt contour),
:func:`defect_selector_figure` (several defects of a part in one large view with a dropdown;
3D helpers in :mod:`viz.view3d`: lit surfaces, shaded points, fitted cameras),
:func:`roc_figure` and :func:`pro_figure`. Pages: :func:`save_html`, :func:`write_report` (an
evaluation run or a folder of them), :func:`write_sample_page` (a dataset sample). PNG:
:func:`render_png` (Open3D offscreen in a subprocess, matplotlib fallback with a
:class:`RenderFallbackWarning`).

Example:
    >>> import numpy as np
    >>> from viz import cloud_figure
    >>> cloud_figure(np.eye(3)).data[0].type
    'scatter3d'
"""

from viz.clouds import NAN_COLOUR, cloud_figure, display_subset
from viz.curves import pro_figure, roc_curve, roc_figure
from viz.defects import defect_figure, defect_selector_figure
from viz.html import figure_div, figure_html, html_page, save_html
from viz.maps import anomaly_map_figure, overlay_figure, overlay_image
from viz.render import RenderFallbackWarning, render_png
from viz.report import load_run, report_html, write_report
from viz.sample import find_sample, sample_html, write_sample_page
from viz.sweep import SWEEP_SCRIPT, Sweep, SweepFrame, compute_sweep, default_grid, sweep_figure

__all__ = [
    "NAN_COLOUR",
    "SWEEP_SCRIPT",
    "RenderFallbackWarning",
    "Sweep",
    "SweepFrame",
    "anomaly_map_figure",
    "cloud_figure",
    "compute_sweep",
    "default_grid",
    "defect_figure",
    "defect_selector_figure",
    "display_subset",
    "figure_div",
    "figure_html",
    "find_sample",
    "html_page",
    "load_run",
    "overlay_figure",
    "overlay_image",
    "pro_figure",
    "render_png",
    "report_html",
    "roc_curve",
    "roc_figure",
    "sample_html",
    "save_html",
    "sweep_figure",
    "write_report",
    "write_sample_page",
]
