"""DICOM reading, in one place: pixels to a display-ready uint8 image, headers for indexing.

The chain follows the standard's grayscale pipeline (PS3.3 C.11): stored values, then the
modality LUT (rescale slope/intercept or a Modality LUT Sequence) to output units (HU on CT), then
either the audit's fixed HU window (``modality="ct"``: the same window for every slice, so grey
levels mean the same tissue everywhere) or the file's own VOI (a VOI LUT Sequence, else Window
Center/Width, else the image's full range), and last MONOCHROME1 inversion so that bone is always
bright. Multi-frame files give one frame (the middle one unless a frame is asked for).

Compressed transfer syntaxes are decoded by pydicom's plugins: RLE natively, JPEG baseline and
extended by Pillow, JPEG 2000 by pylibjpeg-openjpeg (or Pillow), JPEG-LS by pyjpegls, JPEG lossless
(process 14) by python-gdcm where installed; all permissively licensed.

Privacy: nothing here reads, returns or logs an identifying element (names, ids, dates, accession
numbers), and a file that cannot be read raises :class:`Unreadable` with a fixed reason and a
detail that never quotes pydicom's message (which may hold a path or a value).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit.constants import DEFAULT_MAX_IMAGE_PIXELS
from audit.data.problems import (
    DAMAGED_COMPRESSED,
    FILE_NOT_FOUND,
    IMAGE_TOO_LARGE,
    NO_DECODER,
    NO_PIXEL_DATA,
    NOT_DICOM,
    TRUNCATED_DICOM,
    UNREADABLE_DICOM,
    UNSUPPORTED_SYNTAX,
    Unreadable,
)

BURNED_IN_YES = "BurnedInAnnotation is not NO"
BURNED_IN_UNSTATED = "BurnedInAnnotation not stated"


@dataclass(frozen=True)
class SliceHeader:
    """What the LIDC index needs of one file. ``patient_id`` is hashed by the caller, never shown."""

    sop_uid: str
    series_uid: str
    z: float | None
    modality: str
    patient_id: str = field(repr=False)  # never in a repr, a log line or a message
    sex: str | None = None


def _silence_pydicom_logger() -> None:
    """pydicom logs some reading problems itself, naming the file by its full path (which may
    hold a patient's name or id): its records stop at its own logger and never reach ours. Only
    this module reads with pydicom, so doing it on import covers the CLI and library use alike."""
    logger = logging.getLogger("pydicom")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


_silence_pydicom_logger()


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """No pydicom warning or value-validation message (they can quote a tag's value)."""
    import pydicom.config

    settings = pydicom.config.settings
    saved = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = saved


def read_dataset(path: Path, *, header_only: bool = False, tags: list[str] | None = None):
    """pydicom dataset, or :class:`Unreadable`. Files without the 128-byte preamble are accepted."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with _quiet_pydicom():
        try:
            return pydicom.dcmread(
                path, stop_before_pixels=header_only, specific_tags=tags, force=_no_preamble(path)
            )
        except FileNotFoundError:
            raise Unreadable(FILE_NOT_FOUND) from None
        except InvalidDicomError:
            raise Unreadable(NOT_DICOM) from None
        except (EOFError, OSError):
            raise Unreadable(TRUNCATED_DICOM) from None
        except Exception:  # pydicom raises many kinds on damaged headers
            raise Unreadable(UNREADABLE_DICOM) from None


def _no_preamble(path: Path) -> bool:
    """A DICOM file without preamble starts with a group 0002 or 0008 tag (little endian)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] != b"DICM" and head[:2] in (b"\x02\x00", b"\x08\x00")


def read_header(path: Path) -> SliceHeader:
    """The header fields the LIDC index needs, without reading pixels."""
    tags = [
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "ImagePositionPatient",
        "SliceLocation",
        "Modality",
        "PatientID",
        "PatientSex",
    ]
    ds = read_dataset(path, header_only=True, tags=tags)
    with _quiet_pydicom():
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if not sop:
            raise Unreadable(UNREADABLE_DICOM, "no SOP Instance UID")
        return SliceHeader(
            sop_uid=sop,
            series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            z=_z_position(ds),
            modality=str(ds.get("Modality", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            sex=normalise_sex(ds.get("PatientSex")),
        )


def _z_position(ds) -> float | None:
    position = ds.get("ImagePositionPatient")
    try:
        if position is not None and len(position) == 3:
            return float(position[2])
        if ds.get("SliceLocation") is not None:
            return float(ds.SliceLocation)
    except (TypeError, ValueError):
        return None
    return None


def normalise_sex(value: object) -> str | None:
    text = str(value or "").strip().upper()
    return {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}.get(text)


def read_dicom_uint8(
    path: Path,
    *,
    modality: str,
    hu_window: tuple[float, float],
    frame: int | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A 2-D uint8 image at the file's own resolution, plus warnings (burned-in annotation).

    The frame's declared size (Rows x Columns) is checked against ``max_pixels`` before its
    pixels are decoded: compressed pixel data can declare far more than the file holds."""
    ds = read_dataset(path)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise Unreadable(NO_PIXEL_DATA)
    _check_declared_size(ds, max_pixels)
    with _quiet_pydicom():
        index = _frame_index(ds, frame)
        raw = _decode_frame(ds, index)
        image = to_uint8(raw, ds, modality=modality, hu_window=hu_window, frame=index)
        return image, _burned_in_warnings(ds)


def read_dicom_values(path: Path, frame: int | None = None) -> np.ndarray:
    """One frame in output units (HU on CT): the modality LUT applied, nothing else."""
    ds = read_dataset(path)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise Unreadable(NO_PIXEL_DATA)
    with _quiet_pydicom():
        index = _frame_index(ds, frame)
        return _modality_lut(_decode_frame(ds, index), ds, index)


def _check_declared_size(ds, max_pixels: int) -> None:
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise Unreadable(UNREADABLE_DICOM, "Rows / Columns not numbers") from None
    if rows * columns * max(samples, 1) > max_pixels:
        raise Unreadable(IMAGE_TOO_LARGE, f"declared {columns} x {rows}, limit {max_pixels:,}")


def _frame_index(ds, frame: int | None) -> int:
    n_frames = _frame_count(ds)
    index = n_frames // 2 if frame is None else frame
    if not 0 <= index < n_frames:
        raise Unreadable(UNREADABLE_DICOM, f"frame {index} asked, {n_frames} present")
    return index


def _burned_in_warnings(ds) -> tuple[str, ...]:
    value = ds.get("BurnedInAnnotation")
    if value is None or str(value).strip() == "":
        return (BURNED_IN_UNSTATED,)
    return () if str(value).strip().upper() == "NO" else (BURNED_IN_YES,)


def _decode_frame(ds, index: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    syntax_name = getattr(syntax, "name", "missing") if syntax else "missing"
    try:
        pixels = pixel_array(ds, index=index if _frame_count(ds) > 1 else None)
    except NotImplementedError:
        raise Unreadable(UNSUPPORTED_SYNTAX, syntax_name) from None
    except RuntimeError as exc:
        if "missing dependencies" in str(exc) or "plugins" in str(exc):
            raise Unreadable(NO_DECODER, _decoder_hint(syntax_name)) from None
        raise Unreadable(DAMAGED_COMPRESSED, syntax_name) from None
    except ValueError as exc:
        if "less than expected" in str(exc) or "expected length" in str(exc):
            raise Unreadable(TRUNCATED_DICOM) from None
        raise Unreadable(_damage_reason(syntax), syntax_name) from None
    except AttributeError:
        if syntax is None:
            raise Unreadable(UNSUPPORTED_SYNTAX, "no transfer syntax") from None
        raise Unreadable(NO_PIXEL_DATA) from None
    except Exception:
        raise Unreadable(_damage_reason(syntax), syntax_name) from None
    return _to_gray(np.asarray(pixels), ds)


def _damage_reason(syntax) -> str:
    return DAMAGED_COMPRESSED if syntax is not None and syntax.is_compressed else UNREADABLE_DICOM


def _decoder_hint(syntax_name: str) -> str:
    """Which permissive decoder reads the syntax (12-bit JPEG has none: convert such files)."""
    if "JPEG 2000" in syntax_name:
        hint = "install pylibjpeg and pylibjpeg-openjpeg"
    elif "JPEG-LS" in syntax_name:
        hint = "install pyjpegls"
    elif "Extended" in syntax_name:
        hint = "12-bit JPEG has no permissively licensed decoder: convert the files to uncompressed"
    else:
        hint = "install python-gdcm"
    return f"{syntax_name}: {hint}"


def _frame_count(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _to_gray(pixels: np.ndarray, ds) -> np.ndarray:
    """Colour images (RGB after pydicom's YBR conversion, or palette) to luminance in [0, 1]."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        full_scale = 255.0 if pixels.dtype == np.uint8 else float(np.iinfo(pixels.dtype).max)
        rgb = pixels[..., :3].astype(np.float64) / full_scale
        return rgb @ np.array([0.299, 0.587, 0.114])
    if pixels.ndim != 2:
        raise Unreadable(UNREADABLE_DICOM, f"pixel array of shape {pixels.shape}")
    return pixels


def to_uint8(
    pixels: np.ndarray,
    ds,
    *,
    modality: str,
    hu_window: tuple[float, float],
    frame: int = 0,
) -> np.ndarray:
    """Modality LUT, then the HU window (CT) or the file's VOI, then MONOCHROME1 inversion."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    monochrome = photometric.startswith("MONOCHROME")
    values = _modality_lut(pixels, ds, frame) if monochrome else pixels.astype(np.float64)
    if modality == "ct":
        unit = _window_linear_exact(values, *hu_window)
    elif monochrome:
        unit = _voi(values, ds, frame)
    else:  # colour, already luminance in [0, 1]
        unit = np.clip(values, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _modality_lut(pixels: np.ndarray, ds, frame: int = 0) -> np.ndarray:
    """A Modality LUT Sequence, else rescale slope/intercept (top level or functional groups)."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        try:
            return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
        except Exception:
            raise Unreadable(UNREADABLE_DICOM, "damaged Modality LUT") from None
    slope = _first_number(_frame_attribute(ds, "RescaleSlope", frame, _RESCALE_MACRO))
    intercept = _first_number(_frame_attribute(ds, "RescaleIntercept", frame, _RESCALE_MACRO))
    values = pixels.astype(np.float64)
    return values * (1.0 if slope is None else slope) + (intercept or 0.0)


_RESCALE_MACRO = "PixelValueTransformationSequence"
_VOI_MACRO = "FrameVOILUTSequence"


def _frame_attribute(ds, keyword: str, frame: int, macro: str):
    """A top-level attribute, else the same one in the per-frame or shared functional groups."""
    if keyword in ds:
        return ds.get(keyword)
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        sequence = ds.get(groups)
        if not sequence or len(sequence) <= index or macro not in sequence[index]:
            continue
        inner = sequence[index][macro].value
        if inner and keyword in inner[0]:
            return inner[0].get(keyword)
    return None


def _window_linear_exact(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """[low, high] to [0, 1], clipped: the documented fixed window used for CT."""
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _voi(values: np.ndarray, ds, frame: int = 0) -> np.ndarray:
    """The file's own VOI, to [0, 1]: VOI LUT Sequence, else the first window, else full range."""
    lut = _first_item(ds.get("VOILUTSequence"))
    if lut is not None:
        mapped = _apply_lut(values, lut)
        if mapped is not None:
            return mapped
    centre = _first_number(_frame_attribute(ds, "WindowCenter", frame, _VOI_MACRO))
    width = _first_number(_frame_attribute(ds, "WindowWidth", frame, _VOI_MACRO))
    if centre is not None and width is not None and width > 0:
        function = _frame_attribute(ds, "VOILUTFunction", frame, _VOI_MACRO)
        function = str(function or "LINEAR").upper()
        return window(values, centre, width, function)
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def window(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT and SIGMOID windows, output in [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width < 1:
        width = 1.0
    if width == 1:
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _apply_lut(values: np.ndarray, item) -> np.ndarray | None:
    """A VOI LUT (descriptor: entries, first mapped value, bits) to [0, 1]."""
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        data = item.LUTData
        # OW data holds 16-bit words whatever the nominal depth (little endian: the syntaxes read)
        table = (
            np.frombuffer(data, dtype="<u2") if isinstance(data, bytes) else np.asarray(data)
        ).astype(np.float64)
    except Exception:
        return None
    entries = entries or 65536
    table = table[:entries]
    if table.size == 0:
        return None
    index = np.clip(np.rint(values - first), 0, table.size - 1).astype(np.int64)
    top = max(float(2**bits - 1), float(table.max()))
    return table[index] / top


def _first_item(sequence):
    try:
        return sequence[0] if sequence else None
    except (TypeError, IndexError):
        return None


def _first_number(value) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, str | bytes):
            return float(value)
        if hasattr(value, "__len__"):
            return float(value[0]) if len(value) else None
        return float(value)
    except (TypeError, ValueError):
        return None
