"""Where runs go on a Ray cluster (``--executor ray``): each cell one Ray task.

A cell (all models of one confounder x level x fold) is the unit, as in the local executors, so
each cell is confounded once. Its task asks for one GPU, or for ``cpus_per_task`` CPUs, and Ray
retries it on another worker when the worker dies. Results come back to the driver, which alone
writes the store; a failed cell fails its runs only.

Workers never read the driver's cache folder: a cluster node cannot see it. The images travel
through Ray's object store (put once, read zero-copy by every task on a node), or, with
``--shared-cache DIR``, the driver writes them once into a folder the user declares mounted on
every node and the workers memory-map them from there. Ray is an optional extra and is imported
only inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from audit.errors import UsageError
from audit.plan.grid import RunSpec
from audit.run.cells import AuditInputs, RunFailure, run_cell
from audit.run.executor import Executor, Record
from audit.train.engine import RunResult

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "`executor` ray needs Ray, which is not installed; "
    "install the cluster extra: pip install 'medaudit[cluster]'"
)


@dataclass(frozen=True)
class RayOptions:
    """How to reach the cluster and what each cell's task asks of it.

    ``address`` None starts a local cluster of ``local_cpus`` CPUs (None: all of them) and shuts
    it down afterwards; a Ray session this process already holds is used as it is.
    ``max_retries`` counts retries after a worker dies (an exception in a run is not retried:
    it is recorded as that run's failure).
    """

    address: str | None = None
    shared_cache: Path | None = None
    cpus_per_task: int = 1
    max_retries: int = 3
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.cpus_per_task < 1:
            raise UsageError(f"`ray_cpus_per_task` {self.cpus_per_task}: use 1 or more")
        if self.max_retries < 0:
            raise UsageError(f"max_retries={self.max_retries}: use 0 or more")


class RayExecutor(Executor):
    """Each cell a Ray task (see the module docstring). ``devices`` is ``()`` (the cluster's GPUs
    decide), ``("cpu",)`` or ``("cuda",)``."""

    name = "ray"

    def __init__(self, options: RayOptions, devices: Sequence[str] = ()) -> None:
        self.options, self.devices = options, tuple(devices)
        self.workers: list[dict[str, str]] = []
        self.ran = False

    def run(self, cells: Sequence[list[RunSpec]], inputs: AuditInputs, record: Record) -> None:
        self.workers, self.ran = [], bool(cells)  # one audit's workers, never an earlier one's
        if cells:
            self.workers = run_cells_on_ray(cells, inputs, self.devices, record, self.options)

    def environment(self, deterministic: bool) -> dict[str, Any]:
        """The first worker that reported, and all of them; with every run reused, the driver's."""
        import torch

        from audit.train.device import environment_fingerprint

        if not self.workers:
            driver = {**environment_fingerprint(torch.device("cpu")), "executor": "ray"}
            return {**driver, "ray_workers": []} if self.ran else driver
        return {**self.workers[0], "executor": "ray", "ray_workers": self.workers}


@dataclass(frozen=True)
class SharedImages:
    """Where a worker finds the cohort's pixels when they do not travel with the inputs."""

    path: str
    shape: tuple[int, ...]


def require_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def run_cells_on_ray(
    cells: Sequence[list[RunSpec]],
    inputs: AuditInputs,
    devices: Sequence[str],
    record: Callable[[RunResult | RunFailure], None],
    options: RayOptions,
) -> list[dict[str, str]]:
    """Every cell a Ray task; results recorded as they finish. Returns the workers' fingerprints."""
    ray = require_ray()
    fingerprints: list[dict[str, str]] = []
    with _connected(ray, options):
        device = devices[0] if devices else _cluster_device(ray)
        shared = share_images(inputs, options.shared_cache) if options.shared_cache else None
        inputs_ref = ray.put(_for_workers(inputs, shared))
        task = ray.remote(_cell_task).options(**task_options(device, options))
        pending = {
            task.remote(cell, inputs_ref, shared, device, options.cpus_per_task): cell
            for cell in cells
        }
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ref)
                fingerprint, items = _collect(ray, ref, cell)
                if fingerprint and fingerprint not in fingerprints:
                    fingerprints.append(fingerprint)
                for item in items:
                    record(item)
        finally:
            for ref in pending:  # interrupted: leave no orphan tasks on a shared cluster
                ray.cancel(ref, force=True)
    return fingerprints


