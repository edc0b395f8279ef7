"""Where runs go, read once from ``--device`` and the executor: the only reading of that text."""

from __future__ import annotations

from audit.resolve.constraints import SettingError

RAY_DEVICES = ("cpu", "cuda")


def resolve_devices(requested: str | None, executor: str = "local") -> tuple[str, ...]:
    """Local: one worker per entry (``cuda:0,cuda:1``, ``cpu,cpu``), or the best single device.
    Ray: ``cpu`` or ``cuda`` for every task (Ray assigns each task its own GPU), or () to let
    the cluster's GPUs decide; the driver's own devices do not matter, it may have no GPU."""
    if executor != "ray":
        from audit.train.device import parse_devices

        return tuple(parse_devices(requested))
    if not requested:
        return ()
    names = [d.strip() for d in requested.split(",") if d.strip()]
    if len(names) != 1 or names[0] not in RAY_DEVICES:
        raise SettingError(
            "device", requested, "cpu or cuda with the Ray executor (Ray assigns each task its GPU)"
        )
    return tuple(names)
