"""Compiled CPU kernels (numba) of ``pnoise2`` / ``pnoise3``, bit-equal to the numpy reference.

Layout of the fast path: points are split into chunks that run on parallel threads; within a
chunk each octave is one branch-free loop over the points that LLVM vectorizes (SIMD gathers
from the permutation table, which is a compile-time constant so that no store can alias it).
That loop assumes the common case ``|x * freq| < repeat * freq`` (the ``fmod`` wrap is then the
identity); the few points outside it are flagged and recomputed by the exact scalar path, which
calls ``fmod`` as the C code does. Every constant is a float32 so that arithmetic stays float32,
and ``fastmath`` stays off (no fused multiply-add). ``tests/test_perlin.py`` holds these kernels
to :mod:`synth.perlin.reference` bit for bit.

Example:
    >>> import numpy as np
    >>> from synth.perlin.kernels import pnoise2_kernel
    >>> out = np.empty(2, np.float32)
    >>> pnoise2_kernel(np.array([0.5, 3.0], np.float32), np.array([0.25, 7.0], np.float32),
    ...                1, np.float32(0.5), np.float32(2.0), np.float32(1024), np.float32(1024),
    ...                np.int32(0), out)
    >>> float(out[1])
    0.0
"""

from __future__ import annotations

import numba
import numpy as np

from synth.perlin.tables import GRAD3, PERM256

# OpenMP first: numba otherwise tries TBB and warns when the installed TBB is too old.
numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_PERM = PERM256.astype(np.int32)
_GX = np.ascontiguousarray(GRAD3[:, 0])
_GY = np.ascontiguousarray(GRAD3[:, 1])
_GZ = np.ascontiguousarray(GRAD3[:, 2])
_F = np.float32
_I = np.int32
_ONE = _F(1.0)
_ZERO = _F(0.0)
_SIX = _F(6.0)
_FIFTEEN = _F(15.0)
_TEN = _F(10.0)
_MASK = _I(255)
_CHUNK = 2048

_JIT = dict(cache=True, error_model="numpy")


@numba.njit(inline="always", **_JIT)
def _fade(t):
    return t * t * t * (t * (t * _SIX - _FIFTEEN) + _TEN)


@numba.njit(inline="always", **_JIT)
def _lerp(t, a, b):
    return a + t * (b - a)


# --- exact scalar path (any coordinate, any repeat) -------------------------------------------

@numba.njit(inline="always", **_JIT)
def _cell(x, repeat, base):
    i = np.int64(np.floor(np.fmod(x, repeat)))
    ii = np.int64(np.fmod(_F(i + 1), repeat))
    return (i & 255) + base, (ii & 255) + base


@numba.njit(**_JIT)
def _noise2(x, y, rx, ry, base):
    i, ii = _cell(x, rx, base)
    j, jj = _cell(y, ry, base)
    x = x - np.floor(x)
    y = y - np.floor(y)
    fx = _fade(x)
    fy = _fade(y)
    a = _PERM[i & 255]
    b = _PERM[ii & 255]
    h00 = _PERM[_PERM[(a + j) & 255] & 255] & 15
    h10 = _PERM[_PERM[(b + j) & 255] & 255] & 15
    h01 = _PERM[_PERM[(a + jj) & 255] & 255] & 15
    h11 = _PERM[_PERM[(b + jj) & 255] & 255] & 15
    x1 = x - _ONE
    y1 = y - _ONE
    return _lerp(
        fy,
        _lerp(fx, x * _GX[h00] + y * _GY[h00], x1 * _GX[h10] + y * _GY[h10]),
        _lerp(fx, x * _GX[h01] + y1 * _GY[h01], x1 * _GX[h11] + y1 * _GY[h11]),
    )


@numba.njit(inline="always", **_JIT)
def _g3(h, x, y, z):
    h = h & 15
    return x * _GX[h] + y * _GY[h] + z * _GZ[h]


