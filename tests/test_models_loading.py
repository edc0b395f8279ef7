"""Every checkpoint layout users bring loads to exactly its saved weights, and nothing runs code."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from model_builders import assert_same_weights, randomised
from torch import nn
from torchvision import models

from audit.common.hashing import file_sha256
from audit.errors import UsageError
from audit.models import formats
from audit.models.architectures import TORCHVISION_ARCHS
from audit.models.loading import load_model, sniff_format
from audit.models.recognise import recognise
from audit.models.safe_unpickle import allowed_metadata_names
from audit.models.tiny import TinyResNet


def backbone_part(state_dict: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not k.startswith(head)}


class OpensAFile:
    """Unpickling this calls open(path, 'w'): the file appearing proves code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return randomised(models.resnet18(weights=None))


@pytest.fixture()
def tiny() -> nn.Module:
    return randomised(TinyResNet(width=8), seed=1)


# ---- the torchvision models of the done-when list, saved plainly ----


def test_plain_resnet50_state_dict_loads_exactly(tmp_path: Path) -> None:
    model = randomised(models.resnet50(weights=None))
    path = tmp_path / "resnet50.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(path)
    assert (loaded.arch, loaded.format, loaded.preprocessing) == (
        "resnet50",
        "state_dict",
        "imagenet",
    )
    assert loaded.had_classifier and loaded.in_channels == 3
    assert loaded.backbone.feature_dim == 2048
    assert loaded.sha256 == file_sha256(str(path))
    assert_same_weights(loaded.backbone.module, backbone_part(model.state_dict(), "fc."))


def test_plain_densenet121_without_classifier_loads_exactly(tmp_path: Path) -> None:
    model = randomised(models.densenet121(weights=None))
    saved = backbone_part(model.state_dict(), "classifier.")
    torch.save(saved, tmp_path / "densenet121.pt")
    loaded = load_model(tmp_path / "densenet121.pt")
    assert loaded.arch == "densenet121" and not loaded.had_classifier
    assert_same_weights(loaded.backbone.module, saved)
    with torch.no_grad():
        features = loaded.backbone.module.eval()(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 1024)


# ---- wrappers: nested keys and prefixes ----


def test_wrapped_checkpoint_with_module_prefix_loads_exactly(tmp_path: Path, resnet18) -> None:
    wrapped = {f"module.{k}": v for k, v in resnet18.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 7}, tmp_path / "ckpt.pth")
    loaded = load_model(tmp_path / "ckpt.pth")
    assert loaded.arch == "resnet18" and loaded.had_classifier
    assert "stripped prefix 'module.'" in loaded.notes
    assert_same_weights(loaded.backbone.module, backbone_part(resnet18.state_dict(), "fc."))


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("model", "_orig_mod."),
        ("model_state_dict", "model."),
        ("net", "backbone."),
        ("state_dict_ema", "encoder."),
        ("ema", "module.module."),
    ],
)
def test_weights_nested_under_usual_keys_and_prefixes_are_found(
    tmp_path: Path, tiny: nn.Module, key: str, prefix: str
) -> None:
    saved = {f"{prefix}{k}": v for k, v in tiny.state_dict().items()}
    torch.save({key: saved, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path / "ckpt.pt")
    assert loaded.arch == "tiny-resnet" and loaded.backbone.feature_dim == 32
    assert_same_weights(loaded.backbone.module, tiny.state_dict())


def test_backbone_prefix_with_a_head_outside_it_is_read_as_backbone_plus_head(
    tmp_path: Path, tiny: nn.Module
) -> None:
    saved = {f"backbone.{k}": v for k, v in tiny.state_dict().items()}
    saved |= {"head.weight": torch.randn(2, 32), "head.bias": torch.randn(2)}
    torch.save(saved, tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path / "ckpt.pt")
    assert loaded.arch == "tiny-resnet" and loaded.had_classifier
    assert_same_weights(loaded.backbone.module, tiny.state_dict())


def test_timm_style_checkpoint_with_namespace_args_and_numpy_metric_loads(
    tmp_path: Path, resnet18
) -> None:
    optimizer = torch.optim.SGD(resnet18.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {
        "epoch": 12,
        "arch": "resnet",
        "state_dict": resnet18.state_dict(),
        "optimizer": optimizer.state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="resnet18", lr=0.1, img_size=None, mean=(0.5,) * 3),
        "metric": np.float64(0.87),
        "dtype": np.dtype("float32"),
        "state_dict_ema": {k: v.clone() for k, v in resnet18.state_dict().items()},
    }
    torch.save(checkpoint, tmp_path / "model_best.pth.tar")
    loaded = load_model(tmp_path / "model_best.pth.tar")
    assert loaded.arch == "resnet18"
    assert any("EMA copy" in note for note in loaded.notes)
    assert_same_weights(loaded.backbone.module, backbone_part(resnet18.state_dict(), "fc."))


def test_numpy_1_scalar_spelling_is_admitted(tmp_path: Path, tiny: nn.Module) -> None:
    """Files saved under numpy 1.x name `numpy.core.multiarray.scalar`, not `numpy._core...`."""
    path = tmp_path / "legacy.pt"
    checkpoint = {"state_dict": tiny.state_dict(), "metric": np.float32(0.5)}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in data
    path.write_bytes(
        data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    )
    assert sniff_format(path) == formats.TORCH_LEGACY
    assert_same_weights(load_model(path).backbone.module, tiny.state_dict())


def test_metadata_allowlist_is_explicit_and_small() -> None:
    names = allowed_metadata_names()
    assert {"argparse.Namespace", "numpy.dtype", "numpy.core.multiarray.scalar"} <= names
    assert all(n.startswith(("argparse.", "numpy.")) for n in names)
    assert not any("open" in n or "eval" in n or "system" in n for n in names)


def test_allowlist_is_scoped_to_the_load_not_added_globally(tmp_path: Path, tiny) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": tiny.state_dict(), "args": argparse.Namespace(a=1)}, path)
    load_model(path)
    assert argparse.Namespace not in torch.serialization.get_safe_globals()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


# ---- other formats ----


def test_safetensors_loads_exactly_whatever_the_extension(tmp_path: Path, resnet18) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.pt"  # misleading extension: the content decides
    save_file({k: v.contiguous() for k, v in resnet18.state_dict().items()}, str(path))
    assert sniff_format(path) == formats.SAFETENSORS
    loaded = load_model(path)
    assert (loaded.arch, loaded.format) == ("resnet18", "safetensors")
    assert_same_weights(loaded.backbone.module, backbone_part(resnet18.state_dict(), "fc."))


def test_torchscript_is_refused_without_trust_code_and_never_opened(
    tmp_path: Path, tiny: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(tiny), str(path))
    assert sniff_format(path) == formats.TORCHSCRIPT
    opened: list[str] = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: opened.append("loaded"))
    with pytest.raises(UsageError, match="allow it with `trust_code`"):
        load_model(path)
    assert opened == []


