"""Confounders: the shortcuts an audit plants, one seam with built-ins and plugins."""

from audit.confounders.base import CATEGORIES, Confounder, apply_confounder
from audit.confounders.registry import (
    available_confounders,
    get_confounder,
    load_plugin,
    register_confounder,
)

__all__ = [
    "CATEGORIES",
    "Confounder",
    "apply_confounder",
    "available_confounders",
    "get_confounder",
    "load_plugin",
    "register_confounder",
]
