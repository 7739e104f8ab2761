"""``pcad synth INPUT -o OUTPUT``: apply one geometric defect to a cloud, mesh or xyz TIFF."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pcad.errors import FileFormatError, InvalidInputError, PcadError

#: CLI option -> defect parameter; only options the user gave are passed on.
PARAM_OPTIONS = ("mode", "scale", "strength", "octaves", "persistence", "lacunarity", "radius")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pcad.checks import MAX_SAMPLE_POINTS, MIN_POINTS, check_int
    from pcad.io import read_input
    from synth import apply_defect, create_defect
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
    params = {k: getattr(args, k) for k in PARAM_OPTIONS if getattr(args, k) is not None}
    if args.absolute:
        params["units"] = "absolute"
    # check the parameters before reading a possibly large input
    defect = create_defect(args.defect, **params)
    try:
        # float64: a cloud far from the origin is centred before its float32 rounding
        data = read_input(inp, n_points=args.points, seed=args.seed, dtype=np.float64)
        if data.kind == "organized":
            result = apply_defect(data.organized, defect, seed=args.seed)
        else:
            result = apply_defect(data.points, defect, normals=data.normals, seed=args.seed)
    except PcadError as exc:  # bad file or geometry: say which file it came from
        msg = str(exc)
        if msg.startswith(str(inp)):
            raise
        raise type(exc)(f"{inp}: {msg}") from None
    result.params["input_kind"] = data.kind
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


def register(sub: argparse._SubParsersAction) -> None:
    from synth.defects import list_defects

    p = sub.add_parser(
        "synth", help="apply a geometric defect (3D-PNAS Perlin and others)",
        description="Apply one geometric defect with exact ground truth. Sizes are fractions "
        "of the object's bounding-box diagonal unless --absolute is given.")
    p.add_argument("input", help="cloud (.ply .pcd .xyz .txt .npy .npz), mesh (.stl .obj .ply "
                   ".off) or organized MVTec xyz (.tiff .tif)")
    p.add_argument("-o", "--output", required=True,
                   help="output: .ply .pcd .npz .txt for clouds; .tiff (+ _gt.png) or .npz "
                   "for organized input")
    p.add_argument("--defect", default="perlin", choices=list_defects(kind="geometric"))
    p.add_argument("--mode", choices=("global", "local", "volumetric"),
                   help="surface parameterization of the noise")
    p.add_argument("--scale", type=float, help="noise lattice cells per bbox diagonal")
    p.add_argument("--strength", type=float, help="peak displacement (fraction of diagonal)")
    p.add_argument("--octaves", type=int, help="fBm octaves")
    p.add_argument("--persistence", type=float, help="amplitude ratio between octaves")
    p.add_argument("--lacunarity", type=float, help="frequency ratio between octaves")
    p.add_argument("--radius", type=float, help="region radius (fraction of diagonal)")
    p.add_argument("--absolute", action="store_true",
                   help="read --strength and --radius in the input's units")
    p.add_argument("--points", type=int, default=16384,
                   help="points sampled on a mesh (10 to 50,000,000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)
