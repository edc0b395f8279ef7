"""`--executor ray` on a local Ray cluster of 2 CPUs: same results as local, no peeking at the
driver's cache, and a worker killed mid-run is retried.

One Ray session serves the module (starting one takes seconds); the executor uses a session the
process already holds and leaves it running.
"""

from __future__ import annotations

import csv
import inspect
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from audit_checks import WORKING_TRAINING, assert_finished
from PIL import Image

from audit import cli, pipeline
from audit.errors import UsageError
from audit.models.tiny import TinyResNet
from audit.resolve.devices import resolve_devices
from audit.run.ray_cluster import RayOptions, task_options


def import_ray():
    """CI installs the cluster extra, so there a missing Ray fails; elsewhere it skips."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("Ray is not installed: pip install -e '.[test,cluster]'")
    return ray


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A 2-CPU local cluster; its workers import confounder plugins from the folder it yields."""
    ray = import_ray()
    plugins = tmp_path_factory.mktemp("plugins")
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
        log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(plugins)}},
    )  # fmt: skip
    yield plugins
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    paths = folder / "user.pt", folder / "reference.pt"
    for path in paths:
        torch.save(TinyResNet(width=8).state_dict(), path)
    return paths


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """96 patients of 32-pixel PNGs: `check --data` decodes them into the --cache-dir."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for n in range(96):
        label = n % 2
        pixels = rng.normal(110 + 30 * label, 25, (32, 32)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"img{n}.png")
        rows.append({"path": f"img{n}.png", "label": label, "patient_id": f"p{n}"})
    path = root / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def audit_args(models: tuple[Path, Path], data: list[str], out: Path, cache: Path) -> list[str]:
    user, reference = models
    return [
        "--quiet", "check", str(user), "--modality", "cxr", *data, "--reference", str(reference),
        "--out", str(out), "--cache-dir", str(cache), "--confounders", "tag", "--levels", "0,1",
        *WORKING_TRAINING, "--deterministic",
    ]  # fmt: skip


def run_results(args: list[str]) -> dict:
    out = Path(args[args.index("--out") + 1])
    return assert_finished(cli.main(args), out)


def run_aucs(results: dict) -> dict[str, dict[str, float]]:
    return {run["key"]: run["auc"] for run in results["runs"]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def local_results(models, manifest, cache, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "out"
    return run_results(
        [*audit_args(models, ["--data", str(manifest)], out, cache), "--device", "cpu"]
    )


@pytest.fixture
def cache_hidden_during_runs(monkeypatch, cache):
    """While the runs execute, the driver's cache folder is not there under its name.

    The driver keeps the memory map it opened (the kernel keeps a renamed file's pages), so the
    driver can still hand the pixels out; a worker that opened any path under --cache-dir would
    fail its runs and the audit would be incomplete.
    """
    real_execute = pipeline.execute
    hidden = cache.with_name(cache.name + "-hidden")
    seen: list[str] = []

    def execute_with_cache_hidden(specs, inputs, *args, **kwargs):
        images = inputs.cohort.images
        assert isinstance(images, np.memmap), "the driver's images are a map of its cache"
        assert Path(images.filename).resolve().is_relative_to(cache.resolve())
        call = inspect.signature(real_execute).bind(specs, inputs, *args, **kwargs)
        seen.append(call.arguments["executor"].name)
        cache.rename(hidden)
        try:
            return real_execute(specs, inputs, *args, **kwargs)
        finally:
            hidden.rename(cache)

    monkeypatch.setattr(pipeline, "execute", execute_with_cache_hidden)
    return seen


# Ray-free checks first: the module's Ray session starts with the first test that asks for it.


def test_without_ray_the_cli_says_how_to_install_it(models, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    args = audit_args(models, ["--synthetic"], tmp_path / "out", tmp_path / "cache")
    assert cli.main([*args, "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("install the cluster extra: pip install 'medaudit[cluster]'")
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize("device", ["cuda:0,cuda:1", "cpu,cpu", "cuda:1", "tpu"])
def test_ray_takes_a_device_type_not_a_list_of_devices(device: str) -> None:
    with pytest.raises(UsageError, match="Ray assigns each task its GPU"):
        resolve_devices(device, "ray")


def test_a_cuda_cell_asks_for_one_gpu_and_a_cpu_cell_for_its_cpus() -> None:
    options = RayOptions(cpus_per_task=4, max_retries=2)
    assert task_options("cuda", options) == {
        "num_cpus": 4, "num_gpus": 1, "max_retries": 2, "retry_exceptions": False,
    }  # fmt: skip
    assert task_options("cpu", options)["num_gpus"] == 0


def test_ray_options_without_ray_executor_are_refused(models, capsys, tmp_path) -> None:
    args = audit_args(models, ["--synthetic"], tmp_path / "out", tmp_path / "cache")
    assert cli.main([*args, "--shared-cache", str(tmp_path / "shared")]) == 2
    assert "works with --executor ray only" in capsys.readouterr().err


def test_ray_gives_the_same_results_as_local_without_seeing_the_driver_cache(
    ray_cluster, models, manifest, cache, local_results, cache_hidden_during_runs, tmp_path
) -> None:
    args = audit_args(models, ["--data", str(manifest)], tmp_path / "out", cache)
    results = run_results([*args, "--executor", "ray", "--device", "cpu"])
    assert cache_hidden_during_runs == ["ray"]
    assert results["status"]["runs_failed"] == 0  # every run finished (assert_finished)
    assert run_aucs(results) == run_aucs(local_results)
    assert results["auc"] == local_results["auc"]
    assert results["verdict"] == local_results["verdict"] and results["verdict"] is not None
    assert results["environment"]["executor"] == "ray"
    assert results["environment"]["ray_workers"][0]["device"] == "cpu"


def test_workers_read_images_from_the_declared_shared_cache(
    ray_cluster, models, manifest, cache, local_results, cache_hidden_during_runs, tmp_path
) -> None:
    shared = tmp_path / "shared"
    args = audit_args(models, ["--data", str(manifest)], tmp_path / "out", cache)
    results = run_results([*args, "--executor", "ray", "--shared-cache", str(shared)])
    assert [p.suffix for p in shared.iterdir()] == [".npy"], "the images, written once"
    assert run_aucs(results) == run_aucs(local_results)


CRASH_ONCE_PLUGIN = """
import dataclasses
import os

from audit.confounders import get_confounder

DRIVER_PID = {driver_pid}
MARKER = {marker!r}


def _tag_but_kill_the_first_worker(image, rng, **params):
    if os.getpid() != DRIVER_PID:
        try:
            fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os._exit(1)  # the worker process dies mid-run, as on a lost node
    return get_confounder("tag").apply(image, rng, **params)


def make():
    tag = get_confounder("tag")
    return dataclasses.replace(tag, name="crash-once", apply=_tag_but_kill_the_first_worker)
"""


def test_a_worker_killed_mid_run_is_retried_and_the_audit_completes(
    ray_cluster, models, monkeypatch, tmp_path
) -> None:
    marker = tmp_path / "killed-worker-pid"
    plugin = CRASH_ONCE_PLUGIN.format(driver_pid=os.getpid(), marker=str(marker))
    (ray_cluster / "crash_once.py").write_text(plugin)
    monkeypatch.syspath_prepend(str(ray_cluster))
    args = audit_args(models, ["--synthetic", "--synthetic-patients", "40"], tmp_path / "out",
                      tmp_path / "cache")  # fmt: skip
    args[args.index("--confounders") + 1] = "crash-once"
    results = run_results([*args, "--confounder", "crash_once:make", "--executor", "ray"])
    assert int(marker.read_text()) != os.getpid(), "a worker process was killed"
    assert results["status"]["runs_done"] == results["status"]["runs_total"]
    assert (results["status"]["runs_done"], results["status"]["runs_failed"]) == (8, 0)


def test_ray_runs_a_folds_repeats_as_the_local_executor_does(
    ray_cluster, models, manifest, cache, tmp_path
) -> None:
    def audit(out: str, *extra: str) -> dict:
        args = audit_args(models, ["--data", str(manifest)], tmp_path / out, cache)
        return run_results([*args, "--repeats", "2", "--device", "cpu", *extra])

    local, on_ray = audit("local"), audit("ray", "--executor", "ray")
    assert sorted(run["repeat"] for run in on_ray["runs"]) == [0] * 8 + [1] * 8
    assert on_ray["protocol"]["repeats"] == 2 and on_ray["status"]["runs_failed"] == 0
    assert run_aucs(on_ray) == run_aucs(local), "each draw's identity and seed are the executor's"
    assert on_ray["verdict"] == local["verdict"]
