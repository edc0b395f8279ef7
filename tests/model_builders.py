"""Shared by the loader tests: weights worth comparing, and an exact comparison."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every float tensor, BN statistics included, so equality means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(values.abs() + 0.5 if key.endswith("running_var") else values)
    return model


def assert_same_weights(loaded: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    got = loaded.state_dict()
    assert set(got) == set(saved)
    for key, value in saved.items():
        assert torch.equal(got[key], value), key


def tiny_checkpoints(folder: Path, width: int = 8) -> tuple[Path, Path]:
    """A user and a reference TinyResNet state_dict, seeded: the models of the smallest audit."""
    from audit.models.tiny import TinyResNet

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = folder / "user.pt", folder / "reference.pt"
    for path in paths:
        torch.save(TinyResNet(width=width).state_dict(), path)
    return paths
