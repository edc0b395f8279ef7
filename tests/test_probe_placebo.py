"""The probe's placebo: the confounder's own pixel changes scattered at random.

It must keep the change (same values, same total where nothing clips), be replayable per image,
and tell the two kinds of model apart that a flip rate alone cannot: one that reads the tag's
corner (the tag flips far more decisions than its placebo) and one that reads the whole image's
brightness (the tag and its scattered pixels move it alike: no excess).
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from test_probe import SIZE, probe
from torch import nn

from audit import cli
from audit.confounders import get_confounder
from audit.confounders.tag import DEFAULTS as TAG_DEFAULTS
from audit.confounders.tag import tag_box
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.probe.outputs import verdict_lines
from audit.probe.placebo import PlaceboImages, compare_with_placebo
from audit.report.render import render_html

PATIENTS = 60


class BoxMean(nn.Module):
    """One logit, ``gain * (mean input over a box - offset)``: a corner or a whole-image reader."""

    def __init__(self, box: tuple[int, int, int, int], gain: float, offset: float = 0.0) -> None:
        super().__init__()
        x0, y0, x1, y1 = box
        mask = torch.zeros(SIZE, SIZE)
        mask[y0:y1, x0:x1] = 1.0
        self.register_buffer("mask", mask / mask.sum())
        self.gain, self.offset = gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.gain * ((x.mean(1) * self.mask).sum((1, 2)) - self.offset))[:, None]


def _save(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(1, 3, SIZE, SIZE)), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("placebo-models")
    x0, y0, x1, y1 = tag_box((SIZE, SIZE), TAG_DEFAULTS)
    return {
        "corner": _save(BoxMean((x0 - 1, y0 - 1, x1 + 1, y1 + 1), 4.0), folder / "corner.pt"),
        # on the flat cohort (no normalisation, grey 100 and a little): the tag's small change in
        # total brightness moves every image by more than the images differ, so decisions flip
        "whole": _save(BoxMean((0, 0, SIZE, SIZE), 2000.0, 100.05 / 255), folder / "whole.pt"),
    }


@pytest.fixture(scope="module")
def cohort():
    return make_phantom_cohort(PhantomSettings(n_patients=PATIENTS, image_size=SIZE, seed=3))


@pytest.fixture(scope="module")
def flat_cohort(cohort):
    """The phantom's cases on near-identical grey images: means 100 to 100.1, spread at random."""
    rng = np.random.default_rng(0)
    images = np.full(cohort.images.shape, 100, np.uint8)
    for image in images:
        image.ravel()[rng.choice(image.size, rng.integers(0, 410), replace=False)] = 101
    return dataclasses.replace(cohort, images=images)


def _probe(path: Path, cohort, *, placebo: bool = True, normalize: str = "imagenet") -> dict:
    return probe(path, cohort, ("tag", "noise", "sex"), placebo=placebo, normalize=normalize)


def _row(results: dict, name: str) -> dict:
    return next(r for r in results["confounders"] if r["name"] == name)


# ----------------------------------------------------------------------------- the placebo images


def test_the_placebo_keeps_the_change_and_scatters_it() -> None:
    images = np.full((3, SIZE, SIZE), 100, np.uint8)  # mid grey: the tag's +155 never clips
    tag = get_confounder("tag")
    params = tag.resolve_params({})
    ids = np.array([5, 6, 7])
    make = PlaceboImages(tag, params, seed=11)
    placebo = make(images, ids)
    tagged = np.stack([tag.apply(im, np.random.default_rng(0), **params) for im in images])
    for i in range(3):
        change, moved = tagged[i].astype(int) - 100, placebo[i].astype(int) - 100
        assert sorted(change.ravel()) == sorted(moved.ravel())  # the same values ...
        assert not np.array_equal(change, moved)  # ... elsewhere
    assert make.change_kept == 1.0
    # each image's positions come from (seed, its id): order and batch do not matter
    again = PlaceboImages(tag, params, seed=11)(images[::-1], ids[::-1])[::-1]
    np.testing.assert_array_equal(placebo, again)
    assert not np.array_equal(placebo[0], placebo[1])


