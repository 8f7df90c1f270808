"""Every training option, once: a field of ``TrainConfig`` with its help text and its rule.

The ``train`` command's flags are made from these fields (:func:`add_train_arguments`), so a new
option is one new line here. Each rule is checked in both places from the same function: argparse
refuses a bad flag with ``argument --epochs: must be at least 1, not 0``, and building a
``TrainConfig`` in Python raises ``ConfigError("epochs must be at least 1, not 0")``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import numbers
import os
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from seglib.errors import ConfigError, DataError
from seglib.models import MODEL_NAMES
from seglib.schedules import SCHEDULES

AMP_MODES = ("bf16", "fp16", "off")
LOADERS = ("auto", "gpu", "workers")
OPTIMIZERS = ("adamw", "sgd")
RENAMED = {"data_path": "loader"}  # names in configs saved by older versions


# ----------------------------------------------------------------------------- rules


def at_least(low: int, why: str = "") -> Callable:
    return lambda v: None if v >= low else f"must be at least {low}{why}, not {v}"


def between(low: int, high: int, why: str = "") -> Callable:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}{why}, not {v}"


def positive(v) -> str | None:
    if not math.isfinite(v):
        return f"must be a finite number, not {v}"
    return None if v > 0 else f"must be positive, not {v}"


def momentum_range(v) -> str | None:
    return None if 0 <= v < 1 else f"must be in [0, 1) (e.g. 0.9), not {v}"


def non_negative(v) -> str | None:
    return None if v >= 0 and math.isfinite(v) else f"must be 0 or more, not {v}"


def seed_range(v) -> str | None:
    return None if 0 <= v < 2**32 else f"must be between 0 and 2**32 - 1 (NumPy's range), not {v}"


def trunk_multiplier(v) -> str | None:
    return positive(v) and f"{positive(v)}; to freeze the trunk, use train_trunk=False (--no-train-trunk)"


image_side = between(16, 8192, " (the models halve it four times)")  # training, export, latency, checkpoints


def share(v) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1] (the smallest crop's share of the image), not {v}"


def decay(v) -> str | None:
    return None if 0 < v < 1 else f"must be between 0 and 1 (e.g. 0.999), not {v}"


def default_workers(most: int = 4) -> int:
    """DataLoader workers for this machine: ``most``, but at most the CPUs this process may use (its affinity,
    as PyTorch counts them) minus one, left to the main process that steps the model; 0 on a single CPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(most, cpus - 1))


def option(default, help: str, *, rule: Callable | None = None, choices: tuple | None = None,
           aliases: tuple[str, ...] = (), flag: bool = True):
    """A ``TrainConfig`` field: its default, help text, rule or choices, and extra flag spellings."""
    kind = {"default_factory": dict} if default == {} else {"default": default}
    return field(**kind, metadata={"help": help, "rule": rule, "choices": choices, "aliases": aliases,
                                   "flag": flag})


# ----------------------------------------------------------------------------- the options


