"""``seglib evaluate``, ``predict``, ``export`` and ``latency``: what is done with a trained checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seglib.cli.flags import numbers
from seglib.errors import ConfigError, DataError
from seglib.paths import IMAGE_SUFFIXES


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
    split_file = args.split_file or (predictor.split_file if name == predictor.dataset else None)  # the run's
    if args.json:
        check_output(args.json, "--json", overwrite=args.overwrite, folders=(find_folder(name, root),))
    ds = load_dataset(name, args.split, root, split_file=split_file, max_samples=args.max_images)
    if split_file and not args.split_file:
        print(f"note: the {args.split!r} list of {split_file}, the split file the run trained with "
              "(pass --split-file to use another)", file=sys.stderr)
    report = {"checkpoint": str(args.checkpoint), "split_file": split_file,
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
    writers: dict[Path, list[Path]] = {}
    for source, target in [*targets.items(), *overlays.items()]:
        writers.setdefault(target, []).append(source)
    clash = next(((t, s) for t, s in writers.items() if len(s) > 1), None)
    if clash:  # a.png and a.jpg, or x.png's overlay and x_overlay.png's labels
        raise DataError(clash[1][0], f"and {clash[1][1]} would both be written to {clash[0]}",
                        "rename one of them, or predict them into separate --output folders")
    if any(t.resolve() == p.resolve() for p, t in [*targets.items(), *overlays.items()]):
        raise ConfigError(f"outputs in {out} would overwrite the input images; choose another --output folder")
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
            except DataError as exc:  # its fix is a dataset's ("re-download"): the summary below says the user's
                print(f"skipped: {exc.path}: {exc.problem}", file=sys.stderr)
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


def _add_inference_options(p: argparse.ArgumentParser, number) -> None:
    from seglib.train_config import AMP_MODES

    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by seglib train")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: flip and scales 0.75/1/1.25")
    p.add_argument("--batch-size", type=number.count, default=8)
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.add_argument("--amp", choices=AMP_MODES, default="bf16", help="autocast on CUDA")


def add_inference_parsers(sub) -> None:
    number = numbers()
    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__)
    _add_inference_options(p, number)
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--root", help="the dataset folder (original layout), or a folder holding it")
    p.add_argument("--split", default="val", help="train, val, test where published, or all")
    p.add_argument("--split-file", help="take --split's list from this JSON split file (default: the split file "
                   "the run trained with, if any; else the dataset's own split)")
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
    p.add_argument("--warmup", type=number.count, default=10, help="untimed calls first, at least 1 (default 10)")
    p.add_argument("--iters", type=number.count, default=50, help="timed calls (default 50)")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    p.set_defaults(func=cmd_latency)
