"""The ``pcad`` command line: one parser, one module per subcommand.

Every error pcad raises on purpose (:class:`~pcad.errors.PcadError`) and every file-system error
ends the command with one line on stderr (``pcad: error: ...``) and exit status 2, never a
traceback. Subcommands import ``synth`` and ``viz`` lazily, so ``pcad info`` stays fast.

Example:
    >>> import contextlib, io, json
    >>> from pcad.cli.main import main
    >>> out = io.StringIO()
    >>> with contextlib.redirect_stdout(out):
    ...     status = main(["info", "--json"])
    >>> status, sorted(json.loads(out.getvalue()))
    (0, ['backends', 'devices', 'packages', 'pcad', 'platform', 'python'])
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pcad import __version__
from pcad.errors import PcadError

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from pcad.cli import (
        dataset_cmd,
        demo_cmd,
        info_cmd,
        pretrain_cmd,
        sensitivity_cmd,
        synth_cmd,
        train_cmd,
        viz_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="pcad", description="3D industrial anomaly synthesis, datasets and detection.")
    parser.add_argument("--version", action="version", version=f"pcad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (info_cmd, synth_cmd, dataset_cmd, train_cmd, demo_cmd, viz_cmd,
                   sensitivity_cmd, pretrain_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (PcadError, OSError) as exc:
        msg = "; ".join(line.strip() for line in (str(exc) or exc.__class__.__name__)
                        .splitlines() if line.strip())
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
        print(f"pcad: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pcad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