def _wrong_type(value, hint) -> str | None:
    """What is wrong with ``value`` for a field annotated ``hint`` (``int``, ``float | None``, ...); None if nothing.
    An int is a float too; a bool is neither (``epochs=True`` is a mistake)."""
    union = typing.get_args(hint) or (hint,)
    kinds, optional = tuple(t for t in union if t is not type(None)), type(None) in union
    if value is None:
        return None if optional else "must be given, not None"
    wanted = {int: numbers.Integral, float: numbers.Real}
    if any(isinstance(value, wanted.get(k, k)) for k in kinds) and (bool in kinds or not isinstance(value, bool)):
        return None
    names = {int: "a whole number", float: "a number", str: "a string", bool: "True or False", dict: "a dict"}
    return f"must be {' or '.join([names.get(k, k.__name__) for k in kinds] + ['None'] * optional)}, not {value!r}"


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    dataset: str = option("pennfudan", "dataset name (python -m seglib datasets lists them)")
    model: str = option("unet", "architecture", choices=MODEL_NAMES)
    model_options: dict = option({}, "e.g. {'big': True} or {'backbone': 'resnet34'}", flag=False)
    root: str | None = option(None, "the dataset folder, or a folder holding it (default: $SEGLIB_DATA_DIR or data/)")
    split_file: str | None = option(None, 'a JSON file {"train": [ids], "val": [ids]} replacing the dataset\'s '
                                    "own split (python -m seglib prepare NAME writes that one to data/splits/"
                                    "NAME.json, a file to start from)")
    epochs: int = option(40, "passes over the training split", rule=at_least(1))
    image_size: int = option(256, "square training size in pixels", rule=image_side, aliases=("--imgsz",))
    batch_size: int = option(16, "images per step", rule=at_least(1), aliases=("--batch",))
    lr: float = option(2e-3, "peak learning rate", rule=positive)
    trunk_lr_mult: float = option(1.0, "DeepLabV3+: the trunk learns at lr x this (e.g. 0.1 with --pretrained "
                                  "imagenet); to freeze it, --no-train-trunk", rule=trunk_multiplier)
    weight_decay: float = option(1e-4, "decoupled weight decay", rule=non_negative, aliases=("--weightDecay",))
    optimizer: str = option("adamw", "adamw (fused on CUDA) or sgd with Nesterov momentum", choices=OPTIMIZERS)
    momentum: float = option(0.9, "sgd: momentum (the CamVid project's 0.99)", rule=momentum_range)
    nesterov: bool = option(True, "sgd: Nesterov momentum; --no-nesterov for plain momentum (the Penn-Fudan and "
                            "CamVid projects')")
    schedule: str = option("cosine", "learning-rate decay, stepped every iteration", choices=SCHEDULES)
    min_lr: float = option(0.0, "where poly, cosine and onecycle decay to (CosineAnnealingLR's eta_min; the "
                           "person-mask project's 1e-5); a DeepLabV3+ trunk's, times --trunk-lr-mult",
                           rule=non_negative)
    step_epochs: int | None = option(None, "schedule step: multiply the learning rate by --gamma every this many "
                                     "epochs (the Penn-Fudan project's MultiStepLR at epoch 60)", rule=at_least(1))
    gamma: float = option(0.1, "schedule step: the factor at each step", rule=lambda v: None if 0 < v <= 1
                          else f"must be in (0, 1], not {v}")
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs", rule=non_negative)
    loss: str = option("ce", "ce, bce, dice, focal, or a sum such as ce+dice")
    class_weights: str | None = option(None, "weights of ce and focal per class: auto (median-frequency balancing "
                                       "over the training split, void excluded) or a JSON file of one per class")
    crop_scale: float = option(0.5, "augmentation strength: the smallest random crop's share of the image",
                               rule=share)
    rotate: float = option(0.0, "augmentation: turn each training crop by a random angle within ± this many "
                           "degrees (corners outside the image are void)", rule=between(0, 180))
    jitter: float = option(0.0, "augmentation: on half the crops, saturation x 1 ± J and hue turned by up to "
                           "± J/4 of a turn (e.g. 0.4)", rule=between(0, 1))
    blur: float = option(0.0, "augmentation: the share of crops blurred by a Gaussian of sigma 0.1-2 px "
                         "(e.g. 0.2)", rule=between(0, 1))
    amp: str = option("bf16", "autocast precision on CUDA", choices=AMP_MODES)
    channels_last: bool = option(True, "channels_last memory format on CUDA")
    compile: bool = option(False, "torch.compile the model")
    loader: str = option("auto", "batches kept on the GPU and augmented there (gpu), CPU workers running "
                         "albumentations (workers), or gpu on CUDA else workers (auto)", choices=LOADERS,
                         aliases=("--data-path",))
    num_workers: int = option(default_workers(), "DataLoader workers of the workers loader: 4, or the usable CPUs "
                              "minus one when fewer", rule=between(0, 256))
    seed: int = option(0, "seeds the weights, the order and the augmentations", rule=seed_range)
    deterministic: bool = option(False, "deterministic kernels (slower); on a GPU the backward passes of "
                                 "bilinear upsampling (DeepLabV3+, --upsample bilinear) and adaptive pooling "
                                 "(DeepLabV3+) still are not, and warn")
    ema_decay: float | None = option(None, "validate and save an exponential moving average of the weights "
                                     "(e.g. 0.999)", rule=decay)
    grad_clip: float | None = option(None, "clip the gradients' global L2 norm to this (e.g. 1.0)", rule=positive)
    patience: int | None = option(None, "early stopping: validations without a better val mIoU", rule=at_least(1))
    val_every: int = option(1, "validate (and log, keep best.pt) every N epochs, and after the last",
                            rule=at_least(1))
    save_freq: int = option(1, "write last.pt every N epochs (at a validation)", rule=at_least(1),
                            aliases=("--saveFreq",))
    keep_best_loss: bool = option(False, "also keep best_loss.pt, the weights with the lowest validation loss "
                                  "(best.pt keeps the best val mIoU; score it with evaluate --checkpoint)")
    snapshot_every: int | None = option(None, "every N epochs (at a validation) and at the end, draw 4 validation "
                                        "images, their truth and the prediction into OUT/snapshots/",
                                        rule=at_least(1))
    tensorboard: bool = option(False, "also log each validation (losses, mIoU, per-class IoU, lr, speed) to "
                               "OUT/tensorboard/ for TensorBoard (needs pip install tensorboard)")
    log_freq: int = option(50, "progress-bar loss every N steps (one host sync each)", rule=at_least(1),
                           aliases=("--logFreq",))
    val_images: int | None = option(None, "validate on N val images only, spread evenly over the split",
                                    rule=at_least(1), aliases=("--valImages",))
    max_steps: int | None = option(None, "cap on steps per epoch (smoke runs)", rule=at_least(1))
    max_samples: int | None = option(None, "cap on samples per split (smoke runs)", rule=at_least(1))
    out: str = option("runs/default", "output folder (default: runs/DATASET_MODEL; in Python, runs/default)")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            wrong = _wrong_type(value, _FIELD_TYPES[f.name])
            if wrong:
                raise ConfigError(f"{f.name} {wrong}")
            if isinstance(value, numbers.Number) and type(value) not in (int, float, bool):  # NumPy's: JSON has none
                setattr(self, f.name, int(value) if isinstance(value, numbers.Integral) else float(value))
            if value is None:
                continue
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise ConfigError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}, not {value!r}")
            problem = f.metadata["rule"] and f.metadata["rule"](value)
            if problem:
                raise ConfigError(f"{f.name} {problem}")
        if isinstance(self.model_options.get("pretrained"), os.PathLike):  # saved as text: a Path cannot be
            self.model_options = {**self.model_options, "pretrained": os.fspath(self.model_options["pretrained"])}
        if self.class_weights and not {"ce", "focal"} & set(self.loss.split("+")):
            raise ConfigError(f"class_weights weigh ce and focal; --loss {self.loss} has neither: add ce or focal")
        if self.snapshot_every and self.snapshot_every % self.val_every:
            raise ConfigError(f"snapshot_every draws at a validation: make it a multiple of val_every "
                              f"({self.val_every}), or drop it")
        if self.trunk_lr_mult != 1 and self.model != "deeplabv3plus":
            raise ConfigError(f"trunk_lr_mult applies to deeplabv3plus (its ResNet trunk), not {self.model}: "
                              "leave it at 1")
        if self.optimizer != "sgd" and (self.momentum, self.nesterov) != (0.9, True):
            raise ConfigError(f"momentum and nesterov are SGD's; --optimizer {self.optimizer} has its own: pass "
                              "--optimizer sgd, or leave them out")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("Nesterov momentum needs a momentum: pass --momentum > 0, or --no-nesterov")
        if self.gamma != 0.1 and self.schedule != "step":
            raise ConfigError(f"gamma is the step schedule's factor; --schedule is {self.schedule}: pass --schedule "
                              "step --step-epochs N, or leave --gamma out")
        if (self.schedule == "step") != (self.step_epochs is not None):
            raise ConfigError("--schedule step and --step-epochs N go together: the learning rate is multiplied by "
                              "--gamma every N epochs" + ("" if self.schedule == "step" else
                                                           f" (--schedule is {self.schedule})"))
        if self.min_lr >= self.lr or (self.min_lr and self.schedule not in ("poly", "cosine", "onecycle")):
            raise ConfigError(f"min_lr {self.min_lr:g} is where poly, cosine and onecycle decay to: below lr "
                              f"({self.lr:g}), with one of those schedules (not {self.schedule})")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs {self.warmup_epochs:g} is longer than the run ({self.epochs} epochs): "
                              "the learning rate would never reach its peak; shorten the warm-up")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a saved dict; keys of older versions are renamed, unknown ones dropped."""
        d = {RENAMED.get(k, k): v for k, v in d.items()}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def smoke(cls, **changes) -> TrainConfig:
        """The tiny configuration of the automated tests, the CLI's ``--smoke``, the recipes' and
        the benchmarks' smoke plans: synthetic shapes, a 2-level UNet of width 8, 32 px, 2 × 2 steps."""
        tiny = cls(dataset="synthetic", model="unet", model_options={"base_channels": 8, "depth": 2}, epochs=2,
                   image_size=32, batch_size=4, max_samples=8, max_steps=2, num_workers=0, log_freq=1)
        return replace(tiny, **changes)


