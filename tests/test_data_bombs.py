"""Decode bombs: an image's declared size is checked before any pixel is decoded, so a small file
that declares gigabytes of pixels is left out with its reason, in bounded memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from audit.constants import DEFAULT_MAX_IMAGE_PIXELS
from audit.data.decode import DecodeSettings, decode_file
from audit.data.problems import IMAGE_TOO_LARGE, Unreadable

ONE_GB = 1 << 30


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = 13000) -> Path:
    """A 16-bit grey PNG declaring side x side pixels, all zero: a few hundred KB on disk,
    side * side * 2 bytes (338 MB at 13000) once decoded, and more in any float copy."""
    row = b"\x00" * (1 + 2 * side)  # filter byte + 16-bit samples
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
    return path


def dicom_declaring(path: Path, side: int = 16000) -> Path:
    """A DICOM whose header declares side x side 16-bit pixels over a tiny pixel data element."""
    from test_data_dicom import gray_dataset

    return gray_dataset(np.zeros((8, 8)), path, Rows=side, Columns=side, PatientID="CANARY4242")


def _decode_in_child(path: Path, max_pixels: int) -> dict:
    """decode_file in a fresh process: its peak RSS is the decode's, not the test runner's."""
    code = f"""
import json, resource, sys
from pathlib import Path
from audit.data.decode import DecodeSettings, decode_file
from audit.data.problems import Unreadable
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # imports included
try:
    decode_file(Path({str(path)!r}), DecodeSettings(64, "cxr", (-1000.0, 400.0), max_pixels={max_pixels}))
    outcome = "decoded"
except Unreadable as exc:
    outcome = exc.reason
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"outcome": outcome, "peak": peak, "growth": peak - baseline}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform == "win32", reason="resource is POSIX-only")
@pytest.mark.parametrize("make", [png_bomb, dicom_declaring], ids=["png", "dicom"])
def test_a_decode_bomb_is_refused_in_bounded_memory(make, tmp_path) -> None:
    bomb = make(tmp_path / "bomb.img")
    assert bomb.stat().st_size < 2_000_000, "the bomb is small on disk"
    result = _decode_in_child(bomb, DEFAULT_MAX_IMAGE_PIXELS)
    assert result["outcome"] == IMAGE_TOO_LARGE
    # beyond what the imports took (torch's libraries alone can hold 1 GB on some machines);
    # without the limit the PNG grew the process by 5.8 GB
    assert result["growth"] < ONE_GB // 4, f"RSS grew {result['growth'] / 2**20:.0f} MiB"


def test_the_limit_is_a_setting_and_names_the_declared_size(tmp_path) -> None:
    from PIL import Image

    path = tmp_path / "plain.png"
    Image.fromarray(np.full((300, 200), 7, dtype=np.uint8)).save(path)
    settings = DecodeSettings(32, "cxr", (-1000.0, 400.0), max_pixels=50_000)
    with pytest.raises(Unreadable) as refused:
        decode_file(path, settings)
    assert refused.value.reason == IMAGE_TOO_LARGE and "declared 200 x 300" in str(refused.value)
    image, _ = decode_file(path, DecodeSettings(32, "cxr", (-1000.0, 400.0), max_pixels=60_000))
    assert image.shape == (32, 32)


def test_a_too_large_image_is_left_out_and_counted(tmp_path, capsys) -> None:
    from PIL import Image
    from test_data_builders import write_manifest

    from audit import cli
    from audit.data.loading import DataRequest, load_cohort

    rows = []
    rng = np.random.default_rng(0)
    for n in range(12):
        side = 400 if n == 0 else 32
        pixels = rng.integers(0, 255, (side, side), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"i{n}.png")
        rows.append({"path": f"i{n}.png", "label": n % 2, "patient_id": f"p{n}"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    request = DataRequest(
        manifest, "cxr", cache_dir=tmp_path / "cache", image_size=32, max_image_pixels=100_000
    )
    cohort = load_cohort(request, progress=False)
    assert len(cohort.cases) == 11 and cohort.excluded == {IMAGE_TOO_LARGE: 1}
    capsys.readouterr()  # the loader's own log lines, wherever an earlier test left logging
    args = ["check", str(tmp_path / "model.pt"), "--modality", "cxr", "--data", str(manifest),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--dry-run",
            "--max-image-pixels", "10"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--max-image-pixels 10 is not accepted" in err and "Traceback" not in err


def torch_zip_bomb(path: Path, gib: float = 2.0) -> Path:
    """A real torch.save zip with one extra deflated member of zeros declaring ``gib`` GiB."""
    import zipfile

    import torch

    torch.save({"weight": torch.zeros(4)}, path)
    block = b"\x00" * (1 << 24)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        prefix = archive.namelist()[0].split("/")[0]
        with archive.open(f"{prefix}/data/999", "w", force_zip64=True) as member:
            for _ in range(int(gib * 64)):
                member.write(block)
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="resource is POSIX-only")
def test_a_torch_zip_bomb_is_refused_unread_in_bounded_memory(tmp_path) -> None:
    bomb = torch_zip_bomb(tmp_path / "model.pt", gib=0.5)  # 512 MiB: above the 256 MiB floor
    assert bomb.stat().st_size < 2_000_000, "512 MiB of zeros deflate to well under 1 MB"
    code = f"""
import json, resource
from audit.errors import UsageError
from audit.models.loading import load_model
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # imports included
try:
    load_model({str(bomb)!r})
    outcome = "loaded"
except UsageError as exc:
    outcome = str(exc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"outcome": outcome, "growth": peak - baseline}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "refused unread" in result["outcome"] and "0.5 GiB" in result["outcome"]
    assert str(tmp_path) not in result["outcome"], "the message names the file, not its folder"
    assert result["growth"] < ONE_GB // 4, f"RSS grew {result['growth'] / 2**20:.0f} MiB"


def test_decoders_are_as_many_as_the_free_memory_holds_at_the_pixel_limit(monkeypatch) -> None:
    """Eight decoders each holding an image at the 64-megapixel limit need about 4 GiB; on a
    machine with less free memory fewer decode at once."""
    from audit.data import cache

    monkeypatch.setattr(cache.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(cache, "available_memory", lambda: 100 * 2**30)
    assert cache._worker_count(None, 10_000, 64_000_000) == 8
    monkeypatch.setattr(cache, "available_memory", lambda: 2**30)
    assert cache._worker_count(None, 10_000, 64_000_000) == 2
    monkeypatch.setattr(cache, "available_memory", lambda: 100 * 2**20)
    assert cache._worker_count(None, 10_000, 64_000_000) == 1, "never fewer than one"
    assert cache._worker_count(None, 10_000, 1_000_000) == 8, "small images: every core"
    assert cache._worker_count(3, 10_000, 64_000_000) == 3, "an explicit count is kept"
    assert cache.available_memory() is None or cache.available_memory() > 0
