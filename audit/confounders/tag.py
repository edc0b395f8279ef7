"""The burned-in tag: a white letter, like a laterality marker, on the confounded images.

The study drew an "R" in matplotlib's default sans font (DejaVu Sans; its code asked for the light
weight, see "Font weight" below), size 64 px, top-left at (200, 200) on 1024x1024 NIH chest X-rays. medaudit works at the cohort's cached resolution, so
size and position are given in pixels of a ``reference_side`` image and scaled by
``image side / reference_side``: the tag covers the same fraction of the image at any resolution.
Font size is kept at least ``min_font_size`` (3 px): below that a glyph is one grey smudge and the
scaled tag would stop being a letter at all.

Preset ``study-small`` (size 32 at (70, 100)): the study's code uses these values for its thyroid
ultrasound images, drawn at their native resolution, which the code does not record. There is no
reference side to scale from, so this preset draws in absolute pixels (``scale_with_side=False``);
on an image too small to hold it, drawing fails with a message rather than clipping the letter.

Font weight (option ``font_weight``, in ``OPTIONS``; default ``"regular"``, today's behaviour).
The study's code asked matplotlib for ``FontProperties(family="sans-serif", weight="light")``,
which resolves to DejaVu Sans ExtraLight where that font is installed (Debian's
fonts-dejavu-extra; matplotlib reads its weight as 200, an exact match for "light") and to the
regular DejaVu Sans that matplotlib bundles otherwise. ``"extralight"`` (``STUDY_EXACT``) looks for
DejaVu Sans ExtraLight the same way -- matplotlib's bundled fonts, then the fonts matplotlib's
font manager lists, then Pillow's search of the system font folders -- and falls back to the
regular font as the study's code did. :func:`resolved_font` says which file was used, with its
SHA-256, for results.json. The option is not in ``DEFAULTS`` yet (a declared parameter enters
results.json and every run key, so declaring it changes the golden results); :func:`with_options`
is the confounder with it declared.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from audit.confounders.base import Confounder
from audit.errors import UsageError

DEFAULTS: Mapping[str, Any] = {
    "text": "R",
    "font_size": 64,
    "position": (200, 200),
    "reference_side": 1024,
    "scale_with_side": True,
    "min_font_size": 3,
    "value": 255,
}
PRESETS = {
    "study": {},
    "study-small": {"font_size": 32, "position": (70, 100), "scale_with_side": False},
}
FONT_WEIGHTS = ("regular", "extralight")
OPTIONS: Mapping[str, Any] = {"font_weight": "regular"}  # the default: today's behaviour
STUDY_EXACT: Mapping[str, Any] = {"font_weight": "extralight"}
EXTRALIGHT_FILE = "DejaVuSans-ExtraLight.ttf"

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


def tag_layout(shape: tuple[int, int], params: Mapping[str, Any]) -> tuple[int, tuple[int, int]]:
    """Font size and (x, y) top-left for an image of ``shape``; x scales with width, y with height.

    The corner is floored (the pixel that holds the scaled point), so 200 on 64 px gives 12.
    """
    height, width = shape
    ref = params["reference_side"]
    x, y = params["position"]
    if not params["scale_with_side"]:
        return params["font_size"], (x, y)
    size = round(params["font_size"] * min(height, width) / ref)
    return max(params["min_font_size"], size), (int(x * width / ref), int(y * height / ref))


def tag_box(shape: tuple[int, int], params: Mapping[str, Any]) -> Box:
    """The (x0, y0, x1, y1) box, end exclusive, outside which drawing the tag changes nothing.

    Exposed for the report: a saliency map can be scored by how much of it falls in this box.
    """
    size, (x, y) = tag_layout(shape, params)
    x0, y0, x1, y1 = _font(size, _weight(params)).getbbox(params["text"])
    return x + x0, y + y0, x + x1, y + y1


def draw_tag(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Burn the text into a copy of ``image``; ``rng`` is unused (the tag is deterministic)."""
    del rng
    box = tag_box(image.shape, params)
    _require_inside(box, image.shape)
    size, position = tag_layout(image.shape, params)
    canvas = Image.fromarray(np.ascontiguousarray(image))
    font = _font(size, _weight(params))
    ImageDraw.Draw(canvas).text(position, params["text"], fill=params["value"], font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _require_inside(box: Box, shape: tuple[int, int]) -> None:
    x0, y0, x1, y1 = box
    height, width = shape
    if x1 <= x0 or y1 <= y0:
        raise UsageError("the tag's text draws nothing; give a non-blank text=")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise UsageError(
            f"the tag box {box} does not fit a {width}x{height} image; use a smaller "
            "font_size= or position=, or scale_with_side=True"
        )


def check_params(params: Mapping[str, Any]) -> None:
    """Fail before any image is touched on values that cannot draw a tag."""
    for key in ("font_size", "reference_side", "min_font_size"):
        if params[key] < 1:
            raise UsageError(f"{key}={params[key]!r} for confounder 'tag'; expected an int >= 1")
    if not 0 <= params["value"] <= 255:
        raise UsageError(f"value={params['value']!r} for confounder 'tag'; expected 0..255")
    if not params["text"].strip():
        raise UsageError(f"text={params['text']!r} for confounder 'tag'; expected visible text")
    if _weight(params) not in FONT_WEIGHTS:
        raise UsageError(
            f"font_weight={_weight(params)!r} for confounder 'tag'; expected one of "
            f"{', '.join(FONT_WEIGHTS)}"
        )


def _weight(params: Mapping[str, Any]) -> str:
    return params.get("font_weight", OPTIONS["font_weight"])


@functools.cache
def font_file() -> str:
    """matplotlib's bundled DejaVu Sans, the study's font.

    The bundled file is used rather than whatever ``findfont`` prefers, so that a system copy of
    another DejaVu version cannot change the pixels from one machine to the next.
    """
    import matplotlib
    from matplotlib import font_manager

    bundled = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    if os.path.exists(bundled):
        return bundled
    props = font_manager.FontProperties(family="DejaVu Sans")
    return font_manager.findfont(props, fallback_to_default=False)


@functools.cache
def extralight_file() -> str | None:
    """DejaVu Sans ExtraLight's file, or None where it is not installed.

    Looked for where the study's matplotlib query would find it: matplotlib's bundled fonts, the
    fonts its font manager lists (family "DejaVu Sans", weight 200, upright, normal width), then
    Pillow's search of the system font folders by file name.
    """
    import matplotlib
    from matplotlib import font_manager

    bundled = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", EXTRALIGHT_FILE)
    if os.path.exists(bundled):
        return bundled
    listed = sorted(
        entry.fname
        for entry in font_manager.fontManager.ttflist
        if entry.name == "DejaVu Sans"
        and entry.weight == 200
        and entry.style == "normal"
        and entry.stretch == "normal"
        and os.path.exists(entry.fname)
    )
    if listed:
        return listed[0]
    try:
        return str(ImageFont.truetype(EXTRALIGHT_FILE, 10).path)
    except OSError:
        return None


@dataclass(frozen=True)
class ResolvedFont:
    """The font file a tag is drawn with: the weight asked for, the weight found, its SHA-256."""

    path: str
    sha256: str
    weight_asked: str
    weight_used: str

    @property
    def fell_back(self) -> bool:
        return self.weight_used != self.weight_asked

    def record(self) -> dict[str, Any]:
        """What results.json can keep: the file's name (never its folder) and its hash."""
        return {
            "file": os.path.basename(self.path),
            "sha256": self.sha256,
            "weight_asked": self.weight_asked,
            "weight_used": self.weight_used,
        }


@functools.cache
def resolved_font(weight: str = "regular") -> ResolvedFont:
    """The file ``font_weight=weight`` draws with; ExtraLight falls back to regular, as the study."""
    if weight not in FONT_WEIGHTS:
        raise UsageError(
            f"font_weight={weight!r} for confounder 'tag'; expected one of {', '.join(FONT_WEIGHTS)}"
        )
    path, used = font_file(), "regular"
    if weight == "extralight":
        found = extralight_file()
        if found is None:
            log.warning(
                "DejaVu Sans ExtraLight is not installed: the tag is drawn in regular DejaVu "
                "Sans, as the study's code drew it on such a machine"
            )
        else:
            path, used = found, "extralight"
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return ResolvedFont(path=path, sha256=digest, weight_asked=weight, weight_used=used)


def font_record(params: Mapping[str, Any]) -> dict[str, Any]:
    """The record of the font a resolved parameter set draws with (see :class:`ResolvedFont`)."""
    return resolved_font(_weight(params)).record()


@functools.lru_cache(maxsize=32)
def _font(size: int, weight: str = "regular") -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(resolved_font(weight).path, size)


TAG = Confounder(
    name="tag",
    category="annotation",
    description=(
        "A burned-in white letter (like a laterality marker) at a fixed place on the image; "
        "a model that reads it needs no anatomy."
    ),
    kind="pixel",
    defaults=DEFAULTS,
    apply=draw_tag,
    presets=PRESETS,
    check=check_params,
)


def with_options() -> Confounder:
    """``TAG`` with ``OPTIONS`` declared as parameters and preset ``study-exact``.

    A zero-argument factory, so it also loads as a plugin (``audit.confounders.tag:with_options``);
    its parameters differ from ``TAG``'s, so its runs have keys of their own.
    """
    return dataclasses.replace(
        TAG,
        defaults={**DEFAULTS, **OPTIONS},
        presets={**TAG.presets, "study-exact": {**PRESETS["study"], **STUDY_EXACT}},
    )
