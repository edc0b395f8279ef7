"""One registry of backbone architectures, one factory (timm's habit).

A backbone maps images (N, C, H, W) to pooled features (N, F); the engine adds Dropout and a new
head, so every architecture is fine-tuned the same way.

Each `Architecture` says everything the rest of the package needs about it: its family (whose
marker keys decide when recognition tries it), how to build it, and the key layouts it is saved in
besides its own names. `create_backbone` is the one factory (demo stand-ins, bench, tests) and
recognition reads the same entries, so an architecture registered with `register_architecture`,
from inside the package or outside it, is built and recognised with no other edit. `timm:NAME`
resolves dynamically through the optional timm extra.

Builders take the checkpoint's state_dict as a hint (TinyResNet's width is read from it) and run
under `torch.device("meta")` for recognition, which costs no memory and no random initialisation
(ConvNeXt-large and ViT-B/16 take seconds to initialise on a CPU, milliseconds on meta).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from audit.errors import UsageError
from audit.models.radimagenet import KERAS_ARCH, SEQUENTIAL_CHILDREN, KerasResNet50
from audit.models.state_dicts import KeyLayout

__all__ = [
    "TIMM_FAMILY",
    "TIMM_PREFIX",
    "TORCHVISION_ARCHS",
    "Architecture",
    "Backbone",
    "Built",
    "Family",
    "KeyLayout",
    "architecture_names",
    "architectures",
    "create_backbone",
    "families",
    "get_architecture",
    "random_init_like",
    "register_architecture",
    "register_family",
    "strip_classifier",
    "timm_architecture",
]

TIMM_PREFIX = "timm:"
TIMM_FAMILY = "timm"  # not registered: timm models are tried when named, never by markers

Hint = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Backbone:
    """A feature extractor and the width of the features it returns."""

    module: nn.Module
    feature_dim: int
    arch: str


@dataclass(frozen=True)
class Built:
    """A backbone and which keys of the full model's state_dict were its classifier, so
    recognition can tell whether a checkpoint carried a head."""

    backbone: Backbone
    head_keys: frozenset[str]


@dataclass(frozen=True)
class Family:
    """Architectures recognition tries only when a checkpoint has all of `markers`; `label` is
    how an error lists what was checked."""

    name: str
    markers: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class Architecture:
    """One registry entry: everything building and recognition need about an architecture."""

    name: str
    family: str
    build: Callable[[Hint], Built]  # random weights; the checkpoint is a hint (widths)
    uses_hint: bool = False  # True when the shapes depend on the checkpoint (tiny-resnet's width)
    layouts: tuple[KeyLayout, ...] = ()  # other key namings it is saved in, with their remaps


_FAMILIES: dict[str, Family] = {}
_ARCHITECTURES: dict[str, Architecture] = {}


def register_family(family: Family) -> Family:
    """Add a family; its markers must be keys every member's backbone state_dict has."""
    if family.name in _FAMILIES or family.name == TIMM_FAMILY:
        raise ValueError(f"family {family.name!r} is already registered")
    if not family.markers or not family.label:
        raise ValueError(f"family {family.name!r} needs marker keys and a label")
    _FAMILIES[family.name] = family
    return family


def register_architecture(architecture: Architecture) -> Architecture:
    """Add an architecture; recognition tries it after those registered before it."""
    name = architecture.name
    if name in _ARCHITECTURES or name.startswith(TIMM_PREFIX):
        raise ValueError(f"architecture {name!r} is already registered or reserved")
    if architecture.family not in _FAMILIES:
        raise ValueError(f"architecture {name!r}: register family {architecture.family!r} first")
    _ARCHITECTURES[name] = architecture
    return architecture


def architectures() -> tuple[Architecture, ...]:
    """Every registered architecture, in the order recognition tries and reports them."""
    return tuple(_ARCHITECTURES.values())


def architecture_names() -> tuple[str, ...]:
    """What `--arch` accepts besides `timm:NAME`, in the order its errors list them."""
    return tuple(_ARCHITECTURES)


def families() -> dict[str, Family]:
    """Registered families, in the order an error lists them."""
    return dict(_FAMILIES)


def get_architecture(name: str) -> Architecture:
    """The entry for a name (`timm:NAME` through timm); unknown names get the closest ones."""
    if name.startswith(TIMM_PREFIX):
        return timm_architecture(name[len(TIMM_PREFIX) :])
    if name in _ARCHITECTURES:
        return _ARCHITECTURES[name]
    close = difflib.get_close_matches(name, list(_ARCHITECTURES), n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}; " if close else ""
    raise UsageError(
        f"unknown architecture {name!r} for `arch`; {hint}accepted: {', '.join(_ARCHITECTURES)}, "
        f"or {TIMM_PREFIX}NAME for a timm model"
    )


def create_backbone(name: str) -> Backbone:
    """The one factory: a backbone with random weights (on the current default device)."""
    return get_architecture(name).build({}).backbone


