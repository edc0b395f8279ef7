"""Golden results: a tiny seeded `medaudit check --synthetic` and `medaudit probe --synthetic`,
run fresh through the command line and compared with tests/data/golden/*.json field by field.

What this guards: any change of behaviour, in particular during a refactor that moves modules
around. Every field of results.json is compared, recursively, and every difference is reported by
its JSON path; only the fields in ``EXCLUDED`` are skipped (they differ between two runs of the
same code: times, dates, versions, the machine, the commit, environment variables). Floats are
compared with ``REL_TOL`` / ``ABS_TOL``.

The runs depend on nothing in the package but its command line, ``audit.cli.main``: the models
are written here from numpy's seeded generator (no torch initialiser, no audit import), so moving
a module cannot break this test; only a change of behaviour can.

A golden file changes only when a change of numbers is intended: regenerate both with
``python tests/data/golden/make_golden.py`` (it runs exactly ``run_check`` and ``run_probe``
below) and explain in the commit message why the numbers changed.

The numbers belong to the toolchain CI installs (.ci/run: torch pinned) on an x86-64 CPU; another
torch release may train to other numbers, which is then a reason to regenerate, said so.

The pseudonym key (``pseudonym.key``, made in the cache folder on first use: audit/data/
pseudonyms.py) does not enter these runs: phantom cases and patients have fixed ids (C000001,
P00001), so the splits and every number are the same with any key or none (checked when the
golden files were made: runs with a random key written into the cache folder first gave the
same results). With ``--data`` the patient pseudonyms follow the
cache folder's secret key, but nothing else does: splits are drawn on key-free patient groups,
the data's identity (``manifest_hash``, in every run key and the audit id) is computed without
pseudonyms, and the analysis sums over patients in a key-free order
(``tests/test_splits.py::test_two_fresh_cache_folders_give_the_same_audit_id_split_and_verdict``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit import cli

GOLDEN = Path(__file__).parent / "data" / "golden"
CHECK_GOLDEN = GOLDEN / "check_results.json"
PROBE_GOLDEN = GOLDEN / "probe_results.json"

# Fresh runs repeat every float bit for bit (three in a row; with a random pseudonym key in the
# cache folder; on one CPU or two; after other tests in the same process): --deterministic, one
# torch thread (defined_process_state), seeded bootstraps, an ONNX model that sums in a fixed
# order. The tolerance allows only for the last digits a new numpy or scipy release may move
# (p-values and intervals pass through their special functions); a real change is far larger.
REL_TOL = 1e-9
ABS_TOL = 1e-12

# JSON paths whose values differ between two runs of the same code: ``$`` is the root, ``*`` any
# key, ``[*]`` any list item; a path excludes everything below it. The two golden files share
# the list; test_every_excluded_path_names_a_field keeps it from naming fields that are gone.
EXCLUDED: dict[str, str] = {
    # when, and how long
    "$.created_utc": "the date and time of the run",
    "$.budget.fine_tuning_seconds": "wall-clock time (check)",
    "$.runs[*].seconds": "wall-clock time (check)",
    "$.timing.seconds_total": "wall-clock time (probe)",
    "$.timing.seconds_in_model": "wall-clock time (probe)",
    "$.timing.images_per_second": "wall-clock time (probe)",
    # versions: medaudit's own (a release bump changes no behaviour), Python's, the packages'
    "$.tool.version": "medaudit's version",
    "$.environment.torch": "torch's version (check)",
    "$.environment.python": "Python's version",
    "$.provenance.python": "Python's version (check)",
    "$.environment.libraries": "installed packages and their versions (probe)",
    "$.provenance.libraries": "installed packages and their versions (check)",
    "$.model.runtime.version": "ONNX Runtime's version (probe)",
    # the machine and the checkout
    "$.environment.platform": "operating system, kernel, C library (check)",
    "$.environment.hardware": "CPU model, core count, memory, GPUs (probe)",
    "$.provenance.hardware": "CPU model, core count, memory, GPUs (check)",
    "$.environment.tool_commit": "the checkout's commit, new with every commit (probe)",
    "$.provenance.tool_commit": "the checkout's commit, new with every commit (check)",
    "$.model.runtime.threads": "ONNX Runtime's threads: the CPUs this process may use (probe)",
    # environment variables of the process that runs the tests, as they were at its start
    "$.environment.determinism.PYTHONHASHSEED": "an environment variable (probe)",
    "$.environment.determinism.OMP_NUM_THREADS": "an environment variable (probe)",
    "$.provenance.determinism.PYTHONHASHSEED": "an environment variable (check)",
    "$.provenance.determinism.OMP_NUM_THREADS": "an environment variable (check)",
}

# Base64 PNGs compared by their pixels, not their bytes: the compressed bytes depend on the
# Pillow and zlib build (Pillow is not pinned), the pixels on medaudit alone.
PNG_FIELDS = ("$.examples.*.clean", "$.examples.*.confounded", "$.examples.*.difference")


# ------------------------------------------------------------------------------ the two runs


def tiny_resnet_state_dict(width: int, seed: int) -> dict[str, torch.Tensor]:
    """A `tiny-resnet` backbone checkpoint (an architecture medaudit recognises by its keys):
    He-scaled weights and BatchNorm statistics drawn from numpy's seeded generator."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        std = math.sqrt(2.0 / (c_in * k * k))
        arrays[f"{name}.weight"] = rng.normal(0.0, std, (c_out, c_in, k, k))

    def norm(name: str, c: int) -> None:
        arrays[f"{name}.weight"] = 1.0 + 0.1 * rng.normal(size=c)
        arrays[f"{name}.bias"] = 0.1 * rng.normal(size=c)
        arrays[f"{name}.running_mean"] = 0.1 * rng.normal(size=c)
        arrays[f"{name}.running_var"] = 1.0 + 0.1 * np.abs(rng.normal(size=c))

    conv("stem.0", width, 3, 3)
    norm("stem.1", width)
    c_in = width
    for i, c_out in enumerate((width, 2 * width, 4 * width), start=1):
        conv(f"layer{i}.conv1", c_out, c_in, 3)
        norm(f"layer{i}.bn1", c_out)
        conv(f"layer{i}.conv2", c_out, c_out, 3)
        norm(f"layer{i}.bn2", c_out)
        conv(f"layer{i}.shortcut.0", c_out, c_in, 1)
        norm(f"layer{i}.shortcut.1", c_out)
        c_in = c_out
    state = {key: torch.from_numpy(value.astype(np.float32)) for key, value in arrays.items()}
    for key in [k for k in state if k.endswith(".running_var")]:
        state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return state


