"""The denoising artifact: an ideal low-pass filter, as aggressive post-processing leaves behind.

The study kept the frequencies inside a centred disk of diameter 500 in the shifted 2-D spectrum
of a 1024x1024 image and zeroed the rest. The diameter is scaled by ``side / reference_side``,
which keeps the cut-off at the same fraction of the Nyquist frequency (about 0.49 of it) at any
resolution; images are expected square, and for a non-square one the shorter side sets the scale.

The uint8 result is rounded, where the study truncated: truncation would darken every filtered
image by half a grey level on average, a second, unintended cue beside the blur.

Study-exact options (``OPTIONS``, each defaulting to the behaviour above; ``STUDY_EXACT`` holds the
study's values):

* ``mask``: ``"disk"`` (the default: frequency (ky, kx) kept when ky**2 + kx**2 <= (d/2)**2) or
  ``"ellipse"``: the study's mask, a PIL ``ellipse`` drawn with fill 1 in the box of side d centred
  on the fftshifted spectrum (``(262, 262, 762, 762)`` at 1024 px), rasterised by Pillow itself.
  At 1024 px it keeps 197,045 bins where the disk keeps 196,321: the 724 extra bins are a
  one-bin ring on the disk's edge. At other sides the box has fractional corners and the drawn
  ellipse need not be symmetric under k -> -k; the real part is taken, as the study did.
* ``rounding``: ``"round"`` (the default) or ``"truncate"``: the study's ``astype(uint8)`` after
  clipping, 0.5 grey levels darker on average.

They are not in ``DEFAULTS`` yet: a declared parameter is recorded in results.json and enters
every run key, so declaring them changes the golden results. :func:`with_options` is the
confounder with them declared (and preset ``study-exact``); merging ``OPTIONS`` into ``DEFAULTS``
is the one change that makes them ``--param`` settable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from audit.confounders.base import Confounder
from audit.errors import UsageError

DEFAULTS: Mapping[str, Any] = {"diameter": 500.0, "reference_side": 1024}
MASKS = ("disk", "ellipse")
ROUNDINGS = ("round", "truncate")
OPTIONS: Mapping[str, Any] = {"mask": "disk", "rounding": "round"}  # defaults: today's behaviour
STUDY_EXACT: Mapping[str, Any] = {"mask": "ellipse", "rounding": "truncate"}


def lowpass_mask(shape: tuple[int, int], diameter_px: float, mask: str = "disk") -> np.ndarray:
    """True where frequency index (ky, kx), centred as after fftshift, is kept.

    Laid out like ``np.fft.fft2`` output (zero frequency at [0, 0]). ``mask="disk"``: the disk
    ky**2 + kx**2 <= (d/2)**2, symmetric under k -> -k, so filtering keeps a real image real.
    ``mask="ellipse"``: the study's PIL ellipse (see the module docstring).
    """
    if mask == "ellipse":
        return np.fft.ifftshift(ellipse_mask_shifted(shape, diameter_px))
    if mask != "disk":
        raise ValueError(f"mask={mask!r}; expected one of {', '.join(MASKS)}")
    height, width = shape
    ky = np.fft.fftfreq(height) * height
    kx = np.fft.fftfreq(width) * width
    return ky[:, None] ** 2 + kx[None, :] ** 2 <= (diameter_px / 2.0) ** 2


def ellipse_mask_shifted(shape: tuple[int, int], diameter_px: float) -> np.ndarray:
    """The study's mask as drawn, in the fftshifted layout (zero frequency at the centre).

    Pillow fills ``ellipse((w/2 - d/2, h/2 - d/2, w/2 + d/2, h/2 + d/2))`` on a black image of the
    spectrum's size: at 1024 px and d = 500 the box (262, 262, 762, 762).
    """
    height, width = shape
    half = diameter_px / 2.0
    box = (width / 2.0 - half, height / 2.0 - half, width / 2.0 + half, height / 2.0 + half)
    canvas = Image.new("L", (width, height), color=0)
    ImageDraw.Draw(canvas).ellipse(box, fill=1)
    return np.asarray(canvas, dtype=bool)


def lowpass(image: np.ndarray, diameter_px: float, mask: str = "disk") -> np.ndarray:
    """The float stage: real part of the inverse FFT of the masked spectrum, not clipped."""
    spectrum = np.fft.fft2(np.asarray(image, dtype=np.float64))
    return np.fft.ifft2(spectrum * lowpass_mask(spectrum.shape, diameter_px, mask)).real


def scaled_diameter(shape: tuple[int, int], params: Mapping[str, Any]) -> float:
    """The disk diameter in frequency indices for an image of ``shape``."""
    return params["diameter"] * min(shape) / params["reference_side"]


def low_pass_filter(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Blur ``image`` with the ideal low-pass; ``rng`` is unused (the filter is deterministic)."""
    del rng
    mask = params.get("mask", OPTIONS["mask"])
    filtered = np.clip(lowpass(image, scaled_diameter(image.shape, params), mask), 0, 255)
    if params.get("rounding", OPTIONS["rounding"]) == "truncate":
        return filtered.astype(np.uint8)  # the study: clip, then astype (towards zero)
    return np.rint(filtered).astype(np.uint8)


def check_params(params: Mapping[str, Any]) -> None:
    """A diameter <= 0 would erase the image, not blur it."""
    if params["diameter"] <= 0:
        raise UsageError(f"diameter={params['diameter']!r} for confounder 'denoise'; expected > 0")
    if params["reference_side"] < 1:
        raise UsageError(
            f"reference_side={params['reference_side']!r} for confounder 'denoise'; expected >= 1"
        )
    for key, accepted in (("mask", MASKS), ("rounding", ROUNDINGS)):
        value = params.get(key, OPTIONS[key])
        if value not in accepted:
            raise UsageError(
                f"{key}={value!r} for confounder 'denoise'; expected one of {', '.join(accepted)}"
            )


DENOISE = Confounder(
    name="denoise",
    category="processing",
    description=(
        "An ideal low-pass filter removes fine detail, as heavy denoising does; a model can "
        "learn the missing high frequencies instead of the disease."
    ),
    kind="pixel",
    defaults=DEFAULTS,
    apply=low_pass_filter,
    check=check_params,
)


def with_options() -> Confounder:
    """``DENOISE`` with ``OPTIONS`` declared as parameters and preset ``study-exact``.

    A zero-argument factory, so it also loads as a plugin (``audit.confounders.denoise:
    with_options``); its parameters differ from ``DENOISE``'s, so its runs have keys of their own.
    """
    return dataclasses.replace(
        DENOISE,
        defaults={**DEFAULTS, **OPTIONS},
        presets={**DENOISE.presets, "study-exact": STUDY_EXACT},
    )
