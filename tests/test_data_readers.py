"""Dataset readers on tiny datasets written here in each real layout, plus bad input.

MVTec 3D-AD (class-id masks 253-255, ``.tif`` and ``.tiff``, non-square images, an RGB-only
dataset, pcad's ``meta/`` folders), Real3D-AD, Anomaly-ShapeNet and the Eyecandies converter;
every bad file must raise a documented error that names it. Property-based tests throw random
bytes and random shapes at the readers.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from pcad.data import (
    AnomalyShapeNetDataset,
    MVTec3DDataset,
    Real3DDataset,
    backproject_depth,
    convert_eyecandies,
    list_categories,
    list_defect_types,
    parse_defect_type,
)
from pcad.data.eyecandies import find_raw_root, read_depth, read_depth_info
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io import write_labeled_txt, write_points, write_rgb, write_xyz_tiff

DOCUMENTED = (FileFormatError, InvalidInputError)
H, W = 6, 10  # non-square, like rope (900 x 400)


# --------------------------------------------------------------------------------------------
# writers of tiny datasets in the real layouts
# --------------------------------------------------------------------------------------------


def _xyz(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.random((h, w, 3), dtype=np.float32) + 0.1
    xyz[0, :2] = 0.0  # some pixels without a measurement
    return xyz


def _rgb(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_class_id_mask(path: Path, mask: np.ndarray, values=(253, 254, 255)) -> None:
    """A gt PNG as real MVTec masks are: class ids such as 253-255 instead of 255."""
    img = np.zeros(mask.shape, np.uint8)
    ys, xs = np.nonzero(mask)
    for k, (y, x) in enumerate(zip(ys, xs, strict=True)):
        img[y, x] = values[k % len(values)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def write_mvtec_sample(
    root: Path, cat: str, split: str, defect: str, stem: str, *, ext: str = ".tiff",
    mask: np.ndarray | None = None, rgb: bool = True, xyz: bool = True, seed: int = 0,
    h: int = H, w: int = W,
) -> None:
    d = root / cat / split / defect
    if rgb:
        write_rgb(d / "rgb" / f"{stem}.png", _rgb(h, w, seed))
    if xyz:
        write_xyz_tiff(d / "xyz" / f"{stem}{ext}", _xyz(h, w, seed))
    if mask is not None:
        write_class_id_mask(d / "gt" / f"{stem}.png", mask)
    (d / "meta").mkdir(parents=True, exist_ok=True)  # pcad's generator writes meta/NNN.json
    (d / "meta" / f"{stem}.json").write_text("{}")


def make_mvtec(root: Path) -> Path:
    """rope (6 x 10): train 3 (.tiff and .tif), validation 1, test good 2 (one without gt),
    test cut 2 and test color 1 with class-id masks; plus calibration/ and junk to ignore."""
    for i, ext in enumerate([".tiff", ".tif", ".tiff"]):
        write_mvtec_sample(root, "rope", "train", "good", f"{i:03d}", ext=ext, seed=i)
    write_mvtec_sample(root, "rope", "validation", "good", "000", seed=10)
    write_mvtec_sample(root, "rope", "test", "good", "000", mask=np.zeros((H, W), bool), seed=20)
    write_mvtec_sample(root, "rope", "test", "good", "001", seed=21)  # good, no gt file
    m = np.zeros((H, W), bool)
    m[2:4, 3:7] = True
    write_mvtec_sample(root, "rope", "test", "cut", "000", mask=m, seed=30)
    write_mvtec_sample(root, "rope", "test", "cut", "001", mask=np.roll(m, 2, 1), ext=".tif",
                       seed=31)
    write_mvtec_sample(root, "rope", "test", "color", "000", mask=m, seed=40)
    (root / "rope" / "calibration").mkdir()
    (root / "rope" / "calibration" / "camera_parameters.json").write_text("{}")
    (root / "rope" / "test" / "cut" / "rgb" / ".000.png.x1.tmp.png").write_bytes(b"junk")
    (root / "dataset.json").write_text("{}")
    (root / "notes").mkdir()
    return root


# --------------------------------------------------------------------------------------------
# MVTec 3D-AD
# --------------------------------------------------------------------------------------------


def test_mvtec_listing_order_and_labels(tmp_path):
    root = make_mvtec(tmp_path)
    assert list_categories(root) == ["rope"]
    assert list_defect_types(root, "rope") == ["color", "cut"]
    ds = MVTec3DDataset(root, "rope", "test")
    assert ds.modality == "rgb+xyz"
    assert [(e.defect, e.stem) for e in ds.entries] == [
        ("color", "000"), ("cut", "000"), ("cut", "001"), ("good", "000"), ("good", "001")]
    assert ds.labels.tolist() == [1, 1, 1, 0, 0]
    assert ds.defect_types == ["color", "cut"]
    assert len(MVTec3DDataset(root, "rope", "train")) == 3
    assert len(MVTec3DDataset(root, "rope", "validation")) == 1
    assert "rope" in repr(ds)


def test_mvtec_sample_contents(tmp_path):
    root = make_mvtec(tmp_path)
    ds = MVTec3DDataset(root, "rope", "test")
    samples = list(ds)
    cut = samples[1]
    assert cut.xyz.shape == (H, W, 3) and cut.xyz.dtype == np.float32
    assert cut.rgb.shape == (H, W, 3) and cut.rgb.dtype == np.uint8
    assert cut.shape == (H, W) and cut.kind == "organized"
    np.testing.assert_array_equal(cut.xyz, _xyz(seed=30))
    np.testing.assert_array_equal(cut.rgb, _rgb(seed=30))
    # class ids 253, 254, 255 are all anomalous (> 0), nothing else
    expected = np.zeros((H, W), bool)
    expected[2:4, 3:7] = True
    assert cut.mask.dtype == bool
    np.testing.assert_array_equal(cut.mask, expected)
    assert (cut.label, cut.defect, cut.category, cut.split, cut.stem) == (
        1, "cut", "rope", "test", "000")
    assert set(cut.paths) == {"rgb", "xyz", "gt"} and cut.path == cut.paths["xyz"]
    assert samples[2].paths["xyz"].suffix == ".tif"  # .tif read as well as .tiff
    good_no_gt = samples[4]
    assert good_no_gt.label == 0 and not good_no_gt.mask.any() and "gt" not in good_no_gt.paths
    train = MVTec3DDataset(root, "rope", "train")
    assert [s.paths["xyz"].suffix for s in train] == [".tiff", ".tif", ".tiff"]
    assert all(s.mask.shape == (H, W) and not s.mask.any() for s in train)
    assert train[-1].stem == "002"
    with pytest.raises(IndexError):
        train[3]
    with pytest.raises(InvalidInputError):
        train["0"]  # type: ignore[index]


def test_mvtec_modalities_and_rgb_only(tmp_path):
    root = make_mvtec(tmp_path / "full")
    only_xyz = MVTec3DDataset(root, "rope", "test", modality="xyz")
    s = only_xyz[1]
    assert s.rgb is None and s.xyz is not None and s.mask.any()
    only_rgb = MVTec3DDataset(root, "rope", "test", modality="rgb")
    assert only_rgb[0].xyz is None and only_rgb[0].rgb.shape == (H, W, 3)

    rgb_root = tmp_path / "rgb_only"
    write_mvtec_sample(rgb_root, "tire", "train", "good", "000", xyz=False, h=8, w=5)
    m = np.zeros((8, 5), bool)
    m[1, 1] = True
    write_mvtec_sample(rgb_root, "tire", "test", "crack", "000", xyz=False, mask=m, h=8, w=5)
    ds = MVTec3DDataset(rgb_root, "tire", "test")
    assert ds.modality == "rgb"
    s = ds[0]
    assert s.xyz is None and s.rgb.shape == (8, 5, 3) and s.mask.shape == (8, 5)
    assert s.mask.sum() == 1 and s.shape == (8, 5) and s.path == s.paths["rgb"]
    with pytest.raises(FileFormatError, match="xyz"):
        MVTec3DDataset(rgb_root, "tire", "test", modality="rgb+xyz")


def test_mvtec_missing_category_split_root(tmp_path):
    root = make_mvtec(tmp_path)
    with pytest.raises(InvalidInputError, match="rope") as info:
        MVTec3DDataset(root, "bagel", "train")
    assert "bagel" in str(info.value)
    (root / "cable" / "train").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="train") as info:
        MVTec3DDataset(root, "cable", "test")
    assert "'test'" in str(info.value)
    with pytest.raises(InvalidInputError, match="split"):
        MVTec3DDataset(root, "rope", "val")
    with pytest.raises(InvalidInputError, match="modality"):
        MVTec3DDataset(root, "rope", "test", modality="depth")
    with pytest.raises(InvalidInputError, match="nan"):
        MVTec3DDataset(root, "rope", "test", nan="ignore")
    with pytest.raises(FileNotFoundError):
        MVTec3DDataset(tmp_path / "nowhere", "rope")
    with pytest.raises(FileFormatError, match="no defect folders"):
        MVTec3DDataset(root, "cable", "train")


def test_mvtec_unpaired_files_and_missing_gt(tmp_path):
    root = tmp_path / "a"
    write_mvtec_sample(root, "c", "train", "good", "000")
    write_rgb(root / "c" / "train" / "good" / "rgb" / "001.png", _rgb())
    # committed (its meta is there) yet without xyz: an error; without meta it is skipped
    # as an incomplete sample (tests/test_hardening_eval.py)
    (root / "c" / "train" / "good" / "meta" / "001.json").write_text("{}")
    with pytest.raises(FileFormatError) as info:
        MVTec3DDataset(root, "c", "train")
    assert str(root / "c" / "train" / "good" / "xyz" / "001.tiff") in str(info.value)

    root = tmp_path / "b"
    write_mvtec_sample(root, "c", "test", "hole", "000")  # defective without gt
    with pytest.raises(FileFormatError) as info:
        MVTec3DDataset(root, "c", "test")
    assert str(root / "c" / "test" / "hole" / "gt" / "000.png") in str(info.value)

    root = tmp_path / "c"
    write_mvtec_sample(root, "c", "train", "good", "000", ext=".tif")
    write_xyz_tiff(root / "c" / "train" / "good" / "xyz" / "000.tiff", _xyz())
    with pytest.raises(FileFormatError, match="two files"):
        MVTec3DDataset(root, "c", "train")


def _one_sample_dataset(tmp_path: Path, mask: bool = True) -> tuple[Path, dict[str, Path]]:
    m = np.zeros((H, W), bool)
    m[1, 1] = True
    write_mvtec_sample(tmp_path, "c", "test", "dent", "000", mask=m if mask else None)
    d = tmp_path / "c" / "test" / "dent"
    return tmp_path, {"rgb": d / "rgb" / "000.png", "xyz": d / "xyz" / "000.tiff",
                      "gt": d / "gt" / "000.png"}


def test_mvtec_size_mismatches_name_the_file(tmp_path):
    root, paths = _one_sample_dataset(tmp_path)
    write_rgb(paths["rgb"], _rgb(H + 1, W))
    with pytest.raises(FileFormatError) as info:
        MVTec3DDataset(root, "c", "test")[0]
    assert str(paths["xyz"]) in str(info.value) and str(paths["rgb"]) in str(info.value)

    write_rgb(paths["rgb"], _rgb())
    write_class_id_mask(paths["gt"], np.ones((W, H), bool))  # transposed: wrong size
    with pytest.raises(FileFormatError) as info:
        MVTec3DDataset(root, "c", "test")[0]
    assert str(paths["gt"]) in str(info.value)
    # the same wrong gt in xyz-only and rgb-only readings
    for modality in ("xyz", "rgb"):
        with pytest.raises(FileFormatError, match="gt mask"):
            MVTec3DDataset(root, "c", "test", modality=modality)[0]


def test_mvtec_nan_in_xyz(tmp_path):
    root, paths = _one_sample_dataset(tmp_path)
    xyz = _xyz()
    xyz[3, 4, 1] = np.nan
    xyz[4, 4] = np.inf
    tifffile.imwrite(paths["xyz"], xyz, photometric="rgb")
    with pytest.raises(FileFormatError, match="2 pixels have NaN") as info:
        MVTec3DDataset(root, "c", "test")[0]
    assert str(paths["xyz"]) in str(info.value)
    s = MVTec3DDataset(root, "c", "test", nan="zero")[0]
    assert np.all(s.xyz[3, 4] == 0) and np.all(s.xyz[4, 4] == 0) and np.isfinite(s.xyz).all()


@pytest.mark.parametrize("role", ["xyz", "rgb", "gt"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_mvtec_corrupt_and_truncated_files(tmp_path, role, damage):
    root, paths = _one_sample_dataset(tmp_path)
    p = paths[role]
    data = p.read_bytes()
    if damage == "garbage":
        p.write_bytes(b"this is not an image at all" * 10)
    elif damage == "truncated":
        p.write_bytes(data[: len(data) // 2])
    else:
        p.write_bytes(b"")
    ds = MVTec3DDataset(root, "c", "test")
    with pytest.raises(FileFormatError) as info:
        ds[0]
    assert str(p) in str(info.value)


def test_mvtec_wrong_xyz_content(tmp_path):
    root, paths = _one_sample_dataset(tmp_path)
    tifffile.imwrite(paths["xyz"], np.zeros((H, W), np.float32))  # 1 channel
    with pytest.raises(FileFormatError, match=r"\(H, W, 3\)"):
        MVTec3DDataset(root, "c", "test")[0]
    tifffile.imwrite(paths["xyz"], np.zeros((H, W, 3), np.uint8))  # integers
    with pytest.raises(FileFormatError, match="float"):
        MVTec3DDataset(root, "c", "test")[0]


def test_mvtec_decompression_bomb_png_is_a_format_error(tmp_path):
    """pcad.io lets PIL's DecompressionBombError through; the dataset reader does not."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    root, paths = _one_sample_dataset(tmp_path)
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    paths["rgb"].write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(FileFormatError) as info:
        MVTec3DDataset(root, "c", "test")[0]
    assert str(paths["rgb"]) in str(info.value)


