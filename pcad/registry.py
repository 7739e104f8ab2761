"""One registry type for every pluggable family: detectors, defects, backbones.

Each family builds its public functions (``register_X``, ``create_X``, ``list_X``, ``X_info``)
on a :class:`Registry`, so all of them answer the same way:

- ``register(name, **info)`` is a decorator; the name must be a non-empty string.
- One clash policy: registering a name that another object already holds raises
  :class:`~pcad.errors.InvalidInputError` naming both, unless ``overwrite=True`` is passed.
  Registering the same object again (same module and qualified name, as a module reload does)
  is allowed.
- ``get(name)`` of an unknown name raises :class:`~pcad.errors.InvalidInputError` listing the
  known names.
- ``names(pattern, **info)`` lists registered names, sorted, filtered by a shell pattern and by
  equality on info fields.
- Built-ins are registered by importing the modules named in ``builtins`` on first use.

Example:
    >>> from pcad.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square", sides=4)
    ... def square():
    ...     return "square"
    >>> shapes.names(), shapes.get("square")(), shapes.info("square").info["sides"]
    (['square'], 'square', 4)
    >>> shapes.register("square")(lambda: "other")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pcad.errors.InvalidInputError: shape 'square' is already registered by ...; pass overwrite=...
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pcad.errors import InvalidInputError

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object: its ``name``, the object ``obj`` and free-form ``info``."""

    name: str
    obj: T
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The ``description`` info, else the first line of the object's docstring."""
        text = self.info.get("description") or (getattr(self.obj, "__doc__", None) or "")
        return text.strip().split("\n")[0]


def _ident(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry(Generic[T]):
    """Named objects of one ``kind`` (the word used in error messages).

    Args:
        kind: what is registered, e.g. ``"detector"``.
        builtins: modules whose import registers the built-in entries; imported on first use.
    """

    def __init__(self, kind: str, builtins: Iterable[str] = ()) -> None:
        self.kind = kind
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins
        self._entries: dict[str, Entry[T]] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)

    def register(self, name: str, *, overwrite: bool = False,
                 **info: Any) -> Callable[[T], T]:
        """Decorator registering its argument under ``name`` with ``info``; returns it unchanged.

        Raises:
            InvalidInputError: ``name`` is not a non-empty string, or is held by another object
                and ``overwrite`` is false.
        """
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"{self.kind} name: a non-empty string expected, got {name!r}")

        def decorate(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None and not overwrite and _ident(old.obj) != _ident(obj):
                raise InvalidInputError(
                    f"{self.kind} {name!r} is already registered by {_ident(old.obj)}; "
                    "pass overwrite=True to replace it")
            self._entries[name] = Entry(name, obj, dict(info))
            return obj

        return decorate

    def names(self, pattern: str | None = None, **info: Any) -> list[str]:
        """Registered names, sorted; ``pattern`` is a shell glob, ``info`` keys must be equal."""
        self._load()
        return sorted(
            n for n, e in self._entries.items()
            if (pattern is None or fnmatch.fnmatchcase(n, pattern))
            and all(e.info.get(k) == v for k, v in info.items())
        )

    def info(self, name: str) -> Entry[T]:
        """The entry of ``name``; an unknown name raises InvalidInputError listing the known."""
        self._load()
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise InvalidInputError(
                f"{self.kind}: unknown {name!r}; expected one of {self.names()}")
        return entry

    def get(self, name: str) -> T:
        """The object registered as ``name`` (see :meth:`info` for errors)."""
        return self.info(name).obj

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries
