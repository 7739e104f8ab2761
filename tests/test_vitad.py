"""``vitad``: fit / predict shapes, save / load, determinism, option errors, the training loop
(log, resume) and a quality floor on a tiny fixed dataset of bump defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector
from pcad.detectors.vitad import ViTADDecoder, decoder_taps
from pcad.errors import InvalidInputError

CATEGORY = "plate"
#: the settings of the shared fit (tests/conftest.py plate_bumps_fit): RGB + FPFH tokens
BOTH = {"image_size": 64, "modality": "both", "epochs": 20, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(plate_bumps_fit):
    return plate_bumps_fit('vitad')


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"dim": 130}, "multiple of heads"),
    ({"depth": 0}, "depth"), ({"heads": 0}, "heads"), ({"epochs": 0}, "epochs"),
    ({"lr": -1}, "lr"), ({"image_score": "mean"}, "image_score"), ({"dim": 10**6}, "dim"),
    ({"image_size": 60}, "image_size"), ({"image_size": 40}, "pool"), ({"pool": 0}, "pool"),
    ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("vitad", **config)
    assert "\n" not in str(info.value)


def test_decoder_reads_each_level_from_its_block():
    assert decoder_taps(2, 3) == [2, 0] and decoder_taps(3, 5) == [4, 2, 0]
    dec = ViTADDecoder((4, 6), n_tokens=9, dim=8, depth=3, heads=2)
    outs = dec(torch.randn(2, 9, 10))
    assert [tuple(o.shape) for o in outs] == [(2, 9, 4), (2, 9, 6)]
    d = dec.distances(torch.randn(2, 9, 10))
    assert d.shape == (2, 9) and bool(((d >= 0) & (d <= 2)).all())


def test_fit_predict_shapes(fitted, plate_bumps_test):
    assert fitted.fitted and len(fitted.history) == BOTH["epochs"]
    assert fitted.history[-1] < 0.5 * fitted.history[0]  # the decoder learns
    assert fitted.decoder.level_dims == (40, 112, 33)  # two effnet blocks + FPFH
    grid = fitted.patch_scores(plate_bumps_test[0])  # 2 x 2 patches per token (pool 2)
    assert fitted.grid == (8, 8) and grid.shape == fitted.token_grid == (4, 4)
    assert grid.dtype == np.float32 and (grid >= 0).all()


