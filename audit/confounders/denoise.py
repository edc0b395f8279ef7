"""The denoising artifact: an ideal low-pass filter, as aggressive post-processing leaves behind.

The study kept the frequencies inside a centred disk of diameter 500 in the shifted 2-D spectrum
of a 1024x1024 image and zeroed the rest. The diameter is scaled by ``side / reference_side``,
which keeps the cut-off at the same fraction of the Nyquist frequency (about 0.49 of it) at any
resolution; images are expected square, and for a non-square one the shorter side sets the scale.

The uint8 result is rounded, where the study truncated: truncation would darken every filtered
image by half a grey level on average, a second, unintended cue beside the blur.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from audit.confounders.base import Confounder
from audit.errors import UsageError

DEFAULTS: Mapping[str, Any] = {"diameter": 500.0, "reference_side": 1024}


def lowpass_mask(shape: tuple[int, int], diameter_px: float) -> np.ndarray:
    """True where frequency index (ky, kx), centred as after fftshift, lies in the disk.

    Laid out like ``np.fft.fft2`` output (zero frequency at [0, 0]). The disk is symmetric under
    k -> -k, so filtering keeps a real image real.
    """
    height, width = shape
    ky = np.fft.fftfreq(height) * height
    kx = np.fft.fftfreq(width) * width
    return ky[:, None] ** 2 + kx[None, :] ** 2 <= (diameter_px / 2.0) ** 2


def lowpass(image: np.ndarray, diameter_px: float) -> np.ndarray:
    """The float stage: real part of the inverse FFT of the disk-masked spectrum, not clipped."""
    spectrum = np.fft.fft2(np.asarray(image, dtype=np.float64))
    return np.fft.ifft2(spectrum * lowpass_mask(spectrum.shape, diameter_px)).real


def scaled_diameter(shape: tuple[int, int], params: Mapping[str, Any]) -> float:
    """The disk diameter in frequency indices for an image of ``shape``."""
    return params["diameter"] * min(shape) / params["reference_side"]


def low_pass_filter(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Blur ``image`` with the ideal low-pass; ``rng`` is unused (the filter is deterministic)."""
    del rng
    filtered = lowpass(image, scaled_diameter(image.shape, params))
    return np.clip(np.rint(filtered), 0, 255).astype(np.uint8)


def check_params(params: Mapping[str, Any]) -> None:
    """A diameter <= 0 would erase the image, not blur it."""
    if params["diameter"] <= 0:
        raise UsageError(f"diameter={params['diameter']!r} for confounder 'denoise'; expected > 0")
    if params["reference_side"] < 1:
        raise UsageError(
            f"reference_side={params['reference_side']!r} for confounder 'denoise'; expected >= 1"
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