def task_options(device: str, options: RayOptions) -> dict[str, Any]:
    """What each cell's task asks of the cluster: one GPU (and its CPUs), or CPUs alone."""
    return {
        "num_cpus": options.cpus_per_task,
        "num_gpus": 1 if device == "cuda" else 0,
        "max_retries": options.max_retries,
        "retry_exceptions": False,  # a run that raises fails the same way again: record it
    }


@contextlib.contextmanager
def _connected(ray: ModuleType, options: RayOptions) -> Iterator[None]:
    """Join the cluster at ``address`` or start a local one; leave only what we joined."""
    if ray.is_initialized():
        yield
        return
    if options.address:
        kwargs: dict[str, Any] = {"address": options.address}
    else:
        kwargs = {"num_cpus": options.local_cpus, "include_dashboard": False}
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
        raise UsageError(
            f"cannot start or reach {where}: {_first_line(exc)}; check `ray_address` "
            "(host:port of the head node, or 'auto' on a node of the cluster)"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _cluster_device(ray: ModuleType) -> str:
    return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


def share_images(inputs: AuditInputs, folder: Path) -> SharedImages:
    """Write the cohort's pixels once into the shared folder, named by the data's identity.

    A file already there under that name holds the same pixels (the name is the manifest hash,
    which covers them), so a second audit of the same data writes nothing.
    """
    cohort = inputs.cohort
    path = Path(folder) / f"medaudit-images-{cohort.manifest_hash()}.npy"
    if not _holds(path, cohort.images.shape):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            target = np.lib.format.open_memmap(
                temp, mode="w+", dtype=np.uint8, shape=cohort.images.shape
            )
            for start in range(0, len(target), 256):  # blocks: a memory-mapped cache stays on disk
                target[start : start + 256] = cohort.images[start : start + 256]
            target.flush()
            del target
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    return SharedImages(str(path.resolve()), tuple(cohort.images.shape))


def _holds(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape == tuple(shape)
    except (OSError, ValueError):
        return False


def _for_workers(inputs: AuditInputs, shared: SharedImages | None) -> AuditInputs:
    """The inputs as workers receive them: pixels in the object store, or none when shared.

    The driver's images may be a memory map of its local cache; as a plain array they go into
    the object store by value, so no worker ever needs the driver's path.
    """
    cohort = inputs.cohort
    if shared is None:
        images = np.ascontiguousarray(cohort.images).view(np.ndarray)
    else:
        images = np.empty((len(cohort.images), 0, 0), dtype=np.uint8)  # placeholder: no pixels
    return dataclasses.replace(inputs, cohort=dataclasses.replace(cohort, images=images))


def _with_shared_images(inputs: AuditInputs, shared: SharedImages) -> AuditInputs:
    try:
        images = np.load(shared.path, mmap_mode="r")
    except OSError:
        raise RuntimeError(
            f"`shared_cache` file {shared.path} is not readable on Ray node "
            f"{socket.gethostname()}; mount the shared folder on every node"
        ) from None
    if images.shape != shared.shape:
        raise RuntimeError(f"`shared_cache` file {shared.path} does not hold this audit's images")
    return dataclasses.replace(inputs, cohort=dataclasses.replace(inputs.cohort, images=images))


def _cell_task(
    cell: list[RunSpec],
    inputs: AuditInputs,
    shared: SharedImages | None,
    device_name: str,
    threads: int,
) -> tuple[dict[str, str], list[RunResult | RunFailure]]:
    """Runs on a Ray worker; Ray hands ``inputs`` over from the object store."""
    import torch

    from audit.train.device import environment_fingerprint, set_determinism

    set_determinism(cell[0].train.deterministic)
    device = torch.device(device_name)  # on a GPU task Ray has made its GPU the only one visible
    if device.type == "cpu":
        torch.set_num_threads(threads)
    fingerprint = environment_fingerprint(device, cell[0].train.deterministic)
    if shared is not None:
        try:
            inputs = _with_shared_images(inputs, shared)
        except RuntimeError as exc:
            return fingerprint, [RunFailure(spec.key, str(exc)) for spec in cell]
    return fingerprint, run_cell(cell, inputs, device)


def _collect(
    ray: ModuleType, ref: Any, cell: list[RunSpec]
) -> tuple[dict[str, str] | None, list[RunResult | RunFailure]]:
    """A task's results, or a failure for each of its runs when the task itself failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:  # worker died past its retries, or an unexpected error
        message = f"Ray task failed: {_first_line(exc)}"
        if "No module named" in message:
            message += (
                " (every module the audit uses, `confounder` plugins too, must be installed"
                " on the Ray workers)"
            )
        return None, [RunFailure(spec.key, message) for spec in cell]


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RayTaskError wraps the task's own exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
