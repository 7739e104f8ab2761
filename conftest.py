"""pytest setup for the whole tree, loaded before any test or doctest module.

Without CUDA, Triton's kernels can run only through its interpreter, which must be switched on
before Triton is first imported: ``TRITON_INTERPRET=1`` is set here (unless already set) so
that the ``triton`` backend of :mod:`pcad.ops` is tested on the CPU (``tests/test_ops_triton.py``).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
