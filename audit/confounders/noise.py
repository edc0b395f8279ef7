"""Low-dose noise: every image gets a simulated full-dose exposure, confounded ones a lower dose.

The study's recipe, per image: add U(0, 1) grey-level dither, map grey [0, 255] linearly onto an HU
window, convert to attenuation mu, draw Poisson photon counts with mean exp(-mu) * N0, take
-log(counts / N0) (floored at 1e-8), convert back to HU, clip to the window and back to grey.
All images get N0 = 2e7 (``baseline``) and confounded ones N0 = 1.5e7 (``apply``), so the only
difference between the groups is a noise level about 15 % higher in standard deviation.

Choices made here:

* Resolution. The study resized to 512x512 first (and kept that size). medaudit's cohort images are
  resized once, when cached, so the noise is applied at the working resolution as given
  (``work_size=None``). Noise per pixel depends on pixel size, so an int ``work_size`` reproduces
  the study's grain: resize to that square (PIL bilinear), add noise, resize back.
* Quantisation. The result is truncated to uint8, as in the study: with U(0, 1) dither, truncation
  is unbiased, whereas rounding would brighten every image by half a grey level.
* Windows. Preset ``cxr`` is the study's [-1200, 800]. Preset ``ct`` is [-1000, 400] (air to
  dense soft tissue, which covers lung nodules); it must match the window the CT source used to
  write its slices, so that grey levels map back to the HU they came from.
* Clean test set. ``apply_confounder`` gives ``baseline`` to every image not marked confounded,
  and the clean test set marks none, so medaudit's clean set for noise carries the full dose
  (N0 = 2e7) like every unconfounded training image. The study's clean set is the original images
  with no noise at all. This module cannot tell the sets apart (its functions see one image),
  so matching the study is a change where test sets are built (``audit/run/cells.py``), not a
  parameter here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from audit.confounders.base import Confounder
from audit.errors import UsageError

MU_WATER = 0.1837
MU_AIR = 0.1662
MIN_TRANSMISSION = 1e-8

DEFAULTS: Mapping[str, Any] = {
    "full_dose": 2e7,
    "low_dose": 1.5e7,
    "hu_min": -1200.0,
    "hu_max": 800.0,
    "work_size": None,
}
PRESETS = {
    "cxr": {"hu_min": -1200.0, "hu_max": 800.0},
    "ct": {"hu_min": -1000.0, "hu_max": 400.0},
}


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    return hu * (MU_WATER - MU_AIR) / 1000.0 + MU_WATER


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    return (mu - MU_WATER) * 1000.0 / (MU_WATER - MU_AIR)


def simulate_dose(hu: np.ndarray, n0: float, rng: np.random.Generator) -> np.ndarray:
    """HU after a Poisson-limited exposure of ``n0`` photons per pixel; not clipped.

    For a constant image, Var(HU) ~= (1000 / (MU_WATER - MU_AIR))**2 / (exp(-mu) * n0): the
    variance is inversely proportional to the dose, which is what the tests check.
    """
    expected = np.exp(-hu_to_mu(np.asarray(hu, dtype=np.float64))) * n0
    transmission = np.maximum(rng.poisson(expected) / n0, MIN_TRANSMISSION)
    return mu_to_hu(-np.log(transmission))


def noisy_grey(
    image: np.ndarray, rng: np.random.Generator, n0: float, window: tuple[float, float]
) -> np.ndarray:
    """The float stage of the recipe: dithered grey -> HU -> exposure -> HU -> grey in [0, 255]."""
    hu_min, hu_max = window
    grey = np.asarray(image, dtype=np.float64) + rng.uniform(0.0, 1.0, size=np.shape(image))
    hu = simulate_dose(grey / 255.0 * (hu_max - hu_min) + hu_min, n0, rng)
    return (np.clip(hu, hu_min, hu_max) - hu_min) / (hu_max - hu_min) * 255.0


def dose_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    n0: float,
    window: tuple[float, float],
    work_size: int | None,
) -> np.ndarray:
    """Add dose noise at ``work_size`` (None: as given) and return uint8 at the input's size."""
    if work_size is None:
        grey = noisy_grey(image, rng, n0, window)
    else:
        small = Image.fromarray(np.ascontiguousarray(image)).resize(
            (work_size, work_size), Image.Resampling.BILINEAR
        )
        noisy = Image.fromarray(noisy_grey(np.asarray(small), rng, n0, window).astype(np.float32))
        height, width = image.shape
        grey = np.asarray(noisy.resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(np.floor(grey), 0, 255).astype(np.uint8)


def full_dose(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """The baseline every non-confounded image gets, so the groups differ only in dose."""
    return dose_noise(image, rng, params["full_dose"], _window(params), params["work_size"])


def low_dose(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """The artifact: the same exposure with fewer photons, hence more noise."""
    return dose_noise(image, rng, params["low_dose"], _window(params), params["work_size"])


def _window(params: Mapping[str, Any]) -> tuple[float, float]:
    return params["hu_min"], params["hu_max"]


def check_params(params: Mapping[str, Any]) -> None:
    """Fail before any image is touched on values the physics cannot take."""
    for key in ("full_dose", "low_dose"):
        if not params[key] > 0:
            raise UsageError(f"{key}={params[key]!r} for confounder 'noise'; expected > 0 photons")
    if not params["hu_min"] < params["hu_max"]:
        raise UsageError(
            f"hu_min={params['hu_min']!r}, hu_max={params['hu_max']!r} for confounder 'noise'; "
            "expected hu_min < hu_max"
        )
    size = params["work_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise UsageError(f"work_size={size!r} for confounder 'noise'; expected None or an int >= 8")


NOISE = Confounder(
    name="noise",
    category="acquisition",
    description=(
        "Simulated Poisson photon noise: every image gets a full-dose exposure and confounded "
        "images a 25 % lower dose, a subtle noise-level shortcut."
    ),
    kind="pixel",
    defaults=DEFAULTS,
    apply=low_dose,
    baseline=full_dose,
    presets=PRESETS,
    check=check_params,
)
