"""Tests of synth.perlin (pnoise2 / pnoise3) and synth.field (seeded Perlin fields).

The ``noise`` package (caseman/noise 1.2.2, a C extension called one point at a time) is the
specification: our array functions must return its values. The numpy reference
(:mod:`synth.perlin.reference`) is the readable model of that C code; the numba kernels and the
torch backend are held to it.
"""

from __future__ import annotations

import functools

import noise
import numpy as np
import pytest
import torch

from pcad.errors import InvalidInputError
from synth import perlin_field, pnoise2, pnoise3
from synth.field import normalize01, seeded_transform
from synth.perlin.reference import pnoise2_reference, pnoise3_reference

F32 = np.float32
BACKENDS = ("numba", "numpy")
N_PARITY = 10_000

# --- parity with the noise package ------------------------------------------------------------

# (id, low, high, keyword arguments): coordinates are drawn uniformly in [low, high).
CASES_2D = [
    ("small", 0.0, 4.0, {}),
    ("small-signed-oct2", -4.0, 4.0, dict(octaves=2)),
    ("negative-oct3", -50.0, 0.0, dict(octaves=3)),
    ("large-oct1", -1e5, 1e5, {}),
    ("large-oct6", -1e5, 1e5, dict(octaves=6)),
    *[(f"oct{o}", -50.0, 50.0, dict(octaves=o)) for o in range(1, 9)],
    ("pers0.3-lac1.7", -50.0, 50.0, dict(octaves=5, persistence=0.3, lacunarity=1.7)),
    ("pers0.7-lac2.3", -50.0, 50.0, dict(octaves=6, persistence=0.7, lacunarity=2.3)),
    ("repeat8x16", -50.0, 50.0, dict(octaves=4, repeatx=8, repeaty=16)),
    ("repeat5.5x3.0", -50.0, 50.0, dict(octaves=3, repeatx=5.5, repeaty=3.0)),
    ("base1", -50.0, 50.0, dict(base=1)),
    ("base1-oct4-repeat8x16", -50.0, 50.0, dict(octaves=4, repeatx=8, repeaty=16, base=1)),
]
CASES_3D = [
    ("small", 0.0, 4.0, {}),
    ("negative-oct3", -50.0, 0.0, dict(octaves=3)),
    ("large-oct1", -1e5, 1e5, {}),
    ("large-oct6", -1e5, 1e5, dict(octaves=6)),
    ("oct4", -50.0, 50.0, dict(octaves=4)),
    ("oct8", -50.0, 50.0, dict(octaves=8)),
    ("pers0.3-lac1.7", -50.0, 50.0, dict(octaves=5, persistence=0.3, lacunarity=1.7)),
    ("pers0.7-lac2.3", -50.0, 50.0, dict(octaves=6, persistence=0.7, lacunarity=2.3)),
    ("repeat8x16x4", -50.0, 50.0, dict(octaves=4, repeatx=8, repeaty=16, repeatz=4)),
    ("repeat5x3x2", -20.0, 20.0, dict(octaves=3, repeatx=5, repeaty=3, repeatz=2)),
    ("base1", -50.0, 50.0, dict(base=1)),
    ("base1-oct4", -50.0, 50.0, dict(octaves=4, base=1)),
]


@functools.cache
def _parity_data(dim: int, case_id: str) -> tuple[list[np.ndarray], dict, np.ndarray]:
    """Coordinates (float64), keyword arguments and ``noise``'s values, one C call per point."""
    cases = CASES_2D if dim == 2 else CASES_3D
    idx = [c[0] for c in cases].index(case_id)
    _, low, high, kw = cases[idx]
    rng = np.random.default_rng(1000 * dim + idx)
    coords = [rng.uniform(low, high, N_PARITY) for _ in range(dim)]
    func = noise.pnoise2 if dim == 2 else noise.pnoise3
    expected = np.array([func(*p, **kw) for p in zip(*(c.tolist() for c in coords), strict=True)])
    return coords, kw, expected


