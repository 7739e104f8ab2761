"""Public ``pnoise2`` / ``pnoise3``: the ``noise`` package's functions over arrays and tensors.

Same signatures and semantics as ``noise.pnoise2`` / ``noise.pnoise3`` (caseman/noise 1.2.2):
coordinates, persistence and lacunarity are rounded to float32; ``repeatx/y`` are floats in 2D and
ints in 3D; ``octaves < 1`` is an error; ``base`` shifts each octave's lattice by ``base`` cells
(it is *not* a seed; with one octave ``pnoise2(x, y, base=b) == pnoise2(x + b, y + b)``). Inputs
may be Python scalars (a float is returned), numpy arrays of any shape (broadcast together,
float32 out) or torch tensors (CPU or CUDA, float32 out on the same device).

Backends for numpy input: ``"numba"`` (compiled, parallel, the default) and ``"numpy"`` (the
plain reference). Set ``PCAD_PERLIN_BACKEND=numpy`` to force the reference everywhere.

Example:
    >>> import numpy as np
    >>> from synth import pnoise2
    >>> pnoise2(np.linspace(0, 2, 5), 0.5, octaves=4).shape
    (5,)
    >>> pnoise2(3.0, 7.0)
    0.0
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pcad.checks import check_choice
from pcad.errors import InvalidInputError
from synth.perlin.reference import pnoise2_reference, pnoise3_reference

BACKENDS = ("auto", "numba", "numpy")


def _is_tensor(v: Any) -> bool:
    mod = type(v).__module__
    return mod.startswith("torch")


def _check_common(octaves: Any, persistence: Any, lacunarity: Any, base: Any) -> int:
    if isinstance(octaves, bool) or not isinstance(octaves, (int, np.integer)):
        raise InvalidInputError(f"octaves: expected an integer, got {octaves!r}")
    if octaves < 1:
        raise InvalidInputError(f"octaves: expected a value > 0, got {octaves}")
    for name, v in (("persistence", persistence), ("lacunarity", lacunarity)):
        if not np.isfinite(float(v)):
            raise InvalidInputError(f"{name}: must be finite, got {v!r}")
    if isinstance(base, bool) or not isinstance(base, (int, np.integer)):
        raise InvalidInputError(f"base: expected an integer, got {base!r}")
    return int(octaves)


def _check_repeats(**repeats: Any) -> None:
    for name, v in repeats.items():
        if not np.isfinite(float(v)) or float(v) <= 0:
            raise InvalidInputError(f"{name}: must be a finite value > 0, got {v!r}")


def _flat(a: np.ndarray) -> np.ndarray:
    """A contiguous 1D float32 array owning its data (no read-only broadcast view reaches
    numba, which warns about those)."""
    return np.require(a, np.float32, ["C_CONTIGUOUS", "OWNDATA"]).ravel()


def _backend(backend: str) -> str:
    choice = os.environ.get("PCAD_PERLIN_BACKEND", backend) if backend == "auto" else backend
    check_choice(choice, "backend", BACKENDS)
    return "numba" if choice == "auto" else choice


def pnoise2(x: Any, y: Any, octaves: int = 1, persistence: float = 0.5, lacunarity: float = 2.0,
            repeatx: float = 1024, repeaty: float = 1024, base: int = 0,
            backend: str = "auto") -> Any:
    """2D Perlin "improved" noise with fBm octaves, as ``noise.pnoise2``, vectorized.

    Args:
        x, y: coordinates; scalars, numpy arrays (any broadcastable shapes) or torch tensors.
        octaves: number of fBm octaves (>= 1). persistence: amplitude ratio per octave.
        lacunarity: frequency ratio per octave. repeatx, repeaty: tiling periods (floats > 0;
            the hash wraps at 256 lattice cells anyway). base: lattice shift (not a seed).
        backend: ``"auto"``, ``"numba"`` or ``"numpy"`` for numpy input (ignored for tensors).

    Returns:
        A float for scalar input, else float32 values of the broadcast shape
        (a tensor on the input device for tensor input).
    """
    octaves = _check_common(octaves, persistence, lacunarity, base)
    _check_repeats(repeatx=repeatx, repeaty=repeaty)
    kw = dict(octaves=octaves, persistence=persistence, lacunarity=lacunarity,
              repeatx=repeatx, repeaty=repeaty, base=int(base))
    if _is_tensor(x) or _is_tensor(y):
        import torch

        from synth.perlin.torch_backend import pnoise2_torch

        dev = x.device if _is_tensor(x) else y.device
        return pnoise2_torch(torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev), **kw)
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0
    xa, ya = np.broadcast_arrays(np.asarray(x, np.float32), np.asarray(y, np.float32))
    if _backend(backend) == "numpy":
        out = pnoise2_reference(xa, ya, **kw)
    else:
        from synth.perlin.kernels import pnoise2_kernel

        f32 = np.float32
        out = np.empty(xa.size, np.float32)
        pnoise2_kernel(_flat(xa), _flat(ya), octaves,
                       f32(persistence), f32(lacunarity), f32(repeatx), f32(repeaty),
                       np.int32(base), out)
        out = out.reshape(xa.shape)
    return float(out) if scalar else out


def pnoise3(x: Any, y: Any, z: Any, octaves: int = 1, persistence: float = 0.5,
            lacunarity: float = 2.0, repeatx: int = 1024, repeaty: int = 1024,
            repeatz: int = 1024, base: int = 0, backend: str = "auto") -> Any:
    """3D Perlin "improved" noise with fBm octaves, as ``noise.pnoise3``, vectorized.

    Same arguments as :func:`pnoise2` plus ``z``; ``repeatx/y/z`` are integers here, as in the
    ``noise`` package (per octave ``int(repeat * freq)``).
    """
    octaves = _check_common(octaves, persistence, lacunarity, base)
    for name, v in (("repeatx", repeatx), ("repeaty", repeaty), ("repeatz", repeatz)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidInputError(f"{name}: expected an integer (as noise.pnoise3), got {v!r}")
    _check_repeats(repeatx=repeatx, repeaty=repeaty, repeatz=repeatz)
    kw = dict(octaves=octaves, persistence=persistence, lacunarity=lacunarity,
              repeatx=int(repeatx), repeaty=int(repeaty), repeatz=int(repeatz), base=int(base))
    if any(_is_tensor(v) for v in (x, y, z)):
        import torch

        from synth.perlin.torch_backend import pnoise3_torch

        dev = next(v.device for v in (x, y, z) if _is_tensor(v))
        return pnoise3_torch(*(torch.as_tensor(v, device=dev) for v in (x, y, z)), **kw)
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0 and np.ndim(z) == 0
    arrs = np.broadcast_arrays(*(np.asarray(v, np.float32) for v in (x, y, z)))
    if _backend(backend) == "numpy":
        out = pnoise3_reference(*arrs, **kw)
    else:
        from synth.perlin.kernels import pnoise3_kernel

        f32 = np.float32
        flat = [_flat(a) for a in arrs]
        out = np.empty(flat[0].size, np.float32)
        pnoise3_kernel(*flat, octaves, f32(persistence), f32(lacunarity), kw["repeatx"],
                       kw["repeaty"], kw["repeatz"], np.int32(base), out)
        out = out.reshape(arrs[0].shape)
    return float(out) if scalar else out
