"""One place that turns any model file into a backbone the engine can fine-tune.

`load_model` is for what users bring; `load_reference` for the RadImageNet reference, whose
published layouts it tells apart by content and records, with the preprocessing its source used.
Both read files through `checkpoints.read_weights`, which never runs code unless a trust flag says
so, and both return a `LoadedModel` whose backbone holds exactly the saved weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from audit.common.hashing import file_sha256
from audit.models import radimagenet
from audit.models.architectures import Backbone
from audit.models.building import build_backbone
from audit.models.checkpoints import Weights, read_weights, refuse_non_finite
from audit.models.formats import sniff_format
from audit.models.recognise import Recognised, recognise

__all__ = ["LoadedModel", "load_model", "load_reference", "sniff_format"]

IMAGENET = "imagenet"


@dataclass(frozen=True)
class LoadedModel:
    """A backbone with its weights loaded, and the provenance a run spec records."""

    backbone: Backbone  # feature extractor, classifier stripped, weights loaded
    arch: str
    format: str  # state_dict | safetensors | torchscript | pickled-module | radimagenet-*
    sha256: str
    preprocessing: str  # what the source's inputs were normalised with: imagenet | radimagenet
    in_channels: int  # of the saved first convolution: 1 or 3 (the backbone accepts 3 either way)
    had_classifier: bool
    notes: tuple[str, ...] = ()

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.backbone.module.parameters())


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    trust_code: bool = False,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Load a user's checkpoint of any accepted format; `arch` overrides recognition."""
    path = Path(path)
    weights = read_weights(path, trust_code=trust_code, trust_pickle=trust_pickle)
    found = recognise(weights.state_dict, arch=arch, hints=weights.arch_hints, source=str(path))
    is_keras = found.arch == radimagenet.KERAS_ARCH
    preprocessing = radimagenet.PREPROCESSING if is_keras else IMAGENET
    return _loaded(path, weights, found, weights.format, preprocessing)


def load_reference(path: str | Path, *, arch: str | None = None) -> LoadedModel:
    """Load a RadImageNet reference in any published layout; never runs code.

    The layout (official `backbone.<i>` file, Keras-equivalent port, Hugging Face mirror) is
    recognised from the keys and recorded as the format, with the source's preprocessing in the
    notes.
    """
    path = Path(path)
    weights = read_weights(path)
    found = recognise(weights.state_dict, arch=arch, source=str(path))
    kind = radimagenet.reference_format(found.arch, found.layout)
    notes = [radimagenet.SOURCE_PREPROCESSING[kind]]
    if found.arch not in ("resnet50", radimagenet.KERAS_ARCH):
        notes.append(f"reference architecture is {found.arch}, not the protocol's ResNet50")
    if weights.format != "state_dict":
        notes.append(f"read from a {weights.format} file")
    return _loaded(path, weights, found, kind, radimagenet.PREPROCESSING, tuple(notes))


def _loaded(
    path: Path,
    weights: Weights,
    found: Recognised,
    kind: str,
    preprocessing: str,
    extra_notes: tuple[str, ...] = (),
) -> LoadedModel:
    refuse_non_finite(path, found.weights)  # the backbone's: the head is replaced anyway
    backbone = build_backbone(found)
    return LoadedModel(
        backbone=backbone,
        arch=found.arch,
        format=kind,
        sha256=file_sha256(str(path)),
        preprocessing=preprocessing,
        in_channels=found.in_channels,
        had_classifier=found.had_classifier,
        notes=(*weights.notes, *found.notes, *_dtype_notes(found), *extra_notes),
    )


def _dtype_notes(found: Recognised) -> tuple[str, ...]:
    """load_state_dict casts into float32 parameters; say so when the file held other floats."""
    dtypes = {
        str(v.dtype).removeprefix("torch.")
        for v in found.weights.values()
        if v.is_floating_point() and v.dtype != torch.float32
    }
    return (f"converted {', '.join(sorted(dtypes))} weights to float32",) if dtypes else ()
