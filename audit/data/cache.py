"""The decode-once store: one memory-mapped (N, H, W) uint8 ``.npy`` per cohort, plus its record.

An entry is addressed by a keyed hash of the source's fingerprint and every decode setting, so any
change to the files, the selection or the preprocessing makes a new entry, and the file name says
nothing about the data. Writing is crash-safe: pixels go to a temporary file, are flushed, hashed
and renamed; the JSON record (cases as pseudonyms, exclusions, the pixels' SHA-256) is written
last, atomically. A reader trusts an entry only when the record exists and the pixels match its
hash; anything else (a killed build, a truncated or edited file) is deleted and rebuilt.

Decoding runs in worker processes (``spawn``, safe beside torch's threads) that write straight
into the memory-mapped temporary file, so no image is pickled back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audit.common.atomic import atomic_write_text
from audit.data.decode import DecodeSettings, decode_file
from audit.data.problems import DECODER_ERROR, Unreadable
from audit.data.pseudonyms import private_dir
from audit.errors import UsageError

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the record counts images with identical pixels under two patients
FOLDER = "cohorts"
_SERIAL_BELOW = 64


@dataclass(frozen=True)
class DecodeJob:
    """One file to decode into row ``row`` of the array."""

    row: int
    path: str
    frame: int | None

    def __repr__(self) -> str:
        return f"DecodeJob(row={self.row}, <path hidden>)"


@dataclass(frozen=True)
class Outcome:
    """What happened to one job: ``reason`` None means decoded."""

    row: int
    reason: str | None = None
    detail: str = ""
    warnings: tuple[str, ...] = ()


def entry_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    folder = cache_dir / FOLDER
    return folder / f"{key}.npy", folder / f"{key}.json"


def load_entry(cache_dir: Path, key: str) -> tuple[np.ndarray, dict] | None:
    """(memory-mapped images, record) of a sound entry; None when absent or damaged."""
    pixels, record_path = entry_paths(cache_dir, key)
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format") != CACHE_FORMAT or record.get("key") != key:
            raise ValueError("record format")
        if pixels.stat().st_size != record["bytes"] or file_digest(pixels) != record["sha256"]:
            raise ValueError("pixels differ from the record")
        images = np.load(pixels, mmap_mode="r")
        if images.dtype != np.uint8 or list(images.shape) != record["shape"]:
            raise ValueError("array shape")
        return images, record
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("the cached cohort was damaged or incomplete; decoding the images again")
        for path in (record_path, pixels):
            path.unlink(missing_ok=True)
        return None


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _quiet_worker() -> None:
    """A decoder process prints nothing: a library's warning there (Pillow, pydicom) would reach
    the terminal raw, with its file and source line; what goes wrong with an image is counted
    as its outcome instead."""
    import warnings

    warnings.simplefilter("ignore")


def decode_to_temp(
    cache_dir: Path,
    key: str,
    jobs: Sequence[DecodeJob],
    settings: DecodeSettings,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[Path, list[Outcome]]:
    """Decode every job into a temporary memory-mapped array; failures are outcomes, not raises."""
    folder = private_dir(cache_dir / FOLDER)
    _remove_stale_temps(folder, key)
    temp = folder / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp.npy"
    shape = (len(jobs), settings.image_size, settings.image_size)
    try:
        _new_mapped_array(temp, shape)
        count = _worker_count(workers, len(jobs), settings.max_pixels)
        outcomes = _run_jobs(temp, jobs, settings, count, progress)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, sorted(outcomes, key=lambda o: o.row)


def _new_mapped_array(path: Path, shape: tuple[int, ...]) -> None:
    """A .npy file of ``shape``, its blocks allocated now: writing a memory map into a sparse file
    on a full disk kills the process with SIGBUS later; allocating first raises ENOSPC here,
    which the command line reports as a full disk."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    del array
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            try:
                os.posix_fallocate(handle.fileno(), 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it
                    path.unlink(missing_ok=True)
                    raise OSError(exc.errno, exc.strerror, str(path)) from None


# What one decoder may hold at once for an image at the pixel limit: the file's 16-bit pixels, a
# float32 copy for windowing or resizing, and the resized output (about 8 bytes per pixel).
_BYTES_PER_DECODED_PIXEL = 8


def _worker_count(workers: int | None, n_jobs: int, max_pixels: int | None = None) -> int:
    """Decoders: the cores (up to 8), and no more than the free memory can hold at once when
    every one of them decodes an image at the pixel limit (``max_pixels``)."""
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8)
        if n_jobs < _SERIAL_BELOW:
            workers = 1
        if max_pixels:
            free = available_memory()
            if free is not None:
                workers = min(workers, max(1, free // (max_pixels * _BYTES_PER_DECODED_PIXEL)))
    return max(1, min(workers, n_jobs))


def available_memory() -> int | None:
    """Bytes of memory free for new work: Linux's MemAvailable, or a container's own limit
    (cgroup v2 or v1) less what it uses when that is smaller; None where unknown."""
    free = _host_available()
    room = _cgroup_room()
    if free is None or room is None:
        return free if room is None else room
    return min(free, room)


def _cgroup_room() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            used = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 2**60:
            return None  # no limit
        return max(0, int(limit_text) - used)
    return None


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _run_jobs(
    temp: Path, jobs: Sequence[DecodeJob], settings: DecodeSettings, workers: int, progress: bool
) -> list[Outcome]:
    size = max(4, min(128, len(jobs) // (workers * 4) or 4))
    chunks = [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
    outcomes: list[Outcome] = []
    bar = tqdm(total=len(jobs), desc="decoding images", unit="img", disable=not progress)
    with bar:
        if workers == 1:
            for chunk in chunks:
                outcomes += decode_chunk(str(temp), chunk, settings)
                bar.update(len(chunk))
            return outcomes
        try:
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=get_context("spawn"), initializer=_quiet_worker
            ) as pool:
                futures = [
                    pool.submit(decode_chunk, str(temp), chunk, settings) for chunk in chunks
                ]
                for future in futures:
                    result = future.result()
                    outcomes += result
                    bar.update(len(result))
        except BrokenProcessPool:
            raise UsageError(WORKER_DIED) from None
    return outcomes


# A decoder process that dies takes no image with it we could name: the likely causes are the
# kernel's (memory, or SIGBUS on a memory map whose disk filled up), so the message names those.
WORKER_DIED = (
    "a process decoding the images died (out of memory, or the disk of the `cache_dir` folder "
    "is full); free memory or disk space, or choose another `cache_dir`, and run again"
)


def decode_chunk(temp: str, chunk: list[DecodeJob], settings: DecodeSettings) -> list[Outcome]:
    """Worker: decode a few files into their rows of the shared memory-mapped array."""
    array = np.load(temp, mmap_mode="r+")
    outcomes = []
    for job in chunk:
        try:
            image, notes = decode_file(Path(job.path), settings, job.frame)
        except Unreadable as problem:
            outcomes.append(Outcome(job.row, problem.reason, problem.detail))
            continue
        except Exception:  # a decoder bug must cost one file, not the audit
            outcomes.append(Outcome(job.row, DECODER_ERROR))
            continue
        array[job.row] = image
        outcomes.append(Outcome(job.row, None, "", notes))
    array.flush()
    del array
    return outcomes


def commit_entry(
    cache_dir: Path, key: str, temp: Path, keep: np.ndarray, record: dict
) -> np.ndarray:
    """Keep the decoded rows ``keep``, then rename into place and write the record last."""
    pixels, record_path = entry_paths(cache_dir, key)
    try:
        source = np.load(temp, mmap_mode="r")
        if len(keep) != len(source):
            compact = temp.with_name(temp.name.replace(".tmp.npy", ".compact.tmp.npy"))
            _new_mapped_array(compact, (len(keep), *source.shape[1:]))
            target = np.load(compact, mmap_mode="r+")
            for start in range(0, len(keep), 1024):
                target[start : start + 1024] = source[keep[start : start + 1024]]
            target.flush()
            del target, source
            temp.unlink()
            temp = compact
        else:
            del source
        _fsync(temp)
        shape = list(np.load(temp, mmap_mode="r").shape)
        record = {
            **record,
            "format": CACHE_FORMAT,
            "key": key,
            "shape": shape,
            "bytes": temp.stat().st_size,
            "sha256": file_digest(temp),
        }
        os.replace(temp, pixels)
        atomic_write_text(record_path, json.dumps(record, sort_keys=True))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return np.load(pixels, mmap_mode="r")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _remove_stale_temps(folder: Path, key: str) -> None:
    """Temporary files of builds whose process is gone (killed): never trusted, only removed."""
    for temp in folder.glob(f".{key}.*.tmp.npy"):
        try:
            pid = int(temp.name.split(".")[2])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                temp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
