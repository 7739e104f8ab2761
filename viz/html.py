"""Self-contained HTML: plotly.js is embedded, so every page works offline.

:func:`save_html` writes one figure as a page; :func:`figure_div` and :func:`html_page` build
pages of several figures and HTML blocks that embed plotly.js once. Every file is written
atomically. Figures made by :func:`viz.sweep_figure` carry ``layout.meta.pcad_sweep`` and get
the small inline script that drives their per-parameter sliders (:mod:`viz._sweep_js`).

Example:
    >>> import plotly.graph_objects as go
    >>> from viz.html import external_scripts, figure_div, html_page
    >>> page = html_page(figure_div(go.Figure(go.Scatter(y=[1, 3, 2]))), title="demo")
    >>> external_scripts(page), "<title>demo</title>" in page
    ([], True)
"""

from __future__ import annotations

import functools
import html as _html
import os
import re
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from pcad.io import atomic_write
from viz._sweep_js import SWEEP_SCRIPT

PAGE_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 24px auto; max-width: 1280px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.25em; }
table.metrics { border-collapse: collapse; font-size: 0.92em; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 4px 9px; text-align: right; }
table.metrics th { background: #f0f0f0; } table.metrics td:first-child { text-align: left; }
.note { color: #8a5a00; background: #fff6e0; padding: 6px 10px; border-radius: 4px; }
.muted { color: #666; font-size: 0.9em; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fafafa; }
.card img { display: block; image-rendering: pixelated; max-width: 100%; }
.card .cap { font-size: 0.85em; margin-top: 4px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 0.85em; }
"""


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js bundle shipped with the installed plotly package (about 4.8 MB)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def post_script_for(fig: go.Figure) -> str | None:
    """The inline script a figure needs (sweep sliders), or None."""
    meta = fig.layout.meta
    if isinstance(meta, dict) and "pcad_sweep" in meta:
        return SWEEP_SCRIPT
    return None


def figure_div(fig: go.Figure, *, div_id: str | None = None, height: str | None = None) -> str:
    """One figure as a ``<div>`` (plotly.js not included: use it inside :func:`html_page`)."""
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, auto_play=False,
                       post_script=post_script_for(fig), div_id=div_id,
                       default_height=height or "100%", config={"responsive": True})


def html_page(body: str, title: str = "pcad", css: str = PAGE_CSS) -> str:
    """A complete HTML document with plotly.js embedded once in its head and ``body``."""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
            f"<title>{_html.escape(title)}</title>\n<style>{css}</style>\n"
            f"<script type=\"text/javascript\">{plotly_js()}</script>\n"
            f"</head><body>\n{body}\n</body></html>\n")


def write_html(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return path


def figure_html(fig: go.Figure) -> str:
    """``fig`` as a complete self-contained HTML document (plotly.js embedded)."""
    return pio.to_html(fig, include_plotlyjs=True, full_html=True, auto_play=False,
                       post_script=post_script_for(fig), config={"responsive": True})


def save_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as self-contained HTML (plotly.js embedded: works offline), atomically.

    Animated figures do not auto-play; sweep figures get their slider script.
    """
    return write_html(path, figure_html(fig))


_SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)


def external_scripts(text: str) -> list[str]:
    """The ``src`` of every ``<script>`` that loads code from elsewhere (empty: offline)."""
    return _SCRIPT_SRC.findall(text)