@numba.njit(**_JIT)
def _noise3(x, y, z, rx, ry, rz, base):
    i, ii = _cell(x, rx, base)
    j, jj = _cell(y, ry, base)
    k, kk = _cell(z, rz, base)
    x = x - np.floor(x)
    y = y - np.floor(y)
    z = z - np.floor(z)
    fx = _fade(x)
    fy = _fade(y)
    fz = _fade(z)
    a = _PERM[i & 255]
    b = _PERM[ii & 255]
    aa = _PERM[(a + j) & 255]
    ab = _PERM[(a + jj) & 255]
    ba = _PERM[(b + j) & 255]
    bb = _PERM[(b + jj) & 255]
    x1 = x - _ONE
    y1 = y - _ONE
    z1 = z - _ONE
    lo = _lerp(
        fy,
        _lerp(fx, _g3(_PERM[(aa + k) & 255], x, y, z), _g3(_PERM[(ba + k) & 255], x1, y, z)),
        _lerp(fx, _g3(_PERM[(ab + k) & 255], x, y1, z), _g3(_PERM[(bb + k) & 255], x1, y1, z)),
    )
    hi = _lerp(
        fy,
        _lerp(fx, _g3(_PERM[(aa + kk) & 255], x, y, z1), _g3(_PERM[(ba + kk) & 255], x1, y, z1)),
        _lerp(fx, _g3(_PERM[(ab + kk) & 255], x, y1, z1),
              _g3(_PERM[(bb + kk) & 255], x1, y1, z1)),
    )
    return _lerp(fz, lo, hi)


@numba.njit(**_JIT)
def _fbm2_point(x, y, octaves, persistence, lacunarity, repeatx, repeaty, base):
    if octaves == 1:
        return _noise2(x, y, repeatx, repeaty, base)
    freq = _ONE
    amp = _ONE
    total_amp = _ZERO
    total = _ZERO
    for _ in range(octaves):
        total += _noise2(x * freq, y * freq, repeatx * freq, repeaty * freq, base) * amp
        total_amp += amp
        freq *= lacunarity
        amp *= persistence
    return total / total_amp


@numba.njit(**_JIT)
def _fbm3_point(x, y, z, octaves, persistence, lacunarity, repeatx, repeaty, repeatz, base):
    frx = _F(repeatx)
    fry = _F(repeaty)
    frz = _F(repeatz)
    if octaves == 1:
        return _noise3(x, y, z, frx, fry, frz, base)
    freq = _ONE
    amp = _ONE
    total_amp = _ZERO
    total = _ZERO
    for _ in range(octaves):
        rx = _F(np.int64(frx * freq))
        ry = _F(np.int64(fry * freq))
        rz = _F(np.int64(frz * freq))
        total += _noise3(x * freq, y * freq, z * freq, rx, ry, rz, base) * amp
        total_amp += amp
        freq *= lacunarity
        amp *= persistence
    return total / total_amp


# --- vectorized path (the common case) ---------------------------------------------------------

@numba.njit(inline="always", **_JIT)
def _fast_cell(xs, r, base):
    """Cell indices assuming ``|xs| < r`` and ``floor(xs) + 1 < r``; ``ok`` says if that held."""
    inside = (xs > -r) & (xs < r)
    i = _I(np.floor(xs if inside else _ZERO))
    ok = inside & (_F(i + _I(1)) < r)
    return ((i & _MASK) + base) & _MASK, (((i + _I(1)) & _MASK) + base) & _MASK, ok


@numba.njit(**_JIT)
def _octave2(x, y, freq, amp, rx, ry, base, assign, total, bad):
    for p in range(x.shape[0]):
        xs = x[p] * freq
        ys = y[p] * freq
        i, ii, okx = _fast_cell(xs, rx, base)
        j, jj, oky = _fast_cell(ys, ry, base)
        bad[p] = bad[p] | np.uint8(not (okx & oky))
        xf = xs - np.floor(xs)
        yf = ys - np.floor(ys)
        u = _fade(xf)
        v = _fade(yf)
        a = _PERM[i]
        b = _PERM[ii]
        h00 = _PERM[_PERM[(a + j) & _MASK]] & 15
        h10 = _PERM[_PERM[(b + j) & _MASK]] & 15
        h01 = _PERM[_PERM[(a + jj) & _MASK]] & 15
        h11 = _PERM[_PERM[(b + jj) & _MASK]] & 15
        x1 = xf - _ONE
        y1 = yf - _ONE
        value = _lerp(
            v,
            _lerp(u, xf * _GX[h00] + yf * _GY[h00], x1 * _GX[h10] + yf * _GY[h10]),
            _lerp(u, xf * _GX[h01] + y1 * _GY[h01], x1 * _GX[h11] + y1 * _GY[h11]),
        ) * amp
        total[p] = value if assign else total[p] + value


