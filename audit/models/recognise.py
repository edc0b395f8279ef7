"""Recognise a state_dict's architecture from its keys and shapes.

Key names alone are ambiguous: torchvision's ResNet50 and the Keras-style port share them, and
EfficientNet B0 and B1 differ only in how many blocks each stage has. So a candidate fits only when
every backbone key is present with its exact shape and nothing unexplained is left over; when none
fits, the closest misfits are reported, so a user can tell a wrong `--arch` from a damaged file.

The candidates are the registry's (`architectures.py`); each generic reading of the keys
(`state_dicts.views`) is tried as it is and then through each candidate's own key layouts, so a
layout such as RadImageNet's `nn.Sequential` numbering is known only to the architectures it fits.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from audit.errors import UsageError
from audit.models.architectures import (
    TIMM_FAMILY,
    TIMM_PREFIX,
    Architecture,
    Built,
    architecture_names,
    architectures,
    families,
    get_architecture,
    timm_architecture,
)
from audit.models.state_dicts import KeyLayout, StateDict, View, views

Shape = tuple[int, ...]
_COUNTER = "num_batches_tracked"  # absent from pre-0.4 checkpoints; filled with 0 when missing


@dataclass(frozen=True)
class Signature:
    """What recognition compares: the backbone's key shapes, the head's keys, the first conv."""

    shapes: Mapping[str, Shape]
    head_keys: frozenset[str]
    first_conv: str | None


@dataclass(frozen=True)
class Fit:
    """How one candidate's backbone compares with one reading of the checkpoint."""

    architecture: Architecture
    view: View
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, Shape, Shape], ...]  # key, found, expected
    first_conv: str | None
    gray: bool
    had_classifier: bool
    backbone_keys: frozenset[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} keys missing (e.g. {', '.join(self.missing[:2])})")
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:2])})"
            )
        for key, found, expected in self.mismatched[:3]:
            parts.append(f"{key} has shape {list(found)}, expected {list(expected)}")
        if len(self.mismatched) > 3:
            parts.append(f"{len(self.mismatched) - 3} more shapes differ")
        return "; ".join(parts)


@dataclass(frozen=True)
class Recognised:
    """A checkpoint matched to an architecture: what the builder needs, and what to record."""

    architecture: Architecture
    weights: StateDict  # the backbone's keys only, named as the architecture names them
    in_channels: int
    first_conv: str | None  # key of the first convolution's weight
    had_classifier: bool
    layout: str
    notes: tuple[str, ...]

    @property
    def arch(self) -> str:
        return self.architecture.name


def recognise(
    state_dict: StateDict,
    *,
    arch: str | None = None,
    hints: Iterable[str] = (),
    source: str = "the checkpoint",
) -> Recognised:
    """Match `state_dict` to exactly one architecture, or raise a UsageError saying what was tried.

    `arch` (the user's --arch) restricts the search to that one; `hints` are architecture names the
    checkpoint's own metadata gives (timm's `args.model`), tried through timm when it is installed.
    """
    forced = [get_architecture(arch)] if arch is not None else None
    candidates = forced or [*architectures(), *_hinted(hints)]
    fits: list[Fit] = []
    for view in views(state_dict):
        for candidate, reading in _attempts(view, candidates, check_markers=forced is None):
            fit = compare(candidate, signature(candidate, reading.state_dict), reading)
            if fit.ok:
                return _recognised(fit)
            fits.append(fit)
    raise _no_fit(state_dict, arch, fits, source)


def _attempts(
    view: View, candidates: list[Architecture], *, check_markers: bool
) -> Iterator[tuple[Architecture, View]]:
    """Every candidate on the reading as it is, then each key layout's reading with the
    candidates that registered it; without `--arch`, only those whose family markers it has."""
    by_layout: dict[KeyLayout, list[Architecture]] = {}
    for candidate in candidates:
        for layout in candidate.layouts:
            by_layout.setdefault(layout, []).append(candidate)
    yield from _marked(view, candidates, check_markers)
    for layout, users in by_layout.items():  # remapped only when the plain reading did not fit
        mapped = layout.read(view)
        if mapped is not None:
            yield from _marked(mapped, users, check_markers)


def _marked(
    reading: View, candidates: list[Architecture], check_markers: bool
) -> Iterator[tuple[Architecture, View]]:
    for candidate in candidates:
        if not check_markers or _has_markers(candidate, reading.state_dict):
            yield candidate, reading


def build_on_meta(architecture: Architecture, hint: StateDict) -> Built:
    """Build without memory or initialisation cost: only names and shapes are needed here."""
    with torch.device("meta"):
        return architecture.build(hint)


