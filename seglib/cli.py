"""The command line: ``python -m seglib COMMAND`` (or ``seglib COMMAND``).

Errors print as one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from seglib.errors import ConfigError, DataError, SeglibError
from seglib.paths import IMAGE_SUFFIXES


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the known datasets and which are found locally, with sample counts."""
    from seglib.data import SPECS, find_folder, shipped_sample
    from seglib.paths import data_dir

    if args.root is not None and not Path(args.root).is_dir():
        raise DataError(args.root, "folder not found", "pass the folder that holds the datasets")
    print(f"data folder: {args.root or data_dir()} (set SEGLIB_DATA_DIR or pass --root to change)")
    print(f"{'name':17s} {'task':10s} {'classes':>7s}  {'samples':26s} found in")
    for name, spec in SPECS.items():
        try:
            folder = find_folder(name, args.root, sample=name != "synthetic")  # listing generates nothing
        except SeglibError:
            missing = "generated on first use" if name == "synthetic" else "not found"
            print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {'-':26s} {missing}")
            continue
        try:
            counts = ", ".join(f"{s} {len(spec.list_items(folder, s))}" for s in spec.splits
                               if spec.has_split(folder, s))
        except SeglibError as exc:
            counts = f"broken: {exc}"
        where = "the sample shipped with seglib" if folder == shipped_sample(name) else str(folder)
        print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {counts:26s} {where}")
    return 0


def ensure_dataset(name: str, root: str | None, source: str | None = None):
    """The dataset's folder: found locally (a shipped sample too, unless ``source`` is given), or downloaded
    (from ``source`` or the official URL)."""
    from seglib.data import find_folder, get_spec
    from seglib.download import download_dataset
    from seglib.paths import data_dir

    spec = get_spec(name)
    try:
        folder = find_folder(name, root, sample=source is None)
    except SeglibError:
        if name == "synthetic" or (root and source is None and not Path(root).expanduser().is_dir()):
            raise  # nothing to download, or a mistyped --root: only an explicit --source creates it
        print(f"{name} not found locally: downloading it (or taking --source)", flush=True)
        return download_dataset(name, root or data_dir(), source=source)
    if source is None:
        return folder
    # found, and --source given: download_dataset adds another archive of the dataset, or refuses; never ignores it
    if folder.name != Path(spec.folder).name:  # --root is the dataset under another name: its parent is not ours
        raise DataError(folder, f"already holds {spec.title} (under another name than '{Path(spec.folder).name}'), "
                        f"so --source {source} would not be used", "leave out --source, or rename the folder to "
                        f"'{Path(spec.folder).name}' to add an archive to it")
    return download_dataset(name, folder.parents[len(Path(spec.folder).parts) - 1], source=source)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Find (or download) a dataset, decode every sample, print counts and mask statistics."""
    from seglib.data.prepare import format_stats, prepare

    root = ensure_dataset(args.dataset, args.root, args.source)
    results = prepare(args.dataset, root, max_samples=args.max_samples)
    print(format_stats(args.dataset, results, root))
    problems = sum(len(r.problems) for r in results)
    if problems:
        print(f"error: {problems} samples failed the checks above. Fix: repair or replace each file named "
              "on a PROBLEM: line (re-download the dataset if many), then run prepare again", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; writes best.pt, last.pt, history.csv/json and metrics.json into --out."""
    from seglib.resume import refuse_changed_options, resumable, run_options
    from seglib.train_config import TrainConfig

    fields = _given_fields(args)
    out = Path(fields.setdefault("out", f"runs/{fields.get('dataset', 'pennfudan')}_{fields.get('model', 'unet')}"))
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
        return evaluate_run(cfg, folder)
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
    """``fields`` with --smoke's sizes and the model's options: the model flags' (--big, --backbone, --pretrained,
    --[no-]train-trunk) over those of the run ``saved`` (resumed or tested), whose model is the default one."""
    from seglib.models import check_options
    from seglib.train_config import TrainConfig

    fields = dict(fields)
    model = fields.get("model") or (saved or {}).get("model", "unet")
    if args.smoke:  # the tiny configuration, on the dataset and model asked for (else the synthetic shapes)
        fields.setdefault("dataset", "synthetic")
        smoke, default = asdict(TrainConfig.smoke()), asdict(TrainConfig())
        sizes = {k: v for k, v in smoke.items() if v != default[k] and k not in ("dataset", "model", "model_options")}
        fields = {**sizes, "model_options": smoke["model_options"] if model != "deeplabv3plus" else {}, **fields}
    own = saved["model_options"] if saved and saved["model"] == model else {}  # another model is refused later
    options = {**own, **fields.pop("model_options", {})}
    flags = {"big": args.big or None, "backbone": args.backbone, "pretrained": args.pretrained}
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
    return evaluate_run(cfg, run_data(cfg.dataset, cfg.root, out / "best.pt"))


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
    import torch

    from seglib.engine import fit
    from seglib.parallel import is_distributed

    # progress bars on a terminal only: in a log they are thousands of carriage returns
    try:
        result = fit(cfg, resume=args.resume, init_from=args.init_from, progress=sys.stderr.isatty())
    finally:
        if is_distributed():  # torchrun: leave the process group cleanly (NCCL warns otherwise)
            torch.distributed.destroy_process_group()
    best = result["best"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best val mIoU {best['val_miou']:.4f} (images at the training size) at epoch {best['epoch']} "
              f"({result['wall_seconds']:.0f} s); outputs in {result['out']}")