def test_clipping_is_recorded_as_change_lost() -> None:
    images = np.full((2, SIZE, SIZE), 250, np.uint8)  # near white: the tag's change mostly clips
    tag = get_confounder("tag")
    make = PlaceboImages(tag, tag.resolve_params({}), seed=0)
    make(images, np.array([0, 1]))
    assert make.change_kept == 1.0  # 250 + 5 = 255: nothing lost
    dark_tag = PlaceboImages(tag, tag.resolve_params({"value": 0}), seed=0)
    dark_tag(np.full((1, SIZE, SIZE), 250, np.uint8), np.array([0]))
    assert dark_tag.change_kept == 1.0  # 250 - 250 = 0: nothing lost either
    mixed = np.full((1, SIZE, SIZE), 250, np.uint8)
    mixed[0, :, : SIZE // 2] = 0  # a black half: the tag lands on it, its change may land on white
    clipped = PlaceboImages(tag, tag.resolve_params({}), seed=0)
    clipped(mixed, np.array([0]))
    assert 0.0 < clipped.change_kept < 1.0


# ------------------------------------------------------------------------------ the comparison


def test_the_comparison_counts_discordant_images_and_tests_them() -> None:
    y = np.array([0, 1] * 10)
    baseline = np.full(20, 0.4)
    confounded = baseline.copy()
    confounded[:8] = 0.6  # 8 flips
    placebo = baseline.copy()
    placebo[6:9] = 0.6  # 3 flips, 2 shared with the confounder
    found = compare_with_placebo(
        y, baseline, confounded, placebo, 0.5, n_resamples=500, seed=0, confidence=0.95,
        change_kept=0.9,
    )  # fmt: skip
    assert (found.only_confounder, found.only_placebo) == (6, 1)
    assert found.excess.estimate == pytest.approx((8 - 3) / 20)
    assert found.p_value == pytest.approx(binomtest(6, 7, 0.5).pvalue)
    assert found.flips.n_flipped == 3 and found.shift.estimate == pytest.approx(3 * 0.2 / 20)
    doc = found.to_dict()
    assert doc["change_kept"] == 0.9 and doc["excess_flip_rate"]["only_placebo"] == 1
    same = compare_with_placebo(
        y, baseline, confounded, confounded, 0.5, n_resamples=500, seed=0, confidence=0.95,
        change_kept=1.0,
    )  # fmt: skip
    assert same.p_value == 1.0 and same.excess.ci_low == same.excess.ci_high == 0.0
    assert "exactly the same decisions" in same.finding()
    none = compare_with_placebo(
        y, baseline, baseline, baseline, 0.5, n_resamples=500, seed=0, confidence=0.95,
        change_kept=None,
    )  # fmt: skip
    assert none.finding() == "neither the confounder nor its placebo flips a decision"


# ------------------------------------------------------------------- the probe tells them apart


def test_a_corner_reader_reacts_to_the_tag_beyond_its_placebo(models, cohort) -> None:
    tag = _row(_probe(models["corner"], cohort), "tag")
    placebo = tag["placebo"]
    excess = placebo["excess_flip_rate"]
    assert tag["flip_rate"]["n_flipped"] > 10
    assert excess["ci_low"] > 0 and excess["only_confounder"] > excess["only_placebo"]
    assert placebo["flip_rate"]["n_flipped"] < tag["flip_rate"]["n_flipped"] / 4
    assert "reacts to the confounder's structure" in placebo["finding"]


def test_a_whole_image_reader_flips_as_much_under_the_placebo(models, flat_cohort) -> None:
    results = _probe(models["whole"], flat_cohort, normalize="none")
    tag = _row(results, "tag")
    placebo, excess = tag["placebo"], tag["placebo"]["excess_flip_rate"]
    assert tag["flip_rate"]["n_flipped"] > 10  # the flip rate alone looks like a shortcut ...
    assert excess["ci_low"] <= 0 <= excess["ci_high"]  # ... the placebo shows it is not one
    assert placebo["flip_rate"]["n_flipped"] >= tag["flip_rate"]["n_flipped"] / 2
    assert 0.8 < placebo["change_kept"] <= 1.0
    assert "sensitivity to change of this size" in placebo["finding"]
    assert "placebo" not in _row(results, "sex")  # no pixels, no placebo
    assert any("placebo" in line and "excess" in line for line in verdict_lines(results))


def test_the_placebo_changes_no_verdict_and_is_off_by_default(models, cohort) -> None:
    with_placebo = _probe(models["corner"], cohort)
    without = _probe(models["corner"], cohort, placebo=False)
    assert "placebo" not in _row(without, "tag")
    for a, b in zip(with_placebo["confounders"], without["confounders"], strict=True):
        assert a["verdict"] == b["verdict"] and a.get("mean_shift") == b.get("mean_shift")
    assert with_placebo["probe_id"] != without["probe_id"]


def test_the_report_shows_the_placebo(models, cohort) -> None:
    results = _probe(models["corner"], cohort)
    text = re.sub(r"<[^>]+>", " ", html.unescape(render_html(results)))
    text = re.sub(r"\s+", " ", text)
    excess = _row(results, "tag")["placebo"]["excess_flip_rate"]
    assert "Placebo (the same pixel changes scattered at random" in text
    assert f"{excess['only_confounder']} images flip under the confounder only" in text
    assert "reacts to the confounder's structure" in text


def test_placebo_is_a_probe_flag_on_check(models, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["probe", str(models["corner"]), "--modality", "cxr", "--synthetic",
            "--synthetic-patients", "30", "--trust-code", "--input-size", str(SIZE),
            "--confounders", "tag", "--resamples", "200", "--placebo", "--no-report",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main(argv) == 1
    assert "placebo" in capsys.readouterr().out
    assert "placebo" in json.loads((out / "results.json").read_text())["confounders"][0]
    code = cli.main(["check", str(models["corner"]), "--modality", "cxr", "--synthetic",
                     "--placebo"])  # fmt: skip
    assert code == 2 and "--placebo" in capsys.readouterr().err