def test_torchscript_loads_with_trust_code(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(tiny), str(path))
    loaded = load_model(path, trust_code=True)
    assert (loaded.arch, loaded.format) == ("tiny-resnet", "torchscript")
    assert_same_weights(loaded.backbone.module, tiny.state_dict())


def test_pickled_module_is_refused_naming_the_global(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny, path)
    with pytest.raises(UsageError, match=r"audit\.models\.tiny\.TinyResNet.*`trust_pickle`"):
        load_model(path)


def test_pickled_module_loads_with_trust_pickle(tmp_path: Path, resnet18) -> None:
    path = tmp_path / "whole.pt"
    torch.save(resnet18, path)
    loaded = load_model(path, trust_pickle=True)
    assert (loaded.arch, loaded.format) == ("resnet18", "pickled-module")
    assert_same_weights(loaded.backbone.module, backbone_part(resnet18.state_dict(), "fc."))


@pytest.mark.parametrize("layout", ["zip", "legacy", "bare-pickle"])
def test_checkpoint_that_would_create_a_file_is_refused_and_creates_nothing(
    tmp_path: Path, tiny: nn.Module, layout: str
) -> None:
    marker = tmp_path / "pwned.txt"
    checkpoint = {"state_dict": tiny.state_dict(), "payload": OpensAFile(marker)}
    path = tmp_path / "innocent.pt"
    if layout == "bare-pickle":
        path.write_bytes(pickle.dumps(checkpoint))
    else:
        torch.save(checkpoint, path, _use_new_zipfile_serialization=layout == "zip")
    assert not marker.exists()
    with pytest.raises(UsageError, match=r"io\.open") as refused:
        load_model(path)
    assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_onnx_is_refused_pointing_to_probe(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "model.bin"
    onnx.save(helper.make_model(graph, producer_name="pytorch"), str(path))
    assert sniff_format(path) == formats.ONNX
    with pytest.raises(UsageError, match="medaudit probe"):
        load_model(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89HDF\r\n\x1a\n" + bytes(64), "Keras"),
        (b"just some text, not a model\n", "not a model checkpoint"),
        (b"", "not a model checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints_get_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as refused:
        load_model(path)
    assert "\n" not in str(refused.value)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_model(tmp_path / "absent.pt")


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_checkpoint_is_a_usage_error(
    tmp_path: Path, tiny: nn.Module, zip_format: bool
) -> None:
    path = tmp_path / "cut.pt"
    torch.save(tiny.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UsageError, match="truncated or damaged") as refused:
        load_model(path)
    assert "\n" not in str(refused.value)


# ---- architecture recognition ----


def meta_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Same keys and shapes as a random-weight model, without allocating ViT or ConvNeXt-large."""
    with torch.device("meta"):
        return models.get_model(name, weights=None).state_dict()


@pytest.mark.parametrize("name", TORCHVISION_ARCHS)
def test_each_torchvision_architecture_is_recognised_from_keys_and_shapes(name: str) -> None:
    found = recognise(meta_state_dict(name))
    assert found.arch == name and found.had_classifier and found.in_channels == 3


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("efficientnet_b1", "classifier.1."),
        ("convnext_tiny", "classifier.2."),
        ("vit_b_16", "heads."),
    ],
)
def test_architectures_are_recognised_without_their_classifier(name: str, head: str) -> None:
    found = recognise(backbone_part(meta_state_dict(name), head))
    assert found.arch == name and not found.had_classifier


def test_tiny_resnet_of_any_width_is_recognised() -> None:
    assert recognise(TinyResNet(width=16).state_dict()).arch == "tiny-resnet"


def test_old_densenet_key_names_are_recognised() -> None:
    old = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
        for k, v in meta_state_dict("densenet121").items()
    }
    assert recognise(old).arch == "densenet121"


def test_grayscale_first_conv_keeps_its_weights_and_accepts_three_channels(
    tmp_path: Path,
) -> None:
    gray = models.resnet18(weights=None)  # default init keeps activations small enough to compare
    gray.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    torch.save(gray.state_dict(), tmp_path / "gray.pt")
    loaded = load_model(tmp_path / "gray.pt")
    assert loaded.arch == "resnet18" and loaded.in_channels == 1
    assert any("one-channel" in note for note in loaded.notes)
    assert_same_weights(loaded.backbone.module, backbone_part(gray.state_dict(), "fc."))
    gray.fc = nn.Identity()
    image = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = gray.eval()(image)
        backbone = loaded.backbone.module.eval()
        from_rgb, from_gray = backbone(image.repeat(1, 3, 1, 1)), backbone(image)
    torch.testing.assert_close(from_rgb, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_gray, expected)


def test_arch_override_is_used_and_misfits_name_the_keys(tmp_path: Path, tiny) -> None:
    torch.save(tiny.state_dict(), tmp_path / "tiny.pt")
    assert load_model(tmp_path / "tiny.pt", arch="tiny-resnet").arch == "tiny-resnet"
    with pytest.raises(UsageError, match="does not fit `arch` resnet18: .*missing"):
        load_model(tmp_path / "tiny.pt", arch="resnet18")


def test_unknown_arch_name_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match="closest: resnet50"):
        recognise({"w": torch.zeros(1)}, arch="resnet5O")


def test_unrecognised_architecture_lists_what_was_checked_and_suggests_arch() -> None:
    with pytest.raises(UsageError, match="checked .*DenseNet.*name it with `arch`") as refused:
        recognise({"stem.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(2, 8)})
    assert "\n" not in str(refused.value)


def test_shape_mismatch_reports_the_closest_architecture_and_key() -> None:
    broken = meta_state_dict("resnet18")
    broken["layer1.0.conv2.weight"] = torch.empty(64, 32, 3, 3, device="meta")
    with pytest.raises(UsageError, match=r"closest resnet18: layer1\.0\.conv2\.weight has shape"):
        recognise(broken)


def test_timm_model_is_found_from_its_args_or_from_arch(tmp_path: Path) -> None:
    import timm  # in the test extra, pinned: missing timm fails this test rather than skipping it

    model = randomised(timm.create_model("test_resnet"))
    torch.save(
        {"state_dict": model.state_dict(), "args": argparse.Namespace(model="test_resnet")},
        tmp_path / "a.pth",
    )
    torch.save(model.state_dict(), tmp_path / "b.pth")
    by_args = load_model(tmp_path / "a.pth")
    by_flag = load_model(tmp_path / "b.pth", arch="timm:test_resnet")
    for loaded in (by_args, by_flag):
        assert loaded.arch == "timm:test_resnet" and loaded.had_classifier
        head = model.default_cfg["classifier"] + "."
        assert_same_weights(loaded.backbone.module, backbone_part(model.state_dict(), head))
