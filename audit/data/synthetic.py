"""The built-in phantom data set: synthetic chest radiographs and CT slices with a known finding.

Why phantoms: ``medaudit demo`` must show the whole pipeline on a laptop with no download and no
patient data, and tests need images whose ground truth is known exactly. The pictures imitate the
*look* of real ones (anatomy, vascular texture, ribs, noise) well enough that a small CNN has a
finding to learn and a confounder has something to compete with; they are illustrative only, and
every output made from them says so (``Cohort.synthetic``).

Choices that later stages rely on:

- **Labels are per patient.** A positive patient's finding sits at the same anatomical place in
  every one of their images (follow-up films, neighbouring CT slices), so a split that leaks a
  patient across train and test is rewarded, as with real data, and patient-level splitting
  matters. Positive patients are chosen separately within each sex so that the image-level
  positive rate is close to ``prevalence`` and about equal for both sexes: the sex confounder is
  made later, by sampling, and must not be baked in here.
- **Sex changes anatomy a little** (lung and heart size, breast shadows on radiographs, body
  outline on CT): learnable, not trivial.
- **Randomness is layered**: one generator for the patient table, one per patient for anatomy and
  finding, one per image for pose, exposure and noise, each seeded from ``(seed, role, index...)``.
  The same settings give byte-identical images, and a patient's anatomy does not depend on how
  many images other patients have.
- **No glyphs.** Nothing here draws text or markers: the "tag" confounder adds a letter later and
  must be the only one in the picture.
- **Coordinates** are normalised to [-1, 1] across the image (x to the right, y downwards), so a
  cohort looks the same at 64 or 256 pixels. Radiological convention: the patient's left is on the
  image's right, so the heart shadow sits right of centre.

CT slices are built in Hounsfield units and windowed to uint8 with ``CT_WINDOW_HU`` (a lung window,
-1000 HU -> 0, +400 HU -> 255): lungs dark, soft tissue mid-grey, bone white.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter

from audit.constants import MODALITIES
from audit.data.cases import SEXES, Case, Cohort
from audit.data.source import DataSource
from audit.errors import UsageError

if TYPE_CHECKING:
    from audit.resolve.data import DataChoice

CT_WINDOW_HU = (-1000.0, 400.0)
"""Lung window used to turn CT slices into uint8: HU below -1000 -> 0, above +400 -> 255."""

_HU_AIR = -1000.0
_HU_LUNG = -850.0
_HU_FAT = -100.0
_HU_SOFT = 40.0
_HU_CANCELLOUS = 250.0
_HU_CORTEX = 700.0
_HU_TABLE = 150.0


@dataclass(frozen=True)
class PhantomSettings:
    """What the phantom cohort looks like; the defaults are the ``medaudit demo`` data set.

    ``images_per_patient`` is an inclusive range drawn per patient; ``prevalence`` is the target
    fraction of *images* that show the finding (labels are assigned per patient, see the module
    docstring).
    """

    modality: str = "cxr"
    n_patients: int = 300
    images_per_patient: tuple[int, int] = (1, 3)
    image_size: int = 64
    prevalence: float = 0.35
    seed: int = 0
    lesion_contrast: float = 1.0  # CXR: multiplies every lesion's strength (the demo's knob)

    def __post_init__(self) -> None:
        _check(self.modality in MODALITIES, "modality", self.modality, f"one of {MODALITIES}")
        _check(
            _is_int(self.n_patients) and self.n_patients >= 2,
            "n_patients",
            self.n_patients,
            "an integer >= 2",
        )
        lo_hi = self.images_per_patient
        _check(
            isinstance(lo_hi, tuple | list)
            and len(lo_hi) == 2
            and all(_is_int(v) for v in lo_hi)
            and 1 <= lo_hi[0] <= lo_hi[1],
            "images_per_patient",
            lo_hi,
            "a pair (low, high) of integers with 1 <= low <= high",
        )
        object.__setattr__(self, "images_per_patient", tuple(int(v) for v in lo_hi))
        _check(
            isinstance(self.lesion_contrast, int | float) and 0 < self.lesion_contrast <= 4,
            "lesion_contrast",
            self.lesion_contrast,
            "a number in (0, 4]",
        )
        _check(
            _is_int(self.image_size) and 16 <= self.image_size <= 2048,
            "image_size",
            self.image_size,
            "an integer between 16 and 2048",
        )
        _check(
            isinstance(self.prevalence, float | int | np.floating) and 0.0 < self.prevalence < 1.0,
            "prevalence",
            self.prevalence,
            "a fraction strictly between 0 and 1",
        )
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: object, accepted: str) -> None:
    if not ok:
        raise UsageError(f"phantom setting {name}={value!r} is not accepted: use {accepted}")


# --------------------------------------------------------------------------------------------
# The cohort


@dataclass(frozen=True)
class _Patient:
    index: int
    sex: str
    age: float
    n_images: int
    positive: bool


def make_phantom_cohort(settings: PhantomSettings) -> Cohort:
    """Draw patients, their anatomy and finding, and render every image of the cohort."""
    patients = _draw_patients(settings)
    n_images = sum(p.n_images for p in patients)
    size = settings.image_size
    images = np.empty((n_images, size, size), dtype=np.uint8)
    cases: list[Case] = []
    view = "PA" if settings.modality == "cxr" else "axial"
    for patient in patients:
        anatomy_rng = np.random.default_rng([settings.seed, 1, patient.index])
        render = _patient_renderer(
            settings.modality, anatomy_rng, patient, settings.lesion_contrast
        )
        for k in range(patient.n_images):
            image_rng = np.random.default_rng([settings.seed, 2, patient.index, k])
            images[len(cases)] = render(image_rng, size)
            cases.append(
                Case(
                    case_id=f"C{len(cases) + 1:06d}",
                    label=int(patient.positive),
                    patient_key=f"P{patient.index + 1:05d}",
                    sex=patient.sex,
                    view=view,
                    modality=settings.modality,
                    age=patient.age,
                )
            )
    return Cohort(
        cases=tuple(cases),
        images=images,
        source="synthetic",
        modality=settings.modality,
        synthetic=True,
        description=_describe(settings, len(patients), cases),
    )


def _patient_renderer(
    modality: str, rng: np.random.Generator, patient: _Patient, lesion_contrast: float = 1.0
) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Fix one patient's anatomy and finding; return a function that renders one image of them."""
    if modality == "cxr":
        cxr = draw_cxr_anatomy(rng, patient.sex)
        cxr_lesion = draw_cxr_lesion(rng, cxr) if patient.positive else None
        if cxr_lesion is not None and lesion_contrast != 1.0:
            cxr_lesion = replace(cxr_lesion, strength=cxr_lesion.strength * lesion_contrast)
        return lambda image_rng, size: render_cxr(
            image_rng,
            size=size,
            sex=patient.sex,
            finding=patient.positive,
            anatomy=cxr,
            lesion=cxr_lesion,
        )
    ct = draw_ct_anatomy(rng, patient.sex)
    ct_lesion = draw_ct_lesion(rng, ct) if patient.positive else None
    return lambda image_rng, size: render_ct_slice(
        image_rng,
        size=size,
        finding=patient.positive,
        sex=patient.sex,
        anatomy=ct,
        lesion=ct_lesion,
    )