def _refuse_earlier_run(out: Path, fix: str) -> None:
    """A run already in ``out`` is never replaced unasked."""
    earlier = [name for name in ("best.pt", "last.pt", "metrics.json") if (out / name).exists()]
    if earlier:
        raise ConfigError(f"{out} already holds a run ({', '.join(earlier)}); {fix}")


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



def evaluate_run(cfg, folder: Path) -> int:
    """The person-mask project's ``--test``: ``evaluate`` OUT/best.pt on the held-out split, which is the
    dataset's test split where it publishes one (and it is on disk), else val."""
    from seglib.data import get_spec

    spec = get_spec(cfg.dataset)
    split = "test" if "test" in spec.splits and spec.has_split(folder, "test") else "val"
    if split == "val":
        print(f"note: {cfg.dataset} has no test split here: testing on val, the split that chose best.pt, "
              "so the score is optimistic", file=sys.stderr)
    return main(["evaluate", "--checkpoint", str(Path(cfg.out) / "best.pt"), "--dataset", cfg.dataset,
                 "--split", split, "--root", str(folder)])


def _predictor(args: argparse.Namespace):
    from seglib.inference import Predictor

    return Predictor.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size, amp=args.amp)


def _tta(args: argparse.Namespace) -> dict:
    from seglib.inference import TTA_SCALES

    return {"flip": args.tta, "scales": TTA_SCALES if args.tta else (1.0,)}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint at each image's own resolution: per-class IoU/Dice/boundary IoU, mIoU, accuracy."""
    import json

    from seglib.data import find_folder, load_dataset
    from seglib.evaluation import evaluate_dataset, format_report
    from seglib.utils import check_output, write_atomic

    if args.json:
        check_output(args.json, "--json", overwrite=args.overwrite, inputs={"the checkpoint": args.checkpoint})
    predictor = _predictor(args)
    name = args.dataset or predictor.dataset
    if name is None:
        raise ConfigError(f"{args.checkpoint} does not say which dataset it was trained on; pass --dataset")
    recorded = predictor.root if name == predictor.dataset else None  # the run's own data, while it is there
    root = args.root or (recorded if recorded and Path(recorded).is_dir() else None)
    if args.json:
        check_output(args.json, "--json", overwrite=args.overwrite, folders=(find_folder(name, root),))
    ds = load_dataset(name, args.split, root, max_samples=args.max_images)
    report = {"checkpoint": str(args.checkpoint),
              **evaluate_dataset(predictor, ds, boundary_width=args.boundary_width,
                                 progress=sys.stderr.isatty(), **_tta(args))}
    print(format_report(report))
    if args.json:
        out = write_atomic(args.json, lambda tmp: tmp.write_text(json.dumps(report, indent=1)),
                           overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0


def _list_images(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(source, "not found", "pass an image file or a folder of images with --input")
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(source, f"holds no images ({', '.join(IMAGE_SUFFIXES)})",
                        "pass the folder that holds the image files themselves")
    return images


def cmd_predict(args: argparse.Namespace) -> int:
    """Write one label PNG per input image (input-sized; class index per pixel, 0/1 for binary)."""
    from PIL import Image

    from seglib.data import SPECS
    from seglib.data.io import read_image
    from seglib.utils import refuse_dataset_folder, write_atomic
    from seglib.viz import background_class, default_palette, overlay

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise DataError(out, "is a file, not a folder", "pass a folder (new or existing) to --output")
    refuse_dataset_folder(out, "--output")  # a prediction among the masks would pass for ground truth
    predictor = _predictor(args)
    inputs = _list_images(Path(args.input))
    targets = {path: out / f"{path.stem}.png" for path in inputs}
    overlays = {path: out / f"{path.stem}_overlay.png" for path in inputs} if args.overlay else {}
    written = [*targets.values(), *overlays.values()]
    clashes = len(set(written)) < len(written)
    if clashes or any(t.resolve() == p.resolve() for p, t in [*targets.items(), *overlays.items()]):
        raise ConfigError(f"outputs in {out} would " + ("overwrite each other (inputs that differ only in "
                          "their extension, or NAME and NAME_overlay)" if clashes else "overwrite the input images")
                          + "; choose another --output folder")
    existing = [t for t in written if t.exists()]
    if existing and not args.overwrite:
        raise DataError(existing[0], f"exists ({len(existing)} of the outputs already do)",
                        "choose an empty --output folder, or pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    spec = SPECS.get(predictor.dataset)
    palette = spec.palette if spec is not None else default_palette(predictor.num_classes)
    failed = 0
    for start in range(0, len(inputs), predictor.batch_size):
        batch = []
        for path in inputs[start:start + predictor.batch_size]:
            try:
                batch.append((path, read_image(path, upright=True)))  # as a viewer shows it
            except DataError as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                failed += 1
        labels = predictor.labels([image for _, image in batch], threshold=args.threshold, **_tta(args))
        for (path, image), label in zip(batch, labels):
            write_atomic(targets[path], lambda tmp, a=label: Image.fromarray(a).save(tmp, format="PNG"),
                         overwrite=args.overwrite)
            if args.overlay:
                colours = overlay(image, label, palette, background=background_class(predictor.class_names))
                write_atomic(overlays[path], lambda tmp, a=colours: Image.fromarray(a).save(tmp, format="PNG"),
                             overwrite=args.overwrite)
    written = len(inputs) - failed
    print(f"wrote {written} label map{'s' * (written != 1)} to {out}" + (" (and overlays)" if args.overlay else ""))
    if failed:
        print(f"error: {failed} of {len(inputs)} inputs could not be read (each named above). Fix: replace "
              "or remove those files and run predict again", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX and compare onnxruntime with PyTorch on a random input."""
    from seglib.export import check_onnx, export_onnx
    from seglib.inference import load_model
    from seglib.utils import check_output

    if Path(args.onnx).suffix.lower() != ".onnx":
        raise ConfigError(f"--onnx {args.onnx}: an ONNX file's name ends in .onnx (a checkpoint or an image is "
                          "never replaced by one); pass e.g. model.onnx")
    check_output(args.onnx, "--onnx", overwrite=args.overwrite, inputs={"the checkpoint": args.checkpoint})
    model, meta = load_model(args.checkpoint)
    size = args.image_size or meta["image_size"]
    path = export_onnx(model, args.onnx, size, opset=args.opset, overwrite=args.overwrite)
    check = check_onnx(path, model, size)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): input 'image' N×3×{size}×{size} "
          f"(ImageNet-normalized), output 'logits' N×{meta['num_classes']}×{size}×{size}")
    print(f"onnxruntime vs PyTorch on a random {'×'.join(map(str, check['input_shape']))} input: "
          f"max abs difference {check['max_abs_diff']:.2e} (relative {check['relative_diff']:.2e})")
    if check["relative_diff"] > 1e-3:
        print(f"error: the ONNX model differs from PyTorch by {check['relative_diff']:.2e} (relative). "
              "Fix: try another --opset, or report it with the checkpoint", file=sys.stderr)
        return 1
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    """Inference latency (batch 1 by default): float32, and bf16 on a GPU; median and 90th percentile."""
    import torch

    from seglib.inference import load_model, measure_latency
    from seglib.models import create_model
    from seglib.utils import get_device

    if args.checkpoint:
        model, meta = load_model(args.checkpoint)
        _refuse_another_model(args, meta)
        label, size = f"{meta['model']} from {args.checkpoint}", args.image_size or meta["image_size"]
    else:
        args.model, args.num_classes = args.model or "unet", args.num_classes or 2
        model = create_model(args.model, args.num_classes, **({"big": True} if args.big else {}))
        label, size = f"{args.model}{' (big)' if args.big else ''}, random weights", args.image_size or 512
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    precisions = args.precision or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    print(f"{label} | {size}x{size} | batch {args.batch_size} | {name} | torch {torch.__version__}")
    if not args.precision and device.type != "cuda":
        print("(bf16 not timed: a CPU without bf16 units emulates it, often 10-40x slower; --precision bf16 times it)")
    print(f"{'precision':10s} {'median ms':>10s} {'p90 ms':>8s} {'images/s':>9s}")
    for precision in precisions:
        r = measure_latency(model, size, device=device, amp="off" if precision == "fp32" else precision,
                            batch_size=args.batch_size, warmup=args.warmup, iters=args.iters)
        print(f"{precision:10s} {r['ms_median']:10.2f} {r['ms_p90']:8.2f} {r['images_per_s']:9.1f}")
    return 0


def _refuse_another_model(args: argparse.Namespace, meta: dict) -> None:
    """``latency --checkpoint``: a ``--model``, ``--num-classes`` or ``--big`` not the checkpoint's is refused."""
    options = meta.get("model_options", {})
    conflicts = [(flag, given) for flag, given, own in (
        ("--model", args.model, meta["model"]), ("--num-classes", args.num_classes, meta["num_classes"]),
        ("--big", args.big or None, options.get("big", False) or None)) if given is not None and given != own]
    if conflicts:
        flag, given = conflicts[0]
        raise ConfigError(f"{flag if given is True else f'{flag} {given}'} describes another model than --checkpoint "
                          f"{args.checkpoint}, a {meta['model']} with {meta['num_classes']} classes"
                          f"{' (big)' if options.get('big') else ''}: leave {flag} out (the checkpoint says what it "
                          "is), or leave out --checkpoint to time random weights")


def _numbers():
    """The argparse types of the numeric flags, each checked by its rule (``seglib.train_config.flag_type``)."""
    from seglib.checkpoint import MAX_CLASSES
    from seglib.train_config import at_least, between, flag_type, image_side

    return argparse.Namespace(
        count=flag_type(int, at_least(1)), image_side=flag_type(int, image_side),
        classes=flag_type(int, between(1, MAX_CLASSES)),
        probability=flag_type(float, lambda v: None if 0 < v < 1 else f"must be between 0 and 1, not {v}"),
        opset=flag_type(int, lambda v: None if v >= 18 else
                        f"{v} is older than torch's ONNX exporter writes (18 and newer)"))


def add_train_parser(sub) -> None:
    from seglib.train_config import add_train_arguments

    p = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    add_train_arguments(p)  # one flag per TrainConfig field: seglib/train_config.py
    models = p.add_argument_group("model options")
    models.add_argument("--big", action="store_true", help="UNet/Hourglass at base width 64, the paper's widths "
                        "64..1024 (31M parameters); also the person-mask project's --big (its big UNet)")
    models.add_argument("--backbone", help="DeepLabV3+ trunk: resnet18, resnet34 or resnet50")
    models.add_argument("--pretrained", metavar="imagenet|PATH",
                        help="DeepLabV3+ trunk: torchvision's ImageNet weights (from the torch hub cache, "
                        "downloaded there once if missing) or a ResNet state-dict file (default: from scratch)")
    models.add_argument("--train-trunk", "--trainTrunk", action=argparse.BooleanOptionalAction,
                        help="train the DeepLabV3+ trunk (default) or freeze it")
    run = p.add_argument_group("the run")
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


def _add_inference_options(p: argparse.ArgumentParser, number) -> None:
    from seglib.train_config import AMP_MODES

    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by seglib train")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: flip and scales 0.75/1/1.25")
    p.add_argument("--batch-size", type=number.count, default=8)
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.add_argument("--amp", choices=AMP_MODES, default="bf16", help="autocast on CUDA")


def add_inference_parsers(sub) -> None:
    number = _numbers()
    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__)
    _add_inference_options(p, number)
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--root", help="the dataset folder (original layout), or a folder holding it")
    p.add_argument("--split", default="val", help="train, val, test where published, or all")
    p.add_argument("--max-images", type=number.count, help="evaluate N images spread over the split")
    p.add_argument("--boundary-width", type=number.count, help="boundary band in pixels (default 2%% of "
                   "the image diagonal)")
    p.add_argument("--json", help="write the report (per-class rows, confusion matrix) to this file")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__)
    _add_inference_options(p, number)
    p.add_argument("--input", "-i", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="folder for the label PNGs")
    p.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png in class colours")
    p.add_argument("--threshold", type=number.probability,
                   help="two-class models: foreground when p > T (default argmax)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --output")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--image-size", type=number.image_side, help="input side (default: the training size)")
    p.add_argument("--opset", type=number.opset, default=18, help="ONNX opset, 18 or newer")
    p.add_argument("--overwrite", action="store_true", help="replace the --onnx file if it exists")
    p.set_defaults(func=cmd_export)

    from seglib.models import MODEL_NAMES

    p = sub.add_parser("latency", help=cmd_latency.__doc__, description=cmd_latency.__doc__)
    p.add_argument("--checkpoint", help="a trained model (default: --model with random weights)")
    p.add_argument("--model", choices=MODEL_NAMES, help="with random weights (default unet); with --checkpoint, "
                   "only its own model")
    p.add_argument("--big", action="store_true", help="with random weights: the UNet / Hourglass of base width 64")
    p.add_argument("--num-classes", type=number.classes, help="with random weights (default 2)")
    p.add_argument("--image-size", type=number.image_side,
                   help="square input side (default: the checkpoint's training size, else 512)")
    p.add_argument("--batch-size", type=number.count, default=1, help="images per call (default 1)")
    p.add_argument("--precision", action="append", choices=("fp32", "bf16", "fp16"),
                   help="time this precision (repeat for several; default fp32, and bf16 on a GPU)")
    p.add_argument("--warmup", type=number.count, default=10, help="untimed calls first (default 10)")
    p.add_argument("--iters", type=number.count, default=50, help="timed calls (default 50)")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.set_defaults(func=cmd_latency)


# The person-mask project (main.py --train|--test --unet|--hourglass [--big]): its flags, seglib's meaning
REFERENCE_MODES = {("--train",): [], ("--test",): ["--test-only"], ("--train", "--test"): ["--test"]}
MODEL_FLAGS = {"--unet": "unet", "--hourglass": "hourglass"}
REFERENCE_SPELLINGS = (
    "The person-mask project's main.py flags work as they did there: `python -m seglib --train` = `train`, "
    "`--test` = `train --test-only`, `--train --test` = `train --test`; --unet / --hourglass = --model unet / "
    "hourglass; --big as above. The MSRC project's --loadCheckpoint, --saveFreq, --valImages, --logFreq, "
    "--weightDecay and --trainTrunk are listed beside their seglib names.")


def reference_argv(argv: list[str]) -> list[str]:
    """A command line in the person-mask project's form (``--train`` and/or ``--test`` instead of a command,
    ``--debug`` may come first) rewritten as seglib's ``train`` command; any other command line as it is."""
    debug = argv[:1] == ["--debug"]
    rest = argv[debug:]
    modes = tuple(flag for flag in ("--train", "--test") if flag in rest)
    if not rest or rest[0] not in ("--train", "--test"):
        return argv
    return [*argv[:debug], "train", *REFERENCE_MODES[modes], *(a for a in rest if a not in modes)]


_OS_FIXES = {
    errno.ENOENT: "check the path: the file, or a folder on the way to it, does not exist",
    errno.EACCES: "check its permissions, or choose a file or folder you may use",
    errno.EPERM: "check its permissions, or choose a file or folder you may use",
    errno.EISDIR: "it is a folder: pass a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a file is in the way where a folder is needed: choose another path, or move the file",
}


def _disk_full_fix(path: Path) -> str:
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path.cwd())
    return f"free space on the disk holding {folder} (it has {shutil.disk_usage(folder).free / 2**20:,.0f} MiB " \
           "left), or write somewhere else"


