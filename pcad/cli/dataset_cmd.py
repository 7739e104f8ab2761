"""``pcad make-dataset``: synthetic multimodal datasets in the MVTec 3D-AD layout."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    if not args.overwrite:  # a rerun of the same configuration resumes (prepare_root checks)
        return _make(args)
    from pcad.cli.outputs import replacing

    with replacing(args.out, True, "dataset folder", in_place=True):
        return _make(args)


def _make(args: argparse.Namespace) -> int:
    from pcad.errors import InvalidInputError

    if args.from_mvtec3d:
        from synth.dataset.inject import InjectConfig, inject

        if args.objects or args.format != "mvtec3d":
            raise InvalidInputError("--from-mvtec3d: takes no --objects and writes mvtec3d only")
        if args.conditions != "standard":
            raise InvalidInputError("--from-mvtec3d: takes no --conditions (it renders "
                                    "nothing)")
        if args.sensor or args.defect_range:
            raise InvalidInputError("--from-mvtec3d: takes no --sensor or --defect-range (it "
                                    "renders nothing and applies each defect's defaults)")
        defects = {"defects": tuple(args.defects)} if args.defects else {}
        cfg = InjectConfig(args.from_mvtec3d, test_defect=args.test_defect, seed=args.seed,
                           categories=tuple(args.categories or ()), **defects)
        report = inject(cfg, args.out, progress=not args.quiet)
    else:
        from pcad.cli.defect_flags import parse_defect_ranges, parse_sensor
        from synth.dataset import DatasetConfig, categories_from, generate
        from synth.dataset.config import DEFAULT_DEFECTS
        from synth.render.render import SensorConfig

        sensor, ranges = parse_sensor(args.sensor), parse_defect_ranges(args.defect_range)
        try:  # the settings' own checks, named by their flags
            sensor_cfg = SensorConfig(**sensor)
            cats = categories_from(args.objects, args.categories)
            cfg = DatasetConfig(categories=cats, train=args.train, validation=args.validation,
                                test_good=args.test_good, test_defect=args.test_defect,
                                defects=tuple(args.defects or DEFAULT_DEFECTS),
                                size=tuple(args.size), seed=args.seed, format=args.format,
                                variation=args.variation, points=args.points,
                                sensor=sensor_cfg, defect_ranges=ranges,
                                conditions=args.conditions)
        except InvalidInputError as exc:
            msg = str(exc)
            for internal, flag in (("sensor.", "--sensor "),
                                   ("defect_ranges.", "--defect-range ")):
                if msg.startswith(internal):
                    raise InvalidInputError(flag + msg[len(internal):]) from None
            raise
        report = generate(cfg, args.out, workers=args.workers, scheduler=args.scheduler,
                          progress=not args.quiet)
    if args.json:
        print(json.dumps(report))
    else:
        rate = report.get("samples_per_second")
        extra = f" ({rate:.1f} samples/s)" if rate else ""
        print(f"wrote {report['written']} samples to {report['root']} in "
              f"{report['seconds']:.1f} s{extra}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from pcad.cli.defect_flags import defect_range_help, sensor_help
    from pcad.cli.names import (
        DATASET_CONDITIONS,
        DATASET_DEFAULT_DEFECTS,
        DATASET_MAX_POINTS,
        DATASET_MAX_SIDE,
        INJECT_DEFAULT_DEFECTS,
        RENDER_DEFECTS,
    )

    p = sub.add_parser(
        "make-dataset", help="render a synthetic RGB + xyz dataset (MVTec 3D-AD layout)",
        description="Render built-in parts or your meshes with geometric and colour defects "
        "into an MVTec 3D-AD (or Real3D-AD) dataset with exact ground truth. Reruns resume.")
    p.add_argument("--out", required=True, help="output folder (new, empty or a previous run "
                   "of the same configuration; one run at a time: a second run into it is "
                   "refused while the first holds its lock, <out>/.pcad-lock)")
    from pcad.cli.outputs import add_overwrite_flag

    add_overwrite_flag(p)  # else a folder of another dataset is refused
    p.add_argument("--objects", nargs="+", metavar="builtin|PATH",
                   help="'builtin' (default) and/or mesh files or folders of meshes")
    p.add_argument("--categories", nargs="+", metavar="NAME", help="categories to make")
    p.add_argument("--train", type=int, default=10)
    p.add_argument("--validation", type=int, default=2)
    p.add_argument("--test-good", type=int, default=4)
    p.add_argument("--test-defect", type=int, default=4, help="samples per defect type")
    p.add_argument("--defects", nargs="+", metavar="TYPE",
                   help=f"defect types of the test set, among {' '.join(RENDER_DEFECTS)} "
                   f"(default: {' '.join(DATASET_DEFAULT_DEFECTS)}); --from-mvtec3d takes the "
                   f"geometric ones (default: {' '.join(INJECT_DEFAULT_DEFECTS)})")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help=f"image height and width, 8 to {DATASET_MAX_SIDE} pixels each (about 400 "
                   "bytes of memory per pixel while a sample is made)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variation", type=float, default=0.03,
                   help="dimension tolerance of the built-in parts (fraction)")
    p.add_argument("--conditions", default="standard",
                   metavar="{" + ",".join(DATASET_CONDITIONS) + "}",
                   help="acquisition conditions of the test samples: 'standard' (the "
                   "renderer's own pose, light and mat jitter, as train and validation) or "
                   "'strong' (a robustness split: tilt 0-18 deg, shift +-12%% of the view, "
                   "distance x0.8-1.1, light elevation 55+-30 deg and intensity 0.85+-0.35, "
                   "exposure x0.6-1.6, gain x1-2.5, a mat of its own per sample: colour, "
                   "texture contrast, height); train and validation stay standard")
    p.add_argument("--points", type=int, default=16384,
                   help="points per training prototype (real3d format; at most "
                   f"{DATASET_MAX_POINTS})")
    p.add_argument("--sensor", nargs="+", action="extend", metavar="KEY=VALUE",
                   help=sensor_help())
    p.add_argument("--defect-range", nargs="+", action="extend",
                   metavar="DEFECT.PARAM=LO:HI", help=defect_range_help())
    p.add_argument("--workers", type=int, default=1, help="local processes")
    p.add_argument("--format", choices=("mvtec3d", "real3d"), default="mvtec3d")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address")
    p.add_argument("--from-mvtec3d", metavar="ROOT",
                   help="inject geometric defects into the good scans of this dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
