"""Checkpoints: atomic writes, refusal of pickled payloads, truncation and mismatch detection."""

import os
import random

import numpy as np
import pytest
import torch

from seglib.checkpoint import MAX_CLASSES, load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from seglib.errors import DataError
from seglib.inference import load_model
from seglib.models import create_model
from seglib.utils import count_parameters


def test_round_trip_with_weights_only(tmp_path):
    model = torch.nn.Conv2d(3, 2, 3)
    state = {"model": model.state_dict(), "epoch": 3, "meta": {"model": "unet", "num_classes": 2},
             "rng": rng_state()}
    save_checkpoint(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt", expect={"model": "unet", "num_classes": 2})
    assert loaded["epoch"] == 3
    torch.testing.assert_close(loaded["model"]["weight"], model.weight.detach())
    assert not [p for p in tmp_path.iterdir() if p.name != "last.pt"]  # no temporary file left
    (tmp_path / "plain").write_text("")
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777  # not 0600


def test_seed_everything_seeds_every_generator():
    from seglib.utils import seed_everything

    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_rng_state_restores_every_generator():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/seglib_pwned",))


def test_pickle_payload_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload()}, path)
    marker = "/tmp/seglib_pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    with pytest.raises(DataError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_a_damaged_pickle_is_called_damaged_not_dangerous(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"\x80\x02garbage")  # a pickle header, then bytes no pickle holds
    with pytest.raises(DataError, match="not a PyTorch checkpoint .UnpicklingError"):
        load_checkpoint(tmp_path / "g.pt")


def test_truncated_checkpoint_is_detected(tmp_path):
    path = save_checkpoint({"model": torch.nn.Linear(50, 50).state_dict()}, tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_a_zip_that_torch_did_not_write_is_named_not_called_corrupt(tmp_path):
    import zipfile

    path = tmp_path / "pets.zip"  # e.g. a dataset archive passed as --checkpoint by mistake
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("oxford_iiit_pet/images/Bengal_1.jpg", b"photo")
    with pytest.raises(DataError, match=r"not a PyTorch checkpoint: it looks like a zip archive of 1 files "
                                        r"\(no data.pkl, so not written by torch.save\)") as caught:
        load_checkpoint(path)
    assert "delete" not in str(caught.value)


def test_damaged_bytes_are_always_a_data_error(tmp_path):
    """Truncations and flipped bytes anywhere in a checkpoint (its pickle, its tensors, its zip directory) give the
    one-line DataError, never an AttributeError or UnicodeDecodeError from deep inside zipfile or torch."""
    good = save_checkpoint({"model": torch.nn.Conv2d(3, 2, 3).state_dict(), "meta": {"model": "unet"}},
                           tmp_path / "good.pt").read_bytes()
    rng, path, loaded = random.Random(0), tmp_path / "bad.pt", 0
    for trial in range(150):
        data = bytearray(good)
        if trial % 3 == 0:
            data = data[:rng.randrange(1, len(data))]
        else:
            for _ in range(rng.choice((1, 4, 16))):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            load_checkpoint(path)
            loaded += 1  # a flip inside a tensor's bytes: still a well-formed file
        except DataError as exc:
            assert str(exc).startswith(f"{path}: ") and "Fix: " in str(exc)
    assert loaded < 150


@pytest.mark.parametrize("parts, problem", [
    ({"ema": {}}, "its 'ema' holds no 'model'"),
    ({"ema": None}, "its 'ema' holds no 'model'"),
    ({"ema": {"model": "weights"}}, r"its 'ema'\['model'\] is not a dict of named weights"),
    ({"config": "x"}, "its 'config' is a str, not a dict of options"),
    ({"model": {0: torch.zeros(1)}}, "its 'model' is not a dict of named weights"),
    ({"model": [torch.zeros(1)]}, "its 'model' is not a dict of named weights"),
])
def test_a_checkpoint_whose_parts_were_changed_is_refused(tmp_path, parts, problem):
    path = tmp_path / "best.pt"
    torch.save({"model": torch.nn.Conv2d(3, 2, 3).state_dict(), "meta": {"model": "unet"}, **parts}, path)
    with pytest.raises(DataError, match=problem):
        load_checkpoint(path)


def test_checkpoint_for_another_model_is_refused(tmp_path):
    save_checkpoint({"model": {}, "meta": {"model": "unet", "num_classes": 12}}, tmp_path / "best.pt")
    with pytest.raises(DataError, match="num_classes=12, not 2"):
        load_checkpoint(tmp_path / "best.pt", expect={"model": "unet", "num_classes": 2})


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_cuda_state_saved_on_more_gpus_restores_this_processes_one(monkeypatch):
    """last.pt from a machine with 8 GPUs (or other CUDA_VISIBLE_DEVICES) resumes on one GPU: each process
    restores its own device's generator (set_rng_state_all raised a bare IndexError)."""
    saved = {**rng_state(), "cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]}
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state))
    set_rng_state(saved)
    set_rng_state({**saved, "cuda": saved["cuda"][:2]})  # fewer GPUs than this process's index: nothing to restore
    set_rng_state({**saved, "cuda": saved["cuda"][5]})  # the current format: this process's GPU only
    assert [int(s[0]) for s in restored] == [2, 5]


@pytest.mark.parametrize("meta", [
    {"model": "unet", "num_classes": 1, "class_names": ["background", "person"]},  # one output channel, two classes
    {"model": "unet", "num_classes": MAX_CLASSES, "class_names": [f"c{i}" for i in range(MAX_CLASSES)]},
    {"model": "unet", "model_options": {"base_channels": 256, "depth": 6, "in_channels": 64}},
    {"model": "deeplabv3plus", "model_options": {"output_stride": 16}},
], ids=["one channel", "most classes", "widest and deepest", "stride 16"])
def test_the_edges_of_what_a_checkpoint_may_hold_are_loaded(tmp_path, meta):
    save_checkpoint({"model": {}, "meta": meta}, tmp_path / "best.pt")
    assert load_checkpoint(tmp_path / "best.pt")["meta"] == meta


def test_a_checkpoint_in_torch_legacy_format_is_loaded(tmp_path):
    """``torch.save(..., _use_new_zipfile_serialization=False)`` (torch < 1.6's format) starts with a pickle's 0x80."""
    torch.save({"model": {"w": torch.ones(2)}, "meta": {"model": "unet"}}, tmp_path / "old.pt",
               _use_new_zipfile_serialization=False)
    assert (tmp_path / "old.pt").read_bytes()[:1] == b"\x80"
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["model"]["w"], torch.ones(2))


@pytest.mark.parametrize("state", [{"model": None}, {"model": [1, 2]}, {"epoch": 3}, [1]])
def test_load_weights_names_a_state_without_weights(tmp_path, state):
    with pytest.raises(DataError, match="not a seglib checkpoint: it lacks"):
        load_weights(torch.nn.Conv2d(3, 2, 3), state, tmp_path / "x.pt")


def test_a_model_built_with_the_default_width_spelled_none_is_saved_and_loaded(tmp_path):
    # base_channels=None is the UNet's own default: create_model took it, the checkpoint check refused it
    model = create_model("unet", 2, base_channels=None, depth=2)
    meta = {"model": "unet", "num_classes": 2, "image_size": 32, "model_options": {"base_channels": None, "depth": 2}}
    save_checkpoint({"model": model.state_dict(), "meta": meta}, tmp_path / "best.pt")
    loaded, _ = load_model(tmp_path / "best.pt")
    assert count_parameters(loaded) == count_parameters(model)
