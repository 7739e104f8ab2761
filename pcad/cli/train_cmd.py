"""``pcad train`` and ``pcad eval``: fit a detector on a category, evaluate a run."""

from __future__ import annotations

import argparse
import json


def parse_options(items: list[str]) -> dict[str, object]:
    """``["epochs=5", "hidden=null", "rgb_backbone=effnet-lite0"]`` -> detector options: each
    value is read as JSON when it parses (numbers, booleans, null, lists), else as a string."""
    from pcad.errors import InvalidInputError

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def run_train(args: argparse.Namespace) -> int:
    from pcad.engine import train

    config = {}
    if args.rgb_backbone is not None:
        config["rgb_backbone"] = args.rgb_backbone
    if args.weights is not None:
        config["weights"] = args.weights
    if args.image_size is not None:
        config["image_size"] = args.image_size
    if args.coreset_ratio is not None:
        config["coreset_ratio"] = args.coreset_ratio
    config.update(parse_options(args.option or []))
    train(args.data, args.category, args.detector, args.out, config, progress=not args.quiet)
    print(f"trained {args.detector} on {args.category}; run saved to {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from pcad.engine import evaluate_run

    m = evaluate_run(args.data, args.category, args.run, args.out, progress=not args.quiet)
    if args.json:
        print(json.dumps(m))
    else:
        print(f"{args.category}: I-AUROC {m['i_auroc']:.3f}  P-AUROC {m['p_auroc']:.3f}  "
              f"AUPRO@0.3 {m['aupro']['0.3']:.3f}  ({m['n_test']} samples, "
              f"{m['latency_ms_per_sample']:.0f} ms/sample); wrote {args.out}/metrics.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from pcad.detectors import list_detectors

    p = sub.add_parser("train", help="fit a detector on a category's good training samples")
    p.add_argument("--data", required=True, help="dataset root (MVTec 3D-AD layout)")
    p.add_argument("--category", required=True)
    p.add_argument("--detector", default="btf", choices=list_detectors())
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--rgb-backbone", help="effnet-lite0 (default) or timm:NAME/torchvision:NAME")
    p.add_argument("--weights", help="local checkpoint of the RGB backbone (never downloaded)")
    p.add_argument("--image-size", type=int, help="input size (multiple of 8; default 224)")
    p.add_argument("--coreset-ratio", type=float, help="fraction of patches kept (default 0.1)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="any detector option (repeatable; values read as JSON when they parse, "
                        "e.g. -o epochs=5 -o hidden=null)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a run on a category's test set")
    e.add_argument("--data", required=True)
    e.add_argument("--category", required=True)
    e.add_argument("--run", required=True, help="run folder written by pcad train")
    e.add_argument("--out", required=True, help="results folder")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_eval)
