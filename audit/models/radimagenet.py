"""The RadImageNet ResNet50 reference in each published layout.

Three files circulate and each needs its own reading:

- the official PyTorch file: keys `backbone.<i>.*` over
  `nn.Sequential(*list(resnet50().children())[:9])`, i.e. torchvision's ResNet50 under numeric names;
- the Keras-equivalent port (`RadImageNet-ResNet50_notop.pth`): torchvision-like key names, but every
  convolution has a bias, the stride sits in the first 1x1 convolution of a block and BatchNorm eps is
  Keras's 1.001e-5. Loading it into torchvision's resnet50 would either fail (bias keys) or, with the
  biases dropped, silently compute something else, so it gets its own module, `KerasResNet50`;
- the Hugging Face mirror's `ResNet50.pt`: a plain torchvision state_dict.

Each source normalised its inputs its own way: the official PyTorch example maps 0-255 pixels by
(x - 127.5) * 2 / 255; the study fine-tuned the Keras weights after Keras's caffe-mode
preprocessing (RGB to BGR, minus the BGR channel means [103.939, 116.779, 123.68]) and a 1/255
rescale, and the port and the mirror carry those Keras weights. The formats name the layout so
the run spec records which one, and with it how the source normalised its inputs.

The official file's numeric names are `SEQUENTIAL_CHILDREN`, a key layout that the architecture
registry attaches to the ResNets (whose children it names); the generic clean-up knows nothing of it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from audit.models.state_dicts import KeyLayout, StateDict

OFFICIAL = "radimagenet-official"
KERAS_PORT = "radimagenet-keras-port"
HF_MIRROR = "radimagenet-hf"
PREPROCESSING = "radimagenet"
KERAS_ARCH = "keras-resnet50"
SEQUENTIAL_LAYOUT = "sequential-children"

# How each source normalised its inputs (see the module docstring), recorded in LoadedModel.notes.
SOURCE_PREPROCESSING = {
    OFFICIAL: "source preprocessing: (x - 127.5) * 2 / 255 on 0-255 pixels (official PyTorch example)",
    KERAS_PORT: "source preprocessing: Keras caffe-mode mean subtraction, plus /255 (Keras weights)",
    HF_MIRROR: "source preprocessing: Keras caffe-mode mean subtraction, plus /255 (Keras weights)",
}

# Index in list(torchvision.models.resnet50().children()) -> attribute name.
_CHILD_NAMES = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4", 9: "fc"}
_CHILD_KEY = re.compile(r"^(\d+)\.(.+)$")
_KERAS_EPS = 1.001e-5


def from_sequential_children(state_dict: StateDict) -> StateDict | None:
    """Rename `0.*`, `1.*`, `4.*`..`7.*` to torchvision ResNet names; None if not that layout."""
    if "4.0.conv1.weight" not in state_dict:
        return None
    renamed = {}
    for key, value in state_dict.items():
        match = _CHILD_KEY.match(key)
        if match is None or int(match.group(1)) not in _CHILD_NAMES:
            return None
        renamed[f"{_CHILD_NAMES[int(match.group(1))]}.{match.group(2)}"] = value
    return renamed


# torchvision's ResNets and KerasResNet50 share these children, so both are registered with it.
SEQUENTIAL_CHILDREN = KeyLayout(
    SEQUENTIAL_LAYOUT,
    from_sequential_children,
    "mapped nn.Sequential(*resnet.children()) indices 0,1,4-7 to conv1, bn1, layer1-4",
)


class KerasBottleneck(nn.Module):
    """Keras's ResNet50 block: biased convolutions, stride in the first 1x1 (torchvision: in the 3x3)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride, bias=True)
        self.bn1 = nn.BatchNorm2d(width, eps=_KERAS_EPS)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(width, eps=_KERAS_EPS)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=True)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=_KERAS_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True),
                nn.BatchNorm2d(out_channels, eps=_KERAS_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class KerasResNet50(nn.Module):
    """keras.applications.ResNet50 without top, under the port's (torchvision-like) key names.

    Returns globally average-pooled 2048-d features, the backbone contract. Keras pads the stem
    with zeros before a valid 7x7 conv and before the 3x3 max-pool; symmetric padding 3 and, after
    a ReLU (values >= 0), padding 1 on the pool compute the same thing. BatchNorm momentum is not
    part of the weights; PyTorch's default is kept so every backbone is fine-tuned alike.
    """

    feature_dim = 2048

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64, eps=_KERAS_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, blocks=3, stride=1)
        self.layer2 = self._stage(256, 128, blocks=4, stride=2)
        self.layer3 = self._stage(512, 256, blocks=6, stride=2)
        self.layer4 = self._stage(1024, 512, blocks=3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    @staticmethod
    def _stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [KerasBottleneck(in_channels, width, stride)]
        layers += [KerasBottleneck(width * 4, width) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def reference_format(arch: str, layout: str) -> str:
    """Which published RadImageNet file a recognised state_dict came from."""
    if arch == KERAS_ARCH:
        return KERAS_PORT
    if layout == SEQUENTIAL_LAYOUT:
        return OFFICIAL
    return HF_MIRROR
