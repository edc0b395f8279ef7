"""Run what the results store lacks: in this process, in local worker processes, or on Ray.

Only this process writes to the store, so a killed audit loses no finished run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from audit.errors import UsageError
from audit.plan.grid import RunSpec
from audit.resolve.devices import EXECUTORS
from audit.run.cells import (
    AuditInputs,
    CellBuilder,
    RunFailure,
    group_by_cell,
    run_cell,
    spec_record,
)
from audit.run.store import ResultsStore
from audit.train.engine import RunResult

if TYPE_CHECKING:
    from audit.run.ray_cluster import RayOptions

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Finished results (reused and new) and the keys of runs that failed."""

    results: list[RunResult] = field(default_factory=list)
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)  # what remote workers report


def execute(
    specs: Sequence[RunSpec],
    inputs: AuditInputs,
    store: ResultsStore,
    devices: Sequence[str],
    executor: str = "local",
    ray_options: RayOptions | None = None,
) -> Outcome:
    """Run what the store lacks, cell by cell; a failed run is recorded and the audit goes on.

    ``local``: one device runs in this process; several (``cuda:0,cuda:1`` or ``cpu,cpu``) get
    one worker process each. ``ray``: each cell is a task on a Ray cluster (``devices`` is
    ``[]``, ``["cpu"]`` or ``["cuda"]``). Only this process writes to the store, so a kill loses
    no finished run.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"executor={executor!r} is not known; use one of {', '.join(EXECUTORS)}")
    outcome = Outcome()
    pending = []
    by_key = {spec.key: spec for spec in specs}
    for spec in specs:
        done = store.get(spec.key)
        if done is None:
            pending.append(spec)
        else:
            outcome.results.append(done)
    outcome.reused = len(outcome.results)
    if outcome.reused:
        log.info("%d of %d runs already done", outcome.reused, len(specs))
    progress = _progress_bar(len(specs), outcome.reused)
    counter = [outcome.reused]

    def record(item: RunResult | RunFailure) -> None:
        spec = by_key[item.key]
        if isinstance(item, RunFailure):
            log.error(
                "run %s (%s, %s, level %s, fold %s) failed: %s",
                spec.key[:10], spec.role, spec.confounder, spec.level, spec.fold, item.message,
            )  # fmt: skip
            outcome.failed.append(item.key)
        else:
            store.put(item, spec_record(spec))
            outcome.results.append(item)
        progress.update(1)
        counter[0] += 1  # tqdm stops counting when it is disabled (no terminal)
        _log_progress(counter[0], len(specs), progress.disable)

    cells = group_by_cell(pending)
    if executor == "ray" and cells:
        from audit.run.ray_cluster import RayOptions, run_cells_on_ray

        workers = run_cells_on_ray(cells, inputs, devices, record, ray_options or RayOptions())
        outcome.environment = {"executor": "ray", "ray_workers": workers}
    elif executor == "ray":
        outcome.environment = {"executor": "ray"}
    elif len(devices) <= 1:
        device = torch.device(devices[0]) if devices else torch.device("cpu")
        builder = CellBuilder(inputs, cells[0][0].train.input_size, device) if cells else None
        for cell in cells:
            for item in run_cell(cell, inputs, device, builder):
                record(item)
    else:
        from audit.run.local import run_cells_in_processes

        run_cells_in_processes(cells, inputs, devices, record)
    progress.close()
    return outcome


def _log_progress(done: int, total: int, bar_hidden: bool) -> None:
    """Without a terminal (CI logs) report progress at every tenth of the runs instead of a bar."""
    step = max(1, total // 10)
    if bar_hidden and (done % step == 0 or done == total):
        log.info("%d of %d runs done", done, total)


def _progress_bar(total: int, done: int):  # noqa: ANN202 - tqdm's type is private
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="fine-tuning runs",
        unit="run",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
