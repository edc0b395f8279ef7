"""The demo's two pretrained backbones, built on the spot from synthetic data.

``natural``: pretrained on procedural textures (stands in for ImageNet).
``medical``: pretrained on phantom radiographs and CT slices (stands in for RadImageNet).
Both are cached by the hash of their recipe, so a second demo starts at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.common.atomic import atomic_write_bytes
from audit.common.hashing import content_hash
from audit.models.architectures import Backbone, create_backbone
from audit.resolve.settings import TrainSettings
from audit.train.augment import random_affine
from audit.train.tensors import normalise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines a stand-in's weights."""

    kind: str  # "natural" or "medical"
    arch: str = "tiny-resnet"
    n_images: int = 2400
    image_size: int = 64
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 1234
    data_version: str = "phantom-1+textures-1"  # bump when a generator changes: new cache key

    @property
    def key(self) -> str:
        return content_hash(self)


def _medical_pretraining_set(recipe: PretrainRecipe) -> tuple[np.ndarray, np.ndarray]:
    """Phantom CXR and CT images from patients disjoint from any audit cohort (own seed).

    Classes: modality x finding, like RadImageNet's modality/anatomy/pathology labels.
    """
    from audit.data.synthetic import PhantomSettings, make_phantom_cohort

    parts, labels = [], []
    for offset, modality in enumerate(("cxr", "ct")):
        cohort = make_phantom_cohort(
            PhantomSettings(
                modality=modality,
                n_patients=recipe.n_images // 4,
                images_per_patient=(2, 2),
                image_size=recipe.image_size,
                prevalence=0.5,
                seed=recipe.seed + 7919 + offset,
            )
        )
        parts.append(cohort.images)
        labels.append(2 * offset + cohort.labels)
    return np.concatenate(parts), np.concatenate(labels)


def _pretraining_set(recipe: PretrainRecipe) -> tuple[np.ndarray, np.ndarray]:
    if recipe.kind == "natural":
        from audit.demo.textures import texture_dataset

        return texture_dataset(recipe.n_images, recipe.image_size, recipe.seed)
    return _medical_pretraining_set(recipe)


def pretrain(recipe: PretrainRecipe) -> Backbone:
    """Supervised pretraining with the audit's augmentation; returns the backbone only."""
    images, labels = _pretraining_set(recipe)
    torch.manual_seed(recipe.seed)
    backbone = create_backbone(recipe.arch)
    n_classes = int(labels.max()) + 1
    model = nn.Sequential(backbone.module, nn.Linear(backbone.feature_dim, n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(recipe.seed)
    augment = TrainSettings()
    model.train()
    for _ in range(recipe.epochs):
        for idx in torch.randperm(len(x_all), generator=generator).split(recipe.batch_size):
            if len(idx) < 2:
                continue
            x = random_affine(normalise(x_all[idx], "imagenet"), augment, generator)
            loss = F.cross_entropy(model(x), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return backbone


def load_or_pretrain(recipe: PretrainRecipe, cache_dir: Path) -> Backbone:
    """Cached weights when present (loaded with weights_only), else pretrain and cache."""
    path = Path(cache_dir) / "standins" / f"{recipe.kind}-{recipe.key}.pt"
    backbone = create_backbone(recipe.arch)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            backbone.module.load_state_dict(state)
            return backbone
        except (RuntimeError, OSError, ValueError):
            log.warning("ignoring a damaged cached stand-in; pretraining it again")
    log.info("pretraining the %s stand-in backbone (once; cached afterwards)", recipe.kind)
    backbone = pretrain(recipe)
    import io

    buffer = io.BytesIO()
    torch.save(backbone.module.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return backbone
