"""``timm:NAME`` / ``torchvision:NAME`` backbones with weights from a local checkpoint.

``create_backbone("timm:wide_resnet50_2", weights="wrn50.pth")`` builds the architecture of
that library with random initialization (``pretrained=False`` for timm, ``weights=None`` for
torchvision), loads the local checkpoint with ``strict=True`` (a mismatch raises
:class:`~pcad.errors.InvalidInputError` naming the keys) and returns a frozen
:class:`PluginBackbone` whose output is PatchCore's feature map: the outputs of the chosen
modules (``layer2`` + ``layer3`` for ResNet-like models), 3x3-averaged, resized to the finest
one and concatenated. For ``wide_resnet50_2`` that is 512 + 1024 = 1536 channels at stride 8.

Nothing is downloaded: weights are never requested from the libraries, and while the
architecture is built the Hugging Face hub is switched to offline mode, ``torch.hub`` points
to an empty temporary folder and its download functions raise. timm and torchvision are
imported only here, on demand; when they are missing a :class:`ModuleNotFoundError` says so.

Other sources (a model zoo of your own, tiny test architectures) plug in with
:func:`register_architecture_source`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from pcad.features.plugin import register_architecture_source, create_plugin_backbone
    >>> def build(name):
    ...     return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 8, 3, 2, 1))
    >>> register_architecture_source("doc", build)
    >>> sd = build("tiny").state_dict()
    >>> net = create_plugin_backbone("doc:tiny", weights=sd, layers=("0", "1"))
    >>> net.out_channels, net.stride
    (12, 2)
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pcad.errors import InvalidInputError, PcadError
from pcad.features.base import FeatureBackbone
from pcad.features.checkpoint import load_state_dict_strict, read_state_dict

__all__ = [
    "PluginBackbone",
    "create_plugin_backbone",
    "default_layers",
    "offline_guard",
    "register_architecture_source",
]

#: Input side of the dry run that measures channels and stride.
PROBE_SIZE = 224
_RESNET_LIKE = re.compile(r"^(wide_)?res(net|next)|^seresnext|^skresnet|^ecaresnet")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class DownloadRefused(PcadError):
    """A library tried to download weights while pcad built an architecture."""


class _StopForward(Exception):
    """Raised by the last hook: the rest of the network is not needed."""


@contextlib.contextmanager
def offline_guard() -> Iterator[None]:
    """Within the block: HF hub offline, ``torch.hub`` dir empty and downloads refused."""
    saved_env = {k: os.environ.get(k) for k in OFFLINE_ENV}
    saved_dir = torch.hub.get_dir()
    saved_fns = {n: getattr(torch.hub, n) for n in ("load_state_dict_from_url",
                                                    "download_url_to_file")}

    def refuse(url: Any, *args: Any, **kwargs: Any) -> Any:
        raise DownloadRefused(f"pcad never downloads weights (attempted: {url}); "
                              "pass a local checkpoint as weights=PATH")

    with tempfile.TemporaryDirectory(prefix="pcad-hub-") as empty:
        os.environ.update(OFFLINE_ENV)
        torch.hub.set_dir(empty)
        for n in saved_fns:
            setattr(torch.hub, n, refuse)
        try:
            yield
        finally:
            for n, fn in saved_fns.items():
                setattr(torch.hub, n, fn)
            torch.hub.set_dir(saved_dir)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _build_timm(name: str) -> nn.Module:
    try:
        import timm
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"timm:{name}: the 'timm' package is not installed (pip install timm); the "
            "architecture comes from timm, the weights from your local file"
        ) from exc
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:6]}*")[:10]
        raise InvalidInputError(f"timm:{name}: unknown timm model; similar names: {close}")
    return timm.create_model(name, pretrained=False)


def _build_torchvision(name: str) -> nn.Module:
    try:
        import torchvision
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"torchvision:{name}: the 'torchvision' package is not installed (pip install "
            "torchvision); the architecture comes from torchvision, the weights from your "
            "local file"
        ) from exc
    known = torchvision.models.list_models()
    if name not in known:
        close = [m for m in known if name[:6] in m][:10]
        raise InvalidInputError(f"torchvision:{name}: unknown torchvision model; "
                                f"similar names: {close}")
    return torchvision.models.get_model(name, weights=None)


_SOURCES: dict[str, tuple[Callable[[str], nn.Module], Callable[[str], tuple[str, ...]] | None]] = {
    "timm": (_build_timm, None),
    "torchvision": (_build_torchvision, None),
}


def register_architecture_source(
    prefix: str,
    builder: Callable[[str], nn.Module],
    default_layers: Callable[[str], tuple[str, ...]] | None = None,
) -> None:
    """Make ``"prefix:NAME"`` build ``builder(NAME)`` (randomly initialized, no download).

    ``default_layers(NAME)`` gives the module names used when the caller passes none.
    Registering an existing prefix replaces it.
    """
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise InvalidInputError(f"prefix: a non-empty name without ':' expected, got {prefix!r}")
    _SOURCES[prefix] = (builder, default_layers)


def default_layers(name: str) -> tuple[str, ...] | None:
    """PatchCore's layers for an architecture name: ``("layer2", "layer3")`` for ResNets."""
    return ("layer2", "layer3") if _RESNET_LIKE.search(name) else None


