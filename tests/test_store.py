"""The results store: atomic writes, reuse by key, partial files never trusted."""

from __future__ import annotations

import json
from pathlib import Path

from audit.common.atomic import atomic_write_text
from audit.run.store import ResultsStore
from audit.train.engine import RunResult


def make_result(key: str = "k" * 24) -> RunResult:
    return RunResult(
        key=key,
        role="user",
        confounder="tag",
        level=0.5,
        fold=0,
        auc={"ood": 0.4, "iid": 0.9},
        scores={"ood": (0.1, 0.9)},
        case_ids={"ood": ("C1", "C2")},
        labels={"ood": (0, 1)},
        epochs_run=3,
        best_epoch=2,
        best_val_loss=0.5,
        seconds=1.0,
        device="cpu",
    )


def test_put_then_get_round_trips(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    result = make_result()
    store.put(result, {"key": result.key})
    assert store.get(result.key) == result


def test_missing_run_is_none(tmp_path: Path) -> None:
    assert ResultsStore(tmp_path).get("absent") is None


def test_truncated_file_is_ignored(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    result = make_result()
    store.put(result, {"key": result.key})
    path = store.path_for(result.key)
    path.write_text(path.read_text()[:40])
    assert store.get(result.key) is None


def test_file_under_the_wrong_key_is_ignored(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.put(make_result("a" * 24), {})
    store.path_for("a" * 24).rename(store.path_for("b" * 24))
    assert store.get("b" * 24) is None


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_text(target, json.dumps({"a": 1}))
    atomic_write_text(target, json.dumps({"a": 2}))
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
