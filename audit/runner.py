"""Execute the missing runs of a plan in this process, confounding each cell once.

Runs of one (confounder, level, fold) follow each other, so the confounded tensors are built once
and shared by every model; the o.o.d. and clean test sets are built once per confounder.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from audit.confounders import apply_confounder
from audit.data.cases import Cohort
from audit.errors import MedauditError, UsageError
from audit.hashing import canonical, content_hash
from audit.models.architectures import Backbone
from audit.plan import RunSpec, cell_sets
from audit.resolve.confounders import ResolvedConfounder
from audit.splits import SampleSet, SplitTable
from audit.store import ResultsStore
from audit.train.device import run_threads, set_determinism
from audit.train.engine import CellData, RunResult, fine_tune
from audit.train.tensors import SetTensors, to_set_tensors

if TYPE_CHECKING:
    from audit.executors_ray import RayOptions

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


@dataclass
class Outcome:
    """Finished results (reused and new) and the keys of runs that failed."""

    results: list[RunResult] = field(default_factory=list)
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)  # what remote workers report


@dataclass(frozen=True)
class AuditInputs:
    cohort: Cohort
    splits: SplitTable
    confounders: Mapping[str, ResolvedConfounder]
    backbones: Mapping[str, Backbone]
    base_seed: int


def set_seed(base_seed: int, confounder: str, sample_set: SampleSet, *salt: Any) -> int:
    return int(content_hash([base_seed, confounder, sample_set.name, *salt], length=8), 16)


class CellBuilder:
    """Builds device tensors of a cell, keeping level- and fold-independent test sets."""

    def __init__(self, inputs: AuditInputs, input_size: int, device: torch.device) -> None:
        self.inputs = inputs
        self.input_size = input_size
        self.device = device
        self._shared: dict[tuple[str, str, str], SetTensors] = {}

    def _tensors(self, name: str, sample_set: SampleSet, seed: int) -> SetTensors:
        resolved = self.inputs.confounders[name]
        conf, params = resolved.confounder, resolved.params
        cohort = self.inputs.cohort
        images = cohort.images[sample_set.indices]
        if conf.kind == "pixel":
            images = apply_confounder(
                conf,
                images,
                sample_set.confounded,
                seed=seed,
                params=params,
                ids=sample_set.indices,
            )
        case_ids = tuple(cohort.cases[i].case_id for i in sample_set.indices)
        labels = cohort.labels[sample_set.indices]
        return to_set_tensors(images, labels, case_ids, self.input_size, self.device)

    def build(self, name: str, level: float, fold: int) -> CellData:
        conf = self.inputs.confounders[name].confounder
        base = self.inputs.base_seed
        split = self.inputs.splits.get(name, level)
        sets = cell_sets(self.inputs.cohort, split, conf, level, fold, base)
        tests = {}
        for test_name, sample_set in sets.tests.items():
            if test_name == "iid":
                tests[test_name] = self._tensors(
                    name, sample_set, set_seed(base, name, sample_set, level)
                )
                continue
            shared_key = (name, test_name, sample_set.content_hash())
            if shared_key not in self._shared:
                self._shared[shared_key] = self._tensors(
                    name, sample_set, set_seed(base, name, sample_set)
                )
            tests[test_name] = self._shared[shared_key]
        return CellData(
            train=self._tensors(name, sets.train, set_seed(base, name, sets.train, level, fold)),
            val=self._tensors(name, sets.val, set_seed(base, name, sets.val, level, fold)),
            tests=tests,
        )


def spec_record(spec: RunSpec) -> dict[str, Any]:
    return {"key": spec.key, **canonical(dataclasses.asdict(spec))}


@dataclass(frozen=True)
class RunFailure:
    key: str
    message: str


def run_cell(
    specs: Sequence[RunSpec],
    inputs: AuditInputs,
    device: torch.device,
    builder: CellBuilder | None = None,
) -> list[RunResult | RunFailure]:
    """All runs of one cell: the confounded tensors are built once and shared by every model.

    Pass the same ``builder`` for every cell of a process so the o.o.d. and clean test sets are
    built once per confounder, not once per cell."""
    set_determinism(specs[0].train.deterministic)  # worker processes start without the setting
    with run_threads(specs[0].train.deterministic, device):
        return _run_cell(specs, inputs, device, builder)


def _run_cell(
    specs: Sequence[RunSpec], inputs: AuditInputs, device: torch.device, builder: CellBuilder | None
) -> list[RunResult | RunFailure]:
    builder = builder or CellBuilder(inputs, specs[0].train.input_size, device)
    # Any error fails its own runs only, recorded with its reason: the other cells go on, and
    # the audit reports what is missing instead of losing every finished run to one exception.
    try:
        cell_data = builder.build(*specs[0].cell)
    except Exception as exc:  # noqa: BLE001
        why = f"building the data failed: {failure_reason(exc)}"
        return [RunFailure(spec.key, why) for spec in specs]
    outputs: list[RunResult | RunFailure] = []
    for spec in specs:
        try:
            outputs.append(fine_tune(spec, inputs.backbones[spec.role], cell_data, device))
        except Exception as exc:  # noqa: BLE001
            outputs.append(RunFailure(spec.key, failure_reason(exc)))
    return outputs


def failure_reason(exc: Exception) -> str:
    """The message, prefixed with the type where the type says something (not for our own)."""
    if isinstance(exc, MedauditError | RuntimeError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def group_by_cell(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    cells: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        cells.setdefault(spec.cell, []).append(spec)
    return list(cells.values())


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
        from audit.executors_ray import RayOptions, run_cells_on_ray

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
        from audit.executors import run_cells_in_processes

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
