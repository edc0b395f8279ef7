"""The study's augmentation as one batched, per-sample affine warp on the device.

Keras' ImageDataGenerator (rotation 10 deg, shifts 10 %, shear 0.1 deg, zoom 10 %, nearest fill,
no flips) drew one transform per image on the CPU; here a whole batch is warped with one
``grid_sample`` call, each image with its own parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from audit.resolve.settings import TrainSettings


def random_affine_matrices(
    n: int, settings: TrainSettings, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, 2, 3) matrices in normalised coordinates, parameters uniform in the study's ranges."""

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)

    angle = uniform(-1, 1) * math.radians(settings.rotation_deg)
    shear = uniform(-1, 1) * math.radians(settings.shear_deg)
    zoom_x = uniform(1 - settings.zoom_fraction, 1 + settings.zoom_fraction)
    zoom_y = uniform(1 - settings.zoom_fraction, 1 + settings.zoom_fraction)
    shift_x = uniform(-1, 1) * 2 * settings.shift_fraction  # normalised coordinates span 2
    shift_y = uniform(-1, 1) * 2 * settings.shift_fraction
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.empty(n, 2, 3, device=generator.device)
    theta[:, 0, 0] = zoom_x * cos
    theta[:, 0, 1] = zoom_y * (-sin + torch.tan(shear) * cos)
    theta[:, 0, 2] = shift_x
    theta[:, 1, 0] = zoom_x * sin
    theta[:, 1, 1] = zoom_y * (cos + torch.tan(shear) * sin)
    theta[:, 1, 2] = shift_y
    return theta.to(device)


def random_affine(
    batch: torch.Tensor, settings: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    """Warp a float batch (B, C, H, W); border replication plays Keras' nearest fill."""
    theta = random_affine_matrices(batch.shape[0], settings, generator, batch.device)
    grid = F.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
