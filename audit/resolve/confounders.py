"""Each confounder with its final parameters: the one resolver ``check``, ``check --probe`` and
``probe`` share, so the fine-tuning runs and the probe can never plant different artifacts.

The TorchIO habit: what is applied is recorded whole (parameters, preset, seed, and the
resolution at which pixels are changed), so any confounded image can be replayed from the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from audit.confounders import Confounder, get_confounder
from audit.errors import UsageError

# How a confounded image reaches the model's input today (train/tensors.py, probe/preprocess.py):
# the cached image, at the working size, is resized bilinearly with antialiasing.
TO_INPUT = "bilinear, antialiased"


@dataclass(frozen=True)
class ResolvedConfounder:
    """What a run or a probe applies: the confounder, its final parameters and where."""

    name: str
    confounder: Confounder = field(repr=False)
    params: Mapping[str, Any]
    preset: str | None
    seed: int  # the base seed every image's draw derives from (with its own id)
    work_size: int | None  # side of the images it is applied to; None: not yet known (probe)
    to_input: str = TO_INPUT  # how the confounded image is resized to the model's input

    def __post_init__(self) -> None:  # a copy of its own (a plain dict: worker processes and
        object.__setattr__(self, "params", dict(self.params))  # Ray pickle it)

    @property
    def kind(self) -> str:
        return self.confounder.kind

    def at(self, work_size: int) -> ResolvedConfounder:
        """The same confounder once the working size is known (the probe's follows its model)."""
        resolved = replace(self, work_size=work_size)
        resolved.check_applies()
        return resolved

    def check_applies(self) -> None:
        """Apply it once to a test image of the working size, now: parameters that cannot work
        at this size (a tag larger than the image) fail before any run, not in every run."""
        if self.kind != "pixel" or self.work_size is None:
            return
        import numpy as np

        from audit.confounders.base import apply_confounder

        side = self.work_size  # a gradient with seeded noise: texture a plugin may need
        ramp = np.linspace(40, 215, side)[None, :] + np.linspace(-20, 20, side)[:, None]
        noise = np.random.default_rng(0).normal(0, 10, (side, side))
        image = np.clip(ramp + noise, 0, 255).astype(np.uint8)[None]
        try:
            apply_confounder(
                self.confounder, image, np.array([True]), seed=self.seed, params=self.params
            )
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's error, said once and up front
            raise UsageError(
                f"confounder {self.name!r} fails on a {self.work_size}-pixel test image "
                f"({type(exc).__name__}); check its parameters and that it handles images of "
                "this size"
            ) from None

    def record(self) -> dict[str, Any]:
        """What results.json keeps of it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "preset": self.preset,
            "params": dict(self.params),
            "seed": self.seed,
            "work_size": self.work_size,
            "to_input": self.to_input,
        }


def choose_preset(conf: Confounder, overrides: Mapping[str, Any], modality: str) -> str | None:
    """The preset: the one asked for; else the modality's (noise: the CT HU window) unless the
    user set one of that preset's own parameters. Setting another parameter keeps the preset:
    ``--modality ct --param noise.low_dose=1e7`` still windows CT as CT."""
    asked = overrides.get("preset")
    if asked is not None:
        return str(asked)
    own = set(conf.presets.get(modality, {}))
    if modality in conf.presets and not own & set(overrides):
        return modality
    return None


def resolve_confounders(
    names: Iterable[str],
    params: Mapping[str, Mapping[str, Any]],
    modality: str,
    *,
    seed: int,
    work_size: int | None,
    extra: Mapping[str, Confounder] | None = None,
) -> dict[str, ResolvedConfounder]:
    """Name -> resolved confounder: defaults <- preset <- the user's parameters, checked now,
    before any model or image is loaded. ``extra`` holds plugin confounders."""
    for name in params:  # parameters of a confounder that does not exist: a typo, say so now
        if name not in (extra or {}) and ":" not in name:  # (a plugin spec is never loaded here)
            get_confounder(name)
    resolved = {}
    for name in names:
        conf = (extra or {}).get(name) or get_confounder(name)
        overrides = dict(params.get(name, {}))
        preset = choose_preset(conf, overrides, modality)
        overrides.pop("preset", None)
        if conf.name in resolved:
            raise UsageError(
                f"two confounders are named {conf.name!r} ({name!r} among them); audit one of "
                "them, or give the plugin's confounder another name"
            )
        resolved[conf.name] = ResolvedConfounder(
            name=conf.name,
            confounder=conf,
            params=conf.resolve_params(overrides, preset=preset),
            preset=preset,
            seed=seed,
            work_size=work_size,
        )
        resolved[conf.name].check_applies()
    return resolved


def probed(
    confounders: Mapping[str, ResolvedConfounder],
) -> tuple[dict[str, ResolvedConfounder], tuple[str, ...]]:
    """(probed, skipped): the probe changes pixels, or compares the sexes; a confounder that
    selects cases by another attribute cannot be probed without training."""
    kept = {
        name: rc
        for name, rc in confounders.items()
        if rc.kind == "pixel" or rc.confounder.attribute == "sex"
    }
    return kept, tuple(name for name in confounders if name not in kept)
