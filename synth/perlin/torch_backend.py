"""Torch implementation of ``pnoise2`` / ``pnoise3`` (CPU and CUDA), float32, same algorithm.

It follows :mod:`synth.perlin.reference` line by line with torch ops on the input's device, so
the values equal the ``noise`` package up to fused multiply-add contraction that a GPU compiler
may apply (a few ulp; the tests hold it to 1e-6).

Example:
    >>> import torch
    >>> from synth.perlin.torch_backend import pnoise2_torch
    >>> pnoise2_torch(torch.tensor([0.5, 3.0]), torch.tensor([0.25, 7.0]))[1].item()
    0.0
"""

from __future__ import annotations

import torch

from synth.perlin.tables import GRAD3, PERM256

_CACHE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _CACHE:
        _CACHE[device] = (
            torch.as_tensor(PERM256, dtype=torch.int64, device=device),
            torch.as_tensor(GRAD3, dtype=torch.float32, device=device),
        )
    return _CACHE[device]


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _lerp(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + t * (b - a)


def _cells(x: torch.Tensor, repeat: float, base: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.tensor(repeat, dtype=torch.float32, device=x.device)
    i = torch.floor(torch.fmod(x, r)).to(torch.int64)
    ii = torch.fmod((i + 1).to(torch.float32), r).to(torch.int64)
    return (i & 255) + base, (ii & 255) + base


def _noise2(x, y, rx: float, ry: float, base: int) -> torch.Tensor:
    perm, grad = _tables(x.device)
    p = lambda k: perm[k & 255]  # noqa: E731
    i, ii = _cells(x, rx, base)
    j, jj = _cells(y, ry, base)
    x = x - torch.floor(x)
    y = y - torch.floor(y)
    fx, fy = _fade(x), _fade(y)
    a, b = p(i), p(ii)

    def g(h, dx, dy):
        h = h & 15
        return dx * grad[h, 0] + dy * grad[h, 1]

    x1, y1 = x - 1.0, y - 1.0
    return _lerp(
        fy,
        _lerp(fx, g(p(p(a + j)), x, y), g(p(p(b + j)), x1, y)),
        _lerp(fx, g(p(p(a + jj)), x, y1), g(p(p(b + jj)), x1, y1)),
    )


def _noise3(x, y, z, rx: float, ry: float, rz: float, base: int) -> torch.Tensor:
    perm, grad = _tables(x.device)
    p = lambda k: perm[k & 255]  # noqa: E731
    i, ii = _cells(x, rx, base)
    j, jj = _cells(y, ry, base)
    k, kk = _cells(z, rz, base)
    x = x - torch.floor(x)
    y = y - torch.floor(y)
    z = z - torch.floor(z)
    fx, fy, fz = _fade(x), _fade(y), _fade(z)
    a, b = p(i), p(ii)
    aa, ab, ba, bb = p(a + j), p(a + jj), p(b + j), p(b + jj)

    def g(h, dx, dy, dz):
        h = h & 15
        return dx * grad[h, 0] + dy * grad[h, 1] + dz * grad[h, 2]

    x1, y1, z1 = x - 1.0, y - 1.0, z - 1.0
    lo = _lerp(
        fy,
        _lerp(fx, g(p(aa + k), x, y, z), g(p(ba + k), x1, y, z)),
        _lerp(fx, g(p(ab + k), x, y1, z), g(p(bb + k), x1, y1, z)),
    )
    hi = _lerp(
        fy,
        _lerp(fx, g(p(aa + kk), x, y, z1), g(p(ba + kk), x1, y, z1)),
        _lerp(fx, g(p(ab + kk), x, y1, z1), g(p(bb + kk), x1, y1, z1)),
    )
    return _lerp(fz, lo, hi)


def _f32(v: float) -> float:
    """Round a Python float to the nearest float32 value (as the C API does on entry)."""
    return float(torch.tensor(v, dtype=torch.float32))


def pnoise2_torch(x: torch.Tensor, y: torch.Tensor, octaves: int = 1, persistence: float = 0.5,
                  lacunarity: float = 2.0, repeatx: float = 1024, repeaty: float = 1024,
                  base: int = 0) -> torch.Tensor:
    """``noise.pnoise2`` over broadcast float32 tensors; returns float32 on the inputs' device."""
    x, y = torch.broadcast_tensors(x.to(torch.float32), y.to(torch.float32))
    rx, ry = _f32(repeatx), _f32(repeaty)
    if octaves == 1:
        return _noise2(x, y, rx, ry, base)
    freq = amp = torch.tensor(1.0, dtype=torch.float32)
    total_amp = torch.tensor(0.0, dtype=torch.float32)
    pers = torch.tensor(persistence, dtype=torch.float32)
    lac = torch.tensor(lacunarity, dtype=torch.float32)
    total = torch.zeros_like(x)
    for _ in range(octaves):
        f = float(freq)
        total = total + _noise2(x * f, y * f, float(rx * freq), float(ry * freq), base) * float(amp)
        total_amp = total_amp + amp
        freq = freq * lac
        amp = amp * pers
    return total / float(total_amp)


def pnoise3_torch(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, octaves: int = 1,
                  persistence: float = 0.5, lacunarity: float = 2.0, repeatx: int = 1024,
                  repeaty: int = 1024, repeatz: int = 1024, base: int = 0) -> torch.Tensor:
    """``noise.pnoise3`` over broadcast float32 tensors; returns float32 on the inputs' device."""
    x, y, z = torch.broadcast_tensors(x.to(torch.float32), y.to(torch.float32), z.to(torch.float32))
    if octaves == 1:
        return _noise3(x, y, z, float(repeatx), float(repeaty), float(repeatz), base)
    freq = amp = torch.tensor(1.0, dtype=torch.float32)
    total_amp = torch.tensor(0.0, dtype=torch.float32)
    pers = torch.tensor(persistence, dtype=torch.float32)
    lac = torch.tensor(lacunarity, dtype=torch.float32)
    total = torch.zeros_like(x)
    for _ in range(octaves):
        f = float(freq)
        reps = [float(int(torch.tensor(float(r), dtype=torch.float32) * freq))
                for r in (repeatx, repeaty, repeatz)]
        total = total + _noise3(x * f, y * f, z * f, *reps, base) * float(amp)
        total_amp = total_amp + amp
        freq = freq * lac
        amp = amp * pers
    return total / float(total_amp)
