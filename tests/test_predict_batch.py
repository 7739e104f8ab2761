"""``Detector.predict_batch`` gives ``[predict(s) for s in samples]`` for every registered
detector: the default loop and the batched overrides (patchcore-rgb / btf / fpfh, m3dm, lsfa,
cfm), on a batch of test samples with different foreground sizes and image shapes, a batch of
one and an empty list; and the device blur (:func:`pcad.detectors.base.blur_maps`) against
scipy's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from pcad.detectors import create_detector, list_detectors
from pcad.detectors.base import blur_maps, upsample_map, upsample_maps
from pcad.detectors.patches import SampleForeground
from pcad.engine import open_split, train
from pcad.errors import InvalidInputError

#: per detector: small, fast configurations (several where the batched path has branches)
CONFIGS: dict[str, list[dict]] = {
    "patchcore-rgb": [{}, {"image_score": "reweighted"}, {"image_score": "patch-max"}],
    "btf": [{}],
    "fpfh": [{}],
    "m3dm": [{"epochs": 1}, {"epochs": 1, "bank_score": "reweighted", "fusion": "ocsvm",
                             "map_fusion": "sum", "image_score": "foreground-max"},
             {"epochs": 1, "point_backbone": "pointmae"}],
    "lsfa": [{"epochs": 1}],
    "cfm": [{"epochs": 1}, {"epochs": 1, "image_score": "max"}],
    "synthsup": [{"epochs": 1, "variants": 1}],
    "vitad": [{"epochs": 1}, {"epochs": 1, "modality": "both", "image_score": "max"}],
    "prototypes-ot": [{"iters": 2}, {"iters": 2, "modality": "xyz", "solver": "sinkhorn"}],
    "uniad": [{"epochs": 1}, {"epochs": 1, "modality": "xyz", "image_score": "max"}],
    "pbas": [{"epochs": 1}, {"epochs": 1, "modality": "rgb", "image_score": "max"}],
    "fader": [{"epochs": 1}, {"epochs": 1, "modality": "xyz", "attenuate": False,
                              "image_score": "max"}],
    "onenip": [{"epochs": 1, "variants": 1}, {"epochs": 1, "variants": 1, "modality": "xyz",
                "map": "refiner", "image_score": "max"}],
    "hetnet": [{"epochs": 1}, {"epochs": 1, "modality": "xyz", "second_teacher": "none",
                               "image_score": "max"}],
}
CASES = [(name, i) for name in sorted(CONFIGS) for i in range(len(CONFIGS[name]))]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tiny_dataset, tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory, "predict_batch", "gear", train=4, test_good=2,
                        test_defect=2)


def _batch(data: Path, det) -> list:
    """The test samples, plus one with its left quarter unmeasured (a smaller foreground) and
    one cropped to another shape (maps of two sizes in one batch)."""
    test = list(open_split(data, "gear", "test", det))
    first = test[0]
    extra = []
    if first.xyz is not None:
        xyz = first.xyz.copy()
        xyz[:, : xyz.shape[1] // 4] = 0.0
        extra.append(dataclasses.replace(first, xyz=xyz))
    crop = {k: None if getattr(first, k) is None else getattr(first, k)[:, :48].copy()
            for k in ("rgb", "xyz", "mask")}
    extra.append(dataclasses.replace(first, **crop))
    return [*test, *extra]


def test_every_detector_is_covered():
    assert set(CONFIGS) == set(list_detectors())


@pytest.mark.parametrize(("name", "index"), CASES)
def test_predict_batch_equals_predict(data, tmp_path, name, index):
    config = {"image_size": 64, "device": "cpu", **CONFIGS[name][index]}
    det = train(data, "gear", name, tmp_path / "run", config=config, progress=False)
    samples = _batch(data, det)
    if "xyz" in det.modalities:  # the foregrounds really differ in size
        sizes = {int(SampleForeground(s.xyz).mask.sum()) for s in samples}
        assert len(sizes) > 2
    assert len({s.shape for s in samples}) == 2
    expected = [det.predict(s) for s in samples]
    got = det.predict_batch(samples)
    assert len(got) == len(samples)
    for (score, amap), (ref_score, ref_map) in zip(got, expected, strict=True):
        # CPU: bitwise (the batched paths run the networks per sample there)
        assert isinstance(score, float)
        assert score == ref_score
        assert amap.dtype == np.float32 and amap.shape == ref_map.shape
        np.testing.assert_array_equal(amap, ref_map)
    one = det.predict_batch(samples[-1:])
    assert len(one) == 1 and one[0][0] == expected[-1][0]
    np.testing.assert_array_equal(one[0][1], expected[-1][1])
    assert det.predict_batch([]) == []
    assert det.predict_batch(iter(samples[:1]))[0][0] == expected[0][0]


def test_predict_batch_needs_a_fit():

    det = create_detector("patchcore-rgb", image_size=64)
    assert det.predict_batch([]) == []
    with pytest.raises(InvalidInputError, match="fit"):
        det.predict_batch([object()])


@pytest.mark.parametrize(("shape", "sd"), [((30, 40), 2.3), ((8, 8), 5.0), ((3, 50), 1.0)])
def test_blur_maps_matches_scipy(shape, sd):
    rng = np.random.default_rng(0)
    x = rng.random((3, *shape)).astype(np.float32)
    got = blur_maps(torch.from_numpy(x), sd).numpy()
    ref = np.stack([gaussian_filter(m, sd, mode="nearest") for m in x])
    # float32 convolutions vs scipy's float64 sums: equal within float32 rounding
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, x)


def test_upsample_maps_batched_path_matches_cpu():
    rng = np.random.default_rng(1)
    grids = [rng.random((8, 8)) for _ in range(3)]
    shapes = [(64, 64), (64, 48), (64, 64)]
    cpu = upsample_maps(grids, shapes, 4.0, "cpu")
    for g, s, m in zip(grids, shapes, cpu, strict=True):
        np.testing.assert_array_equal(m, upsample_map(g, s, 4.0))
    # the CUDA path (grouped by shape, torch blur), run on the CPU
    dev = upsample_maps(grids, shapes, 4.0, "cpu", batched=True)
    for a, b in zip(dev, cpu, strict=True):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="grids"):
        upsample_maps(grids, shapes[:2], 4.0)



def test_point_patch_features_batch_matches_per_cloud(data):
    """The ragged Point-MAE batch (the CUDA path, forced on the CPU with ``chunk``) gives each
    cloud's :func:`point_patch_features`, within float32 rounding (a batched matrix product
    may round differently in the last bits); ``chunk=1`` (the CPU default) is bitwise."""
    from pcad.features.point_grid import point_patch_features, point_patch_features_batch
    from pcad.features.pointmae import load_point_encoder

    det = create_detector("m3dm", image_size=64, device="cpu")
    clouds = [s.xyz for s in _batch(data, det)]
    enc = load_point_encoder(None, device="cpu")
    ref = [point_patch_features(x, 64, (8, 8), enc) for x in clouds]
    fores = [SampleForeground(x, 64) for x in clouds]
    prepared = [(f.resized, f.resized_mask) for f in fores]
    for chunk, prep in ((3, None), (len(clouds), prepared), (1, None)):
        got = point_patch_features_batch(clouds, 64, (8, 8), enc, prepared=prep, chunk=chunk)
        assert len(got) == len(ref)
        for (f, fg), (rf, rfg) in zip(got, ref, strict=True):
            np.testing.assert_array_equal(fg, rfg)
            if chunk == 1:
                np.testing.assert_array_equal(f, rf)
            else:
                np.testing.assert_allclose(f, rf, rtol=1e-5, atol=1e-5 * np.abs(rf).max())
    empty = np.zeros_like(clouds[0])
    with pytest.raises(InvalidInputError, match=r"clouds\[1\]: no foreground"):
        point_patch_features_batch([clouds[0], empty], 64, (8, 8), enc, chunk=2)


def test_batched_point_features_failure_names_the_sample(data):
    """A batch with a sample the Point-MAE batch refuses is redone per sample, so the error
    names that sample (as predict's does)."""

    det = create_detector("m3dm", image_size=64, device="cpu", point_backbone="pointmae")
    samples = _batch(data, det)[:2]
    bad = dataclasses.replace(samples[1], xyz=np.zeros_like(samples[1].xyz))
    with pytest.raises(InvalidInputError, match="sample .*no foreground"):
        det.features.batch([samples[0], bad], "test sample")


def test_device_refine_matches_host():
    """The bank search with the exact distances on the device (the CUDA default, forced here
    on the CPU) finds the host's neighbours, distances within float32 rounding."""
    from pcad.memory.search import NearestNeighbours

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(500, 40)).astype(np.float32)
    q = rng.normal(size=(300, 40)).astype(np.float32)
    host = NearestNeighbours(bank, backend="torch", refine="host")
    dev = NearestNeighbours(bank, backend="torch", refine="device", memory_budget_mb=0.05)
    assert dev.refine_on_device and not host.refine_on_device
    for k in (1, 4):
        (hd, hi), (dd, di) = host.query(q, k), dev.query(q, k)
        np.testing.assert_array_equal(di, hi)
        np.testing.assert_allclose(dd, hd, rtol=1e-5, atol=1e-6)
        assert dd.dtype == np.float32 and di.dtype == np.int64
    with pytest.raises(InvalidInputError, match="refine"):
        NearestNeighbours(bank, backend="torch", refine="gpu")


