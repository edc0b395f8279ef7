"""Natural-image-like procedural textures: the demo's stand-in for ImageNet.

Dead-leaves images (occluding discs and boxes of random grey, the classic model of natural image
statistics), oriented gratings, checkerboards and strokes. No letters, glyphs or frequency-filtered
content, so a model pretrained on them has never seen the tag or the denoise artifact.
"""

from __future__ import annotations

import numpy as np

TEXTURE_CLASSES = ("leaves-discs", "leaves-boxes", "grating", "checker", "strokes", "blobs")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(size, dtype=np.float32)
    return np.meshgrid(axis, axis, indexing="xy")


def _dead_leaves(rng: np.random.Generator, size: int, boxes: bool) -> np.ndarray:
    xx, yy = _grid(size)
    image = np.full((size, size), rng.uniform(0, 255), dtype=np.float32)
    for _ in range(rng.integers(30, 60)):
        cx, cy = rng.uniform(0, size, 2)
        radius = size * rng.pareto(2.0) * 0.05 + 1.5
        if boxes:
            mask = (np.abs(xx - cx) < radius) & (np.abs(yy - cy) < radius * rng.uniform(0.5, 2))
        else:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        image[mask] = rng.uniform(0, 255)
    return image


def _grating(rng: np.random.Generator, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, size / 3)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    return 128 + rng.uniform(40, 120) * wave


def _checker(rng: np.random.Generator, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    cell = rng.uniform(3, size / 4)
    pattern = (
        np.floor((xx + rng.uniform(0, cell)) / cell) + np.floor((yy + rng.uniform(0, cell)) / cell)
    ) % 2
    low, high = np.sort(rng.uniform(0, 255, 2))
    return low + (high - low) * pattern


def _strokes(rng: np.random.Generator, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    image = np.full((size, size), rng.uniform(60, 200), dtype=np.float32)
    for _ in range(rng.integers(5, 15)):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-size / 2, size / 2)
        distance = np.abs(
            (xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle) - offset
        )
        image[distance < rng.uniform(0.7, 2.5)] = rng.choice([0.0, 255.0])
    return image


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    image = np.zeros((size, size), dtype=np.float32)
    for _ in range(rng.integers(3, 9)):
        cx, cy = rng.uniform(0, size, 2)
        sigma = rng.uniform(size / 20, size / 5)
        image += rng.uniform(-1, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return 128 + 100 * image / max(1e-6, float(np.abs(image).max()))


def render_texture(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One grey texture of class ``label`` (index into TEXTURE_CLASSES) as uint8."""
    name = TEXTURE_CLASSES[label]
    if name.startswith("leaves"):
        image = _dead_leaves(rng, size, boxes=name == "leaves-boxes")
    else:
        image = {"grating": _grating, "checker": _checker, "strokes": _strokes, "blobs": _blobs}[
            name
        ](rng, size)
    grain = rng.normal(0, rng.uniform(0, 8), (size, size))
    return np.clip(image + grain, 0, 255).astype(np.uint8)


def texture_dataset(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` textures with balanced class labels, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(TEXTURE_CLASSES)
    rng.shuffle(labels)
    images = np.stack([render_texture(rng, int(lbl), size) for lbl in labels])
    return images, labels
