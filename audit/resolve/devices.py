"""Where runs go: the executor and its options, and the one reading of ``--device``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.resolve.constraints import SettingError, check_setting

if TYPE_CHECKING:
    from audit.run.executor import Executor


@dataclass(frozen=True)
class ExecutorChoice:
    """The `--executor` kind (``audit.run.executors``) and the options given for it; options
    that kind does not take (Ray's address with ``local``) are refused here, before anything
    loads. ``options`` stays out of ``repr``: an address or a folder can name a host or a user."""

    name: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from audit.run.executors import check_options

        given = {k: v for k, v in dict(self.options).items() if v is not None}
        object.__setattr__(self, "options", given)
        if "ray_cpus_per_task" in given:  # a bad value is named as such, whatever the executor
            check_setting("ray.cpus_per_task", given["ray_cpus_per_task"])
        check_options(self.name, given)

    def check_installed(self) -> None:
        """An executor's extra (Ray) is checked for before any model or image is loaded."""
        from audit.run.executors import get_executor_kind

        get_executor_kind(self.name).check_installed()

    def build(self, devices: tuple[str, ...]) -> Executor:
        """The executor the runner is handed."""
        from audit.run.executors import build_executor

        return build_executor(self.name, devices, self.options)


def resolve_devices(
    requested: str | None, executor: str = "local", *, check_available: bool = True
) -> tuple[str, ...]:
    """``--device`` as the chosen executor reads it (local: one worker per entry, or the best
    single device; Ray: ``cpu`` or ``cuda`` for every task, or () to let the cluster decide).
    ``check_available`` False (a dry run, planned on another machine) checks the spelling only."""
    from audit.run.executors import get_executor_kind

    return get_executor_kind(executor).resolve_devices(requested, check_available)


def probe_device(requested: str | None) -> str:
    """The one device the probe scores on: the first of ``requested``, a CPU or a CUDA device
    (ONNX Runtime and the probe's runners know no other)."""
    import torch

    device = resolve_devices(requested)[0]
    if torch.device(device).type not in ("cpu", "cuda"):
        raise SettingError("device", device, "auto, cpu, cuda or cuda:N for the probe")
    return device