def os_error_line(exc: OSError) -> str:
    """``<file>: <problem>. Fix: <what to do>`` for an OSError, without Python's ``[Errno N]``."""
    where = exc.filename if exc.filename is not None else exc.filename2
    problem = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        fix = _disk_full_fix(Path(os.fsdecode(where)) if where is not None else Path.cwd())
    else:
        fix = _OS_FIXES.get(exc.errno, "check the path, the disk and the permissions, then try again")
    return str(DataError(where, problem, fix))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <prog>: <problem>. Fix: ...``, exit status 2; no abbreviated flags
    (``--ov`` must not reach ``--overwrite``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}. Fix: see '{self.prog} --help'\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag the command does not know points to that command's help, not the top one's."""
        args, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = getattr(self, "commands", {})
            commands.get(getattr(args, "command", None), self).error(f"unrecognized arguments: {' '.join(extra)}")
        return args


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seglib", description="The segmentation workbook's tools.",
                     epilog="Spellings from the reference projects: `seglib --train|--test [--unet|--hourglass] "
                     "[--big] ...` is the person-mask project's main.py; see `seglib train --help`.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help=cmd_datasets.__doc__)
    p.add_argument("--root", help="folder holding the datasets (default: $SEGLIB_DATA_DIR or data/)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("prepare", help=cmd_prepare.__doc__)
    p.add_argument("dataset", nargs="?", default="pennfudan", help="dataset name (default pennfudan)")
    p.add_argument("--root", help="the dataset folder, or a folder holding it")
    p.add_argument("--source", help="a URL or a local archive to take instead of the official URL, or a folder "
                   "(tiktok: the release's per-video folders <video>/{images,masks}/, copied into "
                   "tiktok_person/{images,masks}/<video>_<frame>.png)")
    p.add_argument("--max-samples", type=_numbers().count, help="check only this many samples per split")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("quickstart", help=cmd_quickstart.__doc__, description=cmd_quickstart.__doc__)
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--smoke", action="store_true", help="a tiny run of a few seconds (the tests)")
    p.set_defaults(func=cmd_quickstart)

    add_train_parser(sub)
    add_inference_parsers(sub)
    parser.commands = sub.choices  # for parse_args: whose help an unknown flag points to
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in argv[1:]:  # also after the command: seglib predict ... --debug
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    args = build_parser().parse_args(reference_argv(argv))
    try:
        return args.func(args)
    except (SeglibError, OSError) as exc:  # expected failures: one line, no traceback
        if args.debug:
            raise
        print(f"error: {exc if isinstance(exc, SeglibError) else os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; last.pt (if any) holds the last finished epoch: use --resume", file=sys.stderr)
        return 130
