"""The confounder seam: one frozen record per artifact, and one function that puts it on images.

A confounder is data, not a class hierarchy. It names its MICCAT working category (the study's own
category names are not public, so the report calls these "working" categories), carries the study's
parameter values as defaults, and holds pure functions of ``(image, rng, **params)``. Keeping the
functions pure and seeding one generator per image is what lets any confounded image be replayed
from the run spec alone (the TorchIO habit: parameters plus seed reproduce the result).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from audit.errors import UsageError

CATEGORIES = ("patient", "acquisition", "processing", "annotation")
KINDS = ("pixel", "sampling")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

PixelFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Confounder:
    """A shortcut the audit plants: either a pixel artifact or a biased choice of cases.

    ``kind == "pixel"``: ``apply(image, rng, **params)`` marks a confounded image and
    ``baseline`` (None = identity) is applied to every other image, so that the two groups differ
    only by the artifact (noise gives everyone the full dose, the confounded the low dose).
    ``kind == "sampling"``: pixels are untouched; the splits draw positives with
    ``attribute == attribute_value`` in the chosen proportion. Such a confounder has no clean
    test set, since no image is free of a patient's sex.

    ``check``, if given, validates a resolved parameter set and raises ``UsageError``; it runs in
    ``resolve_params`` so a bad value fails before any image is touched.
    """

    name: str
    category: str
    description: str
    kind: str
    defaults: Mapping[str, Any]
    apply: PixelFn | None = None
    baseline: PixelFn | None = None
    attribute: str | None = None
    attribute_value: str | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        frozen = {k: MappingProxyType(dict(v)) for k, v in self.presets.items()}
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "presets", MappingProxyType(frozen))
        for preset, values in self.presets.items():
            self._reject_unknown(values, f"preset {preset!r}")

    def __reduce__(self) -> tuple:
        """Picklable (read-only mappings are not), so worker processes receive confounders."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["defaults"] = dict(self.defaults)
        values["presets"] = {k: dict(v) for k, v in self.presets.items()}
        return (_rebuild, (values,))

    def resolve_params(
        self, overrides: Mapping[str, Any] | None = None, preset: str | None = None
    ) -> dict[str, Any]:
        """Defaults, then the preset, then the overrides: the exact values a run records."""
        params = dict(self.defaults)
        if preset is not None:
            params.update(self._preset(preset))
        overrides = dict(overrides or {})
        self._reject_unknown(overrides, "overrides")
        for key, value in overrides.items():
            params[key] = coerce_param(self.name, key, value, self.defaults[key])
        if self.check is not None:
            self.check(params)
        return params

    def _preset(self, preset: str) -> Mapping[str, Any]:
        if preset not in self.presets:
            accepted = ", ".join(sorted(self.presets)) or "none"
            raise UsageError(
                f"preset={preset!r} is not a preset of confounder {self.name!r}; "
                f"accepted: {accepted}"
            )
        return self.presets[preset]

    def _reject_unknown(self, params: Mapping[str, Any], where: str) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise UsageError(
                f"{unknown[0]!r} (in {where}) is not a parameter of confounder {self.name!r}; "
                f"accepted parameters: {accepted}"
            )


def _check_fields(conf: Confounder) -> None:
    """Reject a malformed confounder when it is built, not when a plugin's run half-finishes."""
    problems = []
    if not isinstance(conf.name, str) or not _NAME.match(conf.name):
        problems.append(f"name={conf.name!r} must be lower-case letters, digits, '-' or '_'")
    if conf.category not in CATEGORIES:
        problems.append(f"category={conf.category!r} must be one of {', '.join(CATEGORIES)}")
    if conf.kind not in KINDS:
        problems.append(f"kind={conf.kind!r} must be one of {', '.join(KINDS)}")
    if conf.kind == "pixel" and not callable(conf.apply):
        problems.append("a pixel confounder needs a callable apply")
    if conf.kind == "sampling" and not (conf.attribute and conf.attribute_value):
        problems.append("a sampling confounder needs attribute and attribute_value")
    if conf.kind == "sampling" and (conf.apply or conf.baseline):
        problems.append("a sampling confounder has no pixel functions")
    if problems:
        raise UsageError(f"confounder {conf.name!r} is malformed: {'; '.join(problems)}")