def _draw_patients(settings: PhantomSettings) -> list[_Patient]:
    """The patient table: sex exactly balanced, plausible ages, image counts, per-patient labels."""
    rng = np.random.default_rng([settings.seed, 0])
    n = settings.n_patients
    sexes = rng.permutation([SEXES[i % 2] for i in range(n)])
    ages = np.clip(np.round(rng.normal(58.0, 15.0, n)), 18, 95)
    low, high = settings.images_per_patient
    counts = rng.integers(low, high + 1, n)
    positive = np.zeros(n, dtype=bool)
    for sex in SEXES:
        members = rng.permutation(np.flatnonzero(sexes == sex))
        positive[_pick_to_target(members, counts, settings.prevalence)] = True
    return [
        _Patient(i, str(sexes[i]), float(ages[i]), int(counts[i]), bool(positive[i]))
        for i in range(n)
    ]


def _pick_to_target(members: np.ndarray, counts: np.ndarray, prevalence: float) -> list[int]:
    """Walk the shuffled patients and keep each one that brings the image count nearer target."""
    target = prevalence * counts[members].sum()
    chosen: list[int] = []
    total = 0
    for m in members:
        if abs(total + counts[m] - target) < abs(total - target):
            chosen.append(int(m))
            total += int(counts[m])
    return chosen


def _describe(settings: PhantomSettings, n_patients: int, cases: list[Case]) -> str:
    kind = "chest radiographs" if settings.modality == "cxr" else "axial CT slices"
    n_pos = sum(c.label for c in cases)
    return (
        f"illustrative: synthetic data. {len(cases)} phantom {kind} of {n_patients} simulated "
        f"patients ({n_pos} with a finding), {settings.image_size} px, seed {settings.seed}; "
        "not patient data, and no verdict on it belongs in a regulatory file."
    )


