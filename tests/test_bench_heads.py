"""benchmarks/bench_heads.py: the feature cache really skips the extraction, and a tiny quick
run (pbas + prototypes-ot, 64 px) gives the rows and the table."""

from __future__ import annotations

import pytest

from tests.helpers import bench_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bh():
    with bench_module("bench_heads") as module:
        yield module


def test_cached_features_compute_each_sample_once(bh, monkeypatch, plate_bumps,
                                                  plate_bumps_test):
    from pcad.detectors import create_detector
    from pcad.detectors.patches import MultimodalFeatures
    from pcad.engine import open_split

    det = create_detector("prototypes-ot", image_size=64, modality="both", device="cpu")
    det.fit(list(open_split(plate_bumps, "plate", "train", det)))
    calls = []
    real = MultimodalFeatures.batch

    def counting(self, samples, *args, **kwargs):
        calls.append(len(samples))
        return real(self, samples, *args, **kwargs)

    monkeypatch.setattr(MultimodalFeatures, "batch", counting)
    sample = plate_bumps_test[-1]
    plain = det.predict(sample)
    bh.cache_features(det)
    first = det.predict(sample)
    again = det.predict(sample)
    assert calls == [1, 1]  # the plain predict and the cache's one extraction
    assert first[0] == again[0] == plain[0]
    assert (first[1] == plain[1]).all() and (again[1] == plain[1]).all()
    with pytest.raises(TypeError, match="no shared patch-grid extractor"):
        bh.cache_features(create_detector("btf"))


def test_quick_run_rows_and_table(bh, monkeypatch):
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "prototypes-ot")
    rows = bh.run(quick=True)
    by = {r["case"]: r for r in rows}
    assert set(by) == {"pbas head", "prototypes-ot head", "post-processing", "features"}
    assert by["pbas head"]["ratio"] == 1.0 and by["features"]["ratio"] is None
    assert by["pbas head"]["predict_ms"] > by["pbas head"]["value"]
    assert all(r["value"] > 0 for r in rows)
    assert by["prototypes-ot head"]["ratio"] == pytest.approx(
        by["prototypes-ot head"]["value"] / by["pbas head"]["value"])
    table = bh.render_table(rows).splitlines()
    assert table[0].startswith("| detector | predict ms/sample") and len(table) == 6


def test_unknown_detector_is_named(bh, monkeypatch):
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "nope")
    with pytest.raises(ValueError, match="nope"):
        bh.selected_detectors()
