"""The ``--device`` flag every feature-computing command shares (train, eval, demo,
pretrain-points, sensitivity, predict): one call adds it to a parser.

The value is checked while the command line is parsed (spelling only, no torch import:
:func:`pcad.devices.check_device`); whether the device is present is checked when the
detector is made or loaded (:func:`pcad.detectors.patches.resolve_device`), a one-line error.
The flag's default is None: ``pcad train`` then uses the detector's ``device`` option
(``-o device=...``, default ``"auto"``: CUDA when available) and ``pcad eval`` the run's own
option; a given flag overrides both.

Example:
    >>> import argparse
    >>> from pcad.cli.device_arg import add_device_argument, apply_device
    >>> p = argparse.ArgumentParser()
    >>> add_device_argument(p)
    >>> args = p.parse_args(["--device", "cuda:1"])
    >>> args.device, apply_device({"device": "cpu", "seed": 0}, args)
    ('cuda:1', {'device': 'cuda:1', 'seed': 0})
"""

from __future__ import annotations

import argparse
from typing import Any

from pcad.devices import DEVICE_HELP, check_device
from pcad.errors import InvalidInputError

__all__ = ["add_device_argument", "apply_device", "parse_device"]


def parse_device(text: str) -> str:
    """``--device``'s argparse ``type``: the checked name, or argparse's error (exit 2).

    Example:
        >>> parse_device("cpu")
        'cpu'
    """
    try:
        return check_device(text, "--device")
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--device: ")) from None


def add_device_argument(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    """Add ``--device DEVICE`` (default None: the detector's or the run's own option)."""
    parser.add_argument("--device", type=parse_device, default=None, metavar="DEVICE",
                        help=help)


def apply_device(config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``config`` with ``device`` set from ``args.device`` when the flag was given (it
    overrides ``-o device=``); the same dict, changed in place."""
    device = getattr(args, "device", None)
    if device is not None:
        config["device"] = device
    return config
