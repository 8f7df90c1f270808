"""seglib.models: shapes on any size, gradients, parameter counts, modes, options and weights."""

import shutil
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from seglib.errors import ConfigError
from seglib.models import MODEL_NAMES, create_model, model_options
from seglib.models.blocks import pad_to_multiple
from seglib.models.deeplabv3plus import ResNetTrunk
from seglib.models.pretrained import CONNECT_TIMEOUT, imagenet_weights_file
from seglib.utils import count_parameters

SMALL = {"unet": {"base_channels": 8}, "hourglass": {"base_channels": 8},
         "deeplabv3plus": {"backbone": "resnet18"}}


def small(name, num_classes=3, **options):
    torch.manual_seed(0)
    return create_model(name, num_classes, **{**SMALL[name], **options})


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty temporary TORCH_HOME (the real one is back afterwards): no cached ImageNet weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a torch.hub.set_dir() elsewhere would win over TORCH_HOME
    return tmp_path / "torch_home" / "hub"


def test_model_names():
    assert MODEL_NAMES == ("unet", "hourglass", "deeplabv3plus")


@pytest.mark.parametrize("name, options", [
    ("unet", {}), ("unet", {"depth": 2}), ("hourglass", {}),
    ("deeplabv3plus", {"output_stride": 16}), ("deeplabv3plus", {"output_stride": 8}),
])
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (17, 90)])
def test_logits_at_input_size_for_odd_sizes_and_batch_1_in_train_mode(name, options, size):
    model = small(name, **options).train()
    assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_binary_model_has_one_logit_channel(name):
    model = small(name, num_classes=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 33, 31)).shape == (2, 1, 33, 31)


def test_unet_takes_other_input_channel_counts():
    model = small("unet", in_channels=1, depth=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 20, 24)).shape == (1, 3, 20, 24)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    model = small(name).train()
    nn.functional.cross_entropy(model(torch.randn(2, 3, 37, 53)),
                                torch.randint(0, 3, (2, 37, 53))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name, options, expected", [
    ("unet", {}, 7_763_074),
    ("unet", {"big": True}, 31_037_698),  # the paper's widths 64..1024: 31.0M
    ("unet", {"base_channels": 64}, 31_037_698),
    ("unet", {"big": True, "upsample": "bilinear"}, 17_263_042),  # milesial's bilinear=True: 17.3M
    ("hourglass", {}, 6_979_714),
    ("hourglass", {"big": True}, 27_904_258),
    ("deeplabv3plus", {}, 16_603_042),
    ("deeplabv3plus", {"backbone": "resnet34"}, 26_711_202),
    ("deeplabv3plus", {"backbone": "resnet50"}, 40_347_042),
    ("deeplabv3plus", {"backbone": "resnet101"}, 59_339_170),  # the MSRC project's trunk
    ("deeplabv3plus", {"output_stride": 8}, 16_603_042),  # dilation adds no parameters
])
def test_parameter_counts_of_default_configurations(name, options, expected):
    assert count_parameters(create_model(name, 2, **options)) == expected


def double_conv(ci, co):
    """Two 3×3 convs without bias (ci→co, co→co), each followed by a BatchNorm's weight and bias."""
    return 9 * ci * co + 2 * co + 9 * co * co + 2 * co


def unet_parameters(num_classes, base=32, depth=4, skips=True, in_channels=3):
    """The UNet counted layer by layer: DoubleConvs down, transposed convs and DoubleConvs up, a 1×1 head."""
    w = [base * 2**level for level in range(depth + 1)]
    encoder = double_conv(in_channels, w[0]) + sum(double_conv(w[i], w[i + 1]) for i in range(depth))
    # per level: a 2×2 transposed conv w[i+1] → w[i] with bias, then a DoubleConv of its output and the skip
    decoder = sum(4 * w[i + 1] * w[i] + w[i] + double_conv(2 * w[i] if skips else w[i], w[i]) for i in range(depth))
    return encoder + decoder + w[0] * num_classes + num_classes


@pytest.mark.parametrize("name, options, layers", [
    ("unet", {}, {}),
    ("unet", {"big": True}, {"base": 64}),
    ("hourglass", {}, {"skips": False}),
    ("unet", {"base_channels": 8, "depth": 2, "in_channels": 1}, {"base": 8, "depth": 2, "in_channels": 1}),
    ("hourglass", {"base_channels": 4, "depth": 3}, {"base": 4, "depth": 3, "skips": False}),
])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_unet_and_hourglass_parameter_counts_follow_from_their_layers(name, options, layers, num_classes):
    assert count_parameters(create_model(name, num_classes, **options)) == unet_parameters(num_classes, **layers)


