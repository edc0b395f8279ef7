"""Tests for audit.analysis.verdict: the overall-verdict rule and the exit-code contract."""

from __future__ import annotations

import pytest

from audit.analysis.verdict import VERDICTS, exit_code_for, overall_verdict


def test_overall_verdict_fails_on_any_fail_then_inconclusive_then_passes() -> None:
    assert overall_verdict(["pass", "inconclusive", "fail"]) == "fail"
    assert overall_verdict(["pass", "inconclusive"]) == "inconclusive"
    assert overall_verdict(["pass", "pass"]) == "pass"
    assert overall_verdict(iter(["inconclusive"])) == "inconclusive"  # any iterable, read once
    with pytest.raises(ValueError, match="verdicts must hold at least one"):
        overall_verdict([])
    with pytest.raises(ValueError, match="verdicts must be one of"):
        overall_verdict(["maybe"])


def test_exit_codes_follow_the_documented_contract() -> None:
    assert [exit_code_for(v) for v in VERDICTS] == [0, 1, 3]
    assert exit_code_for("inconclusive", inconclusive_exit=0) == 0
    assert exit_code_for("inconclusive", inconclusive_exit=1) == 1
    assert exit_code_for("fail", inconclusive_exit=0) == 1
    assert exit_code_for("pass", inconclusive_exit=1) == 0
    with pytest.raises(ValueError, match="overall must be one of"):
        exit_code_for("unknown")


@pytest.mark.parametrize("bad", [-1, 256, 1.0, True, "3"])
def test_an_inconclusive_exit_outside_a_process_exit_code_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="inconclusive_exit must be"):
        exit_code_for("inconclusive", inconclusive_exit=bad)
