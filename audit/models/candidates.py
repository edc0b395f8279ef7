"""The architectures a checkpoint can be recognised as, each with how to build its backbone.

A candidate builds the full model, strips its classifier and reports which keys were the head, so
recognition can compare a checkpoint's keys and shapes with the backbone's exactly and still tell
whether the checkpoint carried a classifier. Builders run under `torch.device("meta")` for
recognition, which costs no memory and no random initialisation (ConvNeXt-large and ViT-B/16 take
seconds to initialise on a CPU, milliseconds on meta).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from audit.errors import UsageError
from audit.models.architectures import TORCHVISION_ARCHS, Backbone, strip_classifier
from audit.models.radimagenet import KERAS_ARCH, KerasResNet50

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class Built:
    backbone: Backbone
    head_keys: frozenset[str]  # the classifier's keys in the full model's state_dict


@dataclass(frozen=True)
class Candidate:
    arch: str
    family: str
    build: Callable[[Mapping[str, torch.Tensor]], Built]  # the checkpoint is a hint (widths)
    uses_hint: bool = False  # True when the shapes depend on the checkpoint (tiny-resnet's width)


# A family is checked only when a checkpoint has all its marker keys; the label lists what was.
FAMILY_MARKERS: dict[str, tuple[str, ...]] = {
    "resnet": ("conv1.weight", "layer1.0.conv1.weight"),
    "densenet": ("features.conv0.weight", "features.denseblock1.denselayer1.conv1.weight"),
    "efficientnet": ("features.0.0.weight", "features.1.0.block.0.0.weight"),
    "convnext": ("features.0.0.weight", "features.1.0.layer_scale"),
    "vit": ("conv_proj.weight", "class_token"),
    "tiny": ("stem.0.weight", "layer1.conv1.weight"),
}
FAMILY_LABELS = {
    "resnet": "torchvision ResNet 18/34/50/101/152 and Keras-style ResNet50",
    "densenet": "DenseNet 121/161/169/201",
    "efficientnet": "EfficientNet B0-B7",
    "convnext": "ConvNeXt tiny/small/base/large",
    "vit": "ViT-B/16",
    "tiny": "tiny-resnet",
}


def family_of(arch: str) -> str:
    for family in ("resnet", "densenet", "efficientnet", "convnext", "vit"):
        if arch.startswith(family):
            return family
    return "tiny" if arch == "tiny-resnet" else "timm"


def all_candidates() -> list[Candidate]:
    """Every built-in architecture, in the order recognition reports them."""
    found = [Candidate(name, family_of(name), _torchvision(name)) for name in TORCHVISION_ARCHS]
    found.append(Candidate(KERAS_ARCH, "resnet", _keras_resnet50))
    found.append(Candidate("tiny-resnet", "tiny", _tiny_resnet, uses_hint=True))
    return found


def timm_candidate(name: str) -> Candidate:
    """A timm model by name (the optional `timm` extra)."""
    try:
        import timm
    except ImportError:
        raise UsageError(
            f"architecture {TIMM_PREFIX}{name} needs timm, which is not installed; "
            "install it with: pip install 'medaudit[timm]'"
        ) from None
    if not timm.is_model(name):
        raise UsageError(f"timm has no model named {name!r}; see timm.list_models()")
    return Candidate(f"{TIMM_PREFIX}{name}", "timm", _timm(name))


def _torchvision(name: str) -> Callable[[Mapping[str, torch.Tensor]], Built]:
    def build(_hint: Mapping[str, torch.Tensor]) -> Built:
        from torchvision import models

        full = models.get_model(name, weights=None)
        keys = frozenset(full.state_dict())
        backbone = strip_classifier(full, name)
        return Built(backbone, keys - frozenset(backbone.module.state_dict()))

    return build


def _keras_resnet50(_hint: Mapping[str, torch.Tensor]) -> Built:
    module = KerasResNet50()
    # The port has no top; a fine-tuned copy would name its head as torchvision does.
    return Built(
        Backbone(module, module.feature_dim, KERAS_ARCH), frozenset({"fc.weight", "fc.bias"})
    )


def _tiny_resnet(hint: Mapping[str, torch.Tensor]) -> Built:
    """TinyResNet's width is a constructor argument: read it from the stem's weight."""
    from audit.models.tiny import TinyResNet

    stem = hint.get("stem.0.weight")
    width = int(stem.shape[0]) if stem is not None else 24
    module = TinyResNet(width=width)
    return Built(Backbone(module, module.feature_dim, "tiny-resnet"), frozenset())


def _timm(name: str) -> Callable[[Mapping[str, torch.Tensor]], Built]:
    def build(_hint: Mapping[str, torch.Tensor]) -> Built:
        import timm

        model = timm.create_model(name, pretrained=False)
        keys = frozenset(model.state_dict())
        model.reset_classifier(0)  # timm's own way to return pooled features
        backbone = Backbone(model, int(model.num_features), f"{TIMM_PREFIX}{name}")
        return Built(backbone, keys - frozenset(model.state_dict()))

    return build