def coerce_param(name: str, key: str, value: Any, default: Any) -> Any:
    """Accept a value of the default's type (or a string spelling of it, as a CLI passes).

    A ``None`` default means "optional, any value"; the confounder's ``check`` validates it.
    """
    if default is None or value is None:
        return value
    try:
        return _coerce(value, default)
    except (TypeError, ValueError):
        raise UsageError(
            f"{key}={value!r} is not valid for confounder {name!r}; expected "
            f"{_type_name(default)} like the default {default!r}"
        ) from None


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or len(items) != len(default):
            raise ValueError(value)
        return tuple(_coerce(v, d) for v, d in zip(items, default, strict=True))
    if isinstance(default, bool):
        return _coerce_bool(value)
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(default, int):
        if isinstance(value, str):
            return int(value.strip())
        if isinstance(value, int | np.integer):
            return int(value)
        raise TypeError(value)
    if isinstance(default, float):
        if isinstance(value, str | int | float | np.integer | np.floating):
            return float(value)
        raise TypeError(value)
    if not isinstance(value, type(default)):
        raise TypeError(value)
    return value


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise TypeError(value)


def _type_name(default: Any) -> str:
    if isinstance(default, tuple):
        return f"a {len(default)}-tuple"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string"}.get(
        type(default), type(default).__name__
    )


def apply_confounder(
    conf: Confounder,
    images: np.ndarray,
    confounded: np.ndarray,
    *,
    seed: int,
    params: Mapping[str, Any],
    ids: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Return a new (N, H, W) uint8 array: ``apply`` on confounded images, ``baseline`` on the rest.

    Image i draws from ``default_rng([seed, ids[i]])`` (``ids`` defaults to the batch position),
    so its pixels depend on the seed and its own id only: not on batch size, order or on which
    other images were confounded. Pass stable ids (cohort indices) when the same image must come
    out identical in different subsets.
    """
    if conf.kind != "pixel":
        raise ValueError(
            f"confounder {conf.name!r} is a sampling confounder: it changes which cases are "
            "drawn, not pixels; the splits apply it"
        )
    images, confounded, keys = _check_batch(images, confounded, seed, ids)
    resolved = conf.resolve_params(params)
    out = images.copy()
    for i in range(len(images)):
        fn = conf.apply if confounded[i] else conf.baseline
        if fn is not None:
            rng = np.random.default_rng([seed, keys[i]])
            out[i] = _checked_output(conf, fn(images[i], rng, **resolved), images[i].shape)
    return out


def _check_batch(
    images: np.ndarray, confounded: np.ndarray, seed: int, ids: Any
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    images = np.asarray(images)
    confounded = np.asarray(confounded)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a (N, H, W) uint8 array; got {images.dtype} {images.shape}"
        )
    if confounded.dtype != bool or confounded.shape != images.shape[:1]:
        raise ValueError(
            f"confounded must be a bool array of shape ({len(images)},); "
            f"got {confounded.dtype} {confounded.shape}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    keys = list(range(len(images))) if ids is None else [int(k) for k in np.asarray(ids)]
    if len(keys) != len(images) or any(k < 0 for k in keys):
        raise ValueError(f"ids must be {len(images)} non-negative ints, one per image")
    return images, confounded, keys


def _checked_output(conf: Confounder, image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != shape:
        raise ValueError(
            f"confounder {conf.name!r} returned {image.dtype} {image.shape}; expected uint8 {shape}"
        )
    return image


def _rebuild(values: dict[str, Any]) -> Confounder:
    return Confounder(**values)
