"""Extensions installed by other distributions, found through entry points.

Each registry (data sources, executors, output formats) names one entry-point group; an installed
package lists its implementation there (``name = "package.module:Class"``) and it is registered
on first use, with no edit to medaudit. A plugin that fails to load, or whose object's name differs
from its entry point's, is skipped with one warning: a broken plugin must not stop an audit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger(__name__)


def plugin_points(group: str) -> tuple[EntryPoint, ...]:
    """The group's entry points, without importing them (their names are choices already)."""
    return tuple(entry_points(group=group))


def load_plugins(group: str, register: Callable[[Any], Any]) -> list[str]:
    """Load and register each plugin of ``group``; a class is instantiated without arguments.
    Returns the names registered."""
    loaded = []
    for point in plugin_points(group):
        try:
            found = point.load()
            plugin = found() if isinstance(found, type) else found
            name = getattr(plugin, "name", None)
            if name != point.name:
                raise ValueError("its name differs from its entry point's")
            register(plugin)
            loaded.append(point.name)
        except Exception as exc:  # noqa: BLE001 - any plugin failure is one warning
            # the type only: a plugin's message may hold a path or a value from the user's data
            log.warning(
                "plugin %s of %s not loaded (%s)", point.name[:60], group, type(exc).__name__
            )
    return loaded
