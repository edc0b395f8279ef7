"""What a model file holds and whether `medaudit check` can audit it, for people and for machines.

`check` fine-tunes, so it needs weights it can train: a file that is recognised but cannot be
fine-tuned (ONNX, Keras .h5) is described with the reason rather than refused, so a user learns
which command fits the file; files that would run code stay refused unless a trust flag is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.common.hashing import file_sha256
from audit.models import formats

_NOT_FINE_TUNABLE = {
    formats.ONNX: "an ONNX model is an inference graph and `check` fine-tunes PyTorch weights; "
    "audit it with `medaudit probe`",
    formats.HDF5: "a Keras .h5 file is not read; `check` fine-tunes PyTorch weights (a "
    "state_dict or safetensors file)",
}
_TRUST_FLAG = {"pickled-module": "--trust-pickle", "torchscript": "--trust-code"}


@dataclass(frozen=True)
class Inspection:
    """One file, described; fields a format cannot tell are None."""

    file: str  # the name only: paths may carry identifiers
    format: str
    sha256: str
    auditable: bool
    auditable_reason: str
    architecture: str | None = None
    parameters: int | None = None
    feature_dim: int | None = None
    input_channels: int | None = None
    preprocessing: str | None = None
    head_present: bool | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "notes": list(self.notes)}

    def lines(self) -> list[str]:
        rows = [
            ("file", self.file),
            ("format", self.format),
            ("architecture", self.architecture or "not recognised"),
            ("parameters", None if self.parameters is None else f"{self.parameters:,}"),
            ("features", self.feature_dim),
            ("input", self._input()),
            ("classifier", self._head()),
            ("sha256", self.sha256),
            *(("note", note) for note in self.notes),
            ("auditable", f"{'yes' if self.auditable else 'no'} ({self.auditable_reason})"),
        ]
        return [f"{label + ':':<14} {value}" for label, value in rows if value is not None]

    def _input(self) -> str | None:
        if self.input_channels is None:
            return None
        text = f"{self.input_channels} channel(s)"
        return f"{text}, preprocessing {self.preprocessing}" if self.preprocessing else text

    def _head(self) -> str | None:
        if self.head_present is None:
            return None
        return "present (replaced when fine-tuning)" if self.head_present else "absent"


def inspect_model(
    path: Path, *, arch: str | None = None, trust_code: bool = False, trust_pickle: bool = False
) -> Inspection:
    """Describe `path`; UsageError for what cannot be opened safely or at all."""
    container = formats.sniff_format(path)
    if container == formats.ONNX:
        return _onnx(path)
    if container == formats.HDF5:
        return Inspection(
            path.name, "hdf5", file_sha256(str(path)), False, _NOT_FINE_TUNABLE[container]
        )
    from audit.models.loading import load_model

    loaded = load_model(path, arch=arch, trust_code=trust_code, trust_pickle=trust_pickle)
    flag = _TRUST_FLAG.get(loaded.format)
    reason = "`medaudit check` can fine-tune it" + (f" (with {flag})" if flag else "")
    return Inspection(
        file=path.name, format=loaded.format, sha256=loaded.sha256, auditable=True,
        auditable_reason=reason, architecture=loaded.arch, parameters=loaded.parameter_count,
        feature_dim=loaded.backbone.feature_dim, input_channels=loaded.in_channels,
        preprocessing=loaded.preprocessing, head_present=loaded.had_classifier,
        notes=loaded.notes,
    )  # fmt: skip


def _onnx(path: Path) -> Inspection:
    """Read the graph without its external data: opset, producer, weights, input channels."""
    import onnx

    from audit.probe.onnx_file import inspect_onnx

    summary = inspect_onnx(path)  # one-line UsageError for a damaged or unsafe file
    graph = onnx.load(str(path), load_external_data=False).graph
    parameters = sum(_numel(tensor.dims) for tensor in graph.initializer)
    notes = (f"ONNX opset {summary.opset}, produced by {summary.producer}",)
    return Inspection(
        file=path.name, format=formats.ONNX, sha256=file_sha256(str(path)), auditable=False,
        auditable_reason=_NOT_FINE_TUNABLE[formats.ONNX], parameters=parameters,
        input_channels=_onnx_input_channels(graph), notes=notes,
    )  # fmt: skip


def _numel(dims: Any) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


def _onnx_input_channels(graph: Any) -> int | None:
    """Dimension 1 of the first real input (NCHW), when the file fixes it."""
    weights = {tensor.name for tensor in graph.initializer}
    for value in graph.input:
        if value.name in weights:
            continue
        dims = value.type.tensor_type.shape.dim
        return int(dims[1].dim_value) if len(dims) == 4 and dims[1].dim_value > 0 else None
    return None
