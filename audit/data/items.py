"""What a source adapter hands the loader: the images it selected, before anything is decoded.

A planned image still carries the original identities (``ref``, ``patient``) because the loader
must hash them; they live in memory only and are turned into pseudonyms before any case, cache
entry, log line or message is made. ``__repr__`` hides them so a debugger or a stray f-string
cannot print one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audit.data.problems import Unreadable


@dataclass(frozen=True)
class PlannedImage:
    """One image to decode. ``subsets`` names the official or study lists it belongs to."""

    path: Path
    ref: str
    patient: str
    label: int
    sex: str | None = None
    age: float | None = None
    view: str | None = None
    frame: int | None = None
    subsets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"PlannedImage(label={self.label}, sex={self.sex}, view={self.view}, <identifiers hidden>)"


@dataclass(frozen=True)
class PlannedProblem:
    """A candidate image that cannot be used, found before decoding (e.g. its file is missing)."""

    ref: str
    problem: Unreadable

    def __repr__(self) -> str:
        return f"PlannedProblem({self.problem.reason!r}, <identifiers hidden>)"


@dataclass(frozen=True)
class SourcePlan:
    """The adapter's selection. ``entries`` keeps the source's order; problems keep their place.

    ``selection`` counts how the source's rows were filtered (by design, not by failure: other
    findings, other views); ``warnings`` counts caveats found while planning.
    """

    source: str
    entries: tuple[PlannedImage | PlannedProblem, ...]
    description: str
    selection: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
