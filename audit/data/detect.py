"""Which source a ``--data`` path is, when ``--source`` is not given.

Looked for, in this order: a ``.csv`` file (a manifest); a folder with ``Data_Entry_2017.csv``
(NIH ChestX-ray14); a folder with ``manifest.csv``; a folder whose tree holds an LIDC reading
session (XML with a ``LidcReadMessage`` root). Nothing here names the path in a message: folder
names can carry patient identifiers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from audit.data.lidc import is_lidc_xml
from audit.data.manifest import MANIFEST_NAME
from audit.data.nih import DATA_ENTRY_NAMES, find_data_entry
from audit.errors import UsageError

SOURCES = ("nih-cxr14", "lidc-idri", "manifest")
LOOKED_FOR = (
    f"{DATA_ENTRY_NAMES[0]} (NIH ChestX-ray14), LIDC XML reading sessions (LIDC-IDRI), "
    f"a .csv file or a {MANIFEST_NAME} (manifest with columns path,label,patient_id)"
)
_XML_SCAN_LIMIT = 20_000


@dataclass(frozen=True)
class Detection:
    """The source, how it was chosen, and the file that decided (a fixed name, never a path)."""

    source: str
    automatic: bool
    evidence: str


def check_data_path(path: Path) -> None:
    if not path.exists():
        raise UsageError("the `data` path does not exist or cannot be read; check the path")


def resolve_source(path: Path, source: str | None) -> Detection:
    check_data_path(path)
    if source is not None:
        if source not in SOURCES:
            raise UsageError(f"unknown `source` {source!r}; known: {', '.join(SOURCES)}")
        return Detection(source, False, "given by --source")
    return detect_source(path)


def detect_source(path: Path) -> Detection:
    if path.is_file():
        if path.name in DATA_ENTRY_NAMES:
            raise UsageError(
                f"`data` names {path.name}; give the NIH ChestX-ray14 folder that holds it"
            )
        if path.suffix.lower() == ".csv":
            return Detection("manifest", True, "a CSV file")
        raise UsageError(
            "`data` points to a file that is not a CSV manifest; give a folder (NIH ChestX-ray14, "
            "LIDC-IDRI) or a manifest CSV"
        )
    entry = find_data_entry(path)
    if entry is not None:
        return Detection("nih-cxr14", True, entry.name)
    if (path / MANIFEST_NAME).is_file():
        return Detection("manifest", True, MANIFEST_NAME)
    if _has_lidc_xml(path):
        return Detection("lidc-idri", True, "LIDC XML reading sessions")
    raise UsageError(
        f"could not recognise the data layout; looked for {LOOKED_FOR}; give `source` to choose"
    )


def _has_lidc_xml(root: Path) -> bool:
    seen = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            seen += 1
            if name.lower().endswith(".xml") and is_lidc_xml(Path(folder) / name):
                return True
            if seen > _XML_SCAN_LIMIT:
                return False
    return False