def test_mvtec_reads_pcads_own_generator(tmp_path):
    from synth.dataset import DatasetConfig, generate

    cfg = DatasetConfig(categories=("cookie",), train=1, validation=1, test_good=1,
                        test_defect=1, defects=("bump",), size=(16, 24))
    generate(cfg, tmp_path, progress=False)
    assert list_categories(tmp_path) == ["cookie"]
    test = MVTec3DDataset(tmp_path, "cookie", "test")
    assert [s.defect for s in test] == ["bump", "good"]
    bump = test[0]
    assert bump.xyz.shape == (16, 24, 3) and bump.mask.any() and bump.label == 1
    assert len(MVTec3DDataset(tmp_path, "cookie", "validation")) == 1


# --------------------------------------------------------------------------------------------
# Real3D-AD and Anomaly-ShapeNet
# --------------------------------------------------------------------------------------------


def _cloud(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3)).astype(np.float32)


def make_real3d(root: Path) -> Path:
    """Real3D-AD: duck/train/*template*.pcd, test/<id>_<type>.pcd, gt/<id>_<type>.txt."""
    for i in range(2):
        write_points(root / "duck" / "train" / f"{i}_template.pcd", _cloud(30, i))
    write_points(root / "duck" / "test" / "10_good.pcd", _cloud(25, 10))  # no gt file
    for stem, seed in (("2_bulge", 2), ("11_sink", 11)):
        pts = _cloud(40, seed)
        write_points(root / "duck" / "test" / f"{stem}.pcd", pts)
        write_labeled_txt(root / "duck" / "gt" / f"{stem}.txt", pts, pts[:, 0] > 0.8, sep=" ")
    return root


