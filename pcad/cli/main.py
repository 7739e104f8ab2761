"""The ``pcad`` command line: one parser, one module per subcommand.

Every error pcad raises on purpose (:class:`~pcad.errors.PcadError`) and every file-system error
ends the command with one line on stderr (``pcad: error: ...``) and exit status 2, never a
traceback. Warnings (:class:`~pcad.errors.PcadWarning`: input accepted but probably giving a
wrong result) are printed as one line each, ``pcad: warning: ...``, and the command goes on.
Subcommands import ``synth`` and ``viz`` lazily, so ``pcad info`` stays fast.

Exit status: 0 success; 2 an error in the input (:class:`~pcad.errors.PcadError`, a file-system
error, or running out of memory: ``pcad: error: out of memory ...`` with a hint to shrink the
input); 1 an internal error (any other exception: ``pcad: error: internal error: TYPE: MESSAGE
(run with --debug for the traceback)``); 130 interrupted. ``pcad --debug COMMAND ...`` lets
every error raise, with its Python traceback.

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
import warnings
from collections.abc import Sequence

from pcad import __version__
from pcad.errors import PcadError

#: exit status of an error in the input (bad file, argument or value; out of memory)
EXIT_ERROR = 2
#: exit status of an internal error (an exception pcad does not raise on purpose)
EXIT_INTERNAL = 1
#: the hint printed with an out-of-memory error
MEMORY_HINT = ("try a smaller input: fewer points (--points), a smaller --size or image_size, "
               "or fewer samples")


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file=None, line: str | None = None) -> None:
    """Print a warning as one line on stderr: ``pcad: warning: MESSAGE`` for a ``UserWarning``
    (:class:`~pcad.errors.PcadWarning` included), ``pcad: warning: MESSAGE (CATEGORY)`` for
    any other category. The command line's ``warnings.showwarning``.

    Example:
        >>> import contextlib, io
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     show_warning(UserWarning("two\\nlines"), UserWarning, "x.py", 1)
        >>> err.getvalue()
        'pcad: warning: two; lines\\n'
    """
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    if not issubclass(category, UserWarning):
        text = f"{text} ({category.__name__})"
    print(f"pcad: warning: {text}", file=sys.stderr if file is None else file)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from pcad.cli import (
        config,
        dataset_cmd,
        demo_cmd,
        info_cmd,
        predict_cmd,
        pretrain_cmd,
        sensitivity_cmd,
        synth_cmd,
        train_cmd,
        viz_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="pcad", description="3D industrial anomaly synthesis, datasets and detection.")
    parser.add_argument("--version", action="version", version=f"pcad {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="let errors raise, with their Python traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (info_cmd, synth_cmd, dataset_cmd, train_cmd, demo_cmd, viz_cmd,
                   sensitivity_cmd, pretrain_cmd, predict_cmd):
        module.register(sub)
    config.install(parser)  # --config / --print-config / --help-options, defaults in --help
    return parser


def _one_line(exc: BaseException, limit: int | None = None) -> str:
    """``exc``'s message on one line (its lines joined by ``"; "``), at most ``limit`` chars."""
    msg = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    msg = msg or exc.__class__.__name__
    return msg if limit is None or len(msg) <= limit else msg[:limit - 3] + "..."


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a ``MemoryError`` (numpy's included) and torch's out-of-memory errors.

    Example:
        >>> is_out_of_memory(MemoryError()), is_out_of_memory(RuntimeError(
        ...     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"))
        (True, True)
        >>> is_out_of_memory(ValueError("x"))
        False
    """
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "CUDA out of memory" in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module: 0, 1, 2 or 130)."""
    from pcad.cli import config

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # --config FILE fills the defaults; --help-options answers here
        early = config.prepare(parser, argv)
    except PcadError as exc:
        print(f"pcad: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if early is not None:
        return early
    args = parser.parse_args(argv)
    if getattr(args, "print_config", False):
        try:
            text = config.dump_config(config.effective_config(args, parser),
                                      args.config_format)
        except PcadError as exc:
            print(f"pcad: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        sys.stdout.write(text)
        return 0
    warnings.showwarning = show_warning  # one line per warning, the command goes on
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("pcad: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, (PcadError, OSError)):
            msg = _one_line(exc)
            if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
                msg = f"{exc.filename}: {msg}"
            status = EXIT_ERROR
        elif is_out_of_memory(exc):
            msg = f"out of memory ({_one_line(exc, 160)}); {MEMORY_HINT}"
            status = EXIT_ERROR
        else:
            msg = (f"internal error: {type(exc).__name__}: {_one_line(exc, 300)} (run with "
                   "--debug for the traceback)")
            status = EXIT_INTERNAL
        print(f"pcad: error: {msg}", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
