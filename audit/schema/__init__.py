"""The results.json contract: one versioned JSON Schema that every stage writes to."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = "0"


@cache
def results_schema() -> dict[str, Any]:
    text = resources.files("audit.schema").joinpath("results.schema.json").read_text("utf-8")
    return json.loads(text)


def validate_results(results: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when results break the contract; an embedded probe
    (``check --probe``) is held to the probe's own schema."""
    import jsonschema

    jsonschema.validate(results, results_schema())
    if "probe" in results:
        from audit.probe.outputs import validate_probe_results

        validate_probe_results(results["probe"])
