"""benchmarks/run.py's module choice and benchmarks/bench_inference.py's timing helper."""

from __future__ import annotations

import pytest

from tests.helpers import bench_module


@pytest.fixture(scope="module")
def run_py():
    with bench_module("run") as module:
        yield module


def test_only_names_one_module_exactly(run_py):
    # "unified" once also ran every module whose name contains it; an exact name runs that one
    assert run_py.discover("unified") == ["bench_unified"]
    assert run_py.discover("bench_training") == ["bench_training"]
    every = run_py.discover()
    assert "bench_unified" in every and len(every) > 10
    assert run_py.discover("bench_") == every  # not a name: the substring filter
    assert run_py.discover("no-such-benchmark") == []


def test_predict_ms_counts_each_sample_once_after_a_warm_up():
    calls = []

    class Det:
        def predict(self, sample):
            calls.append(sample)

    with bench_module("bench_inference") as bi:
        ms = bi.predict_ms(Det(), ["a", "b", "c"])
    assert calls == ["a", "a", "b", "c"]
    assert ms >= 0.0
