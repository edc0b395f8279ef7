"""One registry of backbone architectures, one factory (timm's habit).

A backbone maps images (N, C, H, W) to pooled features (N, F); the engine adds Dropout and a new
head, so every architecture is fine-tuned the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from audit.errors import UsageError


@dataclass(frozen=True)
class Backbone:
    """A feature extractor and the width of the features it returns."""

    module: nn.Module
    feature_dim: int
    arch: str


def _tiny_cnn(width: int = 16) -> Backbone:
    """A small residual CNN for the CPU demo: seconds per fine-tuning run on two cores."""
    from audit.models.tiny import TinyResNet

    module = TinyResNet(width=width)
    return Backbone(module, module.feature_dim, "tiny-resnet")


def _torchvision(name: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        from torchvision import models

        model = models.get_model(name, weights=None)
        return strip_classifier(model, name)

    return build


def strip_classifier(model: nn.Module, arch: str) -> Backbone:
    """Replace a torchvision classifier's last layer by Identity, keeping its pooling."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        dim = model.fc.in_features
        model.fc = nn.Identity()
    elif hasattr(model, "heads"):  # ViT
        dim = model.heads.head.in_features
        model.heads = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Linear):  # DenseNet
        dim = model.classifier.in_features
        model.classifier = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Sequential):  # EfficientNet, ConvNeXt
        last = model.classifier[-1]
        dim = last.in_features
        model.classifier[-1] = nn.Identity()
    else:
        raise UsageError(f"cannot find the classifier of architecture {arch!r} to replace it")
    return Backbone(model, dim, arch)


TORCHVISION_ARCHS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "densenet161", "densenet169", "densenet201",
    *(f"efficientnet_b{i}" for i in range(8)),
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "vit_b_16",
)  # fmt: skip


def _keras_resnet50() -> Backbone:
    """The Keras-equivalent ResNet50 that the RadImageNet port's weights need (radimagenet.py)."""
    from audit.models.radimagenet import KERAS_ARCH, KerasResNet50

    module = KerasResNet50()
    return Backbone(module, module.feature_dim, KERAS_ARCH)


def architecture_builders() -> dict[str, Callable[[], Backbone]]:
    """Name -> zero-argument builder with random weights."""
    builders: dict[str, Callable[[], Backbone]] = {"tiny-resnet": _tiny_cnn}
    builders.update({name: _torchvision(name) for name in TORCHVISION_ARCHS})
    builders["keras-resnet50"] = _keras_resnet50
    return builders


def create_backbone(arch: str) -> Backbone:
    """Build a backbone with random weights; unknown names list what is accepted."""
    builders = architecture_builders()
    if arch not in builders:
        known = ", ".join(sorted(builders))
        raise UsageError(f"unknown architecture {arch!r}; accepted: {known}")
    return builders[arch]()


def random_init_like(backbone: Backbone, seed: int) -> Backbone:
    """The same architecture with fresh random weights: the study's random-initialisation arm.

    Copies the loaded module and resets every layer, so it works for any architecture that was
    loaded (timm's and one-channel variants included), not only those the registry can build.
    """
    import copy

    import torch

    module = copy.deepcopy(backbone.module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
    return Backbone(module, backbone.feature_dim, backbone.arch)
