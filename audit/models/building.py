"""Turn a recognised state_dict into a backbone holding exactly the saved weights.

The module is built on the meta device and then given empty CPU storage that `load_state_dict`
(strict) fills completely, so no time goes into a random initialisation that would be overwritten,
and a weight that was not in the file cannot slip through unnoticed.
"""

from __future__ import annotations

import torch
from torch import nn

from audit.models.architectures import Backbone, Built
from audit.models.recognise import Recognised

_COUNTER = "num_batches_tracked"


class GrayConv2d(nn.Conv2d):
    """A one-channel first convolution that also takes the engine's 3-channel input.

    Grayscale checkpoints keep their saved weights exactly (`in_channels=1` is recorded). The
    engine feeds grey images repeated over 3 channels by default; averaging them back to one
    channel before this convolution gives the same output as repeating the weights / 3 over three
    input channels, without altering a single saved weight.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            x = x.mean(dim=1, keepdim=True)
        return super().forward(x)


def build_backbone(found: Recognised) -> Backbone:
    """A CPU backbone whose state_dict equals `found.weights` (plus zero BN counters if absent)."""
    built = _build(found, torch.device("meta"))
    module = built.backbone.module
    if _non_persistent_buffers(module):  # they would be left uninitialised by to_empty
        built = _build(found, torch.device("cpu"))
        module = built.backbone.module
    else:
        module.to_empty(device="cpu")
    module.load_state_dict(_with_counters(module, found.weights), strict=True)
    return built.backbone


def _build(found: Recognised, device: torch.device) -> Built:
    with device:
        built = found.architecture.build(found.weights)
        if found.in_channels == 1 and found.first_conv is not None:
            make_gray(built.backbone.module, found.first_conv.removesuffix(".weight"))
    return built


def make_gray(module: nn.Module, path: str) -> None:
    """Swap the first convolution for a one-channel GrayConv2d (the saved weights stay as saved)."""
    conv = module.get_submodule(path)
    assert isinstance(conv, nn.Conv2d)
    gray = GrayConv2d(
        1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, conv.bias is not None, conv.padding_mode,
    )  # fmt: skip
    module.set_submodule(path, gray)


def _non_persistent_buffers(module: nn.Module) -> bool:
    saved = set(module.state_dict())
    return any(name not in saved for name, _ in module.named_buffers())


def _with_counters(module: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints from before PyTorch 0.4 lack BatchNorm's step counter; it only matters when
    momentum is None, and zero is what a fresh BatchNorm holds."""
    missing = {
        key: torch.zeros((), dtype=torch.long)
        for key in module.state_dict()
        if key.endswith(_COUNTER) and key not in weights
    }
    return {**weights, **missing}
