"""Why a file was left out: fixed reasons that the report counts, and the exception carrying one.

A reason is a short fixed phrase (it becomes a key of ``Cohort.excluded``); a detail may add a
transfer syntax name or a size, never a path, a tag value or a library's own message, which can
quote either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FILE_NOT_FOUND = "image file not found"
NOT_AN_IMAGE = "not a PNG, JPEG or DICOM file"
DAMAGED_IMAGE = "damaged or truncated PNG/JPEG"
NOT_DICOM = "not a DICOM file"
TRUNCATED_DICOM = "truncated DICOM"
NO_PIXEL_DATA = "no pixel data"
UNSUPPORTED_SYNTAX = "unknown or unsupported transfer syntax"
NO_DECODER = "no decoder installed for the compression"
DAMAGED_COMPRESSED = "damaged compressed pixel data"
UNREADABLE_DICOM = "unreadable DICOM"
DECODER_ERROR = "unreadable file (unexpected decoder error)"
UNREADABLE_XML = "unreadable LIDC reading session (XML)"
NOT_IN_DATA_ENTRY = "listed by the preset but not in Data_Entry_2017.csv"
IMAGE_TOO_LARGE = "image larger than the pixel limit (max_image_pixels)"
UNREADABLE_FILE = "file or folder that cannot be read"


class Unreadable(Exception):
    """A file that cannot be used; ``reason`` is one of the fixed phrases above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason} ({detail})")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Quarantined:
    """A file left out: its 1-based position in the source's list, its case pseudonym, why."""

    position: int
    case_id: str
    reason: str
    detail: str = ""

    def describe(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"file #{self.position} (case {self.case_id}): {self.reason}{detail}"


def file_problem(path: Path) -> Unreadable | None:
    """None when ``path`` is a file; else why it is left out. An OSError (a name too long for
    the file system, a folder that cannot be listed, a symlink loop) is that file's problem,
    counted under a fixed reason, never the audit's: it is not raised with its path."""
    try:
        return None if path.is_file() else Unreadable(FILE_NOT_FOUND)
    except OSError as exc:
        return Unreadable(UNREADABLE_FILE, exc.strerror or type(exc).__name__)


def is_file(path: Path) -> bool:
    """``Path.is_file`` that says False, rather than raising, for a path the system refuses."""
    return file_problem(path) is None
