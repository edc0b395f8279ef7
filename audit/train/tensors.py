"""Sample sets as device tensors, resized once: the accelerator never waits on PIL."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class SetTensors:
    """uint8 images (N, S, S) at the model's input size, labels and pseudonymous case ids."""

    images: torch.Tensor
    labels: torch.Tensor
    case_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def to_set_tensors(
    images: np.ndarray,
    labels: np.ndarray,
    case_ids: tuple[str, ...],
    input_size: int,
    device: torch.device,
) -> SetTensors:
    """Resize once to the input size (antialiased) and keep uint8 on the device."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.shape[-1] != input_size or tensor.shape[-2] != input_size:
        resized = F.interpolate(
            tensor[:, None].float(),
            size=(input_size, input_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        tensor = resized[:, 0].round().clamp(0, 255).to(torch.uint8)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return SetTensors(
        images=tensor.to(device, non_blocking=True),
        labels=torch.as_tensor(labels, dtype=torch.float32, device=device),
        case_ids=case_ids,
    )


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S) to one-channel float (B, 1, S, S) in [0, 1]."""
    return batch.float().unsqueeze(1) / 255.0


def standardise(x: torch.Tensor, scheme: str, channels: int = 3) -> torch.Tensor:
    """One-channel [0, 1] floats to (B, C, S, S) with the preprocessing the weights expect.

    Per-channel affine, so it commutes with the (linear, border-padded) augmentation warp: the
    engine warps the single channel first, a third of the work of warping three copies.
    """
    if scheme == "radimagenet":
        x = (x - 0.5) * 2.0  # (x - 127.5) * 2 / 255: the official PyTorch example
    x = x.expand(-1, channels, -1, -1)
    if scheme == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN[:channels], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD[:channels], device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous(memory_format=memory_format(x.device))


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where convolutions run faster in it; the default layout on the
    CPU, where torch 2.14's multi-threaded channels_last backward corrupts the heap on some
    batch sizes (7 images of 32 px: a double free; tests/test_engine_cpu.py)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def normalise(batch: torch.Tensor, scheme: str, channels: int = 3) -> torch.Tensor:
    """uint8 (B, S, S) to float (B, C, S, S) with the preprocessing the weights were trained with."""
    return standardise(to_unit(batch), scheme, channels)
