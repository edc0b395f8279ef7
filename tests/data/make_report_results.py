"""Rebuild tests/data/report_results.json, the report tests' fixture (run by hand, not by pytest).

    medaudit demo --quick --out /tmp/q --cache-dir /tmp/q-cache
    python tests/data/make_report_results.py /tmp/q/results.json

It takes a real quick-demo results.json (schema 1: the reliance gap D gates) and adds every
optional field the report shows (example images, provenance, descriptive statistics, budget,
trust flags; the planned resolution in "power" where the demo did not record one), so the tests
exercise both the filled and the "not recorded" paths. It also records the audit as run with
--inconclusive-exit 0, so the "inconclusive counted as pass" path is covered. The statistics are
made-up values for the tests only.

tests/data/report_results_v0.json is the schema-0 fixture (the o.o.d. AUC gap S gated), kept as
it was written by medaudit before schema 1; it is not rebuilt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from audit.analysis import reliance
from audit.confounders.examples import example_images
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.resolve.confounders import resolve_confounders
from audit.schema import validate_results

HERE = Path(__file__).parent


def augment(results: dict) -> dict:
    results = dict(results)
    results["budget"] = "quick"
    if not results.get("examples"):  # the demo records its own; older ones did not
        confs = resolve_confounders(
            [c["name"] for c in results["protocol"]["confounders"]], {},
            results["data"]["modality"], seed=0, work_size=results["data"]["image_size"],
        )  # fmt: skip
        cohort = make_phantom_cohort(
            PhantomSettings(n_patients=6, image_size=results["data"]["image_size"], seed=0)
        )
        results["examples"] = example_images(cohort, confs, seed=results["protocol"]["seed"])
    results["provenance"] = {
        "python": "3.11.7 (CPython)",
        "libraries": {
            "medaudit": "0.1.0",
            "numpy": "2.2.0",
            "torch": "2.14.1",
            "weasyprint": "70.0",
        },
        "tool_commit": {"commit": "0" * 40, "how": "fixture"},
        "hardware": {"machine": "x86_64", "cpu": "test CPU", "cpu_count": 2, "memory_gib": 24.0},
        "determinism": {"PYTHONHASHSEED": None, "torch_deterministic_algorithms": False},
        "started_utc": "2026-01-01T00:00:00Z",
    }
    levels = results["protocol"]["levels"]
    results["statistics"] = {
        "tag": [
            {
                "level": level,
                "test_set": "ood",
                "delong_p": [0.4123 + i / 10],
                "delong_p_adjusted": [0.8246],
                "permutation_p": 1.0,
                "permutation_p_adjusted": 1.0,
                "n_permutations": 2,
            }
            for i, level in enumerate(levels)
        ]
    }
    results["models"] = [
        {**m, "trust_flags": {"trust_code": False, "trust_pickle": False}}
        for m in results["models"]
    ]
    if not results.get("power"):  # the pipeline records it (audit.analysis.planning)
        results["power"] = power_record(results)
    results["gate"] = {
        **results["gate"],
        "inconclusive_exit": 0,
        "inconclusive_counted_as": "pass",
        "exit_code": 0 if results["gate"]["overall"] in ("pass", "inconclusive") else 1,
    }
    return results


def power_record(results: dict) -> dict:
    """For a results.json written before the pipeline recorded "power": roughly what
    `check --dry-run` would have planned for each confounder, at the measured test sets' sizes."""
    verdict, folds = results["verdict"], results["protocol"]["folds"]
    record = {}
    for row in verdict["per_confounder"]:
        measured = row["reliance"]
        if not row["gated"] or measured is None:
            record[row["confounder"]] = {"gated": False, "reason": row["reason"]}
            continue
        sizes = {k: measured[k] for k in ("n_positive", "n_negative", "n_patients")}
        planned = reliance.power_analysis(
            **sizes,
            folds=folds,
            kind=row["kind"],
            margin=verdict["thresholds"]["margin"],
            alpha=verdict["thresholds"]["alpha"],
        )
        entry = reliance.to_dict(planned)
        entry.update(sizes, perfect_can_pass=planned.equal_pass_probability >= 0.5)
        record[row["confounder"]] = entry
    return record


def main(source: str) -> None:
    results = augment(json.loads(Path(source).read_text(encoding="utf-8")))
    validate_results(results)
    target = HERE / "report_results.json"
    target.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
