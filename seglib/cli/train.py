"""``seglib train`` (a new run, ``--resume``, ``--test``, ``--test-only``) and ``seglib quickstart``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

from seglib.cli.data import ensure_dataset
from seglib.cli.flags import MODEL_FLAGS, REFERENCE_SPELLINGS
from seglib.errors import ConfigError, DataError, SeglibError


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; writes best.pt, last.pt, history.csv/json, metrics.json and curves.png into --out
    (best_loss.pt too with --keep-best-loss)."""
    from seglib.resume import refuse_changed_options, resumable, run_options
    from seglib.train_config import TrainConfig

    fields = _given_fields(args)
    if args.config:  # the file's options, under the flags given beside it
        from seglib.train_config import read_config_file

        fields = {**read_config_file(args.config), **fields}
    if fields.get("split_file"):  # recorded as it is: --test-only and --resume work from any folder
        fields["split_file"] = str(Path(fields["split_file"]).absolute())
    dataset = fields.get("dataset", "synthetic" if args.smoke else "pennfudan")  # --smoke's default, or train's
    out = Path(fields.setdefault("out", f"runs/{dataset}_{fields.get('model', 'unet')}"))
    if args.test_only:
        return _test_only(out, fields, args)
    if args.resume and args.overwrite:
        raise ConfigError(f"--resume goes on with the run in {out} and --overwrite replaces it: keep one")
    if not (args.resume or args.overwrite):
        _refuse_earlier_run(out, "pass --resume to continue it, --overwrite to replace it, or another --out")
    saved = run_options(out / "last.pt") if args.resume and resumable(out) else None
    if args.resume and saved is None:
        print(f"note: {out / 'last.pt'} does not exist: starting a new run", file=sys.stderr)
    cfg = TrainConfig(**{**(saved or {}), **_with_model(fields, args, saved)})  # a resumed run's own, changed if given
    if saved is not None:  # refused before any dataset is looked for (or downloaded)
        refuse_changed_options(out / "last.pt", saved, cfg)
    folder = run_data(cfg.dataset, cfg.root, out / "last.pt") if saved is not None \
        else ensure_dataset(cfg.dataset, cfg.root)
    cfg.root = str(folder.absolute())  # recorded as it is: --test-only and --resume work from any folder
    _fit_and_report(cfg, args)
    if args.test and int(os.environ.get("RANK", "0")) == 0:
        return evaluate_run(cfg, folder, args.device)
    return 0


