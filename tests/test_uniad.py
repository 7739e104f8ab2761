"""``uniad``: the layer-wise query transformer, neighbour mask and jitter, fit / predict
shapes, save / load, determinism, option errors, resume and a quality floor on a tiny fixed
dataset of bump defects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pcad.detectors import create_detector, detector_info, list_detectors, load_detector
from pcad.detectors.training import EpochLoop, training_session
from pcad.detectors.uniad import UniADTransformer, jitter, neighbour_mask
from pcad.engine import open_split
from pcad.errors import InvalidInputError

CATEGORY = "plate"
#: the fitted detector of the module: RGB + FPFH tokens, small and quick
BOTH = {"image_size": 64, "modality": "both", "epochs": 20, "device": "cpu"}
#: measured I-AUROC on this data: 1.0 ("both"; "rgb" alone 0.81); the floor leaves a margin
QUALITY_FLOOR = 0.85

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    """64 x 64 plates: 6 train, 4 good + 4 bump test samples."""
    return tiny_dataset(tmp_path_factory, "uniad_data", CATEGORY, train=6, test_good=4,
                        test_defect=4, defects=("bump",))


@pytest.fixture(scope="module")
def fitted(data):
    det = create_detector("uniad", **BOTH)
    return det.fit(list(open_split(data, CATEGORY, "train", det)))


@pytest.fixture(scope="module")
def test_set(data, fitted) -> list:
    return list(open_split(data, CATEGORY, "test", fitted))


def test_registered_with_documented_options():
    assert "uniad" in list_detectors()
    cls = detector_info("uniad").obj
    assert cls.supports_distributed is False and cls.modalities == ("rgb",)
    for key, _default, meaning in cls.options():
        assert meaning, key
    det = create_detector("uniad")
    assert det.config["modality"] == "auto" and det.config["neighbor_mask"] == 3
    assert create_detector("uniad", modality="xyz").modalities == ("xyz",)
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


def test_fit_predict_shapes(fitted, test_set):
    assert fitted.fitted and len(fitted.history) == BOTH["epochs"]
    assert fitted.history[-1] < 0.8 * fitted.history[0]  # the transformer learns
    assert fitted.decoder.level_dims == (40, 112, 33)  # two effnet blocks + FPFH
    std = fitted.stats["std"]  # a channel constant on normal plates is floored
    assert float(std.min()) >= 0.1 * float(std.median()) * (1 - 1e-6)
    for s in test_set:
        score, amap = fitted.predict(s)
        assert isinstance(score, float) and np.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32
        assert np.isfinite(amap).all() and amap.min() >= 0
    grid = fitted.patch_scores(test_set[0])
    assert grid.shape == fitted.token_grid == (4, 4) and grid.dtype == np.float32
    assert (grid >= 0).all()


def test_quality_floor_on_bumps(fitted, test_set):
    labels = [s.label for s in test_set]
    assert sorted(set(labels)) == [0, 1]
    auroc = roc_auc_score(labels, [fitted.predict(s)[0] for s in test_set])
    assert auroc >= QUALITY_FLOOR, auroc


def test_save_load_round_trip(fitted, test_set, tmp_path):
    fitted.save(tmp_path / "run")
    assert (tmp_path / "run" / "uniad.pt").is_file()
    again = load_detector(tmp_path / "run")
    assert type(again) is type(fitted) and again.config == fitted.config
    assert again.history == fitted.history
    for s in test_set[:3]:
        (a, ma), (b, mb) = fitted.predict(s), again.predict(s)
        assert np.float64(a).tobytes() == np.float64(b).tobytes()
        assert ma.tobytes() == mb.tobytes()
    with pytest.raises(InvalidInputError, match="not 'vitad'"):
        detector_info("vitad").obj.load(tmp_path / "run")


def test_same_seed_same_bytes_other_seed_differs(data):
    cfg = {"image_size": 64, "epochs": 3, "device": "cpu"}

    def fit(seed: int):
        det = create_detector("uniad", seed=seed, **cfg)
        train = list(open_split(data, CATEGORY, "train", det))
        det.fit(train)
        return det, train[0]

    (a, sample), (b, _), (c, _) = fit(0), fit(0), fit(1)
    for k, v in a.decoder.state_dict().items():
        assert v.numpy().tobytes() == b.decoder.state_dict()[k].numpy().tobytes(), k
    assert a.predict(sample)[1].tobytes() == b.predict(sample)[1].tobytes()
    assert a.predict(sample)[0] != c.predict(sample)[0]


def test_rgb_only_and_several_categories(data, tmp_path_factory, tiny_dataset):
    """RGB-only samples score over the whole map; one model fits samples of two categories
    (what ``pcad train --categories`` gives it)."""
    rgb = create_detector("uniad", image_size=64, epochs=2, device="cpu")
    train = [dataclasses.replace(s, xyz=None)
             for s in open_split(data, CATEGORY, "train", rgb)]
    rgb.fit(train)
    assert rgb.config["modality"] == "rgb"
    score, amap = rgb.predict(train[0])
    assert score == pytest.approx(float(amap.max()))
    gear = tiny_dataset(tmp_path_factory, "uniad_gear", "gear", train=3, test_good=1,
                        test_defect=1)
    both = create_detector("uniad", image_size=64, epochs=2, device="cpu")
    mixed = [*open_split(data, CATEGORY, "train", both)][:3] + \
        [*open_split(gear, "gear", "train", both)]
    both.fit(mixed)
    for s in open_split(gear, "gear", "test", both):
        assert np.isfinite(both.predict(s)[0])
    with pytest.raises(InvalidInputError, match="call fit"):
        create_detector("uniad").predict(train[0])


def test_training_log_and_resume(data, tmp_path, monkeypatch):
    cfg = {"image_size": 64, "epochs": 3, "device": "cpu", "jitter_prob": 0.5}
    train = list(open_split(data, CATEGORY, "train", create_detector("uniad", **cfg)))
    run = {"detector": "uniad", "config": cfg}
    with training_session(tmp_path / "whole", run):
        whole = create_detector("uniad", **cfg).fit(train)
    assert len((tmp_path / "whole" / "train_log.csv").read_text().splitlines()) == 4
    original = EpochLoop.end_epoch

    def end_epoch(self, loss, **kw):
        original(self, loss, **kw)
        if len(self.history) >= 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(EpochLoop, "end_epoch", end_epoch)
        with pytest.raises(KeyboardInterrupt), training_session(tmp_path / "cut", run):
            create_detector("uniad", **cfg).fit(train)
    with training_session(tmp_path / "cut", run, resume=True):
        resumed = create_detector("uniad", **cfg).fit(train)
    assert resumed.history == whole.history
    for k, v in whole.decoder.state_dict().items():
        assert torch.equal(v, resumed.decoder.state_dict()[k]), k
