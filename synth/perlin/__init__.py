"""Perlin "improved" noise equal to the ``noise`` package, vectorized (numpy, numba, torch)."""

from synth.perlin.api import pnoise2, pnoise3

__all__ = ["pnoise2", "pnoise3"]