def test_the_bilinear_unet_is_milesials_layer_for_layer():
    """The CamVid project's model, milesial's ``UNet(3, 32, bilinear=True)``, written out from its model file
    (convolutions without bias, as in its current version): interpolation up, no transposed convs, the
    bottleneck and each decoder level at half the channels."""
    def dc(ci, co, mid=None):  # its DoubleConv(in, out, mid): two 3x3 convs, each with a BatchNorm
        mid = mid or co
        return 9 * ci * mid + 2 * mid + 9 * mid * co + 2 * co

    encoder = dc(3, 64) + dc(64, 128) + dc(128, 256) + dc(256, 512) + dc(512, 1024 // 2)  # inc, down1..down4
    decoder = dc(1024, 512 // 2, 1024 // 2) + dc(512, 256 // 2, 512 // 2) + dc(256, 128 // 2, 256 // 2) \
        + dc(128, 64, 128 // 2)  # up1..up4: Up(1024, 512 // 2), ..., Up(128, 64)
    model = create_model("unet", 32, big=True, upsample="bilinear")
    assert count_parameters(model) == encoder + decoder + 64 * 32 + 32  # and OutConv(64, 32)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    ups = [m for m in model.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "bilinear" and u.align_corners for u in ups)
    for name in ("unet", "hourglass"):  # any size in, the same size out, at any depth
        for depth in (1, 3):
            model = create_model(name, 3, base_channels=4, depth=depth, upsample="bilinear").eval()
            assert model(torch.randn(2, 3, 37, 45)).shape == (2, 3, 37, 45)
    with pytest.raises(ConfigError, match="upsample='nearest' must be one of transpose, bilinear"):
        create_model("unet", 2, upsample="nearest")


def conv_bn(ci, co, k=1):
    """A k×k conv without bias and its BatchNorm."""
    return k * k * ci * co + 2 * co


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnet101"])
def test_deeplabv3plus_parameter_count_is_its_resnet_less_the_classifier_plus_aspp_and_decoder(backbone):
    resnet = getattr(torchvision.models, backbone)(weights=None)
    channels, low = resnet.fc.in_features, 64 * type(resnet.layer1[0]).expansion
    trunk = count_parameters(resnet) - count_parameters(resnet.fc)
    aspp = (conv_bn(channels, 256) + 3 * conv_bn(channels, 256, 3)  # 1×1 and three atrous 3×3 branches
            + channels * 256 + 256                                   # image pooling: a 1×1 conv with bias
            + conv_bn(5 * 256, 256))                                 # the projection of the five
    decoder = conv_bn(low, 48) + conv_bn(256 + 48, 256, 3) + conv_bn(256, 256, 3) + 256 * 3 + 3
    assert count_parameters(create_model("deeplabv3plus", 3, backbone=backbone)) == trunk + aspp + decoder


def test_hourglass_differs_from_unet_only_in_decoder_input_widths():
    unet, hourglass = small("unet"), small("hourglass")
    theirs = hourglass.state_dict()
    different = {k for k, v in unet.state_dict().items() if theirs[k].shape != v.shape}
    assert different and all(k.startswith("ups.") and ".conv.0." in k for k in different)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batchnorm_statistics_update_in_train_mode_and_eval_is_deterministic(name):
    model = small(name)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()(torch.randn(2, 3, 40, 40))
    assert not torch.equal(bn.running_mean, before)

    model.eval()
    stats = bn.running_mean.clone()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    assert torch.equal(bn.running_mean, stats)


def test_frozen_trunk_gets_no_gradients_and_stays_in_eval_mode():
    model = small("deeplabv3plus", train_trunk=False).train()
    assert all(not m.training for m in model.backbone.modules())
    assert model.aspp.training and model.decoder.training
    stats = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert torch.equal(model.backbone.bn1.running_mean, stats)
    trainable = count_parameters(model, trainable_only=True)
    assert trainable == count_parameters(model) - count_parameters(model.backbone)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_dilation_of_bottleneck_trunks_matches_torchvision_replace_stride_with_dilation(backbone):
    for output_stride, dilate in [(16, [False, False, True]), (8, [False, True, True])]:
        ours = create_model("deeplabv3plus", 2, backbone=backbone,
                            output_stride=output_stride).backbone
        theirs = getattr(torchvision.models, backbone)(replace_stride_with_dilation=dilate)
        for layer in ("layer3", "layer4"):
            convs = [m for m in getattr(ours, layer).modules() if isinstance(m, nn.Conv2d)]
            ref = [m for m in getattr(theirs, layer).modules() if isinstance(m, nn.Conv2d)]
            assert [(c.stride, c.dilation, c.padding) for c in convs] == \
                   [(c.stride, c.dilation, c.padding) for c in ref]


def receptive_field(trunk: nn.Module) -> int:
    """The main path's receptive field in pixels: r += d (k - 1) j, j *= s over its 3×3 convs and pools."""
    r, j = 1, 1
    for m in trunk.modules():
        if isinstance(m, nn.MaxPool2d) or (isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)):
            k, d, s = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.dilation, m.stride))
            r, j = r + d * (k - 1) * j, j * s
    return r


