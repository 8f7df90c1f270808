"""The command line: ``python -m seglib COMMAND`` (or ``seglib COMMAND``).

Errors print as one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seglib.errors import SeglibError


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the known datasets and which are found locally, with sample counts."""
    from seglib.data import SPECS, find_folder
    from seglib.paths import data_dir

    print(f"data folder: {data_dir()} (set SEGLIB_DATA_DIR or pass --root to change)")
    print(f"{'name':17s} {'task':10s} {'classes':>7s}  {'found':32s} counts")
    for name, spec in SPECS.items():
        try:
            folder = find_folder(name, args.root)
        except SeglibError:
            print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {'no':32s} -")
            continue
        counts = ", ".join(f"{s} {len(spec.list_items(folder, s))}" for s in spec.splits
                           if spec.has_split(folder, s))
        print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {str(folder)[-32:]:32s} {counts}")
    return 0


def ensure_dataset(name: str, root: str | None, source: str | None = None):
    """The dataset's folder: found locally, or downloaded (from ``source`` or the official URL)."""
    from seglib.data import find_folder, get_spec
    from seglib.download import download_dataset
    from seglib.paths import data_dir

    get_spec(name)
    try:
        return find_folder(name, root)
    except SeglibError:
        if name == "synthetic" or (root and source is None and not Path(root).expanduser().is_dir()):
            raise  # nothing to download, or a mistyped --root: only an explicit --source creates it
        print(f"{name} not found locally: downloading it (or taking --source)", flush=True)
        return download_dataset(name, root or data_dir(), source=source)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Find (or download) a dataset, decode every sample, print counts and mask statistics."""
    from seglib.data.prepare import format_stats, prepare

    root = ensure_dataset(args.dataset, args.root, args.source)
    results = prepare(args.dataset, root, max_samples=args.max_samples)
    print(format_stats(args.dataset, results))
    problems = sum(len(r.problems) for r in results)
    if problems:
        print(f"error: {problems} samples failed the checks above. Fix: repair or replace each file named "
              "on a PROBLEM: line (re-download the dataset if many), then run prepare again", file=sys.stderr)
        return 1
    return 0


SMOKE = dict(epochs=2, image_size=64, batch_size=4, max_steps=3, max_samples=16, num_workers=0,
             model_options={"base_channels": 8}, log_freq=1)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; writes best.pt, last.pt, history.csv/json and metrics.json into --out."""
    from seglib.engine import TrainConfig, fit

    options = {}
    if args.big:
        options["big"] = True
    if args.backbone:
        options["backbone"] = args.backbone
    if args.model == "deeplabv3plus":
        options["train_trunk"] = args.train_trunk
        if args.pretrained:
            options["pretrained"] = args.pretrained
    values = {k: v for k, v in vars(args).items() if v is not None}
    cfg_fields = {k: values[k] for k in ("dataset", "model", "root", "epochs", "image_size", "batch_size",
                                          "lr", "weight_decay", "optimizer", "schedule", "warmup_epochs",
                                          "loss", "amp", "compile", "data_path", "num_workers", "seed",
                                          "deterministic", "patience", "save_freq", "log_freq",
                                          "val_images", "out") if k in values}
    if args.smoke:
        smoke = dict(SMOKE)
        if args.model == "deeplabv3plus":
            smoke["model_options"] = {}
        options = {**smoke.pop("model_options"), **options}
        cfg_fields = {**smoke, **cfg_fields}
    cfg_fields.setdefault("out", f"runs/{cfg_fields.get('dataset', 'pennfudan')}_{args.model}")
    cfg = TrainConfig(**cfg_fields, model_options=options)
    cfg.root = str(ensure_dataset(cfg.dataset, cfg.root))
    result = fit(cfg, resume=args.resume, init_from=args.init_from)
    best = result["best"]
    print(f"best val mIoU {best['val_miou']:.4f} at epoch {best['epoch']} "
          f"({result['wall_seconds']:.0f} s); outputs in {result['out']}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def add_train_parser(sub) -> None:
    from seglib.engine import AMP_MODES, DATA_PATHS
    from seglib.models import MODEL_NAMES
    from seglib.schedules import SCHEDULES

    p = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    p.add_argument("--dataset", help="dataset name (default pennfudan)")
    p.add_argument("--root", help="the dataset folder, or a folder holding it")
    p.add_argument("--model", default="unet", choices=MODEL_NAMES)
    p.add_argument("--big", action="store_true", help="UNet/Hourglass at base width 64 (31M parameters)")
    p.add_argument("--backbone", help="DeepLabV3+ trunk: resnet18, resnet34 or resnet50")
    p.add_argument("--pretrained", help="DeepLabV3+: 'imagenet' (from torchvision's cache) or a path")
    p.add_argument("--train-trunk", "--trainTrunk", action=argparse.BooleanOptionalAction, default=True,
                   help="train the DeepLabV3+ trunk (default) or freeze it")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--weight-decay", "--weightDecay", type=float)
    p.add_argument("--optimizer", choices=("adamw", "sgd"))
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--loss", help="ce, bce, dice, focal or a sum such as ce+dice")
    p.add_argument("--amp", choices=AMP_MODES)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--data-path", choices=DATA_PATHS)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None)
    p.add_argument("--patience", type=_positive_int, help="early stopping on val mIoU")
    p.add_argument("--save-freq", "--saveFreq", type=_positive_int, help="write last.pt every N epochs")
    p.add_argument("--log-freq", "--logFreq", type=_positive_int, help="progress update every N steps")
    p.add_argument("--val-images", "--valImages", type=_positive_int, help="validate on N images only")
    p.add_argument("--out", help="output folder (default runs/DATASET_MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-from", "--loadCheckpoint", help="start from the weights of a checkpoint")
    p.add_argument("--smoke", action="store_true", help="tiny CPU configuration (CI)")
    p.set_defaults(func=cmd_train)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <prog>: <problem>. Fix: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}. Fix: see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seglib", description="The segmentation workbook's tools.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help=cmd_datasets.__doc__)
    p.add_argument("--root", help="folder holding the datasets (default: $SEGLIB_DATA_DIR or data/)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("prepare", help=cmd_prepare.__doc__)
    p.add_argument("dataset", nargs="?", default="pennfudan", help="dataset name (default pennfudan)")
    p.add_argument("--root", help="the dataset folder, or a folder holding it")
    p.add_argument("--source", help="a URL or a local archive to take instead of the official URL")
    p.add_argument("--max-samples", type=int, help="check only this many samples per split")
    p.set_defaults(func=cmd_prepare)

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SeglibError, OSError) as exc:  # expected failures: one line, no traceback
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; last.pt (if any) holds the last finished epoch: use --resume", file=sys.stderr)
        return 130
