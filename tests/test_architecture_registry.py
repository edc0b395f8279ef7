"""The architecture registry is exhaustive (pip-audit's habit): every name users can give is an
entry that builds and is recognised, every family can be told apart, an architecture registered
from outside the package needs no edit to it, and the generic state_dict clean-up knows no model.

Builds run on the meta device (names and shapes only), so the whole file takes seconds.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from model_builders import assert_same_weights, randomised
from torch import nn

from audit import cli
from audit.errors import UsageError
from audit.models import architectures
from audit.models.architectures import (
    TIMM_FAMILY,
    TIMM_PREFIX,
    TORCHVISION_ARCHS,
    Architecture,
    Backbone,
    Built,
    Family,
    KeyLayout,
    architecture_names,
    create_backbone,
    families,
    get_architecture,
    register_architecture,
    register_family,
)
from audit.models.loading import load_model
from audit.models.radimagenet import SEQUENTIAL_LAYOUT
from audit.models.recognise import recognise
from audit.models.state_dicts import views
from audit.models.tiny import TinyResNet

NAMES = architecture_names()  # the registry as the package ships it, read at collection


@functools.cache
def meta_backbone(name: str) -> Backbone:
    """The factory's backbone on meta: shapes without memory or initialisation cost."""
    with torch.device("meta"):
        return create_backbone(name)


def medaudit_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    return err


# ---- every name users can give maps to an entry that builds ------------------------------------


def test_every_name_the_arch_errors_list_is_a_registry_entry(tmp_path: Path, capsys) -> None:
    """The names `--arch` accepts, as its two error messages list them, are the registry's."""
    path = tmp_path / "model.pt"
    torch.save({"stem.weight": torch.zeros(4, 3, 3, 3)}, path)
    unknown = medaudit_error(["inspect", str(path), "--arch", "no-such-net"], capsys)
    (listed,) = re.findall(r"accepted: (.*), or timm:NAME for a timm model", unknown)
    assert tuple(listed.split(", ")) == NAMES
    unrecognised = medaudit_error(["inspect", str(path)], capsys)
    (listed,) = re.findall(r"\(([^()]*), or timm:NAME with timm installed\)", unrecognised)
    assert tuple(listed.split(", ")) == NAMES
    assert set(TORCHVISION_ARCHS) <= set(NAMES)  # what the probe rebuilds whole


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_builds_and_a_checkpoint_of_it_is_recognised_as_it(name: str) -> None:
    backbone = meta_backbone(name)
    assert isinstance(backbone, Backbone) and backbone.arch == name and backbone.feature_dim > 0
    state_dict = backbone.module.state_dict()
    markers = families()[get_architecture(name).family].markers
    assert set(markers) <= set(state_dict), "recognition would never try it"
    found = recognise(state_dict)
    assert (found.arch, found.layout, found.in_channels) == (name, "plain", 3)
    assert not found.had_classifier and set(found.weights) == set(state_dict)


def representatives() -> list[str]:
    """The first entry of each family: one meta forward pass each keeps the file fast."""
    return list({get_architecture(name).family: name for name in reversed(NAMES)}.values())


@pytest.mark.parametrize("name", representatives())
def test_a_backbone_of_each_family_returns_pooled_features_of_its_width(name: str) -> None:
    backbone = meta_backbone(name)
    with torch.device("meta"):
        features = backbone.module.eval()(torch.empty(2, 3, 224, 224))
    assert tuple(features.shape) == (2, backbone.feature_dim)


def test_every_family_has_markers_a_label_and_architectures() -> None:
    registered = families()
    used = {get_architecture(name).family for name in NAMES}
    assert used == set(registered), "a family without architectures, or an entry without family"
    for family in registered.values():
        assert family.markers and all(family.markers), family.name
        assert family.label.strip(), family.name
    assert len({f.label for f in registered.values()}) == len(registered)


def test_a_key_layout_is_registered_with_the_architectures_it_belongs_to() -> None:
    """nn.Sequential(*resnet.children()) names only a ResNet's children: the ResNets carry it,
    and recognition reads such a file through it, prefix and all."""
    for name in NAMES:
        layouts = {layout.name for layout in get_architecture(name).layouts}
        is_resnet = get_architecture(name).family == "resnet"
        assert (SEQUENTIAL_LAYOUT in layouts) == is_resnet, name
    for name in ("resnet18", "keras-resnet50"):
        module = meta_backbone(name).module
        children = nn.Sequential(*module.children()).state_dict()
        found = recognise({f"backbone.{k}": v for k, v in children.items()})
        assert (found.arch, found.layout) == (name, SEQUENTIAL_LAYOUT)
        assert any("nn.Sequential" in note for note in found.notes)
        assert {view.layout for view in views(children)} == {"plain"}  # generic readings only


# ---- timm names resolve dynamically -------------------------------------------------------------


