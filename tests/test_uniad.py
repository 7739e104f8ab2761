"""``uniad``: the layer-wise query transformer, neighbour mask and jitter, fit / predict
shapes, save / load, determinism, option errors, resume and a quality floor on a tiny fixed
dataset of bump defects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector
from pcad.detectors.uniad import UniADTransformer, jitter, neighbour_mask
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
#: the settings of the shared fit (tests/conftest.py plate_bumps_fit): RGB + FPFH tokens
BOTH = {"image_size": 64, "modality": "both", "epochs": 20, "device": "cpu"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(plate_bumps_fit):
    return plate_bumps_fit('uniad')


def test_neighbour_mask_option_is_capped_by_the_token_grid():
    det = create_detector("uniad")
    assert det.config["modality"] == "auto" and det.config["neighbor_mask"] == 7
    assert det.mask_size == 7 and create_detector("uniad", image_size=64).mask_size == 3
    sizes = [create_detector("uniad", image_size=n, pool=p, neighbor_mask=k).mask_size
             for n, p, k in ((64, 2, 3), (64, 2, 7), (32, 2, 3), (32, 4, 3), (224, 2, 15),
                             (224, 2, 0), (40, 1, 9))]
    assert sizes == [3, 3, 1, 0, 13, 0, 3]  # capped below the 4, 2, 1, 14, 5 token grids


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"dim": 66}, "multiple of heads"),
    ({"depth": 0}, "depth"), ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"),
    ({"neighbor_mask": 2}, "neighbor_mask"), ({"neighbor_mask": -1}, "neighbor_mask"),
    ({"neighbor_mask": 99}, "neighbor_mask"),
    ({"jitter_scale": -1}, "jitter_scale"), ({"jitter_prob": 1.5}, "jitter_prob"),
    ({"image_score": "mean"}, "image_score"), ({"image_size": 60}, "image_size"),
    ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("uniad", **config)
    assert "\n" not in str(info.value)


def test_neighbour_mask_and_jitter():
    m = neighbour_mask((4, 4), 3)
    assert m.shape == (16, 16) and bool(m.diagonal().all()) and torch.equal(m, m.T)
    assert int(m[5].sum()) == 9 and int(m[0].sum()) == 4 and not bool(m[0, 2])
    assert not bool(neighbour_mask((4, 4), 0).any())
    x = torch.randn(64, 3, 100)
    noise = jitter(x, 20.0, torch.Generator().manual_seed(0)) - x
    ratio = noise.std(-1) / (x.norm(dim=-1) / 100 * 20)  # N(0, 1) scaled by |x| / C * 20
    assert abs(float(ratio.mean()) - 1.0) < 0.05


def test_each_decoder_layer_has_its_own_query_and_the_mask_is_applied():
    torch.manual_seed(0)
    net = UniADTransformer((3, 5), (4, 4), dim=16, depth=2, heads=4, neighbor_mask=3).eval()
    queries = [layer.query for layer in net.decoder]
    assert len(queries) == 2 and queries[0].shape == (1, 16, 16)
    assert queries[0] is not queries[1]
    x = torch.randn(1, 16, 16)
    y = x.clone()
    y[0, 0] += 10.0  # the corner token; tokens 0, 1, 4, 5 are its 3 x 3 neighbourhood
    mask, pos = net.mask, net.pos
    with torch.no_grad():
        for layer in (net.encoder[0], net.decoder[0]):  # x: the input, or the memory
            a, b = layer(x, pos, mask), layer(y, pos, mask)
            same = (a - b).abs().amax(-1)[0] < 1e-6
            assert bool(same[[1, 4, 5]].all()) and not bool(same[[2, 8, 15]].any())
        assert bool(((net.decoder[0](x, pos, mask) - net.decoder[0](y, pos, mask))[0, 0]
                     .abs() < 1e-6).all())  # a query never reads its own token
        assert not torch.equal(net.decoder[0](x, pos, None), net.decoder[0](y, pos, None))
    assert net(x[..., :8]).shape == (1, 16, 8) and net.distances(x[..., :8]).shape == (1, 16)


def test_fit_predict_shapes(fitted, plate_bumps_test):
    assert fitted.fitted and len(fitted.history) == BOTH["epochs"]
    assert fitted.history[-1] < 0.8 * fitted.history[0]  # the transformer learns
    assert fitted.decoder.level_dims == (40, 112, 33)  # two effnet blocks + FPFH
    std = fitted.stats["std"]  # a channel constant on normal plates is floored
    assert float(std.min()) >= 0.1 * float(std.median()) * (1 - 1e-6)
    grid = fitted.patch_scores(plate_bumps_test[0])
    assert grid.shape == fitted.token_grid == (4, 4) and grid.dtype == np.float32
    assert (grid >= 0).all()


def test_rgb_only_and_several_categories(plate_bumps, tmp_path_factory, tiny_dataset):
    """RGB-only samples score over the whole map; one model fits samples of two categories
    (what ``pcad train --categories`` gives it)."""
    rgb = create_detector("uniad", image_size=64, epochs=2, device="cpu")
    train = [dataclasses.replace(s, xyz=None)
             for s in open_split(plate_bumps, CATEGORY, "train", rgb)]
    rgb.fit(train)
    assert rgb.config["modality"] == "rgb"
    score, amap = rgb.predict(train[0])
    assert score == pytest.approx(float(amap.max()))
    gear = tiny_dataset(tmp_path_factory, "uniad_gear", "gear", train=3, test_good=1,
                        test_defect=1)
    both = create_detector("uniad", image_size=64, epochs=2, device="cpu")
    mixed = [*open_split(plate_bumps, CATEGORY, "train", both)][:3] + \
        [*open_split(gear, "gear", "train", both)]
    both.fit(mixed)
    for s in open_split(gear, "gear", "test", both):
        assert np.isfinite(both.predict(s)[0])
    with pytest.raises(InvalidInputError, match="call fit"):
        create_detector("uniad").predict(train[0])