def test_real3d_layout(tmp_path):
    root = make_real3d(tmp_path)
    assert Real3DDataset.list_categories(root) == ["duck"]
    test = Real3DDataset(root, "duck", "test")
    assert [(e.defect, e.stem) for e in test.entries] == [
        ("bulge", "2_bulge"), ("good", "10_good"), ("sink", "11_sink")]
    assert test.labels.tolist() == [1, 0, 1] and test.defect_types == ["bulge", "sink"]
    bulge = test[0]
    pts = _cloud(40, 2)
    assert bulge.kind == "points" and bulge.shape == (40,) and bulge.rgb is None
    np.testing.assert_array_equal(bulge.points, pts)
    np.testing.assert_array_equal(bulge.mask, pts[:, 0] > 0.8)
    assert bulge.paths["gt"].parent.name == "gt" and bulge.path == bulge.paths["points"]
    good = test[1]
    assert good.points.shape == (25, 3) and not good.mask.any() and "gt" not in good.paths
    train = Real3DDataset(root, "duck", "train")
    assert [s.stem for s in train] == ["0_template", "1_template"]
    assert all(s.label == 0 and s.mask.shape == (30,) for s in train)
    same = Real3DDataset(root, "duck", "test", points_from="pcd")[0]
    np.testing.assert_array_equal(same.points, bulge.points)