def check_argv(folder: Path) -> list[str]:
    """Write the check's two models into ``folder``; the audit's command line.

    Two tiny CNNs and the random-initialisation arm, the three pixel confounders, levels 0 and 1,
    two folds, three epochs on 96 separable images (tests/audit_checks.py): 36 runs, a working
    experiment (its controls hold), so the verdict is decided and pinned. The data is written
    here, deterministically; sex is left out (the images carry none)."""
    from audit_checks import WORKING_TRAINING, working_manifest

    user, reference = folder / "user.pt", folder / "reference.pt"
    torch.save(tiny_resnet_state_dict(width=8, seed=3), user)
    torch.save(tiny_resnet_state_dict(width=8, seed=4), reference)
    data = working_manifest(folder / "data").parent
    return [
        "--quiet", "check", str(user), "--modality", "cxr", "--data", str(data),
        "--reference", str(reference), "--with-random-init",
        "--out", str(folder / "out"), "--cache-dir", str(folder / "cache"),
        "--confounders", "tag,denoise,noise", "--levels", "0,1", *WORKING_TRAINING,
        "--device", "cpu", "--deterministic", "--no-report",
    ]  # fmt: skip


PROBE_SIZE = 64
TAG_BOX = (12, 13, 15, 16)  # the tag's pixels on a 64-pixel image (x0, y0, x1, y1), as drawn now