class PluginBackbone(FeatureBackbone):
    """A library model whose intermediate module outputs form the feature map.

    Args:
        model: the network (weights already loaded).
        layers: names of modules (as in ``model.named_modules()``) whose outputs are
            ``(B, C, h, w)`` maps; they are ordered finest first.
        name: for messages.
        aggregate_kernel: PatchCore's 3x3 local aggregation; 1 disables it.

    The forward pass stops as soon as every selected module has run.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], name: str,
                 aggregate_kernel: int = 3) -> None:
        super().__init__(aggregate_kernel)
        self.model = model
        self.name = name
        modules = dict(model.named_modules())
        layers = tuple(str(n) for n in layers)
        unknown = [n for n in layers if n not in modules or n == ""]
        if not layers or unknown:
            top = [n for n, _ in model.named_children()]
            raise InvalidInputError(f"{name}: unknown layers {unknown or '()'}; "
                                    f"top-level modules: {top}")
        self.layers = layers
        self.eval()
        with torch.no_grad():
            probe = self._run(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
        order = sorted(range(len(layers)), key=lambda i: -probe[i].shape[-1])
        self.layers = tuple(layers[i] for i in order)
        self.out_channels = int(sum(p.shape[1] for p in probe))
        finest = probe[order[0]]
        self.stride = max(1, round(PROBE_SIZE / finest.shape[-1]))

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        handles = []

        def hook_for(layer: str) -> Callable[..., None]:
            def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
                if not isinstance(out, torch.Tensor) or out.ndim != 4:
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
                    raise InvalidInputError(f"{self.name}: layer {layer!r} outputs {shape}, "
                                            "a (B, C, h, w) feature map is needed")
                captured[layer] = out
                if len(captured) == len(self.layers):
                    raise _StopForward

            return hook

        for layer in self.layers:
            handles.append(modules[layer].register_forward_hook(hook_for(layer)))
        try:
            self.model(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in self.layers if n not in captured]
        if missing:
            raise InvalidInputError(f"{self.name}: layers {missing} did not run in forward()")
        return [captured[n] for n in self.layers]

    def layer_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x)


def create_plugin_backbone(
    spec: str,
    weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    layers: Sequence[str] | None = None,
    aggregate_kernel: int = 3,
    random_init: bool = False,
) -> PluginBackbone:
    """Build ``"source:NAME"`` (``timm``, ``torchvision`` or a registered source) offline.

    Args:
        spec: ``"timm:wide_resnet50_2"``, ``"torchvision:resnet18"``...
        weights: local checkpoint path or state dict, loaded with ``strict=True``; required
            unless ``random_init`` (pcad never downloads).
        layers: module names; default ``("layer2", "layer3")`` for ResNet-like models.
        aggregate_kernel: see :class:`PluginBackbone`.
        random_init: allow ``weights=None`` (random features; for tests only).

    Raises:
        ModuleNotFoundError: the library is not installed.
        InvalidInputError: unknown source/model/layers, no weights, or weights that do not
            match the architecture (missing, unexpected, wrongly shaped keys are listed).
    """
    source, _, name = spec.partition(":")
    if source not in _SOURCES or not name:
        raise InvalidInputError(f"backbone {spec!r}: expected 'SOURCE:NAME' with SOURCE one of "
                                f"{sorted(_SOURCES)}")
    if weights is None and not random_init:
        raise InvalidInputError(f"{spec}: pass weights=PATH (a local checkpoint, e.g. "
                                "--weights wrn50.pth); pcad never downloads weights")
    builder, layer_rule = _SOURCES[source]
    with offline_guard():
        model = builder(name)
    if weights is not None:
        what = f"{spec} ({weights})" if not isinstance(weights, Mapping) else spec
        load_state_dict_strict(model, read_state_dict(weights), what)
    if layers is None:
        layers = (layer_rule or default_layers)(name)
        if layers is None:
            top = [n for n, _ in model.named_children()]
            raise InvalidInputError(f"{spec}: no default feature layers for this architecture; "
                                    f"pass layers=(...) from its modules {top}")
    return PluginBackbone(model, layers, spec, aggregate_kernel).freeze()
