"""Where training runs and how: CUDA with bf16 autocast when present, else the CPU."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator

import torch


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_devices(requested: str | None, *, check_available: bool = True) -> list[str]:
    """The one reading of ``--device``: ``cuda:0,cuda:1`` or ``cpu,cpu`` -> one worker per entry;
    None or ``auto`` -> the best single device. The probe takes the first entry."""
    from audit.resolve.constraints import SettingError

    if not requested or requested.strip().lower() == "auto":
        return [pick_device().type]
    devices = [d.strip() for d in requested.split(",") if d.strip()]
    accepted = "auto, cpu, cuda, cuda:N, or several comma-separated (cuda:0,cuda:1)"
    if not devices:
        raise SettingError("device", requested, accepted)
    for name in devices:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise SettingError("device", name, accepted) from None
        if check_available and device.type == "cuda" and not torch.cuda.is_available():
            raise SettingError("device", name, "cpu (no CUDA device is available on this machine)")
    return devices


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on the CPU, where bf16 is slower on most machines."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_determinism(enabled: bool) -> None:
    """Deterministic kernels and cuDNN settings, so two runs give identical numbers.

    cuBLAS is deterministic on CUDA >= 10.2 only with a fixed workspace, read when its first
    handle is made: set here, before any run, and inherited by spawned workers."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


@contextlib.contextmanager
def run_threads(deterministic: bool, device: torch.device) -> Iterator[None]:
    """A deterministic run on the CPU computes with one intra-op thread: a float reduction split
    over another number of threads sums in another order, and on small test sets one ulp can
    flip a tie in the AUC. So one worker or several (each given a share of the cores) give
    bit-identical results; without --deterministic every run keeps the threads it was given."""
    if not deterministic or device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def environment_fingerprint(device: torch.device, deterministic: bool = False) -> dict[str, str]:
    """What a reader needs to know which results are comparable; ``threads`` is what the runs
    computed with (one for a deterministic run on the CPU, see :func:`run_threads`)."""
    threads = 1 if deterministic and device.type == "cpu" else torch.get_num_threads()
    info = {
        "device": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "threads": str(threads),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
        info["cudnn"] = str(torch.backends.cudnn.version())
    return info