def test_host_threads_give_the_serial_results(data):
    """The per-sample host work of a CUDA batch (plane fits, image resizes) on threads gives
    the serial results."""
    from pcad.detectors.patches import RGBFeatures, parallel_map, prepare_foregrounds

    samples = _batch(data, create_detector("m3dm", image_size=64))
    threaded = [SampleForeground(s.xyz, 64) for s in samples]
    prepare_foregrounds(threaded, workers=4)
    for s, f in zip(samples, threaded, strict=True):
        ref = SampleForeground(s.xyz, 64)
        np.testing.assert_array_equal(f.resized_mask, ref.resized_mask)
        np.testing.assert_array_equal(f.part(), ref.part())
    assert parallel_map(lambda x: x * 2, list(range(7)), workers=3) == list(range(0, 14, 2))
    feats = RGBFeatures("effnet-lite0", None, 64, layers=(4,))
    ref = feats.batch([s.rgb for s in samples])
    feats.device = torch.device("cpu")
    got = parallel_map(feats, [s.rgb for s in samples], workers=3)
    np.testing.assert_array_equal(np.stack(got), ref)


@pytest.mark.parametrize("name", ["m3dm", "lsfa", "cfm"])
def test_batched_networks_match_per_sample(data, tmp_path, name):
    """What the CUDA batch runs in one call (m3dm / lsfa: the networks' transform of the whole
    batch; cfm: the MLP scores of the stacked patches) equals the per-sample calls the CPU
    makes within float32 rounding (a batched matrix product may round differently)."""
    config = {"image_size": 64, "device": "cpu", "epochs": 1}
    det = train(data, "gear", name, tmp_path / "run", config=config, progress=False)
    samples = _batch(data, det)
    fores = [SampleForeground(s.xyz, 64) for s in samples]
    if name == "cfm":
        feats = [det.patch_features(s, f) for s, f in zip(samples, fores, strict=True)]
        ref = np.stack([det.score_features(*f) for f in feats])
        flat = det.score_features(np.concatenate([f[0] for f in feats]),
                                  np.concatenate([f[1] for f in feats]),
                                  np.concatenate([f[2] for f in feats]),
                                  grid=(len(feats) * feats[0][0].shape[0], 1))
        np.testing.assert_allclose(flat.reshape(ref.shape), ref, rtol=1e-5, atol=1e-6)
        assert ref.any()
        return
    frozen = det.features.batch(samples, "test sample", fores)
    rgb, pts, fg = (np.stack([f[i] for f in frozen]) for i in range(3))
    whole = det.transform(rgb, pts, fg)
    for i in range(len(samples)):
        one = det.transform(rgb[i:i + 1], pts[i:i + 1], fg[i:i + 1])
        for b in det.BANKS:
            np.testing.assert_allclose(whole[b][i], one[b][0], rtol=1e-5,
                                       atol=1e-5 * float(np.abs(one[b]).max()))
