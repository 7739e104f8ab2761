"""``fader``: the one deterministic mask, the FADeR gates (in the forward path, trained),
the attenuation signal, parameters / FLOPs, the ``uniad`` plug-in and the option errors.
What it shares with vitad, uniad, pbas (maps, quality floor, save / load, determinism,
resume) is in tests/test_modality_detectors.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector, load_detector
from pcad.detectors.fader import (
    FADeR,
    FADeRNet,
    checkerboard,
    corrupt_tokens,
    network_complexity,
)
from pcad.engine import open_split
from pcad.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = {"image_size": 64, "modality": "both", "device": "cpu", "epochs": 4}


@pytest.fixture(scope="module")
def train_samples(plate_bumps) -> list:
    det = create_detector("fader", image_size=64, modality="both")
    return list(open_split(plate_bumps, "plate", "train", det))


@pytest.mark.parametrize(("config", "word"), [
    ({"attenuate": 1}, "attenuate"), ({"attenuate": "yes"}, "attenuate"),
    ({"fader_hidden": 0}, "fader_hidden"), ({"corrupt_prob": 1.5}, "corrupt_prob"),
    ({"corrupt_prob": -0.1}, "corrupt_prob"), ({"corrupt_scale": 0}, "corrupt_scale"),
    ({"attenuation_weight": -1}, "attenuation_weight"), ({"dim": 66}, "multiple of heads"),
    ({"modality": "depth"}, "modality"), ({"pool": 3}, "pool"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("fader", **config)
    assert "\n" not in str(info.value)


def test_uniad_fader_option_error():
    with pytest.raises(InvalidInputError, match="fader: must be true or false") as info:
        create_detector("uniad", fader="on")
    assert "\n" not in str(info.value)
    assert create_detector("uniad").config["fader"] is False


def test_one_deterministic_mask_covers_every_token_once():
    board = checkerboard((4, 5))
    assert torch.equal(board, checkerboard((4, 5)))  # no draw: the same mask every time
    assert board.reshape(4, 5)[0].tolist() == [True, False, True, False, True]
    net = FADeRNet((6,), (4, 5), dim=8, depth=1, heads=2, hidden=4)
    assert net.masks.shape == (2, 20) and (net.masks.sum(0) == 1).all()  # exactly once
    # every masked token has a visible 4-neighbour in its half of the pass
    for half in net.masks:
        m = half.reshape(4, 5)
        vis = torch.nn.functional.pad((~m).float()[None, None], (1, 1, 1, 1))
        near = vis[0, 0, :-2, 1:-1] + vis[0, 0, 2:, 1:-1] + vis[0, 0, 1:-1, :-2] + \
            vis[0, 0, 1:-1, 2:]
        assert bool((near[m] > 0).all())


def test_a_token_is_inpainted_without_its_own_features():
    torch.manual_seed(0)
    net = FADeRNet((3, 5), (4, 4), dim=16, depth=2, heads=4, hidden=8).eval()
    x = torch.randn(1, 16, 8)
    for i in (0, 5, 10, 15):
        y = x.clone()
        y[0, i] += 50.0
        with torch.no_grad():
            a, b = net(x), net(y)
        assert torch.allclose(a[0, i], b[0, i], atol=1e-5)  # its own input is masked
        others = (a - b).abs().amax(-1)[0]
        assert float(others.max()) > 1e-3  # ... but it reaches the tokens it helps inpaint


def test_fader_module_is_a_soft_mask():
    torch.manual_seed(0)
    mod = FADeR(4, 3)
    h, fill = torch.randn(2, 5, 4), torch.randn(1, 1, 4)
    out, g = mod(h, fill)
    assert torch.allclose(out, g[..., None] * h + (1 - g[..., None]) * fill)
    hidden = torch.nn.functional.gelu(h @ mod.fc1.weight.T + mod.fc1.bias)
    assert torch.allclose(g, torch.sigmoid(hidden @ mod.fc2.weight[0] + mod.fc2.bias[0]))
    assert bool((g > 0.6).all())  # starts mostly open (bias 1)
    assert torch.allclose(mod(h)[0], g[..., None] * h)  # no fill: pure attenuation


def test_attenuation_is_in_the_forward_path():
    """Gates forced to 0 turn every visible token into the mask token: the reconstruction
    no longer depends on the input; without FADeR there is no gate at all."""
    torch.manual_seed(0)
    net = FADeRNet((6,), (4, 4), dim=8, depth=1, heads=2, hidden=4).eval()
    x, y = torch.randn(1, 16, 6), torch.randn(1, 16, 6)
    with torch.no_grad():
        assert not torch.allclose(net(x), net(y))
        net.fader.fc2.bias.fill_(-100.0)
        rec, g = net.reconstruct(x)
        assert float(g.max()) < 1e-30
        assert torch.allclose(rec, net(y), atol=1e-6)
    plain = FADeRNet((6,), (4, 4), dim=8, depth=1, heads=2, hidden=4, attenuate=False)
    assert plain.reconstruct(x)[1] is None and not any("fader" in k for k in plain.state_dict())


def test_corruption_signal_by_hand():
    x = torch.randn(3, 7, 5)
    y, signal = corrupt_tokens(x, 0.5, 1.0, torch.Generator().manual_seed(3))
    d = ((y - x) ** 2).mean(-1)
    assert torch.allclose(signal, torch.exp(-d / 0.25))
    clean = (y == x).all(-1)
    assert bool(clean.any()) and bool((~clean).any()) and bool((signal[clean] == 1).all())
    same, _ = corrupt_tokens(x, 0.5, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(y, same)
    assert torch.equal(corrupt_tokens(x, 0.0, 1.0, torch.Generator())[0], x)


def test_fit_trains_the_gates_and_they_attenuate_corrupted_tokens(train_samples):
    det = create_detector("fader", **{**QUICK, "epochs": 20, "batch_size": 1})
    det.fit(train_samples)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        init = det._network(det.decoder.level_dims)
    trained = det.decoder.state_dict()
    for k, v in init.state_dict().items():
        if k.startswith("fader."):
            assert not torch.equal(v, trained[k]), k  # the attenuation layers learn
    assert len(det.history) == 20 and det.history[-1] < 0.7 * det.history[0]
    toks, _, _ = det.tokens(train_samples[0], where="training set")
    x = det._standardise(toks)[None]
    noisy, _ = corrupt_tokens(x, 1.0, 3.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        g_clean = det.decoder.reconstruct(x)[1]
        g_noisy = det.decoder.reconstruct(noisy)[1]
    assert float(g_noisy.mean()) < float(g_clean.mean()) - 0.1


def test_complexity_params_and_flops():
    small = create_detector("fader", image_size=64)
    big = create_detector("fader", image_size=128)
    levels = [40, 112]
    a, b = small.complexity(levels), big.complexity(levels)
    net = small._network(levels)
    assert a["params"] == sum(p.numel() for p in net.parameters())
    # the position embedding grows with the grid; the FLOPs grow with the tokens
    assert 0 < a["flops"] < b["flops"] and b["params"] > a["params"]
    # by hand: the input projection alone is 2 * n * C * dim per half of the pass
    n = small.token_grid[0] * small.token_grid[1]
    assert a["flops"] > 2 * n * sum(levels) * 64
    with pytest.raises(InvalidInputError, match="complexity needs a fit"):
        small.complexity()
    uniad = network_complexity(create_detector("uniad", image_size=64), levels)
    plug = network_complexity(create_detector("uniad", image_size=64, fader=True), levels)
    assert plug["params"] - uniad["params"] == (64 * 32 + 32) + (32 + 1)  # FADeR's 2 layers
    # on the same tokens (uniad's 14 x 14 grid, pool 2) fader is the smallest
    same = create_detector("fader", image_size=64, pool=2).complexity(levels)
    assert plug["flops"] > uniad["flops"] > same["flops"]
    assert a["flops"] > same["flops"]  # fader's own default: the stride-8 grid, 4x the tokens


def test_uniad_plug_in_fits_predicts_saves_loads(train_samples, tmp_path):
    # raw errors: calibrated, a training sample scores 1 on the whole part with either decoder
    cfg = {"image_size": 64, "modality": "both", "device": "cpu", "epochs": 3,
           "calibration": "none"}
    plain = create_detector("uniad", **cfg).fit(train_samples)
    off = create_detector("uniad", fader=False, **cfg).fit(train_samples)
    keys = set(plain.decoder.state_dict())
    assert not any(k.startswith("fader.") for k in keys)
    for k, v in plain.decoder.state_dict().items():  # fader=False: uniad as it was
        assert v.numpy().tobytes() == off.decoder.state_dict()[k].numpy().tobytes(), k
    on = create_detector("uniad", fader=True, **cfg).fit(train_samples)
    assert set(on.decoder.state_dict()) - keys == {"fader.fc1.weight", "fader.fc1.bias",
                                                   "fader.fc2.weight", "fader.fc2.bias"}
    assert isinstance(on.decoder.fader, FADeR)
    sample = train_samples[0]
    score, amap = on.predict(sample)
    assert np.isfinite(score) and amap.shape == sample.shape
    assert score != plain.predict(sample)[0]
    on.save(tmp_path / "run")
    again = load_detector(tmp_path / "run")
    assert again.config["fader"] is True and again.history == on.history
    a, ma = again.predict(sample)
    assert a == score and ma.tobytes() == amap.tobytes()
