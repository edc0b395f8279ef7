"""The burned-in tag: a white letter, like a laterality marker, on the confounded images.

The study drew an "R" in matplotlib's default sans font (DejaVu Sans), size 64 px, top-left at
(200, 200) on 1024x1024 NIH chest X-rays. medaudit works at the cohort's cached resolution, so
size and position are given in pixels of a ``reference_side`` image and scaled by
``image side / reference_side``: the tag covers the same fraction of the image at any resolution.
Font size is kept at least ``min_font_size`` (3 px): below that a glyph is one grey smudge and the
scaled tag would stop being a letter at all.

Preset ``study-small`` (size 32 at (70, 100)): the study's code uses these values for its thyroid
ultrasound images, drawn at their native resolution, which the code does not record. There is no
reference side to scale from, so this preset draws in absolute pixels (``scale_with_side=False``);
on an image too small to hold it, drawing fails with a message rather than clipping the letter.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
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
    x0, y0, x1, y1 = _font(size).getbbox(params["text"])
    return x + x0, y + y0, x + x1, y + y1


def draw_tag(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Burn the text into a copy of ``image``; ``rng`` is unused (the tag is deterministic)."""
    del rng
    box = tag_box(image.shape, params)
    _require_inside(box, image.shape)
    size, position = tag_layout(image.shape, params)
    canvas = Image.fromarray(np.ascontiguousarray(image))
    ImageDraw.Draw(canvas).text(position, params["text"], fill=params["value"], font=_font(size))
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


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_file(), size)


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
