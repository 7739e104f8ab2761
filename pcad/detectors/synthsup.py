"""``synthsup``: a segmentation head trained on synthetic defects made on the fly (DRAEM-style
supervision on frozen multimodal patch features).

Unsupervised detectors only ever see good parts. ``synthsup`` follows DRAEM and 3DSR instead:
each good training sample is turned into ``variants`` synthetic anomalies with exact masks by a
*defect source*, and a small network learns to segment them. The source is passed in (``fit(
samples, defect_source=...)``, or set as :attr:`SynthSupDetector.defect_source`); ``pcad train``
builds :class:`synth.supervision.DefectSource` from the options below, so ``pcad.detectors``
never imports ``synth``. Any callable ``source(rgb, xyz, rng) -> anomaly`` with ``anomaly.rgb``,
``.xyz``, ``.mask (H, W) bool`` and ``.defect`` (str) works.

- **Modes** (``mode``): ``"rgb+xyz"`` (modalities ``("rgb", "xyz")``), ``"rgb"`` for
  RGB-only datasets (modalities ``("rgb",)``; the source is called without xyz, so it makes RGB
  defects only) or ``"auto"`` (default): :meth:`fit` picks ``"rgb+xyz"`` when every training
  sample has xyz and ``"rgb"`` when none has (a mix is an error), and writes the mode it picked
  into ``config["mode"]`` (saved with the run; ``mode_auto`` in the run's state says it was
  picked). :attr:`modalities` is set per instance from the mode, so ``pcad train`` opens the
  dataset in the right modality (``"auto"``: :attr:`dataset_modality`, every modality the
  dataset has). An explicit ``mode="rgb+xyz"`` on an RGB-only dataset stays an error.
- **Features**, frozen, per patch of the ``(image_size / 8)`` square grid, computed once per
  training variant: RGB = :class:`~pcad.detectors.patches.RGBFeatures` (default
  ``effnet-lite0``, 152 channels); xyz = FPFH per patch
  (:func:`~pcad.detectors.patches.fpfh_patches`, 33) plus 6 depth statistics
  (:func:`depth_patches`: mean, std, min and max of the depth's high-pass residual in point
  spacings, and the fractions of measured and of foreground pixels, which see holes). The
  concatenated grid is standardised per channel with the training variants' mean / std
  (saved with the run); channels constant over the training variants are zeroed and the
  standardised values clipped to +-10 (``FEATURE_CLIP``), so a feature never seen in training
  (an FPFH bin that was always empty) cannot saturate the head.
- **Head** (:func:`segmentation_head`): ``layers`` 3x3 convolutions of ``hidden`` channels with
  GELU, then a 1x1 convolution to one logit per patch (bias initialised to a 1 % prior, as for
  focal loss). **Image head** (:class:`ImageHead`, ``image_head=True``): beside it, an MLP on
  the mean- and max-pooled last hidden features and the max and mean of the patch logits,
  trained with BCE on the variants' labels (1: the synthetic mask is not empty) on *detached*
  inputs, so the segmentation (and the map) is the same with or without it.
- **Training**: every good sample gives ``variants`` anomalies (the defect source's rng for
  variant ``v`` of sample ``i`` is ``numpy.random.default_rng([seed, i, v])``) plus itself as a
  negative. Logits are upsampled bilinearly to ``image_size`` and compared with the synthetic
  mask resized to the input size (area average, a soft target). ``loss``: ``"focal+dice"``
  (default: focal loss with gamma 2, DRAEM's segmentation loss, plus a soft Dice over the
  batch), ``"bce+dice"`` or ``"focal"``. Adam (``lr``), ``epochs`` passes over the shuffled
  variants in batches of ``batch_size`` images. Initialisation and shuffling are seeded, so a
  fit is reproducible on one device; the mean loss per epoch is in :attr:`history`.
  With a pool-aware source (``set_texture_images``), the training images are handed over
  first: ``graft`` defects blend crops of the *other* training images (DRAEM's DTD, offline).
- **Early stopping on synthetic anomalies only**: each good sample also gives
  ``val_variants`` (default 1) validation anomalies from another rng stream
  (``default_rng([seed, i, v, 1])``), never trained on. After each epoch their pixel AP
  (:func:`pixel_average_precision`, targets above one half positive) is recorded
  (:attr:`val_history`, saved as ``val_history``); the best epoch's weights are kept
  (:attr:`best_epoch`, saved) and training stops after ``patience`` epochs without a better AP
  (0: every epoch runs). ``val_variants=0``: no validation, the last epoch is kept. No real
  test or validation image is ever looked at.
- **Held-out types**: ``holdout_defects`` (saved with the run) is handed to the source; the
  detector also refuses a source that returns a held-out type. The types actually generated
  are counted (``defect_counts`` in the run's state, held-out types listed with 0), and
  ``pcad eval`` reports the held-out test types apart from the seen ones.
- **Map**: ``sigmoid(logit)`` per patch, upsampled and blurred
  (:func:`~pcad.detectors.base.upsample_map`, ``sigma`` 4 at 224). **Image score**
  (``image_score``): ``"map-max"`` (default) the map's maximum over the part in ``rgb+xyz``
  mode (:func:`~pcad.detectors.patches.foreground_max`, as pcad's other xyz detectors), the
  map's maximum in ``rgb`` mode; ``"max"``: the larger of that and the image head's
  probability (both are probabilities of the same synthetic anomalies, so the score never
  falls as the segmentation evidence rises). ``"map-max"`` is the default because the head did
  not win on the procedural parts (benchmarks/bench_synthsup_ablation.py: I-AUROC 0.896 vs
  0.906 with xyz, 0.589 vs 0.609 RGB-only).

Example:
    >>> from pcad.detectors import create_detector
    >>> create_detector("synthsup", mode="rgb").modalities
    ('rgb',)
    >>> det = create_detector("synthsup")  # mode "auto": xyz is used when the data has it
    >>> det.config["mode"], det.modalities, det.dataset_modality
    ('auto', ('rgb',), 'auto')
    >>> create_detector("synthsup", holdout_defects=["crack"]).defect_source_options()["holdout"]
    ['crack']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_int, check_positive
from pcad.detectors.base import (
    MODALITY_NAMES,
    RUN_FILE,
    Detector,
    check_run_stats,
    load_run_module,
    read_run_file,
    run_dims,
    upsample_map,
)
from pcad.detectors.defect_source import DefectSourceMixin
from pcad.detectors.patches import (
    PATCH_STRIDE,
    GridDeviceMixin,
    RGBFeatures,
    SampleForeground,
    check_device,
    check_image_size,
    check_sigma,
    foreground_max,
    fpfh_patches,
)
from pcad.detectors.registry import register_detector
from pcad.errors import InvalidInputError

STATE_FILE = "synthsup.pt"
DEPTH_DIM = 6
#: the most 3x3 conv layers of the segmentation head (``layers``)
MAX_LAYERS = 64
#: standardised features are clipped to +-this many training standard deviations
FEATURE_CLIP = 10.0


def segmentation_head(c_in: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` x (3x3 conv, GELU) of ``hidden`` channels, then a 1x1 conv to one logit;
    input ``(B, c_in, h, w)``, output ``(B, 1, h, w)``."""
    mods: list[nn.Module] = []
    c = c_in
    for _ in range(layers):
        mods += [nn.Conv2d(c, hidden, 3, padding=1), nn.GELU()]
        c = hidden
    mods.append(nn.Conv2d(c, 1, 1))
    return nn.Sequential(*mods)