@pytest.mark.parametrize("backbone, field", [("resnet18", 435), ("resnet34", 899), ("resnet50", 427),
                                             ("resnet101", 971)])
def test_dilation_keeps_the_receptive_field_of_the_strided_trunk(backbone, field):
    """Trading stride for dilation must not shrink what a feature sees (BasicBlock's second 3×3 conv
    comes after the stride, so it takes the new dilation)."""
    trunk32 = getattr(torchvision.models, backbone)(weights=None)
    assert receptive_field(nn.Sequential(*list(trunk32.children())[:-2])) == field
    for output_stride in (16, 8):
        trunk = create_model("deeplabv3plus", 2, backbone=backbone, output_stride=output_stride).backbone
        assert receptive_field(trunk) == field


@pytest.mark.parametrize("output_stride", [16, 8])
def test_feature_maps_have_the_requested_output_stride(output_stride):
    trunk = small("deeplabv3plus", output_stride=output_stride).backbone.eval()
    with torch.no_grad():
        low, high = trunk(torch.randn(1, 3, 64, 96))
    assert low.shape == (1, 64, 16, 24)
    assert high.shape == (1, 512, 64 // output_stride, 96 // output_stride)


def test_pad_to_multiple_pads_bottom_right_with_edge_values():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4)
    torch.testing.assert_close(y[..., :2, :3], x)
    assert y[0, 0, 3, 3] == x[0, 0, 1, 2]
    assert pad_to_multiple(y, 4) is y


@pytest.mark.parametrize("name, options, valid", [
    ("segformer", {}, ["unet", "hourglass", "deeplabv3plus"]),
    ("unet", {"depth": 0}, ["1..6"]),
    ("unet", {"depth": 7}, ["1..6"]),  # trained, its checkpoint would be refused: a model no checkpoint may hold
    ("unet", {"base_channels": 0}, ["1..256"]),
    ("hourglass", {"base_channels": 512}, ["1..256"]),
    ("unet", {"in_channels": 65}, ["1..64"]),
    ("unet", {"big": True, "base_channels": 32}, ["base_channels=64"]),
    ("unet", {"width": 8}, ["in_channels", "base_channels", "depth", "big"]),
    ("hourglass", {"depth": 2.5}, ["1..6"]),
    ("deeplabv3plus", {"output_stride": 4}, ["8 or 16"]),
    ("deeplabv3plus", {"backbone": "vgg"}, ["resnet18", "resnet34", "resnet50", "resnet101"]),
    ("deeplabv3plus", {"depth": 3}, ["backbone", "output_stride", "pretrained", "train_trunk"]),
    ("deeplabv3plus", {"pretrained": True}, ["None", "'imagenet'"]),
])
def test_factory_rejects_bad_names_and_options_naming_the_valid_values(name, options, valid):
    with pytest.raises(ConfigError) as error:
        create_model(name, 2, **options)
    for word in valid:
        assert word in str(error.value)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_factory_rejects_bad_class_counts(num_classes):
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("unet", num_classes)


def test_model_options_lists_what_each_model_accepts():
    assert model_options("hourglass") == ("in_channels", "base_channels", "depth", "big", "upsample")
    assert model_options("deeplabv3plus") == ("backbone", "output_stride", "pretrained",
                                              "train_trunk")