def test_real3d_bad_input(tmp_path):
    root = make_real3d(tmp_path)
    gt = root / "duck" / "gt" / "2_bulge.txt"
    pcd = root / "duck" / "test" / "2_bulge.pcd"
    with pytest.raises(InvalidInputError, match="duck"):
        Real3DDataset(root, "seahorse", "test")
    with pytest.raises(InvalidInputError, match="split"):
        Real3DDataset(root, "duck", "validation")
    (root / "fish" / "train").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="train"):
        Real3DDataset(root, "fish", "test")
    # point counts of pcd and gt differ
    write_points(pcd, _cloud(39, 2))
    with pytest.raises(FileFormatError) as info:
        Real3DDataset(root, "duck", "test", points_from="pcd")[0]
    assert str(gt) in str(info.value) and str(pcd) in str(info.value)
    # labels other than 0/1, a 3-column gt
    gt.write_text("0 0 0 2\n1 1 1 0\n")
    with pytest.raises(FileFormatError) as info:
        Real3DDataset(root, "duck", "test")[0]
    assert str(gt) in str(info.value)
    gt.write_text("0 0 0\n1 1 1\n")
    with pytest.raises(FileFormatError, match="label"):
        Real3DDataset(root, "duck", "test")[0]
    # a corrupt and a truncated PCD
    bad = root / "duck" / "train" / "0_template.pcd"
    text = bad.read_text()
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(FileFormatError) as info:
        Real3DDataset(root, "duck", "train")[0]
    assert str(bad) in str(info.value)
    bad.write_bytes(b"\x00\xff garbage")
    with pytest.raises(FileFormatError) as info:
        Real3DDataset(root, "duck", "train")[0]
    assert str(bad) in str(info.value)
    # a defective sample without ground truth
    gt.unlink()
    with pytest.raises(FileFormatError) as info:
        Real3DDataset(root, "duck", "test")
    assert str(gt) in str(info.value)
    # a file name without a type
    gt.write_text("0 0 0 1\n")
    write_points(root / "duck" / "test" / "7.pcd", _cloud(5, 0))
    with pytest.raises(FileFormatError, match="defect type"):
        Real3DDataset(root, "duck", "test")


