"""The PyTorch model as shipped, classifier included, from any file the probe accepts.

``audit.models.loading`` strips the classifier because fine-tuning replaces it; the probe scores
the model as it is, so it needs the head too. Three kinds of file carry one:

* a state_dict of a torchvision architecture with its classifier: the architecture is recognised
  by ``audit.models.recognise`` and rebuilt whole, the number of classes read from the head;
* a TorchScript archive (a program: only with ``--trust-code``);
* a pickled whole ``nn.Module`` (unpickling runs code: only with ``--trust-pickle``).

Anything else (a backbone without head, a custom head on a state_dict) gets a one-line error that
says to export the model to ONNX or TorchScript.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audit.errors import UsageError
from audit.models import formats
from audit.models.architectures import TORCHVISION_ARCHS, KeyLayout
from audit.models.building import make_gray
from audit.models.checkpoints import Weights, read_weights, refuse_non_finite
from audit.models.recognise import Recognised, build_on_meta, recognise
from audit.models.safe_unpickle import load_trusted_pickle
from audit.models.state_dicts import (
    readings,
    rename_old_densenet_keys,
    strip_wrapper_prefixes,
    views,
)
from audit.probe.onnx_file import first_line

EXPORT_HINT = "export the whole model to ONNX, or to TorchScript and allow it with `trust_code`"


@dataclass(frozen=True)
class TorchModel:
    """A whole model ready for inference and what the file was."""

    module: nn.Module
    format: str  # state_dict | safetensors | torchscript | pickled-module
    arch: str | None
    in_channels: int | None  # of the first convolution, when it can be read
    notes: tuple[str, ...] = ()


def load_torch_model(
    path: Path, *, arch: str | None = None, trust_code: bool = False, trust_pickle: bool = False
) -> TorchModel:
    if formats.sniff_format(path) == formats.TORCHSCRIPT:
        return _torchscript(path, trust_code)
    weights = read_weights(path, trust_pickle=trust_pickle)
    refuse_non_finite(path, weights.state_dict)  # the probe scores with every weight, head too
    if weights.format == "pickled-module":
        module = _module_in(load_trusted_pickle(path), path)
        return TorchModel(module.eval(), weights.format, None, _first_conv_channels(module),
                          weights.notes)  # fmt: skip
    return _torchvision_whole(path, weights, arch)


def _torchscript(path: Path, trust_code: bool) -> TorchModel:
    if not trust_code:
        raise UsageError(
            f"refused to load {path.name}: it is a TorchScript archive, which is a program, not "
            "just weights; allow it with `trust_code` if you trust the file"
        )
    try:
        with warnings.catch_warnings():  # torch's deprecation notice is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - one line for the user
        raise UsageError(f"cannot read {path.name} as TorchScript: {first_line(error)}") from None
    notes = ("loaded TorchScript (--trust-code)",)
    return TorchModel(module.eval(), "torchscript", None, _first_conv_channels(module), notes)


def _module_in(obj: object, path: Path) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        modules = [v for v in obj.values() if isinstance(v, nn.Module)]
        if len(modules) == 1:
            return modules[0]
    raise UsageError(f"{path.name} does not hold exactly one whole model; {EXPORT_HINT}")


def _first_conv_channels(module: nn.Module) -> int | None:
    """in_channels of the first 4-D weight in definition order (a convolution's)."""
    for value in module.state_dict().values():
        if value.ndim == 4 and value.is_floating_point():
            return int(value.shape[1])
    return None


def _torchvision_whole(path: Path, weights: Weights, arch: str | None) -> TorchModel:
    found = recognise(weights.state_dict, arch=arch, hints=weights.arch_hints, source=path.name)
    if found.arch not in TORCHVISION_ARCHS:
        raise UsageError(
            f"{path.name} is a {found.arch} checkpoint; from a state_dict the probe rebuilds "
            f"torchvision architectures only; {EXPORT_HINT}"
        )
    if not found.had_classifier:
        raise UsageError(
            f"{path.name} holds a {found.arch} backbone without its classifier; the probe scores "
            "the model as shipped, so save the state_dict with its head, or "
            f"{EXPORT_HINT.removeprefix('export ')}"
        )
    head_keys = build_on_meta(found.architecture, {}).head_keys
    errors = []
    for state_dict in _readings(weights.state_dict, found.architecture.layouts):
        classes = _classes(state_dict, head_keys)
        if classes is None:
            continue
        module = _build(found, classes)
        try:
            result = module.load_state_dict(_with_counters(module, state_dict), strict=False)
        except RuntimeError as error:  # a shape differs
            errors.append(first_line(error))
            continue
        if not result.missing_keys and not result.unexpected_keys:
            notes = (*weights.notes, *found.notes, f"classifier with {classes} output(s) kept")
            return TorchModel(module.eval(), weights.format, found.arch, found.in_channels, notes)
        errors.append(_describe_mismatch(result))
    detail = errors[0] if errors else "the classifier's weights were not found"
    raise UsageError(
        f"{path.name}: a standard torchvision {found.arch} classifier does not fit ({detail}); "
        f"a custom head needs the whole model: {EXPORT_HINT}"
    )


def _readings(
    state_dict: dict[str, torch.Tensor], layouts: tuple[KeyLayout, ...]
) -> list[dict[str, torch.Tensor]]:
    """The checkpoint's key readings (prefixes stripped, then through the recognised
    architecture's own layouts), each with any head set aside put back."""
    base, _ = strip_wrapper_prefixes(rename_old_densenet_keys(state_dict))
    found = []
    for view in views(state_dict):
        for reading in readings(view, layouts):
            head = {k: base[k] for k in reading.set_aside if k in base}
            found.append({**reading.state_dict, **head})
    return found


def _classes(state_dict: Mapping[str, torch.Tensor], head_keys: frozenset[str]) -> int | None:
    for key in sorted(head_keys):
        value = state_dict.get(key)
        if key.endswith("weight") and value is not None and value.ndim == 2:
            return int(value.shape[0])
    return None


def _build(found: Recognised, classes: int) -> nn.Module:
    """On the meta device (no time spent on a random initialisation that loading overwrites),
    unless the model has buffers that are not saved, which to_empty would leave uninitialised."""
    module = _build_on(torch.device("meta"), found, classes)
    saved = set(module.state_dict())
    if any(name not in saved for name, _ in module.named_buffers()):
        return _build_on(torch.device("cpu"), found, classes)
    return module.to_empty(device="cpu")


def _build_on(device: torch.device, found: Recognised, classes: int) -> nn.Module:
    from torchvision import models

    with device:
        module = models.get_model(found.arch, weights=None, num_classes=classes)
        if found.in_channels == 1 and found.first_conv is not None:
            make_gray(module, found.first_conv.removesuffix(".weight"))
    return module


def _with_counters(module: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    missing = {
        key: torch.zeros((), dtype=torch.long)
        for key in module.state_dict()
        if key.endswith("num_batches_tracked") and key not in weights
    }
    return {**weights, **missing}


def _describe_mismatch(result) -> str:  # noqa: ANN001 - torch's _IncompatibleKeys
    parts = []
    if result.missing_keys:
        parts.append(f"missing {', '.join(result.missing_keys[:2])}")
    if result.unexpected_keys:
        parts.append(f"unexpected {', '.join(result.unexpected_keys[:2])}")
    return "; ".join(parts)