class ImageHead(nn.Module):
    """Image-level head beside the segmentation head: the mean- and max-pooled ``(B, hidden,
    h, w)`` last hidden features of the segmentation head and the max and mean of its ``(B, 1,
    h, w)`` logits, through a two-layer MLP (``hidden`` units, GELU) to one logit per image
    ``(B,)``.

    Example:
        >>> import torch
        >>> ImageHead(8)(torch.zeros(2, 8, 4, 4), torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2])
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden + 2, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        flat = logits.flatten(1)
        z = torch.cat([feats.mean((2, 3)), feats.amax((2, 3)), flat.amax(1, keepdim=True),
                       flat.mean(1, keepdim=True)], dim=1)
        return self.mlp(z)[:, 0]


def pixel_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of ``scores`` (any shape) against boolean ``labels`` (same shape):
    the mean precision at the rank of each positive (ties broken by order); NaN without a
    positive.

    Example:
        >>> import torch
        >>> pixel_average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1]) > 0)
        0.8333333333333333
    """
    s, y = scores.flatten().float(), labels.flatten().bool()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(s, descending=True, stable=True)
    hits = y[order].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision * hits).sum() / n_pos)


def depth_patches(xyz: np.ndarray, image_size: int, grid: tuple[int, int], *,
                  foreground: SampleForeground | None = None) -> np.ndarray:
    """``(h * w, 6) float32`` depth statistics per patch of the cloud resized (nearest) to
    ``image_size``: mean, std, min and max of the residual ``z - smooth(z)`` over the part's
    pixels (``smooth``: a Gaussian of 8 pixels normalised over the part, the residual in units of
    the point spacing), the fraction of measured pixels and the fraction of part pixels
    (:func:`pcad.features.point_mask`). Zeros when the part has fewer than 5 pixels.
    ``foreground``: ``xyz``'s :class:`~pcad.detectors.patches.SampleForeground` for
    ``image_size`` (shares the background-plane fit), or None.

    Example:
        >>> import numpy as np
        >>> depth_patches(np.zeros((40, 40, 3), np.float32), 32, (4, 4)).shape
        (16, 6)
    """
    from scipy.ndimage import gaussian_filter

    from pcad.checks import valid_pixels
    from pcad.errors import DegenerateGeometryError
    from pcad.features import point_spacing

    if foreground is None:
        foreground = SampleForeground(xyz, image_size)
    elif foreground.xyz is not xyz or foreground.image_size != image_size:
        raise InvalidInputError("foreground: made for another cloud or input size")
    small = foreground.resized
    fg = foreground.resized_mask
    n = grid[0] * grid[1]
    if fg.sum() < 5:
        return np.zeros((n, DEPTH_DIM), np.float32)
    try:
        spacing = point_spacing(small, fg)
    except DegenerateGeometryError:
        return np.zeros((n, DEPTH_DIM), np.float32)
    w = fg.astype(np.float64)
    z = np.where(fg, small[..., 2].astype(np.float64), 0.0)
    smooth = gaussian_filter(z, PATCH_STRIDE) / np.maximum(gaussian_filter(w, PATCH_STRIDE),
                                                           1e-12)
    r = np.where(fg, (z - smooth) / spacing, 0.0)
    t = torch.from_numpy(np.stack([r * w, r * r * w, w, valid_pixels(small).astype(np.float64)]))
    pooled = F.adaptive_avg_pool2d(t[None].float(), grid)[0]
    frac = pooled[2].clamp_min(1e-12)
    mean = pooled[0] / frac
    std = (pooled[1] / frac - mean**2).clamp_min(0).sqrt()
    rt = torch.from_numpy(r).float()[None, None]
    fgt = torch.from_numpy(fg)[None, None]
    big = torch.tensor(1e9)
    rmax = F.adaptive_max_pool2d(torch.where(fgt, rt, -big), grid)[0, 0]
    rmin = -F.adaptive_max_pool2d(torch.where(fgt, -rt, -big), grid)[0, 0]
    has = pooled[2] > 0
    feats = torch.stack([mean, std, rmin, rmax]).where(has, torch.zeros(()))
    out = torch.cat([feats, pooled[3:4], pooled[2:3]])
    return out.permute(1, 2, 0).reshape(n, DEPTH_DIM).numpy().astype(np.float32)


