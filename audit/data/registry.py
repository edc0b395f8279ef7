"""The one registry of data sources: `--source` choices, detection order, official lists.

The built-in sources (NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG, PadChest, LIDC-IDRI, a manifest,
the phantoms) register here; a
source from outside the package calls :func:`register_source` (a test module, a user's script) or
names its class under the ``medaudit.data_sources`` entry point of an installed distribution.
Detection and the command line's `--source` choices are read from this registry, so a new source
needs no edit to medaudit. Nothing here names a path in a message: folder names can carry patient
identifiers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from audit.common.plugins import load_plugins, plugin_points
from audit.errors import UsageError

if TYPE_CHECKING:  # the interface module imports numpy and Pillow; the command line needs neither
    from audit.data.source import DataSource, OfficialLists

ENTRY_POINT_GROUP = "medaudit.data_sources"


@dataclass(frozen=True)
class _Declared:
    """A built-in source known by name before its module is imported (the command line builds
    its choices without importing pandas, pydicom or scikit-learn)."""

    name: str
    target: str  # "module:Class"
    reads_files: bool = True


_BUILTIN = (
    _Declared("nih-cxr14", "audit.data.nih:NihSource"),
    _Declared("chexpert", "audit.data.chexpert:ChexpertSource"),
    _Declared("mimic-cxr-jpg", "audit.data.mimic:MimicSource"),
    _Declared("padchest", "audit.data.padchest:PadchestSource"),
    _Declared("lidc-idri", "audit.data.lidc:LidcSource"),
    _Declared("manifest", "audit.data.manifest:ManifestSource"),
    _Declared("synthetic", "audit.data.synthetic:SyntheticSource", reads_files=False),
)
_BUILTIN_NAMES = tuple(d.name for d in _BUILTIN)
_registered: dict[str, DataSource] = {}
_state = {"builtins": False, "plugins": False}


def register_source(source: DataSource, *, replace: bool = False) -> DataSource:
    """Add a source; its ``name`` becomes a `--source` choice (when it reads files). A taken
    name is refused unless ``replace``. Returns the source."""
    from audit.data.source import DataSource

    if not isinstance(source, DataSource):
        raise TypeError("register_source takes a DataSource instance")
    name = getattr(source, "name", "")
    if not name or not isinstance(name, str):
        raise ValueError("a data source needs a non-empty string `name`")
    taken = name in _registered or name in _BUILTIN_NAMES
    if taken and not replace and _registered.get(name) is not source:
        raise ValueError(f"a data source named {name!r} is already registered")
    _registered[name] = source
    return source


def unregister_source(name: str) -> None:
    """Remove a source (a test's clean-up); the built-ins cannot be removed."""
    if name in _BUILTIN_NAMES:
        raise ValueError(f"{name!r} is built in")
    _registered.pop(name, None)


def _instantiate(target: str) -> DataSource:
    module, _, attr = target.partition(":")
    found = getattr(importlib.import_module(module), attr)
    return found() if isinstance(found, type) else found


def _load_builtins() -> None:
    if _state["builtins"]:
        return
    for declared in _BUILTIN:
        source = _instantiate(declared.target)
        if source.name != declared.name or source.reads_files != declared.reads_files:
            raise RuntimeError(f"built-in source {declared.name} is declared wrongly")
        _registered.setdefault(declared.name, source)
    _state["builtins"] = True  # only once every built-in imported: a failed import is retried


def _load_plugins() -> None:
    """Sources installed by other distributions, once per process (``audit.common.plugins``)."""
    _load_builtins()
    if not _state["plugins"]:
        _state["plugins"] = True
        load_plugins(ENTRY_POINT_GROUP, register_source)


def all_sources() -> tuple[DataSource, ...]:
    """Every registered source, in detection order (then by name)."""
    _load_plugins()
    return tuple(sorted(_registered.values(), key=lambda s: (s.detect_order, s.name)))


def file_source_names() -> tuple[str, ...]:
    """The `--source` choices: every source that reads a data set from disk. Built-ins are
    named without importing them; plugins by their entry point's name."""
    names = [d.name for d in _BUILTIN if d.reads_files]
    names += [n for n, s in _registered.items() if s.reads_files and n not in names]
    if not _state["plugins"]:
        names += [p.name for p in plugin_points(ENTRY_POINT_GROUP) if p.name not in names]
    return tuple(names)


def get_source(name: str) -> DataSource:
    _load_plugins()
    source = _registered.get(name)
    if source is None:
        known = ", ".join(file_source_names())
        raise UsageError(f"unknown `source` {name!r}; known: {known}")
    return source


def official_lists_of(name: str) -> OfficialLists | None:
    """The official lists of the source a cohort came from (None when it has none, or the
    source is no longer registered)."""
    _load_plugins()
    source = _registered.get(name)
    return None if source is None else source.official_lists


def sources_with_protocol(protocol: str) -> tuple[DataSource, ...]:
    return tuple(s for s in all_sources() if protocol in s.protocols)


# --- detection ----------------------------------------------------------------------------------


def check_data_path(path: Path) -> None:
    if not path.exists():
        raise UsageError("the `data` path does not exist or cannot be read; check the path")


def looked_for() -> str:
    return ", ".join(s.looked_for for s in all_sources() if s.reads_files and s.looked_for)


def detect_source(path: Path) -> tuple[DataSource, str]:
    """The source whose layout ``path`` is, and the evidence (a fixed name, never a path).

    Sources are asked in ``detect_order``; the first that recognises the path wins."""
    for source in all_sources():
        if not source.reads_files:
            continue
        evidence = source.detect(path)
        if evidence is not None:
            return source, evidence
    if path.is_file():
        raise UsageError(
            "`data` points to a file that is not a CSV manifest; give a folder (NIH ChestX-ray14, "
            "LIDC-IDRI) or a manifest CSV"
        )
    raise UsageError(
        f"could not recognise the data layout; looked for {looked_for()}; give `source` to choose"
    )
