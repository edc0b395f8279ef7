"""Example image pairs and plots for the report: small, identifier-free, deterministic."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from audit.confounders.examples import example_images, example_pair
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.report.plots import GapSeries, Series, confounder_figure_svg
from audit.resolve.confounders import resolve_confounders


@pytest.fixture(scope="module")
def cohort():
    return make_phantom_cohort(PhantomSettings(n_patients=4, image_size=64, seed=0))


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _confounders(*names: str) -> dict:
    return resolve_confounders(names, {}, "cxr", seed=0, work_size=64)


def test_pixel_confounders_get_a_pair_that_differs_only_by_the_artifact(cohort) -> None:
    examples = example_images(cohort, _confounders("tag", "sex"), seed=0)
    assert set(examples) == {"tag"}, "a sampling confounder has no image"
    pair = examples["tag"]
    clean, confounded = _decode(pair["clean"]), _decode(pair["confounded"])
    assert clean.shape == confounded.shape == (64, 64)
    changed = clean != confounded
    assert 0 < changed.sum() < clean.size // 4, "a small marker, not a new image"
    assert _decode(pair["difference"]).max() == 255
    assert pair["synthetic"] is True and pair["source"] == "synthetic"


def test_examples_carry_no_case_or_patient_identifier(cohort) -> None:
    pair = example_images(cohort, _confounders("tag"), seed=0)["tag"]
    text = repr(pair)
    for case in cohort.cases:
        assert case.case_id not in text and case.patient_key not in text
    assert set(pair) <= {
        "clean", "confounded", "difference", "difference_gain", "image_size", "shown_size",
        "seed", "source", "synthetic",
    }  # fmt: skip


def test_examples_are_deterministic_and_downscaled(cohort) -> None:
    confs = _confounders("tag")
    assert example_images(cohort, confs, seed=3) == example_images(cohort, confs, seed=3)
    big = np.full((300, 200), 90, dtype=np.uint8)
    conf, params = confs["tag"].confounder, confs["tag"].params
    pair = example_pair(conf, params, big, seed=0, max_side=100)
    assert _decode(pair["clean"]).shape == (100, 67)
    assert pair["image_size"] == 300 and pair["shown_size"] == 100


def _figure() -> str:
    series = [
        Series("user", "ood", (0.8, 0.6, None), (0.7, 0.5, None), (0.9, 0.7, None)),
        Series("reference", "ood", (0.82, 0.8, 0.79)),
        Series("user", "iid", (0.8, 0.85, 0.9)),
        Series("reference", "clean", (0.8, 0.8, 0.8)),
    ]
    gap = GapSeries((0.0, 0.5, 1.0), (0.02, 0.2, 0.3), (-0.05, 0.1, 0.2), (0.1, 0.3, 0.4), 0.05)
    return confounder_figure_svg((0.0, 0.5, 1.0), series, gap)


def test_plots_are_vector_and_byte_stable() -> None:
    first, second = _figure(), _figure()
    assert first == second
    assert first.lstrip().startswith("<?xml") and "<svg" in first
    assert "<image" not in first, "no raster inside the plot"
    assert "<dc:date>" not in first


def test_schema_1_plots_draw_d_per_level_beside_a_dashed_s() -> None:
    import json
    from pathlib import Path

    from audit.report.context import _gap_series

    results = json.loads((Path(__file__).parent / "data" / "report_results.json").read_text())
    row = results["verdict"]["per_confounder"][0]
    gated = _gap_series(row)
    assert [g.dashed for g in gated] == [False, True], "D_p solid and gated, S dashed"
    assert gated[0].estimate == tuple(e["gap"] for e in row["reliance"]["per_level"])
    assert gated[1].estimate == tuple(e["gap"] for e in row["shortcut_gap"]["per_level"])
    assert gated[0].margin == row["margin"]
    shown_only = {**row, "gated": False, "verdict": "not gated", "reliance": None}
    (alone,) = _gap_series(shown_only)
    assert alone.dashed and alone.margin is None, "not gated: S alone, no margin to meet"
    assert _gap_series({**shown_only, "shortcut_gap": None}) is None
    series = [Series("user", "ood", (0.8, 0.6)), Series("reference", "ood", (0.82, 0.8))]
    first = confounder_figure_svg((0.0, 1.0), series, gated)
    assert first == confounder_figure_svg((0.0, 1.0), series, gated)
    assert "<image" not in first and first.count('<g id="axes_') == 3
    assert len(confounder_figure_svg((0.0, 1.0), series, None)) < len(first)
