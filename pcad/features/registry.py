"""Registry of feature extractors, in the style of timm's ``create_model``/``list_models``.

Two kinds of extractors are registered under a name:

- ``"rgb"``: an image backbone, a :class:`~pcad.features.base.FeatureBackbone`
  (``nn.Module``) mapping an image to a ``(B, C, h, w)`` feature map
  (built in: ``effnet-lite0``; ``dino-vitb8`` with the official DINO checkpoint as a local
  path);
- ``"points"``: a callable mapping an organized cloud ``(H, W, 3)`` to an ``(H, W, C)``
  feature map (built in: ``fpfh``, ``raw_xyz``).

The registry is a :class:`pcad.registry.Registry` (one API and clash policy with the defect
and detector registries): :func:`backbone_info` returns its entry. Besides registered names,
:func:`create_backbone` accepts ``"timm:NAME"`` and ``"torchvision:NAME"`` (see
:mod:`pcad.features.plugin`): the architecture comes from that library, the weights from the
local file given as ``weights``; nothing is downloaded.

Example:
    >>> from pcad.features import backbone_info, create_backbone, list_backbones
    >>> {"effnet-lite0", "fpfh", "raw_xyz"} <= set(list_backbones())
    True
    >>> list_backbones("raw_*", kind="points")
    ['raw_xyz']
    >>> create_backbone("raw_xyz").out_channels
    3
    >>> backbone_info("fpfh").info["kind"]
    'points'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pcad.errors import InvalidInputError
from pcad.registry import Entry, Registry

__all__ = [
    "backbone_info",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]

KINDS = ("rgb", "points")
# The modules whose import registers the built-in extractors are loaded on first use.
_BACKBONES: Registry[Callable[..., Any]] = Registry(
    "backbone", builtins=("pcad.features.effnet", "pcad.features.fpfh", "pcad.features.vit"))

F = TypeVar("F", bound=Callable[..., Any])


def register_backbone(name: str, kind: str = "rgb", description: str = "", *,
                      overwrite: bool = False) -> Callable[[F], F]:
    """Decorator registering ``factory(weights=None, **kw)`` under ``name`` with the info
    ``kind`` (``"rgb"`` or ``"points"``) and ``description`` (default: the first line of the
    factory's docstring).

    Raises:
        InvalidInputError: ``name`` is taken by another factory (unless ``overwrite``),
            contains ``":"`` (reserved for plug-ins), or ``kind`` is not ``"rgb"``/``"points"``.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidInputError(f"name: a non-empty name without ':' expected, got {name!r}")
    if kind not in KINDS:
        raise InvalidInputError(f"kind: expected one of {KINDS}, got {kind!r}")
    info: dict[str, Any] = {"kind": kind}
    if description:
        info["description"] = description
    return _BACKBONES.register(name, overwrite=overwrite, **info)


def list_backbones(pattern: str | None = None, kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell ``pattern`` and a ``kind``.

    Plug-in names (``timm:*``, ``torchvision:*``) are not listed: any model of those
    libraries is accepted by :func:`create_backbone`.
    """
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"kind: expected one of {KINDS} or None, got {kind!r}")
    return _BACKBONES.names(pattern) if kind is None else _BACKBONES.names(pattern, kind=kind)


def backbone_info(name: str) -> Entry[Callable[..., Any]]:
    """The registry entry of ``name``: ``obj`` is the factory, ``info["kind"]`` its kind,
    ``description`` its one-line description. Unknown names raise InvalidInputError naming the
    known ones."""
    if not isinstance(name, str) or name not in _BACKBONES:
        known = list_backbones()
        close = [n for n in known if name[:4] in n] if isinstance(name, str) else []
        hint = f" (did you mean {close}?)" if close else ""
        raise InvalidInputError(
            f"backbone {name!r} is not registered{hint}; known: {known}, or "
            "'timm:NAME' / 'torchvision:NAME' with weights=PATH"
        )
    return _BACKBONES.info(name)


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
    return backbone_info(name).obj(weights=weights, **kwargs)
