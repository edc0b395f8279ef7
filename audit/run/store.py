"""The results store: one file per finished run, written atomically, keyed by the spec's hash.

A killed audit resumes where it stopped: a finished run is never redone or lost, and a partial or
corrupt file is never trusted (it fails to parse or its key does not match, so the run is redone).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from audit.common.atomic import atomic_write_text
from audit.train.engine import RunResult

log = logging.getLogger(__name__)
FORMAT = "medaudit-run-2"  # 2: runs record the training control


class ResultsStore:
    """Finished runs under ``<out>/runs/<key>.json``."""

    def __init__(self, out_dir: Path) -> None:
        self.folder = Path(out_dir) / "runs"

    def path_for(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> RunResult | None:
        """The finished run with this key, or None if absent, partial or corrupt."""
        path = self.path_for(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("ignoring an unreadable run file (%s); the run will be redone", path.name)
            return None
        if record.get("format") != FORMAT:
            log.info("redoing a run stored by another medaudit version (%s)", path.name)
            return None
        if record.get("result", {}).get("key") != key:
            log.warning("ignoring a run file that does not match its key (%s)", path.name)
            return None
        return _result_from_dict(record["result"])

    def put(self, result: RunResult, spec: dict[str, Any]) -> None:
        record = {"format": FORMAT, "spec": spec, "result": dataclasses.asdict(result)}
        atomic_write_text(self.path_for(result.key), json.dumps(record, allow_nan=True))


def _result_from_dict(data: dict[str, Any]) -> RunResult:
    fields = {f.name for f in dataclasses.fields(RunResult)}
    values = {k: v for k, v in data.items() if k in fields}
    values["scores"] = {k: tuple(v) for k, v in values["scores"].items()}
    values["case_ids"] = {k: tuple(v) for k, v in values["case_ids"].items()}
    values["labels"] = {k: tuple(v) for k, v in values["labels"].items()}
    return RunResult(**values)
