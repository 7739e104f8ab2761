"""Synthetic anomalies made on the fly from good samples: the defect generator of supervised
detectors (``synthsup``).

:class:`DefectSource` turns one good sample (RGB and/or organized cloud) into a
:class:`SyntheticAnomaly` with its exact pixel mask. ``pcad.detectors`` never imports ``synth``:
``pcad train`` (:func:`pcad.engine.train`) builds a source and hands it to the detector, and a
user can pass one to ``fit(samples, defect_source=...)``.

Defect types (``DEFECT_TYPES``, in drawing order; every name is in the defect registry,
:func:`synth.defects.list_defects`, where the RGB types are registered by this module with
``kind="appearance"`` and ``made_by="source"``). A source without ``types`` draws from
``DEFAULT_TYPES`` (every type: each RGB addition raised synthsup's I-AUROC on the procedural
parts, with xyz and RGB-only, benchmarks/bench_synthsup_ablation.py):

- **geometric** ``bump``, ``dent``, ``crack``, ``hole``, ``perlin``: :func:`synth.apply_to_scan`
  on the part's foreground (measured pixels off the background plane, the same set as
  :func:`pcad.features.point_mask`), centre drawn on the foreground, sizes drawn per call from
  ``ranges`` (fractions of the part's bounding-box diagonal, :data:`DEFAULT_RANGES`). The mask
  is synth's ground-truth rule (:mod:`synth.result`): a pixel is anomalous iff its displacement
  is at least ``threshold_abs`` or it was removed, so pixels moved by less than the threshold
  change but stay normal. ``perlin`` is 3D-PNAS's field in a ``ball`` or DRAEM-style
  ``threshold`` region, signed or not (drawn). When the sample has RGB, the image is
  **re-shaded inside the mask** (``shade=True``): each pixel is multiplied by the ratio of a
  Lambertian shading (ambient 0.3, one light drawn within 45 degrees of the viewing axis) with
  the new and the old normals, clipped to ``[0.3, 2]``, and removed pixels (holes) are darkened
  by a factor drawn in ``[0.15, 0.45]``; so the colour changes only where the mask is. With
  ``shade=False`` the RGB image is returned unchanged (as ``pcad dataset inject`` does).
- **RGB** ``texture``, ``colour`` (DRAEM): a thresholded Perlin mask, restricted to the
  foreground when the sample has xyz. The noise is ``pnoise2`` (range about +-1, as DRAEM's
  ``rand_perlin_2d`` times sqrt 2) with ``2**kx`` and ``2**ky`` lattice cells along the image's
  columns and rows, ``kx, ky`` drawn independently in ``perlin_exponents`` (DRAEM: 0-5, i.e.
  1-32 cells; pcad's default 0-4 because the detectors see stride-8 patches, and a 32-cell blob
  is smaller than one patch at 224 pixels), the image coordinates rotated by an angle drawn in
  +-90 degrees (DRAEM's ``Affine(rotate=(-90, 90))``), mask ``noise > threshold`` (0.5).

  ``texture``: DRAEM's blend ``img (1 - m) + (1 - b) tex m + b img m`` with ``b`` drawn in
  ``blend`` (DRAEM: ``[0, 0.8)``). ``tex`` is a random crop (30-100 % of the shorter side,
  random 90-degree rotation and flip, random gamma in ``[0.5, 2]``) of one of the images in
  ``textures`` (a folder of ``.png`` / ``.jpg``, such as DTD), resized to the sample; without
  ``textures``, a procedural texture: one seeded fBm Perlin field per channel (4 octaves,
  ``2**k`` cells per image side, ``k`` in 1-4) around a random base colour.

  ``colour``: inside the mask, a brightness gain drawn in ``[0.55, 0.8]`` or ``[1.25, 1.6]``, a
  hue rotation about the grey axis by 30-180 degrees, then a tint towards a random colour
  (15-40 %), so that even a grey part changes visibly.

  ``graft``: the texture blend with a crop (same augmentation) of *another good image of the
  category* (the pool given by ``texture_images`` / :meth:`DefectSource.set_texture_images`;
  ``synthsup`` hands over its training images; an image equal to the sample is skipped; with
  no pool, a crop of the sample itself): DRAEM's DTD textures, offline.

  ``scratch`` (:func:`scratch_mask`): 1-3 thin quadratic Bezier strokes (length 15-50 % of the
  shorter side, width 1-4 pixels at 224, scaled above), starting on the foreground, pulled
  (weight 0.6-0.95) towards a dark (0-0.2) or a bright (0.8-1) grey; the mask is the stroke
  pixels that changed.

  ``blur``: a Gaussian blur (sigma 1.5-4 pixels at 224, scaled above) inside the Perlin mask;
  the mask keeps the pixels whose value changed by at least ``BLUR_MIN_CHANGE`` grey levels (a
  blur of a flat area is no defect).

  RGB types leave xyz unchanged (the mask is not restricted when the cloud has fewer than
  ``MIN_FOREGROUND`` foreground pixels); they need RGB, geometric types need xyz: a sample gets
  a type its modalities allow (RGB-only data gets the RGB types only).

Rules:

- ``holdout`` removes types from the draw: a held-out type is never attempted (not even on a
  retry). Unknown names, and registered names the source does not make (``contamination``,
  ``combined``), raise :class:`~pcad.errors.InvalidInputError` listing the valid ones; holding
  out every type is an error.
- A draw whose mask has fewer than ``min_pixels`` pixels (or that the geometry refuses) is
  redrawn, type included, up to ``max_tries`` times; then InvalidInputError.
- Every random choice comes from the ``rng`` passed to the call (``numpy.random.Generator``;
  without one, the source's own generator seeded with ``seed``): the same generator state
  gives the same bytes. ``attempts`` and ``counts`` (``collections.Counter``) record the types
  tried and the types delivered.

Example:
    >>> import numpy as np
    >>> from synth.supervision import RGB_TYPES, DefectSource
    >>> src = DefectSource(holdout=("crack",))
    >>> rgb = np.full((64, 64, 3), 128, np.uint8)
    >>> a = src(rgb, None, np.random.default_rng(0))
    >>> a.defect in RGB_TYPES, a.mask.shape, bool(a.mask.any())
    (True, (64, 64), True)
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_int, check_organized, valid_pixels
from pcad.errors import InvalidInputError
from synth.defects.base import defect_info, list_defects, register_defect

#: the source's types in drawing order (a draw indexes this order): the registry's geometric
#: types, then the appearance types registered below with ``made_by="source"``
GEOMETRIC_TYPES = ("bump", "dent", "crack", "hole", "perlin")
RGB_TYPES = ("texture", "colour", "graft", "scratch", "blur")
DEFECT_TYPES = GEOMETRIC_TYPES + RGB_TYPES
#: the types a source draws from when ``types`` is not given (chosen on the built-in
#: procedural parts, benchmarks/bench_synthsup_ablation.py)
DEFAULT_TYPES = DEFECT_TYPES
TEXTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: per-call ranges of the geometric defects' sizes, fractions of the part's bbox diagonal
#: (pcad's synthetic datasets draw from similar ranges, synth.dataset.config)
DEFAULT_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "bump": {"strength": (0.01, 0.03), "radius": (0.05, 0.12)},
    "dent": {"strength": (0.01, 0.03), "radius": (0.05, 0.12)},
    "crack": {"strength": (0.004, 0.01), "width": (0.01, 0.025), "length": (0.15, 0.35)},
    "hole": {"radius": (0.03, 0.08)},
    "perlin": {"strength": (0.01, 0.03), "radius": (0.08, 0.15), "threshold": (0.55, 0.75)},
}
#: smallest foreground (pixels) on which geometric defects are made
MIN_FOREGROUND = 50
#: smallest change (grey levels, any channel) of a ``blur`` pixel in the mask
BLUR_MIN_CHANGE = 4


@dataclass
class SyntheticAnomaly:
    """One synthetic anomaly: ``rgb (H, W, 3) uint8`` or None, ``xyz (H, W, 3) float32`` or
    None (zeros = no measurement), ``mask (H, W) bool`` (non-empty), the ``defect`` type and
    the ``params`` drawn (JSON-ready)."""

    rgb: np.ndarray | None
    xyz: np.ndarray | None
    mask: np.ndarray
    defect: str
    params: dict[str, Any] = field(default_factory=dict)


def _names(values: Any, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    out = []
    for v in values:
        if not isinstance(v, str):
            raise InvalidInputError(f"{what}: expected defect type names, got {v!r}")
        if v not in DEFECT_TYPES:
            if v in list_defects():
                raise InvalidInputError(
                    f"{what}: defect type {v!r} ({defect_info(v).info['kind']}) is not made by "
                    f"the defect source; expected some of {list(DEFECT_TYPES)}")
            raise InvalidInputError(f"{what}: unknown defect type {v!r}; expected some of "
                                    f"{list(DEFECT_TYPES)}")
        if v not in out:
            out.append(v)
    return tuple(out)


def _range(value: Any, label: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{label}: expected (low, high), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi < lo:
        raise InvalidInputError(f"{label}: expected 0 <= low <= high, got {value!r}")
    return lo, hi


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator,
                exponents: tuple[int, int] = (0, 4), threshold: float = 0.5) -> np.ndarray:
    """DRAEM's thresholded Perlin mask ``(H, W) bool`` (module docstring), all from ``rng``.

    Example:
        >>> import numpy as np
        >>> m = perlin_mask((32, 48), np.random.default_rng(1))
        >>> m.shape, m.dtype
        ((32, 48), dtype('bool'))
    """
    from synth.field import perlin_field

    h, w = shape
    kx, ky = (int(rng.integers(exponents[0], exponents[1] + 1)) for _ in range(2))
    angle = rng.uniform(-0.5 * np.pi, 0.5 * np.pi)
    field_seed = int(rng.integers(2**31))
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    u, v = (xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5  # centred, unit image
    c, s = np.cos(angle), np.sin(angle)
    ru, rv = c * u - s * v, s * u + c * v
    coords = np.stack([ru.ravel() * 2.0**kx, rv.ravel() * 2.0**ky], axis=1)
    noise = perlin_field(coords, scale=1.0, octaves=1, seed=field_seed)
    return (noise > threshold).reshape(h, w)


def _fbm_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3) float64`` in [0, 1]: one fBm Perlin field per channel around a base colour."""
    from synth.field import normalize01, perlin_field

    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    coords = np.stack([xx.ravel() / max(h, w), yy.ravel() / max(h, w)], axis=1)
    scale = 2.0 ** int(rng.integers(1, 5))
    base = rng.uniform(0.0, 1.0, 3)
    amp = rng.uniform(0.3, 1.0, 3)
    chans = []
    for ch in range(3):
        f = normalize01(perlin_field(coords, scale, 4, 0.5, 2.0, seed=int(rng.integers(2**31))))
        chans.append(base[ch] + amp[ch] * (f.reshape(h, w) - 0.5))
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0)


