"""benchmarks/bench_btf_evidence.py: the fusions are monotone and the summary's numbers are
the hand-computed ones for a small made-up run."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import bench_module


@pytest.fixture(scope="module")
def be():
    with bench_module("bench_btf_evidence") as module:
        yield module


def test_every_fusion_is_monotone_in_each_bank(be):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 2))
    for how in be.FUSIONS:
        base = be.fuse(z, how)
        for j in range(2):
            more = z.copy()
            more[:, j] += 0.5
            assert (be.fuse(more, how) >= base).all(), (how, j)
    with pytest.raises(ValueError, match="unknown"):
        be.fuse(z, "mean")


def test_summary_counts_and_aurocs(be):
    # two good samples, a bump seen by xyz (its max on the defect) and a stain seen by rgb
    part = {"modalities": ["rgb", "xyz"], "labels": [0, 0, 1, 1],
            "defects": ["good", "good", "bump", "contamination"],
            "z": [[0.0, 0.1], [0.2, 0.0], [0.1, 3.0], [2.0, -0.5]],
            "on_defect": {"rgb": [None, None, False, True], "xyz": [None, None, True, False]}}
    s = be.summarise([part])
    assert s["max_on_defect"] == {"rgb": {"bump": 0.0, "contamination": 1.0},
                                  "xyz": {"bump": 1.0, "contamination": 0.0}}
    assert s["bank_auroc"]["xyz"]["bump"] == 1.0
    assert s["bank_auroc"]["xyz"]["contamination"] == 0.0
    assert s["bank_auroc"]["rgb"]["all"] == 0.75
    assert s["fusion_auroc"]["zmax"] == 1.0  # each defect's own bank beats both goods
    table = be.render_table(s)
    assert "| xyz | 0.500 | 1.00 / 1.00 | 0.00 / 0.00 |" in table
