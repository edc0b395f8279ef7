"""Where an audit's or a probe's images come from, resolved once for every command.

``check`` and ``probe`` read a data set the same way: one choice, one loader
(``audit.data.loading.load_chosen``), so the same flags give the same cohort on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from audit.constants import DEFAULT_MAX_IMAGE_PIXELS, MODALITIES
from audit.errors import UsageError
from audit.resolve.constraints import check_setting


@dataclass(frozen=True)
class DataChoice:
    """A data set on disk (``path``) or, only when asked, the built-in phantoms (``synthetic``).

    ``path`` and ``cache_dir`` stay out of ``repr``: folder names can carry identifiers."""

    modality: str
    image_size: int
    cache_dir: Path = field(repr=False)
    path: Path | None = field(default=None, repr=False)
    synthetic: bool = False
    source: str | None = None  # None: the layout is recognised
    finding: str = "Atelectasis"
    views: tuple[str, ...] = ("PA",)  # () keeps every view
    protocol: str | None = None  # "source-matters": the study's image lists
    strict: bool = False
    synthetic_patients: int = 100
    seed: int = 0  # the phantoms' seed
    progress: bool = False
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # declared size, checked before decoding
    # Options only some sources read (CheXpert, MIMIC-CXR, PadChest: uncertain, negatives,
    # views), as the user gave them; a source that takes none refuses them by name.
    source_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise UsageError(f"modality {self.modality!r}: use {' or '.join(MODALITIES)}")
        check_setting("image_size", self.image_size)
        check_setting("max_image_pixels", self.max_image_pixels)
        if self.synthetic:
            check_setting("synthetic_patients", self.synthetic_patients)
        elif self.path is None:
            raise UsageError("images are needed: give `data` PATH, or `synthetic` for phantoms")
