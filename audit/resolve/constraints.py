"""Every numeric setting's accepted values, declared once as data, with one message template.

scikit-learn's habit: a refusal names the parameter, the value received and what is accepted.
The rows name settings by their key in the settings file (``train.epochs``, ``probe.max_shift``);
the command line, which alone knows its flags, says ``--epochs`` instead (``audit.cli``). Domain
code checks against these rows and never names a flag.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from audit.errors import UsageError

_SHOWN = 40  # characters of a refused value that a message repeats (a 100 kB value is not echoed)


@dataclass(frozen=True)
class Constraint:
    """One setting's accepted values: whole numbers or finite reals, between optional bounds."""

    key: str
    whole: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the bound itself is refused (lr > 0, not lr >= 0)
    high_open: bool = False
    optional: bool = False  # None (the setting left unset) is accepted
    unset: str = "or unset"  # how a user leaves an optional setting unset, in words
    note: str = ""  # what a special value means, e.g. "0: every image"

    def accepted(self) -> str:
        """What is accepted, in words: "a whole number >= 1", "a number in (0, 0.5)"."""
        what = "a whole number" if self.whole else "a finite number"
        low, high = self._shown(self.low), self._shown(self.high)
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{what} in {left}{low}, {high}{right}"
        elif self.low is not None:
            text = f"{what} {'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            text = f"{what} {'<' if self.high_open else '<='} {high}"
        else:
            text = what
        text += f" ({self.unset})" if self.optional else ""
        return text + (f" ({self.note})" if self.note else "")

    def _shown(self, bound: float | None) -> str:
        """A bound as a user reads it: whole bounds in full (4294967295, not 4.29497e+09)."""
        if bound is None:
            return ""
        return str(int(bound)) if self.whole else f"{bound:g}"

    def admits(self, value: object) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )


class SettingError(UsageError):
    """A setting outside its accepted values; ``key`` lets the command line name its flag."""

    def __init__(self, key: str, value: object, accepted: str, shown_as: str | None = None):
        self.key, self.value, self.accepted = key, value, accepted
        super().__init__(refusal(shown_as or key, value, accepted))

    def named(self, name: str) -> SettingError:
        """The same refusal, the setting called by another name (the flag that set it)."""
        return SettingError(self.key, self.value, self.accepted, shown_as=name)


def refusal(name: str, value: object, accepted: str) -> str:
    """The one message template: ``train.epochs = 0 is not accepted: use a whole number >= 1``,
    or, for a flag, as it was typed: ``--epochs 0 is not accepted: ...``."""
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = shown[: _SHOWN - 3] + "..."
    if name.startswith("--"):
        return f"{name} {shown} is not accepted: use {accepted}"
    return f"{name} = {shown} is not accepted: use {accepted}"


def _row(key: str, whole: bool, low=None, high=None, *, low_open=False, high_open=False,
         optional=False, unset="or unset", note="") -> Constraint:  # fmt: skip
    return Constraint(key, whole, low, high, low_open, high_open, optional, unset, note)


# Every numeric setting of check, probe and demo. Keys are the settings file's; "probe." keys are
# the probe's own thresholds (the same on `probe` and on `check --probe`).
CONSTRAINTS: tuple[Constraint, ...] = (
    _row("folds", True, 1),
    _row("repeats", True, 1),
    _row("seed", True, 0, 2**32 - 1),  # numpy and scikit-learn take 32-bit seeds
    _row("image_size", True, 16, 2048),  # the decoded cache's side
    _row("val_fraction", False, 0.0, 0.5, low_open=True, high_open=True),
    _row("test_fraction", False, 0.0, 0.5, low_open=True, high_open=True),
    _row("margin", False, 0.0, 0.5, low_open=True),  # on the reliance gap's AUC scale
    _row("breaking_auc", False, 0.0, 1.0),
    _row("alpha", False, 0.0, 0.5, low_open=True, high_open=True),
    _row("n_resamples", True, 100),
    _row("min_clean_auc", False, 0.5, 1.0, high_open=True),  # a control below chance checks nothing
    _row("min_detector_auc", False, 0.5, 1.0, high_open=True),
    _row("synthetic_patients", True, 8),
    _row("max_image_pixels", True, 16 * 16, 2**40),  # an image's declared width x height
    _row("max_checkpoint_gib", False, 0.0, 1024.0, low_open=True),  # a model file's size
    _row("train.epochs", True, 1),
    _row("train.batch_size", True, 1),
    _row("train.lr", False, 0.0, low_open=True),
    _row("train.weight_decay", False, 0.0),
    _row("train.patience", True, 0),
    _row("train.dropout", False, 0.0, 1.0, high_open=True),
    _row("train.input_size", True, 8, 4096),
    _row("train.rotation_deg", False, 0.0, 180.0),
    _row("train.shift_fraction", False, 0.0, 1.0, high_open=True),
    _row("train.shear_deg", False, 0.0, 90.0, high_open=True),
    _row("train.zoom_fraction", False, 0.0, 1.0, high_open=True),
    _row("train.max_steps_per_epoch", True, 1, optional=True),
    _row(
        "train.bn_momentum",
        False,
        0.0,
        1.0,
        low_open=True,
        optional=True,
        unset="or unset: each layer's own",
    ),  # fmt: skip
    _row("train.adam_eps", False, 0.0, 1.0, low_open=True),
    _row("probe.max_shift", False, 0.0, 1.0, low_open=True, high_open=True),
    _row("probe.max_flip_rate", False, 0.0, 1.0, low_open=True, high_open=True),
    _row("probe.max_sex_auc_gap", False, 0.0, 1.0, low_open=True, high_open=True, optional=True),
    _row("probe.threshold", False, optional=True),  # (0, 1) on a probability scale: scores.py
    _row("probe.max_images", True, 0, note="0: every image"),
    _row("probe.input_size", True, 8, 4096, optional=True),  # unset: what the model declares
    _row("probe.batch_size", True, 1),
    _row("ray.cpus_per_task", True, 1),
)
BY_KEY = {row.key: row for row in CONSTRAINTS}


def check_setting(key: str, value: object) -> None:
    """Refuse ``value`` for ``key`` unless its row accepts it (a key without a row is a bug)."""
    row = BY_KEY[key]
    if not row.admits(value):
        raise SettingError(key, value, row.accepted())


def check_settings(prefix: str, values: Iterable[tuple[str, object]]) -> None:
    """Check each (field, value) of one settings object whose rows are ``prefix + field``;
    fields without a row (names, flags, choices) are checked where they are parsed."""
    for name, value in values:
        key = prefix + name
        if key in BY_KEY:
            check_setting(key, value)
