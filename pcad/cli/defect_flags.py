"""Command-line flags for every geometric defect parameter, and make-dataset's sensor and
defect-range settings.

Building the parser must not import ``synth`` (``pcad --help`` starts in well under a second),
so the parameters, their defaults and the sensor settings are static copies here, and
``tests/test_synth_cli_flags.py`` holds each one equal to the registry
(:func:`synth.defects.defect_parameters`): a new defect type or parameter fails that test until
its line is added here, and then gets its flag, its help line with defaults and its checks.

Each parameter ``p`` has the flag ``--p`` (underscores as dashes), except ``units``, which is
``--absolute``. Booleans take ``--p`` / ``--no-p``.

Example:
    >>> flag_of("gt_threshold"), flag_of("units")
    ('--gt-threshold', '--absolute')
    >>> sorted(d for d, ps in DEFECT_PARAMETERS.items() if "rim" in ps)
    ['hole']
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from pcad.errors import InvalidInputError

#: :func:`synth.defects.defect_parameters`: defect -> parameter -> default, in field order
DEFECT_PARAMETERS: dict[str, dict[str, Any]] = {
    "bump": {"units": "relative", "gt_threshold": 0.1, "scale": 3.0, "octaves": 3,
             "persistence": 0.5, "lacunarity": 2.0, "mode": "local", "falloff": "cosine",
             "strength": 0.01, "radius": 0.1, "irregularity": 0.3, "modulation": 0.3},
    "crack": {"units": "relative", "gt_threshold": 0.1, "scale": 2.0, "octaves": 2,
              "persistence": 0.5, "lacunarity": 2.0, "mode": "local", "falloff": "cosine",
              "strength": 0.004, "length": 0.25, "width": 0.015, "wiggle": 0.6},
    "dent": {"units": "relative", "gt_threshold": 0.1, "scale": 3.0, "octaves": 3,
             "persistence": 0.5, "lacunarity": 2.0, "mode": "local", "falloff": "cosine",
             "strength": 0.01, "radius": 0.1, "irregularity": 0.3, "modulation": 0.3},
    "hole": {"units": "relative", "gt_threshold": 0.1, "scale": 3.0, "octaves": 3,
             "persistence": 0.5, "lacunarity": 2.0, "mode": "local", "falloff": "cosine",
             "radius": 0.06, "irregularity": 0.3, "rim": 1.5},
    "perlin": {"units": "relative", "gt_threshold": 0.1, "scale": 4.0, "octaves": 4,
               "persistence": 0.5, "lacunarity": 2.0, "mode": "global", "falloff": "cosine",
               "strength": 0.02, "region": "global", "radius": 0.15, "threshold": 0.6,
               "signed": False},
}

#: parameter -> (type name, choices or None, help); the types and choices of the registry's
#: fields (every defect's choices are among these), the help shared by the defects
PARAMETER_FLAGS: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "units": ("str", ("relative", "absolute"),
              "read the sizes (--strength, --radius, --length, --width) in the input's units "
              "instead of fractions of its bounding-box diagonal"),
    "gt_threshold": ("float", None, "a point is anomalous if displaced by at least this "
                     "fraction of the peak strength"),
    "scale": ("float", None, "noise lattice cells per bbox diagonal (crack: along the path)"),
    "octaves": ("int", None, "fBm octaves, 1 to 16"),
    "persistence": ("float", None, "amplitude ratio between octaves"),
    "lacunarity": ("float", None, "frequency ratio between octaves"),
    "mode": ("str", ("global", "local", "volumetric"),
             "surface parameterization of the noise (crack: local only)"),
    "falloff": ("str", ("cosine", "gaussian", "linear", "poly", "hard"),
                "radial falloff of the region"),
    "strength": ("float", None, "peak displacement: height, depth or groove depth (fraction "
                 "of the diagonal)"),
    "radius": ("float", None, "region radius: blob, hole or perlin's ball (fraction of the "
               "diagonal)"),
    "irregularity": ("float", None, "relative radius variation by the noise"),
    "modulation": ("float", None, "share of the relief shaped by the noise"),
    "length": ("float", None, "crack path length (fraction of the diagonal)"),
    "width": ("float", None, "crack groove width (fraction of the diagonal)"),
    "wiggle": ("float", None, "largest heading change along the crack path (radians)"),
    "rim": ("float", None, "anomalous border width around a hole, in mean point spacings "
            "(unorganized clouds)"),
    "region": ("str", ("global", "ball", "threshold"),
               "where perlin's field acts: the whole surface (3D-PNAS), a ball of --radius, "
               "or where the field exceeds --threshold"),
    "threshold": ("float", None, "field level above which perlin's threshold region acts"),
    "signed": ("bool", None, "perlin field 2g-1 (bumps and dents at once) instead of g"),
}

#: ``pcad synth``'s own default for perlin's region (the Python API keeps 3D-PNAS's global
#: field): a global field marks nearly every point anomalous, which is no local defect
SYNTH_DEFAULTS: dict[str, dict[str, Any]] = {"perlin": {"region": "ball"}}

#: :class:`synth.render.render.SensorConfig`'s fields and defaults (``--sensor KEY=VALUE``)
SENSOR_DEFAULTS: dict[str, float] = {
    "depth_noise": 0.0003, "dropout": 0.002, "grazing_deg": 82.0, "baseline": 0.12,
    "rgb_noise": 1.5, "fill": 0.65, "tilt_deg": 6.0, "light_jitter": 1.0, "subdivide_px": 2.0}

#: :data:`synth.dataset.config.DEFAULT_DEFECT_RANGES` (``--defect-range DEFECT.PARAM=LO:HI``)
DEFECT_RANGE_DEFAULTS: dict[str, dict[str, tuple[float, float]]] = {
    "bump": {"strength": (0.012, 0.03), "radius": (0.06, 0.12)},
    "dent": {"strength": (0.012, 0.03), "radius": (0.06, 0.12)},
    "crack": {"strength": (0.004, 0.008), "width": (0.01, 0.02)},
    "hole": {"radius": (0.04, 0.08)},
}

_TYPES = {"float": float, "int": int, "str": str}


def flag_of(param: str) -> str:
    """The ``pcad synth`` flag of a defect parameter (``units`` is ``--absolute``)."""
    return "--absolute" if param == "units" else "--" + param.replace("_", "-")


def _defaults_text(param: str) -> str:
    """``'bump, dent 0.01; crack 0.004; perlin 0.02'``: each defect's default of ``param``."""
    groups: dict[str, list[str]] = {}
    for defect, params in DEFECT_PARAMETERS.items():
        if param in params:
            value = SYNTH_DEFAULTS.get(defect, {}).get(param, params[param])
            groups.setdefault(repr(value) if isinstance(value, str) else str(value),
                              []).append(defect)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(DEFECT_PARAMETERS):
        return f"default {next(iter(groups))}"
    return "default " + "; ".join(f"{', '.join(ds)} {v}" for v, ds in groups.items())