def _focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    return ((1 - p_t) ** gamma * bce).mean()


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)


@register_detector("synthsup")
class SynthSupDetector(DefectSourceMixin, GridDeviceMixin, Detector):
    """Segmentation head trained on synthetic defects (see the module)."""

    modalities: tuple[str, ...] = ("rgb", "xyz")
    defaults = {"image_size": 224, "mode": "auto", "variants": 4, "epochs": 30, "lr": 1e-3,
                "batch_size": 8, "hidden": 64, "layers": 3, "loss": "focal+dice", "seed": 0,
                "sigma": 4.0, "holdout_defects": [], "defect_types": None, "textures": None,
                "rgb_backbone": "effnet-lite0", "weights": None, "device": "auto",
                "image_head": True, "image_score": "map-max", "val_variants": 1,
                "patience": 5}
    MODES = {"rgb+xyz": ("rgb", "xyz"), "rgb": ("rgb",)}
    LOSSES = ("focal+dice", "bce+dice", "focal")
    IMAGE_SCORES = ("map-max", "max")
    option_help: ClassVar[dict[str, str]] = {
        "mode": "auto (rgb+xyz when every training sample has xyz, else rgb), rgb+xyz or rgb",
        "variants": "synthetic anomalies made from each good training sample",
        "hidden": "channels of the segmentation head's convolutions",
        "layers": "3x3 convolutions of the segmentation head",
        "loss": "focal+dice, bce+dice or focal",
        "batch_size": "training batch size in samples",
        "holdout_defects": "synthetic defect types kept out of training",
        "defect_types": "synthetic defect types trained on; null: the default mix "
                        "(synth.supervision.DEFAULT_TYPES) but the held-out ones",
        "textures": "folder of texture images for RGB defects; null: procedural Perlin",
        "image_head": "train the image-level head beside the segmentation head",
        "image_score": "map-max (the map's maximum) or max (of it and the image head's "
                       "probability; needs image_head)",
        "val_variants": "synthetic validation anomalies per training sample (0: no early "
                        "stopping, the last epoch is kept)",
        "patience": "epochs without a better validation pixel AP before stopping (0: train "
                    "every epoch, keep the best)",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        size = check_image_size(c["image_size"])
        c["image_size"] = size
        if c["mode"] != "auto" and c["mode"] not in self.MODES:
            raise InvalidInputError(f"mode: expected one of {['auto', *sorted(self.MODES)]}, "
                                    f"got {c['mode']!r}")
        #: True when :meth:`fit` picked the mode (``mode="auto"``), False when it was set
        self.mode_auto = c["mode"] == "auto"
        # "auto" needs RGB; xyz is used when every training sample has it (see fit)
        self.modalities = self.MODES.get(c["mode"], ("rgb",))
        for key, low in (("variants", 1), ("epochs", 1), ("batch_size", 1), ("hidden", 1),
                         ("layers", 1), ("seed", 0), ("val_variants", 0), ("patience", 0)):
            c[key] = check_int(c[key], key, minimum=low)
        c["layers"] = check_int(c["layers"], "layers", maximum=MAX_LAYERS)
        c["lr"] = check_positive(c["lr"], "lr")
        c["sigma"] = check_sigma(c["sigma"])
        if c["loss"] not in self.LOSSES:
            raise InvalidInputError(f"loss: expected one of {self.LOSSES}, got {c['loss']!r}")
        c["device"] = check_device(c["device"])
        if not isinstance(c["image_head"], bool):
            raise InvalidInputError(f"image_head: expected true or false, got "
                                    f"{c['image_head']!r}")
        if c["image_score"] not in self.IMAGE_SCORES:
            raise InvalidInputError(f"image_score: expected one of {self.IMAGE_SCORES}, got "
                                    f"{c['image_score']!r}")
        if c["image_score"] == "max" and not c["image_head"]:
            raise InvalidInputError("image_score: 'max' needs image_head=true")
        self.check_source_options()
        self._rgb = RGBFeatures(c["rgb_backbone"], c["weights"], size)
        self.defect_source: Any = None
        self.head: nn.Sequential | None = None
        self.image_head: ImageHead | None = None
        #: per epoch with validation: ``{"epoch", "pixel_ap"}`` on the synthetic validation set
        self.val_history: list[dict[str, float]] = []
        #: the epoch (1-based) whose weights were kept; None without validation
        self.best_epoch: int | None = None
        self.stats: dict[str, torch.Tensor] = {}
        self.history: list[float] = []
        self.defect_counts: dict[str, int] = {}
        self.source_info: dict[str, Any] | None = None

    @property
    def dataset_modality(self) -> str:
        """The modality :func:`pcad.engine.open_split` reads the dataset in: ``"auto"`` (every
        modality the dataset has) while the mode is still to be picked, else the mode's."""
        return "auto" if self.config["mode"] == "auto" else "+".join(self.modalities)

    def pick_mode(self, samples: Sequence[Any]) -> str:
        """The mode ``"auto"`` stands for on these training samples: ``"rgb+xyz"`` when every
        one has xyz, ``"rgb"`` when none has; a mix is an error (which mode was meant?).

        Example:
            >>> from types import SimpleNamespace as S
            >>> from pcad.detectors import create_detector
            >>> create_detector("synthsup").pick_mode([S(rgb=1, xyz=None)] * 2)
            'rgb'
        """
        has = [getattr(s, "xyz", None) is not None for s in samples]
        if all(has):
            return "rgb+xyz"
        if not any(has):
            return "rgb"
        raise InvalidInputError(
            f"detector 'synthsup': {has.count(False)} of {len(has)} training samples have no "
            "xyz, the others have; mode='auto' cannot pick one: set -o mode=rgb (RGB only) or "
            "give every sample xyz")

    def check_sample(self, sample: Any, where: str) -> None:
        for m in self.modalities:
            if getattr(sample, m, None) is None:
                path = getattr(sample, "path", None)
                hint = " (mode='rgb' trains on RGB alone)" if m == "xyz" else ""
                raise InvalidInputError(
                    f"{where}: detector 'synthsup' in mode {self.config['mode']!r} needs "
                    f"{MODALITY_NAMES[m]}, but sample {path or '?'} has none{hint}")

    # --- features -------------------------------------------------------------------------

    def rgb_features(self, rgb: np.ndarray) -> np.ndarray:
        """``(h * w, C_rgb) float32`` backbone patch features."""
        self._rgb.device = self.device
        return self._rgb(rgb)

    def xyz_features(self, xyz: np.ndarray, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h * w, 33 + 6) float32``: FPFH and depth statistics per patch (one foreground
        for both; ``foreground``: ``xyz``'s :class:`~pcad.detectors.patches.SampleForeground`
        for ``image_size``, or None)."""
        size = self.config["image_size"]
        fore = SampleForeground(xyz, size) if foreground is None else foreground
        return np.concatenate([fpfh_patches(xyz, size, self.grid, foreground=fore),
                               depth_patches(xyz, size, self.grid, foreground=fore)], axis=1)

    def patch_features(self, sample: Any, foreground: SampleForeground | None = None
                       ) -> np.ndarray:
        """``(C, h, w) float32``: the concatenated, unstandardised feature grid."""
        return self._grid(self.rgb_features(sample.rgb),
                          self.xyz_features(sample.xyz, foreground)
                          if "xyz" in self.modalities else None)

    def _grid(self, rgb: np.ndarray, xyz: np.ndarray | None) -> np.ndarray:
        parts = [rgb] if xyz is None else [rgb, xyz]
        f = np.concatenate(parts, axis=1)
        return np.ascontiguousarray(f.T.reshape(f.shape[1], *self.grid), dtype=np.float32)

    def _target(self, mask: np.ndarray) -> np.ndarray:
        """The mask as a ``(S, S) uint8`` soft target (area average, 255 = anomalous)."""
        size = self.config["image_size"]
        t = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
        soft = F.interpolate(t, size=(size, size), mode="area")[0, 0]
        return (soft * 255).round().to(torch.uint8).numpy()

    # --- fit ------------------------------------------------------------------------------

    def _check_source(self, source: Any) -> None:
        if source is None:
            raise InvalidInputError(
                "detector 'synthsup': fit needs a defect source (fit(samples, defect_source=...)"
                "); `pcad train` builds one from synth; in Python pass "
                "synth.supervision.DefectSource(**det.defect_source_options())")
        if not callable(source):
            raise InvalidInputError(f"defect_source: expected a callable, got {type(source)}")
        held = set(self.config["holdout_defects"])
        src_hold = getattr(source, "holdout", None)
        if held and src_hold is not None and not held <= set(src_hold):
            raise InvalidInputError(f"defect_source: holds out {sorted(src_hold)}, but the "
                                    f"detector's holdout_defects are {sorted(held)}")

    def fit(self, samples, progress: bool = False, defect_source: Any = None
            ) -> SynthSupDetector:
        """Make ``variants`` synthetic anomalies per good sample with ``defect_source`` (or
        :attr:`defect_source`), extract their features and train the head."""
        from tqdm import tqdm

        source = defect_source if defect_source is not None else self.defect_source
        self._check_source(source)
        items = list(samples)
        if self.config["mode"] == "auto" and items:  # record the mode picked, saved with the run
            self.config["mode"] = self.pick_mode(items)
            self.modalities = self.MODES[self.config["mode"]]
        items = self._train_list(items)
        c = self.config
        use_xyz = "xyz" in self.modalities
        held = set(c["holdout_defects"])
        counts: Counter[str] = Counter({d: 0 for d in c["holdout_defects"]})
        for name in getattr(source, "active", None) or ():
            counts[name] += 0
        set_images = getattr(source, "set_texture_images", None)
        if callable(set_images):  # graft: crops of the other training images
            set_images([s.rgb for s in items])
        feats, targets, val_feats, val_targets = [], [], [], []
        zero = np.zeros((c["image_size"],) * 2, np.uint8)
        for i, s in enumerate(tqdm(items, disable=not progress, desc="synthsup variants",
                                   unit="sample")):
            rgb_f = self.rgb_features(s.rgb)
            xyz = s.xyz if use_xyz else None
            xyz_f = self.xyz_features(xyz) if use_xyz else None
            feats.append(self._grid(rgb_f, xyz_f))
            targets.append(zero)
            for v in range(c["variants"] + c["val_variants"]):
                val = v >= c["variants"]
                rng = np.random.default_rng([c["seed"], i, v - c["variants"], 1] if val
                                            else [c["seed"], i, v])
                a = source(s.rgb, xyz, rng)
                defect = str(a.defect)
                if defect in held:
                    raise InvalidInputError(f"defect_source: made held-out type {defect!r}")
                mask = np.asarray(a.mask, bool)
                if mask.shape != tuple(s.shape):
                    raise InvalidInputError(f"defect_source: mask {mask.shape} for a sample of "
                                            f"shape {tuple(s.shape)}")
                counts[defect] += 0 if val else 1
                a_rgb = rgb_f if np.array_equal(a.rgb, s.rgb) else self.rgb_features(a.rgb)
                a_xyz = None
                if use_xyz:
                    a_xyz = xyz_f if np.array_equal(a.xyz, xyz) else self.xyz_features(a.xyz)
                (val_feats if val else feats).append(self._grid(a_rgb, a_xyz))
                (val_targets if val else targets).append(self._target(mask))
        self.defect_counts = dict(sorted(counts.items()))
        describe = getattr(source, "describe", None)
        self.source_info = describe() if callable(describe) else None
        vf = (np.stack(val_feats), np.stack(val_targets)) if val_feats else (None, None)
        return self.fit_features(np.stack(feats), np.stack(targets), progress=progress,
                                 val_feats=vf[0], val_targets=vf[1])

    def fit_features(self, feats: np.ndarray, targets: np.ndarray,
                     progress: bool = False, val_feats: np.ndarray | None = None,
                     val_targets: np.ndarray | None = None) -> SynthSupDetector:
        """Fit the standardisation and the head on ``feats (N, C, h, w) float32`` and soft
        targets ``(N, S, S) uint8`` (255 = anomalous) with ``S = image_size`` (what :meth:`fit`
        does after making the variants). An image's label (image head) is ``target.max() >
        0``. ``val_feats (M, C, h, w)`` / ``val_targets (M, S, S)``: synthetic validation
        anomalies; after each epoch their pixel AP (targets > 127 positive) is recorded in
        :attr:`val_history`, the best epoch's weights are kept (:attr:`best_epoch`) and
        training stops after ``patience`` epochs without a better AP (0: never early)."""
        c = self.config
        if feats.ndim != 4 or feats.shape[2:] != self.grid or len(targets) != len(feats):
            raise InvalidInputError(f"synthsup: features {feats.shape} and targets "
                                    f"{targets.shape} do not pair up on the {self.grid} grid")
        total, total_sq = np.zeros(feats.shape[1]), np.zeros(feats.shape[1])
        for f in feats:  # per variant, in float64: no full-size float64 copy
            f64 = f.reshape(f.shape[0], -1).astype(np.float64)
            total += f64.sum(1)
            total_sq += (f64**2).sum(1)
        count = feats.shape[0] * feats.shape[2] * feats.shape[3]
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0) * count / max(count - 1, 1)
        std = np.sqrt(var)
        std[std < 1e-6] = np.inf  # constant on every training variant: no signal, zeroed
        self.stats = {"mean": torch.from_numpy(mean).float(),
                      "std": torch.from_numpy(std).float()}
        x_t = self._standardise(feats)
        y_t = torch.from_numpy(np.ascontiguousarray(targets, np.uint8)).to(self.device)
        labels = (y_t.flatten(1).amax(1) > 0).float()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.head = segmentation_head(x_t.shape[1], c["hidden"], c["layers"])
            self.image_head = ImageHead(c["hidden"]) if c["image_head"] else None
        with torch.no_grad():
            self.head[-1].bias.fill_(-float(np.log(99.0)))  # 1 % prior
        self.head.to(self.device).train()
        params = list(self.head.parameters())
        if self.image_head is not None:
            self.image_head.to(self.device).train()
            params += list(self.image_head.parameters())
        opt = torch.optim.Adam(params, lr=c["lr"])
        gen = torch.Generator().manual_seed(c["seed"])
        n, bs, size = len(x_t), c["batch_size"], c["image_size"]
        validate = val_feats is not None and len(val_feats) > 0
        if validate:
            if val_targets is None or len(val_targets) != len(val_feats) or \
                    val_feats.shape[1:] != feats.shape[1:]:
                raise InvalidInputError("synthsup: validation features and targets do not "
                                        "pair up with the training ones")
            xv = self._standardise(val_feats)
            yv = torch.from_numpy(np.ascontiguousarray(val_targets, np.uint8)) > 127
        track: dict[str, Any] = {"val": [], "best": None, "best_epoch": None}
        from pcad.detectors.training import EpochLoop, StateSlot

        state: dict[str, Any] = {"head": self.head, "optimizer": opt, "generator": gen}
        if self.image_head is not None:
            state["image_head"] = self.image_head
        if validate:
            state["validation"] = StateSlot(lambda: dict(track), track.update)
        loop = EpochLoop("synthsup training", c["epochs"], state, progress=progress,
                         identity={"n_items": n, "batch_size": bs,
                                   "n_val": len(val_feats) if validate else 0})
        for epoch in loop:
            self.head.train()
            order = torch.randperm(n, generator=gen).to(self.device)
            total = 0.0
            for i in range(0, n, bs):
                idx = order[i:i + bs]
                hidden = self.head[:-1](x_t[idx])
                grid = self.head[-1](hidden)
                logits = F.interpolate(grid, size=(size, size), mode="bilinear",
                                       align_corners=False)[:, 0]
                loss = self._loss(logits, y_t[idx].float() / 255.0)
                if self.image_head is not None:  # on detached inputs: the map is unchanged
                    loss = loss + F.binary_cross_entropy_with_logits(
                        self.image_head(hidden.detach(), grid.detach()), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            if validate:
                self._validate(xv, yv, epoch + 1, track)
            loop.end_epoch(total / n, steps=(epoch + 1) * math.ceil(n / bs), lr=c["lr"])
            if validate and c["patience"] and epoch + 1 - track["best_epoch"] >= c["patience"]:
                break
        self.history = loop.history
        self.val_history = [dict(r) for r in track["val"]]
        self.best_epoch = track["best_epoch"]
        if validate:
            self.head.load_state_dict(track["best"]["head"])
            if self.image_head is not None:
                self.image_head.load_state_dict(track["best"]["image_head"])
        self.head.eval()
        if self.image_head is not None:
            self.image_head.eval()
        self.fitted = True
        return self

    def _validate(self, xv: torch.Tensor, yv: torch.Tensor, epoch: int,
                  track: dict[str, Any]) -> None:
        """Pixel AP of the validation anomalies after ``epoch``; keeps the best weights."""
        size = self.config["image_size"]
        self.head.eval()
        with torch.no_grad():
            probs = torch.cat([torch.sigmoid(F.interpolate(
                self.head(xv[i:i + 16]), size=(size, size), mode="bilinear",
                align_corners=False)[:, 0]).cpu() for i in range(0, len(xv), 16)])
        ap = pixel_average_precision(probs, yv)
        track["val"] = [*track["val"], {"epoch": epoch, "pixel_ap": ap}]
        best = track["best_epoch"]
        if best is None or ap > track["val"][best - 1]["pixel_ap"]:
            track["best_epoch"] = epoch
            track["best"] = {"head": {k: v.detach().cpu().clone()
                                      for k, v in self.head.state_dict().items()}}
            if self.image_head is not None:
                track["best"]["image_head"] = {k: v.detach().cpu().clone() for k, v in
                                               self.image_head.state_dict().items()}
        self.head.train()

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kind = self.config["loss"]
        first = _focal(logits, target) if kind.startswith("focal") else \
            F.binary_cross_entropy_with_logits(logits, target)
        return first + _dice(logits, target) if kind.endswith("dice") else first

    def _standardise(self, feats: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(feats, np.float32)).to(self.device)
        mean = self.stats["mean"].to(self.device)[None, :, None, None]
        std = self.stats["std"].to(self.device)[None, :, None, None]
        return ((t - mean) / std).clamp(-FEATURE_CLIP, FEATURE_CLIP)

    # --- predict --------------------------------------------------------------------------

    def patch_scores(self, sample: Any, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h, w) float32`` anomaly probabilities of the patches."""
        return self._scores(sample, foreground)[0]

    def _scores(self, sample: Any, foreground: SampleForeground | None = None
                ) -> tuple[np.ndarray, float | None]:
        """The patch probabilities and the image head's probability (None without a head)."""
        self._require_fit()
        feats = self.patch_features(sample, foreground)
        self.check_width(feats.shape[0], self.head[0].in_channels, f"its network ({STATE_FILE})")
        x = self._standardise(feats[None])
        with torch.no_grad():
            hidden = self.head[:-1](x)
            grid = self.head[-1](hidden)
            head = None if self.image_head is None else \
                float(torch.sigmoid(self.image_head(hidden, grid))[0])
        return torch.sigmoid(grid)[0, 0].cpu().numpy().astype(np.float32), head

    def image_head_score(self, sample: Any) -> float:
        """The image head's anomaly probability of ``sample`` (in ``[0, 1]``)."""
        if self.image_head is None:
            raise InvalidInputError("synthsup: this detector has no image head "
                                    "(image_head=false)")
        return float(self._scores(sample)[1])

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        self._require_fit()
        self.check_sample(sample, "test sample")
        if "xyz" not in self.modalities:
            grid, head = self._scores(sample)
            amap = upsample_map(grid, sample.shape, self.config["sigma"])
            return self._image_score(float(amap.max()), head), amap
        # one foreground for the point features and the image score
        fore = SampleForeground(sample.xyz, self.config["image_size"])
        grid, head = self._scores(sample, fore)
        amap = upsample_map(grid, sample.shape, self.config["sigma"])
        return self._image_score(foreground_max(amap, sample.xyz, foreground=fore), head), amap

    def _image_score(self, map_score: float, head: float | None) -> float:
        """``map-max``: the map's maximum; ``max``: the larger of it and the head's probability
        (both are probabilities of the synthetic anomalies, so never below the map's)."""
        if self.config["image_score"] == "max" and head is not None:
            return max(float(map_score), head)
        return float(map_score)

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        from pcad.io import atomic_save

        state = {"head": {k: v.cpu() for k, v in self.head.state_dict().items()},
                 "stats": {k: v.cpu() for k, v in self.stats.items()}}
        if self.image_head is not None:
            state["image_head"] = {k: v.cpu() for k, v in self.image_head.state_dict().items()}
        atomic_save(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _state_record(self) -> dict[str, Any]:
        return {"in_channels": self.head[0].in_channels, "history": self.history,
                "defect_counts": self.defect_counts, "defect_source": self.source_info,
                "mode_auto": self.mode_auto, "val_history": self.val_history,
                "best_epoch": self.best_epoch}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / STATE_FILE
        (c_in,) = run_dims(state, ("in_channels",), str(folder / RUN_FILE))
        saved = read_run_file(folder, STATE_FILE, "synthsup", ("head", "stats"))
        self.head = load_run_module(
            lambda: segmentation_head(c_in, self.config["hidden"], self.config["layers"]),
            saved["head"], f"{path} ['head']")
        self.head.to(self.device).eval()
        self.stats = check_run_stats(saved["stats"], {"mean": c_in, "std": c_in}, str(path))
        self.history = [float(x) for x in state.get("history", [])]
        self.defect_counts = {str(k): int(v) for k, v in state.get("defect_counts", {}).items()}
        self.source_info = state.get("defect_source")
        self.mode_auto = bool(state.get("mode_auto", False))
        self.val_history = [dict(r) for r in state.get("val_history", [])]
        self.best_epoch = state.get("best_epoch")
        self.image_head = None
        if self.config["image_head"] and "image_head" not in saved:  # a run from before it
            if self.config["image_score"] != "map-max":
                raise InvalidInputError(f"{path}: no image head, but image_score="
                                        f"{self.config['image_score']!r} needs one")
            self.config["image_head"] = False
        if self.config["image_head"]:
            self.image_head = load_run_module(lambda: ImageHead(self.config["hidden"]),
                                              saved["image_head"], f"{path} ['image_head']")
            self.image_head.to(self.device).eval()
