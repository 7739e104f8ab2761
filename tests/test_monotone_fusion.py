"""Image scores that cannot invert (issue 12, Must 2): every fused image score is
non-decreasing in each source's evidence.

- :func:`pcad.detectors.fusion.fuse_normalized` (``fusion="zsum"`` / ``"zmax"`` of ``m3dm``
  and ``lsfa``): a property test on a seeded grid of scores, statistics and weights;
- ``m3dm`` / ``lsfa``: scaling one bank's evidence up never lowers the image score, and a test
  scan with a stronger bump scores at least as high as the same scan with a weaker one (also for
  ``btf``, its RGB and FPFH banks fused the same way or its one concatenated bank
  (``fusion="joint"``), and ``cfm``, the product of its two directions);
- the one-class SVM fusion (``fusion="ocsvm"``) still works, and a training set too small for
  the LOO statistics is refused before anything is fitted.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, load_detector
from pcad.detectors.fusion import MIN_LOO_SAMPLES, fuse_normalized, loo_stats
from pcad.detectors.multimodal import MultiBankDetector
from pcad.detectors.patches import MultimodalFeatures
from pcad.errors import InvalidInputError
from synth import apply_to_scan

CATEGORY = "plate_holes"
BASE = {"image_size": 64, "point_backbone": "fpfh"}
FAST = {
    "m3dm": {**BASE, "epochs": 2, "batch_size": 4},
    "lsfa": {**BASE, "epochs": 2, "batch_size": 2, "queue_samples": 3, "global_queue": 4,
             "compact_start": 0.0},
}
#: bump strengths (fractions of the part's size) over which FPFH's evidence grows on this part
STRENGTHS = (0.02, 0.03, 0.05)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------- the fusion function


@pytest.mark.parametrize("how", ["zsum", "zmax"])
def test_fuse_normalized_is_monotone_in_every_source(how):
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 5))
        stats = np.stack([rng.normal(0, 5, k), rng.uniform(0.01, 10, k)], axis=1)
        weights = rng.uniform(0, 2, k) * (rng.random(k) > 0.3)
        weights[rng.integers(k)] = rng.uniform(0.1, 2)  # at least one positive
        x = rng.normal(0, 10, (16, k))
        base = fuse_normalized(x, stats, weights, how)
        for j in range(k):
            more = x.copy()
            more[:, j] += rng.uniform(0, 5, 16)
            assert (fuse_normalized(more, stats, weights, how) >= base - 1e-12).all()
        # a source with a positive weight moves the score when it carries enough evidence
        j = int(np.flatnonzero(weights > 0)[0])
        more = x.copy()
        more[:, j] += 1e6
        assert (fuse_normalized(more, stats, weights, how) > base).all()


def test_fuse_normalized_values_and_rejections():
    stats = loo_stats(np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]]))
    np.testing.assert_allclose(stats, [[3.0, 2.0], [2.0, 1.0]])  # constant source: std 1
    np.testing.assert_allclose(fuse_normalized(np.array([7.0, 4.0]), stats, [1.0, 1.0]), 4.0)
    np.testing.assert_allclose(fuse_normalized(np.array([7.0, 4.0]), stats, [1.0, 0.0]), 2.0)
    np.testing.assert_allclose(
        fuse_normalized(np.array([7.0, 5.0]), stats, [1.0, 1.0], "zmax"), 3.0)
    with pytest.raises(InvalidInputError, match="non-negative"):
        fuse_normalized(np.array([1.0, 1.0]), stats, [1.0, -0.5])
    with pytest.raises(InvalidInputError, match="expected one of"):
        fuse_normalized(np.array([1.0, 1.0]), stats, [1.0, 1.0], "ocsvm")


# ------------------------------------------------------------------------------- detectors


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset):
    return tiny_dataset(tmp_path_factory, "monotone", CATEGORY, train=6, test_good=2,
                        test_defect=0)


@pytest.fixture(scope="module")
def train_set(data):
    return list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))


@pytest.fixture(scope="module")
def good(data):
    return [s for s in MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz")
            if s.label == 0][0]


@pytest.fixture(scope="module")
def feats(train_set):
    f = MultimodalFeatures("test", 64, point_backbone="fpfh")
    parts = [f(s) for s in train_set]
    return tuple(np.stack([p[i] for p in parts]) for i in range(3))


@pytest.fixture(scope="module")
def fitted(feats, train_set):
    """``(name, fusion)`` -> fitted detector (``map_fusion`` the same as ``fusion``)."""
    return {(name, fusion): create_detector(name, **FAST[name], fusion=fusion,
                                            map_fusion=fusion)
            .fit_features(*feats, train_set)
            for name in ("m3dm", "lsfa") for fusion in ("zsum", "zmax", "ocsvm")}


def bumped(sample, strength: float):
    """``sample`` with one bump of ``strength`` (seed 3: the same place and size)."""
    r = apply_to_scan(sample.xyz, "bump", seed=3, strength=strength, radius=0.2)
    return replace(sample, xyz=r.points.astype(np.float32), mask=r.mask, label=1)


@pytest.mark.parametrize("name", ["m3dm", "lsfa"])
@pytest.mark.parametrize("fusion", ["zsum", "zmax"])
def test_more_evidence_in_one_bank_never_lowers_the_image_score(fitted, good, monkeypatch,
                                                                name, fusion):
    det = fitted[name, fusion]
    patches, scores = det.bank_scores(good)
    base = det.predict(good)[0]
    rises = 0
    for bank in det.BANKS:
        for factor in (1.5, 4.0):
            more = ({**patches, bank: patches[bank] * factor},
                    {**scores, bank: scores[bank] * factor})
            monkeypatch.setattr(det, "bank_scores", lambda *a, m=more, **k: m)
            score = det.predict(good)[0]
            assert score >= base
            rises += score > base
            monkeypatch.undo()
    assert rises > 0


@pytest.mark.parametrize("name", ["m3dm", "lsfa"])
@pytest.mark.parametrize("fusion", ["zsum", "zmax"])
def test_stronger_bump_scores_not_lower(fitted, good, name, fusion):
    det = fitted[name, fusion]
    samples = [good] + [bumped(good, a) for a in STRENGTHS]
    # the precondition: in this range each bank's evidence grows with the bump (a much
    # stronger bump can look *less* unlike the training patches to a bank; no fusion helps then)
    evidence = np.array([[det.bank_scores(s)[1][b] for b in det.BANKS] for s in samples])
    assert (np.diff(evidence, axis=0) >= 0).all() and evidence[-1, 0] > evidence[0, 0]
    scores = [det.predict(s)[0] for s in samples]
    assert scores == sorted(scores) and scores[-1] > scores[0]


@pytest.fixture(scope="module")
def btf_runs(train_set):
    """``fusion`` -> btf fitted on the training set."""
    return {f: create_detector("btf", image_size=64, fusion=f).fit(train_set)
            for f in ("zsum", "zmax", "joint")}


@pytest.mark.parametrize("name", ["btf-zsum", "btf-zmax", "btf-joint", "cfm",
                                  "cfm-foreground-mean"])
def test_other_fused_detectors_stronger_bump(train_set, btf_runs, good, name):
    if name.startswith("cfm"):
        score = name[4:] or "foreground-max"
        det = create_detector("cfm", image_size=64, epochs=3, image_score=score).fit(train_set)
    else:
        det = btf_runs[name.split("-")[1]]
    scores = [det.predict(s)[0] for s in [good] + [bumped(good, a) for a in STRENGTHS]]
    assert scores == sorted(scores) and scores[-1] > scores[0]


@pytest.mark.parametrize("fusion", ["zsum", "zmax"])
def test_btf_more_evidence_in_one_modality_never_lowers_the_image_score(btf_runs, good,
                                                                       monkeypatch, fusion):
    """btf's fused image score, with one modality bank's patch distances scaled up."""
    det = btf_runs[fusion]
    base = det.predict(good)[0]
    rises = 0
    for m in det.modalities:
        for factor in (1.5, 4.0):
            bank = det.source_banks[m]
            monkeypatch.setattr(bank, "score_images", lambda feats, n_reweight=None, b=bank,
                                f=factor: ([b.score(x) * f for x in feats], None))
            score = det.predict(good)[0]
            assert score >= base
            rises += score > base
            monkeypatch.undo()
    assert rises > 0


def test_btf_fusion_run_round_trip_and_old_runs(btf_runs, good, tmp_path):
    import json

    det = btf_runs["zsum"]
    assert det.z_image.shape == (2, 2) and set(det.source_banks) == {"rgb", "xyz"}
    det.save(tmp_path / "run")
    back = load_detector(tmp_path / "run")
    np.testing.assert_array_equal(back.z_image, det.z_image)
    (s1, m1), (s2, m2) = det.predict(good), back.predict(good)
    assert s1 == s2
    np.testing.assert_array_equal(m1, m2)
    # a run saved before btf's per-modality fusion (no z_image, no per-modality banks) still
    # loads and scores as it was fitted: the concatenated bank's foreground maximum
    path = tmp_path / "run" / "detector.json"
    record = json.loads(path.read_text())
    del record["state"]["z_image"], record["config"]["fusion"]
    path.write_text(json.dumps(record))
    for m in ("rgb", "xyz"):
        (tmp_path / "run" / f"bank_{m}.npz").unlink()
    old = load_detector(tmp_path / "run")
    assert old.config["fusion"] == "joint"
    assert old.predict(good)[0] == btf_runs["joint"].predict(good)[0]


@pytest.mark.parametrize("edit, words", [
    (lambda st: st.pop("z_image"), ["'state.z_image'", "[mean, std]"]),
    (lambda st: st["z_image"][1].__setitem__(1, -1.0), ["'state.z_image' std"]),
])
def test_btf_damaged_loo_statistics_in_a_run(btf_runs, tmp_path, edit, words):
    message = load_edited_run(btf_runs["zmax"], tmp_path, edit)
    assert all(w in message for w in words), message


def test_btf_run_missing_a_modality_bank(btf_runs, tmp_path):
    btf_runs["zsum"].save(tmp_path / "run")
    (tmp_path / "run" / "bank_xyz.npz").unlink()
    with pytest.raises(InvalidInputError, match=r"incomplete btf run \(no bank_xyz.npz\)"):
        load_detector(tmp_path / "run")


def test_btf_too_few_samples_for_fusion_refused_before_fitting(train_set, monkeypatch):
    from pcad.detectors.btf import BTFDetector

    def boom(*a, **k):
        raise AssertionError("features extracted before the check")

    monkeypatch.setattr(BTFDetector, "batch_patch_features", boom)
    n = MIN_LOO_SAMPLES - 1
    with pytest.raises(InvalidInputError) as err:
        create_detector("btf", image_size=64).fit(train_set[:n])
    msg = str(err.value)
    assert "'btf'" in msg and "'zsum'" in msg and f"got {n}" in msg and "'joint'" in msg
    with pytest.raises(InvalidInputError, match="fusion: expected one of"):
        create_detector("btf", fusion="ocsvm")


@pytest.mark.parametrize("name", ["m3dm", "lsfa"])
def test_ocsvm_fusion_still_works(fitted, good, name):
    det = fitted[name, "ocsvm"]
    assert det.config["fusion"] == "ocsvm" and not np.allclose(det.w_image, 1.0)
    patches, scores = det.bank_scores(good)
    lam = np.array([det.config["bank_weights"][b] for b in det.BANKS])
    expected = sum(det.w_image[j] * lam[j] * scores[b] for j, b in enumerate(det.BANKS))
    assert det.predict(good)[0] == pytest.approx(expected, rel=1e-12)
    # the LOO statistics are kept for any fusion, and equal those of a z-fusion fit
    np.testing.assert_allclose(det.z_image, fitted[name, "zsum"].z_image)


@pytest.mark.parametrize("name", ["m3dm", "lsfa"])
def test_zsum_run_round_trip(fitted, good, tmp_path, name):
    det = fitted[name, "zsum"]
    det.save(tmp_path / name)
    back = load_detector(tmp_path / name)
    assert back.config["fusion"] == "zsum"
    np.testing.assert_array_equal(back.z_image, det.z_image)
    s1, m1 = det.predict(good)
    s2, m2 = back.predict(good)
    assert s1 == s2
    np.testing.assert_array_equal(m1, m2)


@pytest.mark.parametrize("name", ["m3dm", "lsfa"])
@pytest.mark.parametrize("key", ["fusion", "map_fusion"])
def test_too_few_samples_for_loo_fusion_refused_before_fitting(feats, train_set, monkeypatch,
                                                              name, key):
    def boom(*a, **k):
        raise AssertionError("trained before the check")

    monkeypatch.setattr(MultiBankDetector, "train_networks", boom)
    n = MIN_LOO_SAMPLES - 1
    other = "map_fusion" if key == "fusion" else "fusion"
    det = create_detector(name, **FAST[name], **{key: "zsum", other: "sum"})
    with pytest.raises(InvalidInputError) as err:
        det.fit_features(*(f[:n] for f in feats), train_set[:n])
    msg = str(err.value)
    assert repr(name) in msg and "'zsum'" in msg and key in msg and f"got {n}" in msg
    assert str(MIN_LOO_SAMPLES) in msg


@pytest.mark.parametrize("edit, words", [
    (lambda st: st.pop("z_image"), ["'state.z_image' missing", "'zsum'"]),
    (lambda st: st.update(z_patch=[[0.0, 1.0]]), ["'state.z_patch'", "[mean, std]"]),
    (lambda st: st["z_image"][0].__setitem__(1, 0.0), ["'state.z_image' std"]),
])
def test_damaged_loo_statistics_in_a_run(fitted, tmp_path, edit, words):
    message = load_edited_run(fitted["lsfa", "zsum"], tmp_path, edit)
    assert all(w in message for w in words), message


def load_edited_run(det, tmp_path, edit) -> str:
    """Save ``det``, ``edit`` its saved state in place, load it: the FileFormatError's text."""
    import json

    from pcad.errors import FileFormatError

    det.save(tmp_path / "run")
    path = tmp_path / "run" / "detector.json"
    record = json.loads(path.read_text())
    edit(record["state"])
    path.write_text(json.dumps(record))
    with pytest.raises(FileFormatError) as err:
        load_detector(tmp_path / "run")
    return str(err.value)


def test_run_without_loo_statistics_loads_for_ocsvm(fitted, good, tmp_path):
    """A run saved before the LOO-normalised fusions (no z_* keys) still loads with "ocsvm"."""
    import json

    det = fitted["m3dm", "ocsvm"]
    det.save(tmp_path / "run")
    path = tmp_path / "run" / "detector.json"
    record = json.loads(path.read_text())
    del record["state"]["z_image"], record["state"]["z_patch"]
    path.write_text(json.dumps(record))
    assert load_detector(tmp_path / "run").predict(good)[0] == det.predict(good)[0]
