"""Typed exceptions of pcad.

Every error pcad raises on bad input derives from :class:`PcadError`, so a caller (and the CLI)
can catch one type. The input errors also derive from :class:`ValueError`, as the Python
convention for a wrong argument value expects.

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
