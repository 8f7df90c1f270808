"""Export a trained model to ONNX and check it against PyTorch with onnxruntime.

The exported graph takes what :class:`seglib.inference.Predictor` feeds the model: a batch of
ImageNet-normalized ``N×3×S×S`` float32 images at the training size ``S`` (the batch size is
dynamic), and returns ``N×C×S×S`` logits. Resize the logits to each image's own size before the
argmax, as ``Predictor`` does. Needs the ``export`` extra: ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seglib.errors import ConfigError, DataError
from seglib.utils import write_atomic

__all__ = ["check_onnx", "export_onnx"]


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs onnx, onnxscript and onnxruntime: "
                          "pip install -e \".[export]\"") from None
    return onnxruntime


def export_onnx(model: nn.Module, path: str | Path, image_size: int, *, opset: int = 18,
                overwrite: bool = True) -> Path:
    """Write ``model`` (run in eval mode, on the CPU; both are given back afterwards) to ``path`` atomically;
    returns the path. ``overwrite=False`` refuses a file already there (the command line without ``--overwrite``)."""
    _onnxruntime()
    import onnx

    if image_size < 1:
        raise ConfigError(f"image_size {image_size}: pass the training size, a whole number of pixels >= 1")

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ConfigError(f"opset {opset} is newer than the installed onnx {onnx.__version__} knows ({newest}): "
                          f"pass --opset {newest} or lower, or upgrade onnx")
    example = torch.randn(3, 3, image_size, image_size)  # another batch than check_onnx's: the axis is free

    def write(tmp: Path) -> None:
        # the exporter reports each stage on stdout; torch 2.11's exporter also warns about its own pytree use
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            torch.onnx.export(model, (example,), tmp, dynamo=True, opset_version=opset,
                              input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
        written = next(o.version for o in onnx.load(tmp, load_external_data=False).opset_import if o.domain == "")
        if written != opset:  # the exporter falls back to its own opset when a conversion fails
            raise ConfigError(f"the exporter wrote opset {written}, not the {opset} asked for; nothing was written: "
                              f"pass --opset {written}")

    with _on_cpu_in_eval(model):
        return write_atomic(path, write, overwrite=overwrite)


@contextlib.contextmanager
def _on_cpu_in_eval(model: nn.Module):
    """``model`` in eval mode on the CPU, then back on its device and in its mode."""
    first = next(model.parameters(), None)
    device, training = (first.device if first is not None else torch.device("cpu")), model.training
    try:
        yield model.cpu().eval()
    finally:
        model.to(device).train(training)


def check_onnx(path: str | Path, model: nn.Module, image_size: int, *, batch_size: int = 2,
               seed: int = 0) -> dict:
    """Run the ONNX file and the PyTorch model on one random input; max abs and relative difference."""
    ort = _onnxruntime()
    if not Path(path).is_file():
        raise DataError(path, "not found", "export the model first (python -m seglib export)")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        raise DataError(path, f"is not an ONNX model onnxruntime can load ({type(exc).__name__})",
                        "export the model again (python -m seglib export --overwrite)") from exc
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode(), _on_cpu_in_eval(model) as cpu_model:
        expected = cpu_model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != expected.shape:
        raise ConfigError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.abs(got - expected).max())
    return {"max_abs_diff": diff, "relative_diff": diff / max(float(np.abs(expected).max()), 1e-12),
            "input_shape": list(x.shape), "output_shape": list(got.shape)}
