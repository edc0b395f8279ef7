"""``check --probe``: the training-free probe of the shipped model, run before the fine-tuning.

The probe reads the same cohort the audit loaded and takes the audit's own settings where the
two share a meaning (seed, alpha, bootstrap resamples, confounders and their parameters, the
input size and the model's preprocessing), so ``check --probe`` gives the numbers a standalone
``medaudit probe`` with the same choices gives. It is prepared in two steps: the model is opened
and tried on one batch before any image is decoded (a model without its classifier fails in
seconds, not after the data loaded), then probed once the cohort is there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.config import Settings
from audit.confounders import Confounder, get_confounder
from audit.data.cases import Cohort
from audit.errors import UsageError
from audit.probe.cohort import select_images
from audit.probe.decide import ProbeThresholds
from audit.probe.pipeline import ProbeRequest, run_probe
from audit.probe.preprocess import Preprocessor, resolve_input, resolve_normalization
from audit.probe.runner import ModelOptions, Runner, open_runner
from audit.probe.scores import choose_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckProbeOptions:
    """The probe's own flags on ``check``; the rest comes from the audit's settings."""

    model: Path
    device: str | None = None
    arch: str | None = None
    trust_code: bool = False
    trust_pickle: bool = False
    preprocessing: str = "imagenet"  # the user's model's, as ``load_model`` recorded it
    score_output: str | None = None
    activation: str = "auto"
    max_images: int | None = 1000
    max_shift: float = 0.05
    max_flip_rate: float = 0.05
    max_sex_auc_gap: float | None = None
    threshold: float | None = None
    batch_size: int = 32  # images per forward pass
    model_sha256: str = ""
    command: str = ""
    extra_confounders: Mapping[str, Confounder] = field(default_factory=dict)
    placebo: bool = False


@dataclass(frozen=True)
class PreparedProbe:
    options: CheckProbeOptions
    runner: Runner
    preprocessor: Preprocessor
    names: tuple[str, ...]
    thresholds: ProbeThresholds


def probed_confounders(
    names: tuple[str, ...], extra: Mapping[str, Confounder]
) -> tuple[dict[str, Confounder], tuple[str, ...]]:
    """(probed, skipped): pixel confounders and sex are probed; other sampling ones cannot be."""
    probed, skipped = {}, []
    for name in names:
        conf = extra.get(name) or get_confounder(name)
        if conf.kind == "pixel" or conf.attribute == "sex":
            probed[name] = conf
        else:
            skipped.append(name)
    return probed, tuple(skipped)


def prepare(options: CheckProbeOptions, settings: Settings) -> PreparedProbe:
    """Open the model whole (classifier included) and try it; no image is read yet."""
    names, skipped = probed_confounders(settings.confounders, options.extra_confounders)
    if skipped:
        log.warning("--probe: not probed (they select cases, pixels stay): %s", ", ".join(skipped))
    if not names:
        raise UsageError("none of the audit's confounders can be probed")
    if all(c.kind != "pixel" for c in names.values()) and options.max_sex_auc_gap is None:
        raise UsageError(
            "sex alone is reported, not gated: add a pixel confounder or give --max-sex-auc-gap"
        )
    device = (options.device or "auto").split(",")[0].strip() or "auto"
    runner = open_runner(
        ModelOptions(options.model, device, options.arch, options.trust_code, options.trust_pickle)
    )
    spec = resolve_input(
        runner.declared, options.model.name, input_size=_probe_size(runner, settings)
    )
    preset = settings.train.normalize
    preset = options.preprocessing if preset == "auto" else preset
    normalization = resolve_normalization(preset, None, None, spec.channels)
    choose_score(options.score_output, runner.trial(spec), options.model.name)
    thresholds = ProbeThresholds(
        max_shift=options.max_shift, max_flip_rate=options.max_flip_rate, alpha=settings.alpha,
        n_resamples=settings.n_resamples, seed=settings.seed,
        max_sex_auc_gap=options.max_sex_auc_gap, threshold=options.threshold,
    )  # fmt: skip
    return PreparedProbe(
        options, runner, Preprocessor(spec, normalization), tuple(names), thresholds
    )


def _probe_size(runner: Runner, settings: Settings) -> int:
    """The audit's input size, unless the shipped model is built for one size (torchvision's ViT
    takes only its own ``image_size``): the probe scores the model as it ships."""
    native = getattr(getattr(runner, "module", None), "image_size", None)
    return native if isinstance(native, int) else settings.train.input_size


def probe_cohort(prepared: PreparedProbe, cohort: Cohort, settings: Settings) -> dict[str, Any]:
    """Run the prepared probe on the audit's cohort; the probe's results document."""
    options = prepared.options
    selection = select_images(cohort, None, options.max_images, settings.seed)
    log.info("probing %s before the fine-tuning runs", selection.description)
    request = ProbeRequest(
        prepared.runner, prepared.preprocessor, cohort, selection, prepared.names,
        settings.confounder_params, prepared.thresholds, options.score_output,
        options.activation, options.batch_size, command=options.command,
        model_sha256=options.model_sha256, extra_confounders=options.extra_confounders,
        placebo=options.placebo,
    )  # fmt: skip
    return run_probe(request)
