"""Run what the results store lacks, through the executor the command line built.

Only this process writes to the store, so a killed audit loses no finished run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from audit.plan.grid import RunSpec
from audit.run.cells import AuditInputs, RunFailure, group_by_cell, spec_record
from audit.run.executor import Executor, InProcessExecutor
from audit.run.store import ResultsStore
from audit.train.engine import RunResult

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Finished results (reused and new) and the keys of runs that failed."""

    results: list[RunResult] = field(default_factory=list)
    reused: int = 0
    failed: list[str] = field(default_factory=list)


def execute(
    specs: Sequence[RunSpec],
    inputs: AuditInputs,
    store: ResultsStore,
    executor: Executor | None = None,
) -> Outcome:
    """Run what the store lacks, cell by cell; a failed run is recorded and the audit goes on.

    ``executor`` None runs in this process on the CPU. Runs come back in any order; only this
    process writes to the store, so a kill loses no finished run.
    """
    executor = executor or InProcessExecutor("cpu")
    outcome = Outcome()
    pending = []
    by_key = {spec.key: spec for spec in specs}
    cases = {case.case_id for case in inputs.cohort.cases}
    for spec in specs:
        done = store.get(spec.key)
        if done is not None and not _names_these_cases(done, cases):
            log.info(
                "run %s was stored under another cache folder's pseudonyms; redone", spec.key[:10]
            )
            done = None
        if done is None:
            pending.append(spec)
        else:
            outcome.results.append(done)
    outcome.reused = len(outcome.results)
    if outcome.reused:
        log.info("%d of %d runs already done", outcome.reused, len(specs))
    progress = _progress_bar(len(specs), outcome.reused)
    counter = [outcome.reused]

    awaited = {spec.key for spec in pending}

    def record(item: RunResult | RunFailure) -> None:
        if item.key not in awaited:  # not in the plan, or reported twice: never counted twice
            log.warning("the executor reported run %s that was not awaited; ignored", item.key[:10])
            return
        awaited.discard(item.key)
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
        _log_progress(counter[0], len(specs), len(outcome.failed), progress.disable)

    executor.run(group_by_cell(pending), inputs, record)
    for key in sorted(awaited):  # an executor that dropped a run fails it: never a silent gap
        record(RunFailure(key, f"the {executor.name} executor returned no result for this run"))
    progress.close()
    return outcome


def _names_these_cases(result: RunResult, cases: set[str]) -> bool:
    """A stored run is reusable only if its per-case scores name this cohort's cases: run keys
    follow the data alone, but case ids are pseudonyms of the cache folder's secret key, so a
    run made with another cache folder scored the same images under other names."""
    return all(set(ids) <= cases for ids in result.case_ids.values())


def _log_progress(finished: int, total: int, failed: int, bar_hidden: bool) -> None:
    """Without a terminal (CI logs) report progress at every tenth of the runs instead of a bar;
    failed runs are finished but not done, and said so."""
    step = max(1, total // 10)
    if bar_hidden and (finished % step == 0 or finished == total):
        failures = f" ({failed} failed)" if failed else ""
        log.info("%d of %d runs done%s", finished - failed, total, failures)


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