def test_timm_names_resolve_through_timm_without_being_registered(monkeypatch) -> None:
    import timm

    entry = get_architecture(f"{TIMM_PREFIX}test_resnet")
    assert entry.family == TIMM_FAMILY and entry.name not in NAMES
    backbone = create_backbone(f"{TIMM_PREFIX}test_resnet")
    assert backbone.feature_dim == timm.create_model("test_resnet").num_features
    with pytest.raises(UsageError, match="timm has no model named 'no_such_net'"):
        create_backbone(f"{TIMM_PREFIX}no_such_net")
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the extra were not installed
    with pytest.raises(UsageError, match=r"needs timm, which is not installed.*medaudit\[timm\]"):
        get_architecture(f"{TIMM_PREFIX}test_resnet")


# ---- an architecture registered from outside the package ---------------------------------------


class Petal(nn.Module):
    """An architecture the package has never heard of: a strided trunk, pooling, a head."""

    def __init__(self, width: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head: nn.Module = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.trunk(x)), 1))


def build_petal(_hint: dict[str, torch.Tensor]) -> Built:
    model = Petal()
    keys = frozenset(model.state_dict())
    model.head = nn.Identity()
    return Built(Backbone(model, 6, "petal"), keys - frozenset(model.state_dict()))


def from_petal_v0(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Petal's first release named its trunk `body`."""
    if "body.0.weight" not in state_dict:
        return None
    return {f"trunk.{k[5:]}" if k.startswith("body.") else k: v for k, v in state_dict.items()}


PETAL_V0 = KeyLayout("petal-v0", from_petal_v0, "renamed Petal v0's body.* to trunk.*")


@pytest.fixture()
def petal(monkeypatch) -> Iterator[Architecture]:
    """Registers Petal for one test; the shipped registry is restored afterwards."""
    monkeypatch.setattr(architectures, "_FAMILIES", dict(architectures._FAMILIES))
    monkeypatch.setattr(architectures, "_ARCHITECTURES", dict(architectures._ARCHITECTURES))
    register_family(Family("petal", ("trunk.0.weight", "trunk.1.running_var"), "Petal nets"))
    yield register_architecture(Architecture("petal", "petal", build_petal, layouts=(PETAL_V0,)))


def test_a_registered_architecture_is_built_and_its_checkpoints_load(petal, tmp_path) -> None:
    assert architecture_names()[-1] == "petal" and get_architecture("petal") is petal
    backbone = create_backbone("petal")
    assert isinstance(backbone.module, Petal) and backbone.feature_dim == 6
    assert backbone.module(torch.rand(2, 3, 16, 16)).shape == (2, 6)

    model = randomised(Petal())
    saved = model.state_dict()
    torch.save({"state_dict": saved, "epoch": 3}, tmp_path / "petal.pt")
    loaded = load_model(tmp_path / "petal.pt")
    assert (loaded.arch, loaded.had_classifier, loaded.backbone.feature_dim) == ("petal", True, 6)
    trunk = {k: v for k, v in saved.items() if not k.startswith("head.")}
    assert_same_weights(loaded.backbone.module, trunk)

    v0 = {f"module.{k.replace('trunk.', 'body.')}": v for k, v in saved.items()}
    torch.save(v0, tmp_path / "petal_v0.pt")
    assert load_model(tmp_path / "petal_v0.pt").arch == "petal"
    found = recognise(v0)
    assert (found.arch, found.layout, found.had_classifier) == ("petal", "petal-v0", True)
    assert found.notes[:2] == ("stripped prefix 'module.'", PETAL_V0.note)

    with pytest.raises(UsageError, match=r"checked .*Petal nets.*\(.*, petal, or timm:NAME"):
        recognise({"w": torch.zeros(1)})
    assert recognise(TinyResNet(width=8).state_dict()).arch == "tiny-resnet"  # others unchanged


def test_registration_refuses_duplicates_reserved_names_and_unknown_families(petal) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(petal)
    with pytest.raises(ValueError, match="reserved"):
        register_architecture(Architecture(f"{TIMM_PREFIX}petal", "petal", build_petal))
    with pytest.raises(ValueError, match="register family 'sepal' first"):
        register_architecture(Architecture("sepal", "sepal", build_petal))
    with pytest.raises(ValueError, match="already registered"):
        register_family(Family("petal", ("x",), "again"))
    with pytest.raises(ValueError, match="marker keys and a label"):
        register_family(Family("sepal", (), "Sepal nets"))


def test_the_registry_is_as_shipped_outside_the_registering_test() -> None:
    assert architecture_names() == NAMES and "petal" not in families()


# ---- the generic clean-up knows no model --------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement at any depth names, relative ones marked by dots."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_state_dicts_imports_no_architecture_module() -> None:
    spec = importlib.util.find_spec("audit.models.state_dicts")
    assert spec is not None and spec.origin is not None
    imported = imported_modules(Path(spec.origin))
    assert "audit.models.radimagenet" not in imported
    model_code = {"audit.models", "torchvision", "timm"}
    offending = {
        name
        for name in imported
        if name.startswith(".") or any(name == m or name.startswith(f"{m}.") for m in model_code)
    }
    assert not offending, f"state_dicts.py imports {sorted(offending)}"
