"""A cell (one confounder, level and fold): its tensors built once, its runs fine-tuned.

The unit of work every executor hands out. Runs of one cell follow each other, so the confounded
tensors are built once and shared by every model; the o.o.d. and clean test sets are built once
per confounder and process.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from audit.common.hashing import canonical, content_hash
from audit.confounders import apply_confounder
from audit.data.cases import Cohort
from audit.errors import MedauditError
from audit.models.architectures import Backbone
from audit.plan.grid import RunSpec, cell_sets
from audit.plan.splits import SampleSet, SplitTable
from audit.resolve.confounders import ResolvedConfounder
from audit.train.device import run_threads, set_determinism
from audit.train.engine import CellData, RunResult, fine_tune
from audit.train.tensors import SetTensors, to_set_tensors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditInputs:
    cohort: Cohort
    splits: SplitTable
    confounders: Mapping[str, ResolvedConfounder]
    backbones: Mapping[str, Backbone]
    base_seed: int


def set_seed(base_seed: int, confounder: str, sample_set: SampleSet, *salt: Any) -> int:
    return int(content_hash([base_seed, confounder, sample_set.name, *salt], length=8), 16)


def model_input_set(
    inputs: AuditInputs,
    name: str,
    indices: np.ndarray,
    confounded: np.ndarray,
    seed: int,
    input_size: int,
    device: torch.device,
) -> SetTensors:
    """Cohort images as the engine receives them: the confounder applied where ``confounded``
    says, then resized to the model's input. The one path from cache to tensor, shared by the
    runs and the learnability control, so the control sees what the models see."""
    resolved = inputs.confounders[name]
    conf, params = resolved.confounder, resolved.params
    cohort = inputs.cohort
    images = cohort.images[indices]
    if conf.kind == "pixel":
        images = apply_confounder(
            conf, images, confounded, seed=seed, params=params, ids=indices
        )  # fmt: skip
    case_ids = tuple(cohort.cases[i].case_id for i in indices)
    return to_set_tensors(images, cohort.labels[indices], case_ids, input_size, device)


class CellBuilder:
    """Builds device tensors of a cell, keeping level- and fold-independent test sets."""

    def __init__(self, inputs: AuditInputs, input_size: int, device: torch.device) -> None:
        self.inputs = inputs
        self.input_size = input_size
        self.device = device
        self._shared: dict[tuple[str, str, str], SetTensors] = {}

    def _tensors(self, name: str, sample_set: SampleSet, seed: int) -> SetTensors:
        return model_input_set(
            self.inputs, name, sample_set.indices, sample_set.confounded, seed,
            self.input_size, self.device,
        )  # fmt: skip

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