def test_real3d_reads_pcads_own_generator(tmp_path):
    from synth.dataset import DatasetConfig, generate

    cfg = DatasetConfig(categories=("cookie",), train=1, validation=0, test_good=1,
                        test_defect=1, defects=("bump",), size=(16, 24), format="real3d",
                        points=100)
    generate(cfg, tmp_path, progress=False)
    test = Real3DDataset(tmp_path, "cookie", "test")  # meta/ folder ignored
    assert [s.defect for s in test] == ["bump", "good"]
    assert test[0].mask.any() and not test[1].mask.any()
    assert Real3DDataset(tmp_path, "cookie", "train")[0].points.shape == (100, 3)


def test_anomaly_shapenet_layout(tmp_path):
    cat = tmp_path / "ashtray0"
    write_points(cat / "train" / "ashtray0_template0.pcd", _cloud(20, 0))
    for stem, seed, frac in (("ashtray0_bulge0", 1, 0.7), ("ashtray0_positive0", 2, 2.0),
                             ("3_concavity", 3, 0.6)):
        pts = _cloud(33, seed)
        write_points(cat / "test" / f"{stem}.pcd", pts)
        write_labeled_txt(cat / "GT" / f"{stem}.txt", pts, pts[:, 1] > frac, sep=",")
    assert "," in (cat / "GT" / "3_concavity.txt").read_text().splitlines()[0]
    assert AnomalyShapeNetDataset.list_categories(tmp_path) == ["ashtray0"]
    ds = AnomalyShapeNetDataset(tmp_path, "ashtray0", "test")
    assert [(s.defect, s.label) for s in ds] == [("bulge", 1), ("concavity", 1), ("good", 0)]
    np.testing.assert_array_equal(ds[0].mask, _cloud(33, 1)[:, 1] > 0.7)
    assert not ds[2].mask.any() and ds[2].paths["gt"].parent.name == "GT"
    assert AnomalyShapeNetDataset(tmp_path, "ashtray0", "train")[0].points.shape == (20, 3)


def test_parse_defect_type():
    assert parse_defect_type("12_bulge", "duck") == "bulge"
    assert parse_defect_type("245_good", "duck") == "good"
    assert parse_defect_type("good_003", "gear") == "good"
    assert parse_defect_type("hex_hole_002", "hex") == "hole"
    assert parse_defect_type("bag0_broken3", "bag0", ("positive", "good")) == "broken"
    assert parse_defect_type("bag0_positive3", "bag0", ("positive", "good")) == "good"
    assert parse_defect_type("17", "duck") == ""


