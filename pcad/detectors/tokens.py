"""Patch features chosen by a ``modality`` option, shared by the detectors that learn on them
(``vitad``, ``uniad``, ``pbas``, ``prototypes-ot``).

- ``modality``: ``"rgb"`` (the RGB backbone's patch features), ``"xyz"`` (the point
  features), ``"both"`` (the two concatenated per patch) or ``"auto"``: ``"both"`` when every
  training sample has a cloud, else ``"rgb"``; :meth:`ModalityPatchesMixin.resolve_modality`
  records the choice at fit, so a saved run holds it.
- :class:`ModalityPatchesMixin` gives such a detector its ``dataset_modality`` (what
  :func:`pcad.engine.open_split` reads), the per-modality features of a sample and the
  ``predict`` every one of them had written out: the detector's ``patch_scores(sample,
  foreground)`` upsampled and blurred, the image score the map's maximum over the part
  (``image_score="foreground-max"``) or over the whole map (``"max"``).

Example:
    >>> MODALITIES["both"], MODALITIES["auto"]
    (('rgb', 'xyz'), ('rgb',))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pcad.checks import check_choice, check_int, check_positive
from pcad.detectors.base import upsample_map
from pcad.detectors.patches import (
    FPFH_NEIGHBOURS,
    FPFHOption,
    MultimodalFeatures,
    SampleForeground,
    check_device,
    check_image_size,
    check_sigma,
    foreground_max,
)

__all__ = ["FPFH_DEFAULTS", "IMAGE_SCORE_HELP", "MODALITIES", "MODALITY_CHOICES",
           "ModalityPatchesMixin", "STD_FLOOR", "channel_stats", "patch_grid", "standardise"]

MODALITY_CHOICES = ("auto", "rgb", "xyz", "both")
#: the ``fpfh_neighbours`` default of the family: BTF's 100 (with 200, the m3dm / lsfa / cfm
#: default, pbas tied on the built-in parts: README)
FPFH_DEFAULTS = {"fpfh_neighbours": FPFH_NEIGHBOURS}
#: the inputs a sample must have per modality ("auto": an image; a cloud is used when present)
MODALITIES = {"auto": ("rgb",), "rgb": ("rgb",), "xyz": ("xyz",), "both": ("rgb", "xyz")}
#: the ``image_score`` line of their ``option_help``
IMAGE_SCORE_HELP = ("foreground-max (map maximum over the part; whole map without a cloud) or "
                    "max (whole map)")


#: the std floor (x the reference channel std, :func:`channel_stats`) of the detectors that learn
#: on standardised patch features with an L2 error or a discriminator (pbas, hetnet, the vitad
#: family but vitad itself)
STD_FLOOR = 0.1


def channel_stats(flat: Any, floor: float = 0.0, reference: str = "median"
                  ) -> tuple[Any, Any]:
    """Per-channel ``(C,) float32`` torch mean and std of ``(m, C)`` training rows (computed in
    float64; std with ``ddof=1``, 1 where not finite, e.g. one row), the std floored at
    ``floor`` x the ``reference`` channel std (``"median"``, or ``"rms"``: the root mean
    square, positive while any channel varies, as for FPFH alone, whose median bin is often
    constant) and at 1e-6: a channel (near) constant in training, as most FPFH bins on a smooth
    part, would otherwise turn a tiny change at test time into a huge standardised value.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 0.0, 1.0], [2.0, 2.0, 1.0], [4.0, 4.0, 1.0]])
        >>> mean, std = channel_stats(x, floor=0.1)
        >>> mean.tolist(), [round(v, 4) for v in std.tolist()]
        ([2.0, 2.0, 1.0], [2.0, 2.0, 0.2])
        >>> channel_stats(x)[1].tolist()[2]  # no floor: 1e-6
        9.999999974752427e-07
        >>> y = torch.tensor([[0.0, 1.0, 1.0], [3.0, 1.0, 1.0]])  # median channel std 0
        >>> [round(v, 4) for v in channel_stats(y, 0.1, "rms")[1].tolist()]
        [2.1213, 0.1225, 0.1225]
    """
    import torch

    x = torch.as_tensor(flat).to(torch.float64)
    std = x.std(0).nan_to_num(1.0)
    check_choice(reference, "channel_stats reference", ("median", "rms"))
    ref = std.median() if reference == "median" else std.square().mean().sqrt()
    limit = max(floor * float(ref), 1e-6)
    return x.mean(0).float(), std.clamp_min(limit).float()


def standardise(x: Any, mean: Any, std: Any, device: Any = "cpu") -> Any:
    """``(..., C) float32`` torch tensor on ``device``: ``(x - mean) / std`` of rows ``x`` (numpy
    or torch) with the per-channel statistics of :func:`channel_stats`.

    Example:
        >>> import torch
        >>> standardise(np.array([[1.0, 3.0]]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0]))
        tensor([[0., 1.]])
    """
    import torch

    t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    return (t - mean.to(device)) / std.to(device)


def patch_grid(scores: Any, fg: np.ndarray | None, grid: tuple[int, int]) -> np.ndarray:
    """``(h, w) float32`` map of ``(h * w,)`` patch scores (a numpy array or a torch tensor on
    any device), 0 where ``fg`` (the point features' foreground, None: everywhere) is off.

    Example:
        >>> patch_grid(np.arange(4.0), np.array([True, False, True, True]), (2, 2)).tolist()
        [[0.0, 0.0], [2.0, 3.0]]
    """
    if not isinstance(scores, np.ndarray):
        scores = scores.detach().cpu().numpy()
    out = np.array(scores, dtype=np.float32)
    if fg is not None:
        out[~fg] = 0.0
    return out.reshape(grid)


class ModalityPatchesMixin(FPFHOption):
    """Modality handling and ``predict`` for a detector with ``config`` (``modality``,
    ``image_size``, ``sigma``, ``image_score``, ``fpfh_neighbours``: BTF's 100 by default,
    :data:`FPFH_DEFAULTS`), a
    :class:`~pcad.detectors.patches.MultimodalFeatures` as ``_features``, a ``device`` and a
    ``patch_scores(sample, foreground) -> (h, w) float32`` method."""

    def check_modality_options(self) -> int:
        """Check the options every such detector has (``image_size``, ``modality``, ``seed``,
        ``sigma``, ``image_score`` among ``SCORES``, ``device``, ``fpfh_neighbours``; errors
        name the option), set
        :attr:`modalities` and the feature extractor; return the image size. Called first by
        the detector's ``__init__``."""
        c = self.config
        c["image_size"] = size = check_image_size(c["image_size"])
        c["modality"] = check_choice(c["modality"], "modality", MODALITY_CHOICES)
        c["seed"] = check_int(c["seed"], "seed", minimum=0)
        c["sigma"] = check_sigma(c["sigma"])
        c["image_score"] = check_choice(c["image_score"], "image_score", self.SCORES)
        c["device"] = check_device(c["device"])
        self.check_fpfh_option()
        self.modalities = MODALITIES[c["modality"]]
        self._features = MultimodalFeatures(
            self.name, size, c["rgb_backbone"], c["weights"], c["point_backbone"],
            c["point_weights"], c["num_group"], c["group_size"], device="cpu",
            fpfh_neighbours=c["fpfh_neighbours"])
        return size

    def check_training_options(self) -> None:
        """Check the options of :func:`pcad.detectors.training.run_training` (``epochs``,
        ``batch_size``, ``lr``, ``weight_decay``, ``warmup_epochs``)."""
        c = self.config
        c["epochs"] = check_int(c["epochs"], "epochs", minimum=1)
        c["batch_size"] = check_int(c["batch_size"], "batch_size", minimum=1)
        c["lr"] = check_positive(c["lr"], "lr")
        c["weight_decay"] = check_positive(c["weight_decay"], "weight_decay", allow_zero=True)
        c["warmup_epochs"] = check_positive(c["warmup_epochs"], "warmup_epochs",
                                            allow_zero=True)

    @property
    def dataset_modality(self) -> str:
        """What :func:`pcad.engine.open_split` reads: every modality the dataset has while
        ``modality`` is ``"auto"``, else the modality's inputs."""
        return "auto" if self.config["modality"] == "auto" else "+".join(self.modalities)

    def resolve_modality(self, items: Sequence[Any]) -> None:
        """At fit: ``"auto"`` becomes ``"both"`` when every training sample has a cloud, else
        ``"rgb"`` (recorded in the config, so the run saves it)."""
        if self.config["modality"] == "auto":
            has_xyz = all(getattr(x, "xyz", None) is not None for x in items)
            self.config["modality"] = "both" if has_xyz else "rgb"
        self.modalities = MODALITIES[self.config["modality"]]

    def modality_parts(self, sample: Any, foreground: SampleForeground | None = None,
                       where: str = "test sample"
                       ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``(rgb (n, C_rgb) or None, pts (n, C_pts) or None, fg (n,) bool or None)``: the
        patch features ``modality`` uses (``"auto"`` before a fit: the per-sample rule) and
        the point features' foreground patches (None without point features)."""
        self._features.device = self.device  # resolved on use: a run loads anywhere
        mode = self.config["modality"]
        if mode == "auto":
            mode = "both" if getattr(sample, "xyz", None) is not None else "rgb"
        if mode == "rgb":
            return self._features.rgb(sample.rgb), None, None
        if foreground is None:
            foreground = SampleForeground(sample.xyz, self.config["image_size"])
        if mode == "xyz":
            pts, fg = self._features.points_checked(sample, where, foreground)
            return None, pts, fg
        rgb, pts, fg = self._features(sample, where, foreground)
        return rgb, pts, np.asarray(fg, dtype=bool).reshape(-1)

    def modality_features(self, sample: Any, foreground: SampleForeground | None = None,
                          where: str = "test sample") -> tuple[np.ndarray, np.ndarray | None]:
        """``(features (n, C) float32, fg (n,) bool or None)``: :meth:`modality_parts`
        concatenated per patch."""
        rgb, pts, fg = self.modality_parts(sample, foreground, where)
        parts = [p for p in (rgb, pts) if p is not None]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)), fg

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        self._require_fit()
        self.check_sample(sample, "test sample")
        xyz = getattr(sample, "xyz", None)
        fore = None if xyz is None else SampleForeground(xyz, self.config["image_size"])
        amap = upsample_map(self.patch_scores(sample, fore if "xyz" in self.modalities
                                              else None),
                            sample.shape, self.config["sigma"])
        if self.config["image_score"] == "foreground-max":
            return foreground_max(amap, xyz, foreground=fore), amap
        return float(amap.max()), amap
