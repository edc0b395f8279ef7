"""Patient sex as a confounder: made by which cases are drawn, not by any pixel change.

The splits draw a proportion p of the training positives from female patients and the rest of the
positives, and all negatives, from male patients; the o.o.d. test reverses it (female negatives,
male positives). Its clean test set is the male cases of both classes: the reliance gap's lift AUC
compares female with male negatives there (under the study's lists, which hold no male negatives,
sex is shown but not gated).
"""

from __future__ import annotations

from audit.confounders.base import Confounder

SEX = Confounder(
    name="sex",
    category="patient",
    description=(
        "Positives are drawn from female patients in the chosen proportion, negatives from male "
        "ones; a model can learn sex-linked anatomy instead of the disease."
    ),
    kind="sampling",
    defaults={},
    attribute="sex",
    attribute_value="F",
)