# --------------------------------------------------------------------------------------------
# Eyecandies raw -> MVTec layout
# --------------------------------------------------------------------------------------------

POSE = np.array([[1, 0, 0, 0.1], [0, 0, -1, 0.2], [0, 1, 0, 0.9], [0, 0, 0, 1]], np.float64)


def write_raw_eyecandies_sample(
    data: Path, sid: str, *, h: int = 8, w: int = 12, anomalous: bool | None = None,
    seed: int = 0, dmin: float = 0.5, dmax: float = 1.5, depth16: np.ndarray | None = None,
) -> np.ndarray:
    """One raw sample (depth PNG, depth info, pose, six images, mask); returns the 16-bit
    depth values (random unless given)."""
    rng = np.random.default_rng(seed)
    data.mkdir(parents=True, exist_ok=True)
    if depth16 is None:
        depth16 = rng.integers(1000, 60000, (h, w)).astype(np.uint16)
    h, w = depth16.shape
    Image.fromarray(depth16).save(data / f"{sid}_depth.png")
    (data / f"{sid}_info_depth.yaml").write_text(
        f"normalization:\n  min: {dmin}\n  max: {dmax}\n")
    np.savetxt(data / f"{sid}_pose.txt", POSE)
    for k in range(6):
        Image.fromarray(_rgb(h, w, seed + k)).save(data / f"{sid}_image_{k}.png")
    if anomalous is not None:
        mask = np.zeros((h, w), np.uint8)
        if anomalous:
            mask[2:4, 5:8] = 255
        Image.fromarray(mask).save(data / f"{sid}_mask.png")
    return depth16


def make_raw_eyecandies(root: Path) -> Path:
    """Nested as the real archives extract: <root>/Eyecandies/CandyCane/{train,val,test_public}."""
    cat = root / "Eyecandies" / "CandyCane"
    for i in range(2):
        write_raw_eyecandies_sample(cat / "train" / "data", f"{i:03d}", seed=i)
    write_raw_eyecandies_sample(cat / "val" / "data", "000", seed=5)
    write_raw_eyecandies_sample(cat / "test_public" / "data", "00", anomalous=False, seed=7)
    write_raw_eyecandies_sample(cat / "test_public" / "data", "01", anomalous=True, seed=8)
    (cat / "test_public" / "data" / "01_normals.png").write_bytes(b"unused")
    return root


def _m3dm_backprojection(depth: np.ndarray, pose: np.ndarray, f: float) -> np.ndarray:
    """M3DM's formula, vectorized: inv(K4 @ pose) @ (u, v, 1, 1/z) * z."""
    h, w = depth.shape
    k4 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    v, u = np.mgrid[:h, :w]
    vec = np.stack([u.ravel(), v.ravel(), np.ones(h * w), 1 / depth.ravel()], axis=0)
    pts = (np.linalg.inv(k4 @ pose) @ vec).T * depth.reshape(-1, 1)
    return pts[:, :3].reshape(h, w, 3)


def test_backprojection_matches_m3dm_formula():
    depth = np.random.default_rng(0).uniform(0.5, 1.5, (7, 9))
    ours = backproject_depth(depth, 711.11, pose=POSE)
    np.testing.assert_allclose(ours, _m3dm_backprojection(depth, POSE, 711.11), atol=1e-5)
    cam = backproject_depth(depth, 50.0)
    np.testing.assert_allclose(cam[..., 2], depth, rtol=1e-6)
    assert cam[3, 4, 0] == pytest.approx((4 - 4.5) * depth[3, 4] / 50.0, rel=1e-5)
    holes = depth.copy()
    holes[0, 0], holes[1, 1] = 0.0, np.nan
    out = backproject_depth(holes, 50.0)
    assert np.all(out[0, 0] == 0) and np.all(out[1, 1] == 0) and np.isfinite(out).all()
    with pytest.raises(InvalidInputError):
        backproject_depth(np.zeros(5))


