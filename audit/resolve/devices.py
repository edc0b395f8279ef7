"""Where runs go: the executor and its options, and the one reading of ``--device``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import UsageError
from audit.resolve.constraints import SettingError, check_setting

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorChoice:
    """``local``: this process, or one worker process per device; ``ray``: each cell a task on
    a Ray cluster (``address`` None starts a local one; ``shared_cache`` a folder every node
    mounts, where the decoded images go once; ``cpus_per_task`` torch threads per CPU task)."""

    name: str = "local"
    address: str | None = field(default=None, repr=False)
    shared_cache: Path | None = field(default=None, repr=False)
    cpus_per_task: int = 1

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise SettingError("executor", self.name, " or ".join(EXECUTORS))
        check_setting("ray.cpus_per_task", self.cpus_per_task)
        if self.name != "ray" and (self.address or self.shared_cache):
            raise UsageError(
                "`ray_address` and `shared_cache` work with `executor` ray only; add it"
            )

    def check_installed(self) -> None:
        """Ray is an extra: say how to install it before any model or image is loaded."""
        if self.name == "ray":
            from audit.run.ray_cluster import require_ray

            require_ray()


RAY_DEVICES = ("cpu", "cuda")


def resolve_devices(
    requested: str | None, executor: str = "local", *, check_available: bool = True
) -> tuple[str, ...]:
    """Local: one worker per entry (``cuda:0,cuda:1``, ``cpu,cpu``), or the best single device.
    Ray: ``cpu`` or ``cuda`` for every task (Ray assigns each task its own GPU), or () to let
    the cluster's GPUs decide; the driver's own devices do not matter, it may have no GPU.
    ``check_available`` False (a dry run, planned on another machine) checks the spelling only."""
    if executor != "ray":
        from audit.train.device import parse_devices

        return tuple(parse_devices(requested, check_available=check_available))
    if not requested:
        return ()
    names = [d.strip() for d in requested.split(",") if d.strip()]
    if len(names) != 1 or names[0] not in RAY_DEVICES:
        raise SettingError(
            "device", requested, "cpu or cuda with the Ray executor (Ray assigns each task its GPU)"
        )
    return tuple(names)


def probe_device(requested: str | None) -> str:
    """The one device the probe scores on: the first of ``requested``, a CPU or a CUDA device
    (ONNX Runtime and the probe's runners know no other)."""
    import torch

    device = resolve_devices(requested)[0]
    if torch.device(device).type not in ("cpu", "cuda"):
        raise SettingError("device", device, "auto, cpu, cuda or cuda:N for the probe")
    return device
