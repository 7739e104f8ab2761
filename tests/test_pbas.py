"""``pbas``: fit / predict shapes, save / load, determinism, option errors, the hypersphere and
the synthesis, the training loop (log, resume) and a quality floor on a tiny fixed dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcad.detectors import create_detector
from pcad.detectors.pbas import PBASNet
from pcad.errors import InvalidInputError

CATEGORY = "plate"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(plate_bumps_fit):
    return plate_bumps_fit('pbas')


def test_synthesis_scales_option():
    assert create_detector("pbas", n_scales=2, min_scale=0.25).scales == (0.25, 0.5)


@pytest.mark.parametrize(("config", "word"), [
    ({"modality": "depth"}, "modality"), ({"hidden": 0}, "hidden"), ({"dim": 10**6}, "dim"),
    ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"radius_quantile": 0}, "radius_quantile"), ({"radius_quantile": 1.5}, "radius_quantile"),
    ({"n_scales": 0}, "n_scales"), ({"min_scale": 0}, "min_scale"),
    ({"min_scale": 100}, "min_scale"), ({"direction_jitter": -1}, "direction_jitter"),
    ({"center_weight": -1}, "center_weight"), ({"image_score": "mean"}, "image_score"),
    ({"image_size": 60}, "image_size"), ({"device": "tpu"}, "device"), ({"nope": 1}, "nope"),
])
def test_bad_options_are_one_line_errors(config, word):
    with pytest.raises(InvalidInputError, match=word) as info:
        create_detector("pbas", **config)
    assert "\n" not in str(info.value)


def test_sphere_and_synthesis():
    torch.manual_seed(0)
    net = PBASNet(6, hidden=8, dim=4)
    x = torch.randn(200, 6)
    net.init_sphere(x, 0.9)
    a = net.adapt(x).detach()
    assert torch.allclose(net.center, a.mean(0), atol=1e-5)
    dist = (a - net.center).norm(dim=1)
    assert float((dist <= net.radius).float().mean()) == pytest.approx(0.9, abs=0.02)
    assert float(net.center_loss(net.center[None].repeat(3, 1))) == 0.0
    fake = net.synthesize(a, (0.5, 1.0), 0.0, torch.Generator().manual_seed(0))
    fd = (fake - net.center).norm(dim=1)
    r = float(net.radius)
    assert bool((fd >= dist.clamp_min(r) + 0.5 * r - 1e-4).all())
    assert bool((fd <= dist.clamp_min(r) + 2.0 * r + 1e-4).all())
    cos = torch.nn.functional.cosine_similarity(fake - net.center, a - net.center)
    assert bool((cos > 0.999).all())  # no jitter: straight away from the centre


def test_fit_predict_shapes(fitted, plate_bumps_test):
    assert fitted.fitted and len(fitted.history) == fitted.config["epochs"]
    assert fitted.history[-1] < fitted.history[0]  # the discriminator learns
    assert fitted.stats["mean"].numel() == 152 + 33  # two effnet blocks + FPFH
    # the std floor (0.1 x the median channel std) holds, and binds on the plate's flat FPFH
    std = fitted.stats["std"].double()
    floor = fitted.std_floor * float(std.median())
    assert fitted.std_floor == 0.1 and (std >= floor * (1 - 1e-6)).all()
    assert int((std[152:] <= floor * (1 + 1e-6)).sum()) > 0
    grid = fitted.patch_scores(plate_bumps_test[0])
    assert grid.shape == fitted.grid == (8, 8) and grid.dtype == np.float32
    assert (grid >= 0).all()