def test_convert_eyecandies(tmp_path):
    raw = make_raw_eyecandies(tmp_path / "raw")
    out = tmp_path / "mvtec"
    report = convert_eyecandies(raw, out)
    assert report.n_written == 5
    assert list_categories(out) == ["CandyCane"]
    train = MVTec3DDataset(out, "CandyCane", "train")
    assert [s.stem for s in train] == ["000", "001"]
    val = MVTec3DDataset(out, "CandyCane", "validation")
    assert len(val) == 1
    test = MVTec3DDataset(out, "CandyCane", "test")
    assert [(s.defect, s.stem, s.label) for s in test] == [("bad", "001", 1), ("good", "000", 0)]
    bad = test[0]
    assert bad.mask.sum() == 6 and bad.xyz.shape == (8, 12, 3)
    # xyz = depth back-projected and posed as M3DM does; rgb = image 4
    data = raw / "Eyecandies" / "CandyCane" / "test_public" / "data"
    depth = read_depth(data / "01_depth.png", data / "01_info_depth.yaml")
    np.testing.assert_allclose(bad.xyz, _m3dm_backprojection(depth.astype(np.float64), POSE,
                                                             711.11), atol=1e-5)
    np.testing.assert_array_equal(bad.rgb, _rgb(8, 12, 8 + 4))
    d16 = np.asarray(Image.open(data / "01_depth.png")).astype(np.float64)
    np.testing.assert_allclose(depth, d16 / 65535 * 1.0 + 0.5, rtol=1e-6)
    # a second run resumes: everything is already there
    again = convert_eyecandies(raw, out)
    assert again.n_written == 0 and sum(again.skipped.values()) == 5


def test_convert_eyecandies_bad_input(tmp_path, monkeypatch):
    raw = make_raw_eyecandies(tmp_path / "raw")
    data = raw / "Eyecandies" / "CandyCane" / "train" / "data"
    with pytest.raises(InvalidInputError, match="CandyCane"):
        convert_eyecandies(raw, tmp_path / "o0", ["GummyBear"])
    with pytest.raises(InvalidInputError, match="frame"):
        convert_eyecandies(raw, tmp_path / "o0", frame="table")
    (data / "001_pose.txt").unlink()
    with pytest.raises(FileFormatError) as info:
        convert_eyecandies(raw, tmp_path / "o1")
    assert str(data / "001_pose.txt") in str(info.value)
    report = convert_eyecandies(raw, tmp_path / "o2", frame="camera", splits=["train"])
    assert report.n_written == 2
    (data / "000_info_depth.yaml").write_text("normalization: {min: 2.0}\n")
    with pytest.raises(FileFormatError) as info:
        convert_eyecandies(raw, tmp_path / "o3", frame="camera", splits=["train"])
    assert str(data / "000_info_depth.yaml") in str(info.value)
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(data / "000_depth.png")
    with pytest.raises(FileFormatError, match="16-bit"):
        convert_eyecandies(raw, tmp_path / "o4", frame="camera", splits=["train"],
                           overwrite=True)
    Image.fromarray(np.zeros((8, 12), np.uint16)).save(data / "000_depth.png")
    Image.fromarray(_rgb(9, 12)).save(data / "000_image_4.png")
    (data / "000_info_depth.yaml").write_text("normalization: {min: 0.5, max: 1.5}\n")
    with pytest.raises(FileFormatError, match="depth map"):
        convert_eyecandies(raw, tmp_path / "o5", frame="camera", splits=["train"])
    with pytest.raises(FileFormatError, match="no raw Eyecandies"):
        find_raw_root(tmp_path / "o2")


def test_convert_eyecandies_with_plane_removal(tmp_path):
    depth = np.full((30, 40), 40000, np.uint16)  # a table 1.11 m away (0.5 + 0.61)
    depth[10:20, 15:25] = 30000  # a candy 9 cm closer
    data = tmp_path / "raw" / "Confetto" / "train" / "data"
    write_raw_eyecandies_sample(data, "000", depth16=depth)
    convert_eyecandies(tmp_path / "raw", tmp_path / "out", frame="camera", remove_plane=True)
    s = MVTec3DDataset(tmp_path / "out", "Confetto", "train")[0]
    expected = np.zeros((30, 40), bool)
    expected[10:20, 15:25] = True
    np.testing.assert_array_equal(np.any(s.xyz != 0, -1), expected)
    assert s.xyz[15, 20, 2] == pytest.approx(30000 / 65535 + 0.5, rel=1e-5)


def test_depth_info_without_pyyaml(tmp_path, monkeypatch):
    p = tmp_path / "i.yaml"
    p.write_text("# depth range\nnormalization:\n  max: 1.25\n  min: 0.25\nother: 3\n")
    assert read_depth_info(p) == (0.25, 1.25)
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    assert read_depth_info(p) == (0.25, 1.25)
    p.write_text("normalization: {min: 0.5, max: 0.75}\n")
    assert read_depth_info(p) == (0.5, 0.75)
    p.write_text("normalization: {min: 3, max: 1}\n")
    with pytest.raises(FileFormatError, match="invalid depth normalization"):
        read_depth_info(p)


