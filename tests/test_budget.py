"""The budget says, in words, what an audit cut from the study's protocol."""

from __future__ import annotations

import dataclasses

from audit.analysis.budget import budget_record, deviations
from audit.report.context import budget
from audit.resolve.settings import STUDY_TRAIN as STUDY_VALUES
from audit.resolve.settings import Settings, TrainSettings

STUDY_TRAIN = TrainSettings(**STUDY_VALUES)  # the study's fine-tuning.py


def test_the_study_protocol_departs_from_nothing() -> None:
    study = Settings(image_size=1024, train=STUDY_TRAIN)
    record = budget_record(study, 240, 600.0)
    assert record == {"tier": "study", "deviations": [], "runs": 240, "fine_tuning_seconds": 600.0}
    assert budget({"budget": record}) == "the study's protocol; 240 runs, 10.0 min of fine-tuning"


def test_medaudits_defaults_are_named_where_they_depart_from_the_study() -> None:
    """The yardstick is the study's code, not medaudit's defaults: batch 64 and patience 5 are
    departures (the study: 256 and 30), and so are PyTorch's BatchNorm momentum and Adam
    epsilon, the one-logit head and the 256-px cache (the study: 1024 originals)."""
    assert deviations(Settings()) == [
        "patience 5 (the study: 30)",
        "batch 64 (the study: 256)",
        "BatchNorm momentum each layer's own (the study: 0.01)",
        "Adam epsilon 1e-08 (the study: 1e-07)",
        "head one logit (the study: two-way softmax)",
        "image side 256 (the study: 1024)",
    ]


def test_a_reduced_audit_names_each_cut() -> None:
    settings = dataclasses.replace(
        Settings(), folds=2, levels=(0.0, 1.0), confounders=("tag", "sex"),
        image_size=1024,
        train=dataclasses.replace(
            STUDY_TRAIN, epochs=20, patience=20, input_size=64, max_steps_per_epoch=3
        ),
    )  # fmt: skip
    found = deviations(settings)
    assert found == [
        "levels 0, 1 (the study: 0, 0.1, 0.2, 0.5, 0.8, 1)",
        "2 fold(s) (the study: 5)",
        "input 64 px (the study: 224)",
        "at most 20 epoch(s) (the study: 30)",
        "at most 3 step(s) per epoch (the study: all)",
        "without denoise, noise (the study: tag, denoise, noise, sex)",
        "patience 20 (the study: 30)",
    ]
    record = budget_record(settings, 16, 90.0)
    assert record["tier"] == "reduced"
    text = budget({"budget": record})
    assert text.startswith("reduced: levels 0, 1") and text.endswith(
        "16 runs, 1.5 min of fine-tuning"
    )


def test_an_old_tier_name_and_no_budget_still_render() -> None:
    assert budget({"budget": "quick"}) == "quick"
    assert budget({}) == "not recorded in this audit"


def test_other_settings_are_named_and_make_the_tier_modified() -> None:
    settings = dataclasses.replace(
        Settings(), folds=10, counted_levels=(0.5, 1.0),
        confounder_params={"tag": {"font_size": 4}}, image_size=1024,
        train=dataclasses.replace(STUDY_TRAIN, lr=0.1, augment=False),
    )  # fmt: skip
    record = budget_record(settings, 480, 0.0)
    assert record["tier"] == "modified"
    assert record["deviations"] == [
        "folds 10 (the study: 5)",
        "learning rate 0.1 (the study: 0.001)",
        "augmentation off (the study: on)",
        "counted levels 0.5, 1 (the study: all)",
        "confounder parameters set for tag (the study: defaults)",
    ]
