"""Download one file over HTTP(S) into a `.part` file, resuming where a broken transfer stopped.

Reference weights are around 100 MB and links break; starting over each time wastes the user's
time, so every received byte is kept and the next request asks for the rest with a Range header.
Only the standard library is used, so proxies and certificates behave as in any Python program.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from audit import __version__
from audit.errors import UsageError

log = logging.getLogger("audit")

_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


@dataclass(frozen=True)
class Transfer:
    """How to fetch: the URL, where the bytes go, and how patient to be."""

    url: str
    part: Path
    progress: bool = False  # a tqdm bar on stderr
    label: str = ""  # the bar's title
    attempts: int = 3  # requests per call; each one after the first resumes
    timeout_s: float = 60.0
    hint: str = ""  # appended to network errors: what the user can do instead


class _Broken(Exception):
    """The connection ended before the announced length: resume from what was kept."""


def download(transfer: Transfer) -> int:
    """Fill `transfer.part` with the whole file and return its size in bytes.

    A `.part` left by an earlier call is resumed, not restarted. Network failures are one-line
    UsageErrors; the bytes received so far stay in the `.part` file for the next call.
    """
    transfer.part.parent.mkdir(parents=True, exist_ok=True)
    attempt = 1
    while True:
        try:
            return _request_once(transfer)
        except _Broken as broken:
            kept = _size(transfer.part)
            if attempt >= transfer.attempts:
                raise UsageError(
                    f"download from {transfer.url} broke off {attempt} times ({broken}); the "
                    f"{kept} bytes received are kept in {transfer.part.name} and the next run "
                    f"resumes from them{transfer.hint}"
                ) from None
            log.warning("download interrupted (%s); resuming from byte %d", broken, kept)
            attempt += 1


def _request_once(transfer: Transfer) -> int:
    start = _size(transfer.part)
    headers = {"User-Agent": f"medaudit/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(transfer.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=transfer.timeout_s)  # noqa: S310
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # the kept bytes do not fit this file: start over
            transfer.part.unlink(missing_ok=True)
            raise _Broken("the server refused to resume; starting over") from None
        raise UsageError(
            f"cannot fetch {transfer.url}: HTTP {error.code} {error.reason}{transfer.hint}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise UsageError(f"cannot reach {transfer.url}: {reason}{transfer.hint}") from None
    with response:
        offset, total = _where_it_starts(response, start)
        if offset != start:
            log.info("the server sent the whole file again; restarting the download")
        return _receive(response, transfer, offset, total)


def _where_it_starts(response: http.client.HTTPResponse, start: int) -> tuple[int, int | None]:
    """(byte offset of the body, whole file size if announced)."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match and int(match.group(1)) == start:
            whole = match.group(2)
            return start, None if whole == "*" else int(whole)
        raise _Broken("the server answered the resume request with another byte range")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _receive(
    response: http.client.HTTPResponse, transfer: Transfer, offset: int, total: int | None
) -> int:
    from tqdm import tqdm

    received = offset
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=transfer.label or transfer.part.name, file=sys.stderr,
        disable=not transfer.progress, leave=False,
    )  # fmt: skip
    with bar, open(transfer.part, "ab" if offset else "wb") as out:
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise _Broken(f"{type(error).__name__} after {received} bytes") from None
        finally:
            out.flush()
            os.fsync(out.fileno())
    if total is not None and received < total:
        raise _Broken(f"connection closed after {received} of {total} bytes")
    return received


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
