"""``pcad pretrain-points``: Point-MAE masked point modelling, written as a checkpoint that
``pcad.features.load_point_encoder`` (and M3DM-style code) reads.

Example::

    pcad pretrain-points --data parts/ --out pointmae.pth --epochs 25 --seed 0
"""

from __future__ import annotations

import argparse
import sys


def run_pretrain_cmd(args: argparse.Namespace) -> int:
    from pcad.features.pointmae_pretrain import PretrainConfig, run_pretrain

    config = PretrainConfig(
        epochs=args.epochs, seed=args.seed, points=args.points, num_group=args.num_group,
        group_size=args.group_size, trans_dim=args.trans_dim, depth=args.depth,
        num_heads=args.num_heads, decoder_depth=args.decoder_depth,
        batch_size=args.batch_size, lr=args.lr, views=not args.no_views,
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.threads is not None:
        import torch

        from pcad.checks import check_int

        torch.set_num_threads(check_int(args.threads, "--threads", 1))

    from pcad.cli.outputs import check_out

    check_out(args.out, args.overwrite, "checkpoint file")  # written atomically at the end
    summary = run_pretrain(args.data, args.out, config, half=args.half,
                           encoder_only=args.encoder_only, log=None if args.quiet else log,
                           device=args.device or "auto")
    print(f"wrote {summary['out']} ({summary['bytes'] / 1e6:.2f} MB): {summary['clouds']} "
          f"clouds, {summary['epochs']} epochs, final chamfer-L2 {summary['final_loss']:.6f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-points",
        help="pretrain a Point-MAE point encoder (masked point modelling) on local clouds",
        description="Point-MAE masked point modelling on an MVTec 3D-AD style dataset "
                    "(every category's train/good/xyz) or a folder of meshes / point clouds. "
                    "Writes the official checkpoint layout {'base_model': ..., 'pcad': ...}.")
    p.add_argument("--data", required=True,
                   help="MVTec 3D-AD style root, or a folder of meshes / point cloud files")
    p.add_argument("--out", required=True, help="checkpoint file to write (.pth); the loss of "
                   "every epoch goes to OUT.train_log.csv")
    p.add_argument("--epochs", type=int, default=25, help="epochs (default 25)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--num-group", type=int, default=128,
                   help="groups per training cloud (default 128; inference uses 4x as many, "
                        "at most --points)")
    p.add_argument("--group-size", type=int, default=32, help="points per group (default 32)")
    p.add_argument("--trans-dim", type=int, default=192, help="token width (default 192)")
    p.add_argument("--depth", type=int, default=6, help="encoder blocks (default 6)")
    p.add_argument("--num-heads", type=int, default=6, help="attention heads (default 6)")
    p.add_argument("--decoder-depth", type=int, default=2, help="decoder blocks (default 2)")
    p.add_argument("--points", type=int, default=2048,
                   help="points per training cloud (default 2048); also the encoder's "
                        "max_points at inference")
    p.add_argument("--batch-size", type=int, default=8, help="clouds per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--no-views", action="store_true",
                   help="train on whole meshes instead of random single views")
    p.add_argument("--half", action="store_true", help="store float16 tensors")
    p.add_argument("--encoder-only", action="store_true",
                   help="store only the encoder (MAE_encoder.*), not the decoder and head")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (the bytes of the result may depend on it)")
    from pcad.cli.outputs import add_overwrite_flag

    add_overwrite_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress messages (per-epoch loss)")
    from pcad.cli.device_arg import add_device_argument

    add_device_argument(p, "where the model trains: auto (default: CUDA when available), cpu, "
                           "cuda or cuda:N (the bytes of the result depend on the device)")
    p.set_defaults(func=run_pretrain_cmd)
