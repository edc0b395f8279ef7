"""Scoring behind one small interface: ONNX Runtime for ``.onnx`` files, PyTorch eager otherwise.

A runner takes a preprocessed float batch and returns the model's raw outputs as numpy arrays, one
per output, in the model's own order. Everything around it (preprocessing, choosing the score,
batching, statistics) is shared, so the same probe gives the same numbers whichever runtime runs
the model, and a release pipeline can probe the exact artifact it ships.

ONNX Runtime gets the CUDA provider when a GPU is visible, else the CPU provider; the providers a
session actually uses are recorded, so a silent fall-back to the CPU shows in the results.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audit.errors import UsageError
from audit.models import formats
from audit.probe.onnx_file import first_line, inspect_onnx
from audit.probe.preprocess import DTYPES, DeclaredInput, InputSpec
from audit.resolve.constraints import SettingError
from audit.train.device import parse_devices

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


@dataclass(frozen=True)
class ModelOptions:
    path: Path
    device: str | None = None  # None/"auto": a GPU when there is one; "cpu"; "cuda" or "cuda:N"
    arch: str | None = None
    trust_code: bool = False
    trust_pickle: bool = False


@dataclass(frozen=True)
class RuntimeInfo:
    """Which runtime ran the model, where, and with what; recorded in the results."""

    backend: str  # onnxruntime | torch
    version: str
    device: str
    threads: int
    providers_requested: tuple[str, ...] = ()
    providers_used: tuple[str, ...] = ()
    fell_back_to_cpu: bool = False
    notes: tuple[str, ...] = field(default=())


class Runner(ABC):
    """A loaded model: declared input, output names, and ``run(batch) -> outputs``."""

    file_name: str
    format: str
    arch: str | None
    declared: DeclaredInput
    output_names: tuple[str, ...]
    info: RuntimeInfo
    notes: tuple[str, ...]

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw outputs of one batch, each an array whose first axis is the batch."""

    def trial(self, spec: InputSpec) -> list[tuple[str, tuple[int, ...]]]:
        """One zero batch through the model: shapes of its outputs, or a one-line UsageError.

        Run before any image is scored, so a model that rejects the resolved input (a fixed
        reshape inside, a wrong channel count) says so at once, in words.
        """
        batch = spec.batch or 2
        zeros = np.zeros(spec.shape(batch), dtype=DTYPES[spec.dtype])
        try:
            outputs = self.run(zeros)
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 - a runtime's own error, shown in one line
            raise UsageError(
                f"{self.file_name} rejected an input of shape {list(zeros.shape)} "
                f"({first_line(error)}); set `input_size` / `channels` to what the model expects"
            ) from None
        return [(n, tuple(o.shape)) for n, o in zip(self.output_names, outputs, strict=True)]


def available_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def is_onnx(path: Path) -> bool:
    found = formats.sniff_format(path)
    return found == formats.ONNX or (found == formats.UNKNOWN and path.suffix.lower() == ".onnx")


def open_runner(options: ModelOptions) -> Runner:
    """The runner for the file's format (sniffed from its content, not its name)."""
    if is_onnx(options.path):
        return OnnxRunner(options)
    return TorchRunner(options)


def _wants_cuda(device: str | None) -> tuple[bool, int]:
    """(CUDA?, index) of a device that ``audit.train.device.parse_devices`` resolved."""
    chosen = torch.device(parse_devices(device)[0])
    if chosen.type not in ("cpu", "cuda"):  # ONNX Runtime and the probe's runner know no other
        raise SettingError("device", device, "auto, cpu, cuda or cuda:N for the probe")
    return chosen.type == "cuda", chosen.index or 0


