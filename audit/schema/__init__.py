"""The results.json contract: one versioned JSON Schema, and the one writer of results.json.

Every results document (an audit's, a probe's) is validated against its schema and serialised
here, the same bytes for the file, the PDF's embedded copy and its SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1"  # 1: the gate is the reliance gap; "0" results are still rendered
PROBE_SCHEMA_VERSION = "0"


@cache
def results_schema() -> dict[str, Any]:
    text = resources.files("audit.schema").joinpath("results.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def probe_schema() -> dict[str, Any]:
    text = resources.files("audit.schema").joinpath("probe.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def in_progress_schema() -> dict[str, Any]:
    text = resources.files("audit.schema").joinpath("in_progress.schema.json").read_text("utf-8")
    return json.loads(text)


def validate_probe_results(results: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when a probe's results break their contract."""
    import jsonschema

    jsonschema.validate(results, probe_schema())


def validate_results(results: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when results break the contract; an embedded probe
    (``check --probe``) is held to the probe's own schema."""
    import jsonschema

    jsonschema.validate(results, results_schema())
    if "probe" in results:
        validate_probe_results(results["probe"])


def results_bytes(results: Mapping[str, Any]) -> bytes:
    """results.json's bytes: strict JSON (no NaN), indented, one trailing newline."""
    return (json.dumps(results, indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_results(results: dict[str, Any], path: Path) -> Path:
    """Validate ``results`` against its schema (by its ``kind``), then write it atomically."""
    from audit.common.atomic import atomic_write_bytes

    if results.get("kind") == "probe":
        validate_probe_results(results)
    elif results.get("kind") == "in_progress":
        import jsonschema

        jsonschema.validate(results, in_progress_schema())
    else:
        validate_results(results)
    atomic_write_bytes(path, results_bytes(results))
    return path