@numba.njit(**_JIT)
def _octave3(x, y, z, freq, amp, rx, ry, rz, base, assign, total, bad):
    for p in range(x.shape[0]):
        xs = x[p] * freq
        ys = y[p] * freq
        zs = z[p] * freq
        i, ii, okx = _fast_cell(xs, rx, base)
        j, jj, oky = _fast_cell(ys, ry, base)
        k, kk, okz = _fast_cell(zs, rz, base)
        bad[p] = bad[p] | np.uint8(not (okx & oky & okz))
        xf = xs - np.floor(xs)
        yf = ys - np.floor(ys)
        zf = zs - np.floor(zs)
        u = _fade(xf)
        v = _fade(yf)
        w = _fade(zf)
        a = _PERM[i]
        b = _PERM[ii]
        aa = _PERM[(a + j) & _MASK]
        ab = _PERM[(a + jj) & _MASK]
        ba = _PERM[(b + j) & _MASK]
        bb = _PERM[(b + jj) & _MASK]
        x1 = xf - _ONE
        y1 = yf - _ONE
        z1 = zf - _ONE
        lo = _lerp(
            v,
            _lerp(u, _g3(_PERM[(aa + k) & _MASK], xf, yf, zf),
                  _g3(_PERM[(ba + k) & _MASK], x1, yf, zf)),
            _lerp(u, _g3(_PERM[(ab + k) & _MASK], xf, y1, zf),
                  _g3(_PERM[(bb + k) & _MASK], x1, y1, zf)),
        )
        hi = _lerp(
            v,
            _lerp(u, _g3(_PERM[(aa + kk) & _MASK], xf, yf, z1),
                  _g3(_PERM[(ba + kk) & _MASK], x1, yf, z1)),
            _lerp(u, _g3(_PERM[(ab + kk) & _MASK], xf, y1, z1),
                  _g3(_PERM[(bb + kk) & _MASK], x1, y1, z1)),
        )
        value = _lerp(w, lo, hi) * amp
        total[p] = value if assign else total[p] + value


@numba.njit(parallel=True, **_JIT)
def pnoise2_kernel(x, y, octaves, persistence, lacunarity, repeatx, repeaty, base, out):
    """Fill ``out`` (N,) float32 with ``pnoise2`` of the (N,) float32 arrays ``x``, ``y``.

    ``persistence``, ``lacunarity``, ``repeatx``, ``repeaty``: float32; ``base``: int32.
    """
    n = x.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in numba.prange(n_chunks):
        s = c * _CHUNK
        e = min(n, s + _CHUNK)
        bad = np.zeros(e - s, np.uint8)
        total = out[s:e]
        if octaves > 1:
            total[:] = _ZERO
        freq = _ONE
        amp = _ONE
        total_amp = _ZERO
        for o in range(octaves):
            _octave2(x[s:e], y[s:e], freq, amp, repeatx * freq, repeaty * freq, base,
                     o == 0 and octaves == 1, total, bad)
            total_amp += amp
            freq *= lacunarity
            amp *= persistence
        if octaves > 1:
            for p in range(e - s):
                total[p] = total[p] / total_amp
        for p in range(e - s):
            if bad[p]:
                total[p] = _fbm2_point(x[s + p], y[s + p], octaves, persistence, lacunarity,
                                       repeatx, repeaty, base)


@numba.njit(parallel=True, **_JIT)
def pnoise3_kernel(x, y, z, octaves, persistence, lacunarity, repeatx, repeaty, repeatz, base,
                   out):
    """Fill ``out`` (N,) float32 with ``pnoise3`` of the (N,) float32 arrays ``x``, ``y``, ``z``.

    ``repeatx/y/z`` are ints as in the ``noise`` package; per octave they are multiplied by
    the float32 frequency and truncated to int.
    """
    n = x.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    frx = _F(repeatx)
    fry = _F(repeaty)
    frz = _F(repeatz)
    for c in numba.prange(n_chunks):
        s = c * _CHUNK
        e = min(n, s + _CHUNK)
        bad = np.zeros(e - s, np.uint8)
        total = out[s:e]
        if octaves > 1:
            total[:] = _ZERO
        freq = _ONE
        amp = _ONE
        total_amp = _ZERO
        for o in range(octaves):
            if octaves == 1:
                rx, ry, rz = frx, fry, frz
            else:
                rx = _F(np.int64(frx * freq))
                ry = _F(np.int64(fry * freq))
                rz = _F(np.int64(frz * freq))
            _octave3(x[s:e], y[s:e], z[s:e], freq, amp, rx, ry, rz, base,
                     o == 0 and octaves == 1, total, bad)
            total_amp += amp
            freq *= lacunarity
            amp *= persistence
        if octaves > 1:
            for p in range(e - s):
                total[p] = total[p] / total_amp
        for p in range(e - s):
            if bad[p]:
                total[p] = _fbm3_point(x[s + p], y[s + p], z[s + p], octaves, persistence,
                                       lacunarity, repeatx, repeaty, repeatz, base)
