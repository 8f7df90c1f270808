"""Pack what a lent GPU machine lacks into one ignored folder, ``.gpu/``, that one `run` carries.

    python scripts/gpu_pack.py                                  # the four headline datasets + albumentations
    python scripts/gpu_pack.py --datasets tiktok camvid msrc --wheels albumentations notebooks

``.gpu/data/<dataset folder>/`` holds each dataset in its publisher's layout, except that every
photo (the images the dataset lists, not its masks) travels as ``<name>.<ext>.jpg``, re-encoded as
JPEG (quality 95, 4:4:4): the photos of Penn-Fudan, TikTok, CamVid and MSRC are 120 MiB as PNG and
about 30 MiB so. Masks, split lists and class tables travel byte for byte. ``scripts/gpu_run.py``
turns the JPEGs back into files of their original names before anything reads them, and its
results say which encoding they were measured on (``bundle.json``). ``.gpu/wheels/`` holds the
Python 3.12 wheels the GPU image lacks: albumentations (the tutorial loop of the speed table) and,
with ``--wheels notebooks``, a Jupyter kernel (notebooks 06-07).

One call carries at most 64 MiB, tracked files included: a bundle over that is deleted and
refused. ``.gpu/`` is listed in ``.git/info/exclude``: licensed data never enters the repository.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET = 64 * 2**20
HEADLINE = ("pennfudan", "tiktok", "camvid", "msrc")
WHEELS = {"albumentations": ["albumentations==2.0.8"],
          "notebooks": ["nbclient", "nbformat", "ipykernel", "ipywidgets", "nbstripout"]}
# the GPU image's Python packages, as device/KINDS.md lists them (2026-11-17), names normalized as in wheel
# file names: pip downloads them as dependencies, but a second version would stop the install. Not there,
# though a kernel needs it: platformdirs (the first notebook call on a GPU failed when this list had it)
PRESENT = frozenset({
    "absl_py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated_doc", "anyio",
    "attrs", "botorch", "build", "certifi", "charset_normalizer", "chex", "click", "cloudpickle", "cmake",
    "colorama", "contourpy", "coverage", "cuda_bindings", "cuda_core", "cuda_pathfinder", "cuda_toolkit",
    "cupy_cuda13x", "cycler", "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock",
    "flatbuffers", "flax", "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch", "grpcio", "h11", "h5py",
    "hf_xet", "httpcore", "httpx", "huggingface_hub", "humanize", "hypothesis", "idna", "imageio", "iniconfig",
    "interface_meta", "jax", "jax_cuda13_pjrt", "jax_cuda13_plugin", "jaxlib", "jaxtyping", "jinja2", "joblib",
    "kiwisolver", "lazy_loader", "lightning", "lightning_utilities", "linear_operator", "lineax", "llvmlite",
    "lxml", "markdown", "markdown_it_py", "markupsafe", "matplotlib", "mdurl", "meson", "ml_dtypes", "mpi4py",
    "mpmath", "msgpack", "multidict", "multipledispatch", "mypy_extensions", "nanobind", "narwhals", "networkx",
    "ninja", "numba", "numba_cuda", "numpy", "numpyro", "nvidia_cublas", "nvidia_cuda_cupti", "nvidia_cuda_nvrtc",
    "nvidia_cuda_runtime", "nvidia_cudnn_cu13", "nvidia_cufft", "nvidia_cufile", "nvidia_curand", "nvidia_cusolver",
    "nvidia_cusparse", "nvidia_cusparselt_cu13", "nvidia_ml_py", "nvidia_nccl_cu13", "nvidia_nvjitlink",
    "nvidia_nvshmem_cu13", "nvidia_nvtx", "onnx", "onnx_ir", "onnxruntime", "onnxscript", "opencv_python_headless",
    "opt_einsum", "opt_einsum_fx", "optax", "optimistix", "orbax_checkpoint", "packaging", "pandas", "pathspec",
    "patsy", "peft", "pillow", "pip", "pluggy", "portalocker", "prometheus_client", "propcache", "protobuf",
    "psutil", "py_cpuinfo", "pyarrow", "pybind11", "pygments", "pyparsing", "pyproject_hooks", "pyre_extensions",
    "pytest", "pytest_benchmark", "pytest_cov", "pytest_mock", "pytest_timeout", "pytest_xdist", "python_dateutil",
    "pytorch_lightning", "pyyaml", "regex", "requests", "rich", "sacrebleu", "safetensors", "scikit_build_core",
    "scikit_image", "scikit_learn", "scipy", "seaborn", "sentence_transformers", "sentencepiece", "setuptools",
    "shellingham", "simplejson", "six", "sortedcontainers", "statsmodels", "sympy", "tabulate", "tensorboard",
    "tensorboard_data_server", "tensorstore", "threadpoolctl", "tifffile", "tiktoken", "timm", "tokenizers",
    "toolz", "torch", "torch_geometric", "torchaudio", "torchdiffeq", "torchmetrics", "torchvision", "tqdm",
    "transformers", "treescope", "triton", "typer", "typing_extensions", "typing_inspect", "urllib3", "uvloop",
    "wadler_lindig", "werkzeug", "wheel", "wrapt", "xarray", "xxhash", "yarl", "zipp"})
# never imported by a kernel that only runs cells: the widgets' front-end assets (2.3 MiB), the debugger and
# the completion engine (10 MiB; ipykernel and IPython import them only when present)
LEFT_BEHIND = {"widgetsnbextension", "jupyterlab_widgets", "debugpy", "jedi", "parso"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any"]
SUFFIX = ".jpg"  # appended to a re-encoded photo's own name


class BundleTooLarge(SystemExit):
    """The bundle and the tracked files would not fit one call's 64 MiB."""


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def tracked_size() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def exclude(dest: Path) -> None:
    """Add ``/dest/`` to ``.git/info/exclude`` (when inside the checkout) so git never holds it."""
    if dest.resolve().parent != REPO:
        return
    name, path = dest.name, REPO / ".git" / "info" / "exclude"
    lines = path.read_text().splitlines() if path.exists() else []
    if f"/{name}/" not in lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*lines, f"/{name}/"]) + "\n")