def region_reader_onnx(path: Path) -> Path:
    """An ONNX model built node by node (no exporter: nothing version-dependent in the file).

    logit = 4 x the mean over the tag's box and a 1-pixel margin + 2 x the mean over the image
    centre + 0.25, as two class logits (-logit/2, logit/2): the tag moves its score, the other
    confounders a little, and the clean images are scored on the anatomy."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s = PROBE_SIZE
    kernel = np.zeros((1, 3, s, s), np.float32)
    x0, y0, x1, y1 = TAG_BOX
    kernel[..., y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 4.0 / (3 * (y1 - y0 + 2) * (x1 - x0 + 2))
    q = s // 4
    kernel[..., q : s - q, q : s - q] += 2.0 / (3 * (s - 2 * q) ** 2)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "kernel", "bias"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logit"]),
            helper.make_node("Mul", ["logit", "halves"], ["logits"]),
        ],
        "region_reader",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, s, s])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(kernel, "kernel"),
            numpy_helper.from_array(np.array([0.25], np.float32), "bias"),
            numpy_helper.from_array(np.array([[-0.5, 0.5]], np.float32), "halves"),
        ],
    )
    model = helper.make_model(
        graph,
        producer_name="medaudit-golden-test",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def probe_argv(folder: Path) -> list[str]:
    """Write the probe's model into ``folder``; the probe's command line: every default
    confounder (tag fails, denoise and noise pass, sex is reported), each pixel one with its
    placebo."""
    model = region_reader_onnx(folder / "region_reader.onnx")
    return [
        "--quiet", "probe", str(model), "--modality", "cxr", "--synthetic",
        "--synthetic-patients", "60", "--resamples", "200", "--placebo",
        "--out", str(folder / "out"), "--cache-dir", str(folder / "cache"),
        "--device", "cpu", "--no-report",
    ]  # fmt: skip


@contextlib.contextmanager
def defined_process_state() -> Iterator[None]:
    """The process-wide state that results.json records, as a fresh `medaudit` process starts
    with it, and restored afterwards: an earlier `--deterministic` run in this pytest process
    leaves deterministic algorithms on and CUBLAS_WORKSPACE_CONFIG set. One torch thread: the
    same recorded count on every machine (a deterministic CPU run fine-tunes with one anyway)."""
    threads = torch.get_num_threads()
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    cublas = os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if cublas is not None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def run_cli(argv_for: Callable[[Path], list[str]], folder: Path) -> tuple[int, dict]:
    """Write the inputs into ``folder``, run the command there (so no medaudit.toml of the
    caller's working directory applies), return its exit code and results.json."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = argv_for(folder)
    with contextlib.chdir(folder), defined_process_state():
        code = cli.main(argv)
    return code, json.loads((folder / "out" / "results.json").read_text())


def run_check(folder: Path) -> tuple[int, dict]:
    return run_cli(check_argv, folder)


def run_probe(folder: Path) -> tuple[int, dict]:
    return run_cli(probe_argv, folder)


# ------------------------------------------------------------------------- the comparison

Token = str | int  # a key, or a list index


def parse_path(pattern: str) -> tuple[str, ...]:
    """``$.runs[*].seconds`` -> ("runs", "[*]", "seconds")."""
    assert pattern.startswith("$"), pattern
    tokens = re.findall(r"\.([^.\[\]]+)|(\[(?:\*|\d+)\])", pattern[1:])
    assert "$" + "".join(f".{k}" if k else i for k, i in tokens) == pattern, pattern
    return tuple(k or i for k, i in tokens)


def matches(patterns: tuple[tuple[str, ...], ...], path: tuple[Token, ...], exact: bool) -> bool:
    """Whether ``path`` is (or, unless ``exact``, lies below) one of ``patterns``."""
    for pattern in patterns:
        if len(path) < len(pattern) or (exact and len(path) != len(pattern)):
            continue
        if all(_token_matches(p, t) for p, t in zip(pattern, path, strict=False)):
            return True
    return False


def _token_matches(pattern: str, token: Token) -> bool:
    if isinstance(token, int):
        return pattern in ("[*]", f"[{token}]")
    return pattern in ("*", token)


EXCLUDED_PATHS = tuple(parse_path(p) for p in EXCLUDED)
PNG_PATHS = tuple(parse_path(p) for p in PNG_FIELDS)


def show(path: tuple[Token, ...]) -> str:
    return "$" + "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in path)


def png_pixels(text: str) -> tuple[str, tuple[int, int], bytes]:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return image.mode, image.size, image.tobytes()


def differences(expected: Any, actual: Any, path: tuple[Token, ...] = ()) -> list[str]:
    """Every difference between two JSON values, one line per JSON path; excluded paths skipped."""
    if matches(EXCLUDED_PATHS, path, exact=False):
        return []
    where = show(path)
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual)):
            sub = (*path, key)
            if matches(EXCLUDED_PATHS, sub, exact=False):
                continue
            if key not in actual:
                found.append(f"{show(sub)}: missing (expected {expected[key]!r:.200})")
            elif key not in expected:
                found.append(f"{show(sub)}: not expected ({actual[key]!r:.200})")
            else:
                found += differences(expected[key], actual[key], sub)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items, expected {len(expected)}"]
        found = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found += differences(e, a, (*path, i))
        return found
    if type(expected) is float and type(actual) is float:  # an int for a float is a difference
        if math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL) or (
            math.isnan(expected) and math.isnan(actual)
        ):
            return []
        return [f"{where}: {actual!r}, expected {expected!r}"]
    if isinstance(expected, str) and isinstance(actual, str) and matches(PNG_PATHS, path, True):
        if png_pixels(expected) == png_pixels(actual):
            return []
        return [f"{where}: the image's pixels differ"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {actual!r:.200}, expected {expected!r:.200}"]
    return []


def assert_matches_golden(golden: Path, actual: dict) -> None:
    expected = json.loads(golden.read_text())
    found = differences(expected, actual)
    assert not found, (
        f"{len(found)} field(s) differ from tests/data/golden/{golden.name} (if, and only if, the "
        "change is intended: regenerate with tests/data/golden/make_golden.py and say why in the "
        "commit):\n" + "\n".join(found)
    )


EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}  # the command line's, for a verdict


