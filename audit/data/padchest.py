"""PadChest as published: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``)
beside the numbered image folders, ``<ImageDir>/<ImageID>`` 16-bit PNGs.

Selection, as NIH's: positives are images whose ``Labels`` include the finding (PadChest's labels
are lowercase phrases, matched case-insensitively: "Atelectasis" finds "atelectasis", while
"laminar atelectasis" is another label); negatives are images labelled exactly ``['normal']``
(``negatives="absent"``: every image without the finding); the others are left out by design.
Views: frontal (Projection PA, AP, AP_horizontal) by default; L is lateral. PadChest's labels have
no uncertain value, so its source options are ``views`` and ``negatives`` only.

Grey levels: the PNGs' 16-bit ranges differ from image to image, so ONE window for the whole data
set maps them to 8 bits: the 0.5th and 99.5th percentiles of the pixels of up to 32 images spread
evenly over the CSV's rows (whatever is selected), computed when the data set is planned and
recorded in the description and the cache key. Never an image's own range (it follows the image's
exposure: a confounder) nor its low byte. 8-bit PNGs are used as they are. The decoder gets the
window from :meth:`PadchestSource.decode_settings`, which the loader must use in place of
``request.decode_settings``.

Patients are ``PatientID`` (hashed). ``PatientBirth`` is an identifier: it is read only to derive
the age at the study (from ``StudyDate_DICOM``'s year) in five-year bands (60 means 60-64, 90 means
90 and over), then dropped: no date reaches a case, the cache or a message. No official split.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.data.chexpert import (
    FRONTAL,
    LATERAL,
    LEFT_OUT_OTHER,
    CxrOptions,
    describe_selection,
    detect_csv,
    find_csv,
    read_options,
    read_table,
)
from audit.data.decode import DecodeSettings, WindowedDecodeSettings, read_levels
from audit.data.dicom import normalise_sex
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import FILE_NOT_FOUND, Unreadable, is_file
from audit.data.source import DataRequest, DataSource, file_stat
from audit.errors import UsageError

SOURCE = "padchest"
TITLE = "PadChest"
CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
REQUIRED = ("ImageID", "ImageDir", "PatientID", "PatientSex_DICOM", "Projection", "Labels")
OPTIONAL = ("PatientBirth", "StudyDate_DICOM")
OPTION_NAMES = ("views", "negatives")
NEGATIVE = "normal"
PROJECTIONS = {"PA": FRONTAL, "AP": FRONTAL, "AP_HORIZONTAL": FRONTAL, "L": LATERAL}
NO_PATIENT = "no PatientID in the CSV row"
LEFT_OUT_NO_LABELS = "left out: Labels empty or not a list"

Window = tuple[float, float]
FULL_RANGE: Window = (0.0, 65535.0)  # when no sampled image is 16-bit
WINDOW_IMAGES = 32
WINDOW_PERCENTILES = (0.5, 99.5)
_WINDOW_SIDE = 512  # each sampled image is read at about this many pixels a side (strided)
AGE_BAND, OLDEST_BAND = 5, 90


@dataclass(frozen=True)
class PadchestPlan(SourcePlan):
    """The plan, with the one window its 16-bit PNGs are decoded with and how many sampled
    images chose it."""

    window: Window = FULL_RANGE
    window_images: int = 0


def parse_labels(text: str) -> frozenset[str]:
    """``"['pneumonia', ' cardiomegaly']"`` as lowercase labels; empty when not such a list."""
    if len(text) > 10_000:
        return frozenset()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return frozenset()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return frozenset()
    return frozenset(v.strip().lower() for v in value if v.strip())


def age_band(birth: str, study_date: str) -> float | None:
    """The age at the study in five-year bands, from the two years only (the date is not kept)."""
    born, studied = re.match(r"\s*(\d{4})", birth), re.match(r"\s*(\d{4})", study_date)
    if born is None or studied is None:
        return None
    age = int(studied.group(1)) - int(born.group(1))
    return float(min(age // AGE_BAND * AGE_BAND, OLDEST_BAND)) if 0 <= age <= 120 else None


def view_of(projection: str) -> tuple[str | None, str | None]:
    code = projection.strip().upper()
    kind = PROJECTIONS.get(code)
    return (LATERAL if kind == LATERAL else code or None), kind


def image_path(root: Path, folder: str, image: str) -> Path | None:
    """``<ImageDir>/<ImageID>`` (ImageDir may be written "12.0"), or the image at the root."""
    match = re.fullmatch(r"(\d+)\.0*", folder)
    folder = match.group(1) if match else folder
    candidates = [root / folder / image, root / image] if folder else [root / image]
    return next((c for c in candidates if is_file(c)), None)


def read_padchest(root: Path) -> pd.DataFrame:
    """The CSV's columns medaudit reads; the birth date only as the age band it gives."""
    path = find_csv(root, CSV_NAME)
    if path is None:
        raise UsageError(
            f"the PadChest folder has no {CSV_NAME}(.gz); give the folder that holds it"
        )
    table = read_table(path, REQUIRED, OPTIONAL, title=TITLE)
    births, dates = table.pop("PatientBirth"), table.pop("StudyDate_DICOM")
    table["age"] = [age_band(b, d) for b, d in zip(births, dates, strict=True)]
    del births, dates
    return table


def dataset_window(root: Path, table: pd.DataFrame, max_pixels: int) -> tuple[Window, int]:
    """The data set's window and the number of 16-bit images it was read from: up to
    ``WINDOW_IMAGES`` rows spread evenly over the whole CSV."""
    n = len(table)
    rows = table.iloc[np.unique(np.rint(np.linspace(0, n - 1, min(n, WINDOW_IMAGES))).astype(int))]
    files = [image_path(root, d, i) for d, i in zip(rows["ImageDir"], rows["ImageID"], strict=True)]
    identities = tuple((str(f), *file_stat(f)) for f in files if f is not None)
    return _window_of(identities, max_pixels)


