"""The one registry of executors: the `--executor` choices and how each is built.

An :class:`ExecutorKind` says how to read ``--device`` for it, which options it takes (Ray's
address, shared cache and CPUs per task live with Ray), whether its extra is installed, and how
to build the :class:`audit.run.executor.Executor` the runner is handed. The built-ins are
``local`` (this process, or one worker process per device) and ``ray``; a kind from outside the
package calls :func:`register_executor` and becomes a choice with no edit to medaudit. Nothing
here imports torch or Ray at import time: the command line builds its choices from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.common.plugins import load_plugins, plugin_points
from audit.errors import UsageError

if TYPE_CHECKING:
    from audit.run.executor import Executor

BuildExecutor = Callable[[tuple[str, ...], Mapping[str, Any]], "Executor"]
ResolveDevices = Callable[[str | None, bool], tuple[str, ...]]


def local_devices(requested: str | None, check_available: bool) -> tuple[str, ...]:
    """One worker per entry (``cuda:0,cuda:1``, ``cpu,cpu``), or the best single device."""
    from audit.train.device import parse_devices

    return tuple(parse_devices(requested, check_available=check_available))


def _nothing_to_check() -> None:
    return None


@dataclass(frozen=True)
class ExecutorKind:
    """One `--executor` choice. ``options`` names the option keys it takes (the command line's
    destinations, e.g. ``ray_address``); any other option given with it is refused."""

    name: str
    summary: str
    build: BuildExecutor
    resolve_devices: ResolveDevices = local_devices
    options: tuple[str, ...] = ()
    check_installed: Callable[[], None] = _nothing_to_check


def _build_local(devices: tuple[str, ...], options: Mapping[str, Any]) -> Executor:
    if len(devices) <= 1:
        from audit.run.executor import InProcessExecutor

        return InProcessExecutor(devices[0] if devices else "cpu")
    from audit.run.local import LocalProcessesExecutor

    return LocalProcessesExecutor(devices)


RAY_DEVICES = ("cpu", "cuda")


def ray_devices(requested: str | None, check_available: bool) -> tuple[str, ...]:
    """``cpu`` or ``cuda`` for every task (Ray assigns each task its own GPU), or () to let the
    cluster's GPUs decide; the driver's own devices do not matter, it may have no GPU."""
    from audit.resolve.constraints import SettingError

    if not requested:
        return ()
    names = [d.strip() for d in requested.split(",") if d.strip()]
    if len(names) != 1 or names[0] not in RAY_DEVICES:
        raise SettingError(
            "device", requested, "cpu or cuda with the Ray executor (Ray assigns each task its GPU)"
        )
    return tuple(names)


def _build_ray(devices: tuple[str, ...], options: Mapping[str, Any]) -> Executor:
    from audit.run.ray_cluster import RayExecutor, RayOptions, require_ray

    require_ray()
    return RayExecutor(
        RayOptions(
            address=options.get("ray_address"),
            shared_cache=options.get("shared_cache"),
            cpus_per_task=options.get("ray_cpus_per_task") or 1,
        ),
        devices,
    )


def _ray_installed() -> None:
    from audit.run.ray_cluster import require_ray

    require_ray()


_kinds: dict[str, ExecutorKind] = {}
_BUILTIN = ("local", "ray")


def register_executor(kind: ExecutorKind, *, replace: bool = False) -> ExecutorKind:
    """Add an `--executor` choice; a taken name is refused unless ``replace``."""
    if not isinstance(kind, ExecutorKind) or not kind.name:
        raise ValueError("register_executor takes an ExecutorKind with a name")
    if kind.name in _kinds and not replace:
        raise ValueError(f"an executor named {kind.name!r} is already registered")
    _kinds[kind.name] = kind
    return kind


def unregister_executor(name: str) -> None:
    """Remove a kind (a test's clean-up); the built-ins cannot be removed."""
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is built in")
    _kinds.pop(name, None)


ENTRY_POINT_GROUP = "medaudit.executors"
_plugins_loaded = [False]


def _load_plugins() -> None:
    """Kinds installed by other distributions (an ``ExecutorKind`` under the entry point)."""
    if not _plugins_loaded[0]:
        _plugins_loaded[0] = True
        load_plugins(ENTRY_POINT_GROUP, register_executor)


def executor_names() -> tuple[str, ...]:
    """The `--executor` choices: registered kinds, and installed plugins by their entry point's
    name (loaded only when chosen)."""
    names = list(_kinds)
    if not _plugins_loaded[0]:
        names += [p.name for p in plugin_points(ENTRY_POINT_GROUP) if p.name not in names]
    return tuple(names)


def executor_kinds() -> tuple[ExecutorKind, ...]:
    _load_plugins()
    return tuple(_kinds.values())


def get_executor_kind(name: str) -> ExecutorKind:
    from audit.resolve.constraints import SettingError

    if name not in _kinds:
        _load_plugins()
    kind = _kinds.get(name)
    if kind is None:
        raise SettingError("executor", name, " or ".join(_kinds))
    return kind


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse options the chosen executor does not take, naming who takes them."""
    kind = get_executor_kind(name)
    foreign = [
        key for key, value in options.items() if value is not None and key not in kind.options
    ]
    if foreign:
        owners = sorted({k.name for k in _kinds.values() for key in foreign if key in k.options})
        names = " and ".join(f"`{key}`" for key in foreign)
        where = " or ".join(owners) or "no executor"
        verb = "works" if len(foreign) == 1 else "work"
        raise UsageError(f"{names} {verb} with `executor` {where} only; add it")


def build_executor(
    name: str, devices: Sequence[str], options: Mapping[str, Any] | None = None
) -> Executor:
    """The executor the runner is handed, from the resolved choice."""
    options = dict(options or {})
    check_options(name, options)
    return get_executor_kind(name).build(tuple(devices), options)


register_executor(
    ExecutorKind(
        "local",
        "this process, or one worker process per --device",
        _build_local,
    )
)
register_executor(
    ExecutorKind(
        "ray",
        "each cell a task on a Ray cluster; needs the cluster extra: pip install "
        "'medaudit[cluster]'",
        _build_ray,
        ray_devices,
        options=("ray_address", "shared_cache", "ray_cpus_per_task"),
        check_installed=_ray_installed,
    )
)
