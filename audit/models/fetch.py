"""The local cache of reference weights: fetch one, verify it, list what is there, find the latest.

A reference decides what an audit compares against, so a cached file is only used when its bytes
are the ones that were checked: each fetch records the file's SHA-256 in `references/index.json`,
refuses a file whose hash differs from the one the user pinned (by `--sha256` or
`reference_sha256` in the settings file), and keeps a file only once it loads as a reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from audit.common.atomic import atomic_write_text
from audit.common.hashing import file_sha256
from audit.errors import UsageError
from audit.models.download import Transfer, download
from audit.resolve.settings import find_config_file, read_config_table

log = logging.getLogger("audit")

# Unofficial mirror of the RadImageNet ResNet50 (a torchvision state_dict); see README.
DEFAULT_URL = "https://huggingface.co/Lab-Rasool/RadImageNet/resolve/main/ResNet50.pt"
MIRROR_NOTE = (
    "Lab-Rasool/RadImageNet on Hugging Face is an unofficial mirror, not the RadImageNet "
    "authors' release; its model card declares the MIT licence"
)
SHA256_SETTING = "reference_sha256"
INDEX_NAME = "index.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NETWORK_HINT = (
    "; check the address or give another with `url`, or download the file by hand and give it "
    "to `medaudit check --reference PATH`"
)


@dataclass(frozen=True)
class ExpectedHash:
    """The SHA-256 a fetched file must have, and where the user declared it."""

    sha256: str
    source: str  # "`sha256`" (the option) or "reference_sha256 in medaudit.toml"


@dataclass(frozen=True)
class CachedReference:
    """One entry of `references/index.json`."""

    name: str
    url: str
    sha256: str
    bytes: int
    fetched_utc: str
    layout: str | None = None  # LoadedModel.format, e.g. radimagenet-hf
    arch: str | None = None


@dataclass(frozen=True)
class Fetched:
    """What `fetch_reference` left in the cache."""

    path: Path
    entry: CachedReference
    reused: bool  # already cached with the same bytes: nothing was downloaded
    notes: tuple[str, ...] = ()


def references_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "references"


def how_to_get_reference() -> str:
    return (
        "no reference weights given and none cached: run `medaudit reference fetch` to download "
        "the RadImageNet ResNet50 (with the same `cache_dir`, if you use one), or pass "
        "`reference` PATH to a reference file you have"
    )


def expected_sha256(flag: str | None, start: Path) -> ExpectedHash | None:
    """`--sha256` wins; otherwise `reference_sha256` from the settings file found from `start`."""
    if flag is not None:
        return ExpectedHash(_normalised_sha256(flag, "`sha256`"), "`sha256`")
    config = find_config_file(start)
    value = read_config_table(config).get(SHA256_SETTING) if config else None
    if value is None:
        return None
    source = f"{SHA256_SETTING} in {config.name}"
    return ExpectedHash(_normalised_sha256(value, source), source)


def _normalised_sha256(value: object, source: str) -> str:
    text = value.strip().lower().removeprefix("sha256:") if isinstance(value, str) else ""
    if not _SHA256.fullmatch(text):
        raise UsageError(f"{source} {value!r} is not a SHA-256: give its 64 hexadecimal digits")
    return text


def fetch_reference(
    url: str, cache_dir: Path, *, expected: ExpectedHash | None = None, progress: bool = False
) -> Fetched:
    """Download `url` into the cache (resuming a `.part`), verify it, load it, record it."""
    name = file_name_from_url(url)
    folder = references_dir(cache_dir)
    index = read_index(folder)
    reused = _reusable(folder, index.get(name), url, expected)
    if reused is not None:
        return Fetched(folder / name, reused, reused=True)
    part = _part_path(folder, name, url)
    size = download(Transfer(url, part, progress=progress, label=name, hint=_NETWORK_HINT))
    sha256 = file_sha256(str(part))
    if expected is not None and sha256 != expected.sha256:
        part.unlink(missing_ok=True)
        raise UsageError(
            f"refused {name} from {url}: its SHA-256 is {sha256} but {expected.source} expects "
            f"{expected.sha256}; the download was removed (check the address and the hash)"
        )
    loaded = _load_or_remove(part, url)
    _publish(part, folder / name)
    entry = CachedReference(name, url, sha256, size, _now_utc(), loaded.format, loaded.arch)
    _write_index(folder, {**{k: v for k, v in index.items() if k != name}, name: entry})
    return Fetched(folder / name, entry, reused=False, notes=loaded.notes)


def cached_reference(cache_dir: Path) -> Path | None:
    """The most recently fetched reference whose file still has its recorded SHA-256."""
    folder = references_dir(cache_dir)
    for entry in list_references(cache_dir):
        path = folder / entry.name
        if not path.is_file():
            continue
        if path.stat().st_size == entry.bytes and file_sha256(str(path)) == entry.sha256:
            return path
        log.warning(
            "cached reference %s no longer has its recorded SHA-256 (changed or damaged); "
            "skipped: run `medaudit reference fetch` again",
            entry.name,
        )
    return None


def list_references(cache_dir: Path) -> list[CachedReference]:
    """Index entries, most recently fetched first."""
    entries = list(read_index(references_dir(cache_dir)).values())
    return sorted(reversed(entries), key=lambda e: e.fetched_utc, reverse=True)


def listing_lines(cache_dir: Path) -> list[str]:
    """`medaudit reference list`: one row per cached reference."""
    folder = references_dir(cache_dir)
    entries = list_references(cache_dir)
    if not entries:
        return [f"no references cached in {folder}; fetch one with `medaudit reference fetch`"]
    rows = [("name", "layout", "size", "sha256")]
    for e in entries:
        size = f"{e.bytes / 1e6:.1f} MB" if (folder / e.name).is_file() else "missing"
        layout = f"{e.layout} ({e.arch})" if e.layout else "not recorded"
        rows.append((e.name, layout, size, e.sha256))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    return [*lines, f"({folder})"]


def file_name_from_url(url: str) -> str:
    """The cache file name: the URL's last path segment, reduced to safe characters."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"`url` {url!r}: give an http:// or https:// address; for a file you already have, "
            "pass it to `medaudit check --reference PATH`"
        )
    raw = urllib.parse.unquote(PurePosixPath(parts.path).name)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip(".")
    if not name or name == INDEX_NAME or name.endswith(".part"):
        raise UsageError(f"`url` {url!r} does not end in a file name, e.g. .../ResNet50.pt")
    return name