# ------------------------------------------------------------------------------------ tests


def test_check_matches_its_golden_results(tmp_path) -> None:
    code, results = run_check(tmp_path)
    assert_matches_golden(CHECK_GOLDEN, results)
    assert code == EXIT_CODES[results["gate"]["overall"]]


def test_probe_matches_its_golden_results(tmp_path) -> None:
    code, results = run_probe(tmp_path)
    assert_matches_golden(PROBE_GOLDEN, results)
    assert code == EXIT_CODES[results["verdict"]["overall"]]


def test_the_golden_runs_are_complete_and_decided() -> None:
    """The golden files hold what they are meant to: a finished audit and probe with verdicts."""
    check = json.loads(CHECK_GOLDEN.read_text())
    assert check["status"]["complete"] and check["status"]["runs_failed"] == 0
    assert check["status"]["runs_done"] == len(check["runs"]) == 36
    assert check["controls"]["passed"], "a working experiment: the controls hold"
    rows = {c["confounder"]: c for c in check["verdict"]["per_confounder"]}
    assert rows["tag"]["reliance"] is not None, "the gated measure is pinned"
    assert rows["noise"]["verdict"] == "not tested", "an artifact no detector sees at 32 px"
    assert check["gate"]["exit_code"] == EXIT_CODES[check["gate"]["overall"]]
    assert {r["role"] for r in check["runs"]} == {"user", "reference", "random-init"}
    probe = json.loads(PROBE_GOLDEN.read_text())
    assert probe["kind"] == "probe" and probe["verdict"]["overall"] == "fail"
    assert [c["name"] for c in probe["confounders"]] == ["tag", "denoise", "noise", "sex"]


def _paths(value: Any, path: tuple[Token, ...] = ()) -> Iterator[tuple[Token, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*path, i))


def test_every_excluded_path_names_a_field() -> None:
    """An exclusion that matches nothing is a stale one: remove it, or name the field again."""
    everywhere = [
        p for g in (CHECK_GOLDEN, PROBE_GOLDEN) for p in _paths(json.loads(g.read_text()))
    ]
    for pattern in (*EXCLUDED, *PNG_FIELDS):
        parsed = (parse_path(pattern),)
        assert any(matches(parsed, p, exact=True) for p in everywhere), pattern


def test_the_comparison_reports_every_difference_by_path() -> None:
    expected = {"a": [1.0, {"b": "x"}], "created_utc": "then", "runs": [{"seconds": 1.0, "n": 2}]}
    actual = {
        "a": [1.0 + 1e-6, {"b": "y"}],
        "created_utc": "now",
        "runs": [{"seconds": 2.0, "n": 3}],
    }
    assert differences(expected, actual) == [
        "$.a[0]: 1.000001, expected 1.0",
        "$.a[1].b: 'y', expected 'x'",
        "$.runs[0].n: 3, expected 2",
    ]
    assert differences({"n": 1.0}, {"n": 1.0 + 1e-13}) == []
    assert differences({"n": True}, {"n": 1}) == ["$.n: 1, expected True"]
    assert differences({"n": 1}, {"n": 1.0}) == ["$.n: 1.0, expected 1"]
    assert differences({"n": math.nan}, {"n": math.nan}) == []
    assert differences({"a": 1}, {"b": 1}) == ["$.a: missing (expected 1)", "$.b: not expected (1)"]
    assert differences([1, 2], [1]) == ["$: 1 items, expected 2"]
    assert differences({"tool": {"version": "1"}}, {"tool": {"version": "2"}}) == []
