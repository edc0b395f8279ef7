"""Where runs go when one device is not enough: one worker process per local device
(:class:`LocalProcessesExecutor`).

Workers receive the audit's inputs once, at start-up, then whole cells (all models of one
confounder x level x fold), so each cell is confounded once. Results come back to the driver,
which alone writes the store.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from audit.plan.grid import RunSpec
from audit.run.cells import AuditInputs, CellBuilder, RunFailure, failure_reason, run_cell
from audit.run.executor import Executor, Record
from audit.train.device import environment_fingerprint
from audit.train.engine import RunResult

log = logging.getLogger(__name__)

_worker: dict[str, Any] = {}  # per worker process: its inputs and device, set once at start-up


def _start_worker(inputs: AuditInputs, devices: Any, threads: int) -> None:
    _worker["inputs"] = inputs
    _worker["device"] = torch.device(devices.get())
    torch.set_num_threads(threads)


def _work(cell: list[RunSpec]) -> list[RunResult | RunFailure]:
    if "builder" not in _worker:  # one per worker: shared test sets are built once per process
        _worker["builder"] = CellBuilder(
            _worker["inputs"], cell[0].train.input_size, _worker["device"]
        )
    return run_cell(cell, _worker["inputs"], _worker["device"], _worker["builder"])


def threads_per_worker(devices: Sequence[str]) -> int:
    cpu_workers = sum(1 for d in devices if d.startswith("cpu"))
    return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))


def run_cells_in_processes(
    cells: Sequence[list[RunSpec]],
    inputs: AuditInputs,
    devices: Sequence[str],
    record: Callable[[RunResult | RunFailure], None],
) -> None:
    """Cells to worker processes (spawned: safe with CUDA); a dead worker fails its runs only."""
    context = multiprocessing.get_context("spawn")
    device_queue = context.Manager().Queue()
    for device in devices:
        device_queue.put(device)
    with ProcessPoolExecutor(
        max_workers=len(devices), mp_context=context, initializer=_start_worker,
        initargs=(inputs, device_queue, threads_per_worker(devices)),
    ) as pool:  # fmt: skip
        futures = {pool.submit(_work, cell): cell for cell in cells}
        try:
            for future in as_completed(futures):
                try:
                    items = future.result()
                except BrokenProcessPool as exc:
                    why = f"worker process died: {exc}"
                    items = [RunFailure(spec.key, why) for spec in futures[future]]
                except Exception as exc:  # noqa: BLE001 - one cell's error fails its runs only
                    why = failure_reason(exc)
                    items = [RunFailure(spec.key, why) for spec in futures[future]]
                for item in items:
                    record(item)
        except BaseException:  # interrupted: queued cells never start; finished runs are kept
            pool.shutdown(wait=False, cancel_futures=True)
            raise


class LocalProcessesExecutor(Executor):
    """One spawned worker process per device (``cuda:0,cuda:1`` or ``cpu,cpu``); the CPU
    threads are shared out between the CPU workers."""

    name = "local-processes"

    def __init__(self, devices: Sequence[str]) -> None:
        if len(devices) < 2:
            raise ValueError("local worker processes need two or more devices")
        self.devices = tuple(devices)

    def run(self, cells: Sequence[list[RunSpec]], inputs: AuditInputs, record: Record) -> None:
        if cells:
            run_cells_in_processes(cells, inputs, self.devices, record)

    def environment(self, deterministic: bool) -> dict[str, Any]:
        return environment_fingerprint(torch.device(self.devices[0]), deterministic)

    def local_device(self) -> str:
        return self.devices[0]
