"""Read the weights out of a model file of any accepted format, refusing what would run code.

The format is sniffed from the content. Plain weights (torch.save files read with
weights_only=True, safetensors) load by default; TorchScript archives are programs and load only with
--trust-code; a file that can only be read by full unpickling loads only with --trust-pickle.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audit.errors import UsageError
from audit.models import formats
from audit.models.safe_unpickle import (
    PickleRefused,
    load_trusted_pickle,
    load_weights_only,
    pickle_globals,
    refuse_globals,
)
from audit.models.state_dicts import StateDict, extract_state_dict

_MAX_PICKLE_SCAN = 64 << 20


@dataclass(frozen=True)
class Weights:
    """The flat state_dict found in a file, and what the file was."""

    state_dict: StateDict
    format: str  # "state_dict" | "safetensors" | "torchscript" | "pickled-module"
    arch_hints: tuple[str, ...] = ()  # architecture names in the checkpoint's own metadata
    notes: tuple[str, ...] = ()


def refuse_non_finite(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Weights holding NaN or infinity cannot be fine-tuned or scored: every run (or every score)
    would fail or be NaN, found only after the data is decoded. Said now, with a count."""
    bad = sum(
        1
        for value in tensors.values()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    )
    if bad:
        raise UsageError(
            f"{Path(path).name}: {bad} weight tensor(s) hold NaN or infinite values; the model "
            "cannot be fine-tuned or scored (was it saved after a diverged training step?)"
        )


def read_weights(path: Path, *, trust_code: bool = False, trust_pickle: bool = False) -> Weights:
    container = formats.sniff_format(path)
    if container in (formats.TORCH_ZIP, formats.TORCH_LEGACY):
        return _read_torch(path, container, trust_pickle)
    if container == formats.SAFETENSORS:
        return _read_safetensors(path)
    if container == formats.TORCHSCRIPT:
        return _read_torchscript(path, trust_code)
    raise _unsupported(path, container)


def _read_torch(path: Path, container: str, trust_pickle: bool) -> Weights:
    notes: list[str] = []
    try:
        obj = load_weights_only(path, container)
    except PickleRefused:
        if not trust_pickle:
            raise
        obj = load_trusted_pickle(path)
        notes.append("loaded by full unpickling (--trust-pickle)")
    kind = "pickled-module" if _holds_module(obj) else "state_dict"
    state_dict, found_notes = extract_state_dict(obj)
    if not state_dict:
        raise UsageError(
            f"{Path(path).name} is a PyTorch file but holds no weights (a mapping of names to tensors) at the "
            f"top level or under any of the usual keys; top-level entries: {_describe(obj)}"
        )
    return Weights(state_dict, kind, _arch_hints(obj), (*found_notes, *notes))


def _read_safetensors(path: Path) -> Weights:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return Weights(dict(load_file(str(path), device="cpu")), "safetensors")
    except (SafetensorError, OSError) as error:
        raise UsageError(
            f"cannot read {Path(path).name} as safetensors (truncated or damaged?): "
            f"{getattr(error, 'strerror', None) or error}"
        ) from None


def _read_torchscript(path: Path, trust_code: bool) -> Weights:
    if not trust_code:
        raise UsageError(
            f"refused to load {Path(path).name}: it is a TorchScript archive, which is a program, not just "
            "weights; allow it with `trust_code` if you trust the file, or save "
            "model.state_dict() instead"
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - one line for the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UsageError(f"cannot read {Path(path).name} as TorchScript: {first}") from None
    state_dict = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return Weights(state_dict, "torchscript", (), ("loaded TorchScript (--trust-code)",))


def _unsupported(path: Path, container: str) -> UsageError:
    if container == formats.ONNX:
        return UsageError(
            f"{Path(path).name} is an ONNX model: fine-tuning needs PyTorch weights (a state_dict or "
            "safetensors file); ONNX models can be audited for inference only with `medaudit probe`"
        )
    if container == formats.HDF5:
        return UsageError(
            f"{Path(path).name} is an HDF5 (Keras .h5) file, which is not loaded; use PyTorch weights, e.g. "
            "the RadImageNet PyTorch release or the Hugging Face mirror's ResNet50.pt"
        )
    if container == formats.PICKLE:
        with open(path, "rb") as handle:
            names = pickle_globals(handle.read(_MAX_PICKLE_SCAN))
        if names:
            return refuse_globals(path, names, what="this bare pickle (not a torch.save file)")
        return UsageError(
            f"{Path(path).name} is a bare Python pickle, not a torch.save checkpoint; re-save the weights "
            "with torch.save(model.state_dict(), path) or as safetensors"
        )
    return UsageError(
        f"{Path(path).name} is not a model checkpoint this tool reads (accepted: PyTorch torch.save files, "
        "safetensors, TorchScript with `trust_code`; ONNX for `medaudit probe`)"
    )


def _arch_hints(obj: Any) -> tuple[str, ...]:
    """timm's train.py saves `args.model` (the timm name) beside the weights."""
    if not isinstance(obj, Mapping):
        return ()
    args = obj.get("args")
    name = getattr(args, "model", None) if isinstance(args, argparse.Namespace) else None
    return (name,) if isinstance(name, str) else ()


def _holds_module(obj: Any) -> bool:
    """A whole model, at the top or as a value (`{'model': model, 'epoch': 3}`)."""
    if isinstance(obj, Mapping):
        return any(isinstance(v, nn.Module) for v in obj.values())
    return isinstance(obj, nn.Module)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return ", ".join(repr(k) for k in list(obj)[:6]) or "(empty)"
    return type(obj).__name__