@functools.lru_cache(maxsize=8)
def _window_of(identities: tuple[tuple[str, int, int], ...], max_pixels: int) -> tuple[Window, int]:
    """Percentiles of the sampled images' pixels (once per process for unchanged files)."""
    levels = []
    for path, *_stat in identities:
        try:
            values = read_levels(Path(path), max_pixels)
        except Unreadable:
            continue  # left out (and counted) when the cohort is decoded
        if values.dtype == np.uint8 or values.ndim != 2:
            continue
        step = max(1, -(-max(values.shape) // _WINDOW_SIDE))
        levels.append(values[::step, ::step].astype(np.float64).ravel())
    if not levels:
        return FULL_RANGE, 0
    low, high = (float(v) for v in np.percentile(np.concatenate(levels), WINDOW_PERCENTILES))
    return (low, max(high, low + 1.0)), len(levels)


def _finding(labels: Sequence[frozenset[str]], finding: str) -> str:
    """The finding as PadChest writes it; the message names no value from the CSV."""
    wanted = str(finding).strip().lower()
    if wanted != NEGATIVE and any(wanted in row for row in labels):
        return wanted
    raise UsageError(
        f"`finding` {str(finding)[:60]!r} labels no image in {CSV_NAME}; PadChest's labels are "
        "lowercase phrases, e.g. atelectasis, pneumonia, cardiomegaly, pleural effusion"
    )


def plan_padchest(root: Path, finding: str, options: CxrOptions, max_pixels: int) -> PadchestPlan:
    table = read_padchest(root)
    labels = [parse_labels(text) for text in table["Labels"]]
    name = _finding(labels, finding)
    window, sampled = dataset_window(root, table, max_pixels)
    selection: Counter[str] = Counter({f"rows in {CSV_NAME}": len(table)})
    entries: list[PlannedImage | PlannedProblem] = []
    columns = ["ImageID", "ImageDir", "PatientID", "PatientSex_DICOM", "Projection", "age"]
    for (image, folder, patient, sex, projection, age), found in zip(
        table[columns].itertuples(False, None), labels, strict=True
    ):
        view, kind = view_of(projection)
        if not options.keeps(view, kind):
            selection[options.left_out_by_view(kind)] += 1
            continue
        if not found:
            selection[LEFT_OUT_NO_LABELS] += 1
            continue
        if name in found:
            label = 1
        elif options.negatives == "absent" or found == {NEGATIVE}:
            label = 0
        else:
            selection[LEFT_OUT_OTHER] += 1
            continue
        file = image_path(root, folder, image)
        if not patient:
            entries.append(PlannedProblem(image, Unreadable(NO_PATIENT)))
        elif file is None:
            entries.append(PlannedProblem(image, Unreadable(FILE_NOT_FOUND)))
        else:
            entries.append(
                PlannedImage(
                    path=file,
                    ref=image,
                    patient=patient,
                    label=label,
                    sex=normalise_sex(sex),
                    age=None if pd.isna(age) else float(age),
                    view=view,
                )
            )
    selection["selected"] = sum(isinstance(e, PlannedImage) for e in entries)
    low, high = window
    chosen = (
        f"the {WINDOW_PERCENTILES[0]:g}-{WINDOW_PERCENTILES[1]:g} percentiles of {sampled} "
        "sampled images"
        if sampled
        else "the full 16-bit range: no sampled image was 16-bit"
    )
    description = (
        f"{describe_selection(TITLE, name, NEGATIVE, options, uncertain=False)}; 16-bit PNGs "
        f"by one window for the data set, {low:g}-{high:g} to 0-255 ({chosen})"
    )
    return PadchestPlan(
        SOURCE, tuple(entries), description, dict(selection), window=window, window_images=sampled
    )


class PadchestSource(DataSource):
    """PadChest as published; ``source_options``: a :class:`CxrOptions` or a mapping of
    ``views`` and ``negatives`` (None: frontal, 'normal' negatives)."""

    option_names = OPTION_NAMES

    name = SOURCE
    title = TITLE
    modalities = ("cxr",)
    looked_for = f"{CSV_NAME}(.gz) (PadChest)"
    detect_order = 16

    def detect(self, path: Path) -> str | None:
        return detect_csv(path, CSV_NAME, TITLE)

    def plan(self, request: DataRequest) -> PadchestPlan:
        options = read_options(request.source_options, TITLE, OPTION_NAMES)
        return plan_padchest(request.path, request.finding, options, request.max_image_pixels)

    def fingerprint(self, request: DataRequest, plan: Callable[[], SourcePlan]) -> Any:
        """The planned files, the options and the window (it changes every decoded pixel)."""
        options = read_options(request.source_options, TITLE, OPTION_NAMES)
        planned = plan()
        window = planned.window if isinstance(planned, PadchestPlan) else None
        rule = {"images": WINDOW_IMAGES, "percentiles": WINDOW_PERCENTILES}
        return {
            **super().fingerprint(request, plan),
            "options": options,
            "window": window,
            "window_rule": rule,
        }

    def decode_settings(
        self, request: DataRequest, plan: Callable[[], SourcePlan]
    ) -> DecodeSettings:
        """The request's settings with the data set's window for every 16-bit PNG."""
        base = request.decode_settings
        planned = plan()
        if not isinstance(planned, PadchestPlan):
            return base
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        return WindowedDecodeSettings(**values, raw_window=planned.window)
