"""--repeats: independent training draws per fold, sharing its split, averaged within the fold."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from audit_checks import assert_finished

from audit import cli
from audit.analysis.summaries import fold_results
from audit.plan.grid import ModelRef, build_runs
from audit.plan.splits import PatientSplit, SplitTable
from audit.resolve.confounders import resolve_confounders
from audit.resolve.settings import Settings
from audit.train.engine import RunResult


def _specs(repeats: int):
    settings = Settings(levels=(0.0, 1.0), folds=2, repeats=repeats, confounders=("tag",))
    split = PatientSplit(
        test=np.arange(4), folds=((np.arange(4, 8), np.arange(8, 10)),) * 2
    )  # fmt: skip
    models = [
        ModelRef(role, "resnet18", role * 8, "f", "imagenet", role)
        for role in ("user", "reference")
    ]
    confounders = resolve_confounders(("tag",), {}, "cxr", seed=0, work_size=32)
    return build_runs(settings, models, confounders, "data", SplitTable(default=split))


def test_repeats_multiply_the_runs_and_keep_the_first_draw_as_it_was() -> None:
    one, three = _specs(1), _specs(3)
    assert len(three) == 3 * len(one)
    assert {s.key for s in one} == {s.key for s in three if s.repeat == 0}, "stored runs reused"
    by_draw = {(s.role, s.level, s.fold, s.repeat): s for s in three}
    for (role, level, fold, repeat), spec in by_draw.items():
        assert spec.cell == (spec.confounder, level, fold), "a repeat shares its fold's cell"
        if repeat:
            assert spec.seed != by_draw[(role, level, fold, 0)].seed, "an independent draw"
        partner = "reference" if role == "user" else "user"
        assert spec.seed == by_draw[(partner, level, fold, repeat)].seed, "models stay paired"
    assert len({s.key for s in three}) == len(three)


def _result(fold: int, repeat: int, auc: float, scores: tuple[float, ...]) -> RunResult:
    return RunResult(
        key=f"k{fold}{repeat}", role="user", confounder="tag", level=1.0, fold=fold,
        auc={"ood": auc}, scores={"ood": scores}, case_ids={"ood": ("a", "b")},
        labels={"ood": (0, 1)}, epochs_run=1, best_epoch=1, best_val_loss=0.5, seconds=1.0,
        device="cpu", operating={"ood": {"sensitivity": auc, "specificity": None}},
        repeat=repeat,
    )  # fmt: skip


def test_a_folds_repeats_are_averaged_before_anything_else() -> None:
    runs = [
        _result(0, 0, 0.6, (0.1, 0.5)),
        _result(0, 1, 0.8, (0.3, 0.9)),
        _result(1, 0, 0.7, (0.2, 0.4)),
    ]
    folded = {r.fold: r for r in fold_results(runs)}
    assert len(folded) == 2
    assert folded[0].auc["ood"] == pytest.approx(0.7)
    assert folded[0].scores["ood"] == pytest.approx((0.2, 0.7))
    assert folded[0].operating["ood"] == {"sensitivity": pytest.approx(0.7), "specificity": None}
    assert folded[1] == runs[2], "a fold without repeats is left as it is"
    with pytest.raises(ValueError, match="different test cases"):
        fold_results([runs[0], dataclasses.replace(runs[1], case_ids={"ood": ("a", "c")})])


def test_an_audit_with_repeats_records_each_draw_and_reuses_the_first(tmp_path) -> None:
    torch.manual_seed(0)
    user, reference = tmp_path / "user.pt", tmp_path / "reference.pt"
    torch.save(torchvision.models.resnet18().state_dict(), user)
    torch.save(torchvision.models.resnet18().state_dict(), reference)
    argv = [
        "--quiet", "check", str(user), "--modality", "cxr", "--synthetic",
        "--reference", str(reference), "--out", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--confounders", "tag", "--levels", "0,1",
        "--folds", "1", "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
        "--input-size", "32", "--image-size", "32", "--synthetic-patients", "40",
        "--resamples", "100", "--no-report",
    ]  # fmt: skip
    assert_finished(cli.main(argv), tmp_path / "out")
    results = assert_finished(cli.main([*argv, "--repeats", "2"]), tmp_path / "out")
    assert results["protocol"]["repeats"] == 2
    assert results["status"]["runs_total"] == 8 and results["status"]["runs_reused"] == 4
    draws = sorted((r["role"], r["level"], r["repeat"]) for r in results["runs"])
    assert draws == sorted((role, level, repeat) for role in ("reference", "user")
                           for level in (0.0, 1.0) for repeat in (0, 1))  # fmt: skip
    user_ood = [
        r["auc"]["ood"] for r in results["runs"] if r["role"] == "user" and r["level"] == 1.0
    ]
    assert results["auc"]["tag"]["user"]["ood"]["per_fold"][1] == [pytest.approx(np.mean(user_ood))]
