"""Regenerate the README screenshots ``docs/sweep.png`` and ``docs/report.png``.

Usage (needs chromium and the notebook packages)::

    .venv/bin/python examples/readme_screenshots.py [--out docs] [--only sweep|report]

The sweep page is ``pcad viz sweep`` of the built-in gear (default grid: scale x strength x
octaves); the report page is ``pcad viz report`` of the evaluation folder that
``03_train_and_evaluate.ipynb`` writes with its full settings (two categories). Both are
opened in headless Chromium and saved as PNG (palette-quantized when larger than 400 KB).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
READY = ("Array.from(document.querySelectorAll('.js-plotly-plot'))"
         ".every(function(d){return d._fullLayout})")
MAX_BYTES = 400_000


def shot(page: Path, out: Path, width: int, height: int, full_page: bool = False) -> None:
    from viz.browser import Chromium

    with Chromium(width, height, timeout=120) as browser:
        browser.goto(page)
        browser.wait_for(READY, timeout=120)
        time.sleep(2.0)
        png = browser.screenshot(full_page=full_page)
    im = Image.open(io.BytesIO(png)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    if buf.tell() > MAX_BYTES:
        buf = io.BytesIO()
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG",
                                                                       optimize=True)
    out.write_bytes(buf.getvalue())
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--only", choices=("sweep", "report"), help="one screenshot only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from pcad.cli.main import main as pcad
    from synth.objects import make_object

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "sweep"):
            make_object("gear", seed=0).export(tmp / "gear.stl")
            assert pcad(["viz", "sweep", str(tmp / "gear.stl"), "-o",
                         str(tmp / "sweep.html")]) == 0
            shot(tmp / "sweep.html", args.out / "sweep.png", 1100, 820)
        if args.only == "sweep":
            return

        import nbformat
        from nbclient import NotebookClient

        os.environ["PCAD_EXAMPLE_OUT"] = str(tmp / "nb")
        os.environ.pop("PCAD_EXAMPLE_SMALL", None)
        nb = nbformat.read(ROOT / "examples" / "03_train_and_evaluate.ipynb", as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp)}}).execute()
        results = tmp / "nb" / "03_train_and_evaluate" / "run"
        assert pcad(["viz", "report", str(results), "-o", str(results / "report.html")]) == 0
        shot(results / "report.html", args.out / "report.png", 1200, 1400)


if __name__ == "__main__":
    main()
