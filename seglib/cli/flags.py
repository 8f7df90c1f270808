"""What several commands' flags share: the numeric flag types, and the reference projects' spellings
(the person-mask project's ``main.py --train|--test [--unet|--hourglass] [--big]``)."""

from __future__ import annotations

import argparse


def numbers():
    """The argparse types of the numeric flags, each checked by its rule (``seglib.train_config.flag_type``)."""
    from seglib.checkpoint import MAX_CLASSES
    from seglib.train_config import at_least, between, flag_type, image_side

    return argparse.Namespace(
        count=flag_type(int, at_least(1)), image_side=flag_type(int, image_side),
        classes=flag_type(int, between(1, MAX_CLASSES)),
        probability=flag_type(float, lambda v: None if 0 < v < 1 else f"must be between 0 and 1, not {v}"),
        opset=flag_type(int, lambda v: None if v >= 18 else
                        f"{v} is older than torch's ONNX exporter writes (18 and newer)"))


# The person-mask project (main.py --train|--test --unet|--hourglass [--big]): its flags, seglib's meaning
REFERENCE_MODES = {("--train",): [], ("--test",): ["--test-only"], ("--train", "--test"): ["--test"]}
MODEL_FLAGS = {"--unet": "unet", "--hourglass": "hourglass"}
REFERENCE_SPELLINGS = (
    "The person-mask project's main.py flags work as they did there: `python -m seglib --train` = `train`, "
    "`--test` = `train --test-only`, `--train --test` = `train --test`; --unet / --hourglass = --model unet / "
    "hourglass; --big as above. The MSRC project's --loadCheckpoint, --saveFreq, --valImages, --logFreq, "
    "--weightDecay and --trainTrunk are listed beside their seglib names.")


# Flags of the reference projects that seglib spells otherwise or does not take, per command: what to do instead
_CHECKPOINT = "--checkpoint PATH is the trained model here (a best.pt or last.pt)"
RENAMED = {
    "train": {"--scheduler": "--scheduler is --schedule here (cosine, poly, onecycle, constant, or step with "
                             "--step-epochs N and --gamma)",
              "--gpu": "--gpu is --device cuda here",
              "--multiGPU": "for several GPUs run torchrun --nproc_per_node N -m seglib train ..."},
    "predict": {"--model": _CHECKPOINT, "--weights": _CHECKPOINT, "--gpu": "--gpu is --device cuda here",
                "--imgsz": "leave out --imgsz: the checkpoint's own image size is used"},
    "evaluate": {"--model": _CHECKPOINT, "--weights": _CHECKPOINT, "--gpu": "--gpu is --device cuda here"},
}


def renamed(command: str, argv: list[str]) -> str:
    """What to do instead of the flags in ``argv`` that a reference project used with ``command`` and seglib
    spells otherwise (``"--gpu is --device cuda here; "``), else ``""``."""
    table = RENAMED.get(command, {})
    return "".join(f"{table[flag]}; " for flag in dict.fromkeys(a.split("=")[0] for a in argv) if flag in table)


def reference_argv(argv: list[str]) -> list[str]:
    """A command line in the person-mask project's form (``--train`` and/or ``--test`` instead of a command,
    ``--debug`` may come first) rewritten as seglib's ``train`` command; any other command line as it is."""
    debug = argv[:1] == ["--debug"]
    rest = argv[debug:]
    modes = tuple(flag for flag in ("--train", "--test") if flag in rest)
    if not rest or rest[0] not in ("--train", "--test"):
        return argv
    return [*argv[:debug], "train", *REFERENCE_MODES[modes], *(a for a in rest if a not in modes)]
