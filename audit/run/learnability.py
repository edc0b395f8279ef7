"""The learnability control: can a small detector tell a pixel artifact from clean training
images at the model's input size? If not, no model could lean on it, and a "no reliance" reading
would only say the artifact was invisible: the confounder is then "not tested", never a pass.

Two linear probes, each judged on patients it was not fitted on: one on the reference's frozen
features (what a pretrained model sees without fine-tuning), one on the pixels themselves and
their local high-pass energy (what any network can learn from scratch). The artifact counts as
learnable when either reaches the declared held-out AUC.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audit.models.architectures import Backbone
from audit.plan.grid import RunSpec
from audit.run.cells import AuditInputs, model_input_set
from audit.train.tensors import SetTensors, normalise

log = logging.getLogger(__name__)

MAX_IMAGES = 128  # training images per confounder (each shown clean and with the artifact)
_BATCH = 64
_PIXEL_GRID = 32  # pooled side of the pixel probe's intensity map
_ENERGY_GRID = 16  # pooled side of its high-pass energy map
DETECTOR = (
    "linear probes (logistic regression, 2-fold by patient) on the reference's frozen features "
    "and on pooled pixels and high-pass energy; the better held-out AUC counts"
)


def learnability(
    inputs: AuditInputs,
    specs: Sequence[RunSpec],
    min_auc: float,
    seed: int,
    device: torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Per pixel confounder: each probe's held-out AUC, the better one, and whether it reaches
    ``min_auc``. Sampling confounders draw cases instead of changing pixels: not applicable."""
    device = device or torch.device("cpu")
    records: dict[str, dict[str, Any]] = {}
    for name, resolved in inputs.confounders.items():
        if resolved.confounder.kind != "pixel":
            records[name] = {"applicable": False, "passed": True,
                             "why": "a sampling confounder: it changes which cases are drawn"}  # fmt: skip
            continue
        spec = _spec_for(specs, name)
        records[name] = _detect(inputs, name, spec, min_auc, seed, device)
    return records


def _spec_for(specs: Sequence[RunSpec], name: str) -> RunSpec:
    """The reference's spec (its input size and preprocessing), else the first model's."""
    mine = [s for s in specs if s.confounder == name]
    return next((s for s in mine if s.role == "reference"), mine[0])


def _training_images(inputs: AuditInputs, name: str, level: float, seed: int) -> np.ndarray:
    """Up to MAX_IMAGES of the first fold's training cases: never a test case."""
    train = np.sort(inputs.splits.get(name, level).folds[0][0])
    if len(train) <= MAX_IMAGES:
        return train
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(train, MAX_IMAGES, replace=False))


def _detect(
    inputs: AuditInputs,
    name: str,
    spec: RunSpec,
    min_auc: float,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    indices = _training_images(inputs, name, spec.level, seed)
    groups = inputs.cohort.patient_groups[indices]
    size = spec.train.input_size
    sets = [
        model_input_set(inputs, name, indices, np.full(len(indices), flag), seed, size, device)
        for flag in (False, True)
    ]
    record: dict[str, Any] = {"applicable": True, "images": int(len(indices)),
                              "input_size": size, "threshold": min_auc}  # fmt: skip
    if len(np.unique(groups)) < 4:
        return {**record, "passed": False, "auc": None, "why": "fewer than 4 training patients"}
    backbone = inputs.backbones[spec.role]
    probes = {
        "features": [_features(backbone, s, spec.train.normalize, device) for s in sets],
        "pixels": [_pixel_features(s) for s in sets],
    }
    aucs = {probe: _held_out_auc(*pair, groups) for probe, pair in probes.items()}
    best = max(aucs.values())
    passed = bool(best >= min_auc)
    log.info("learnability of %s at %d px: held-out AUC %.3f (%s)", name, size, best,
             "learnable" if passed else "not learnable")  # fmt: skip
    return {**record, "auc": best, "probes": aucs, "passed": passed, "features_of": spec.role}


def _features(
    backbone: Backbone, data: SetTensors, scheme: str, device: torch.device
) -> np.ndarray:
    """Frozen features of a copy: the backbone the runs fine-tune is shared (and sent to
    workers), so it is neither moved nor touched under inference mode."""
    module = copy.deepcopy(backbone.module).to(device).eval()
    with torch.no_grad():
        chunks = [
            module(normalise(data.images[idx.to(device)], scheme)).float().flatten(1).cpu()
            for idx in torch.arange(len(data)).split(_BATCH)
        ]
    return torch.cat(chunks).numpy().astype(np.float64)


@torch.no_grad()
def _pixel_features(data: SetTensors) -> np.ndarray:
    """Pooled intensities (a burned-in mark) and pooled high-pass energy (added noise, removed
    detail): what a network trained from scratch can pick up at this input size."""
    x = data.images.float().cpu().unsqueeze(1) / 255.0
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    energy = (x - blurred).abs()
    intensity = F.adaptive_avg_pool2d(x, min(_PIXEL_GRID, x.shape[-1])).flatten(1)
    texture = F.adaptive_avg_pool2d(energy, min(_ENERGY_GRID, x.shape[-1])).flatten(1)
    return torch.cat([intensity, texture], dim=1).numpy().astype(np.float64)


def _held_out_auc(clean: np.ndarray, artifact: np.ndarray, groups: np.ndarray) -> float:
    """Mean of the two folds' held-out AUCs, folds by patient (an image's two versions stay
    together); each fold is scored by the probe fitted on the other."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([clean, artifact])
    y = np.concatenate([np.zeros(len(clean)), np.ones(len(artifact))])
    g = np.concatenate([groups, groups])
    aucs = []
    for fit, held in GroupKFold(n_splits=2).split(x, y, g):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        probe.fit(x[fit], y[fit])
        scores = probe.decision_function(x[held])
        finite = np.isfinite(scores).all() and len(np.unique(y[held])) == 2
        aucs.append(float(roc_auc_score(y[held], scores)) if finite else 0.5)
    return float(np.mean(aucs))


def learnability_summary(
    records: Mapping[str, Mapping[str, Any]], pixel_confounders: Sequence[str]
) -> dict[str, str]:
    """Confounder -> why it is not tested: each pixel confounder the detector could not see,
    or that has no record at all (no evidence is no pass)."""
    reasons = {}
    for name in pixel_confounders:
        r = records.get(name)
        if not r:
            reasons[name] = (
                "Not tested: no learnability record, so no evidence a model could see it."
            )
        elif r.get("passed") is not True:
            reasons[name] = (
                f"Not tested: a detector told the artifact from clean training images at "
                f"{r.get('input_size')} px with held-out AUC {_shown(r.get('auc'))}, below the "
                f"declared {r.get('threshold')}; no model can be shown to rely on what it "
                "cannot see."
            )
    return reasons


def _shown(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "not computed"
