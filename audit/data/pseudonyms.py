"""Keyed pseudonyms: the only form in which a patient or image identity leaves a source adapter.

Why keyed: NIH patient ids are small integers and image names follow a public pattern, so an
unkeyed (or publicly salted) hash could be reversed by hashing every candidate. The secret key is
made once per cache folder, readable by its owner only, and never written anywhere else; the same
key gives the same pseudonyms on every run, so cached cohorts and finished runs stay valid.
Deleting the key changes every pseudonym (and so every data hash): old runs are then not reused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.common.hashing import canonical
from audit.errors import UsageError

log = logging.getLogger(__name__)

KEY_FILE = "pseudonym.key"
_KEY_BYTES = 32


@dataclass(frozen=True, repr=False)
class Pseudonymizer:
    """HMAC-SHA256 under the cache folder's secret key; ``repr`` never shows the key."""

    key: bytes

    def digest(self, namespace: str, value: Any, length: int = 16) -> str:
        text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
        message = f"{namespace}\x00{text}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:length]

    def case_id(self, source: str, ref: str) -> str:
        return "c" + self.digest(f"case:{source}", ref, 15)

    def patient_key(self, source: str, patient: str) -> str:
        return "p" + self.digest(f"patient:{source}", patient, 15)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<secret>)"


def private_dir(path: Path) -> Path:
    """Create ``path`` (owner-only when new) and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def load_or_create_key(cache_dir: Path) -> Pseudonymizer:
    """The cache folder's key, made on first use with owner-only permissions."""
    private_dir(cache_dir)
    key_path = cache_dir / KEY_FILE
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Pseudonymizer(_read_key(key_path))
    with os.fdopen(fd, "wb") as handle:
        key = secrets.token_bytes(_KEY_BYTES)
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    return Pseudonymizer(key)


def _read_key(key_path: Path) -> bytes:
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        key_path.chmod(0o600)
        log.warning("the pseudonym key in the cache folder was readable by others; made owner-only")
    key = key_path.read_bytes()
    for _ in range(20):  # another process may have created the file and not yet written it
        if key:
            break
        time.sleep(0.05)
        key = key_path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise UsageError(
            f"the pseudonym key in the cache folder ({KEY_FILE}) is damaged; delete it to make a "
            "new one (pseudonyms and cached cohorts will then change)"
        )
    return key
