"""Each published RadImageNet layout loads as itself, with its exact weights and preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_builders import assert_same_weights, randomised
from torch import nn
from torchvision import models

from audit.models.loading import load_model, load_reference
from audit.models.radimagenet import KerasResNet50

CHILD_NAMES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


class OfficialBackbone(nn.Module):
    """The model the official RadImageNet PyTorch file was saved from (its README's `Backbone`)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(*list(models.resnet50(weights=None).children())[:9])


def test_official_layout_maps_sequential_indices_onto_resnet50(tmp_path: Path) -> None:
    saved = randomised(OfficialBackbone()).state_dict()
    assert "backbone.4.0.conv1.weight" in saved
    torch.save(saved, tmp_path / "RadImageNet_resnet50.pt")
    loaded = load_reference(tmp_path / "RadImageNet_resnet50.pt")
    assert (loaded.arch, loaded.format) == ("resnet50", "radimagenet-official")
    assert loaded.preprocessing == "radimagenet" and not loaded.had_classifier
    assert any("127.5" in note for note in loaded.notes)
    renamed = {}
    for key, value in saved.items():
        index, rest = key.removeprefix("backbone.").split(".", 1)
        renamed[f"{CHILD_NAMES[index]}.{rest}"] = value
    assert_same_weights(loaded.backbone.module, renamed)


def test_keras_port_loads_into_its_own_module(tmp_path: Path) -> None:
    """Saved as the port is: torchvision-like names, conv biases, no fc; here also without the BN
    step counters a Keras conversion may lack."""
    keras = randomised(KerasResNet50())
    saved = {k: v for k, v in keras.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(saved, tmp_path / "RadImageNet-ResNet50_notop.pth")
    loaded = load_reference(tmp_path / "RadImageNet-ResNet50_notop.pth")
    assert (loaded.arch, loaded.format) == ("keras-resnet50", "radimagenet-keras-port")
    assert loaded.preprocessing == "radimagenet" and loaded.backbone.feature_dim == 2048
    module = loaded.backbone.module
    assert isinstance(module, KerasResNet50)
    counters = {k: v for k, v in module.state_dict().items() if "num_batches_tracked" in k}
    assert_same_weights(module, {**saved, **counters})
    assert all(int(v) == 0 for v in counters.values())


def test_keras_port_is_recognised_by_its_conv_biases_in_load_model_too(tmp_path: Path) -> None:
    torch.save(KerasResNet50().state_dict(), tmp_path / "port.pth")
    loaded = load_model(tmp_path / "port.pth")
    assert (loaded.arch, loaded.format, loaded.preprocessing) == (
        "keras-resnet50", "state_dict", "radimagenet",
    )  # fmt: skip


def test_hugging_face_mirror_is_a_plain_torchvision_state_dict(tmp_path: Path) -> None:
    model = randomised(models.resnet50(weights=None))
    saved = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    torch.save(saved, tmp_path / "ResNet50.pt")
    loaded = load_reference(tmp_path / "ResNet50.pt")
    assert (loaded.arch, loaded.format, loaded.preprocessing) == (
        "resnet50", "radimagenet-hf", "radimagenet",
    )  # fmt: skip
    assert_same_weights(loaded.backbone.module, saved)


def test_keras_resnet50_gives_2048_pooled_features() -> None:
    model = KerasResNet50().eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 2048)


def test_keras_resnet50_has_the_keras_structure() -> None:
    with torch.device("meta"):
        model = KerasResNet50()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 53 and all(c.bias is not None for c in convs)
    assert all(n.eps == pytest.approx(1.001e-5) for n in norms)
    for stage in (model.layer2, model.layer3, model.layer4):
        assert stage[0].conv1.stride == (2, 2) and stage[0].conv2.stride == (1, 1)
    # keras.applications.ResNet50(include_top=False): 23,534,592 trainable parameters
    assert sum(p.numel() for p in model.parameters()) == 23_534_592