# --------------------------------------------------------------------------------------------
# property-based: random bytes and random shapes never escape as other errors
# --------------------------------------------------------------------------------------------

PREFIXES = {
    ".tiff": [b"", b"II*\x00", b"MM\x00*", b"II*\x00\x08\x00\x00\x00"],
    ".png": [b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"],
    ".pcd": [b"", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
             b"WIDTH 3\nHEIGHT 1\nPOINTS 3\nDATA binary\n",
             b"FIELDS x y z label\nSIZE 4 4 4 4\nTYPE F F F U\nPOINTS 2\nDATA ascii\n"],
    ".txt": [b"", b"0 0 0 1\n", b"1,2,3,0\n"],
}
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check_load(load) -> None:
    try:
        load()
    except DOCUMENTED:
        pass


@FUZZ
@given(role=st.sampled_from(["xyz", "rgb", "gt"]), prefix=st.integers(0, 3),
       body=st.binary(max_size=300))
def test_fuzz_mvtec_random_bytes(role, prefix, body):
    with tempfile.TemporaryDirectory() as tmp:
        root, paths = _one_sample_dataset(Path(tmp))
        options = PREFIXES[".tiff" if role == "xyz" else ".png"]
        paths[role].write_bytes(options[prefix % len(options)] + body)
        _check_load(lambda: MVTec3DDataset(root, "c", "test")[0])


@FUZZ
@given(which=st.sampled_from(["pcd", "txt"]), prefix=st.integers(0, 2),
       body=st.binary(max_size=300))
def test_fuzz_point_datasets_random_bytes(which, prefix, body):
    with tempfile.TemporaryDirectory() as tmp:
        root = make_real3d(Path(tmp))
        target = root / "duck" / ("test/2_bulge.pcd" if which == "pcd" else "gt/2_bulge.txt")
        target.write_bytes(PREFIXES["." + which][prefix] + body)
        _check_load(lambda: Real3DDataset(root, "duck", "test", points_from="pcd")[0])
        _check_load(lambda: AnomalyShapeNetDataset(root, "duck", "test")[0])


@FUZZ
@given(which=st.sampled_from(["depth", "info", "pose", "mask", "image"]),
       body=st.binary(max_size=200))
def test_fuzz_eyecandies_random_bytes(which, body):
    names = {"depth": "01_depth.png", "info": "01_info_depth.yaml", "pose": "01_pose.txt",
             "mask": "01_mask.png", "image": "01_image_4.png"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "raw" / "Lollipop" / "test_public" / "data"
        write_raw_eyecandies_sample(data, "01", anomalous=True, h=4, w=5)
        (data / names[which]).write_bytes(body)
        _check_load(lambda: convert_eyecandies(Path(tmp) / "raw", Path(tmp) / "out"))


_dtypes = st.sampled_from([np.float32, np.float64, np.uint8, np.uint16, np.int32])


@FUZZ
@given(xyz=hnp.arrays(_dtypes, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)),
       rgb_shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=5),
       gt_shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5))
def test_fuzz_mvtec_random_shapes(xyz, rgb_shape, gt_shape):
    with tempfile.TemporaryDirectory() as tmp:
        root, paths = _one_sample_dataset(Path(tmp))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tifffile.imwrite(paths["xyz"], xyz)
        except Exception:  # a shape tifffile itself cannot write is not a reader test
            return
        channels = rgb_shape[2] if len(rgb_shape) == 3 else 1
        if channels in (1, 3, 4):
            img = np.zeros(rgb_shape[:2] + ((channels,) if channels > 1 else ()), np.uint8)
            Image.fromarray(img).save(paths["rgb"])
        Image.fromarray(np.full(gt_shape, 254, np.uint8)).save(paths["gt"])
        try:
            s = MVTec3DDataset(root, "c", "test")[0]
        except DOCUMENTED:
            return
        assert s.xyz.ndim == 3 and s.xyz.shape[2] == 3 and s.xyz.dtype == np.float32
        assert s.rgb.shape == s.xyz.shape and s.mask.shape == s.xyz.shape[:2] and s.mask.all()
