"""The report and the 3D pages seen as a person sees them: headless Chromium renders them and
the screenshots are checked where the page says its parts are.

- report: the colour bar is a left-to-right gradient of many colours getting brighter, the
  score histogram shows both the good and the defect colour and the threshold line, the
  thumbnails are not dark, the header table is drawn;
- 3D (the demo's per-part page and a scan's sample page): the view is not blank, the ground
  truth shows in cyan, the part is framed (it touches no edge of the view and fills a good
  part of it), and the dropdown switches the defect shown.

Needs Debian's ``chromium`` and the ``websocket-client`` package; skipped with the reason
otherwise.
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

if find_chromium() is None:
    pytest.skip("chromium is not installed (as root, `make install` runs "
                "`apt-get install -y chromium`); the browser test needs it",
                allow_module_level=True)
pytest.importorskip("websocket", reason="the websocket-client package drives chromium")

READY = ("Array.from(document.querySelectorAll('.js-plotly-plot'))"
         ".every(function(d){return d._fullLayout})")
RECT = ("(function(sel){var e=document.querySelector(sel); if(!e) return null;"
        "e.scrollIntoView({block:'start'}); var b=e.getBoundingClientRect();"
        "return [b.left, b.top, b.width, b.height];})")


def _image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _crop(img: np.ndarray, rect: list[float]) -> np.ndarray:
    x, y, w, h = (int(round(v)) for v in rect)
    return img[max(y, 0):y + h, max(x, 0):x + w]


def _near(img: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return (np.abs(img - np.array(colour)).max(axis=-1) <= tol)


def _browser() -> Chromium:
    b = Chromium(width=1200, height=900, timeout=90)
    try:
        b.start()
    except BrowserError as exc:  # pragma: no cover - a broken browser install
        pytest.skip(f"chromium could not be started: {exc}")
    return b


def _open(browser: Chromium, page: Path) -> None:
    browser.goto(page)
    browser.wait_for(READY, timeout=90)
    time.sleep(1.0)  # let plotly and WebGL draw


def _shot_of(browser: Chromium, selector: str) -> np.ndarray:
    rect = browser.evaluate(f"{RECT}({selector!r})")
    assert rect is not None, f"no {selector} on the page"
    time.sleep(0.3)
    rect = browser.evaluate(f"{RECT}({selector!r})")  # after scrolling
    return _crop(_image(browser.screenshot()), rect)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    from tests.test_viz import make_run

    tmp = tmp_path_factory.mktemp("report")
    make_run(tmp, category="gear", threshold=0.5, run_name="results/gear")
    make_run(tmp, category="cookie", threshold=0.75, run_name="results/cookie")
    return viz.write_report(tmp / "results", tmp / "results" / "report.html")


def test_report_colour_bar_histogram_and_thumbnails(report_page: Path) -> None:
    browser = _browser()
    with browser:
        _open(browser, report_page)
        header = _shot_of(browser, "table.header")
        bar = _shot_of(browser, ".cbar img")
        thumb = _shot_of(browser, ".card img")
        browser.evaluate("window.scrollTo(0, 0)")
        hist = _shot_of(browser, ".js-plotly-plot")  # the first figure: the histograms
        errors = browser.page_errors()
    assert not errors, errors
    assert header.std() > 10 and (header.mean(axis=-1) < 120).mean() > 0.005  # text drawn
    # colour bar: a gradient of many colours, dark on the left, bright on the right
    assert len(np.unique(bar.reshape(-1, 3), axis=0)) > 40
    lum = bar.mean(axis=(0, 2))
    assert lum[: len(lum) // 8].mean() < 60 < 160 < lum[-len(lum) // 8:].mean()
    # histogram: good (blue) and defect (red) bars, and the dashed threshold line (dark)
    assert _near(hist, (139, 167, 198), 25).sum() > 50  # #4c78a8 at 65 % opacity on white
    assert _near(hist, (237, 146, 145), 25).sum() > 50  # #e45756 likewise
    assert (hist.max(axis=-1) < 70).sum() > 20
    # thumbnails: the map tile is not a dark square
    right = thumb[:, thumb.shape[1] // 2:]
    assert right.std() > 15 and right.mean() > 40


@pytest.fixture(scope="module")
def part_page(tmp_path_factory) -> Path:
    from pcad.io import sample_mesh
    from synth import apply_defect
    from synth.objects import make_object

    points, normals, _ = sample_mesh(make_object("gear", seed=0), 6000, 0)
    res = {d: apply_defect(points, d, normals=normals, seed=0) for d in ("bump", "crack")}
    out = tmp_path_factory.mktemp("part") / "gear.html"
    return viz.save_html(viz.defect_selector_figure(res, title="gear"), out)


def _framed(scene: np.ndarray) -> tuple[float, float, int]:
    """(fraction of width, fraction of height, pixels to the nearest edge) of the part:
    coloured or dark pixels (the grid and tick labels are light grey)."""
    sat = scene.max(axis=-1) - scene.min(axis=-1)
    part = (sat > 60) | (scene.max(axis=-1) < 50)
    ys, xs = np.nonzero(part)
    assert len(xs) > 500, "the 3D view is blank"
    h, w = part.shape
    edge = min(xs.min(), ys.min(), w - 1 - xs.max(), h - 1 - ys.max())
    return (xs.max() - xs.min()) / w, (ys.max() - ys.min()) / h, int(edge)


HIDE_OVERLAYS = ("(function(){var s=document.createElement('style');s.textContent="
                 "'.legend,.colorbar,.updatemenu-container,.gtitle{display:none!important}';"
                 "document.head.appendChild(s);return true;})()")


def test_part_page_one_framed_shaded_view_with_a_selector(part_page: Path) -> None:
    browser = _browser()
    with browser:
        _open(browser, part_page)
        assert browser.evaluate("document.querySelectorAll('.updatemenu-container').length") \
            == 1
        first = _shot_of(browser, ".js-plotly-plot")
        gd = "document.querySelector('.js-plotly-plot')"
        # what the dropdown's second entry does
        browser.evaluate(f"Plotly.update({gd}, {gd}.layout.updatemenus[0].buttons[1].args[0],"
                         f" {gd}.layout.updatemenus[0].buttons[1].args[1])"
                         ".then(function(){return true;})")
        time.sleep(1.0)
        second = _shot_of(browser, ".js-plotly-plot")
        browser.evaluate(HIDE_OVERLAYS)
        time.sleep(0.5)
        bare = _shot_of(browser, ".js-plotly-plot")
        errors = browser.page_errors()
    assert not errors, errors
    for shot in (first, second):
        assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    assert _near(first, (0, 230, 255), 30).sum() > 5  # the ground truth, in cyan
    assert (np.abs(first - second).max(axis=-1) > 30).mean() > 0.002  # the selector works
    fw, fh, edge = _framed(bare)
    assert edge >= 2, "the part touches the edge of the view (camera cropped)"
    assert max(fw, fh) > 0.3, f"the part is small in its view ({fw:.2f} x {fh:.2f})"


def test_scan_sample_page_is_a_framed_surface(tmp_path: Path) -> None:
    from tests.test_viz import _make_sample

    _make_sample(tmp_path, "gear", "dent", 0, np.random.default_rng(0), size=(48, 64),
                 anomalous=True)
    page = viz.write_sample_page(tmp_path / "gear/test/dent/xyz/000.tiff",
                                 tmp_path / "sample.html")
    browser = _browser()
    with browser:
        _open(browser, page)
        shot = _shot_of(browser, ".js-plotly-plot")
        browser.evaluate(HIDE_OVERLAYS)
        time.sleep(0.5)
        bare = _shot_of(browser, ".js-plotly-plot")
        errors = browser.page_errors()
    assert not errors, errors
    assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    assert _near(shot, (0, 230, 255), 30).sum() > 5  # ground truth in cyan on viridis
    fw, fh, edge = _framed(bare)
    assert edge >= 2 and max(fw, fh) > 0.3
