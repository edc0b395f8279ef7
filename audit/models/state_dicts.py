"""Find the weights inside whatever a training script saved, and undo the renames wrappers make.

Training code rarely saves a bare state_dict: it nests it under `state_dict` with the epoch and
optimizer, keeps an EMA copy beside it, and DataParallel / torch.compile / Lightning modules add
`module.`, `_orig_mod.` or `model.` to every key. All of that clean-up lives here (timm's habit: one
helper every loader uses), so recognition only ever sees keys as the architecture names them.

This module knows no model: a layout that belongs to particular architectures (RadImageNet's
`nn.Sequential(*resnet.children())` numbering) is a `KeyLayout` registered beside them, and
recognition applies it to each generic reading made here. The one exception is torchvision's own
rename of pre-0.3 DenseNet keys, kept here because torchvision's loader applies it to any file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]

# Where training scripts put the weights, most specific first. The plain weights come before any
# EMA copy: the audit is of the model the user evaluated, and a note says when an EMA was present.
NESTED_KEYS = (
    "state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params",
    "state_dict_ema", "model_ema", "ema_state_dict", "ema",
)  # fmt: skip
_EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.", "net.")
_MAX_DEPTH = 4
_MAX_SET_ASIDE = 8  # keys outside a wrapper prefix, taken as a head (e.g. backbone.* + fc.*)
# torchvision's pre-0.3 DenseNet keys (`norm.1.weight`), renamed as torchvision's own loader does.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass(frozen=True)
class View:
    """One reading of a state_dict's keys; recognition tries each until one fits an architecture."""

    state_dict: StateDict
    layout: str = "plain"
    set_aside: tuple[str, ...] = ()  # keys left out of the backbone (a head outside the prefix)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyLayout:
    """Another way one architecture's keys get saved, registered beside that architecture.

    `remap` renames a reading's keys to the architecture's own names, or returns None when the
    keys are not in this layout; `note` is what recognition records when it was used.
    """

    name: str
    remap: Callable[[StateDict], StateDict | None]
    note: str

    def read(self, view: View) -> View | None:
        mapped = self.remap(view.state_dict)
        if mapped is None:
            return None
        return View(mapped, self.name, view.set_aside, (*view.notes, self.note))


def is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def extract_state_dict(obj: Any) -> tuple[StateDict, tuple[str, ...]]:
    """The weights in a loaded checkpoint object, and notes on where they were found.

    Returns an empty dict when none are found; the caller words the error.
    """
    found = _search(obj, "", 0)
    if found is None:
        return {}, ()
    state_dict, where = found
    notes = [f"weights found under {where}"] if where else []
    used_ema = any(where.startswith(f"[{k!r}]") for k in _EMA_KEYS)
    ema = [k for k in _EMA_KEYS if isinstance(obj, Mapping) and k in obj]
    if ema and not used_ema:
        notes.append(f"an EMA copy ({ema[0]!r}) is also present and was not used")
    return state_dict, tuple(notes)


def _search(obj: Any, where: str, depth: int) -> tuple[StateDict, str] | None:
    if isinstance(obj, nn.Module):  # only reachable after a trusted full unpickle
        return dict(obj.state_dict()), where
    if is_state_dict(obj):
        return dict(obj), where
    if not isinstance(obj, Mapping) or depth >= _MAX_DEPTH:
        return None
    for key in NESTED_KEYS:
        if key in obj:
            found = _search(obj[key], f"{where}[{key!r}]", depth + 1)
            if found is not None:
                return found
    weight_sets = [k for k, v in obj.items() if is_state_dict(v)]
    if len(weight_sets) == 1:  # one set of weights under an unusual name
        return dict(obj[weight_sets[0]]), f"{where}[{weight_sets[0]!r}]"
    return None


def views(state_dict: StateDict) -> Iterator[View]:
    """Generic readings of the keys, most likely first: wrapper prefixes stripped, then a head
    outside a prefix set aside. Architecture-specific layouts are applied by recognition."""
    base, notes = strip_wrapper_prefixes(rename_old_densenet_keys(state_dict))
    yield View(base, notes=notes)
    for prefix in WRAPPER_PREFIXES:
        inside = {k[len(prefix) :]: v for k, v in base.items() if k.startswith(prefix)}
        outside = tuple(k for k in base if not k.startswith(prefix))
        if not inside or not outside or len(outside) > min(_MAX_SET_ASIDE, len(inside)):
            continue
        stripped, more = strip_wrapper_prefixes(inside)
        note = f"used the keys under {prefix!r}; set aside {', '.join(outside)} as the head"
        yield View(stripped, "plain", outside, (*notes, note, *more))


def readings(view: View, layouts: Iterable[KeyLayout]) -> Iterator[View]:
    """`view` as it is, then through each of an architecture's layouts that applies to it."""
    yield view
    for layout in layouts:
        mapped = layout.read(view)
        if mapped is not None:
            yield mapped


def strip_wrapper_prefixes(state_dict: StateDict) -> tuple[StateDict, tuple[str, ...]]:
    """Remove prefixes that every key shares (`module.module.` too), noting each."""
    notes: list[str] = []
    while True:
        prefix = next(
            (p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state_dict)), None
        )
        if prefix is None or not state_dict:
            return state_dict, tuple(notes)
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
        notes.append(f"stripped prefix {prefix!r}")


def rename_old_densenet_keys(state_dict: StateDict) -> StateDict:
    return {_OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state_dict.items()}
