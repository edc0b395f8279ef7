"""``check`` resolved: its settings, confounders, probe and devices, before anything loads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from audit.common.hashing import canonical
from audit.confounders import Confounder
from audit.resolve.confounders import ResolvedConfounder, resolve_confounders
from audit.resolve.devices import ExecutorChoice, resolve_devices
from audit.resolve.probe import ProbeOptions, ResolvedProbe, resolve_probe
from audit.resolve.settings import Settings, SettingsOrigin


@dataclass(frozen=True)
class ResolvedCheck:
    """Everything ``check`` decided before loading anything."""

    settings: Settings
    modality: str
    confounders: Mapping[str, ResolvedConfounder]
    probe: ResolvedProbe | None
    devices: tuple[str, ...]
    executor: ExecutorChoice
    protocol: str | None
    origin: SettingsOrigin = field(default_factory=SettingsOrigin)  # where each setting came from

    def with_probe(self, options: ProbeOptions) -> ResolvedCheck:
        """The same audit with ``--probe``: the probe takes the audit's seed, alpha, resamples,
        confounders and parameters, as a standalone ``probe`` with those choices would."""
        probe = resolve_probe(
            self.confounders, options, alpha=self.settings.alpha,
            n_resamples=self.settings.n_resamples, seed=self.settings.seed,
        )  # fmt: skip
        return replace(self, probe=probe)

    def record(self) -> dict[str, Any]:
        """What ``--dry-run --json`` shows: the effective settings a user is about to spend."""
        from audit.resolve.probe import record

        return {
            "modality": self.modality,
            "protocol": self.protocol,
            "train": canonical(self.settings.train),
            "min_clean_auc": self.settings.min_clean_auc,
            "min_detector_auc": self.settings.min_detector_auc,
            "confounders": [rc.record() for rc in self.confounders.values()],
            "probe": record(self.probe) if self.probe else None,
            "devices": list(self.devices),
            "executor": self.executor.name,
            "settings_origin": self.origin.record(),
        }


def resolve_check(
    settings: Settings,
    *,
    modality: str,
    extra: Mapping[str, Confounder] | None = None,
    probe: ProbeOptions | None = None,
    device: str | None = None,
    executor: ExecutorChoice | None = None,
    protocol: str | None = None,
    dry_run: bool = False,
    origin: SettingsOrigin | None = None,
) -> ResolvedCheck:
    """Resolve ``check`` (and, given ``probe``, its probe) from validated settings. A dry run
    may plan on another machine than the audit's: it checks devices and Ray by name only."""
    confounders = resolve_confounders(
        settings.confounders, settings.confounder_params, modality,
        seed=settings.seed, work_size=settings.image_size, extra=extra,
    )  # fmt: skip
    executor = executor or ExecutorChoice()
    if not dry_run:
        executor.check_installed()
    resolved = ResolvedCheck(
        settings=settings,
        modality=modality,
        confounders=confounders,
        probe=None,
        devices=resolve_devices(device, executor.name, check_available=not dry_run),
        executor=executor,
        protocol=protocol,
        origin=origin or SettingsOrigin(),
    )
    return resolved if probe is None else resolved.with_probe(probe)
