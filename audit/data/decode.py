"""One file to one fixed-size uint8 image: PNG and JPEG by Pillow, DICOM by :mod:`audit.data.dicom`.

The file's type is read from its first bytes, not its name, so a renamed or mislabelled file is
recognised (or rejected with a clear reason) instead of crashing a decoder. Images are resized to a
square of ``image_size`` pixels with Pillow's antialiased bilinear filter (the whole image is
scaled, as the study's Keras loader did: non-square images are squashed, not cropped).

16-bit rasters are scaled from their own range unless the settings carry one window for the whole
data set (:class:`WindowedDecodeSettings`, e.g. PadChest): a per-image range is itself a
confounder (it follows each image's exposure), so a source that knows its images share a scale
chooses the window once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from audit.constants import DEFAULT_MAX_IMAGE_PIXELS as DEFAULT_MAX_PIXELS
from audit.data import dicom
from audit.data.problems import (
    DAMAGED_IMAGE,
    FILE_NOT_FOUND,
    IMAGE_TOO_LARGE,
    NOT_AN_IMAGE,
    Unreadable,
)

DECODER_VERSION = "medaudit-decode-1"
"""Part of every cache key: change it when the pixels this module makes change."""

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # Pillow's modes of 16-bit and wider grey


@dataclass(frozen=True)
class DecodeSettings:
    """Everything that changes the decoded pixels or which files are kept (all in the cache key).

    ``max_pixels`` bounds an image's declared size, read from its header before any pixel is
    decoded: a small file can declare 13000 x 13000 pixels and decode to gigabytes."""

    image_size: int
    modality: str
    hu_window: tuple[float, float]
    version: str = DECODER_VERSION
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class WindowedDecodeSettings(DecodeSettings):
    """Decode settings with one grey window for every 16-bit raster of a data set: ``low`` -> 0,
    ``high`` -> 255, clipped. A subclass, not a new field, so the settings (and so the cache keys)
    of every other source stay as they were."""

    raw_window: tuple[float, float] = (0.0, 65535.0)


def raw_window(settings: DecodeSettings) -> tuple[float, float] | None:
    """The data set's window for wide rasters, or None (each is scaled from its own range)."""
    return settings.raw_window if isinstance(settings, WindowedDecodeSettings) else None


def check_declared_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image whose declared size exceeds the limit, before it is decoded."""
    if width * height > max_pixels:
        raise Unreadable(IMAGE_TOO_LARGE, f"declared {width} x {height}, limit {max_pixels:,}")


def sniff(path: Path) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` or None, from the file's first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except FileNotFoundError:
        raise Unreadable(FILE_NOT_FOUND) from None
    except OSError:
        return None
    if head.startswith(_PNG):
        return "png"
    if head.startswith(_JPEG):
        return "jpeg"
    if head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom"
    return None


def decode_file(
    path: Path, settings: DecodeSettings, frame: int | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(image_size, image_size) uint8 and the file's warnings, or :class:`Unreadable`."""
    kind = sniff(path)
    if kind is None:
        raise Unreadable(NOT_AN_IMAGE)
    if kind == "dicom":
        image, notes = dicom.read_dicom_uint8(
            path, modality=settings.modality, hu_window=settings.hu_window, frame=frame,
            max_pixels=settings.max_pixels,
        )  # fmt: skip
        return resize(image, settings.image_size), notes
    window = raw_window(settings)
    return _read_raster(path, settings.image_size, settings.max_pixels, window), ()


def read_levels(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A PNG's or JPEG's grey levels as stored, unscaled (16-bit stays 16-bit), for a source
    that chooses one window over its images; :class:`Unreadable` like :func:`decode_file`."""
    if sniff(path) not in ("png", "jpeg"):
        raise Unreadable(NOT_AN_IMAGE)
    try:
        with warnings.catch_warnings(), _truncated_images_refused():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                check_declared_size(*img.size, max_pixels)
                img.load()
                if img.mode not in _WIDE_MODES and img.mode != "L":
                    img = img.convert("L")
                return np.asarray(img)
    except Unreadable:
        raise
    except Exception:
        raise Unreadable(DAMAGED_IMAGE) from None


@contextlib.contextmanager
def _truncated_images_refused() -> Iterator[None]:
    """Pillow's truncated-image switch is process-wide, and WeasyPrint turns it on when imported
    (a report rendered earlier in the process): a cut file must stay unreadable regardless."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _read_raster(
    path: Path,
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    try:
        with warnings.catch_warnings(), _truncated_images_refused():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:  # reads the header only
                check_declared_size(*img.size, max_pixels)
                if img.format == "JPEG":
                    img.draft("L", (size, size))  # decode at a reduced DCT scale when it can
                img.load()
                gray = _to_gray(img, window)
                return _resize_pil(gray, size)
    except Unreadable:
        raise
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... on damaged files
        raise Unreadable(DAMAGED_IMAGE) from None


def _to_gray(img: Image.Image, window: tuple[float, float] | None = None) -> Image.Image:
    """8-bit grey; 16-bit images by the data set's ``window`` when given, else scaled from their
    own range (their bit depth is unknown)."""
    if img.mode == "L":
        return img
    if img.mode in _WIDE_MODES:
        values = np.asarray(img, dtype=np.float64)
        low, high = window if window is not None else (float(values.min()), float(values.max()))
        unit = np.zeros_like(values) if high <= low else (values - low) / (high - low)
        return Image.fromarray(np.rint(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def _resize_pil(img: Image.Image, size: int) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 2-D array to (size, size), by the same filter as PNGs."""
    return _resize_pil(Image.fromarray(np.ascontiguousarray(image)), size)
