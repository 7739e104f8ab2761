"""Plain numpy reference of the ``noise`` package's ``pnoise2`` / ``pnoise3`` (float32, exact).

This is the readable specification every faster backend is tested against. It follows the C
code of caseman/noise 1.2.2 operation by operation, in float32 with the same rounding order:

- cell index ``i = int(floor(fmod(x, repeat)))``, next cell ``ii = int(fmod(i + 1, repeat))``,
  both wrapped with ``& 255`` and shifted by ``base``;
- local offsets from the *unwrapped* coordinate, ``x - floor(x)``;
- quintic fade ``x*x*x * (x * (x * 6 - 15) + 10)``; ``lerp(t, a, b) = a + t * (b - a)``;
- fBm: ``total += noise(x*freq, ..., repeat*freq) * amp``; ``freq *= lacunarity``;
  ``amp *= persistence``; result ``total / sum(amp)`` (2D passes ``repeat*freq`` as a float,
  3D truncates it to an int).

Example:
    >>> import numpy as np
    >>> from synth.perlin.reference import pnoise2_reference
    >>> v = pnoise2_reference(np.array([0.5, 3.0], np.float32), np.array([0.25, 7.0], np.float32))
    >>> v.dtype, float(v[1])
    (dtype('float32'), 0.0)
"""

from __future__ import annotations

import numpy as np

from synth.perlin.tables import GRAD3, PERM256

F32 = np.float32
_G2X = GRAD3[:, 0].copy()
_G2Y = GRAD3[:, 1].copy()
_G3X, _G3Y, _G3Z = (GRAD3[:, k].copy() for k in range(3))


def _perm(index: np.ndarray) -> np.ndarray:
    return PERM256[index & 255]


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * F32(6) - F32(15)) + F32(10))


def _lerp(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + t * (b - a)


def _cells(x: np.ndarray, repeat: np.float32, base: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.floor(np.fmod(x, repeat)).astype(np.int64)
    ii = np.fmod((i + 1).astype(F32), repeat).astype(np.int64)
    return (i & 255) + base, (ii & 255) + base


def _grad2(h: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h = h & 15
    return x * _G2X[h] + y * _G2Y[h]


def _grad3(h: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    h = h & 15
    return x * _G3X[h] + y * _G3Y[h] + z * _G3Z[h]


def noise2_reference(
    x: np.ndarray, y: np.ndarray, repeatx: np.float32, repeaty: np.float32, base: int
) -> np.ndarray:
    """One octave of 2D improved noise. ``x``, ``y``: float32 arrays of one shape."""
    i, ii = _cells(x, repeatx, base)
    j, jj = _cells(y, repeaty, base)
    x = x - np.floor(x)
    y = y - np.floor(y)
    fx, fy = _fade(x), _fade(y)
    a, b = _perm(i), _perm(ii)
    aa, ab = _perm(a + j), _perm(a + jj)
    ba, bb = _perm(b + j), _perm(b + jj)
    one = F32(1)
    return _lerp(
        fy,
        _lerp(fx, _grad2(_perm(aa), x, y), _grad2(_perm(ba), x - one, y)),
        _lerp(fx, _grad2(_perm(ab), x, y - one), _grad2(_perm(bb), x - one, y - one)),
    )


def noise3_reference(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, repeatx: int, repeaty: int, repeatz: int,
    base: int,
) -> np.ndarray:
    """One octave of 3D improved noise. ``x``, ``y``, ``z``: float32 arrays of one shape."""
    i, ii = _cells(x, F32(repeatx), base)
    j, jj = _cells(y, F32(repeaty), base)
    k, kk = _cells(z, F32(repeatz), base)
    x = x - np.floor(x)
    y = y - np.floor(y)
    z = z - np.floor(z)
    fx, fy, fz = _fade(x), _fade(y), _fade(z)
    a, b = _perm(i), _perm(ii)
    aa, ab = _perm(a + j), _perm(a + jj)
    ba, bb = _perm(b + j), _perm(b + jj)
    one = F32(1)
    x1, y1, z1 = x - one, y - one, z - one
    lo = _lerp(
        fy,
        _lerp(fx, _grad3(_perm(aa + k), x, y, z), _grad3(_perm(ba + k), x1, y, z)),
        _lerp(fx, _grad3(_perm(ab + k), x, y1, z), _grad3(_perm(bb + k), x1, y1, z)),
    )
    hi = _lerp(
        fy,
        _lerp(fx, _grad3(_perm(aa + kk), x, y, z1), _grad3(_perm(ba + kk), x1, y, z1)),
        _lerp(fx, _grad3(_perm(ab + kk), x, y1, z1), _grad3(_perm(bb + kk), x1, y1, z1)),
    )
    return _lerp(fz, lo, hi)


def pnoise2_reference(
    x: np.ndarray, y: np.ndarray, octaves: int = 1, persistence: float = 0.5,
    lacunarity: float = 2.0, repeatx: float = 1024, repeaty: float = 1024, base: int = 0,
) -> np.ndarray:
    """fBm sum of :func:`noise2_reference`, as ``noise.pnoise2``. Arrays broadcast; float32 out."""
    x, y = np.broadcast_arrays(np.asarray(x, F32), np.asarray(y, F32))
    if octaves == 1:
        return noise2_reference(x, y, F32(repeatx), F32(repeaty), base)
    freq, amp, total_amp = F32(1), F32(1), F32(0)
    pers, lac, rx, ry = F32(persistence), F32(lacunarity), F32(repeatx), F32(repeaty)
    total = np.zeros(x.shape, F32)
    for _ in range(octaves):
        total += noise2_reference(x * freq, y * freq, rx * freq, ry * freq, base) * amp
        total_amp += amp
        freq *= lac
        amp *= pers
    return total / total_amp


def pnoise3_reference(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, octaves: int = 1, persistence: float = 0.5,
    lacunarity: float = 2.0, repeatx: int = 1024, repeaty: int = 1024, repeatz: int = 1024,
    base: int = 0,
) -> np.ndarray:
    """fBm sum of :func:`noise3_reference`, as ``noise.pnoise3``. Arrays broadcast; float32 out."""
    x, y, z = np.broadcast_arrays(np.asarray(x, F32), np.asarray(y, F32), np.asarray(z, F32))
    if octaves == 1:
        return noise3_reference(x, y, z, repeatx, repeaty, repeatz, base)
    freq, amp, total_amp = F32(1), F32(1), F32(0)
    pers, lac = F32(persistence), F32(lacunarity)
    total = np.zeros(x.shape, F32)
    for _ in range(octaves):
        reps = tuple(_c_int(F32(r) * freq) for r in (repeatx, repeaty, repeatz))
        total += noise3_reference(x * freq, y * freq, z * freq, *reps, base) * amp
        total_amp += amp
        freq *= lac
        amp *= pers
    return total / total_amp


def _c_int(v: np.float32) -> int:
    """C's ``(int)`` of a float: truncation toward zero (values here stay within int32)."""
    return int(np.trunc(v))
