"""Registry of feature extractors, in the style of timm's ``create_model``/``list_models``.

Two kinds of extractors are registered under a name:

- ``"rgb"``: an image backbone, a :class:`~pcad.features.base.FeatureBackbone`
  (``nn.Module``) mapping an image to a ``(B, C, h, w)`` feature map
  (built in: ``effnet-lite0``; ``dino-vitb8`` with the official DINO checkpoint as a local
  path);
- ``"points"``: a callable mapping an organized cloud ``(H, W, 3)`` to an ``(H, W, C)``
  feature map (built in: ``fpfh``, ``raw_xyz``).

Besides registered names, :func:`create_backbone` accepts ``"timm:NAME"`` and
``"torchvision:NAME"`` (see :mod:`pcad.features.plugin`): the architecture comes from that
library, the weights from the local file given as ``weights``; nothing is downloaded.

Example:
    >>> from pcad.features import create_backbone, list_backbones
    >>> {"effnet-lite0", "fpfh", "raw_xyz"} <= set(list_backbones())
    True
    >>> list_backbones("raw_*", kind="points")
    ['raw_xyz']
    >>> create_backbone("raw_xyz").out_channels
    3
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pcad.errors import InvalidInputError

__all__ = [
    "BackboneInfo",
    "backbone_info",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]

KINDS = ("rgb", "points")
# Modules whose import registers the built-in extractors.
_BUILTIN_MODULES = ("pcad.features.effnet", "pcad.features.fpfh", "pcad.features.vit")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BackboneInfo:
    """A registry entry: ``factory(weights=None, **kw)`` builds the extractor."""

    name: str
    kind: str
    factory: Callable[..., Any]
    description: str = ""


_REGISTRY: dict[str, BackboneInfo] = {}


def _ident(factory: Callable[..., Any]) -> tuple[str, str]:
    return (getattr(factory, "__module__", "?"), getattr(factory, "__qualname__", "?"))


def register_backbone(name: str, kind: str = "rgb", description: str = "") -> Callable[[F], F]:
    """Decorator registering ``factory(weights=None, **kw)`` under ``name``.

    Raises:
        InvalidInputError: ``name`` is taken by another factory, contains ``":"``
            (reserved for plug-ins), or ``kind`` is not ``"rgb"``/``"points"``.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidInputError(f"name: a non-empty name without ':' expected, got {name!r}")
    if kind not in KINDS:
        raise InvalidInputError(f"kind: expected one of {KINDS}, got {kind!r}")

    def decorate(factory: F) -> F:
        old = _REGISTRY.get(name)
        if old is not None and _ident(old.factory) != _ident(factory):  # reloads are fine
            raise InvalidInputError(f"backbone {name!r} is already registered by "
                                    f"{'.'.join(_ident(old.factory))}")
        doc = description or (factory.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = BackboneInfo(name, kind, factory, doc)
        return factory

    return decorate


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_backbones(pattern: str | None = None, kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell ``pattern`` and a ``kind``.

    Plug-in names (``timm:*``, ``torchvision:*``) are not listed: any model of those
    libraries is accepted by :func:`create_backbone`.
    """
    _load_builtins()
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"kind: expected one of {KINDS} or None, got {kind!r}")
    return sorted(
        n for n, info in _REGISTRY.items()
        if (pattern is None or fnmatch.fnmatchcase(n, pattern))
        and (kind is None or info.kind == kind)
    )


def backbone_info(name: str) -> BackboneInfo:
    """The registry entry of ``name``; raises InvalidInputError naming the known ones."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name[:4]}*") if isinstance(name, str) else []
        hint = f" (did you mean {close}?)" if close else ""
        raise InvalidInputError(
            f"backbone {name!r} is not registered{hint}; known: {sorted(_REGISTRY)}, or "
            "'timm:NAME' / 'torchvision:NAME' with weights=PATH"
        ) from None


def create_backbone(name: str, weights: Any = None, **kwargs: Any) -> Any:
    """Build the extractor registered as ``name`` (or a ``"timm:NAME"``/``"torchvision:NAME"``
    plug-in) with ``weights`` (a local path or a state dict) and factory keyword arguments.

    RGB backbones come back frozen (eval mode, no gradients).
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"name: expected a string, got {type(name).__name__}")
    if ":" in name:
        from pcad.features.plugin import create_plugin_backbone

        return create_plugin_backbone(name, weights=weights, **kwargs)
    return backbone_info(name).factory(weights=weights, **kwargs)