def _check_parity(got: np.ndarray, expected: np.ndarray, backend: str) -> None:
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=0, atol=1e-6)
    if backend == "numpy":
        # The C code returns a float32 value widened to double: equality is exact.
        np.testing.assert_array_equal(got.astype(np.float64), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", [c[0] for c in CASES_2D])
def test_pnoise2_matches_noise_package(case_id: str, backend: str) -> None:
    (x, y), kw, expected = _parity_data(2, case_id)
    _check_parity(pnoise2(x, y, backend=backend, **kw), expected, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", [c[0] for c in CASES_3D])
def test_pnoise3_matches_noise_package(case_id: str, backend: str) -> None:
    (x, y, z), kw, expected = _parity_data(3, case_id)
    _check_parity(pnoise3(x, y, z, backend=backend, **kw), expected, backend)


# --- numba kernel == numpy reference, bit for bit -----------------------------------------------

def _edge_values() -> np.ndarray:
    """float32 coordinates where a fast path could go wrong: lattice integers, repeat
    boundaries (at every octave's frequency) and their float32 neighbours."""
    special = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1e-30, -1e-30, 2.75, 3.0, 5.5, -5.5, 7.99999, 8.0,
               -8.0, -7.99999, 16.0, -16.0, 255.0, 256.0, -256.0, 1023.9999, 1024.0, -1024.0,
               -1023.9999, 99999.99, 1e5, -1e5]
    vals = [F32(v) for v in special]
    for repeat in (1024.0, 8.0, 16.0, 5.5, 3.0, 4.0, 2.0):
        for lac in (F32(2.0), F32(2.3), F32(1.7)):
            freq = F32(1.0)
            for _ in range(8):
                r = F32(repeat) * freq
                for v in (r, -r, F32(np.floor(r)), F32(np.floor(r)) - F32(1)):
                    vals.append(F32(v / freq))
                freq = freq * lac
    v = np.array(vals, F32)
    v = np.concatenate([v, np.nextafter(v, F32(np.inf)), np.nextafter(v, F32(-np.inf))])
    ints = np.arange(-260, 261, dtype=F32)
    return np.unique(np.concatenate([v, ints, ints + F32(0.5)]))


def _stress_coords(dim: int, n: int = 200_000) -> list[np.ndarray]:
    """``n`` float32 points per axis: pairs of edge values, lattice integers, random points at
    small, medium and large magnitudes."""
    rng = np.random.default_rng(7 + dim)
    edges = _edge_values()
    k = n // 5
    cols = []
    for _ in range(dim):
        parts = [
            rng.choice(edges, k),                                   # edge values
            rng.integers(-1100, 1100, k).astype(F32),               # lattice points
            rng.uniform(-4, 4, k),
            rng.uniform(-1200, 1200, k),
            rng.uniform(-1e5, 1e5, n - 4 * k),
        ]
        cols.append(np.concatenate(parts).astype(F32))
    perm = rng.permutation(n)  # mix kinds within each 2048-point chunk of the kernel
    return [c[perm] for c in cols]


def _assert_same_bits(got: np.ndarray, ref: np.ndarray, coords: list[np.ndarray], kw) -> None:
    assert got.dtype == ref.dtype == np.float32
    assert np.isfinite(got).all(), "NaN or inf in the numba output"
    bad = np.flatnonzero(got.view(np.int32) != ref.view(np.int32))
    if bad.size:
        lines = [
            "coords=(" + ", ".join(f"{float(c[i])!r} [{float(c[i]).hex()}]" for c in coords)
            + f") numba={float(got[i])!r} reference={float(ref[i])!r}"
            for i in bad[:10]
        ]
        pytest.fail(f"{bad.size} of {got.size} values differ for {kw}:\n" + "\n".join(lines))


KERNEL_CASES_2D = [
    {},
    dict(octaves=8),
    dict(octaves=5, repeatx=8, repeaty=16, base=1),
    dict(octaves=4, persistence=0.7, lacunarity=2.3, repeatx=5.5, repeaty=3.0),
    dict(octaves=6, persistence=0.3, lacunarity=1.7, repeatx=4.0, repeaty=2.0),
]
KERNEL_CASES_3D = [
    {},
    dict(octaves=8),
    dict(octaves=5, repeatx=8, repeaty=16, repeatz=4, base=1),
    dict(octaves=4, persistence=0.7, lacunarity=2.3, repeatx=5, repeaty=3, repeatz=2),
]


@pytest.mark.parametrize("kw", KERNEL_CASES_2D, ids=str)
def test_numba_kernel_bit_exact_2d(kw) -> None:
    x, y = _stress_coords(2)
    got = pnoise2(x, y, backend="numba", **kw)
    _assert_same_bits(got, pnoise2_reference(x, y, **kw), [x, y], kw)


@pytest.mark.parametrize("kw", KERNEL_CASES_3D, ids=str)
def test_numba_kernel_bit_exact_3d(kw) -> None:
    x, y, z = _stress_coords(3)
    got = pnoise3(x, y, z, backend="numba", **kw)
    _assert_same_bits(got, pnoise3_reference(x, y, z, **kw), [x, y, z], kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeat_boundaries_match_noise(backend: str) -> None:
    """Values just inside, at and beyond the tiling period, against the C code."""
    xs = [1023.9999, 1024.0, -1024.0, -1023.9999, 1024.5, -1024.5, 2047.9, 0.0, -0.0]
    for x in xs:
        for y in (0.3, -0.7, 1024.0):
            assert pnoise2(np.array([x]), np.array([y]), backend=backend)[0] == noise.pnoise2(x, y)
            assert pnoise3(np.array([x]), y, 0.25, octaves=3, backend=backend)[0] == \
                noise.pnoise3(x, y, 0.25, octaves=3)
    for x in [7.99999, 8.0, -8.0, -7.99999, 15.99999, 16.0, -16.0, 4.0, 0.0]:
        for kw in (dict(repeatx=8, repeaty=8), dict(octaves=4, repeatx=8, repeaty=16)):
            got = pnoise2(np.array([x]), np.array([x / 2]), backend=backend, **kw)[0]
            assert got == noise.pnoise2(x, x / 2, **kw), (x, kw)
        got = pnoise3(np.array([x]), -x, 0.5, octaves=4, repeatx=8, repeaty=8, repeatz=8,
                      backend=backend)[0]
        assert got == noise.pnoise3(x, -x, 0.5, octaves=4, repeatx=8, repeaty=8, repeatz=8)


# --- shapes, dtypes and scalars ------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_and_broadcasting(backend: str) -> None:
    rng = np.random.default_rng(3)
    x, y, z = (rng.uniform(-10, 10, (2, 3, 4)) for _ in range(3))
    out = pnoise2(x, y, octaves=3, backend=backend)
    assert out.shape == (2, 3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out.ravel(), pnoise2(x.ravel(), y.ravel(), octaves=3))
    out3 = pnoise3(x, y, z, octaves=3, backend=backend)
    assert out3.shape == (2, 3, 4) and out3.dtype == np.float32
    np.testing.assert_array_equal(out3.ravel(), pnoise3(x.ravel(), y.ravel(), z.ravel(), 3))

    xb, yb = rng.uniform(-10, 10, (5, 1)), rng.uniform(-10, 10, (1, 7))
    out = pnoise2(xb, yb, octaves=2, backend=backend)
    assert out.shape == (5, 7) and out.dtype == np.float32
    gx, gy = np.broadcast_arrays(xb, yb)
    np.testing.assert_array_equal(out, pnoise2_reference(gx, gy, octaves=2))
    out3 = pnoise3(xb[:, :, None], yb[:, :, None], rng.uniform(size=(1, 1, 6)), backend=backend)
    assert out3.shape == (5, 7, 6) and out3.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalars_return_python_float(backend: str) -> None:
    for x, y in [(0.3, 0.7), (-12.25, 3.5), (1e5, -7.1), (3.0, 7.0)]:
        v = pnoise2(x, y, octaves=4, backend=backend)
        assert type(v) is float and v == noise.pnoise2(x, y, octaves=4)
        v3 = pnoise3(x, y, 0.4, octaves=4, backend=backend)
        assert type(v3) is float and v3 == noise.pnoise3(x, y, 0.4, octaves=4)
    assert type(pnoise2(np.float32(0.3), np.float64(0.7), backend=backend)) is float
    assert pnoise2(3.0, 7.0, backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_dtypes_layouts_and_empty(backend: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(-20, 20, 3000)
    y = rng.uniform(-20, 20, 3000)
    want = pnoise2(x.astype(F32), y.astype(F32), octaves=3, backend=backend)
    np.testing.assert_array_equal(pnoise2(x, y, octaves=3, backend=backend), want)
    # non-contiguous views
    xy = np.stack([x, y], axis=1)
    np.testing.assert_array_equal(pnoise2(xy[:, 0], xy[:, 1], octaves=3, backend=backend), want)
    np.testing.assert_array_equal(
        pnoise2(x[::3], y[::3], octaves=3, backend=backend), want[::3]
    )
    # integer input
    ints = np.arange(-20, 20)
    assert (pnoise2(ints, ints[::-1], backend=backend) == 0).all()
    # empty input
    assert pnoise2(np.empty(0), np.empty(0), backend=backend).shape == (0,)
    assert pnoise3(np.empty((0, 2)), np.empty((0, 2)), np.empty((0, 2)),
                   backend=backend).shape == (0, 2)


# --- torch ---------------------------------------------------------------------------------------

TORCH_CASES = [
    dict(octaves=1),
    dict(octaves=6, persistence=0.7, lacunarity=2.3),
    dict(octaves=4, repeatx=8, repeaty=16, base=1),
]


def _torch_check(device: str, kw: dict) -> None:
    rng = np.random.default_rng(5)
    x, y, z = (rng.uniform(-100, 100, 20_000).astype(F32) for _ in range(3))
    tx, ty, tz = (torch.from_numpy(v).to(device) for v in (x, y, z))
    out = pnoise2(tx, ty, **kw)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.device.type == device and out.shape == (20_000,)
    np.testing.assert_allclose(out.cpu().numpy(), pnoise2_reference(x, y, **kw), rtol=0, atol=1e-6)
    kw3 = {k: int(v) if k.startswith("repeat") else v for k, v in kw.items()}
    out3 = pnoise3(tx, ty, tz, **kw3)
    assert out3.dtype == torch.float32 and out3.device.type == device
    np.testing.assert_allclose(out3.cpu().numpy(), pnoise3_reference(x, y, z, **kw3),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("kw", TORCH_CASES, ids=str)
def test_torch_cpu_matches_reference(kw) -> None:
    _torch_check("cpu", kw)


def test_torch_mixed_inputs_and_dtype() -> None:
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    out = pnoise2(x, 0.25, octaves=3)
    assert out.dtype == torch.float32 and out.shape == (101,)
    want = pnoise2(x.numpy(), 0.25, octaves=3)
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=1e-6)
    grid = pnoise3(x[:, None], torch.zeros(1, 7), 0.5)
    assert grid.shape == (101, 7) and grid.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("kw", TORCH_CASES, ids=str)
def test_torch_cuda_matches_reference(kw) -> None:
    _torch_check("cuda", kw)


# --- documented semantics of the noise package -------------------------------------------------

def _dyadic(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """Multiples of 1/256: shifting them by small integers is exact in float32."""
    return np.round(rng.uniform(low, high, n) * 256) / 256


def test_base_is_a_diagonal_shift_of_one_octave() -> None:
    rng = np.random.default_rng(6)
    x, y, z = (_dyadic(rng, -50, 50, 5000) for _ in range(3))
    np.testing.assert_array_equal(pnoise2(x, y, base=1), pnoise2(x + 1, y + 1))
    np.testing.assert_array_equal(pnoise3(x, y, z, base=1), pnoise3(x + 1, y + 1, z + 1))
    # With several octaves base shifts each octave's lattice by one cell, i.e. by 1/freq in the
    # input coordinates: it is then no longer a coordinate shift (the C code agrees).
    multi = pnoise2(x, y, octaves=4, base=1)
    assert np.mean(multi == pnoise2(x + 1, y + 1, octaves=4)) < 0.01
    assert multi[0] == noise.pnoise2(x[0], y[0], octaves=4, base=1)


@pytest.mark.parametrize("octaves", [1, 4])
def test_zero_at_integer_lattice_points(octaves: int) -> None:
    g = np.mgrid[-300:301:7, -300:301:11].reshape(2, -1).astype(np.float64)
    assert (pnoise2(g[0], g[1], octaves=octaves) == 0).all()
    assert (pnoise3(g[0], g[1], g[0] - g[1], octaves=octaves) == 0).all()
    # A non-integer lacunarity moves the higher octaves' lattices off the integers.
    assert (pnoise2(g[0], g[1], octaves=4, lacunarity=1.7) != 0).mean() > 0.5


def test_default_period_is_256() -> None:
    rng = np.random.default_rng(8)
    x, y = _dyadic(rng, -50, 50, 5000), _dyadic(rng, -50, 50, 5000)
    for octaves in (1, 4):
        v = pnoise2(x, y, octaves=octaves)
        np.testing.assert_array_equal(pnoise2(x + 256, y, octaves=octaves), v)
        np.testing.assert_array_equal(pnoise2(x, y - 256, octaves=octaves), v)
    assert np.mean(pnoise2(x + 128, y) == pnoise2(x, y)) < 0.05  # not 128, not 1024


def test_repeat_tiles_with_its_period() -> None:
    rng = np.random.default_rng(9)
    x, y = _dyadic(rng, 0, 50, 5000), _dyadic(rng, -50, 50, 5000)
    for octaves in (1, 4):
        v = pnoise2(x, y, octaves=octaves, repeatx=8)
        np.testing.assert_array_equal(pnoise2(x + 8, y, octaves=octaves, repeatx=8), v)
        np.testing.assert_array_equal(pnoise2(x + 80, y, octaves=octaves, repeatx=8), v)
    xn = -x - 8  # tiling also holds among negative coordinates
    np.testing.assert_array_equal(pnoise2(xn - 8, y, repeatx=8), pnoise2(xn, y, repeatx=8))
    # ... but not across zero: fmodf keeps the sign and (i & 255) maps cell -1 to 255, not 7.
    # That is the C code's behaviour, which pnoise2 reproduces.
    a, b = pnoise2(-0.5, 0.3, repeatx=8), pnoise2(7.5, 0.3, repeatx=8)
    assert a != b
    assert (a, b) == (noise.pnoise2(-0.5, 0.3, repeatx=8), noise.pnoise2(7.5, 0.3, repeatx=8))


def test_pnoise2_equals_pnoise3_at_z0() -> None:
    rng = np.random.default_rng(10)
    x, y = rng.uniform(-50, 50, 5000), rng.uniform(-50, 50, 5000)
    for octaves in (1, 6):
        np.testing.assert_array_equal(pnoise2(x, y, octaves), pnoise3(x, y, 0.0, octaves))


# --- errors --------------------------------------------------------------------------------------

def test_invalid_input_error_is_value_error() -> None:
    assert issubclass(InvalidInputError, ValueError)
    with pytest.raises(ValueError):
        noise.pnoise2(0.5, 0.5, octaves=0)  # the C code refuses it too


@pytest.mark.parametrize(
    "kw",
    [
        dict(octaves=0), dict(octaves=-1), dict(octaves=2.5), dict(octaves=True),
        dict(octaves="4"), dict(persistence=float("nan")), dict(lacunarity=float("inf")),
        dict(repeatx=0), dict(repeatx=-8), dict(repeaty=float("nan")), dict(base=0.5),
        dict(backend="cuda"), dict(backend="torch"),
    ],
    ids=str,
)
@pytest.mark.parametrize("dim", [2, 3])
def test_invalid_arguments(kw, dim: int) -> None:
    x = np.linspace(0, 1, 10)
    with pytest.raises(InvalidInputError):
        if dim == 2:
            pnoise2(x, x, **kw)
        else:
            pnoise3(x, x, x, **kw)


@pytest.mark.parametrize("kw", [dict(repeatx=8.0), dict(repeaty=2.5), dict(repeatz=True)],
                         ids=str)
def test_pnoise3_repeat_must_be_int(kw) -> None:
    x = np.linspace(0, 1, 10)
    with pytest.raises(InvalidInputError):
        pnoise3(x, x, x, **kw)
    pnoise2(x, x, repeatx=8.0, repeaty=2.5)  # floats are fine in 2D, as in the noise package


def test_backend_environment_variable(monkeypatch) -> None:
    x = np.linspace(-3, 3, 50)
    monkeypatch.setenv("PCAD_PERLIN_BACKEND", "numpy")
    np.testing.assert_array_equal(pnoise2(x, x), pnoise2_reference(x, x))
    monkeypatch.setenv("PCAD_PERLIN_BACKEND", "fortran")
    with pytest.raises(InvalidInputError):
        pnoise2(x, x)
    pnoise2(x, x, backend="numba")  # an explicit backend ignores the variable


# --- seeded fields -------------------------------------------------------------------------------

def test_perlin_field_shapes() -> None:
    rng = np.random.default_rng(11)
    for dim in (2, 3):
        f = perlin_field(rng.uniform(size=(1234, dim)), scale=3.0, octaves=3, seed=1)
        assert f.shape == (1234,) and f.dtype == np.float32 and np.isfinite(f).all()


def test_perlin_field_seeds() -> None:
    rng = np.random.default_rng(12)
    for dim in (2, 3):
        c = rng.uniform(0, 5, size=(5000, dim))
        a = perlin_field(c, scale=4.0, octaves=4, seed=1)
        assert a.tobytes() == perlin_field(c, scale=4.0, octaves=4, seed=1).tobytes()
        b = perlin_field(c, scale=4.0, octaves=4, seed=2)
        assert not np.array_equal(a, b)
        r = np.corrcoef(a, b)[0, 1]
        assert abs(r) < 0.3, (dim, r)


def test_perlin_field_accepts_generator() -> None:
    c = np.random.default_rng(13).uniform(size=(500, 3))
    a = perlin_field(c, seed=np.random.default_rng(42))
    b = perlin_field(c, seed=np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    rot, off = seeded_transform(3, np.random.default_rng(42))
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    assert ((off >= 0) & (off < 256)).all()


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_perlin_field_bad_scale(scale: float) -> None:
    with pytest.raises(InvalidInputError):
        perlin_field(np.zeros((10, 2)), scale=scale)


@pytest.mark.parametrize("shape", [(10,), (10, 1), (10, 4), (2, 5, 2), (0, 2, 1)])
def test_perlin_field_bad_coords_shape(shape) -> None:
    with pytest.raises(InvalidInputError):
        perlin_field(np.zeros(shape))


def test_perlin_field_bad_coords_values() -> None:
    c = np.zeros((10, 3))
    c[3, 1] = np.nan
    with pytest.raises(InvalidInputError):
        perlin_field(c)


def test_seeded_field_has_no_zeros_on_integer_grid() -> None:
    g2 = np.mgrid[0:40, 0:40].reshape(2, -1).T
    assert (pnoise2(g2[:, 0], g2[:, 1], octaves=4) == 0).all()  # unseeded: all on the lattice
    assert (perlin_field(g2, scale=1.0, octaves=4, seed=0) != 0).all()
    g3 = np.mgrid[0:12, 0:12, 0:12].reshape(3, -1).T
    assert (perlin_field(g3, scale=1.0, octaves=4, seed=0) != 0).all()


def test_normalize01() -> None:
    f = perlin_field(np.random.default_rng(14).uniform(size=(2000, 2)), seed=3)
    n = normalize01(f)
    assert n.dtype == np.float32 and n.shape == f.shape
    assert n.min() == 0.0 and n.max() == 1.0
    assert (np.diff(n[np.argsort(f)]) >= 0).all()  # order preserved
    z = normalize01(np.full(17, 0.25, np.float32))
    assert z.dtype == np.float32 and (z == 0).all() and z.shape == (17,)