_FIELD_TYPES = typing.get_type_hints(TrainConfig)  # the annotations, as types


def read_config_file(path: str | Path) -> dict:
    """The options a ``train --config`` file sets: a JSON or YAML mapping of :class:`TrainConfig` fields, or a
    run's ``metrics.json`` (its ``"config"``, read as :meth:`TrainConfig.from_dict` reads it). A field name that
    does not exist is refused, naming the file (a typo would otherwise leave its default in place)."""
    import yaml  # a dependency of albumentations

    path = Path(path)
    fix = 'write a mapping of training options, e.g. {"dataset": "camvid", "image_size": 352, "epochs": 40}'
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no error
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except FileNotFoundError as exc:
        raise DataError(path, "config file not found", "check the path") from exc
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(path, f"cannot be read as {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                        f"({' '.join(str(exc).split())[:300]})", fix) from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict):  # a run's metrics.json: train it again
        return asdict(TrainConfig.from_dict(data["config"]))
    if not isinstance(data, dict):
        raise DataError(path, f"holds a {type(data).__name__}, not a mapping of training options", fix)
    data = {RENAMED.get(k, k): v for k, v in data.items()}
    unknown = sorted(str(k) for k in data if k not in _FIELD_TYPES)
    if unknown:
        close = {k: difflib.get_close_matches(k, list(_FIELD_TYPES), n=1) for k in unknown}
        hints = [f"{k} → {m[0]}" for k, m in close.items() if m]
        raise DataError(path, f"no training option {', '.join(unknown)}",
                        (f"did you mean {', '.join(hints)}? " if hints else "") + "the names are train's flags "
                        "with _ for - (python -m seglib train --help)")
    for key, value in data.items():  # before any of them is used as a path or a dict
        wrong = _wrong_type(value, _FIELD_TYPES[key])
        if wrong:
            raise DataError(path, f"{key} {wrong}", fix)
    return data


# ----------------------------------------------------------------------------- the flags


def flag_type(base: type, rule: Callable | None) -> Callable:
    """An argparse ``type``: ``base(text)`` checked by ``rule``, so a bad value is argparse's one-line error."""

    def parse(text: str):
        value = base(text)
        problem = rule and rule(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = base.__name__  # argparse names the type in "invalid int value"
    return parse


def _field_type(f) -> Callable:
    """``int`` / ``float`` / ``str`` from the field's annotation, checked by its rule."""
    base = int if "int" in f.type else float if "float" in f.type else str
    return flag_type(base, f.metadata["rule"])


def flag_fields() -> list:
    return [f for f in fields(TrainConfig) if f.metadata["flag"]]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (``--image-size`` for ``image_size``), default None
    (unset: the config's default, or the smoke value)."""
    for f in flag_fields():
        names = [f"--{f.name.replace('_', '-')}", *f.metadata["aliases"]]
        default = None if f.default is MISSING else f.default
        shown = default is not None and "default:" not in f.metadata["help"]
        help_text = f.metadata["help"] + (f" (default {default})" if shown else "")
        if "bool" in f.type:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(*names, dest=f.name, type=_field_type(f), choices=f.metadata["choices"],
                                default=None, help=help_text)


def given_options(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` fields set on the command line."""
    return {f.name: getattr(args, f.name) for f in flag_fields() if getattr(args, f.name, None) is not None}
