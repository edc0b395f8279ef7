"""Under `--protocol source-matters` the fine-tuning is the study's, setting for setting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from audit.analysis.budget import budget_record
from audit.models.architectures import Backbone
from audit.models.tiny import TinyResNet
from audit.plan.grid import RunSpec
from audit.resolve.settings import STUDY_TRAIN, Settings, build_settings
from audit.train.engine import CellData, build_model, fine_tune
from audit.train.tensors import SetTensors


def _tensors(n: int, size: int, seed: int) -> SetTensors:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 2).float()
    images = torch.rand(n, size, size, generator=g) * 60 + 100 + labels[:, None, None] * 40
    return SetTensors(images.to(torch.uint8), labels, tuple(f"c{i}" for i in range(n)))


def test_the_protocol_starts_from_the_studys_training_values_and_flags_still_win() -> None:
    train = build_settings(protocol="source-matters").train
    assert (train.batch_size, train.patience, train.bn_momentum, train.adam_eps, train.head) == (
        256, 30, 0.01, 1e-7, "softmax2",
    )  # fmt: skip
    assert build_settings().train.head == "logit", "outside the protocol: medaudit's defaults"
    lowered = build_settings(flag_values={"train": {"batch_size": 32}}, protocol="source-matters")
    assert lowered.train.batch_size == 32 and lowered.train.patience == 30


def test_a_protocol_run_on_a_223_image_fold_steps_once_per_epoch_for_30_epochs() -> None:
    """The study's fold: 223 training images, batch 256, so one step per epoch; patience 30,
    so the 30 epochs all run. The model is the study's: BatchNorm momentum 0.01 (Keras 0.99),
    Adam epsilon 1e-7 and a two-way softmax head."""
    train = dataclasses.replace(
        build_settings(protocol="source-matters").train, input_size=16, normalize="imagenet"
    )
    module = TinyResNet(width=4)
    backbone = Backbone(module, module.feature_dim, "tiny")
    model, optimizer = build_model(backbone, train, torch.device("cpu"))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == pytest.approx(0.01) for m in norms)
    assert optimizer.param_groups[0]["eps"] == pytest.approx(1e-7)
    assert model.head.out_features == 2
    assert all(m.momentum == pytest.approx(0.1) for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)), "the shared backbone is untouched"  # fmt: skip

    spec = RunSpec(role="user", model_hash="m", arch="tiny", data_hash="d", split_hash="s",
                   confounder="tag", params=(), level=0.0, fold=0, seed=1, train=train)  # fmt: skip
    data = CellData(train=_tensors(223, 16, 0), val=_tensors(40, 16, 1),
                    tests={"clean": _tensors(40, 16, 2)})  # fmt: skip
    result = fine_tune(spec, backbone, data, torch.device("cpu"))
    assert result.epochs_run == 30 and result.optimizer_steps == 30


def test_each_departure_from_the_study_is_named_against_the_studys_value() -> None:
    record = budget_record(Settings(), 10, 1.0)
    changes = " ".join(record["deviations"])
    assert "batch 64 (the study: 256)" in changes
    assert "patience 5 (the study: 30)" in changes
    assert "BatchNorm momentum each layer's own (the study: 0.01)" in changes
    assert "Adam epsilon 1e-08 (the study: 1e-07)" in changes
    assert "head one logit (the study: two-way softmax)" in changes
    study = budget_record(Settings(train=build_settings(protocol="source-matters").train), 10, 1.0)
    assert not any(
        word in " ".join(study["deviations"])
        for word in ("batch", "patience", "momentum", "epsilon", "head")
    ), study["deviations"]
    assert set(STUDY_TRAIN) == {"batch_size", "patience", "bn_momentum", "adam_eps", "head"}
