"""The built wheel's dependency metadata, read as pip on each platform would read it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
ONNX_RUNTIMES = {"onnxruntime", "onnxruntime-gpu"}

# (platform as pip's marker environment sees it, the ONNX Runtime that has wheels there)
PLATFORMS = {
    "linux-x86_64": ({"sys_platform": "linux", "platform_machine": "x86_64"}, "onnxruntime-gpu"),
    "linux-aarch64": ({"sys_platform": "linux", "platform_machine": "aarch64"}, "onnxruntime"),
    "macos-arm64": ({"sys_platform": "darwin", "platform_machine": "arm64"}, "onnxruntime"),
    "macos-x86_64": ({"sys_platform": "darwin", "platform_machine": "x86_64"}, "onnxruntime"),
    "windows-x64": ({"sys_platform": "win32", "platform_machine": "AMD64"}, "onnxruntime-gpu"),
    "windows-arm64": ({"sys_platform": "win32", "platform_machine": "ARM64"}, "onnxruntime"),
}


@pytest.fixture(scope="module")
def wheel_requirements(tmp_path_factory) -> list[Requirement]:
    """Requires-Dist of a wheel built from this checkout (hatchling from the test extra)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("medaudit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def _installed_on(requirements: list[Requirement], platform: dict[str, str]) -> set[str]:
    """The distributions pip would install on that platform for ``pip install medaudit``."""
    environment = {
        "python_version": "3.11",
        "python_full_version": "3.11.7",
        "extra": "",
        **platform,
    }
    return {
        r.name.lower() for r in requirements if r.marker is None or r.marker.evaluate(environment)
    }


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_exactly_one_onnx_runtime_on_each_platform(wheel_requirements, platform) -> None:
    environment, expected = PLATFORMS[platform]
    chosen = _installed_on(wheel_requirements, environment) & ONNX_RUNTIMES
    assert chosen == {expected}


def test_test_toolchain_is_pinned_exactly(wheel_requirements) -> None:
    """A new release of a test tool cannot change what CI runs: every test-extra pin is ==."""
    test_extra = [r for r in wheel_requirements if r.marker and 'extra == "test"' in str(r.marker)]
    assert {r.name for r in test_extra} >= {"pytest", "ruff", "pypdf", "timm"}
    loose = [str(r) for r in test_extra if not str(r.specifier).startswith("==")]
    assert loose == []
