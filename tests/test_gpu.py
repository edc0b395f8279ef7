"""On a CUDA GPU: the engine, the data path, several workers per GPU and ONNX Runtime's CUDA
provider. Every test here carries ``@pytest.mark.gpu`` and is skipped where no GPU is visible;
on a GPU machine run them alone with ``python -m pytest -m gpu``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from audit_checks import assert_finished

from audit import cli
from audit.resolve.settings import TrainSettings
from audit.train.augment import random_affine_matrices
from audit.train.tensors import to_set_tensors

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("gpu-models")
    torch.manual_seed(0)
    user, reference = folder / "user.pt", folder / "reference.pt"
    torch.save(torchvision.models.resnet18(num_classes=1).state_dict(), user)
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), reference)
    return user, reference


def audit(checkpoints, out: Path, cache: Path, device: str) -> dict:
    user, reference = checkpoints
    code = cli.main([
        "--quiet", "check", str(user), "--modality", "cxr", "--synthetic",
        "--reference", str(reference), "--out", str(out), "--cache-dir", str(cache),
        "--confounders", "tag", "--levels", "0,1", "--folds", "2", "--epochs", "2",
        "--batch-size", "16", "--input-size", "64", "--image-size", "64",
        "--synthetic-patients", "80", "--resamples", "200", "--deterministic",
        "--device", device, "--no-report",
    ])  # fmt: skip
    assert_finished(code, out)
    assert not (out / "report.pdf").exists(), "--no-report: the GPU node needs no WeasyPrint"
    return json.loads((out / "results.json").read_text())


def test_an_audit_on_the_gpu_completes_deterministically_and_says_where_it_ran(
    checkpoints, tmp_path
) -> None:
    first = audit(checkpoints, tmp_path / "a", tmp_path / "cache", "cuda")
    second = audit(checkpoints, tmp_path / "b", tmp_path / "cache", "cuda")
    assert first["status"]["runs_done"] == 8 and first["status"]["runs_failed"] == 0
    assert "cuda" in json.dumps(first["environment"]).lower()
    assert first["auc"] == second["auc"], "--deterministic on one GPU repeats exactly"
    for run in first["runs"]:
        assert all(v is None or 0.0 <= v <= 1.0 for v in run["auc"].values())


def test_two_workers_on_one_gpu_give_the_results_of_one(checkpoints, tmp_path) -> None:
    one = audit(checkpoints, tmp_path / "one", tmp_path / "cache", "cuda:0")
    two = audit(checkpoints, tmp_path / "two", tmp_path / "cache", "cuda:0,cuda:0")
    assert two["status"]["runs_failed"] == 0
    assert two["auc"] == one["auc"]


def test_device_tensors_and_augmentation_match_the_cpu() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 96, 96), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 1, 0])
    ids = tuple(f"c{i}" for i in range(6))
    on_cpu = to_set_tensors(images, labels, ids, 64, torch.device("cpu"))
    on_gpu = to_set_tensors(images, labels, ids, 64, torch.device("cuda"))
    assert on_gpu.images.device.type == "cuda" and on_gpu.images.dtype == torch.uint8
    difference = (on_gpu.images.cpu().int() - on_cpu.images.int()).abs().max().item()
    assert difference <= 1, "the same antialiased resize, within one grey level"
    settings = TrainSettings()
    theta_cpu = random_affine_matrices(
        4, settings, torch.Generator().manual_seed(3), torch.device("cpu")
    )  # fmt: skip
    theta_gpu = random_affine_matrices(
        4, settings, torch.Generator().manual_seed(3), torch.device("cuda")
    )  # fmt: skip
    assert theta_gpu.device.type == "cuda"
    torch.testing.assert_close(theta_gpu.cpu(), theta_cpu)


def test_onnx_runtime_runs_on_the_cuda_provider(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    import warnings

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider (install onnxruntime-gpu)")

    from audit.probe.runner import ModelOptions, OnnxRunner

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 1)).eval()  # fmt: skip
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 32, 32), path, input_names=["input"],
                          dynamic_axes={"input": {0: "b"}}, dynamo=False)  # fmt: skip
    runner = OnnxRunner(ModelOptions(path, "cuda"))
    assert "CUDAExecutionProvider" in runner.info.providers_used
    assert not runner.info.fell_back_to_cpu
    batch = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    expected = model(torch.from_numpy(batch)).detach().numpy()
    np.testing.assert_allclose(runner.run(batch)[0], expected, atol=1e-3)
