"""Small clean-versus-confounded image pairs for the report, made once when the audit runs.

The report is rendered from results.json alone, so the pictures travel inside it as base64 PNGs,
downscaled and without any case identifier. Which cohort they come from is the caller's choice:
the synthetic phantom by default, the user's own data only when the user asks for it (and then
only images whose DICOM BurnedInAnnotation is "NO"); this module never decides that.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from audit.confounders import Confounder, apply_confounder
from audit.data.cases import Cohort
from audit.resolve.confounders import ResolvedConfounder

MAX_SIDE = 128


def _png_base64(image: np.ndarray, max_side: int) -> str:
    """Encode a (H, W) uint8 image as a deterministic PNG (no text chunks, no timestamp)."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image), mode="L")
    side = max(picture.size)
    if side > max_side:
        scale = max_side / side
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BOX)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _difference(clean: np.ndarray, confounded: np.ndarray) -> tuple[np.ndarray, float]:
    """|confounded - clean| stretched to the full grey range, and the stretch factor used."""
    diff = np.abs(confounded.astype(np.int16) - clean.astype(np.int16))
    peak = int(diff.max())
    if peak == 0:
        return diff.astype(np.uint8), 1.0
    gain = 255.0 / peak
    return np.clip(np.rint(diff * gain), 0, 255).astype(np.uint8), gain


def _pick_index(cohort: Cohort, seed: int) -> int:
    """A negative case (the o.o.d. test set puts the artifact on negatives), chosen by the seed."""
    labels = cohort.labels
    candidates = np.flatnonzero(labels == 0)
    if candidates.size == 0:
        candidates = np.arange(len(labels))
    return int(np.random.default_rng([seed, 7]).choice(candidates))


def example_pair(
    conf: Confounder,
    params: Mapping[str, Any],
    image: np.ndarray,
    *,
    seed: int,
    image_id: int = 0,
    max_side: int = MAX_SIDE,
) -> dict[str, Any]:
    """One image without and with the confounder, at the cohort's resolution, then downscaled.

    Both versions use the same random stream (same seed and id), so they differ only by the
    artifact; "clean" is what every unconfounded image of the audit looks like (the confounder's
    baseline applied, e.g. the full-dose noise of the noise confounder).
    """
    pair = np.stack([image, image])
    out = apply_confounder(
        conf,
        pair,
        np.array([False, True]),
        seed=seed,
        params=params,
        ids=[image_id, image_id],
    )
    difference, gain = _difference(out[0], out[1])
    return {
        "clean": _png_base64(out[0], max_side),
        "confounded": _png_base64(out[1], max_side),
        "difference": _png_base64(difference, max_side),
        "difference_gain": round(gain, 3),
        "image_size": int(image.shape[0]),
        "shown_size": int(min(max_side, max(image.shape))),
        "seed": int(seed),
    }


def example_images(
    cohort: Cohort,
    confounders: Mapping[str, ResolvedConfounder],
    seed: int,
    *,
    max_side: int = MAX_SIDE,
) -> dict[str, dict[str, Any]]:
    """Confounder name -> example pair, for every pixel confounder (sampling ones have none).

    ``confounders`` is what ``audit.resolve.confounders.resolve_confounders`` returns. The entry records the
    cohort's source and whether it is synthetic, never a case id or a patient key.
    """
    if len(cohort.cases) == 0:
        return {}
    index = _pick_index(cohort, seed)
    examples = {}
    for name, resolved in confounders.items():
        if resolved.kind != "pixel":
            continue
        pair = example_pair(
            resolved.confounder,
            resolved.params,
            cohort.images[index],
            seed=seed,
            image_id=index,
            max_side=max_side,
        )
        pair["source"] = cohort.source
        pair["synthetic"] = bool(cohort.synthetic)
        examples[name] = pair
    return examples