def official_weights_file(backbone: str, seed: int) -> tuple[Path, dict]:
    """A randomly initialised torchvision ``backbone`` saved under its official ImageNet file name in the (temporary)
    torch hub cache: what a download would leave there."""
    torch.manual_seed(seed)
    state = getattr(torchvision.models, backbone)().state_dict()
    path = imagenet_weights_file(backbone)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


def assert_trunk_holds(trunk: nn.Module, state: dict) -> None:
    trunk = trunk.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(trunk[key], value, msg=key)


def test_imagenet_weights_are_the_official_files_in_torch_home(hub_dir):
    assert imagenet_weights_file("resnet18") == hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_file("resnet50").name == "resnet50-0676ba61.pth"  # IMAGENET1K_V1


def test_imagenet_weights_are_read_from_the_cache_without_a_download(hub_dir, monkeypatch):
    path, state = official_weights_file("resnet18", seed=1)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    assert_trunk_holds(create_model("deeplabv3plus", 2, pretrained="imagenet").backbone, state)
    for given in (path, str(path)):  # the same file by path
        assert_trunk_holds(ResNetTrunk("resnet18", 16, given), state)


def test_missing_imagenet_weights_are_downloaded_into_the_cache_with_a_progress_bar(hub_dir, monkeypatch,
                                                                                  tmp_path):
    source, state = official_weights_file("resnet18", seed=2)
    source = source.rename(tmp_path / "served.pth")  # the "server's" copy; the cache is empty again
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix, progress, socket.getdefaulttimeout()))
        shutil.copy(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert_trunk_holds(ResNetTrunk("resnet18", 16, "imagenet"), state)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert calls == [(url, "f37072fd", True, CONNECT_TIMEOUT)]  # hash checked, bar shown, no endless wait
    assert socket.getdefaulttimeout() is None and imagenet_weights_file("resnet18").is_file()


def test_offline_without_a_cache_stops_with_one_line_saying_what_to_do(hub_dir, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as error:
        create_model("deeplabv3plus", 2, backbone="resnet50", pretrained="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("ImageNet weights for resnet50 are not cached and could not be downloaded "
                              "(<urlopen error [Errno -3] Temporary failure in name resolution>). Fix: run once")
    for part in ("resnet50-0676ba61.pth", str(hub_dir / "checkpoints"), "--pretrained PATH", "from scratch"):
        assert part in message
    assert not any((hub_dir / "checkpoints").iterdir())  # no half file left


@pytest.mark.parametrize("name", ["unet", "hourglass"])
def test_pretrained_with_a_model_without_a_trunk_says_so(name):
    with pytest.raises(ConfigError, match=f"{name} has no ImageNet trunk: it always trains from scratch"):
        create_model(name, 2, pretrained="imagenet")


def test_bad_weight_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        create_model("deeplabv3plus", 2, pretrained=tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        create_model("deeplabv3plus", 2, pretrained=garbage)
    other = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with pytest.raises(ConfigError, match="does not fit torchvision's resnet50 .weights of another architecture") as e:
        create_model("deeplabv3plus", 2, backbone="resnet50", pretrained=other)
    assert "\n" not in str(e.value) and len(str(e.value)) < 500


def test_a_resnet_with_another_head_or_none_loads_its_trunk(tmp_path):
    # a ResNet fine-tuned for 10 classes was refused for its fc layer, which the trunk never uses
    tuned = torchvision.models.resnet18(num_classes=10).state_dict()
    headless = {k: v for k, v in tuned.items() if not k.startswith("fc.")}
    for name, state in (("tuned.pth", tuned), ("headless.pth", headless)):
        torch.save(state, tmp_path / name)
        assert_trunk_holds(ResNetTrunk("resnet18", 16, tmp_path / name), headless)
    del headless["layer1.0.conv1.weight"]  # anything else missing is still refused
    torch.save(headless, tmp_path / "broken.pth")
    with pytest.raises(ConfigError, match="does not fit torchvision's resnet18"):
        ResNetTrunk("resnet18", 16, tmp_path / "broken.pth")


def test_count_parameters_counts_frozen_ones_unless_asked_for_the_trainable():
    layer = torch.nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == 8 and count_parameters(layer, trainable_only=True) == 6
