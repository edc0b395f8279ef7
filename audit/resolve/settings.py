"""The one settings object: defaults, then ``[tool.medaudit]`` or ``medaudit.toml``, then flags.

Thresholds are declared here, before any run, and written into the results so a verdict can
never be re-decided after the numbers are in.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.constants import STUDY_LEVELS
from audit.errors import UsageError
from audit.resolve.constraints import check_settings

NORMALIZATIONS = ("auto", "imagenet", "radimagenet", "none")
INPUT_SCHEMES = ("imagenet", "radimagenet", "none")
HEADS = ("logit", "softmax2")  # one logit, or the study's two-way softmax (Keras Dense(2))

# The study's fine-tuning values where medaudit's defaults differ (its fine-tuning.py, in
# Keras): batch 256 (one step per epoch on a 223-image fold), patience 30 (never fires in 30
# epochs), BatchNorm momentum 0.99 in Keras's convention (0.01 in PyTorch's), Adam epsilon
# 1e-7 (Keras's default; PyTorch's is 1e-8) and a two-way softmax head. `--protocol
# source-matters` starts from these; the budget names every departure from them.
STUDY_TRAIN = {"batch_size": 256, "patience": 30, "bn_momentum": 0.01, "adam_eps": 1e-7,
               "head": "softmax2"}  # fmt: skip


@dataclass(frozen=True)
class TrainSettings:
    """Fine-tuning protocol (the study's public code defaults, scaled where noted)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    dropout: float = 0.5
    input_size: int = 224
    normalize: str = "auto"  # auto: each model gets the preprocessing its pretraining used
    augment: bool = True
    rotation_deg: float = 10.0
    shift_fraction: float = 0.1
    shear_deg: float = 0.1
    zoom_fraction: float = 0.1
    max_steps_per_epoch: int | None = None
    deterministic: bool = False
    bn_momentum: float | None = None  # PyTorch's convention; None: each layer keeps its own (0.1)
    adam_eps: float = 1e-8  # PyTorch's default
    head: str = "logit"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise UsageError(
                f"train.head = {self.head!r} is not accepted; use one of {', '.join(HEADS)}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(
                f"normalize={self.normalize!r} is not accepted; use one of {', '.join(NORMALIZATIONS)}"
            )
        check_settings("train.", _field_values(self))


@dataclass(frozen=True)
class Settings:
    """Everything an audit needs to be reproduced; every field has a documented default."""

    levels: tuple[float, ...] = STUDY_LEVELS
    folds: int = 5
    repeats: int = 1  # independent training seeds per fold (they share the fold's split)
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    seed: int = 0
    image_size: int = 256
    confounders: tuple[str, ...] = ("tag", "denoise", "noise", "sex")
    confounder_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    margin: float = 0.05
    alpha: float = 0.05
    counted_levels: tuple[float, ...] | None = None
    n_resamples: int = 2000
    min_clean_auc: float = 0.6  # control (b): each gated model's clean AUC must be shown above it
    min_detector_auc: float = 0.9  # control (c): the artifact's detectability at the input size
    with_random_init: bool = False
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        """Every setting is checked here, before any image is decoded or any run trains."""
        if not self.levels or any(not _number(lv) or not 0.0 <= lv <= 1.0 for lv in self.levels):
            raise UsageError(f"levels={list(self.levels)} must be fractions between 0 and 1")
        if len(set(self.levels)) != len(self.levels):
            raise UsageError(f"levels={list(self.levels)} holds a level twice")
        check_settings("", _field_values(self))
        for name, params in self.confounder_params.items():
            if not isinstance(params, Mapping):
                raise UsageError(
                    f"confounder_params.{name} must be a table of parameters, e.g. "
                    f"[confounder_params.{name}] in the settings file; got {params!r}"
                )
        if self.counted_levels is not None and not set(self.counted_levels) <= set(self.levels):
            raise UsageError(
                f"counted_levels={list(self.counted_levels)} must be a subset of levels={list(self.levels)}"
            )
        if not any(lv > 0 for lv in self.levels):
            raise UsageError(
                f"levels={list(self.levels)} must include a level above 0: at p = 0 training "
                "holds no shortcut, so there is no reliance to measure"
            )
        if self.counted_levels is not None and (
            not self.counted_levels or any(lv <= 0 for lv in self.counted_levels)
        ):
            raise UsageError(
                f"counted_levels={list(self.counted_levels)} must be levels above 0: the gate "
                "averages the reliance gap over levels where training holds the shortcut"
            )


def _field_values(settings: object) -> list[tuple[str, object]]:
    return [(f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings)]


def _number(value: object) -> bool:
    """A real, finite number (not a bool, a string or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def find_config_file(start: Path) -> Path | None:
    """``medaudit.toml`` wins over ``pyproject.toml``'s ``[tool.medaudit]``, searched upwards."""
    for folder in (start, *start.parents):
        for name in ("medaudit.toml", "pyproject.toml"):
            candidate = folder / name
            if candidate.is_file() and (name == "medaudit.toml" or _has_tool_table(candidate)):
                return candidate
    return None


def _has_tool_table(pyproject: Path) -> bool:
    try:
        return "medaudit" in tomllib.loads(pyproject.read_text()).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False


def read_config_table(path: Path) -> dict[str, Any]:
    """The medaudit table of a config file; a broken file is a one-line usage error."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path.name} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path.name}: {exc.strerror}") from None
    if path.name == "pyproject.toml":
        return dict(data.get("tool", {}).get("medaudit", {}))
    return dict(data.get("tool", {}).get("medaudit", data))


def build_settings(
    file_values: Mapping[str, Any] | None = None,
    flag_values: Mapping[str, Any] | None = None,
    protocol: str | None = None,
) -> Settings:
    """Layer defaults <- the protocol's (the study's training values under `--protocol`) <-
    config file <- flags (flags that are None were not given)."""
    merged: dict[str, Any] = {}
    for layer in (
        {"train": dict(STUDY_TRAIN)} if protocol else {},
        file_values or {},
        {k: v for k, v in (flag_values or {}).items() if v is not None},
    ):
        for key, value in layer.items():
            if key == "train" and isinstance(value, Mapping):
                merged.setdefault("train", {}).update(value)
            elif key == "confounder_params" and isinstance(value, Mapping):
                params = merged.setdefault("confounder_params", {})
                for name, table in value.items():
                    if isinstance(table, Mapping) and isinstance(params.get(name, {}), Mapping):
                        params.setdefault(name, {}).update(table)
                    else:  # not a table: Settings names it
                        params[name] = table
            else:
                merged[key] = value
    train = _coerce(TrainSettings, merged.pop("train", {}), "train")
    return _coerce(Settings, {**merged, "train": train}, "")


def _coerce(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Build a settings dataclass, naming any unknown key and converting lists to tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            where = f"[tool.medaudit{'.' + prefix if prefix else ''}]"
            accepted = ", ".join(sorted(fields))
            raise UsageError(f"unknown setting {key!r} in {where}; accepted: {accepted}")
        kwargs[key] = _convert(value, hints[key], key)
    return cls(**kwargs)


def _convert(value: Any, hint: Any, key: str) -> Any:
    if isinstance(value, TrainSettings):
        return value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and args:
        return None if value is None else _convert(value, args[0], key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UsageError(f"setting {key!r} must be a list, got {value!r}")
        if args and args[0] is float:
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                raise UsageError(f"setting {key!r} must be a list of numbers, got {value!r}")
            return tuple(float(v) for v in value)
        return tuple(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, bool, str) and not isinstance(value, hint):
        raise UsageError(f"setting {key!r} must be {hint.__name__}, got {value!r}")
    return value


FOUND = "found by searching upwards from the current folder"
NAMED = "named with --config"
LOCKED = "locked with --locked-config"


@dataclass(frozen=True)
class SettingsOrigin:
    """Where each setting of an audit came from, for results.json, page 1 and the console.

    A gate must see what changed it: a settings file medaudit found by itself (a cloned
    repository's pyproject.toml, say) could loosen the margin with nobody having asked for it.
    ``from_file`` holds the file's values by dotted key; ``from_flags`` the keys the command line
    set; every other setting has its documented default. ``file`` is a file name, never a path.
    """

    file: str | None = None
    how: str | None = None  # FOUND, NAMED or LOCKED
    from_file: Mapping[str, Any] = field(default_factory=dict)
    from_flags: tuple[str, ...] = ()

    @property
    def locked(self) -> bool:
        return self.how == LOCKED

    def source_of(self, key: str) -> str:
        if key in self.from_flags:
            return "command line"
        if key in self.from_file:
            return f"{self.file} ({self.how})"
        return "default"

    def record(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "how": self.how,
            "locked": self.locked,
            "from_file": {k: _plain(v) for k, v in self.from_file.items()},
            "from_flags": list(self.from_flags),
        }


def dotted(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings tables as dotted keys (``train.epochs``, ``confounder_params.tag.font_size``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        table = (not prefix and key in ("train", "confounder_params")) or (
            prefix == "confounder_params."  # one table per confounder
        )
        if table and isinstance(value, Mapping):
            flat.update(dotted(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    """A JSON-ready value: tuples as lists, anything else unusual as its short text."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)[:200]


THRESHOLDS = (
    "margin",
    "alpha",
    "counted_levels",
    "n_resamples",
    "min_clean_auc",
    "min_detector_auc",
)


def threshold_sources(origin: SettingsOrigin) -> dict[str, str]:
    """Where each declared threshold came from: the default, the command line or a file."""
    return {key: origin.source_of(key) for key in THRESHOLDS}
