"""One place that knows every confounder: the built-ins, installed plugins, and ad-hoc plugins.

A plugin is a ``Confounder`` or a zero-argument callable returning one. Installed packages declare
it as an entry point in group ``medaudit.confounders``; a user can also name one directly as
``module:function``. The registry is a small object made once by ``default_registry()`` (cached),
so tests can build their own or clear the cache instead of patching module globals.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from audit.confounders.base import Confounder
from audit.confounders.denoise import DENOISE
from audit.confounders.noise import NOISE
from audit.confounders.sex import SEX
from audit.confounders.tag import TAG
from audit.errors import UsageError

ENTRY_POINT_GROUP = "medaudit.confounders"
BUILTINS = (DENOISE, NOISE, SEX, TAG)


class Registry:
    """Name -> Confounder; a name once taken cannot be silently rebound to something else."""

    def __init__(self, confounders: Iterable[Confounder] = ()) -> None:
        self._by_name: dict[str, Confounder] = {}
        for conf in confounders:
            self.add(conf)

    def add(self, conf: Confounder) -> None:
        if not isinstance(conf, Confounder):
            raise UsageError(f"can only register a Confounder; got {type(conf).__name__}")
        known = self._by_name.get(conf.name)
        if known is not None and known != conf:
            raise UsageError(
                f"a different confounder named {conf.name!r} is already registered; "
                "give the new one another name"
            )
        self._by_name[conf.name] = conf

    def get(self, name: str) -> Confounder:
        if name not in self._by_name:
            raise UsageError(
                f"confounder={name!r} is unknown; known: {', '.join(self.names())}, "
                "or a plugin given as 'module:function'"
            )
        return self._by_name[name]

    def names(self) -> list[str]:
        return sorted(self._by_name)


@functools.cache
def default_registry() -> Registry:
    """The built-ins plus every installed entry-point plugin, loaded once per process."""
    registry = Registry(BUILTINS)
    for conf in entry_point_confounders():
        registry.add(conf)
    return registry


def entry_point_confounders() -> list[Confounder]:
    """Load each entry point in ``medaudit.confounders``; a broken one stops the run, named."""
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {point.name!r} ({point.value}) in group {ENTRY_POINT_GROUP!r}"
        try:
            obj = point.load()
        except Exception as exc:
            raise UsageError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
        found.append(_as_confounder(obj, where))
    return found


def get_confounder(name: str) -> Confounder:
    """A registered confounder by name; a ``module:function`` spec loads a plugin instead."""
    if ":" in name:
        return load_plugin(name)
    return default_registry().get(name)


def available_confounders() -> list[str]:
    return default_registry().names()


def register_confounder(conf: Confounder) -> None:
    default_registry().add(conf)


def load_plugin(spec: str) -> Confounder:
    """Import ``module:attribute`` and return its Confounder; does not register it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(
            f"confounder plugin {spec!r} is not 'module:function'; "
            "e.g. 'my_artifacts:ruler_confounder'"
        )
    where = f"confounder plugin {spec!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"{where}: cannot import module {module_name!r} ({type(exc).__name__}: {exc}); "
            "is it installed or on PYTHONPATH?"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return _as_confounder(obj, where)


def _as_confounder(obj: Any, where: str) -> Confounder:
    """Accept a Confounder, or call a zero-argument factory and check what it returns."""
    if isinstance(obj, Confounder):
        return obj
    # a function, method or partial the plugin wrote; never a class or a builtin such as sys.exit
    if not (inspect.isfunction(obj) or inspect.ismethod(obj) or isinstance(obj, functools.partial)):
        raise UsageError(
            f"{where} is a {type(obj).__name__}; expected a Confounder or a Python function "
            "returning one"
        )
    try:
        result = obj()
    except (Exception, SystemExit) as exc:
        raise UsageError(f"{where}: calling it failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Confounder):
        raise UsageError(f"{where} returned a {type(result).__name__}; expected a Confounder")
    return result
