"""Fine-tune one backbone under one run spec and evaluate it on every test set."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from audit.models.architectures import Backbone
from audit.plan.grid import RunSpec
from audit.resolve.settings import TrainSettings
from audit.train.augment import random_affine
from audit.train.device import autocast
from audit.train.tensors import SetTensors, memory_format, normalise, standardise, to_unit

EVAL_BATCH = 256


@dataclass(frozen=True, eq=False)
class CellData:
    """Tensors of one (confounder, level, fold): built once, shared by every model's run."""

    train: SetTensors
    val: SetTensors
    tests: Mapping[str, SetTensors]


@dataclass(frozen=True)
class RunResult:
    """What a finished run leaves behind: AUCs and the per-case scores paired statistics need."""

    key: str
    role: str
    confounder: str
    level: float
    fold: int
    auc: Mapping[str, float]
    scores: Mapping[str, tuple[float, ...]]
    case_ids: Mapping[str, tuple[str, ...]]
    labels: Mapping[str, tuple[int, ...]]
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    seconds: float
    device: str
    threshold: float | None = None
    operating: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    repeat: int = 0  # which training draw of its fold
    # The training control (audit.analysis.controls): optimiser steps taken, and the training
    # loss the optimiser saw over its first epoch and its last (train mode, so neither the
    # running BatchNorm statistics nor calibration moves it). None: not recorded (a single
    # step cannot show a fall; a run stored before they were recorded).
    optimizer_steps: int | None = None
    train_loss_start: float | None = None
    train_loss_end: float | None = None
    # The study's AUC (Keras's one-hot micro-average) per test set, beside the binary ``auc``,
    # so a run's numbers can be set beside the paper's (audit.analysis.study_auc).
    study_auc: Mapping[str, float] = field(default_factory=dict)


class Classifier(nn.Module):
    """Backbone features, Dropout, a new head: one logit, or the study's two-way softmax, whose
    positive-class probability is the sigmoid of its two logits' difference (so one loss and
    one score serve both; the two-way head's gradients are the study's, not the one logit's)."""

    def __init__(self, backbone: Backbone, dropout: float, head: str = "logit") -> None:
        super().__init__()
        self.backbone = backbone.module
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_dim, 2 if head == "softmax2" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.dropout(self.backbone(x)))
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out.squeeze(1)


def build_model(
    backbone: Backbone, settings: TrainSettings, device: torch.device
) -> tuple[Classifier, torch.optim.Optimizer]:
    """A fresh classifier on a copy of ``backbone`` and its optimiser, as the settings say:
    the head, BatchNorm momentum (PyTorch's convention) and Adam's epsilon."""
    model = Classifier(copy.deepcopy(backbone), settings.dropout, settings.head).to(device)
    if settings.bn_momentum is not None:
        for layer in model.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.momentum = settings.bn_momentum
    model = model.to(memory_format=memory_format(device))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
        eps=settings.adam_eps,
    )  # fmt: skip
    return model, optimizer