def distribution(wheel: Path) -> str:
    """A wheel's project name, normalized as in :data:`PRESENT` (``PyYAML-6.0.whl`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "_", wheel.name.split("-")[0].lower())


def pack_wheels(groups: list[str], dest: Path) -> None:
    """cp312 manylinux wheels of ``groups`` (keys of :data:`WHEELS`) and their needs, less :data:`PRESENT`."""
    names = [name for group in groups for name in WHEELS[group]]
    if not names:
        return
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *names], check=True)
    for wheel in dest.glob("*.whl"):
        if distribution(wheel) in PRESENT | LEFT_BEHIND:
            wheel.unlink()


def pack_dataset(name: str, dest: Path, root: Path | None, quality: int) -> list[str]:
    """Copy dataset ``name`` to ``dest/<its folder>``, photos as JPEG; returns the photos' relative paths."""
    from PIL import Image

    from seglib.data import find_folder, get_spec

    spec = get_spec(name)
    source = find_folder(name, root, sample=False)  # the shipped pets sample would pass for the full subset
    photos = {item.image.resolve() for item in spec.list_items(source, "all")}
    target = dest / spec.folder
    reencoded = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.resolve() in photos:
            with Image.open(path) as im:
                im.convert("RGB").save(out.with_name(out.name + SUFFIX), quality=quality, subsampling=0)
            reencoded.append(f"{spec.folder}/{rel.as_posix()}")
        else:
            shutil.copy2(path, out)
    return reencoded


def pack(datasets: list[str], dest: Path, *, root: Path | None = None, quality: int = 95,
         wheels: list[str] = (), budget: int = BUDGET) -> dict:
    """Write the bundle into ``dest`` (replacing an earlier bundle, never another folder) and return its manifest;
    over ``budget`` together with the tracked files, nothing is kept and :class:`BundleTooLarge` is raised. It is
    built beside ``dest`` and renamed into place, so a failed pack leaves the earlier bundle as it was."""
    if dest.exists() and not (dest / "bundle.json").is_file() and (not dest.is_dir() or any(dest.iterdir())):
        raise SystemExit(f"error: {dest} holds files but no bundle.json: it is not a bundle, and packing would "
                         "replace it. Pass another --dest")
    build = dest.with_name(f".{dest.name}.partial")
    exclude(dest), exclude(build)  # a pack killed midway must not leave licensed data for `run` to carry
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    manifest = {"quality": quality, "subsampling": "4:4:4", "datasets": list(datasets), "reencoded": []}
    try:
        for name in datasets:
            manifest["reencoded"] += pack_dataset(name, build / "data", root, quality)
        pack_wheels(list(wheels), build / "wheels")
        (build / "bundle.json").write_text(json.dumps(manifest, indent=1))
        total = tracked_size() + size_of(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    manifest["mib"] = {"bundle": size_of(build) / 2**20, "with_tracked_files": total / 2**20}
    if total > budget:
        shutil.rmtree(build)
        raise BundleTooLarge(f"error: the bundle and the tracked files come to {total / 2**20:.1f} MiB, over one "
                             f"call's {budget / 2**20:.0f} MiB; it was not kept (an earlier bundle in {dest} is "
                             "unchanged). Pack fewer datasets or wheel groups, or a lower --quality")
    shutil.rmtree(dest, ignore_errors=True)
    build.rename(dest)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(HEADLINE), help=f"default: {' '.join(HEADLINE)}")
    parser.add_argument("--wheels", nargs="*", default=["albumentations"], choices=sorted(WHEELS),
                        help="wheel groups (default: albumentations)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the photos (default 95)")
    parser.add_argument("--root", type=Path, help="where the datasets are (default $SEGLIB_DATA_DIR)")
    parser.add_argument("--dest", type=Path, default=REPO / ".gpu", help="default .gpu/ in the checkout")
    args = parser.parse_args(argv)
    manifest = pack(args.datasets, args.dest, root=args.root, quality=args.quality, wheels=args.wheels)
    print(f"{args.dest}: {len(manifest['reencoded'])} photos as JPEG q{args.quality}; "
          f"{manifest['mib']['bundle']:.1f} MiB, with the tracked files {manifest['mib']['with_tracked_files']:.1f} "
          "of 64 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
