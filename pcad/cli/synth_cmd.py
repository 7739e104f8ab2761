"""``pcad synth INPUT -o OUTPUT``: apply one geometric defect to a cloud, mesh or xyz TIFF."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pcad.errors import FileFormatError, InvalidInputError, PcadError


def run(args: argparse.Namespace) -> int:
    import warnings

    import numpy as np

    from pcad.checks import MAX_SAMPLE_POINTS, MIN_POINTS, check_int, valid_pixels
    from pcad.cli.defect_flags import defect_params_from_args, flag_error
    from pcad.errors import PcadWarning
    from pcad.geometry import foreground_mask
    from pcad.io import read_input
    from synth import apply_defect, apply_to_scan, create_defect
    from synth.apply import MIN_SCAN_FOREGROUND
    from synth.writers import ORGANIZED_EXTENSIONS, UNORGANIZED_EXTENSIONS, write_result

    inp = Path(args.input)
    out = Path(args.output)
    if out.resolve() == inp.resolve():
        raise InvalidInputError(f"{out}: the output would overwrite the input")
    allowed = tuple(dict.fromkeys(UNORGANIZED_EXTENSIONS + ORGANIZED_EXTENSIONS))
    if out.suffix.lower() not in allowed:  # fail before reading the input
        raise FileFormatError(f"{out}: unsupported output extension "
                              f"{out.suffix or '(no extension)'!r}; use one of "
                              f"{', '.join(allowed)}")
    check_int(args.seed, "--seed", minimum=0)
    check_int(args.points, "--points", minimum=MIN_POINTS, maximum=MAX_SAMPLE_POINTS)
    params = defect_params_from_args(args, args.defect)
    # check the parameters before reading a possibly large input
    try:
        defect = create_defect(args.defect, **params)
    except InvalidInputError as exc:  # name the flag, not the parameter
        raise flag_error(exc, args.defect) from None
    try:
        # float64: a cloud far from the origin is centred before its float32 rounding
        data = read_input(inp, n_points=args.points, seed=args.seed, dtype=np.float64)
        allowed = ORGANIZED_EXTENSIONS if data.kind == "organized" else UNORGANIZED_EXTENSIONS
        if out.suffix.lower() not in allowed:  # before the work, not after
            kind = "an organized" if data.kind == "organized" else "an unorganized"
            raise FileFormatError(f"{inp}: cannot write {kind} result as "
                                  f"{out.suffix or '(no extension)'!r} ({out}); use one of "
                                  f"{', '.join(allowed)}")
        if data.kind == "organized" and args.anywhere:
            result = apply_to_scan(data.organized, defect, seed=args.seed, anywhere=True)
        elif data.kind == "organized":  # on the part (off the background plane) by default
            fg = foreground_mask(data.organized)
            measured = int(valid_pixels(data.organized).sum())
            if fg.sum() < MIN_SCAN_FOREGROUND and measured >= MIN_POINTS:
                raise InvalidInputError(
                    f"{inp}: {int(fg.sum())} pixels off the background plane, too few for a "
                    "part to put the defect on; use --anywhere to put it on any measured pixel")
            result = (apply_to_scan(data.organized, defect, seed=args.seed, foreground=fg)
                      if measured >= MIN_POINTS  # else apply_defect's error on too few pixels
                      else apply_defect(data.organized, defect, seed=args.seed))
        else:
            result = apply_defect(data.points, defect, normals=data.normals, seed=args.seed)
    except PcadError as exc:  # bad file or geometry: say which file it came from
        msg = str(exc)
        if msg.startswith(str(inp)):
            raise
        raise type(exc)(f"{inp}: {msg}") from None
    result.params["input_kind"] = data.kind
    result.params["anywhere"] = bool(args.anywhere and data.kind == "organized")
    for reason, msg in result.degenerate().items():
        warnings.warn(f"{args.defect}: {msg}: {_DEGENERATE_HINTS[reason]}", PcadWarning,
                      stacklevel=1)
    written = write_result(out, result)
    summary = result.summary()
    record = {"input": str(inp), "output": str(out), **summary,
              "files": [str(p) for p in written]}
    if args.json:
        print(json.dumps(record))
    else:
        print(f"{summary['defect']}: {summary['n_anomalous']} of {summary['n_points']} "
              f"{'pixels' if result.organized else 'points'} anomalous, "
              f"{summary['n_removed']} removed, max offset {summary['max_offset']:.4g}; "
              f"wrote {', '.join(record['files'])}")
    return 0


#: what to change when :meth:`synth.DefectResult.degenerate` names a reason (flags only)
_DEGENERATE_HINTS = {
    "most_anomalous": "hardly a local defect; use a smaller --radius, or --region ball for "
                      "perlin",
    "large_offset": "the defect is out of proportion to the part; use a smaller --strength "
                    "(a fraction of the diagonal unless --absolute)",
    "none_anomalous": "the ground truth is empty; use a larger --strength or a smaller "
                      "--gt-threshold",
}


def register(sub: argparse._SubParsersAction) -> None:
    from pcad.cli.defect_flags import add_defect_flags
    from pcad.cli.names import GEOMETRIC_DEFECTS

    p = sub.add_parser(
        "synth", help="apply a geometric defect (3D-PNAS Perlin and others)",
        description="Apply one geometric defect with exact ground truth. Sizes are fractions "
        "of the object's bounding-box diagonal unless --absolute is given.")
    p.add_argument("input", help="cloud (.ply .pcd .xyz .txt .npy .npz), mesh (.stl .obj .ply "
                   ".off) or organized MVTec xyz (.tiff .tif)")
    p.add_argument("-o", "--output", required=True,
                   help="output: .ply .pcd .npz .txt for clouds; .tiff (+ _gt.png) or .npz "
                   "for organized input")
    p.add_argument("--defect", default="perlin", choices=GEOMETRIC_DEFECTS,
                   help="defect type (default: perlin, on a ball region: --region ball)")
    p.add_argument("--anywhere", action="store_true",
                   help="organized scans: let the defect land on any measured pixel, the "
                   "background included (default: on the part, off the background plane, "
                   "with sizes relative to the part)")
    p.add_argument("--points", type=int, default=16384,
                   help="points sampled on a mesh (10 to 50,000,000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_defect_flags(p)
    p.set_defaults(func=run)
