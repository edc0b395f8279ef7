"""What an executor is: where an audit's cells run, and what it says about where they ran.

The runner (:func:`audit.run.execute.execute`) is handed an :class:`Executor` that the command line
built from the resolved settings (``audit.run.executors``). It gives the executor the cells the
results store lacks; the executor runs them wherever it likes (this process, worker processes, a
Ray cluster, a user's own scheduler) and hands every finished run or failure back through
``record``, in any order. Only the driver writes the store, so a killed audit loses no finished
run, and the verdict does not depend on the order runs come back in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from audit.plan.grid import RunSpec
from audit.run.cells import AuditInputs, CellBuilder, RunFailure, run_cell
from audit.train.device import environment_fingerprint
from audit.train.engine import RunResult

Record = Callable[[RunResult | RunFailure], None]


class Executor(ABC):
    """Runs cells (all models of one confounder x level x fold) and reports each run."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, cells: Sequence[list[RunSpec]], inputs: AuditInputs, record: Record) -> None:
        """Run every cell; a failed run is recorded as a :class:`RunFailure`, not raised."""

    @abstractmethod
    def environment(self, deterministic: bool) -> dict[str, Any]:
        """Where the runs ran (after :meth:`run`, or without it when every run was reused)."""

    def local_device(self) -> str:
        """The device this process may compute on before the runs (the learnability control):
        one of the executor's own, or the CPU for one that runs elsewhere (a cluster's driver
        may hold no GPU, and must not take one the user kept from it)."""
        return "cpu"


class InProcessExecutor(Executor):
    """Every cell in this process on one device: the default, and the reference for the others
    (each must give the same results on the same plan)."""

    name = "in-process"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def run(self, cells: Sequence[list[RunSpec]], inputs: AuditInputs, record: Record) -> None:
        if not cells:
            return
        device = torch.device(self.device)
        builder = CellBuilder(inputs, cells[0][0].train.input_size, device)
        for cell in cells:
            for item in run_cell(cell, inputs, device, builder):
                record(item)

    def environment(self, deterministic: bool) -> dict[str, Any]:
        return environment_fingerprint(torch.device(self.device), deterministic)

    def local_device(self) -> str:
        return self.device
