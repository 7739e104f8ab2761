"""Typed exceptions of pcad.

Every error pcad raises on bad input derives from :class:`PcadError`, so a caller (and the CLI)
can catch one type. The input errors also derive from :class:`ValueError`, as the Python
convention for a wrong argument value expects. Input that is accepted but probably gives a
wrong result raises no error: it is reported by a :class:`PcadWarning`.

Example:
    >>> from pcad.errors import InvalidInputError
    >>> try:
    ...     raise InvalidInputError("points: expected shape (N, 3), got (5, 2)")
    ... except ValueError as exc:
    ...     print(exc)
    points: expected shape (N, 3), got (5, 2)
"""


class PcadError(Exception):
    """Base class of every error pcad raises on purpose."""


class InvalidInputError(PcadError, ValueError):
    """An argument has a wrong shape, dtype, value or range (NaN, negative, empty...)."""


class DegenerateGeometryError(InvalidInputError):
    """Geometry without extent: a single point, a collinear cloud, a zero-area mesh."""


class FileFormatError(PcadError, ValueError):
    """A file has an unknown extension, cannot be parsed, or is truncated."""


class PcadWarning(UserWarning):
    """Input pcad accepts but that probably gives a wrong result: gt masks with several
    foreground levels, mostly-anomalous masks, all-zero xyz, tiny images, an incomplete
    dataset, a run evaluated on another category, skipped incomplete samples.

    Issued with :func:`warnings.warn`; the ``pcad`` command prints each one as a single
    ``pcad: warning: ...`` line on stderr and goes on (exit status 0). Turn them into errors
    with ``warnings.simplefilter("error", PcadWarning)`` (or ``python -W error::...``).
    """
