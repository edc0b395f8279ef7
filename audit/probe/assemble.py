"""The probe put together once, for ``probe`` and ``check --probe`` alike.

In two steps: :func:`open_probe` opens the shipped model whole (classifier included), fixes its
input and preprocessing and tries one batch, before any image is decoded (a model without its
classifier fails in seconds, not after the data loaded); :func:`probe_cohort` then scores the
cohort. What is probed and how it is decided comes resolved (``audit.resolve.probe.resolve_probe``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.data.cases import Cohort
from audit.probe.cohort import select_images
from audit.probe.pipeline import ProbeRequest, run_probe
from audit.probe.preprocess import Preprocessor, resolve_input, resolve_normalization
from audit.probe.runner import ModelOptions, Runner, open_runner
from audit.probe.scores import choose_score
from audit.resolve.probe import ResolvedProbe


@dataclass(frozen=True)
class ShippedModel:
    """How the shipped model is opened and fed. ``input_size`` None: the model's declared size,
    else ``default_input_size``, unless the model is built for one size (torchvision's ViT)."""

    path: Path
    device: str  # one device, as audit.resolve.devices.resolve_devices read it
    arch: str | None = None
    trust_code: bool = False
    trust_pickle: bool = False
    input_size: int | None = None
    default_input_size: int | None = None
    channels: int | None = None
    normalize: str | None = None  # a preset name; None with mean/std: custom
    mean: str | None = None
    std: str | None = None


@dataclass(frozen=True)
class OpenedProbe:
    model: ShippedModel
    runner: Runner
    preprocessor: Preprocessor
    resolved: ResolvedProbe


def open_probe(model: ShippedModel, resolved: ResolvedProbe) -> OpenedProbe:
    """Open the model, fix its input and preprocessing, and try it; no image is read yet."""
    runner = open_runner(
        ModelOptions(model.path, model.device, model.arch, model.trust_code, model.trust_pickle)
    )
    size = model.input_size or native_input_size(runner) or model.default_input_size
    spec = resolve_input(runner.declared, model.path.name, input_size=size, channels=model.channels)
    normalization = resolve_normalization(model.normalize, model.mean, model.std, spec.channels)
    choose_score(resolved.options.score_output, runner.trial(spec), model.path.name)
    return OpenedProbe(model, runner, Preprocessor(spec, normalization), resolved)


def native_input_size(runner: Runner) -> int | None:
    """The one size a model is built for (torchvision's ViT has ``image_size``), else None:
    the probe scores the model as it ships."""
    native = getattr(getattr(runner, "module", None), "image_size", None)
    return native if isinstance(native, int) else None


def probe_cohort(
    opened: OpenedProbe,
    cohort: Cohort,
    *,
    model_sha256: str,
    subset: str | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Score the cohort clean and with each confounder; the probe's results document."""
    resolved = opened.resolved
    seed = resolved.thresholds.seed
    selection = select_images(cohort, subset, resolved.options.max_images or None, seed)
    confounders = {name: rc.at(cohort.image_size) for name, rc in resolved.confounders.items()}
    request = ProbeRequest(
        opened.runner, opened.preprocessor, cohort, selection, confounders, resolved.thresholds,
        resolved.options.score_output, resolved.options.activation, resolved.options.batch_size,
        command=command, model_sha256=model_sha256, placebo=resolved.options.placebo,
    )  # fmt: skip
    return run_probe(request)