class OnnxRunner(Runner):
    """ONNX Runtime, graph optimisations on, one intra-op thread per available core."""

    def __init__(self, options: ModelOptions) -> None:
        import onnxruntime as ort

        path = options.path
        summary = inspect_onnx(path)
        cuda, index = _wants_cuda(options.device)
        requested: list = [CPU_PROVIDER]
        if cuda and CUDA_PROVIDER in ort.get_available_providers():
            _preload_cuda_libraries(ort)
            requested = [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER]
        elif cuda:
            log.warning("this onnxruntime build has no CUDA provider; the probe runs on the CPU")
        threads = available_threads()
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = 3  # errors only; a fall-back is reported below
        ort.set_default_logger_severity(3)  # the process-wide logger too (provider loading)
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options, providers=requested
            )
        except Exception as error:  # noqa: BLE001 - ORT raises Fail, InvalidGraph, ...
            raise UsageError(f"ONNX Runtime cannot load {path.name}: {first_line(error)}") from None
        names = [p[0] if isinstance(p, tuple) else p for p in requested]
        used = tuple(self.session.get_providers())
        fell_back = CUDA_PROVIDER in names and CUDA_PROVIDER not in used
        if fell_back:
            log.warning("ONNX Runtime could not start the CUDA provider; the probe runs on the CPU")
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            listed = ", ".join(i.name for i in inputs)
            raise UsageError(
                f"{path.name} has {len(inputs)} inputs ({listed}); the probe feeds one image input"
            )
        self.input_name = inputs[0].name
        self.declared = DeclaredInput(
            inputs[0].name,
            tuple(inputs[0].shape),
            _ORT_TYPES.get(inputs[0].type, inputs[0].type),
        )
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.file_name, self.format, self.arch = path.name, "onnx", None
        notes = [f"opset {summary.opset}, produced by {summary.producer}"]
        if summary.external_files:
            notes.append(f"external data: {', '.join(summary.external_files)}")
        self.notes = tuple(notes)
        self.info = RuntimeInfo(
            backend="onnxruntime",
            version=ort.__version__,
            device=f"cuda:{index}" if CUDA_PROVIDER in used else "cpu",
            threads=threads,
            providers_requested=tuple(names),
            providers_used=used,
            fell_back_to_cpu=fell_back,
        )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: batch}))


def _preload_cuda_libraries(ort) -> None:  # noqa: ANN001 - the onnxruntime module
    """onnxruntime-gpu >= 1.21 can load CUDA and cuDNN from the nvidia wheels torch installed."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as error:  # noqa: BLE001 - the provider check after loading reports it
        log.debug("onnxruntime.preload_dlls: %s", error)


class TorchRunner(Runner):
    """PyTorch eager under inference_mode; outputs as a tensor, a sequence or a mapping."""

    def __init__(self, options: ModelOptions) -> None:
        from audit.probe.torch_model import load_torch_model

        loaded = load_torch_model(
            options.path,
            arch=options.arch,
            trust_code=options.trust_code,
            trust_pickle=options.trust_pickle,
        )
        cuda, index = _wants_cuda(options.device)
        self.device = torch.device(f"cuda:{index}" if cuda else "cpu")
        self.module = loaded.module.to(self.device)
        floats = [p for p in self.module.parameters() if p.is_floating_point()]
        self.dtype = floats[0].dtype if floats else torch.float32
        dtype = "float16" if self.dtype == torch.float16 else "float32"
        self.declared = DeclaredInput("input", None, dtype, channels_hint=loaded.in_channels)
        self.file_name, self.format, self.arch = options.path.name, loaded.format, loaded.arch
        self.notes = loaded.notes
        self.output_names = ("output",)
        self.info = RuntimeInfo(
            backend="torch",
            version=torch.__version__,
            device=str(self.device),
            threads=torch.get_num_threads() if self.device.type == "cpu" else 0,
        )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.module(x)
        names, tensors = _flatten(out)
        self.output_names = names
        return [t.detach().float().cpu().numpy() for t in tensors]


def _flatten(out: object) -> tuple[tuple[str, ...], list[torch.Tensor]]:
    """A model's return value as named tensors: a tensor is "output", a mapping keeps its keys."""
    if isinstance(out, torch.Tensor):
        return ("output",), [out]
    if isinstance(out, Mapping):
        items = [(str(k), v) for k, v in out.items() if isinstance(v, torch.Tensor)]
    elif isinstance(out, Sequence):
        fields = getattr(out, "_fields", None)  # a namedtuple keeps its field names
        keys = fields or [f"output{i}" for i in range(len(out))]
        items = [(str(k), v) for k, v in zip(keys, out, strict=True) if isinstance(v, torch.Tensor)]
    else:
        items = []
    if not items:
        raise UsageError(f"the model returned {type(out).__name__}, not tensors; {_EXPORT}")
    return tuple(k for k, _ in items), [v for _, v in items]


_EXPORT = "return the scores as a tensor, or export the model to ONNX"