def add_defect_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per defect parameter (default None: only the flags given are passed on,
    each defect keeps its own defaults, listed in the help)."""
    group = parser.add_argument_group(
        "defect parameters", "each applies to the defects named in its default list; a flag "
        "the chosen --defect does not take is an error")
    for param, (kind, choices, doc) in PARAMETER_FLAGS.items():
        if param == "units":
            group.add_argument("--absolute", action="store_true", help=doc)
            continue
        help_ = f"{doc} ({_defaults_text(param)})".replace("%", "%%")
        if kind == "bool":
            group.add_argument(flag_of(param), action=argparse.BooleanOptionalAction,
                               default=None, help=help_)
        else:
            group.add_argument(flag_of(param), type=_TYPES[kind], choices=choices,
                               default=None, metavar=None if choices else kind.upper(),
                               help=help_)


def defect_params_from_args(args: argparse.Namespace, defect: str) -> dict[str, Any]:
    """The parameters given on the command line for ``defect`` (plus ``pcad synth``'s own
    defaults, :data:`SYNTH_DEFAULTS`).

    Raises:
        InvalidInputError: a flag was given that ``defect`` does not take (the message lists
            the flags it takes).
    """
    accepted = DEFECT_PARAMETERS[defect]
    params: dict[str, Any] = {}
    for param in PARAMETER_FLAGS:
        if param == "units":
            if getattr(args, "absolute", False):
                params["units"] = "absolute"
            continue
        value = getattr(args, param, None)
        if value is None:
            continue
        if param not in accepted:
            flags = " ".join(flag_of(p) for p in accepted)
            raise InvalidInputError(f"{flag_of(param)}: --defect {defect} takes no such "
                                    f"parameter; its flags are {flags}")
        params[param] = value
    for param, value in SYNTH_DEFAULTS.get(defect, {}).items():
        params.setdefault(param, value)
    return params


def flag_error(exc: Exception, defect: str) -> Exception:
    """``exc`` with a leading ``defect.param`` (a defect's own check) named by its flag.

    Example:
        >>> str(flag_error(InvalidInputError("bump.strength: must be > 0"), "bump"))
        '--strength: must be > 0'
    """
    msg = str(exc)
    m = re.match(rf"{re.escape(defect)}\.(\w+)(.*)", msg, re.S)
    if m is None or m.group(1) not in PARAMETER_FLAGS:
        return exc
    return type(exc)(flag_of(m.group(1)) + m.group(2))


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise InvalidInputError(f"{flag}: expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def parse_sensor(items: list[str] | None) -> dict[str, float]:
    """``--sensor KEY=VALUE ...`` as a dict of sensor settings (keys of :data:`SENSOR_DEFAULTS`).

    Example:
        >>> parse_sensor(["depth_noise=0.001", "dropout=0"])
        {'depth_noise': 0.001, 'dropout': 0.0}
    """
    out: dict[str, float] = {}
    for item in items or ():
        key, value = _key_value(item, "--sensor")
        if key not in SENSOR_DEFAULTS:
            known = " ".join(f"{k}={v}" for k, v in SENSOR_DEFAULTS.items())
            raise InvalidInputError(f"--sensor: unknown setting {key!r}; the settings (with "
                                    f"their defaults) are {known}")
        try:
            out[key] = float(value)
        except ValueError:
            raise InvalidInputError(f"--sensor {key}: expected a number, got {value!r}") from None
    return out


def parse_defect_ranges(items: list[str] | None) -> dict[str, dict[str, tuple[float, float]]]:
    """``--defect-range DEFECT.PARAM=LO:HI ...`` over :data:`DEFECT_RANGE_DEFAULTS` (a given
    range replaces that parameter's default range; a single value ``V`` means ``V:V``).

    Example:
        >>> parse_defect_ranges(["hole.radius=0.02:0.03"])["hole"]
        {'radius': (0.02, 0.03)}
    """
    out = {k: dict(v) for k, v in DEFECT_RANGE_DEFAULTS.items()}
    for item in items or ():
        key, value = _key_value(item, "--defect-range")
        defect, dot, param = key.partition(".")
        if not dot or defect not in DEFECT_PARAMETERS:
            raise InvalidInputError(f"--defect-range: expected DEFECT.PARAM=LO:HI with DEFECT "
                                    f"among {' '.join(DEFECT_PARAMETERS)}, got {item!r}")
        numeric = [p for p, d in DEFECT_PARAMETERS[defect].items()
                   if isinstance(d, float) and not isinstance(d, bool)]
        if param not in numeric:
            raise InvalidInputError(f"--defect-range {defect}.{param}: not a numeric parameter "
                                    f"of {defect}; those are {' '.join(numeric)}")
        lo_text, _, hi_text = value.partition(":")
        try:
            lo = float(lo_text)
            hi = float(hi_text) if hi_text else lo
        except ValueError:
            raise InvalidInputError(f"--defect-range {key}: expected LO:HI numbers, got "
                                    f"{value!r}") from None
        if lo > hi:
            raise InvalidInputError(f"--defect-range {key}: {lo} > {hi}")
        out.setdefault(defect, {})[param] = (lo, hi)
    return out


def sensor_help() -> str:
    """Help text of ``--sensor`` with the settings' defaults."""
    return ("renderer setting, repeatable (defaults: "
            + " ".join(f"{k}={v}" for k, v in SENSOR_DEFAULTS.items()) + ")")


def defect_range_help() -> str:
    """Help text of ``--defect-range`` with the default ranges."""
    ranges = " ".join(f"{d}.{p}={lo}:{hi}" for d, ps in DEFECT_RANGE_DEFAULTS.items()
                      for p, (lo, hi) in ps.items())
    return ("per-sample range of a geometric defect's parameter (fractions of the part's "
            f"diagonal), repeatable; each test sample draws its own value (defaults: {ranges})")
