"""Fit a backbone to the audit's input size, for the architectures that fix one.

Convolutional backbones pool whatever size they are given. A Vision Transformer does not: its
position embeddings are learned for one grid of patches (14 x 14 for ViT-B/16 at 224 px), and
torchvision's refuses any other image side. Fine-tuning at another size interpolates the grid
of embeddings (bicubic, the class token's kept as is), the usual way to move a pretrained ViT to
a new resolution; the side must be a whole number of patches.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from audit.errors import UsageError
from audit.models.architectures import Backbone


def _fixed_size_vit(backbone: Backbone):  # noqa: ANN202 - a torchvision VisionTransformer or None
    from torchvision.models import VisionTransformer

    return backbone.module if isinstance(backbone.module, VisionTransformer) else None


def check_input_size(backbone: Backbone, size: int) -> None:
    """A one-line error when the backbone cannot be fitted to ``size`` (before any image loads)."""
    module = _fixed_size_vit(backbone)
    if module is None or size % module.patch_size == 0:
        return
    patch = module.patch_size
    low, high = (size // patch) * patch, (size // patch + 1) * patch
    nearest = f"{low} or {high}" if low else str(high)
    raise UsageError(
        f"{backbone.arch} cuts images into {patch}-pixel patches: `input_size` {size} is not a "
        f"whole number of them; use e.g. {nearest}"
    )


def fit_input_size(backbone: Backbone, size: int) -> Backbone:
    """The backbone itself when it takes any size; else a copy fitted to ``size`` pixels."""
    module = _fixed_size_vit(backbone)
    if module is None or module.image_size == size:
        return backbone
    check_input_size(backbone, size)
    patch = module.patch_size
    fitted = copy.deepcopy(module)
    embedding = fitted.encoder.pos_embedding.data
    grid = _interpolated_grid(embedding, size // patch)
    fitted.encoder.pos_embedding = nn.Parameter(grid)
    fitted.image_size = size
    fitted.seq_length = grid.shape[1]
    return Backbone(fitted, backbone.feature_dim, backbone.arch)


def _interpolated_grid(embedding: torch.Tensor, side: int) -> torch.Tensor:
    """(1, 1 + g*g, D) position embeddings to (1, 1 + side*side, D), the class token unchanged."""
    cls, patches = embedding[:, :1], embedding[:, 1:]
    old = math.isqrt(patches.shape[1])
    dim = patches.shape[-1]
    square = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=(side, side), mode="bicubic", align_corners=False)
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(1, side * side, dim)], dim=1)