# --------------------------------------------------------------------------------------------
# Shared geometry


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: several times faster than scipy's expit on float32 arrays."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _grid(size: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis, normalised to [-1, 1]."""
    return ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Pose:
    """Where the patient sits in this image: anatomy (u, v) = R(-angle) (x - dx, y - dy) / scale."""

    dx: float
    dy: float
    angle: float
    scale: float

    def frame(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy coordinates of every pixel, so shapes can be written once in the body's frame."""
        c = _grid(size)
        x, y = c[None, :] - self.dx, c[:, None] - self.dy
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u = (cos * x + sin * y) / self.scale
        v = (-sin * x + cos * y) / self.scale
        return u.astype(np.float32), v.astype(np.float32)

    def to_image(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates of anatomy points (the inverse of ``frame``), for blob centres."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x = self.scale * (cos * u - sin * v) + self.dx
        y = self.scale * (sin * u + cos * v) + self.dy
        return x, y


def _soft_ellipse(
    u: np.ndarray,
    v: np.ndarray,
    cu: float,
    cv: float,
    a: float,
    b: float,
    edge: float,
    angle: float = 0.0,
    power: float = 2.0,
) -> np.ndarray:
    """A (super-)ellipse with a smooth rim of width ``edge``, so shapes never alias at 64 px."""
    du, dv = u - cu, v - cv
    if angle:
        cos, sin = math.cos(angle), math.sin(angle)
        du, dv = cos * du + sin * dv, -sin * du + cos * dv
    x2, y2 = (du * (1.0 / a)) ** 2, (dv * (1.0 / b)) ** 2
    if power == 2.0:
        r = np.sqrt(x2 + y2)
    elif power == 4.0:
        r = np.sqrt(np.sqrt(x2 * x2 + y2 * y2))
    else:
        r = (x2 ** (power / 2) + y2 ** (power / 2)) ** (1.0 / power)
    return _sigmoid((1.0 - r) * (min(a, b) / edge))


def _blobs(
    size: int, pose: _Pose, cu: ArrayLike, cv: ArrayLike, sigma: ArrayLike, amp: ArrayLike
) -> np.ndarray:
    """Sum of isotropic Gaussians (vessels), each keeping its integral: cheap for many blobs.

    Blobs are splatted onto the pixel grid and blurred, one blur per width class (widths
    quantised in steps of about 20 %). Widths are floored at half a pixel, so a vessel thinner than
    a pixel fades (partial volume) instead of vanishing between pixel centres.
    """
    out = np.zeros((size, size), np.float32)
    if len(cu) == 0:
        return out
    x, y = pose.to_image(np.asarray(cu, np.float64), np.asarray(cv, np.float64))
    px = (x + 1.0) * (size / 2.0) - 0.5
    py = (y + 1.0) * (size / 2.0) - 0.5
    s_px = np.asarray(sigma) * pose.scale * (size / 2.0)
    weight = np.asarray(amp) * 2.0 * np.pi * s_px**2
    width_class = np.rint(np.log(np.maximum(s_px, 0.5)) / np.log(1.2)).astype(int)
    # Widest class first; each step blurs what is there by the extra width that the next class
    # down needs (Gaussian widths add in quadrature), so no class pays for a wide kernel alone.
    classes = np.unique(width_class)[::-1]
    for i, c in enumerate(classes):
        members = width_class == c
        width = 1.2 ** float(c)
        out += _splat(size, px[members], py[members], weight[members])
        narrower = 1.2 ** float(classes[i + 1]) if i + 1 < len(classes) else 0.0
        out = gaussian_filter(out, math.sqrt(width**2 - narrower**2))
    return out


def _splat(size: int, px: np.ndarray, py: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Bilinear deposit of point weights onto a pixel grid (points off the grid are dropped)."""
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    flat = np.zeros(size * size + 1, np.float64)  # the extra cell collects off-grid deposits
    for dx, dy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        index = np.where(inside, yi * size + xi, size * size)
        flat += np.bincount(index, weights=weight * w, minlength=size * size + 1)
    return flat[:-1].reshape(size, size).astype(np.float32)


def _point_in_unit_disk(rng: np.random.Generator, radius: float) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * np.pi)
    r = radius * np.sqrt(rng.uniform())
    return float(r * np.cos(angle)), float(r * np.sin(angle))


def _lesion_profile(
    u: np.ndarray,
    v: np.ndarray,
    cu: float,
    cv: float,
    radius: float,
    aspect: float,
    angle: float,
    sharpness: float,
) -> np.ndarray:
    """Super-Gaussian blob: sharpness 2 is a fuzzy opacity, 6 a well-defined nodule."""
    du, dv = u - cu, v - cv
    cos, sin = math.cos(angle), math.sin(angle)
    p = (cos * du + sin * dv) / (radius * aspect)
    q = (-sin * du + cos * dv) * aspect / radius
    return np.exp(-((p * p + q * q) ** (sharpness / 2.0)))


# --------------------------------------------------------------------------------------------
# Chest radiograph


@dataclass(frozen=True)
class CxrAnatomy:
    """One patient's chest, in normalised coordinates; it stays fixed across their images."""

    sex: str
    lung_half_width: float
    lung_half_height: float
    lung_gap: float
    lung_centre_y: float
    dome_height: float
    right_dome_raise: float
    heart_half_width: float
    heart_half_height: float
    heart_x: float
    body_half_width: float
    rotation: float
    density: float
    rib_spacing: float
    rib_phase: float
    breast: float
    vessel_seed: int


@dataclass(frozen=True)
class Lesion:
    """A finding, placed in its lung's own frame (the unit disk spans the lung) so it moves with it.

    ``side`` is -1 for the lung on the image's left, +1 for the one on the right. ``strength`` is
    a brightness step for radiographs and a density in HU for CT.
    """

    side: int
    u: float
    v: float
    radius: float
    strength: float
    sharpness: float
    aspect: float
    angle: float


def draw_cxr_anatomy(rng: np.random.Generator, sex: str) -> CxrAnatomy:
    """A plausible chest; females slightly smaller lungs and heart and carry breast shadows."""
    f = sex == "F"
    size = (0.96 if f else 1.0) * rng.normal(1.0, 0.05)
    return CxrAnatomy(
        sex=sex,
        lung_half_width=0.31 * size * rng.normal(1.0, 0.04),
        lung_half_height=0.67 * size * rng.normal(1.0, 0.04),
        lung_gap=0.38 * size * rng.normal(1.0, 0.03),
        lung_centre_y=rng.normal(-0.1, 0.04),
        dome_height=rng.uniform(0.08, 0.16),
        right_dome_raise=rng.uniform(0.0, 0.07),
        heart_half_width=0.32 * (0.96 if f else 1.0) * rng.normal(1.0, 0.07),
        heart_half_height=0.25 * (0.96 if f else 1.0) * rng.normal(1.0, 0.07),
        heart_x=rng.normal(0.1, 0.025),
        body_half_width=(0.86 if f else 0.88) * rng.normal(1.0, 0.03),
        rotation=rng.normal(0.0, np.deg2rad(2.0)),
        density=rng.normal(0.0, 0.04),
        rib_spacing=rng.uniform(0.15, 0.19),
        rib_phase=rng.uniform(0.0, 1.0),
        breast=rng.uniform(0.0, 0.07) if f else 0.0,
        vessel_seed=int(rng.integers(2**31)),
    )


def _cxr_dome(anatomy: CxrAnatomy, side: int, u: np.ndarray) -> np.ndarray:
    """Height of one hemidiaphragm at each column: a dome, the right one (image left) higher."""
    cu = side * anatomy.lung_gap
    base = anatomy.lung_centre_y + 0.8 * anatomy.lung_half_height
    base -= anatomy.right_dome_raise if side < 0 else 0.0
    return base - anatomy.dome_height * (1.0 - ((u - cu) / anatomy.lung_half_width) ** 2)


def _cxr_lung(
    anatomy: CxrAnatomy, side: int, u: np.ndarray, v: np.ndarray, edge: float = 0.02
) -> np.ndarray:
    """One lung field: an ellipse narrowing to the apex, its base cut by the diaphragm dome."""
    cu = side * anatomy.lung_gap
    cv = anatomy.lung_centre_y
    a, b = anatomy.lung_half_width, anatomy.lung_half_height
    t = np.clip((v - cv) / b, -1.0, 1.0)
    a_row = a * (0.88 + 0.22 * t)  # narrow apex, wide base
    r = np.sqrt(((u - cu) / a_row) ** 2 + ((v - cv) / b) ** 2)
    lung = _sigmoid((1.0 - r) * a / edge)
    return lung * _sigmoid((_cxr_dome(anatomy, side, u) - v) / edge)


def _cxr_heart(anatomy: CxrAnatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    cv = anatomy.lung_centre_y + 0.5 * anatomy.lung_half_height
    return _soft_ellipse(
        u,
        v,
        anatomy.heart_x,
        cv,
        anatomy.heart_half_width,
        anatomy.heart_half_height,
        0.012,
        angle=-0.3,
    )


def _cxr_lungs_visible(anatomy: CxrAnatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where lung is seen, not hidden behind heart or mediastinum: a finding must sit there."""
    lungs = _cxr_lung(anatomy, -1, u, v) + _cxr_lung(anatomy, 1, u, v)
    for mask, _ in _cxr_central_shadows(anatomy, u, v):
        lungs = lungs * (1.0 - mask)
    return lungs


def draw_cxr_lesion(rng: np.random.Generator, anatomy: CxrAnatomy) -> Lesion:
    """An opacity or a nodule somewhere in a visible lung field, from subtle to obvious.

    Sizes are large by clinical standards (nodules about 3-6 cm, opacities up to a lobe's width)
    because at 64 px anything smaller is under two pixels; the spread of size and contrast, and
    vessels and ribs of similar brightness, are what keep the task from being trivial (a small CNN
    trained from scratch on 400 of these images reached a test AUC of about 0.8).
    """
    for _ in range(200):
        side = int(rng.choice([-1, 1]))
        pu, pv = _point_in_unit_disk(rng, 0.95)
        u = side * anatomy.lung_gap + pu * anatomy.lung_half_width
        v = anatomy.lung_centre_y + pv * anatomy.lung_half_height
        if _cxr_lungs_visible(anatomy, np.float32(u), np.float32(v)) > 0.9:
            break
    nodule = rng.uniform() < 0.5
    return Lesion(
        side=side,
        u=pu,
        v=pv,
        radius=rng.uniform(0.07, 0.15) if nodule else rng.uniform(0.14, 0.26),
        strength=rng.uniform(0.12, 0.35) if nodule else rng.uniform(0.1, 0.25),
        sharpness=rng.uniform(4.0, 7.0) if nodule else rng.uniform(2.0, 3.0),
        aspect=rng.uniform(0.8, 1.25),
        angle=rng.uniform(0.0, np.pi),
    )


def render_cxr(
    rng: np.random.Generator,
    *,
    size: int,
    sex: str,
    finding: bool,
    anatomy: CxrAnatomy | None = None,
    lesion: Lesion | None = None,
) -> np.ndarray:
    """One PA chest radiograph, (size, size) uint8.

    Without ``anatomy`` a new patient is drawn from ``rng``; with it, only this image's pose,
    exposure and grain are drawn, which is how one patient gets several similar films. The
    finding's parameters are drawn last (only when ``finding`` and no ``lesion`` is given), so the
    same generator state rendered with and without a finding gives the same picture apart from
    the finding.
    """
    if anatomy is None:
        anatomy = draw_cxr_anatomy(rng, sex)
    elif anatomy.sex != sex:
        raise ValueError(f"render_cxr: sex={sex!r} but the anatomy given is sex {anatomy.sex!r}")
    pose = _Pose(
        dx=rng.normal(0, 0.025),
        dy=rng.normal(0, 0.025),
        angle=anatomy.rotation + rng.normal(0, np.deg2rad(1.0)),
        scale=rng.normal(1.0, 0.015),
    )
    exposure = (rng.normal(1.0, 0.05), rng.normal(0.0, 0.03), rng.normal(1.0, 0.05))
    slope = rng.normal(0.0, 0.04, 2)
    grain = rng.standard_normal((size, size), dtype=np.float32)
    if finding and lesion is None:
        lesion = draw_cxr_lesion(rng, anatomy)

    u, v = pose.frame(size)
    in_lungs = _cxr_vessels(anatomy, pose, size, u, v)
    if finding and lesion is not None:
        in_lungs += _cxr_lesion_image(anatomy, lesion, u, v)
    img = _cxr_image(anatomy, u, v, in_lungs)
    img = gaussian_filter(img, 0.5)  # detector blur: no edge is sharper than the pixel grid
    gain, offset, gamma = exposure
    img = np.clip(gain * (img - 0.45) + 0.45 + offset + anatomy.density, 0.0, 1.0) ** gamma
    img += slope[0] * u + slope[1] * v + 0.022 * grain
    return _to_uint8(img)


def _cxr_image(
    anatomy: CxrAnatomy, u: np.ndarray, v: np.ndarray, in_lungs: np.ndarray
) -> np.ndarray:
    """Torso, lungs, bones and breasts; then ``in_lungs`` (vessels, finding); then the heart."""
    body = _soft_ellipse(u, v, 0.0, 0.3, anatomy.body_half_width, 1.3, 0.04, power=4.0)
    neck = _soft_ellipse(u, v, 0.0, -1.05, 0.2, 0.45, 0.04)
    body = np.maximum(body, neck)
    img = 0.04 + 0.56 * body * (1.0 - 0.3 * (u / anatomy.body_half_width) ** 4)
    lungs = _cxr_lung(anatomy, -1, u, v) + _cxr_lung(anatomy, 1, u, v)
    mid_zone = np.exp(-(((v - anatomy.lung_centre_y) / 0.45) ** 2))
    img -= lungs * (0.32 + 0.08 * mid_zone)
    dome = np.where(u < 0, _cxr_dome(anatomy, -1, u), _cxr_dome(anatomy, 1, u))
    thorax = _sigmoid((anatomy.lung_gap + anatomy.lung_half_width - np.abs(u)) / 0.06)
    img += 0.08 * thorax * body * _sigmoid((v - dome) / 0.02)  # liver and stomach
    img += _cxr_bones(anatomy, u, v, lungs)
    img += anatomy.breast * _cxr_breasts(anatomy, u, v) * body
    img += in_lungs * lungs
    return _cxr_overlay_mediastinum(anatomy, img, u, v)


def _cxr_central_shadows(
    anatomy: CxrAnatomy, u: np.ndarray, v: np.ndarray
) -> tuple[tuple[np.ndarray, float], ...]:
    """Mediastinum, aortic knob and heart: (coverage, brightness) pairs, back to front."""
    top = anatomy.lung_centre_y - anatomy.lung_half_height
    half_width = 0.1 + 0.05 * _sigmoid((v - anatomy.lung_centre_y) / 0.15)
    mediastinum = _sigmoid((half_width - np.abs(u + 0.01)) / 0.015) * _sigmoid(
        (v - top + 0.25) / 0.05
    )
    knob = _soft_ellipse(u, v, 0.11, anatomy.lung_centre_y - 0.22, 0.07, 0.065, 0.012)
    return ((mediastinum, 0.7), (knob, 0.72), (_cxr_heart(anatomy, u, v), 0.73))


def _cxr_overlay_mediastinum(
    anatomy: CxrAnatomy, img: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """The central shadows hide the lungs behind them (silhouettes), the spine shows through."""
    for mask, level in _cxr_central_shadows(anatomy, u, v):
        img = img * (1.0 - 0.92 * mask) + 0.92 * level * mask
    spine = _sigmoid((0.055 - np.abs(u)) / 0.012) * (1.0 + 0.3 * np.cos(v * 2 * np.pi / 0.12))
    return img + 0.04 * spine


def _cxr_bones(anatomy: CxrAnatomy, u: np.ndarray, v: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Posterior and anterior ribs as curved low-contrast bands over the thorax, and clavicles."""
    reach = anatomy.lung_gap + anatomy.lung_half_width
    q = np.abs(u) / reach
    thorax = _soft_ellipse(
        u, v, 0.0, anatomy.lung_centre_y, reach + 0.06, anatomy.lung_half_height * 1.05, 0.05
    )
    posterior = (v + 0.3 * q - 0.55 * q * q) / anatomy.rib_spacing + anatomy.rib_phase
    anterior = (v - 0.35 * q + 0.1 * q * q) / (anatomy.rib_spacing * 1.25) + anatomy.rib_phase
    back = (0.5 + 0.5 * np.cos(2 * np.pi * posterior)) ** 2
    front = (0.5 + 0.5 * np.cos(2 * np.pi * anterior)) ** 2
    ribs = back * back * 0.055 + front * front * front * 0.03 * _sigmoid((q - 0.4) / 0.1)
    apex = anatomy.lung_centre_y - anatomy.lung_half_height
    clavicle_line = apex + 0.06 - 0.16 * np.clip(q - 0.1, 0.0, None) - 0.1 * q * q
    clavicles = np.exp(-(((v - clavicle_line) / 0.03) ** 2)) * _sigmoid((0.9 - q) / 0.05)
    clavicles *= _sigmoid((q - 0.12) / 0.03)
    return thorax * ribs * (0.6 + 0.4 * np.clip(lungs, 0, 1)) + 0.07 * clavicles


def _cxr_breasts(anatomy: CxrAnatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft-tissue shadows over the lower lungs, sharper at their lower edge as on real films."""
    cv = anatomy.lung_centre_y + 0.5 * anatomy.lung_half_height
    out = np.zeros_like(u)
    for side in (-1, 1):
        cu = side * (anatomy.lung_gap + 0.06)
        upper = _soft_ellipse(u, v, cu, cv, 0.34, 0.3, 0.12)
        lower_edge = _sigmoid((cv + 0.22 - v) / 0.02)
        out += upper * lower_edge
    return out


def _cxr_hilum(anatomy: CxrAnatomy, side: int) -> tuple[float, float]:
    u = side * (anatomy.lung_gap - 0.4 * anatomy.lung_half_width)
    return u, anatomy.lung_centre_y + (0.08 if side < 0 else 0.0)


def _cxr_vessels(
    anatomy: CxrAnatomy, pose: _Pose, size: int, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """Hila and vascular markings: chains of blobs fanning out from each hilum, thinning outwards.

    The pattern belongs to the patient (``vessel_seed``), so repeat films of one patient agree.
    """
    rng = np.random.default_rng(anatomy.vessel_seed)
    n_rays, steps = 10, np.linspace(0.1, 1.0, 26)
    cu, cv, sig, amp = [], [], [], []
    hila = np.zeros_like(u)
    for side in (-1, 1):
        hilum_u, hilum_v = _cxr_hilum(anatomy, side)
        hila += np.exp(((u - hilum_u) ** 2 + (v - hilum_v) ** 2) * (-0.5 / 0.06**2))
        angles = np.linspace(-1.3, 1.4, n_rays) + rng.normal(0, 0.1, n_rays)
        direction = angles[:, None] + np.cumsum(rng.normal(0, 0.05, (n_rays, steps.size)), 1)
        reach = rng.uniform(0.7, 1.0, (n_rays, 1)) * steps
        cu += [hilum_u + side * np.cos(direction) * reach * anatomy.lung_half_width * 1.5]
        cv += [hilum_v + np.sin(direction) * reach * anatomy.lung_half_height]
        sig += [np.broadcast_to(0.018 * (1.0 - 0.5 * steps), reach.shape)]
        amp += [np.broadcast_to(0.045 * (1.0 - 0.6 * steps), reach.shape)]
    flat = [np.concatenate([np.ravel(p) for p in parts]) for parts in (cu, cv, sig, amp)]
    return _blobs(size, pose, *flat) + 0.07 * hila


def _cxr_lesion_image(
    anatomy: CxrAnatomy, lesion: Lesion, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    cu = lesion.side * anatomy.lung_gap + lesion.u * anatomy.lung_half_width
    cv = anatomy.lung_centre_y + lesion.v * anatomy.lung_half_height
    profile = _lesion_profile(
        u, v, cu, cv, lesion.radius, lesion.aspect, lesion.angle, lesion.sharpness
    )
    return lesion.strength * profile


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# CT slice


@dataclass(frozen=True)
class CtAnatomy:
    """One patient's chest cross-section (normalised coordinates); fixed across their slices."""

    sex: str
    body_half_width: float
    body_half_height: float
    body_centre_y: float
    fat: float
    lung_half_width: float
    lung_half_height: float
    lung_gap: float
    lung_centre_y: float
    heart_x: float
    heart_size: float
    spine_y: float
    table_y: float
    rotation: float


def draw_ct_anatomy(rng: np.random.Generator, sex: str) -> CtAnatomy:
    """A plausible chest section; females slightly smaller, with a thicker fat layer."""
    f = sex == "F"
    size = (0.97 if f else 1.0) * rng.normal(1.0, 0.04)
    body_w = 0.84 * size * rng.normal(1.0, 0.03)
    body_h = 0.56 * size * rng.normal(1.0, 0.04)
    return CtAnatomy(
        sex=sex,
        body_half_width=body_w,
        body_half_height=body_h,
        body_centre_y=rng.normal(0.02, 0.02),
        fat=rng.uniform(0.04, 0.08) if f else rng.uniform(0.03, 0.065),
        lung_half_width=0.27 * size * rng.normal(1.0, 0.04),
        lung_half_height=0.37 * size * rng.normal(1.0, 0.04),
        lung_gap=0.36 * size * rng.normal(1.0, 0.03),
        lung_centre_y=rng.normal(-0.02, 0.02),
        heart_x=rng.normal(0.08, 0.02),
        heart_size=(0.95 if f else 1.0) * rng.normal(1.0, 0.06),
        spine_y=rng.normal(0.0, 0.015),
        table_y=rng.uniform(0.02, 0.06),
        rotation=rng.normal(0.0, np.deg2rad(2.0)),
    )


def _ct_lung(
    anatomy: CtAnatomy, side: int, u: np.ndarray, v: np.ndarray, edge: float = 0.012
) -> np.ndarray:
    """A lung section: an ellipse with a flattened medial border, indented by the heart."""
    cu = side * anatomy.lung_gap
    a, b = anatomy.lung_half_width, anatomy.lung_half_height
    lung = _soft_ellipse(u, v, cu, anatomy.lung_centre_y, a, b, edge, angle=side * 0.15, power=2.3)
    return lung * (1.0 - _ct_heart(anatomy, u, v))


def _ct_heart(anatomy: CtAnatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = anatomy.heart_size
    return _soft_ellipse(
        u, v, anatomy.heart_x, anatomy.lung_centre_y - 0.1, 0.23 * s, 0.2 * s, 0.012, angle=-0.5
    )


def draw_ct_lesion(rng: np.random.Generator, anatomy: CtAnatomy) -> Lesion:
    """A solid nodule (0..100 HU), about 1-4 cm across, somewhere in a lung, clear of the pleura.

    Vessels seen end-on are bright dots of the same density, so small nodules are easy to miss.
    """
    for _ in range(200):
        side = int(rng.choice([-1, 1]))
        pu, pv = _point_in_unit_disk(rng, 0.85)
        u = side * anatomy.lung_gap + pu * anatomy.lung_half_width
        v = anatomy.lung_centre_y + pv * anatomy.lung_half_height
        if _ct_lung(anatomy, side, np.float32(u), np.float32(v)) > 0.95:
            break
    return Lesion(
        side=side,
        u=pu,
        v=pv,
        radius=float(np.exp(rng.uniform(np.log(0.025), np.log(0.09)))),
        strength=rng.uniform(0.0, 100.0),
        sharpness=rng.uniform(2.5, 6.0),
        aspect=rng.uniform(0.85, 1.2),
        angle=rng.uniform(0.0, np.pi),
    )


def render_ct_slice(
    rng: np.random.Generator,
    *,
    size: int,
    finding: bool,
    sex: str | None = None,
    anatomy: CtAnatomy | None = None,
    lesion: Lesion | None = None,
) -> np.ndarray:
    """One axial chest CT slice, (size, size) uint8, windowed with ``CT_WINDOW_HU``.

    Each call is a different slice of the same patient: vessels, the lungs' extent and the cut
    through the nodule change, the body outline does not. Without ``anatomy`` a new patient (of
    ``sex``, or a random one) is drawn. The finding's parameters are drawn last (see
    ``render_cxr``).
    """
    if anatomy is None:
        anatomy = draw_ct_anatomy(rng, sex or str(rng.choice(SEXES)))
    level = rng.uniform(-1.0, 1.0)  # where along the chest this slice lies
    pose = _Pose(
        dx=rng.normal(0, 0.01),
        dy=rng.normal(0, 0.01),
        angle=anatomy.rotation + rng.normal(0, np.deg2rad(0.5)),
        scale=1.0,
    )
    vessel_rng = np.random.default_rng(rng.integers(2**31))
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise_hu = rng.uniform(12.0, 30.0)
    cut = rng.uniform(0.0, 0.9)  # how far from the nodule's centre the slice passes
    if finding and lesion is None:
        lesion = draw_ct_lesion(rng, anatomy)

    u, v = pose.frame(size)
    lung_scale = 1.0 - 0.06 * level**2
    lungs = _ct_lung_pair(anatomy, u, v, lung_scale)
    hu = _paint(_ct_body_hu(anatomy, u, v, lungs), _ct_ribs(anatomy, pose, size), _HU_CORTEX)
    hu += (_HU_SOFT - _HU_LUNG) * _ct_vessels(anatomy, pose, size, vessel_rng) * lungs
    if finding and lesion is not None:
        hu += _ct_lesion_hu(anatomy, lesion, u, v, cut) * lungs
    hu = gaussian_filter(hu, 0.5)  # reconstruction kernel / partial volume
    noise = gaussian_filter(noise, 0.6) * (noise_hu * 2.2)  # correlated, quantum-like grain
    return _window(hu + noise)


def _ct_lung_pair(anatomy: CtAnatomy, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    sized = replace(
        anatomy,
        lung_half_width=anatomy.lung_half_width * scale,
        lung_half_height=anatomy.lung_half_height * scale,
    )
    return np.clip(_ct_lung(sized, -1, u, v) + _ct_lung(sized, 1, u, v), 0.0, 1.0)


def _ct_body_hu(anatomy: CtAnatomy, u: np.ndarray, v: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Air, table, fat, muscle, mediastinum, lungs and bone, painted back to front in HU."""
    a, b, cv = anatomy.body_half_width, anatomy.body_half_height, anatomy.body_centre_y
    hu = np.full(u.shape, _HU_AIR, np.float32)
    table_top = cv + b + anatomy.table_y + 0.05 * u * u
    table = _sigmoid((v - table_top) / 0.01) * _sigmoid((table_top + 0.05 - v) / 0.01)
    hu += (_HU_TABLE - _HU_AIR) * table * _sigmoid((0.95 - np.abs(u)) / 0.02)
    body = _soft_ellipse(u, v, 0.0, cv, a, b, 0.01, power=2.2)
    hu = _paint(hu, body, _HU_FAT)
    muscle = _soft_ellipse(u, v, 0.0, cv, a - anatomy.fat, b - anatomy.fat, 0.01, power=2.2)
    hu = _paint(hu, muscle, _HU_SOFT)
    hu = _paint(hu, lungs, _HU_LUNG + 60.0 * np.clip(v - anatomy.lung_centre_y, 0, None))
    hu = _paint(hu, _ct_heart(anatomy, u, v), _HU_SOFT)
    hu = _ct_bones(anatomy, u, v, hu)
    return hu


def _paint(hu: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    return hu * (1.0 - mask) + value * mask


def _ct_bones(anatomy: CtAnatomy, u: np.ndarray, v: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Vertebra (cortex ring, cancellous core, canal, spinous process), aorta and sternum."""
    sy = anatomy.body_centre_y + anatomy.body_half_height * 0.42 + anatomy.spine_y
    aorta = _soft_ellipse(u, v, 0.13, sy - 0.06, 0.065, 0.065, 0.01)
    hu = _paint(hu, aorta, _HU_SOFT + 10.0)
    vertebra = _soft_ellipse(u, v, 0.0, sy - 0.02, 0.11, 0.09, 0.01)
    hu = _paint(hu, vertebra, _HU_CORTEX)
    hu = _paint(hu, _soft_ellipse(u, v, 0.0, sy - 0.02, 0.085, 0.068, 0.01), _HU_CANCELLOUS)
    arch = _soft_ellipse(u, v, 0.0, sy + 0.13, 0.1, 0.06, 0.01)
    hu = _paint(hu, arch * _sigmoid((sy + 0.1 - v) / 0.01 + 3), _HU_CORTEX * 0.8)
    hu = _paint(hu, _soft_ellipse(u, v, 0.0, sy + 0.12, 0.04, 0.035, 0.008), 15.0)
    spinous = _soft_ellipse(u, v, 0.0, sy + 0.2, 0.022, 0.05, 0.008)
    hu = _paint(hu, spinous, _HU_CORTEX * 0.8)
    sternum = _soft_ellipse(
        u,
        v,
        0.0,
        anatomy.body_centre_y - anatomy.body_half_height + anatomy.fat + 0.05,
        0.07,
        0.03,
        0.008,
    )
    hu = _paint(hu, sternum, _HU_CORTEX * 0.8)
    return hu


def _ct_ribs(anatomy: CtAnatomy, pose: _Pose, size: int) -> np.ndarray:
    """Rib cross-sections: small bony disks just inside the chest wall, sparing the front.

    Drawn as saturated blobs rather than nine full-image ellipses: same look, a fraction of the cost.
    """
    ring_a = anatomy.body_half_width - anatomy.fat - 0.035
    ring_b = anatomy.body_half_height - anatomy.fat - 0.035
    theta = np.radians([-25, 5, 35, 62, 92, 118, 145, 175, 205])
    cu, cv = ring_a * np.cos(theta), anatomy.body_centre_y + ring_b * np.sin(theta)
    blobs = _blobs(size, pose, cu, cv, np.full(theta.size, 0.02), np.full(theta.size, 1.8))
    return np.minimum(blobs, 1.0)


def _ct_vessels(anatomy: CtAnatomy, pose: _Pose, size: int, rng: np.random.Generator) -> np.ndarray:
    """Vessel cross-sections: bright dots, larger and denser towards each hilum."""
    n = 90
    side = rng.choice([-1, 1], n)
    angle, radius = rng.uniform(0, 2 * np.pi, n), np.sqrt(rng.uniform(size=n))
    du, dv = radius * np.cos(angle), radius * np.sin(angle)
    medial = np.clip(-side * du, -1, 1) * 0.5 + 0.5  # 1 at the hilum side
    cu = side * anatomy.lung_gap + du * anatomy.lung_half_width
    cv = anatomy.lung_centre_y + dv * anatomy.lung_half_height
    sigma = 0.006 + 0.014 * medial**2 * rng.uniform(0.5, 1.0, n)
    contrast = rng.uniform(0.5, 1.0, n)  # partial volume: a vessel cut obliquely is fainter
    return np.minimum(_blobs(size, pose, cu, cv, sigma, contrast), 1.0)


def _ct_lesion_hu(
    anatomy: CtAnatomy, lesion: Lesion, u: np.ndarray, v: np.ndarray, cut: float
) -> np.ndarray:
    """The nodule as this slice cuts it: off-centre cuts show a smaller disk."""
    cu = lesion.side * anatomy.lung_gap + lesion.u * anatomy.lung_half_width
    cv = anatomy.lung_centre_y + lesion.v * anatomy.lung_half_height
    radius = lesion.radius * np.sqrt(1.0 - cut**2)
    profile = _lesion_profile(u, v, cu, cv, radius, lesion.aspect, lesion.angle, lesion.sharpness)
    return (lesion.strength - _HU_LUNG) * profile


def _window(hu: np.ndarray) -> np.ndarray:
    low, high = CT_WINDOW_HU
    return _to_uint8((hu - low) / (high - low))


class SyntheticSource(DataSource):
    """The built-in phantoms (``--synthetic``): made on the spot, every output illustrative."""

    name = "synthetic"
    title = "built-in synthetic phantoms"
    reads_files = False
    detect_order = 1000

    def generate(self, choice: DataChoice) -> Cohort:
        return make_phantom_cohort(
            PhantomSettings(
                modality=choice.modality, n_patients=choice.synthetic_patients,
                image_size=choice.image_size, seed=choice.seed,
            )
        )  # fmt: skip
