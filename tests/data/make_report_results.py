"""Rebuild tests/data/report_results.json, the report tests' fixture (run by hand, not by pytest).

    medaudit demo --quick --out /tmp/q --cache-dir /tmp/q-cache
    python tests/data/make_report_results.py /tmp/q/results.json

It takes a real quick-demo results.json and adds every optional field the report shows (example
images, provenance, descriptive statistics, budget, trust flags), so the tests exercise both the
filled and the "not recorded" paths. The statistics are made-up values for the tests only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from audit.confounders import get_confounder
from audit.confounders.examples import example_images
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.schema import validate_results

HERE = Path(__file__).parent


def augment(results: dict) -> dict:
    results = dict(results)
    confs = {
        c["name"]: (get_confounder(c["name"]), c["params"])
        for c in results["protocol"]["confounders"]
    }
    cohort = make_phantom_cohort(
        PhantomSettings(n_patients=6, image_size=results["data"]["image_size"], seed=0)
    )
    results["budget"] = "quick"
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
    return results


def main(source: str) -> None:
    results = augment(json.loads(Path(source).read_text(encoding="utf-8")))
    validate_results(results)
    target = HERE / "report_results.json"
    target.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