def signature(architecture: Architecture, hint: StateDict) -> Signature:
    if architecture.uses_hint or architecture.family == TIMM_FAMILY:
        return _signature_of(build_on_meta(architecture, hint))
    return _fixed_signature(architecture)


@functools.cache
def _fixed_signature(architecture: Architecture) -> Signature:
    """Memoised per process (per entry, not per name, so a re-registered name is rebuilt): an
    architecture's names and shapes never change, and building a family's eight EfficientNets on
    meta for every file would cost seconds."""
    return _signature_of(build_on_meta(architecture, {}))


def _signature_of(built: Built) -> Signature:
    module = built.backbone.module
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return Signature(shapes, built.head_keys, first_conv_key(module))


def first_conv_key(module: nn.Module) -> str | None:
    """The first 3-channel convolution in definition order: the one a grayscale model changes."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d) and sub.in_channels == 3:
            return f"{name}.weight"
    return None


def compare(architecture: Architecture, sig: Signature, view: View) -> Fit:
    expected, first = sig.shapes, sig.first_conv
    head_modules = {k.rsplit(".", 1)[0] for k in sig.head_keys}
    missing = tuple(k for k in expected if k not in view.state_dict and _COUNTER not in k)
    unexpected: list[str] = []
    mismatched: list[tuple[str, Shape, Shape]] = []
    gray = had_head = False
    for key, value in view.state_dict.items():
        found = tuple(value.shape)
        if key in expected:
            if key == first and _is_gray_version(found, expected[key]):
                gray = True
            elif found != expected[key]:
                mismatched.append((key, found, expected[key]))
        elif key in sig.head_keys or any(key.startswith(m + ".") for m in head_modules):
            had_head = True
        else:
            unexpected.append(key)
    return Fit(
        architecture, view, missing, tuple(unexpected), tuple(mismatched), first, gray,
        had_head or bool(view.set_aside), frozenset(expected),
    )  # fmt: skip


def _is_gray_version(found: Shape, expected: Shape) -> bool:
    """The architecture's first convolution, saved for one input channel instead of three."""
    if len(found) != 4 or found[1] != 1 or expected[1] != 3:
        return False
    return (found[0], *found[2:]) == (expected[0], *expected[2:])


def _has_markers(architecture: Architecture, state_dict: StateDict) -> bool:
    """A registered family is tried only on keys with all its markers; timm's, when named."""
    family = families().get(architecture.family)
    return family is None or all(m in state_dict for m in family.markers)


def _hinted(hints: Iterable[str]) -> list[Architecture]:
    found = []
    for name in hints:
        try:
            found.append(timm_architecture(name))
        except UsageError:
            continue  # timm missing or the name unknown to it: the built-ins still apply
    return found


def _recognised(fit: Fit) -> Recognised:
    expected = fit.architecture.name
    notes = list(fit.view.notes)
    if fit.gray:
        notes.append(
            "one-channel first convolution kept as saved; a 3-channel input is averaged to one "
            "channel before it"
        )
    return Recognised(
        architecture=fit.architecture,
        weights={k: v for k, v in fit.view.state_dict.items() if k in fit.backbone_keys},
        in_channels=1 if fit.gray else 3,
        first_conv=fit.first_conv,
        had_classifier=fit.had_classifier,
        layout=fit.view.layout,
        notes=(*notes, f"recognised as {expected} from keys and shapes"),
    )


def _no_fit(state_dict: StateDict, arch: str | None, fits: list[Fit], source: str) -> UsageError:
    if arch is not None:
        best = min(fits, key=lambda f: f.problems)
        return UsageError(f"{source} does not fit `arch` {arch}: {best.describe()}")
    checked = "; ".join(family.label for family in families().values())
    names = ", ".join(architecture_names())
    if not fits:
        sample = ", ".join(list(state_dict)[:3])
        return UsageError(
            f"could not recognise the architecture of {source} ({len(state_dict)} weight keys, "
            f"e.g. {sample}); checked {checked}; name it with `arch` ({names}, or "
            f"{TIMM_PREFIX}NAME with timm installed)"
        )
    ranked = _distinct(sorted(fits, key=lambda f: f.problems))
    closest = f"{ranked[0].architecture.name}: {ranked[0].describe()}"
    if len(ranked) > 1:
        closest += f"; next {ranked[1].architecture.name} ({ranked[1].problems} differences)"
    return UsageError(
        f"could not recognise the architecture of {source}: no candidate fits exactly; closest "
        f"{closest}; check the file is complete, or name it with `arch` ({names})"
    )


def _distinct(fits: list[Fit]) -> list[Fit]:
    seen: set[str] = set()
    out = []
    for fit in fits:
        if fit.architecture.name not in seen:
            seen.add(fit.architecture.name)
            out.append(fit)
    return out