def batch_indices(n: int, size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    chunks = list(order.split(size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:  # BatchNorm cannot train on one sample
        chunks.pop()
    return chunks


@torch.inference_mode()
def predict(model: nn.Module, data: SetTensors, scheme: str, device: torch.device) -> torch.Tensor:
    """Logits for a whole set, in large batches."""
    model.eval()
    outputs = []
    for idx in torch.arange(len(data)).split(EVAL_BATCH):
        with autocast(device):
            outputs.append(model(normalise(data.images[idx.to(device)], scheme)).float())
    return torch.cat(outputs)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: SetTensors,
    spec: RunSpec,
    order_gen: torch.Generator,
    aug_gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One epoch; returns the loss of each optimiser step it took (the training control reads
    them), kept on the device so that a GPU is not synchronised at every step."""
    model.train()
    settings = spec.train
    losses: list[torch.Tensor] = []
    for step, idx in enumerate(batch_indices(len(data), settings.batch_size, order_gen)):
        if settings.max_steps_per_epoch is not None and step >= settings.max_steps_per_epoch:
            break
        idx = idx.to(device)
        x = to_unit(data.images[idx])
        if settings.augment:
            x = random_affine(x, settings, aug_gen)
        x = standardise(x, settings.normalize)
        with autocast(device):
            logits = model(x).float()
        loss = F.binary_cross_entropy_with_logits(logits, data.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).float().cpu() if losses else torch.zeros(0)


def loss_fall(epoch_losses: list[torch.Tensor]) -> tuple[float | None, float | None]:
    """The optimiser's own loss (train mode) over the first epoch and over the last: their
    means, or with one epoch its first and last step. None: no step, or a single one, which
    cannot show a fall."""
    steps = [e for e in epoch_losses if len(e)]
    if not steps:
        return None, None
    if len(steps) == 1:
        only = steps[0]
        return (float(only[0]), float(only[-1])) if len(only) > 1 else (float(only[0]), None)
    return float(steps[0].mean()), float(steps[-1].mean())


def _auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    y = labels.cpu().numpy()
    if len(set(y.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(y, scores.cpu().numpy()))


def _study_auc(labels: torch.Tensor, probs: torch.Tensor) -> float:
    from audit.analysis.study_auc import study_auc

    y = labels.cpu().numpy().astype(int)
    if len(set(y.tolist())) < 2:
        return float("nan")
    return study_auc(y, probs.float().cpu().numpy())


def _operating_threshold(labels: torch.Tensor, probs: torch.Tensor) -> float | None:
    """Youden's J on the (i.i.d.) validation set: chosen before any test case is seen."""
    from audit.analysis.stats import youden_threshold

    y = labels.cpu().numpy().astype(int)
    if len(set(y.tolist())) < 2:
        return None
    return float(youden_threshold(y, probs.cpu().numpy()))


def _operating_point(
    labels: torch.Tensor, scores: tuple[float, ...], threshold: float | None
) -> dict[str, float | None]:
    """Sensitivity and specificity at the validation threshold, and calibration (ECE)."""
    import numpy as np

    from audit.analysis.stats import expected_calibration_error, sensitivity_specificity

    y = labels.cpu().numpy().astype(int)
    p = np.asarray(scores, dtype=float)
    point: dict[str, float | None] = {"sensitivity": None, "specificity": None, "ece": None}
    if len(y):
        point["ece"] = float(expected_calibration_error(y, p))
    if threshold is not None and len(set(y.tolist())) == 2:
        sens, spec = sensitivity_specificity(y, p, threshold)
        point["sensitivity"], point["specificity"] = float(sens), float(spec)
    return point


def fine_tune(spec: RunSpec, backbone: Backbone, data: CellData, device: torch.device) -> RunResult:
    """Train with early stopping on validation loss, keep the best epoch, score every test set."""
    started = time.perf_counter()
    settings = spec.train
    torch.manual_seed(spec.seed)
    order_gen = torch.Generator().manual_seed(spec.seed)
    aug_gen = torch.Generator(device=device).manual_seed(spec.seed + 1)
    model, optimizer = build_model(backbone, settings, device)
    best_loss, best_epoch, best_state, epochs_run = float("inf"), 0, None, 0
    epoch_losses = []
    for epoch in range(settings.epochs):
        epoch_losses.append(
            train_epoch(model, optimizer, data.train, spec, order_gen, aug_gen, device)
        )
        epochs_run = epoch + 1
        val_logits = predict(model, data.val, settings.normalize, device)
        val_loss = float(F.binary_cross_entropy_with_logits(val_logits, data.val.labels))
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= settings.patience:
            break
    loss_start, loss_end = loss_fall(epoch_losses)
    if best_state is not None:
        model.load_state_dict(best_state)
    scores, aucs, study = {}, {}, {}
    for name, test in data.tests.items():
        probs = torch.sigmoid(predict(model, test, settings.normalize, device))
        scores[name] = tuple(round(float(p), 7) for p in probs.cpu())
        aucs[name] = _auc(test.labels, probs)
        study[name] = _study_auc(test.labels, probs)
    val_probs = torch.sigmoid(predict(model, data.val, settings.normalize, device))
    threshold = _operating_threshold(data.val.labels, val_probs)
    operating = {
        name: _operating_point(data.tests[name].labels, scores[name], threshold) for name in scores
    }
    return RunResult(
        key=spec.key,
        role=spec.role,
        confounder=spec.confounder,
        level=spec.level,
        fold=spec.fold,
        auc=aucs,
        scores=scores,
        case_ids={n: t.case_ids for n, t in data.tests.items()},
        labels={n: tuple(int(v) for v in t.labels.cpu().tolist()) for n, t in data.tests.items()},
        epochs_run=epochs_run,
        best_epoch=best_epoch + 1,
        best_val_loss=best_loss,
        seconds=round(time.perf_counter() - started, 3),
        device=device.type,
        threshold=threshold,
        operating=operating,
        repeat=spec.repeat,
        optimizer_steps=sum(len(e) for e in epoch_losses),
        train_loss_start=loss_start,
        train_loss_end=loss_end,
        study_auc=study,
    )