def timm_architecture(name: str) -> Architecture:
    """A timm model by name (the optional `timm` extra), made when asked for, not registered."""
    try:
        import timm
    except ImportError:
        raise UsageError(
            f"architecture {TIMM_PREFIX}{name} needs timm, which is not installed; "
            "install it with: pip install 'medaudit[timm]'"
        ) from None
    if not timm.is_model(name):
        raise UsageError(f"timm has no model named {name!r}; see timm.list_models()")
    return Architecture(f"{TIMM_PREFIX}{name}", TIMM_FAMILY, _timm(name))


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


def random_init_like(backbone: Backbone, seed: int) -> Backbone:
    """The same architecture with fresh random weights: the study's random-initialisation arm.

    Copies the loaded module and resets every layer, so it works for any architecture that was
    loaded (timm's and one-channel variants included), not only those the registry can build.
    """
    import copy

    module = copy.deepcopy(backbone.module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
    return Backbone(module, backbone.feature_dim, backbone.arch)


# ---- builders ---------------------------------------------------------------------------------


def _torchvision(name: str) -> Callable[[Hint], Built]:
    def build(_hint: Hint) -> Built:
        from torchvision import models

        full = models.get_model(name, weights=None)
        keys = frozenset(full.state_dict())
        backbone = strip_classifier(full, name)
        return Built(backbone, keys - frozenset(backbone.module.state_dict()))

    return build


def _keras_resnet50(_hint: Hint) -> Built:
    """The Keras-equivalent ResNet50 that the RadImageNet port's weights need (radimagenet.py)."""
    module = KerasResNet50()
    # The port has no top; a fine-tuned copy would name its head as torchvision does.
    return Built(
        Backbone(module, module.feature_dim, KERAS_ARCH), frozenset({"fc.weight", "fc.bias"})
    )


def _tiny_resnet(hint: Hint) -> Built:
    """TinyResNet's width is a constructor argument: read it from the stem's weight (16 without
    a hint, the CPU demo's width: seconds per fine-tuning run on two cores)."""
    from audit.models.tiny import TinyResNet

    stem = hint.get("stem.0.weight")
    width = int(stem.shape[0]) if stem is not None else 16
    module = TinyResNet(width=width)
    return Built(Backbone(module, module.feature_dim, "tiny-resnet"), frozenset())


def _timm(name: str) -> Callable[[Hint], Built]:
    def build(_hint: Hint) -> Built:
        import timm

        model = timm.create_model(name, pretrained=False)
        keys = frozenset(model.state_dict())
        model.reset_classifier(0)  # timm's own way to return pooled features
        backbone = Backbone(model, int(model.num_features), f"{TIMM_PREFIX}{name}")
        return Built(backbone, keys - frozenset(model.state_dict()))

    return build


# ---- the built-in entries: each family's markers and label beside its architectures ----------

_TORCHVISION: tuple[tuple[Family, tuple[str, ...]], ...] = (
    (
        Family("resnet", ("conv1.weight", "layer1.0.conv1.weight"),
               "torchvision ResNet 18/34/50/101/152 and Keras-style ResNet50"),
        ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    ),
    (
        Family("densenet", ("features.conv0.weight",
                            "features.denseblock1.denselayer1.conv1.weight"),
               "DenseNet 121/161/169/201"),
        ("densenet121", "densenet161", "densenet169", "densenet201"),
    ),
    (
        Family("efficientnet", ("features.0.0.weight", "features.1.0.block.0.0.weight"),
               "EfficientNet B0-B7"),
        tuple(f"efficientnet_b{i}" for i in range(8)),
    ),
    (
        Family("convnext", ("features.0.0.weight", "features.1.0.layer_scale"),
               "ConvNeXt tiny/small/base/large"),
        ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"),
    ),
    (Family("vit", ("conv_proj.weight", "class_token"), "ViT-B/16"), ("vit_b_16",)),
)  # fmt: skip
# The official RadImageNet file saves a ResNet as nn.Sequential(*children()): a ResNet layout.
_LAYOUTS = {"resnet": (SEQUENTIAL_CHILDREN,)}

TORCHVISION_ARCHS = tuple(name for _, names in _TORCHVISION for name in names)


def _register_builtins() -> None:
    for family, names in _TORCHVISION:
        register_family(family)
        layouts = _LAYOUTS.get(family.name, ())
        for name in names:
            entry = Architecture(name, family.name, _torchvision(name), layouts=layouts)
            register_architecture(entry)
    register_architecture(
        Architecture(KERAS_ARCH, "resnet", _keras_resnet50, layouts=_LAYOUTS["resnet"])
    )
    register_family(Family("tiny", ("stem.0.weight", "layer1.conv1.weight"), "tiny-resnet"))
    register_architecture(Architecture("tiny-resnet", "tiny", _tiny_resnet, uses_hint=True))


_register_builtins()
