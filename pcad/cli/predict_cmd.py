"""``pcad predict`` (apply a run to new scans) and ``pcad export`` (the run as TorchScript).

The logic lives in :mod:`pcad.predict` and :mod:`pcad.export`; this module only parses the
arguments and prints. Flags shared with other commands (``--device``, ``--overwrite``: a
non-empty ``-o`` is refused without it, ``--category`` for the category-mismatch warning) are
added in :func:`_common_flags`.
"""

from __future__ import annotations

import argparse


def run_predict(args: argparse.Namespace) -> int:
    from pcad.cli.outputs import replacing
    from pcad.predict import predict_run

    with replacing(args.out, args.overwrite) as target:  # the old results kept until complete
        summary = predict_run(args.run, args.inputs, target, progress=not args.quiet,
                              category=args.category, device=args.device,
                              exclude=[args.out])
    cal = summary["calibration"]
    if cal is None:
        print(f"note: run {args.run} has no calibrated threshold (no validation split at "
              "training time): raw scores only, no ok/defect decision")
    n = summary["n"]
    decided = "" if cal is None else (f"; {summary['n_defect']} defect, "
                                      f"{n - summary['n_defect']} ok at threshold "
                                      f"{cal['threshold']:.6g}")
    print(f"predicted {n} scan(s) with {summary['detector']}{decided}; wrote "
          f"{args.out}/predictions.csv, predictions.json, maps/ and overlays/")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pcad.export import export_run

    info = export_run(args.run, args.out)
    print(f"exported {info['detector']} ({info['format']}, inputs {', '.join(info['inputs'])})"
          f" to {args.out}")
    return 0


def _common_flags(p: argparse.ArgumentParser) -> None:
    """The flags other commands share: ``--device``, ``--overwrite``, ``--category``,
    ``--quiet``."""
    from pcad.cli.device_arg import add_device_argument
    from pcad.cli.outputs import add_overwrite_flag

    add_device_argument(p)
    add_overwrite_flag(p)
    p.add_argument("--category",
                   help="the scans' category: a warning when the run was trained on another")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="apply a trained run to new scans (scores, decisions, maps)",
        description="Score new, unlabelled scans with a run: per scan a raw and a normalized "
        "score (the run's calibrated threshold at 0.5), the decision ok/defect, the anomaly "
        "map as float32 TIFF and a PNG overlay; a CSV and JSON summary. INPUT: xyz TIFFs "
        "(the RGB PNG beside them, MVTec 3D-AD layout or same folder), RGB images, or "
        "folders of them (e.g. a dataset split folder; labels are ignored).")
    p.add_argument("--run", required=True, help="run folder written by pcad train")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scan files or folders")
    p.add_argument("-o", "--out", required=True, help="results folder")
    _common_flags(p)
    p.set_defaults(func=run_predict)

    e = sub.add_parser(
        "export", help="write a run as a TorchScript file (patchcore-rgb, btf, cfm, m3dm, lsfa)",
        description="Write a run's neural parts, memory bank and preprocessing settings as "
        "one TorchScript file (torch.jit.load(FILE)); see pcad.export for its inputs.")
    e.add_argument("--run", required=True, help="run folder written by pcad train")
    e.add_argument("-o", "--out", required=True, help="the TorchScript file to write (.pt)")
    e.set_defaults(func=run_export)