def read_index(folder: Path) -> dict[str, CachedReference]:
    path = folder / INDEX_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UsageError(
            f"cannot read {Path(path).name}: {getattr(error, 'strerror', None) or error}; delete "
            "it and fetch again"
        ) from None
    fields = {f.name for f in dataclasses.fields(CachedReference)} - {"name"}
    try:
        return {
            name: CachedReference(name, **{k: v for k, v in item.items() if k in fields})
            for name, item in raw.items()
        }
    except (AttributeError, TypeError):
        raise UsageError(
            f"{Path(path).name} is not a medaudit reference index; delete it and fetch again"
        ) from None


def _write_index(folder: Path, index: dict[str, CachedReference]) -> None:
    data = {name: _without_name(entry) for name, entry in index.items()}
    atomic_write_text(folder / INDEX_NAME, json.dumps(data, indent=2) + "\n")


def _without_name(entry: CachedReference) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(entry).items() if k != "name"}


def _reusable(
    folder: Path, entry: CachedReference | None, url: str, expected: ExpectedHash | None
) -> CachedReference | None:
    """The cached entry, when it came from this URL, still has its bytes and meets `expected`."""
    if entry is None or entry.url != url or not (folder / entry.name).is_file():
        return None
    if expected is not None and entry.sha256 != expected.sha256:
        return None
    return entry if file_sha256(str(folder / entry.name)) == entry.sha256 else None


def _part_path(folder: Path, name: str, url: str) -> Path:
    """Keyed by the URL, so a resumed download never appends one file's bytes to another's."""
    return folder / f"{name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part"


def _load_or_remove(part: Path, url: str):  # noqa: ANN202 - LoadedModel, imported late (torch)
    from audit.models.loading import load_reference

    try:
        return load_reference(part)
    except UsageError as error:
        part.unlink(missing_ok=True)
        raise UsageError(
            f"the file from {url} does not load as a reference and was removed: {error}"
        ) from None


def _publish(part: Path, final: Path) -> None:
    """Rename the complete, verified file into place; readers never see half of it."""
    os.replace(part, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
