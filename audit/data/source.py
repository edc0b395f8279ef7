"""What a data source is: the one interface every layout users bring is read through.

A source recognises its layout on disk (:meth:`DataSource.detect`), lists its cases before
anything is decoded (:meth:`DataSource.plan`), says what identifies the data cheaply for the
decode-once cache (:meth:`DataSource.fingerprint`), which modalities and protocols it serves, and
which official lists it ships (:class:`OfficialLists`). The loader (``audit.data.loading``) does the
rest the same way for every source: decoding, the cache, pseudonyms, exclusions, the dry run.

A source that makes its images instead of reading them (the phantoms) says ``reads_files =
False`` and implements :meth:`DataSource.generate`. Sources are registered in
``audit.data.registry``; a source from outside the package registers itself there (or through
the ``medaudit.data_sources`` entry point) and needs no edit to medaudit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from audit.constants import DEFAULT_MAX_IMAGE_PIXELS, MODALITIES, PROTOCOLS
from audit.data.decode import DecodeSettings
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.errors import UsageError
from audit.resolve.constraints import check_setting

if TYPE_CHECKING:
    from audit.data.cases import Cohort
    from audit.resolve.data import DataChoice

DEFAULT_HU_WINDOW = (-1000.0, 400.0)
"""CT lung window: -1000 HU (air) -> 0, +400 HU (dense bone edge) -> 255; as the phantom CT."""


@dataclass(frozen=True)
class DataRequest:
    """What to load and how to preprocess it; every field that changes pixels is in the cache key.

    ``path`` and ``cache_dir`` stay out of ``repr`` (folder names can carry identifiers).
    ``source`` None detects the layout. ``finding`` and ``views`` select NIH images (``views``
    empty keeps every view); a manifest lists its own images and labels. ``protocol``
    "source-matters" uses the study's image lists (NIH only). ``hu_window`` maps CT HU to grey
    (CT only). ``source_options`` is read by the chosen source only (LIDC: a ``LidcLabelRule``;
    None: the source's defaults). ``workers`` None decodes on every available core (up to 8).
    """

    path: Path = field(repr=False)
    modality: str
    _: KW_ONLY
    cache_dir: Path = field(repr=False)
    source: str | None = None
    finding: str = "Atelectasis"
    views: tuple[str, ...] = ("PA",)
    protocol: str | None = None
    image_size: int = 256
    strict: bool = False
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW
    source_options: Any = field(default=None, repr=False)  # may hold a plugin's paths
    workers: int | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger declared images are left out

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "views", tuple(str(v).strip().upper() for v in self.views))
        if self.modality not in MODALITIES:
            raise UsageError(f"`modality` {self.modality!r}; use one of {', '.join(MODALITIES)}")
        check_setting("image_size", self.image_size)  # the one row every command uses
        try:
            low, high = (float(v) for v in self.hu_window)
        except (TypeError, ValueError):
            raise UsageError(
                f"HU window {self.hu_window!r}; give two numbers, low and high"
            ) from None
        if not low < high:
            raise UsageError(
                f"HU window {self.hu_window!r}; the low end must be below the high end"
            )
        object.__setattr__(self, "hu_window", (low, high))
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise UsageError(f"unknown `protocol` {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"workers={self.workers}; use 1 or more")

    @property
    def decode_settings(self) -> DecodeSettings:
        window = self.hu_window if self.modality == "ct" else DEFAULT_HU_WINDOW
        return DecodeSettings(
            self.image_size, self.modality, window, max_pixels=self.max_image_pixels
        )


@dataclass(frozen=True)
class OfficialLists:
    """The names of a source's own train/validation and test lists, as cohort subsets.

    The probe scores the official test list when there is one, and ``official_split`` makes
    folds from the training list with that test set.
    """

    train_val: str
    test: str
    label: str = "official"  # how the dry run names them ("nih official")


class DataSource:
    """One layout of images, labels and patients (see the module docstring).

    Class attributes say what the source is; a subclass overrides :meth:`detect`, :meth:`plan`
    and, where a cheaper or sturdier identity exists, :meth:`fingerprint`.
    """

    name: ClassVar[str]  # the `--source` value and results.json's data.source
    title: ClassVar[str]  # for people: "NIH ChestX-ray14"
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    looked_for: ClassVar[str] = ""  # what detection looks for, for the "not recognised" message
    detect_order: ClassVar[int] = 100  # lower is tried first; a file-specific layout goes first
    protocols: ClassVar[tuple[str, ...]] = ()  # protocols whose image lists this source holds
    official_lists: ClassVar[OfficialLists | None] = None
    reads_files: ClassVar[bool] = True  # False: images are made, not read (the phantoms)
    option_names: ClassVar[tuple[str, ...]] = ()  # the source_options mapping's keys it reads

    def detect(self, path: Path) -> str | None:
        """The evidence (a fixed file name or a phrase, never a path) when ``path`` is this
        layout, else None. Never raises for a layout that is not this one."""
        return None

    def plan(self, request: DataRequest) -> SourcePlan:
        """The images to decode with their labels and patients, in the source's order."""
        raise NotImplementedError(f"data source {self.name} lists no files")

    def fingerprint(self, request: DataRequest, plan: Callable[[], SourcePlan]) -> Any:
        """What identifies the data for the cache key: by default each planned file's listing
        entry, size and modification time (``plan`` builds the plan at most once)."""
        return {"entries": [entry_identity(e) for e in plan().entries]}

    def decode_settings(
        self, request: DataRequest, plan: Callable[[], SourcePlan]
    ) -> DecodeSettings:
        """The settings this source's images are decoded with: the request's, unless the source
        maps pixels by one rule for the whole data set (PadChest's window); part of the cache key."""
        return request.decode_settings

    def check_request(self, request: DataRequest) -> None:
        """Refuse a modality this source cannot serve, in one line (the loader checks the
        protocol against every source's ``protocols``)."""
        if request.modality not in self.modalities:
            raise UsageError(
                f"{self.title} holds {' and '.join(self.modalities).upper()} images; use "
                f"`modality` {' or '.join(self.modalities)}"
            )
        options = request.source_options
        if isinstance(options, Mapping):
            unread = sorted(set(options) - set(self.option_names))
            if unread:
                raise UsageError(
                    f"{', '.join(f'`{k}`' for k in unread)} does not apply to {self.title}"
                    + (f" (it reads {', '.join(self.option_names)})" if self.option_names else "")
                )

    def generate(self, choice: DataChoice) -> Cohort:
        """The cohort of a source that makes its images (``reads_files`` False)."""
        raise NotImplementedError(f"data source {self.name} reads files; it generates nothing")


def file_stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def entry_identity(entry: PlannedImage | PlannedProblem) -> Any:
    """A planned entry as the cache key sees it: its fields, and its file's size and mtime."""
    if isinstance(entry, PlannedProblem):
        return ["problem", entry.ref, entry.problem.reason]
    try:
        stat = file_stat(entry.path)
    except OSError:
        stat = (-1, -1)
    fields = dataclasses.asdict(entry)
    fields["path"] = str(entry.path)
    return [fields, *stat]
