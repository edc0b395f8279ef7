"""Regenerate the golden results that tests/test_golden.py compares fresh runs with.

    python tests/data/golden/make_golden.py            # both files
    python tests/data/golden/make_golden.py check      # check_results.json only (or: probe)

Regenerating is allowed only when a change of numbers is intended (a fix, a new field, a protocol
change, a new pinned torch): commit the new files together with that change, and say in the
commit message which numbers changed and why. A refactor must leave both files as they are.

The script runs exactly what the test runs (run_check and run_probe from tests/test_golden.py,
in a fresh temporary folder each), runs each command a second time in another fresh folder and
writes a file only if the two runs agree field by field apart from the test's excluded fields.
It writes results.json as the command wrote it, excluded fields included, for the reader.
Run it from a checkout whose package code is the one to be recorded (the `audit` package that
Python imports is printed first).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for test_golden

import test_golden  # noqa: E402 - after the path it is found on

import audit  # noqa: E402


def make(name: str) -> None:
    run, golden = {
        "check": (test_golden.run_check, test_golden.CHECK_GOLDEN),
        "probe": (test_golden.run_probe, test_golden.PROBE_GOLDEN),
    }[name]
    with tempfile.TemporaryDirectory(prefix=f"golden-{name}-") as first:
        code, results = run(Path(first) / name)
    with tempfile.TemporaryDirectory(prefix=f"golden-{name}-") as second:
        _, again = run(Path(second) / name)
    unstable = test_golden.differences(results, again)
    if unstable:
        sys.exit(f"{name}: two fresh runs differ, nothing written:\n" + "\n".join(unstable))
    if golden.is_file():
        changed = test_golden.differences(json.loads(golden.read_text()), results)
        print(f"{name}: {len(changed)} field(s) changed from the golden file")
        for line in changed:
            print(f"  {line}")
    golden.write_text(json.dumps(results, indent=2) + "\n")
    verdict = (results.get("verdict") or {}).get("overall")
    print(
        f"{name}: exit code {code}, verdict {verdict}: wrote {golden.relative_to(HERE.parents[2])}"
    )


def main(argv: list[str]) -> None:
    names = argv or ["check", "probe"]
    unknown = set(names) - {"check", "probe"}
    if unknown:
        sys.exit(f"usage: make_golden.py [check] [probe] (unknown: {', '.join(sorted(unknown))})")
    print(f"package: {Path(audit.__file__).parent}")
    for name in names:
        make(name)


if __name__ == "__main__":
    main(sys.argv[1:])
