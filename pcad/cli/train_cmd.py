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


def synthetic_defect_options(args: argparse.Namespace) -> dict[str, object]:
    """``--holdout-defects`` / ``--textures`` as detector options; only for detectors that train
    on synthetic defects (``needs_defect_source``, e.g. synthsup), else a clear error."""
    from pcad.detectors import detector_info
    from pcad.errors import InvalidInputError

    out: dict[str, object] = {}
    if args.holdout_defects:
        out["holdout_defects"] = list(args.holdout_defects)
    if args.textures is not None:
        out["textures"] = args.textures
    if out and not detector_info(args.detector).obj.needs_defect_source:
        flags = " and ".join(f"--{k.replace('_', '-')}" for k in out)
        raise InvalidInputError(f"{flags}: detector {args.detector!r} does not train on "
                                "synthetic defects (use --detector synthsup)")
    return out


#: detector options that ``pcad train`` sets with a flag of their own
FLAG_OPTIONS = ("rgb_backbone", "weights", "image_size", "coreset_ratio", "holdout_defects",
                "textures")


def effective_train_config(cfg: dict[str, object]) -> dict[str, object]:
    """``pcad train --print-config``: the flags of the detector's own options (those named
    like an argument, e.g. ``image_size``) filled with its defaults, and ``option`` the mapping
    of every other detector option (defaults, then the ``-o`` values), so that the printed file
    round-trips through ``--config`` and a flag on the command line still wins."""
    from pcad.detectors import detector_info

    defaults = dict(detector_info(str(cfg["detector"])).obj.defaults)
    flags = set(FLAG_OPTIONS) | (set(defaults) & set(cfg))
    for key in flags:
        if key in cfg and cfg[key] is None and defaults.get(key) is not None:
            cfg[key] = defaults[key]
    given = parse_options(list(cfg.get("option") or []))
    options = {k: v for k, v in defaults.items() if k not in flags}
    options.update(given)
    return {**cfg, "option": options}


def _split_line(name: str, block: dict) -> str:
    def f(v: object) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return (f"{name} [{', '.join(block['defects']) or 'none in the test set'}]: I-AUROC "
            f"{f(block['i_auroc'])}  P-AUROC {f(block['p_auroc'])}  AUPRO@0.3 "
            f"{f(block['aupro']['0.3'])}")


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
    config.update(synthetic_defect_options(args))
    from pcad.cli.device_arg import apply_device

    apply_device(config, args)  # --device overrides -o device=
    target = chosen_categories(args)
    train(args.data, target, args.detector, args.out, config, progress=not args.quiet,
          false_alarm_rate=args.false_alarm_rate, overwrite=args.overwrite,
          resume=args.resume)
    from pcad.distributed import get_context

    ctx = get_context()  # under torchrun (pcad.distributed) rank 0 alone reports
    if ctx.rank == 0:
        from pcad.calibration import read_calibration
        from pcad.engine import run_categories

        workers = f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""
        what = args.category if isinstance(target, str) else \
            ", ".join(run_categories(args.out) or target)
        print(f"trained {args.detector} on {what}{workers}; run saved to {args.out}")
        cal = read_calibration(args.out)
        if cal is not None:
            print(f"threshold {cal.threshold:.6g} (raw score; normalized 0.5) for a "
                  f"{100 * cal.false_alarm_rate:g}% false-alarm rate on {cal.n_validation} "
                  "good validation samples")
    return 0


def chosen_categories(args: argparse.Namespace) -> str | list[str]:
    """``--category NAME`` (a string) or ``--categories all|A B ...`` (a list); one of them,
    not both (an InvalidInputError otherwise)."""
    from pcad.errors import InvalidInputError

    one, many = getattr(args, "category", None), getattr(args, "categories", None)
    if (one is None) == (many is None):
        raise InvalidInputError("give --category NAME (one category) or --categories "
                                "all|NAME ... (one unified model), not " +
                                ("both" if one is not None else "neither"))
    return one if one is not None else list(many)


