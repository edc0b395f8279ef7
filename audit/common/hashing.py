"""Stable content hashes: the identity of manifests, splits and run specs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np


def canonical(obj: Any) -> Any:
    """Turn dataclasses, mappings, tuples and numpy scalars into plain JSON values, sorted."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [canonical(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def content_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON form, shortened; equal content gives an equal hash."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | bytes, chunk: int = 1 << 20) -> str:
    """Full SHA-256 of a file, for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
