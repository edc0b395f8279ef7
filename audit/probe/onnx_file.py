"""Check an ONNX file before a runtime opens it: readable, well-formed, external data kept home.

ONNX Runtime's own errors are long, multi-line and name internal source files; a damaged upload in
a release pipeline deserves one line that says what is wrong with the file. External data is the
one place an ONNX file names other files, so every such path must stay inside the model's folder
(no absolute paths, no ``..``, no symbolic link that leads out) and every byte range must exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from audit.errors import UsageError


@dataclass(frozen=True)
class OnnxSummary:
    """What the file declares, read without loading its weights."""

    opset: int | None
    producer: str
    external_files: tuple[str, ...]  # relative to the model's folder


def first_line(error: BaseException) -> str:
    """The line of a runtime's error that says what went wrong, at most 300 characters.

    Usually the first; TorchScript puts a generic header first and the cause last.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return line[:300]


def inspect_onnx(path: Path) -> OnnxSummary:
    """Parse and check the model graph; UsageError (exit 2) for anything a user must fix."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises several types; one line for all
        raise UsageError(
            f"cannot read {path.name} as ONNX (truncated or damaged? {first_line(error)}); "
            "copy or export the file again"
        ) from None
    if not model.graph.node:
        raise UsageError(f"{path.name} holds no ONNX graph (truncated or empty file?)")
    external = _check_external_data(model, path)
    try:
        onnx.checker.check_model(str(path))  # by path: external data is found beside it
    except Exception as error:  # noqa: BLE001 - ValidationError and C++ checker failures
        raise UsageError(f"{path.name} is not a valid ONNX model: {first_line(error)}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return OnnxSummary(opset, model.producer_name or "unknown", external)


def _tensors(graph) -> Iterator:  # noqa: ANN001 - onnx.GraphProto
    """Every TensorProto in a graph, its nodes' attributes and nested subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _tensors(sub)


def _check_external_data(model, path: Path) -> tuple[str, ...]:  # noqa: ANN001
    import onnx

    folder = path.resolve().parent
    seen: dict[str, int] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = _inside(folder, location, tensor.name, path.name)
        size = seen.setdefault(location, target.stat().st_size)
        end = _byte_count(info, "offset", tensor.name, path.name) + _byte_count(
            info, "length", tensor.name, path.name
        )
        if end > size:
            raise UsageError(
                f"{path.name}: external data file {location!r} is {size} bytes but tensor "
                f"{tensor.name!r} needs bytes up to {end} (truncated copy?)"
            )
    return tuple(sorted(seen))


def _byte_count(info: dict[str, str], key: str, tensor: str, model: str) -> int:
    """An external-data offset or length: a whole number of bytes, or the file is malformed."""
    text = info.get(key) or "0"
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise UsageError(
            f"{model}: tensor {tensor[:60]!r} gives its external data {key} as {text[:20]!r}; "
            "expected a whole number of bytes (a damaged or crafted file)"
        )
    return int(text)


_MAX_LOCATION = 1024  # characters; a longer external-data location is not a file name


def _inside(folder: Path, location: str, tensor: str, model: str) -> Path:
    if not location:
        raise UsageError(f"{model}: tensor {tensor!r} is stored externally but names no file")
    if len(location) > _MAX_LOCATION or "\x00" in location:
        raise UsageError(
            f"{model}: tensor {tensor[:60]!r} names an external data file of {len(location)} "
            "characters; refused (a damaged or crafted file)"
        )
    relative = Path(location)
    try:
        target = (folder / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        raise UsageError(
            f"{model}: tensor {tensor[:60]!r} names an unusable external data file"
        ) from None
    if relative.is_absolute() or ".." in relative.parts or folder not in target.parents:
        raise UsageError(
            f"{model}: tensor {tensor!r} keeps its data at {location!r}, outside the model's "
            "folder; refused: external data must sit beside the .onnx file"
        )
    try:
        present = target.is_file()
    except OSError:  # a name too long for the file system, say
        present = False
    if not present:
        raise UsageError(
            f"{model}: external data file {location!r} (tensor {tensor!r}) is missing; copy it "
            "beside the .onnx file"
        )
    return target
