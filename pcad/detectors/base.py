"""The detector contract: :class:`Detector`, its run folder (:data:`RUN_FILE`), its capabilities.

A detector is fitted on good samples and maps a test sample to an image score and an anomaly
map at the sample's own resolution:

    det.fit(train_samples); score, amap = det.predict(sample)   # amap: (H, W) float32

Samples are :class:`pcad.data.Sample` objects (``rgb (H, W, 3) uint8`` and/or
``xyz (H, W, 3) float32``). A detector declares, as class attributes, what the engine needs to
know about it:

- ``modalities``: the inputs it needs (``"rgb"``, ``"xyz"``); a sample without one of them is a
  clear error;
- ``supports_distributed``: it trains under ``torchrun`` (:mod:`pcad.distributed`);
- ``needs_defect_source``: it trains on synthetic defects made by a defect source that
  :func:`pcad.engine.train` builds from ``synth`` (``synthsup``).

:func:`upsample_map` turns a patch-score grid into a map at the sample's resolution.

Reading a run folder never trusts it: :func:`read_run_record` checks ``detector.json``,
:func:`read_run_file` reads a detector's torch file with the weights-only loader,
:func:`load_run_module` checks its weights against the network (built first on the meta
device, so sizes the file does not hold allocate nothing) and :func:`check_run_stats` its
standardisation statistics. A damaged, truncated or edited run raises
:class:`~pcad.errors.FileFormatError` naming the file and what is wrong, never another
exception; :meth:`Detector.load` turns what a detector's ``_load_state`` raises on a bad
``state`` record into one as well.

Example:
    >>> from pcad.detectors.base import Detector
    >>> Detector.supports_distributed, Detector.needs_defect_source, Detector.modalities
    (False, False, ())
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from pcad.errors import FileFormatError, InvalidInputError, PcadError
from pcad.io import atomic_write

__all__ = ["COMMON_OPTION_HELP", "MAX_RECORD_BYTES", "MODALITY_NAMES", "RUN_FILE", "Detector",
           "check_run_number", "check_run_stats", "load_run_module", "read_run_file",
           "read_run_record", "run_dims", "upsample_map", "upsample_maps"]

MODALITY_NAMES = {"rgb": "RGB images", "xyz": "organized point clouds (xyz)"}
#: the one-line meaning of the options several detectors share (:meth:`Detector.options`)
COMMON_OPTION_HELP: dict[str, str] = {
    "image_size": "input side in pixels, a multiple of 8 (the patch grid is image_size / 8)",
    "coreset_ratio": "fraction of the training patches the greedy coreset keeps in the bank",
    "seed": "seed of every random choice (coreset, initialisation, shuffling)",
    "sigma": "Gaussian blur of the upsampled anomaly map (pixels at 224)",
    "n_reweight": "nearest bank neighbours of PatchCore's re-weighted image score",
    "image_score": "how the image score is read from the patches or the map",
    "rgb_backbone": "RGB feature extractor: effnet-lite0, dino-vitb8, timm:NAME, "
                    "torchvision:NAME",
    "weights": "local checkpoint of the RGB backbone (never downloaded); null: the shipped one",
    "point_backbone": "point features: fpfh (no weights) or pointmae",
    "calibration": "nearest (each patch's error, discrepancy or cost divided by the fitted "
                   "model's on the nearest training patch: pcad.detectors.error_calibration) "
                   "or none (the raw one)",
    "calibration_size": "training patches the calibration keeps: a greedy coreset of this "
                        "many, each with its nearest patches' mean error; null: all",
    "fpfh_neighbours": "most neighbours of each point's FPFH histogram, within 10 point "
                       "spacings (BTF's: 100)",
    "point_weights": "local Point-MAE checkpoint; null: the small one shipped with pcad",
    "num_group": "Point-MAE groups per cloud; null: the checkpoint's",
    "group_size": "points per Point-MAE group; null: the checkpoint's",
    "device": "where features and networks run: auto, cpu, cuda or cuda:N",
    "epochs": "training epochs",
    "lr": "peak learning rate",
    "batch_size": "training batch size",
    "warmup_epochs": "epochs of linear learning-rate warm-up before the cosine decay",
    "weight_decay": "AdamW weight decay",
    "mlp_ratio": "hidden width of the MLPs as a multiple of the feature width",
    "head_dim": "output width of the contrastive projection heads (dropped after training)",
}
#: the record of a saved run (written last by :meth:`Detector.save`)
RUN_FILE = "detector.json"
#: the largest ``detector.json`` read (a record is a few kB)
MAX_RECORD_BYTES = 16 * 2**20


def _json_kind(value: Any) -> str:
    """How a JSON value reads in a message: ``null``, ``a list``, ``the string 'x'``..."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (bool, int, float)):
        return f"the value {value!r}"
    return {list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def read_run_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record (``detector.json``) of the run folder ``path``, checked.

    Returns:
        the JSON object, with ``detector`` (a name), ``config`` (an object: the detector's
        options) and ``state`` (an object; ``{}`` when absent).

    Raises:
        InvalidInputError: ``path`` holds no ``detector.json``.
        FileFormatError: it is larger than :data:`MAX_RECORD_BYTES`, not JSON, or lacks one of
            the keys above (the message names the file and the key).

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> run = Path(tempfile.mkdtemp())
        >>> _ = (run / RUN_FILE).write_text(json.dumps({"detector": "fpfh", "config": None}))
        >>> try:
        ...     read_run_record(run)
        ... except FileFormatError as exc:
        ...     print(str(exc).replace(str(run), "RUN"))
        RUN/detector.json: 'config' must be an object (the detector's options), got null
    """
    folder = Path(path)
    meta = folder / RUN_FILE
    if not meta.is_file():
        raise InvalidInputError(f"{folder}: not a detector run (no {RUN_FILE})")
    if meta.stat().st_size > MAX_RECORD_BYTES:
        raise FileFormatError(f"{meta}: unreadable detector record ({meta.stat().st_size} "
                              f"bytes; a record is at most {MAX_RECORD_BYTES})")
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FileFormatError(f"{meta}: unreadable detector record (not JSON: {exc})") from None
    if not isinstance(record, dict):
        raise FileFormatError(f"{meta}: unreadable detector record (expected a JSON object, "
                              f"got {_json_kind(record)})")
    name = record.get("detector")
    if not isinstance(name, str) or not name:
        raise FileFormatError(f"{meta}: unreadable detector record ('detector' must be a "
                              f"detector name, got {_json_kind(name)})")
    for key, what, default in (("config", "the detector's options", None),
                               ("state", "the fitted state", {})):
        value = record.get(key, default)
        if value is None and default is None and key not in record:
            raise FileFormatError(f"{meta}: no {key!r} ({what})")
        if not isinstance(value, dict):
            raise FileFormatError(f"{meta}: {key!r} must be an object ({what}), got "
                                  f"{_json_kind(value)}")
        record[key] = value
    return record


def read_run_file(folder: Path, filename: str, detector: str,
                  keys: tuple[str, ...] = ()) -> Any:
    """The object a detector saved with ``torch.save`` as ``folder/filename``, read by the
    weights-only loader (:func:`pcad.features.checkpoint.load_checkpoint`).

    ``keys``: the object must be a dict holding them.

    Raises:
        InvalidInputError: the file is missing (an incomplete run of ``detector``).
        FileFormatError: truncated, empty, not a torch file, a pickle of other objects, or a
            value without ``keys`` (the message names the file).
    """
    from pcad.features.checkpoint import load_checkpoint

    path = folder / filename
    if not path.is_file():
        raise InvalidInputError(f"{folder}: incomplete {detector} run (no {filename})")
    obj, _ = load_checkpoint(path)
    if keys and not (isinstance(obj, dict) and all(k in obj for k in keys)):
        found = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict)
                 else f"a {type(obj).__name__}")
        raise FileFormatError(f"{path}: expected a dict with keys {list(keys)}, found {found}")
    return obj


def load_run_module(build: Callable[[], nn.Module], state_dict: Any, source: str) -> nn.Module:
    """``build()`` loaded with the weights ``state_dict`` read from a run file.

    The weights are checked first against ``build()`` made on the meta device (no memory):
    sizes in ``detector.json`` that the weights do not have allocate nothing.

    Args:
        build: makes the network (with the sizes the run record gives).
        state_dict: ``{name: tensor}`` from :func:`read_run_file`.
        source: names the file (and key) in messages.

    Raises:
        FileFormatError: not a state dict; missing, unexpected or wrongly shaped keys, or NaN
            or infinite weights (the first few keys of each kind).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = load_run_module(lambda: nn.Linear(3, 2), nn.Linear(3, 2).state_dict(), "x.pt")
        >>> try:  # a record claiming 10^6 inputs: the check allocates nothing
        ...     load_run_module(lambda: nn.Linear(10**6, 2), net.state_dict(), "x.pt")
        ... except FileFormatError as exc:
        ...     print(str(exc).splitlines()[1])
          shape mismatch (1): weight: checkpoint (2, 3) vs model (2, 1000000)
    """
    from pcad.features.checkpoint import check_state_dict

    if not (isinstance(state_dict, Mapping) and state_dict and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items())):
        raise FileFormatError(f"{source}: expected a state dict (parameter names to tensors), "
                              f"found a {type(state_dict).__name__}")
    try:
        with torch.device("meta"):
            shell = build()
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        raise FileFormatError(f"{source}: the network sizes in {RUN_FILE} make no network "
                              f"({exc})") from None
    try:
        check_state_dict(shell, state_dict, source)
    except InvalidInputError as exc:
        raise FileFormatError(str(exc)) from None
    module = build()
    module.load_state_dict(state_dict, strict=True)
    return module


def check_run_stats(stats: Any, widths: dict[str, int], source: str) -> dict[str, torch.Tensor]:
    """Standardisation statistics read from a run file, checked: ``{name: (width,) tensor}``
    for each ``name, width`` of ``widths``, finite (names ending in ``std``: positive, and
    ``+inf`` allowed: a feature without signal).

    Raises:
        FileFormatError: not a dict, a name missing, a wrong shape or value (names ``source``).

    Example:
        >>> import torch
        >>> check_run_stats({"std": torch.ones(3)}, {"std": 3}, "x.pt")["std"].shape
        torch.Size([3])
    """
    if not isinstance(stats, Mapping):
        raise FileFormatError(f"{source}: 'stats' must be a dict of tensors, found a "
                              f"{type(stats).__name__}")
    out = {}
    for name, width in widths.items():
        t = stats.get(name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (width,) \
                or not t.is_floating_point():
            what = (f"a {tuple(t.shape)} {t.dtype} tensor" if isinstance(t, torch.Tensor)
                    else "nothing" if t is None else f"a {type(t).__name__}")
            raise FileFormatError(f"{source}: stats {name!r} must be a ({width},) float tensor "
                                  f"(the network's width), found {what}")
        if name.endswith("std"):  # +inf: a feature without signal (zeroed), as fit makes it
            if bool(torch.isnan(t).any()) or bool((t <= 0).any()):
                raise FileFormatError(f"{source}: stats {name!r} has NaN or non-positive values")
        elif not bool(torch.isfinite(t).all()):
            raise FileFormatError(f"{source}: stats {name!r} has NaN or infinite values")
        out[name] = t.float()
    return out


def check_run_number(value: Any, name: str, source: str, *, positive: bool = False) -> float:
    """A finite number read from a run record (``positive``: also > 0).

    Raises:
        FileFormatError: anything else (the message names ``source`` and ``name``).

    Example:
        >>> check_run_number(2, "scales.rgb", "detector.json", positive=True)
        2.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise FileFormatError(f"{source}: {name} must be a finite"
                              + (" positive" if positive else "")
                              + f" number, got {_json_kind(value)}")
    return float(value)


class Detector:
    """Base class: configuration, modality checks, persistence, capabilities.

    Subclasses set :attr:`name` (by :func:`~pcad.detectors.registry.register_detector`),
    :attr:`modalities`, :attr:`defaults` (every option with its default) and the capability
    flags, and implement ``fit``, ``predict`` and the ``_save_state`` / ``_load_state`` pair.
    """

    name: ClassVar[str] = "base"
    #: the inputs a sample must have (``"rgb"``, ``"xyz"``)
    modalities: ClassVar[tuple[str, ...]] = ()
    #: every option and its default (an unknown option is an error)
    defaults: ClassVar[dict[str, Any]] = {}
    #: a one-line meaning of each option this class adds or means differently; an option a
    #: class does not describe takes its parent's line or :data:`COMMON_OPTION_HELP`'s
    option_help: ClassVar[dict[str, str]] = {}
    #: options added after runs were saved without them: a run file whose config lacks one
    #: loads with the value given here (what it was fitted with), not today's default
    legacy_options: ClassVar[dict[str, Any]] = {}
    #: trains under torchrun: sharded features, data-parallel steps (pcad.distributed)
    supports_distributed: ClassVar[bool] = False
    #: ``fit`` needs a defect source (``fit(samples, defect_source=...)``; pcad train builds
    #: one from synth)
    needs_defect_source: ClassVar[bool] = False

    @classmethod
    def options(cls) -> list[tuple[str, Any, str]]:
        """Every option as ``(name, default, meaning)``, in the order of :attr:`defaults`
        (``pcad train --detector NAME --help-options``); the meaning is the nearest
        :attr:`option_help` line along the class hierarchy, else :data:`COMMON_OPTION_HELP`'s,
        else ``""``.

        Example:
            >>> from pcad.detectors import detector_info
            >>> name, default, meaning = detector_info("fpfh").obj.options()[0]
            >>> name, default, meaning.split(" (")[0]
            ('image_size', 224, 'input side in pixels, a multiple of 8')
        """
        def meaning(key: str) -> str:
            for klass in cls.__mro__:
                text = vars(klass).get("option_help", {}).get(key)
                if text:
                    return text
            return COMMON_OPTION_HELP.get(key, "")

        return [(key, value, meaning(key)) for key, value in cls.defaults.items()]

    def __init__(self, **config: Any) -> None:
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise InvalidInputError(f"detector {self.name!r}: unknown option(s) {unknown}; "
                                    f"accepted: {sorted(self.defaults)}")
        # paths as strings, so that the config can be saved as JSON
        config = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in config.items()}
        self.config: dict[str, Any] = {**self.defaults, **config}
        self.fitted = False
        #: the run folder this detector was loaded from (None: fitted here)
        self.run_path: Path | None = None

    # --- checks ---------------------------------------------------------------------------

    def check_sample(self, sample: Any, where: str) -> None:
        """Raise when ``sample`` lacks a modality this detector needs."""
        for m in self.modalities:
            if getattr(sample, m, None) is None:
                path = getattr(sample, "path", None)
                raise InvalidInputError(
                    f"{where}: detector {self.name!r} needs {MODALITY_NAMES[m]}, but sample "
                    f"{path or '?'} has none (an RGB-only dataset works with patchcore-rgb)")

    def _train_list(self, samples: Iterable[Any]) -> list[Any]:
        items = list(samples)
        if not items:
            raise InvalidInputError(f"detector {self.name!r}: the training set is empty")
        for s in items:
            self.check_sample(s, "training set")
        return items

    # --- interface ------------------------------------------------------------------------

    def fit(self, samples: Iterable[Any], progress: bool = False) -> Detector:  # pragma: no cover
        raise NotImplementedError

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def predict_batch(self, samples: Sequence[Any]) -> list[tuple[float, np.ndarray]]:
        """``[predict(s) for s in samples]``: each sample's ``(score, (H, W) float32 map)``.

        The default loops over :meth:`predict`; a detector that batches its backbone, memory
        bank search and map post-processing on the device overrides it with the same results
        (bitwise on the CPU; see each override). An empty list gives ``[]``.

        Example:
            >>> from pcad.detectors import create_detector
            >>> create_detector("fpfh").predict_batch([])
            []
        """
        return [self.predict(s) for s in self.batch_items(samples, check=False)]

    def batch_items(self, samples: Sequence[Any], check: bool = True) -> list[Any]:
        """The samples of a :meth:`predict_batch` call as a list, after the checks
        :meth:`predict` makes (a fitted detector; with ``check`` each sample's modalities,
        :meth:`check_sample`); ``[]`` for none, without the fit check."""
        items = list(samples)
        if items:
            self._require_fit()
            for s in items if check else ():
                self.check_sample(s, "test sample")
        return items

    def _require_fit(self) -> None:
        if not self.fitted:
            raise InvalidInputError(f"detector {self.name!r}: call fit() (or load a run) first")

    def check_width(self, got: int, expected: int, what: str) -> None:
        """Raise unless features of ``got`` columns fit ``what`` (a bank, a network) made for
        ``expected``: a run made with other features or by another detector.

        Example:
            >>> from pcad.detectors import create_detector
            >>> det = create_detector("fpfh")
            >>> try:
            ...     det.check_width(185, 33, "its memory bank (bank.npz)")
            ... except InvalidInputError as exc:
            ...     print(str(exc)[:68])
            detector 'fpfh': its memory bank (bank.npz) holds 33-column features
        """
        if got != expected:
            who = (f"run {self.run_path}" if self.run_path is not None
                   else f"detector {self.name!r}")
            raise InvalidInputError(
                f"{who}: {what} holds {expected}-column features, but detector {self.name!r} "
                f"with this run's options makes {got}-column ones: the run was made with other "
                "features or by another detector (a file copied from another run?)")

    # --- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted detector into the folder ``path`` (record written last)."""
        self._require_fit()
        try:  # serialize first: nothing is written for a config that cannot be saved
            text = json.dumps({"detector": self.name, "config": self.config,
                               "state": self._state_record()}, indent=2)
        except TypeError as exc:
            bad = [k for k, v in self.config.items() if not isinstance(
                v, (str, int, float, bool, type(None), list, dict))]
            raise InvalidInputError(
                f"detector {self.name!r}: option(s) {bad} cannot be saved ({exc}); pass "
                "weights as a file path to save the run") from None
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_state(folder)
        with atomic_write(folder / RUN_FILE, "w") as fh:
            fh.write(text)

    @classmethod
    def saved_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A saved run's (or export's) ``config`` with the options it predates filled in with
        what it was fitted with (:attr:`legacy_options`).

        Example:
            >>> from pcad.detectors import detector_info
            >>> detector_info("btf").obj.saved_config({"image_size": 64})["fpfh_neighbours"]
            100
        """
        return {**cls.legacy_options, **config}

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | None = None) -> Detector:
        """The run saved by :meth:`save` in the folder ``path`` (made by this class).

        ``device`` (a detector with a ``device`` option): where the loaded detector computes,
        whatever device it was trained on (``pcad eval --device``); None keeps the saved
        option, or ``"auto"`` with a warning when that device is not present here (a run
        trained on ``cuda:1`` loads on a machine without it).

        Raises:
            InvalidInputError: not a run, a run of another detector, or a file missing.
            FileFormatError: a damaged or edited run file (:func:`read_run_record`): the
                message names the file and what is wrong.
        """
        folder = Path(path)
        meta = folder / RUN_FILE
        record = read_run_record(folder)
        if record["detector"] != cls.name:
            raise InvalidInputError(f"{folder}: a run of detector {record['detector']!r}, "
                                    f"not {cls.name!r}")
        config = _placed(cls, cls.saved_config(record["config"]), device, folder)
        try:
            det = cls(**config)
        except (PcadError, TypeError, ValueError, KeyError, AttributeError,
                ArithmeticError) as exc:
            raise FileFormatError(f"{meta}: bad 'config' ({_reason(exc)})") from exc
        det.run_path = folder
        try:
            det._load_state(folder, record["state"])
        except PcadError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError,
                ArithmeticError) as exc:
            # what _load_state reads from the record itself; files raise PcadError above
            raise FileFormatError(f"{meta}: bad 'state' record ({_reason(exc)})") from exc
        det.fitted = True
        return det

    def _save_state(self, folder: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def _state_record(self) -> dict[str, Any]:
        return {}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError


def _placed(cls: type[Detector], config: dict[str, Any], device: str | None,
            folder: Path) -> dict[str, Any]:
    """``config`` with the device a run is loaded on (see :meth:`Detector.load`)."""
    from pcad.detectors.patches import check_device, resolve_device

    if "device" not in cls.defaults:
        return config
    if device is not None:
        return {**config, "device": check_device(device)}
    saved = config.get("device", "auto")
    try:
        check_device(saved)
    except InvalidInputError:
        return config  # a misspelt device: the detector's check makes it a bad 'config'
    try:
        resolve_device(saved)
    except InvalidInputError as exc:
        import warnings

        from pcad.errors import PcadWarning

        warnings.warn(PcadWarning(f"{folder}: {exc}; the run is loaded with device 'auto'"),
                      stacklevel=4)
        return {**config, "device": "auto"}
    return config


def run_dims(state: dict[str, Any], keys: tuple[str, ...], source: str) -> tuple[int, ...]:
    """The network widths ``keys`` of a run's ``state`` record: positive ints.

    Raises:
        FileFormatError: a key missing or not a positive int (names ``source``).

    Example:
        >>> run_dims({"rgb_dim": 152, "xyz_dim": 33}, ("rgb_dim", "xyz_dim"), "detector.json")
        (152, 33)
    """
    out = []
    for key in keys:
        v = state.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise FileFormatError(f"{source}: 'state.{key}' must be a positive int (a network "
                                  f"width), got {_json_kind(v)}")
        out.append(v)
    return tuple(out)


def _reason(exc: BaseException) -> str:
    """One line saying what ``exc`` found: ``no 'rgb_dim'`` for a KeyError, else its text."""
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r}" if exc.args else "a key is missing"
    if isinstance(exc, PcadError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def upsample_map(patch_scores: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A ``(h, w)`` patch-score grid to an ``(H, W) float32`` map: bilinear + Gaussian blur
    (PatchCore's ``sigma = 4`` at 224 pixels, scaled to the output size).

    Example:
        >>> import numpy as np
        >>> upsample_map(np.ones((4, 4)), (30, 40), sigma=4.0).shape
        (30, 40)
    """
    t = torch.from_numpy(np.ascontiguousarray(patch_scores, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    if sigma > 0:
        up = gaussian_filter(up, sigma=sigma * max(shape) / 224.0, mode="nearest")
    return up.astype(np.float32)


def _gaussian_kernel(sd: float) -> torch.Tensor:
    """scipy's ``gaussian_filter`` kernel (``truncate=4``), ``(2r + 1,) float64``."""
    radius = int(4.0 * sd + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sd) ** 2)
    return k / k.sum()


def blur_maps(maps: torch.Tensor, sd: float) -> torch.Tensor:
    """``(B, H, W)`` maps blurred by a Gaussian of ``sd`` pixels on their device: scipy's
    ``gaussian_filter(mode="nearest", truncate=4)`` as two separable float32 convolutions
    (equal to scipy's within float32 rounding, about 1e-6 relative: scipy sums in float64).

    Example:
        >>> import torch
        >>> blur_maps(torch.ones(2, 5, 6), 1.5).shape
        torch.Size([2, 5, 6])
    """
    k = _gaussian_kernel(sd).to(device=maps.device, dtype=torch.float32)
    r = (k.numel() - 1) // 2
    x = maps[:, None].float()
    h, w = x.shape[-2:]
    # replicate padding ("nearest"), repeated beyond a side shorter than the kernel radius
    x = F.pad(x, (0, 0, r, r), mode="replicate") if r < h else torch.cat(
        [x[..., :1, :].expand(-1, -1, r, -1), x, x[..., -1:, :].expand(-1, -1, r, -1)], 2)
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    x = F.pad(x, (r, r, 0, 0), mode="replicate") if r < w else torch.cat(
        [x[..., :1].expand(-1, -1, -1, r), x, x[..., -1:].expand(-1, -1, -1, r)], 3)
    return F.conv2d(x, k.view(1, 1, 1, -1))[:, 0]


def upsample_maps(patch_scores: Sequence[Any], shapes: Sequence[tuple[int, int]], sigma: float,
                  device: torch.device | str = "cpu", batched: bool | None = None
                  ) -> list[np.ndarray]:
    """:func:`upsample_map` of several ``(h, w)`` grids (numpy arrays or tensors), each to its
    own ``(H, W)`` shape, as ``(H, W) float32`` numpy maps.

    ``batched`` None: on CUDA, the grids of one output shape are upsampled and blurred
    together on the device (:func:`blur_maps`: within float32 rounding of scipy's blur, about
    1e-6 relative); on the CPU each map is exactly :func:`upsample_map`'s (scipy blur).
    True / False force either path.

    Example:
        >>> import numpy as np
        >>> [m.shape for m in upsample_maps([np.ones((4, 4))] * 2, [(30, 40), (8, 8)], 4.0)]
        [(30, 40), (8, 8)]
    """
    dev = torch.device(device)
    if len(patch_scores) != len(shapes):
        raise InvalidInputError(f"upsample_maps: {len(patch_scores)} grids but {len(shapes)} "
                                "shapes")
    if not (dev.type == "cuda" if batched is None else batched):
        return [upsample_map(p.cpu().numpy() if isinstance(p, torch.Tensor) else p,
                             tuple(s), sigma) for p, s in zip(patch_scores, shapes, strict=True)]
    out: list[np.ndarray | None] = [None] * len(shapes)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault((int(s[0]), int(s[1])), []).append(i)
    for shape, idx in groups.items():
        t = torch.stack([torch.as_tensor(patch_scores[i], dtype=torch.float32).to(dev)
                         for i in idx])[:, None]
        up = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[:, 0]
        if sigma > 0:
            up = blur_maps(up, sigma * max(shape) / 224.0)
        for i, m in zip(idx, up.cpu().numpy(), strict=True):
            out[i] = np.ascontiguousarray(m, dtype=np.float32)
    return out  # type: ignore[return-value]
