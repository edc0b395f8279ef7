"""Turn cached uint8 images into exactly the tensor a shipped model expects.

A probe is only meaningful if the clean images look to the model like its own inputs did, so the
input is resolved against what the model declares (ONNX input shape, PyTorch first convolution)
and every mismatch with the flags is a one-line error that says what the model expects, instead of
a broadcasting error deep inside a runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audit.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_PRESETS = ("imagenet", "radimagenet", "none")
DEFAULT_INPUT_SIZE = 224
DEFAULT_CHANNELS = 3
DTYPES = {"float32": np.float32, "float16": np.float16}

Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class DeclaredInput:
    """The image input as the model file declares it (dims may be symbolic or unknown)."""

    name: str
    shape: tuple[Dim, ...] | None  # None: the format declares no shape (PyTorch eager)
    dtype: str = "float32"
    channels_hint: int | None = None  # e.g. a PyTorch model's first convolution's in_channels

    def describe(self) -> str:
        if self.shape is None:
            return f"input {self.name!r}"
        dims = ", ".join(str(d) if d is not None else "?" for d in self.shape)
        return f"input {self.name!r} of shape [{dims}]"


@dataclass(frozen=True)
class InputSpec:
    """The resolved input: what the probe feeds, per batch, to the runtime."""

    name: str
    channels: int
    height: int
    width: int
    layout: str = "NCHW"
    dtype: str = "float32"
    batch: int | None = None  # a batch size the model fixes; None: any

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        if self.layout == "NHWC":
            return (batch, self.height, self.width, self.channels)
        return (batch, self.channels, self.height, self.width)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x / 255 - mean) / std``; ``name`` is the preset, or "custom"."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _fixed(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _layout(shape: tuple[Dim, ...]) -> str:
    """NCHW unless only the last axis looks like a channel axis (models converted from Keras)."""
    second, last = _fixed(shape[1]), _fixed(shape[3])
    if second not in (1, 3) and last in (1, 3):
        return "NHWC"
    return "NCHW"


def resolve_input(
    declared: DeclaredInput,
    model_name: str,
    *,
    input_size: int | None = None,
    channels: int | None = None,
) -> InputSpec:
    """Check the flags against the declared input and fill what the model leaves open."""
    if declared.dtype not in DTYPES:
        raise UsageError(
            f"{model_name} expects {declared.describe()} of type {declared.dtype}; the probe feeds "
            "float32 or float16 images, so export the model with a floating-point image input"
        )
    if input_size is not None and not 8 <= input_size <= 4096:
        raise UsageError(f"`input_size` {input_size}: use a side from 8 to 4096 pixels")
    if channels is not None and channels not in (1, 3):
        raise UsageError(f"`channels` {channels}: use 1 (grey) or 3 (grey repeated as RGB)")
    shape = declared.shape
    if shape is None:
        return _resolve_undeclared(declared, model_name, input_size, channels)
    if len(shape) != 4:
        raise UsageError(
            f"{model_name} expects {declared.describe()}, not an image batch; the probe feeds "
            "(batch, channels, height, width) or (batch, height, width, channels)"
        )
    layout = _layout(shape)
    if layout == "NCHW":
        c_dim, h_dim, w_dim = shape[1], shape[2], shape[3]
    else:
        h_dim, w_dim, c_dim = shape[1], shape[2], shape[3]
    fixed_c, fixed_h, fixed_w = _fixed(c_dim), _fixed(h_dim), _fixed(w_dim)
    what = f"{model_name} expects {declared.describe()}"
    if fixed_c is not None and fixed_c not in (1, 3):
        raise UsageError(f"{what}: {fixed_c} channels; the probe feeds grey images as 1 or 3")
    if channels is not None and fixed_c is not None and channels != fixed_c:
        raise UsageError(
            f"{what}, i.e. {fixed_c} channel(s); `channels` {channels} does not match: "
            "leave `channels` out"
        )
    wanted = (fixed_h or input_size, fixed_w or input_size)
    if input_size is not None and wanted != (input_size, input_size):
        side = f"{fixed_h or '?'}x{fixed_w or '?'}"
        hint = f"pass `input_size` {fixed_h}" if fixed_h == fixed_w else "leave `input_size` out"
        raise UsageError(
            f"{what}, i.e. {side} pixels; `input_size` {input_size} does not match: {hint}"
        )
    side = input_size or DEFAULT_INPUT_SIZE
    return InputSpec(
        name=declared.name,
        channels=fixed_c or channels or declared.channels_hint or DEFAULT_CHANNELS,
        height=fixed_h or side,
        width=fixed_w or side,
        layout=layout,
        dtype=declared.dtype,
        batch=_fixed(shape[0]),
    )


def _resolve_undeclared(
    declared: DeclaredInput, model_name: str, input_size: int | None, channels: int | None
) -> InputSpec:
    hint = declared.channels_hint
    if channels is not None and hint is not None and channels != hint:
        raise UsageError(
            f"{model_name}'s first convolution takes {hint} channel(s); `channels` {channels} "
            "does not match: leave `channels` out"
        )
    side = input_size or DEFAULT_INPUT_SIZE
    return InputSpec(declared.name, channels or hint or DEFAULT_CHANNELS, side, side)


def _values(text: str | Sequence[float] | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        items = text.split(",") if isinstance(text, str) else list(text)
        values = tuple(float(v) for v in items if str(v).strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: give 1 or 3 comma-separated numbers") from None
    if not values or not all(np.isfinite(values)):
        raise UsageError(f"{option} {text!r}: give 1 or 3 comma-separated finite numbers")
    return values


def resolve_normalization(
    preset: str | None,
    mean: str | Sequence[float] | None,
    std: str | Sequence[float] | None,
    channels: int,
) -> Normalization:
    """A named preset, or explicit ``--mean/--std`` on the 0-1 scale (one value or one per channel)."""
    mean_v, std_v = _values(mean, "`mean`"), _values(std, "`std`")
    if (mean_v is None) != (std_v is None):
        raise UsageError("`mean` and `std` go together: give both, or use `normalize`")
    if mean_v is not None and std_v is not None:
        if preset is not None:
            raise UsageError("give either `normalize` or `mean`/`std`, not both")
        return Normalization(
            "custom", _per_channel(mean_v, channels, "`mean`"), _std(std_v, channels)
        )
    name = preset or "imagenet"
    if name not in NORMALIZE_PRESETS:
        raise UsageError(f"`normalize` {name!r}; use one of {', '.join(NORMALIZE_PRESETS)}")
    if name == "imagenet":
        # One-channel models get the first (red) channel's statistics, as the fine-tuning engine does.
        return Normalization(name, IMAGENET_MEAN[:channels], IMAGENET_STD[:channels])
    if name == "radimagenet":  # (x - 127.5) * 2 / 255: the official PyTorch example
        return Normalization(name, (0.5,) * channels, (0.5,) * channels)
    return Normalization(name, (0.0,) * channels, (1.0,) * channels)


def _per_channel(values: tuple[float, ...], channels: int, option: str) -> tuple[float, ...]:
    if len(values) not in (1, channels):
        raise UsageError(
            f"{option} has {len(values)} values; the model takes {channels} channel(s): give 1 or "
            f"{channels}"
        )
    if any(abs(v) > 1.0 for v in values) and option == "`mean`":
        raise UsageError(
            f"{option} {','.join(f'{v:g}' for v in values)} looks like the 0-255 scale; give it on "
            "the 0-1 scale (divide by 255)"
        )
    return values * channels if len(values) == 1 else values


def _std(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if any(v <= 0 for v in values):
        raise UsageError(f"`std` {','.join(f'{v:g}' for v in values)}: every value must be > 0")
    return _per_channel(values, channels, "`std`")


@dataclass(frozen=True)
class Preprocessor:
    """uint8 (B, H0, W0) -> the model's float input, resized (antialiased) and normalised."""

    spec: InputSpec
    normalization: Normalization

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]
        if tuple(x.shape[-2:]) != (self.spec.height, self.spec.width):
            x = F.interpolate(
                x,
                size=(self.spec.height, self.spec.width),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        x = x / 255.0
        mean = torch.tensor(self.normalization.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.normalization.std).view(1, -1, 1, 1)
        x = (x.expand(-1, self.spec.channels, -1, -1) - mean) / std
        if self.spec.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return np.ascontiguousarray(x.numpy(), dtype=DTYPES[self.spec.dtype])
