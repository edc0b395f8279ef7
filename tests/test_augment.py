"""The on-device augmentation: the study's ranges, one transform per image."""

from __future__ import annotations

import dataclasses

import torch

from audit.resolve.settings import TrainSettings
from audit.train.augment import random_affine, random_affine_matrices
from audit.train.tensors import normalise


def test_zero_ranges_give_the_identity() -> None:
    settings = dataclasses.replace(
        TrainSettings(), rotation_deg=0, shift_fraction=0, shear_deg=0, zoom_fraction=0
    )
    batch = torch.rand(4, 3, 32, 32)
    out = random_affine(batch, settings, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, batch, atol=1e-5, rtol=0)


def test_each_image_gets_its_own_transform_within_range() -> None:
    settings = TrainSettings()
    theta = random_affine_matrices(
        512, settings, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    assert not torch.allclose(theta[0], theta[1])
    shifts = theta[:, :, 2]
    assert shifts.abs().max() <= 2 * settings.shift_fraction + 1e-6
    scale_x = theta[:, :, 0].norm(dim=1)
    assert scale_x.min() >= 1 - settings.zoom_fraction - 1e-5
    assert scale_x.max() <= 1 + settings.zoom_fraction + 1e-5
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).rad2deg()
    assert angles.abs().max() <= settings.rotation_deg + 1e-4
    assert angles.abs().max() > settings.rotation_deg * 0.9


def test_same_seed_same_augmentation() -> None:
    batch = torch.rand(2, 3, 16, 16)
    a = random_affine(batch, TrainSettings(), torch.Generator().manual_seed(5))
    b = random_affine(batch, TrainSettings(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_normalisation_schemes() -> None:
    batch = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    none = normalise(batch, "none")
    rad = normalise(batch, "radimagenet")
    imagenet = normalise(batch, "imagenet")
    assert none.shape == (1, 3, 1, 2)
    torch.testing.assert_close(none[0, 0, 0], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(rad[0, 0, 0], torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(imagenet[0, 0, 0, 0], torch.tensor(-0.485 / 0.229))
