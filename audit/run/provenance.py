"""What a reviewer needs to rebuild the audit's software and hardware context.

Collected once when the audit runs and stored in results.json, because the report is rendered
from the results alone (possibly years later, on another machine). Nothing here calls git or any
other program: the commit is read from the checkout's files or from pip's install record.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions can change a number in the report, in the order shown.
LIBRARIES = (
    "medaudit",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "pillow",
    "pydicom",
    "safetensors",
    "onnx",
    "onnxruntime-gpu",
    "onnxruntime",
    "timm",
    "ray",
    "jinja2",
    "weasyprint",
    "pydyf",
    "matplotlib",
    "jsonschema",
)
DETERMINISM_ENV = ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed version of each named distribution; absent ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = candidate.read_text(encoding="utf-8").strip()
            if text.startswith("gitdir:"):
                return (folder / text.removeprefix("gitdir:").strip()).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    loose = git_dir / ref
    if loose.is_file():
        return loose.read_text(encoding="utf-8").strip()
    common = git_dir / "commondir"
    roots = [git_dir]
    if common.is_file():
        roots.append((git_dir / common.read_text(encoding="utf-8").strip()).resolve())
    for root in roots:
        if (root / ref).is_file():
            return (root / ref).read_text(encoding="utf-8").strip()
        packed = root / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    return None


def checkout_commit(start: Path) -> str | None:
    """The commit a source checkout at or above ``start`` has checked out, read from .git."""
    try:
        git_dir = _git_dir(start.resolve())
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        commit = (
            _resolve_ref(git_dir, head.removeprefix("ref:").strip())
            if head.startswith("ref:")
            else head
        )
    except OSError:
        return None
    if commit and len(commit) in (40, 64) and all(c in "0123456789abcdef" for c in commit):
        return commit
    return None


def tool_commit() -> dict[str, str] | None:
    """Where medaudit's code came from: pip's VCS record, else the checkout it runs from."""
    try:
        record = metadata.distribution("medaudit").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        record = None
    if record:
        info = json.loads(record).get("vcs_info") or {}
        if info.get("commit_id"):
            return {"commit": info["commit_id"], "how": "pip install record (direct_url.json)"}
    import audit

    commit = checkout_commit(Path(audit.__file__).parent)
    if commit:
        return {"commit": commit, "how": "source checkout (.git); uncommitted changes not checked"}
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def determinism() -> dict[str, Any]:
    """The switches that decide whether a rerun reproduces the same numbers."""
    info: dict[str, Any] = {name: os.environ.get(name) for name in DETERMINISM_ENV}
    try:
        import torch

        info["torch_deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        info["cudnn_deterministic"] = bool(torch.backends.cudnn.deterministic)
        info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def environment_details() -> dict[str, Any]:
    """Libraries, code commit, hardware and determinism settings, for results["provenance"]."""
    return {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "libraries": library_versions(),
        "tool_commit": tool_commit(),
        "hardware": hardware(),
        "determinism": determinism(),
    }
