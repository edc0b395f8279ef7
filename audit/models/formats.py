"""Tell what a model file is from its bytes, never from its name.

Users rename files freely (`model.pt` may be a TorchScript archive, `weights.bin` a safetensors
file), and the format decides whether opening the file can run code, so the extension is not
trusted.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

from audit.constants import DEFAULT_MAX_CHECKPOINT_GIB  # a ResNet50 is 0.1 GiB, a ViT-H 2.5
from audit.errors import UsageError

TORCH_ZIP = "torch-zip"  # torch.save since PyTorch 1.6: a zip with <name>/data.pkl
TORCH_LEGACY = "torch-legacy"  # torch.save(..., _use_new_zipfile_serialization=False)
TORCHSCRIPT = "torchscript"  # torch.jit.save: a zip with constants.pkl and code/
SAFETENSORS = "safetensors"
ONNX = "onnx"
HDF5 = "hdf5"  # Keras .h5 (the official RadImageNet release)
PICKLE = "pickle"  # a bare pickle.dump, not a torch checkpoint
UNKNOWN = "unknown"

# A legacy torch.save file starts with a protocol-2 pickle of this magic number (torch.serialization).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
# ModelProto's field numbers (onnx.proto); ir_version (1) is always written first.
_ONNX_FIELDS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 21, 22, 25})


_LIMIT_BYTES: contextvars.ContextVar[int] = contextvars.ContextVar(
    "checkpoint_limit", default=int(DEFAULT_MAX_CHECKPOINT_GIB * 2**30)
)


@contextlib.contextmanager
def checkpoint_limit(gib: float | None) -> Iterator[None]:
    """Model files (and a zip checkpoint's declared contents) larger than ``gib`` GiB are
    refused before anything is decompressed or unpickled; None keeps the default."""
    if gib is None:
        yield
        return
    from audit.resolve.constraints import check_setting

    check_setting("max_checkpoint_gib", gib)
    token = _LIMIT_BYTES.set(int(gib * 2**30))
    try:
        yield
    finally:
        _LIMIT_BYTES.reset(token)


def _refuse_oversized(path: Path, size: int, what: str) -> None:
    limit = _LIMIT_BYTES.get()
    if size > limit:
        raise UsageError(
            f"{path.name} is refused unread: {what} {size / 2**30:.3g} GiB, above the "
            f"checkpoint limit of {limit / 2**30:.3g} GiB (`max_checkpoint_gib` raises it)"
        )


def sniff_format(path: str | Path) -> str:
    """Return one of the format constants above; UsageError for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file not found: {Path(path).name}")
    size = path.stat().st_size
    _refuse_oversized(path, size, "the file holds")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(_ZIP_MAGIC):
        return _sniff_zip(path)
    if head.startswith(_LEGACY_MAGIC):
        return TORCH_LEGACY
    if head.startswith(_HDF5_MAGIC):
        return HDF5
    if _looks_like_safetensors(path, head, size):
        return SAFETENSORS
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE
    if _looks_like_onnx(head):
        return ONNX
    return UNKNOWN


# torch.save stores its members uncompressed; a compressed member declaring far more than it
# occupies can only be a decompression bomb (2 GiB of zeros deflate to 2 MB), refused unread.
_BOMB_MIN_BYTES = 256 << 20
_BOMB_RATIO = 64


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UsageError(
            f"{Path(path).name} is truncated or damaged: it starts like a PyTorch zip checkpoint but the "
            f"archive cannot be read ({getattr(error, 'strerror', None) or error}); copy the file "
            "again"
        ) from None
    _refuse_bombs(path, members)
    _refuse_oversized(path, sum(m.file_size for m in members), "its members declare")
    names = [m.filename for m in members]
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return TORCHSCRIPT
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return TORCH_ZIP
    return UNKNOWN


def _refuse_bombs(path: Path, members: list[zipfile.ZipInfo]) -> None:
    for member in members:
        declared, stored = member.file_size, max(member.compress_size, 1)
        if (
            member.compress_type != zipfile.ZIP_STORED
            and declared > _BOMB_MIN_BYTES
            and declared > _BOMB_RATIO * stored
        ):
            raise UsageError(
                f"{path.name} is refused unread: one compressed member declares "
                f"{declared / 2**30:.1f} GiB in {stored / 2**20:.1f} MiB (torch.save stores "
                "members uncompressed; this looks like a decompression bomb)"
            )


def _looks_like_safetensors(path: Path, head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length, then that many bytes of JSON."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or length > size - 8 or length > 100_000_000:
        return False
    with open(path, "rb") as handle:
        handle.seek(8)
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # a header nested
            return False  # 200k deep exhausts the parser: not a file safetensors writes
    return isinstance(header, dict)


def _looks_like_onnx(head: bytes) -> bool:
    """ONNX is a protobuf ModelProto: field 1 (ir_version, a small varint) then known fields."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 30:
        return False
    tag = head[2]
    field, wire = tag >> 3, tag & 7
    return field in _ONNX_FIELDS and wire in (0, 2)