def _hue_rotation(angle: float) -> np.ndarray:
    """``(3, 3)`` rotation of RGB about the grey axis (Rodrigues)."""
    k = np.ones(3) / np.sqrt(3.0)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * np.outer(k, k)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


@register_defect("blur", kind="appearance", made_by="source",
                 description="local Gaussian blur inside a Perlin mask (the mask keeps the "
                 "pixels the blur visibly changes)")
@register_defect("scratch", kind="appearance", made_by="source",
                 description="thin cut/scratch-like strokes (Bezier curves 1-4 px wide), darker "
                 "or brighter")
@register_defect("graft", kind="appearance", made_by="source",
                 description="DRAEM texture blend of a crop of another good image of the "
                 "category inside a Perlin mask")
@register_defect("colour", kind="appearance", made_by="source",
                 description="DRAEM-style colour change inside a Perlin mask (brightness gain, "
                 "hue rotation, tint)")
@register_defect("texture", kind="appearance", made_by="source",
                 description="DRAEM texture: a texture image (or procedural fBm) blended into "
                 "the image inside a Perlin mask")
class DefectSource:
    """Callable defect generator (module docstring).

    Args:
        types: defect types to draw from (default :data:`DEFAULT_TYPES`).
        holdout: types kept out (never attempted); reported separately by ``pcad eval``.
        textures: folder of texture images (``.png`` / ``.jpg``, searched recursively) for
            ``texture``; None for procedural textures.
        ranges: per geometric type, ``{param: (low, high)}`` overriding :data:`DEFAULT_RANGES`
            (fractions of the part's diagonal; any parameter of the synth defect type).
        perlin_exponents: ``(low, high)`` inclusive range of the RGB masks' ``log2`` cells.
        threshold: Perlin level above which the RGB mask is set (DRAEM 0.5).
        blend: ``(low, high)`` range of the texture blend's weight of the original image.
        shade: re-shade RGB inside geometric defects (else RGB is left untouched).
        max_tries: draws before giving up on a sample.
        min_pixels: smallest accepted mask.
        seed: seed of the generator used when a call passes no ``rng``.
        texture_images: good ``(H, W, 3) uint8`` images for ``graft`` (None: crops of the
            sample itself until :meth:`set_texture_images` sets a pool).

    Call: ``source(rgb, xyz, rng=None) -> SyntheticAnomaly`` with ``rgb (H, W, 3) uint8`` or
    None and ``xyz (H, W, 3) float32`` or None (at least one; same ``H, W``).
    """

    def __init__(self, types: Any = DEFAULT_TYPES, holdout: Any = (), textures: Any = None,
                 ranges: dict[str, dict[str, Any]] | None = None,
                 perlin_exponents: tuple[int, int] = (0, 4), threshold: float = 0.5,
                 blend: tuple[float, float] = (0.0, 0.8), shade: bool = True,
                 max_tries: int = 20, min_pixels: int = 4, seed: int = 0,
                 texture_images: Any = None) -> None:
        from synth.defects import create_defect

        self.types = _names(DEFAULT_TYPES if types is None else types, "types")
        if not self.types:
            raise InvalidInputError("types: no defect type given")
        self.holdout = _names(holdout, "holdout")
        self.active = tuple(t for t in self.types if t not in self.holdout)
        if not self.active:
            raise InvalidInputError(f"holdout: every defect type {list(self.types)} is held out; "
                                    "nothing is left to train on")
        self.ranges = {k: dict(v) for k, v in DEFAULT_RANGES.items()}
        for name, params in (ranges or {}).items():
            if name not in GEOMETRIC_TYPES:
                raise InvalidInputError(f"ranges: {name!r} is not a geometric defect type "
                                        f"{list(GEOMETRIC_TYPES)}")
            self.ranges[name].update({p: _range(r, f"ranges.{name}.{p}")
                                      for p, r in params.items()})
        for name, params in self.ranges.items():  # unknown parameters fail here, not mid-fit
            create_defect(name, **{p: r[1] for p, r in params.items()})
        lo, hi = (check_int(e, "perlin_exponents", minimum=0, maximum=10)
                  for e in perlin_exponents)
        if hi < lo:
            raise InvalidInputError(f"perlin_exponents: expected low <= high, got "
                                    f"{perlin_exponents!r}")
        self.perlin_exponents = (lo, hi)
        self.threshold = float(threshold)
        self.blend = _range(blend, "blend")
        if self.blend[1] > 1:
            raise InvalidInputError(f"blend: must lie in [0, 1], got {blend!r}")
        self.shade = bool(shade)
        self.max_tries = check_int(max_tries, "max_tries", minimum=1)
        self.min_pixels = check_int(min_pixels, "min_pixels", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.textures = None if textures is None else str(textures)
        self.texture_files = self._texture_files()
        self._texture_cache: dict[str, np.ndarray] = {}
        self.texture_images: list[np.ndarray] = []
        self.set_texture_images(texture_images)
        self._rng = np.random.default_rng(self.seed)
        self.attempts: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    # --- description ----------------------------------------------------------------------

    def _texture_files(self) -> list[Path]:
        if self.textures is None:
            return []
        root = Path(self.textures)
        if not root.is_dir():
            raise InvalidInputError(f"textures: {root} is not a folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in TEXTURE_SUFFIXES
                       and p.is_file())
        if not files:
            raise InvalidInputError(f"textures: no {'/'.join(TEXTURE_SUFFIXES)} image in {root}")
        return files

    def available(self, has_rgb: bool, has_xyz: bool) -> tuple[str, ...]:
        """The active types a sample with these modalities can get."""
        return tuple(t for t in self.active
                     if (t in GEOMETRIC_TYPES and has_xyz) or (t in RGB_TYPES and has_rgb))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (saved with a run)."""
        return {"types": list(self.types), "holdout": list(self.holdout),
                "active": list(self.active), "textures": self.textures,
                "n_textures": len(self.texture_files),
                "ranges": {k: {p: list(r) for p, r in v.items()} for k, v in self.ranges.items()},
                "perlin_exponents": list(self.perlin_exponents), "threshold": self.threshold,
                "blend": list(self.blend), "shade": self.shade,
                "n_texture_images": len(self.texture_images)}

    # --- the call -------------------------------------------------------------------------

    def __call__(self, rgb: np.ndarray | None, xyz: np.ndarray | None,
                 rng: np.random.Generator | None = None) -> SyntheticAnomaly:
        rng = self._rng if rng is None else rng
        if not isinstance(rng, np.random.Generator):
            raise InvalidInputError(f"rng: expected a numpy.random.Generator, got {type(rng)}")
        rgb_a, xyz_a = self._check(rgb, xyz)
        fg = None
        if xyz_a is not None:
            from pcad.geometry import foreground_mask

            fg = valid_pixels(xyz_a) & foreground_mask(xyz_a)
        choices = self.available(rgb_a is not None,
                                 xyz_a is not None and int(fg.sum()) >= MIN_FOREGROUND)
        if not choices:
            have = "RGB only" if xyz_a is None else (
                "xyz only" if rgb_a is None else f"a foreground of {int(fg.sum())} pixels")
            raise InvalidInputError(
                f"defect source: no defect type fits a sample with {have} (active types "
                f"{list(self.active)}, held out {list(self.holdout)}; geometric types need "
                f"xyz with at least {MIN_FOREGROUND} foreground pixels, RGB types need RGB)")
        last = "masks were empty"
        for _ in range(self.max_tries):
            name = str(choices[int(rng.integers(len(choices)))])
            self.attempts[name] += 1
            try:
                if name in GEOMETRIC_TYPES:
                    out = self._geometric(name, rgb_a, xyz_a, fg, rng)
                else:
                    out = self._rgb(name, rgb_a, xyz_a, fg, rng)
            except InvalidInputError as exc:  # e.g. a hole that would remove everything
                last = str(exc)
                continue
            if int(out.mask.sum()) >= self.min_pixels:
                self.counts[name] += 1
                return out
        raise InvalidInputError(f"defect source: no defect of at least {self.min_pixels} "
                                f"pixels in {self.max_tries} draws ({last})")

    @staticmethod
    def _check(rgb: Any, xyz: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        if rgb is None and xyz is None:
            raise InvalidInputError("defect source: a sample needs rgb, xyz or both")
        rgb_a = xyz_a = None
        if rgb is not None:
            rgb_a = np.asarray(rgb)
            if rgb_a.ndim != 3 or rgb_a.shape[2] != 3 or rgb_a.dtype != np.uint8:
                raise InvalidInputError(f"rgb: expected (H, W, 3) uint8, got {rgb_a.dtype} "
                                        f"{rgb_a.shape}")
        if xyz is not None:
            xyz_a = check_organized(xyz, "xyz")
        if rgb_a is not None and xyz_a is not None and rgb_a.shape[:2] != xyz_a.shape[:2]:
            raise InvalidInputError(f"rgb {rgb_a.shape[:2]} and xyz {xyz_a.shape[:2]}: sizes "
                                    "differ")
        return rgb_a, xyz_a

    # --- geometric ------------------------------------------------------------------------

    def _geometric(self, name: str, rgb: np.ndarray | None, xyz: np.ndarray, fg: np.ndarray,
                   rng: np.random.Generator) -> SyntheticAnomaly:
        from synth.apply import apply_to_scan

        params: dict[str, Any] = {p: float(rng.uniform(*r)) for p, r in
                                  sorted(self.ranges[name].items())}
        if name == "perlin":
            params["region"] = ("ball", "threshold")[int(rng.integers(2))]
            params["signed"] = bool(rng.integers(2))
            if params["region"] != "threshold":
                params.pop("threshold", None)
        seed = int(rng.integers(2**31))
        res = apply_to_scan(xyz, name, seed=seed, foreground=fg, **params)
        out, mask = res.points, res.mask
        info = {**params, "seed": seed, "threshold_abs": float(res.params["threshold_abs"])}
        rgb_out = rgb
        if rgb is not None and self.shade and mask.any():
            rgb_out, shading = self._shade(rgb, xyz, out, mask, rng)
            info.update(shading)
        return SyntheticAnomaly(rgb_out, out, mask, name, info)

    @staticmethod
    def _shade(rgb: np.ndarray, before: np.ndarray, after: np.ndarray, mask: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """Lambertian re-shading inside ``mask`` (module docstring)."""
        from pcad.geometry import organized_normals

        tilt, azimuth = rng.uniform(0.0, np.pi / 4), rng.uniform(0.0, 2 * np.pi)
        light = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth),
                          -np.cos(tilt)])  # towards the sensor at the origin (looks along +z)
        dark = float(rng.uniform(0.15, 0.45))
        ambient = 0.3

        def shading(grid: np.ndarray) -> np.ndarray:
            n = organized_normals(grid).astype(np.float64)
            return ambient + (1 - ambient) * np.clip(n @ light, 0.0, None)

        ratio = np.clip(shading(after) / np.maximum(shading(before), 1e-6), 0.3, 2.0)
        removed = valid_pixels(before) & ~valid_pixels(after)
        ratio[removed] = dark
        img = rgb.astype(np.float64)
        img[mask] *= ratio[mask][:, None]
        out = rgb.copy()
        out[mask] = np.clip(np.round(img[mask]), 0, 255).astype(np.uint8)
        return out, {"light": light.tolist(), "hole_darkening": dark}

    # --- RGB ------------------------------------------------------------------------------

    def _rgb(self, name: str, rgb: np.ndarray, xyz: np.ndarray | None, fg: np.ndarray | None,
             rng: np.random.Generator) -> SyntheticAnomaly:
        h, w = rgb.shape[:2]
        fg = fg if fg is not None and int(fg.sum()) >= MIN_FOREGROUND else None
        if name == "scratch":
            return self._scratch(rgb, xyz, fg, rng)
        mask = perlin_mask((h, w), rng, self.perlin_exponents, self.threshold)
        if fg is not None:
            mask &= fg
        img = rgb.astype(np.float64) / 255.0
        if name == "blur":
            return self._blur(rgb, xyz, mask, rng)
        if name in ("texture", "graft"):
            if name == "texture":
                tex, info = self._texture((h, w), rng)
            else:
                src, j = self._graft_source(rgb, rng)
                tex, info = crop_texture(src, (h, w), rng)
                info["image"] = j
            beta = float(rng.uniform(*self.blend))
            new = (1.0 - beta) * tex + beta * img
            info["blend"] = beta
        else:
            gain = (rng.uniform(0.55, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6))
            angle = rng.uniform(np.pi / 6, np.pi) * (1.0 if rng.random() < 0.5 else -1.0)
            tint, alpha = rng.uniform(0.0, 1.0, 3), rng.uniform(0.15, 0.4)
            new = (1 - alpha) * np.clip(img @ _hue_rotation(angle).T * gain, 0.0, 1.0) \
                + alpha * tint
            info = {"gain": float(gain), "hue_deg": float(np.degrees(angle)),
                    "tint": tint.tolist(), "tint_weight": float(alpha)}
        out = rgb.copy()
        out[mask] = _to_uint8(new[mask])
        return SyntheticAnomaly(out, None if xyz is None else xyz.copy(), mask, name, info)

    @staticmethod
    def _scratch(rgb: np.ndarray, xyz: np.ndarray | None, fg: np.ndarray | None,
                 rng: np.random.Generator) -> SyntheticAnomaly:
        """Thin strokes (:func:`scratch_mask`) pulled towards a dark or a bright grey."""
        mask, info = scratch_mask(rgb.shape[:2], rng, fg)
        if fg is not None:
            mask &= fg
        dark = bool(rng.random() < 0.5)
        level = rng.uniform(0.0, 0.2) if dark else rng.uniform(0.8, 1.0)
        alpha = float(rng.uniform(0.6, 0.95))
        img = rgb.astype(np.float64) / 255.0
        new = (1 - alpha) * img + alpha * level
        out = rgb.copy()
        out[mask] = _to_uint8(new[mask])
        mask = mask & (out != rgb).any(axis=-1)  # a stroke on a pixel of its own colour
        info.update({"dark": dark, "level": float(level), "weight": alpha})
        return SyntheticAnomaly(out, None if xyz is None else xyz.copy(), mask, "scratch",
                                info)

    @staticmethod
    def _blur(rgb: np.ndarray, xyz: np.ndarray | None, mask: np.ndarray,
              rng: np.random.Generator) -> SyntheticAnomaly:
        """Gaussian blur (sigma 1.5-4 pixels at 224) inside ``mask``; the mask keeps the pixels
        whose value changes by at least ``BLUR_MIN_CHANGE`` grey levels (a blur of a flat
        area changes nothing)."""
        from scipy.ndimage import gaussian_filter

        sigma = float(rng.uniform(1.5, 4.0) * _pixel_scale(rgb.shape[:2]))
        img = rgb.astype(np.float64)
        blurred = np.clip(np.round(gaussian_filter(img, (sigma, sigma, 0))), 0, 255)
        changed = np.abs(blurred - img).max(axis=-1) >= BLUR_MIN_CHANGE
        mask = mask & changed
        out = rgb.copy()
        out[mask] = blurred[mask].astype(np.uint8)
        return SyntheticAnomaly(out, None if xyz is None else xyz.copy(), mask, "blur",
                                {"sigma": sigma})

    def _texture(self, shape: tuple[int, int], rng: np.random.Generator
                 ) -> tuple[np.ndarray, dict[str, Any]]:
        if not self.texture_files:
            return _fbm_texture(shape, rng), {"texture": "procedural"}
        from PIL import Image

        path = self.texture_files[int(rng.integers(len(self.texture_files)))]
        key = os.fspath(path)
        if key not in self._texture_cache:
            with Image.open(path) as im:
                self._texture_cache[key] = np.asarray(im.convert("RGB"))
        tex, info = crop_texture(self._texture_cache[key], shape, rng)
        return tex, {"texture": path.name, **info}

    def set_texture_images(self, images: Any) -> None:
        """The pool of ``graft``: good ``(H, W, 3) uint8`` images of the category (``synthsup``
        hands its training images over before making variants); None or empty: each sample
        grafts crops of itself."""
        pool = []
        for im in images or ():
            a = np.asarray(im)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise InvalidInputError(f"texture images: expected (H, W, 3) uint8, got "
                                        f"{a.dtype} {a.shape}")
            pool.append(a)
        self.texture_images = pool

    def _graft_source(self, rgb: np.ndarray, rng: np.random.Generator
                      ) -> tuple[np.ndarray, int]:
        """Another image of the pool than ``rgb`` (index, -1: ``rgb`` itself)."""
        n = len(self.texture_images)
        if n == 0:
            return rgb, -1
        j = int(rng.integers(n))
        if n > 1 and self.texture_images[j].shape == rgb.shape and \
                np.array_equal(self.texture_images[j], rgb):
            j = (j + 1 + int(rng.integers(n - 1))) % n
        return self.texture_images[j], j


def crop_texture(src: np.ndarray, shape: tuple[int, int], rng: np.random.Generator
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """DRAEM's texture augmentation of ``src (h, w, 3) uint8``: a random square crop (30-100 %
    of the shorter side), rotated by a multiple of 90 degrees, flipped or not, resized
    (bilinear) to ``shape`` and gamma'd (``[0.5, 2]``, log-uniform); ``(H, W, 3) float64`` in
    ``[0, 1]`` and the JSON-ready draw.

    Example:
        >>> import numpy as np
        >>> tex, info = crop_texture(np.zeros((20, 30, 3), np.uint8), (8, 9),
        ...                          np.random.default_rng(0))
        >>> tex.shape, sorted(info)
        ((8, 9, 3), ['gamma'])
    """
    from PIL import Image

    th, tw = src.shape[:2]
    side = max(1, int(round(min(th, tw) * rng.uniform(0.3, 1.0))))
    y0, x0 = int(rng.integers(th - side + 1)), int(rng.integers(tw - side + 1))
    crop = np.rot90(src[y0:y0 + side, x0:x0 + side], k=int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR)
    gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    tex = (np.asarray(resized, dtype=np.float64) / 255.0) ** gamma
    return tex, {"gamma": gamma}


def _pixel_scale(shape: tuple[int, int]) -> float:
    """Pixel sizes of ``scratch`` and ``blur`` are given at 224 pixels (the detectors' input)
    and scaled with the shorter side above it."""
    return max(1.0, min(shape) / 224.0)


def scratch_mask(shape: tuple[int, int], rng: np.random.Generator,
                 foreground: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``(H, W) bool`` mask of 1-3 thin strokes (quadratic Bezier curves, length 15-50 % of the
    shorter side, bend up to 30 % of the length, width 1-4 pixels at 224 pixels), starting on
    ``foreground`` when given, and the draw.

    Example:
        >>> import numpy as np
        >>> m, info = scratch_mask((64, 64), np.random.default_rng(0))
        >>> m.shape, bool(m.any()), bool(0 < m.mean() < 0.2)
        ((64, 64), True, True)
    """
    from scipy.ndimage import distance_transform_edt

    h, w = shape
    scale = _pixel_scale(shape)
    out = np.zeros(shape, bool)
    strokes = []
    starts = None if foreground is None else np.argwhere(foreground)
    for _ in range(int(rng.integers(1, 4))):
        if starts is not None and len(starts):
            p0 = starts[int(rng.integers(len(starts)))][::-1].astype(np.float64)
        else:
            p0 = rng.uniform(0, 1, 2) * (w - 1, h - 1)
        length = rng.uniform(0.15, 0.5) * min(h, w)
        theta = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(theta), np.sin(theta)])
        p2 = p0 + length * d
        p1 = 0.5 * (p0 + p2) + rng.uniform(-0.3, 0.3) * length * np.array([-d[1], d[0]])
        width = float(rng.uniform(1.0, 4.0) * scale)
        t = np.linspace(0.0, 1.0, int(4 * length) + 2)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        ij = np.round(pts[:, ::-1]).astype(int)
        ij = ij[(ij[:, 0] >= 0) & (ij[:, 0] < h) & (ij[:, 1] >= 0) & (ij[:, 1] < w)]
        line = np.zeros(shape, bool)
        line[ij[:, 0], ij[:, 1]] = True
        if line.any():
            out |= distance_transform_edt(~line) <= 0.5 * (width - 1.0) + 1e-9
        strokes.append({"start": p0.tolist(), "end": p2.tolist(), "control": p1.tolist(),
                        "width": width})
    return out, {"strokes": strokes}
