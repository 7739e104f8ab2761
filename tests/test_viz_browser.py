"""A sweep page seen as a person sees it: headless Chromium opens it, moves a slider, and the
screenshots show that the picture changed and is not blank.

Needs Debian's ``chromium`` (``make install`` installs it when run as root) and the
``websocket-client`` package; skipped with the reason otherwise.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import viz
from viz.browser import BrowserError, Chromium, find_chromium

pytestmark = pytest.mark.slow

CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip("chromium is not installed (as root, `make install` runs "
                "`apt-get install -y chromium`); the browser test needs it",
                allow_module_level=True)
pytest.importorskip("websocket", reason="the websocket-client package drives chromium")

PLOT_READY = ("(function(){var d=document.querySelector('.js-plotly-plot');"
              "return !!(d && d._fullLayout && d.querySelector('.slider-container') &&"
              " d.querySelector('canvas'));})()")


def _image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory) -> Path:
    from pcad.io import sample_mesh
    from synth.objects import make_object

    points, normals, _ = sample_mesh(make_object("gear", seed=0), 6000, 0)
    sweep = viz.compute_sweep(points, {"scale": [2, 8], "strength": [0.005, 0.05],
                                       "octaves": [1, 6]}, normals=normals, seed=0)
    out = tmp_path_factory.mktemp("browser") / "sweep.html"
    return viz.save_html(viz.sweep_figure(sweep, max_points=4000), out)


def test_moving_a_slider_changes_the_picture(sweep_page: Path) -> None:
    browser = Chromium(width=1000, height=900, timeout=90)
    try:
        browser.start()
    except BrowserError as exc:  # pragma: no cover - a broken browser install
        pytest.skip(f"chromium could not be started: {exc}")
    with browser:  # close() ends the browser's process group
        browser.goto(sweep_page)
        browser.wait_for(PLOT_READY, timeout=90)
        time.sleep(1.0)  # let WebGL draw the first frame
        gd = "document.querySelector('.js-plotly-plot')"
        assert browser.evaluate(f"{gd}.pcadSweepKey()") == "1-1-1"  # starts mid-slider
        rails = browser.evaluate(
            "Array.from(document.querySelectorAll('.slider-container .slider-rail-rect'))"
            ".map(function(r){var b=r.getBoundingClientRect();"
            "return [b.left, b.top, b.width, b.height];})")
        assert len(rails) == 3  # scale, strength, octaves
        scene_bottom = int(min(r[1] for r in rails)) - 40
        before = _image(browser.screenshot())[:scene_bottom]

        # what a person does: click the left end of the strength slider's rail
        left, top, _, height = rails[1]
        browser.click(left + 3, top + height / 2)
        browser.wait_for(f"{gd}.pcadSweepShown === '1-0-1'", timeout=30)
        assert browser.evaluate(f"{gd}.layout.sliders[1].active") == 0
        time.sleep(1.0)
        after = _image(browser.screenshot())[:scene_bottom]
        errors = browser.page_errors()

    assert not errors, errors
    for shot in (before, after):  # not blank: a drawn cloud in many colours
        assert shot.std() > 10
        assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    changed = np.abs(before - after).max(axis=2) > 30
    assert changed.mean() > 0.005, f"only {changed.mean():.4%} of the pixels changed"