def _given_fields(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` fields the flags give; a reference project's --unet / --hourglass is ``model``."""
    from seglib.train_config import given_options

    fields = given_options(args)
    flags = sorted(set(args.model_flags or ()))
    if len(flags) > 1 or (flags and fields.get("model", flags[0]) != flags[0]):
        given = [f"--{m}" for m in flags] + ([f"--model {fields['model']}"] if "model" in fields else [])
        raise ConfigError(f"{' and '.join(given)} name different models: keep one")
    if flags:
        fields["model"] = flags[0]
    return fields


def _with_model(fields: dict, args: argparse.Namespace, saved: dict | None) -> dict:
    """``fields`` with --smoke's sizes and the model's options: the model flags' (--big, --base-channels, --depth,
    --upsample, --backbone, --output-stride, --pretrained, --[no-]train-trunk) over those of the run ``saved``
    (resumed or tested), whose model is the default one."""
    from seglib.models import check_options
    from seglib.train_config import TrainConfig

    fields = dict(fields)
    model = fields.get("model") or (saved or {}).get("model", "unet")
    if args.smoke:  # the tiny configuration, on the dataset and model asked for (else the synthetic shapes)
        fields.setdefault("dataset", "synthetic")
        smoke, default = asdict(TrainConfig.smoke()), asdict(TrainConfig())
        sizes = {k: v for k, v in smoke.items() if v != default[k] and k not in ("dataset", "model", "model_options")}
        tiny = {k: v for k, v in smoke["model_options"].items() if not (args.big and k == "base_channels")}
        fields = {**sizes, "model_options": tiny if model != "deeplabv3plus" else {}, **fields}  # --big wins
    own = saved["model_options"] if saved and saved["model"] == model else {}  # another model is refused later
    options = {**own, **fields.pop("model_options", {})}
    flags = {"big": args.big or None, "backbone": args.backbone, "pretrained": args.pretrained,
             "base_channels": args.base_channels, "depth": args.depth, "output_stride": args.output_stride,
             "upsample": args.upsample}
    options.update({name: value for name, value in flags.items() if value is not None})
    if args.train_trunk is False and model != "deeplabv3plus":
        raise ConfigError(f"--no-train-trunk freezes DeepLabV3+'s ResNet trunk; {model} has none: leave it out")
    if args.train_trunk is not None and model == "deeplabv3plus":
        options.pop("train_trunk", None)  # trained: the default
        if not args.train_trunk:
            options["train_trunk"] = False
    check_options(model, options)  # before the data is searched or downloaded
    return {**fields, "model_options": options} if options or saved else fields


def _test_only(out: Path, fields: dict, args: argparse.Namespace) -> int:
    """``train --test-only``: score the run in ``out`` as it was trained (an option that would change it is
    refused, not ignored)."""
    from seglib.resume import run_options
    from seglib.train_config import TrainConfig

    if not (out / "best.pt").is_file():
        raise DataError(out / "best.pt", "not found: there is no trained run to test here",
                        "train first (--train, or python -m seglib train), or pass the run's --out")
    saved = run_options(out / "best.pt")  # test on the run's own dataset, not the flags' default
    if fields.get("dataset", saved["dataset"]) != saved["dataset"]:
        raise ConfigError(f"{out / 'best.pt'} was trained on {saved['dataset']}, not {fields['dataset']}: "
                          "drop --dataset (the run's own is used), or pass another run's --out")
    if args.resume or args.overwrite:
        raise ConfigError("--test-only trains nothing, so --resume and --overwrite do not apply: leave them out")
    cfg = TrainConfig(**{**saved, "out": str(out), "root": fields.get("root") or saved["root"]})
    asked = asdict(TrainConfig(**{**saved, **_with_model(fields, args, saved)}))
    ignored = [f"{k}: {saved[k]!r} → {v!r}" for k, v in asked.items() if k not in ("root", "out") and v != saved[k]]
    if ignored:
        raise ConfigError(f"--test-only scores the run in {out} as it was trained, so {'; '.join(ignored)} "
                          "would be ignored: leave those options out")
    return evaluate_run(cfg, run_data(cfg.dataset, cfg.root, out / "best.pt"), args.device)


def run_data(name: str, root: str | None, checkpoint: Path) -> Path:
    """The data of the run ``checkpoint`` belongs to, in ``root`` (the folder it recorded): found, never
    downloaded (a resumed or tested run scores what it trained on, or says where that went)."""
    from seglib.data import find_folder

    try:
        return find_folder(name, root)
    except DataError as exc:
        raise DataError(exc.path, f"{exc.problem} (the data of {checkpoint}, recorded as --root {root})",
                        "put the dataset back there, or pass --root with the folder that holds it now") from exc


def _fit_and_report(cfg, args: argparse.Namespace) -> None:
    """``fit(cfg)``, printing the best validation mIoU (on the first process only, under torchrun)."""
    from seglib.engine import fit
    from seglib.parallel import leave_distributed
    from seglib.paths import display_path
    from seglib.utils import get_device

    if int(os.environ.get("RANK", "0")) == 0:  # what runs where: the defaults too (no --dataset is Penn-Fudan)
        epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
        print(f"{'resuming' if args.resume else 'training'} {cfg.model} on {cfg.dataset} ({display_path(cfg.root)}): "
              f"{epochs} at {cfg.image_size} px, batch {cfg.batch_size}, on {get_device(args.device)}; outputs in "
              f"{cfg.out}", flush=True)
    # progress bars on a terminal only: in a log they are thousands of carriage returns
    try:
        result = fit(cfg, resume=args.resume, init_from=args.init_from, device=args.device,
                     progress=sys.stderr.isatty())
    finally:
        leave_distributed()  # torchrun: leave the process group cleanly
    best = result["best"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best val mIoU {best['val_miou']:.4f} (images at the training size) at epoch {best['epoch']} "
              f"({result['wall_seconds']:.0f} s); outputs in {result['out']}")
        try:
            print(f"curves: {write_curves(result['out'])}")
        except (SeglibError, OSError) as exc:  # the run is done and saved: a figure must not fail it, nor --test
            print(f"note: no curves.png ({exc}); python -m seglib curves {result['out']} draws it", file=sys.stderr)


def write_curves(run: Path, output: Path | None = None) -> Path:
    """``run/curves.png`` (or ``output``) from ``run/history.json``: train and val loss, val mIoU and val pixel
    accuracy per validation, the best val mIoU's epoch dotted (:func:`seglib.viz.plot_history`)."""
    import matplotlib.pyplot as plt

    from seglib.utils import write_atomic
    from seglib.viz import plot_history

    history = run / "history.json"
    if not history.is_file():
        raise DataError(history, "not found: no validation of this run has finished yet (or this is not a run "
                        "folder)", "pass the --out folder of a python -m seglib train run")
    fig = plot_history(history)
    fig.suptitle(str(run), fontsize=9)
    try:
        return write_atomic(output or run / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def cmd_curves(args: argparse.Namespace) -> int:
    """Draw a run's training curves into RUN/curves.png, also while it trains (train draws them when it ends)."""
    print(f"wrote {write_curves(Path(args.run), args.output and Path(args.output))}")
    return 0


def _refuse_earlier_run(out: Path, fix: str) -> None:
    """A run already in ``out`` is never replaced unasked."""
    earlier = [name for name in ("best.pt", "last.pt", "metrics.json") if (out / name).exists()]
    if earlier:
        raise ConfigError(f"{out} already holds a run ({', '.join(earlier)}); {fix}")


def evaluate_run(cfg, folder: Path, device: str | None) -> int:
    """The person-mask project's ``--test``: ``evaluate`` OUT/best.pt on the held-out split, which is the
    dataset's test split where it publishes one (and it is on disk), else val; with a split file, its "test"
    list, else its "val"."""
    import json

    from seglib.data import get_spec

    spec = get_spec(cfg.dataset)
    if cfg.split_file:
        try:
            split = "test" if "test" in json.loads(Path(cfg.split_file).read_text()) else "val"
        except (OSError, ValueError) as exc:
            raise DataError(cfg.split_file, f"the run's split file cannot be read ({exc})",
                            "put the split file back, or evaluate with --split-file FILE") from exc
    else:
        split = "test" if "test" in spec.splits and spec.has_split(folder, "test") else "val"
    if split == "val":
        print(f"note: {cfg.split_file or cfg.dataset} has no test split here: testing on val, the split that "
              "chose best.pt, so the score is optimistic", file=sys.stderr)
    from seglib.cli import main

    return main(["evaluate", "--checkpoint", str(Path(cfg.out) / "best.pt"), "--dataset", cfg.dataset,
                 "--split", split, "--root", str(folder), *(["--device", device] if device else [])])


def cmd_quickstart(args: argparse.Namespace) -> int:
    """A first result offline: train a small UNet on the pets sample shipped with seglib, score it, draw it."""
    from seglib.evaluation import format_report
    from seglib.quickstart import run_quickstart

    out = Path(args.out)
    if not args.overwrite:
        _refuse_earlier_run(out, "pass --overwrite to replace it, or another --out")
    result = run_quickstart(out, smoke=args.smoke, device=args.device, progress=sys.stderr.isatty())
    print(format_report(result["report"]))
    print(f"trained in {result['seconds']:.0f} s; figure: {result['figure']} (the run and evaluation.json beside it)")
    return 0


def add_train_parsers(sub) -> None:
    from seglib.models import OPTION_RULES
    from seglib.models.unet import UPSAMPLING
    from seglib.train_config import add_train_arguments, flag_type

    p = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    add_train_arguments(p)  # one flag per TrainConfig field: seglib/train_config.py
    models = p.add_argument_group("model options")
    models.add_argument("--big", action="store_true", help="UNet/Hourglass at base width 64, the paper's widths "
                        "64..1024 (UNet 31.0M, Hourglass 27.9M parameters); also the person-mask project's --big")
    models.add_argument("--base-channels", type=flag_type(int, OPTION_RULES["base_channels"]), metavar="N",
                        help="UNet/Hourglass width of the first level, doubled at each level (default 32: 7.8M "
                        "parameters; the person-mask project's nets: 8 with --depth 3, 0.12M; its big one: 32 "
                        "with --depth 3, 1.9M)")
    models.add_argument("--depth", type=flag_type(int, OPTION_RULES["depth"]), metavar="N",
                        help="UNet/Hourglass poolings, 1..6 (default 4; the person-mask project's nets: 3)")
    models.add_argument("--upsample", choices=UPSAMPLING, help="UNet/Hourglass decoder: learned 2x2 transposed "
                        "convs (transpose, default) or bilinear interpolation with half the decoder's channels "
                        "(bilinear: milesial's bilinear=True, the CamVid project's; 17.3M parameters with --big)")
    models.add_argument("--output-stride", type=int, choices=(8, 16),
                        help="DeepLabV3+: 16 (default) or 8 (the MSRC project's; finer logits, about 2x the work)")
    models.add_argument("--backbone", help="DeepLabV3+ trunk: resnet18 (default), resnet34, resnet50 or resnet101 "
                        "(the MSRC project's)")
    models.add_argument("--pretrained", metavar="imagenet|PATH",
                        help="DeepLabV3+ trunk: torchvision's ImageNet weights (from the torch hub cache, "
                        "downloaded there once if missing) or a ResNet state-dict file (default: from scratch)")
    models.add_argument("--train-trunk", "--trainTrunk", action=argparse.BooleanOptionalAction,
                        help="train the DeepLabV3+ trunk (default) or freeze it")
    run = p.add_argument_group("the run")
    run.add_argument("--config", metavar="FILE", help="training options from a JSON or YAML file (the names of "
                     "these flags with _ for -, e.g. image_size: 352), or a run's metrics.json to train its "
                     "configuration again; flags given beside it win")
    run.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available; under torchrun, each "
                     "process's own GPU)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    run.add_argument("--init-from", "--loadCheckpoint", help="start from the weights of a checkpoint")
    run.add_argument("--smoke", action="store_true", help="tiny CPU configuration (CI): TrainConfig.smoke(), on "
                     "the generated synthetic shapes unless --dataset is given (no download)")
    run.add_argument("--test", action="store_true", help="then evaluate best.pt on the held-out split (test where "
                     "the dataset publishes one, else val)")
    run.add_argument("--test-only", action="store_true", help="only evaluate the run already in --out (as --test "
                     "would), without training")
    ref = p.add_argument_group("spellings from the reference projects", REFERENCE_SPELLINGS)
    for flag, name in MODEL_FLAGS.items():
        ref.add_argument(flag, dest="model_flags", action="append_const", const=name, help=f"= --model {name}")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("curves", help=cmd_curves.__doc__, description=cmd_curves.__doc__)
    p.add_argument("run", metavar="RUN", help="the run's folder (train's --out)")
    p.add_argument("--output", metavar="FILE", help="the PNG to write (default RUN/curves.png)")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("quickstart", help=cmd_quickstart.__doc__, description=cmd_quickstart.__doc__)
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--smoke", action="store_true", help="a tiny run of a few seconds (the tests)")
    p.set_defaults(func=cmd_quickstart)
