"""`medaudit inspect`: what a model file holds and whether `check` can audit it, as text or JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from audit import cli
from audit.models.tiny import TinyResNet

JSON_KEYS = {
    "file", "format", "architecture", "parameters", "feature_dim", "input_channels",
    "preprocessing", "head_present", "sha256", "notes", "auditable", "auditable_reason",
}  # fmt: skip


def medaudit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def field(out: str, label: str) -> str:
    (value,) = [
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(label)
    ]
    return value


@pytest.fixture()
def tiny() -> nn.Module:
    return TinyResNet(width=8)


@pytest.fixture()
def checkpoint(tmp_path: Path, tiny: nn.Module) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": tiny.state_dict(), "epoch": 3}, path)
    return path


def test_text_output_describes_an_auditable_state_dict(checkpoint: Path, tiny, capsys) -> None:
    code, out, _ = medaudit(["inspect", str(checkpoint)], capsys)
    assert code == 0
    assert field(out, "file:") == "model.pt"
    assert field(out, "format:") == "state_dict"
    assert field(out, "architecture:") == "tiny-resnet"
    assert field(out, "parameters:") == f"{sum(p.numel() for p in tiny.parameters()):,}"
    assert field(out, "input:").startswith("3 channel(s)")
    assert field(out, "classifier:") == "absent"
    assert field(out, "sha256:") == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert field(out, "auditable:").startswith("yes (")


def test_json_output_is_one_object_with_every_field(checkpoint: Path, tiny, capsys) -> None:
    code, out, _ = medaudit(["inspect", str(checkpoint), "--json"], capsys)
    assert code == 0
    found = json.loads(out)
    assert set(found) == JSON_KEYS
    assert found["file"] == "model.pt"  # the name only, never the folder
    assert (found["format"], found["architecture"]) == ("state_dict", "tiny-resnet")
    assert found["parameters"] == sum(p.numel() for p in tiny.parameters())
    assert (found["input_channels"], found["head_present"], found["auditable"]) == (3, False, True)
    assert found["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert isinstance(found["notes"], list)


def test_torchvision_checkpoint_with_its_classifier_says_the_head_is_present(
    tmp_path: Path, capsys
) -> None:
    from torchvision import models

    path = tmp_path / "resnet18.pt"
    torch.save(models.resnet18(weights=None, num_classes=2).state_dict(), path)
    code, out, _ = medaudit(["inspect", str(path), "--json"], capsys)
    found = json.loads(out)
    assert code == 0 and (found["architecture"], found["head_present"]) == ("resnet18", True)
    assert found["parameters"] == 11_176_512  # the backbone's: the head is replaced
    assert found["feature_dim"] == 512 and found["auditable"]


def test_refused_pickle_is_one_line_exit_2_naming_the_flag(
    tmp_path: Path, tiny: nn.Module, capsys
) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny, path)
    code, out, err = medaudit(["inspect", str(path), "--json"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("medaudit: error: ") and err.count("\n") == 1
    assert "--trust-pickle" in err and "Traceback" not in err


def test_trusted_pickle_is_auditable_with_the_same_flag(
    tmp_path: Path, tiny: nn.Module, capsys
) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny, path)
    code, out, _ = medaudit(["inspect", str(path), "--trust-pickle", "--json"], capsys)
    found = json.loads(out)
    assert code == 0 and found["format"] == "pickled-module"
    assert found["auditable"] and "--trust-pickle" in found["auditable_reason"]


def onnx_file(path: Path) -> Path:
    """A one-convolution ONNX model: 4x3x3x3 weights and 4 biases on 3-channel NCHW input."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    weight = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 6, 6])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def test_onnx_is_described_and_not_auditable_by_check(tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnx")
    path = onnx_file(tmp_path / "model.bin")
    code, out, _ = medaudit(["inspect", str(path)], capsys)
    assert code == 0
    assert field(out, "format:") == "onnx"
    assert field(out, "parameters:") == "112"
    assert field(out, "input:") == "3 channel(s)"
    assert field(out, "auditable:").startswith("no (") and "medaudit probe" in out

    code, out, _ = medaudit(["inspect", str(path), "--json"], capsys)
    found = json.loads(out)
    assert code == 0 and set(found) == JSON_KEYS
    assert (found["format"], found["auditable"], found["architecture"]) == ("onnx", False, None)
    assert "medaudit probe" in found["auditable_reason"]


def test_keras_h5_is_described_and_not_auditable(tmp_path: Path, capsys) -> None:
    path = tmp_path / "RadImageNet-ResNet50_notop.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    code, out, _ = medaudit(["inspect", str(path), "--json"], capsys)
    found = json.loads(out)
    assert code == 0 and (found["format"], found["auditable"]) == ("hdf5", False)
    assert "PyTorch weights" in found["auditable_reason"]


def test_missing_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    code, _, err = medaudit(["inspect", str(tmp_path / "absent.pt")], capsys)
    assert code == 2 and "not found" in err and err.count("\n") == 1
