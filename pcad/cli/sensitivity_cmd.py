"""``pcad sensitivity``: detection quality against defect strength (a detectability curve)."""

from __future__ import annotations

import argparse
import json


def run_sensitivity_cmd(args: argparse.Namespace) -> int:
    from pcad.sensitivity import run_sensitivity

    config = {}
    if args.image_size is not None:
        config["image_size"] = args.image_size
    if args.coreset_ratio is not None:
        config["coreset_ratio"] = args.coreset_ratio
    from pcad.cli.outputs import replacing

    with replacing(args.out, args.overwrite, "results folder", in_place=True) as out:
        summary = run_sensitivity(args.data, args.category, args.detector, args.strengths, out,
                                  defects=args.defects, n_per_defect=args.n_per_defect,
                                  seed=args.seed, config=config or None, run=args.run,
                                  progress=not args.quiet and not args.json,
                                  device=args.device)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['category']} / {summary['detector']}, defects "
          f"{', '.join(summary['defects'])} ({summary['n_per_defect']} each):")
    print(f"{'strength':>10}  {'I-AUROC':>7}  {'P-AUROC':>7}  {'AUPRO@0.3':>9}  {'n':>4}")
    for r in summary["rows"]:
        print(f"{r['strength']:>10.4g}  {r['i_auroc']:>7.3f}  {r['p_auroc']:>7.3f}  "
              f"{r['aupro_0.3']:>9.3f}  {r['n_test']:>4d}")
    limit = summary["detection_limit"]
    if limit is None:
        top = max(r["strength"] for r in summary["rows"])
        print(f"detection limit: not reached (I-AUROC < {summary['threshold']} at every "
              f"strength up to {top:.4g})")
    else:
        print(f"detection limit: {limit:.4g} (smallest strength with I-AUROC >= "
              f"{summary['threshold']}, interpolated)")
    print(f"wrote {summary['files']['csv']}, .json, .png and .html")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from pcad.cli.names import DETECTORS
    from pcad.cli.outputs import add_overwrite_flag

    p = sub.add_parser("sensitivity",
                       help="detectability curve: I-AUROC and AUPRO against defect strength")
    p.add_argument("--data", required=True, help="dataset root (MVTec 3D-AD layout)")
    p.add_argument("--category", required=True)
    p.add_argument("--detector", choices=DETECTORS,
                   help="detector to train (required unless --run is given)")
    p.add_argument("--strengths", required=True, nargs="+", type=float, metavar="S",
                   help="defect strengths, fractions of the object's bounding-box diagonal")
    p.add_argument("--out", required=True, help="results folder (new or empty, or any with "
                   "--overwrite)")
    p.add_argument("--defects", nargs="+", default=["bump", "dent"], metavar="DEFECT",
                   help="geometric defects with a strength (default: bump dent)")
    p.add_argument("--n-per-defect", type=int, default=3,
                   help="defective test samples per defect type and strength (default 3)")
    p.add_argument("--seed", type=int, default=0, help="sample seeds (same at every strength)")
    p.add_argument("--run", help="an existing run folder (pcad train) instead of training")
    p.add_argument("--image-size", type=int, help="detector input size (multiple of 8, 32 to 4096)")
    p.add_argument("--coreset-ratio", type=float, help="fraction of patches kept (default 0.1)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_overwrite_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from pcad.cli.device_arg import add_device_argument

    add_device_argument(p)
    p.set_defaults(func=run_sensitivity_cmd)