def vitad_line(m: dict) -> str:
    """ViTAD's metrics of a metrics object as one line (``n/a`` where one is missing)."""
    from pcad.metrics import VITAD_METRICS

    def f(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"

    return "  ".join(f"{label} {f(m.get(key))}" for key, label in VITAD_METRICS) + \
        f"  mAD {f(m.get('mad'))}"


def run_eval(args: argparse.Namespace) -> int:
    from pcad.cli.outputs import replacing
    from pcad.engine import evaluate_run

    target_cats = chosen_categories(args)
    if not isinstance(target_cats, str):
        return _run_eval_categories(args, target_cats)
    with replacing(args.out, args.overwrite) as target:  # the old results kept until complete
        m = evaluate_run(args.data, args.category, args.run, target, progress=not args.quiet,
                         device=args.device)
    if args.json:
        print(json.dumps(m))
    else:
        print(f"{args.category}: I-AUROC {m['i_auroc']:.3f}  P-AUROC {m['p_auroc']:.3f}  "
              f"AUPRO@0.3 {m['aupro']['0.3']:.3f}  ({m['n_test']} samples, "
              f"{m['latency_ms_per_sample']:.0f} ms/sample); wrote {args.out}/metrics.json")
        print(f"  {vitad_line(m)}")
        if m.get("at_threshold"):  # a run with a calibrated threshold
            c = m["at_threshold"]

            def pct(v: float | None) -> str:
                return "n/a" if v is None else f"{v:.3f}"

            print(f"  at the run's threshold {c['threshold']:.6g}: TP {c['tp']}  FP {c['fp']}  "
                  f"TN {c['tn']}  FN {c['fn']}  precision {pct(c['precision'])}  recall "
                  f"{pct(c['recall'])}")
        if "holdout" in m:  # a run trained with --holdout-defects
            print(f"  {_split_line('held-out', m['holdout'])}\n  {_split_line('seen', m['seen'])}")
    return 0


def _run_eval_categories(args: argparse.Namespace, categories: list[str]) -> int:
    """``pcad eval --categories``: every category with the run's one model; the means on top."""
    from pcad.cli.outputs import replacing
    from pcad.multiclass import evaluate_categories, resolve_categories

    resolve_categories(args.data, categories)  # a missing name: an error before any folder
    with replacing(args.out, args.overwrite) as target:
        m = evaluate_categories(args.data, categories, args.run, target,
                                progress=not args.quiet, device=args.device)
    if args.json:
        print(json.dumps(m))
        return 0
    width = max(len(c) for c in [*m["categories"], "mean"])
    for cat, block in m["per_category"].items():
        print(f"{cat:<{width}}  {vitad_line(block)}  ({block['n_test']} samples)")
    print(f"{'mean':<{width}}  {vitad_line(m)}  ({m['n_test']} samples); wrote "
          f"{args.out}/metrics.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from pcad.cli.device_arg import add_device_argument
    from pcad.cli.names import DETECTORS, DISTRIBUTED_DETECTORS, SUPERVISION_DEFECTS
    from pcad.cli.outputs import add_overwrite_flag

    p = sub.add_parser("train", help="fit a detector on a category's good training samples",
                       description="Fit a detector on a category's good training samples. "
                       "Runs data-parallel under torchrun (e.g. torchrun --nproc_per_node 2 -m "
                       "pcad train ...; gloo on CPU, NCCL on GPUs) for detectors that support "
                       f"it ({', '.join(DISTRIBUTED_DETECTORS)}; not the others); rank 0 writes "
                       "the run.")
    p.add_argument("--data", required=True, help="dataset root (MVTec 3D-AD layout)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--category", help="the category to train on (this or --categories)")
    which.add_argument("--categories", nargs="+", metavar="NAME",
                       help="train one unified model on several categories: all, or names")
    p.add_argument("--detector", default="btf", choices=DETECTORS)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--rgb-backbone", help="effnet-lite0 (default) or timm:NAME/torchvision:NAME")
    p.add_argument("--weights", help="local checkpoint of the RGB backbone (never downloaded)")
    p.add_argument("--image-size", type=int,
                   help="input size (multiple of 8, up to 4096; default 224)")
    p.add_argument("--coreset-ratio", type=float, help="fraction of patches kept (default 0.1)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="any detector option (repeatable; values read as JSON when they parse, "
                        "e.g. -o epochs=5 -o hidden=null)")
    p.add_argument("--holdout-defects", nargs="+", metavar="TYPE",
                   help="synthetic defect types kept out of training (synthsup), among "
                        f"{' '.join(SUPERVISION_DEFECTS)}; pcad eval reports the test types of "
                        "these names apart")
    p.add_argument("--textures", metavar="DIR",
                   help="folder of texture images (png/jpg) for synthsup's RGB defects "
                        "(default: procedural Perlin textures)")
    p.add_argument("--false-alarm-rate", type=float, default=None, metavar="RATE",
                   help="fraction of good validation samples the calibrated decision "
                        "threshold flags (default 0.01; recorded in the run's train.json)")
    add_overwrite_flag(p)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from the checkpoint in --out (same "
                        "detector, options and data; the result equals an uninterrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no loss")
    add_device_argument(p)
    p.set_defaults(func=run_train, _effective_config=effective_train_config)

    e = sub.add_parser("eval", help="evaluate a run on a category's test set")
    e.add_argument("--data", required=True)
    which = e.add_mutually_exclusive_group()
    which.add_argument("--category", help="the category to evaluate (this or --categories)")
    which.add_argument("--categories", nargs="+", metavar="NAME",
                       help="evaluate each of these categories (all, or names) with the run's "
                            "one model: per-category metrics and their means")
    e.add_argument("--run", required=True, help="run folder written by pcad train")
    e.add_argument("--out", required=True, help="results folder")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_overwrite_flag(e)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(e, "where the run computes: auto (CUDA when available), cpu, cuda or "
                           "cuda:N, whatever device it was trained on (default: the run's own "
                           "device option, auto unless trained with -o device=)")
    e.set_defaults(func=run_eval)
