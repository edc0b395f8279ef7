"""Open torch.save files without letting them run code.

A pickle can import and call any function it names, so a checkpoint from a colleague could run
code on the build server the moment it is opened. Every torch.save file is therefore read with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers. Real checkpoints
also carry harmless metadata (timm's `argparse.Namespace` of training arguments, numpy scalars for
the best metric); those few classes are admitted by the explicit allowlist below, scoped to one
`torch.load` call with `torch.serialization.safe_globals`, never added process-wide. Anything else
is refused with the name of what the file wanted to import, found without executing it.
"""

from __future__ import annotations

import argparse
import io
import pickletools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.errors import UsageError
from audit.models.formats import TORCH_ZIP

# Module prefixes that mark a whole pickled model rather than a dict of weights.
_MODULE_PREFIXES = (
    "torch.nn.modules.",
    "torchvision.models.",
    "timm.models.",
    "torch.nn.parallel.",
)
# torch's refusals name the global two ways: "GLOBAL x.y was not an allowed global" (zip files)
# and "unsupported GLOBAL x.y whose module x is blocked" (legacy files, blocked modules).
_GLOBAL_IN_MESSAGE = re.compile(
    r"GLOBAL ([\w.]+) (?:was not an allowed global|whose module [\w.]+ is blocked)"
)


class PickleRefused(UsageError):
    """The file needs more than weights-only unpickling; --trust-pickle would allow it."""


def metadata_allowlist() -> list[Any]:
    """The classes and functions a checkpoint may name besides torch's own tensor machinery.

    Each entry is harmless to call with any arguments: a namespace that only stores attributes,
    numpy's scalar and dtype constructors. numpy moved `numpy.core` to `numpy._core` in 2.0, and
    files keep the name they were saved with, so both spellings are listed.
    """
    scalar = np._core.multiarray.scalar
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [
        argparse.Namespace,
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        *dtype_classes,
    ]


def allowed_metadata_names() -> frozenset[str]:
    """Dotted names of the allowlist, for documentation and tests."""
    names = set()
    for entry in metadata_allowlist():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return frozenset(names)


def load_weights_only(path: Path, container: str) -> Any:
    """torch.load with weights_only=True and the metadata allowlist; refusals name the global."""
    with torch.serialization.safe_globals(metadata_allowlist()):
        if container == TORCH_ZIP:
            _refuse_unsafe_globals(path, _unsafe_globals_in_zip(path))
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - every failure becomes one user-facing line
            raise _load_error(path, error) from None


def load_trusted_pickle(path: Path) -> Any:
    """Full unpickling: only ever reached when the user passed --trust-pickle."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as error:
        raise UsageError(
            f"{Path(path).name} holds a pickled object whose class cannot be imported here "
            f"({type(error).__name__}: {getattr(error, 'name', None) or 'a class'}); install the "
            "code that defined it, or re-save the model "
            "with torch.save(model.state_dict(), path)"
        ) from None
    except Exception as error:  # noqa: BLE001
        raise _load_error(path, error) from None


def pickle_globals(data: bytes) -> list[str]:
    """Names a pickle would import, read with pickletools (nothing is executed or imported)."""
    names: list[str] = []
    for name in _iter_globals(data):
        if name not in names:
            names.append(name)
    return names


def refuse_globals(path: Path, names: list[str], what: str = "it") -> PickleRefused:
    """The one-line refusal for a file that wants to import `names`."""
    shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
    if any(name.startswith(_MODULE_PREFIXES) for name in names):
        kind = "a whole pickled model, not a state_dict"
    else:
        kind = "pickled Python objects beyond weights and plain metadata"
    return PickleRefused(
        f"refused to load {Path(path).name}: {what} holds {kind}; unpickling it would import {shown}, "
        "which can run code; allow it with `trust_pickle` if you trust the file, or re-save it "
        "with torch.save(model.state_dict(), path)"
    )


def _unsafe_globals_in_zip(path: Path) -> list[str]:
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - torch.load below reports damaged files precisely
        return []


def _refuse_unsafe_globals(path: Path, names: list[str]) -> None:
    if names:
        raise refuse_globals(path, names)


def _load_error(path: Path, error: Exception) -> UsageError:
    text = str(error)
    found = _GLOBAL_IN_MESSAGE.search(text)
    if found:
        return refuse_globals(path, [found.group(1)])
    first = next((line.strip() for line in text.splitlines() if line.strip()), repr(error))
    if "weights only load failed" in first.lower():
        detail = next((ln.strip() for ln in text.splitlines() if "error:" in ln), first)
        return PickleRefused(
            f"refused to load {Path(path).name}: {_strip_ansi(detail)}; allow it with `trust_pickle` if you "
            "trust the file"
        )
    return UsageError(
        f"cannot read {Path(path).name} as a PyTorch checkpoint (truncated or damaged?): "
        f"{_strip_ansi(first)[:200]}"
    )


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _iter_globals(data: bytes) -> Iterator[str]:
    """Follow the opcodes of the first pickle in `data`, keeping just enough of the stack to name
    what STACK_GLOBAL imports (its module and name are the two values pushed before it)."""
    recent: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            op = opcode.name
            if op in ("GLOBAL", "INST"):
                module, name = str(arg).split(" ", 1)
                recent.append(None)
                yield _modern_name(module, name)
            elif op == "STACK_GLOBAL":
                if len(recent) >= 2 and all(isinstance(v, str) for v in recent[-2:]):
                    yield _modern_name(recent[-2], recent[-1])
                else:
                    yield "<a global computed at load time>"
                recent.append(None)
            elif op == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = recent[-1] if recent else None
            elif op in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(arg)))
            elif op in ("FRAME", "PROTO"):
                continue
            else:
                is_text = isinstance(arg, str) and ("UNICODE" in op or "STRING" in op)
                recent.append(arg if is_text else None)
    except ValueError:
        yield "<unreadable pickle data>"


def _modern_name(module: str, name: str) -> str:
    """Protocol-2 pickles spell Python 3 modules the Python 2 way (`__builtin__`)."""
    import _compat_pickle

    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{module}.{name}"
