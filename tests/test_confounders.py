"""Confounders: each artifact does what the study's physics says, and only where it should."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from audit.confounders import (
    CATEGORIES,
    Confounder,
    apply_confounder,
    available_confounders,
    get_confounder,
    load_plugin,
    register_confounder,
)
from audit.confounders import registry as registry_module
from audit.confounders.denoise import low_pass_filter, lowpass, lowpass_mask, scaled_diameter
from audit.confounders.noise import MU_AIR, MU_WATER, hu_to_mu, simulate_dose
from audit.confounders.tag import tag_box, tag_layout
from audit.errors import UsageError


@pytest.fixture
def fresh_registry():
    """Tests that register or discover plugins get their own registry and leave none behind."""
    registry_module.default_registry.cache_clear()
    yield
    registry_module.default_registry.cache_clear()


def random_images(n: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def flat_images(n: int, side: int, grey: int = 128) -> np.ndarray:
    return np.full((n, side, side), grey, dtype=np.uint8)


def tag_params(**overrides):
    return get_confounder("tag").resolve_params(overrides)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lists_the_four_builtins_sorted(fresh_registry):
    assert available_confounders() == ["denoise", "noise", "sex", "tag"]


def test_builtins_carry_the_protocols_category_and_kind():
    expected = {
        "tag": ("annotation", "pixel"),
        "denoise": ("processing", "pixel"),
        "noise": ("acquisition", "pixel"),
        "sex": ("patient", "sampling"),
    }
    for name, (category, kind) in expected.items():
        conf = get_confounder(name)
        assert (conf.category, conf.kind) == (category, kind)
        assert conf.category in CATEGORIES and conf.description


def test_unknown_confounder_error_lists_the_known_names():
    with pytest.raises(UsageError, match="'ruler'.*denoise, noise, sex, tag"):
        get_confounder("ruler")


def test_sex_is_a_sampling_confounder_without_a_clean_test():
    sex = get_confounder("sex")
    assert (sex.attribute, sex.attribute_value) == ("sex", "F")
    assert sex.apply is None and sex.baseline is None


def test_registering_a_plugin_adds_it_and_a_clashing_name_is_refused(fresh_registry):
    toy = Confounder("toy", "annotation", "A toy.", "pixel", {}, apply=lambda im, rng: im)
    register_confounder(toy)
    register_confounder(toy)  # the same confounder again is harmless
    assert "toy" in available_confounders() and get_confounder("toy") is toy
    with pytest.raises(UsageError, match="already registered"):
        register_confounder(Confounder("tag", "annotation", "Another.", "pixel", {}, apply=abs))


def test_malformed_confounder_is_refused_when_built():
    with pytest.raises(UsageError, match="category='site'"):
        Confounder("x", "site", "d", "pixel", {}, apply=abs)
    with pytest.raises(UsageError, match="needs a callable apply"):
        Confounder("x", "processing", "d", "pixel", {})
    with pytest.raises(UsageError, match="attribute"):
        Confounder("x", "patient", "d", "sampling", {})


# --- parameters ---------------------------------------------------------------------------------


def test_resolve_params_layers_defaults_then_preset_then_overrides():
    tag = get_confounder("tag")
    assert tag.resolve_params()["font_size"] == 64
    small = tag.resolve_params(preset="study-small")
    assert (small["font_size"], small["position"]) == (32, (70, 100))
    assert tag.resolve_params({"font_size": 40}, preset="study-small")["font_size"] == 40


def test_resolve_params_rejects_an_unknown_key_naming_it_and_the_accepted_ones():
    with pytest.raises(UsageError, match="'fontsize'.*accepted parameters: font_size"):
        get_confounder("tag").resolve_params({"fontsize": 32})


def test_resolve_params_rejects_a_value_of_the_wrong_type():
    with pytest.raises(UsageError, match="font_size=12.5.*an int"):
        get_confounder("tag").resolve_params({"font_size": 12.5})
    with pytest.raises(UsageError, match="position=.*2-tuple"):
        get_confounder("tag").resolve_params({"position": (1, 2, 3)})


def test_resolve_params_reads_cli_strings_as_the_defaults_type():
    params = get_confounder("tag").resolve_params({"font_size": "32", "position": "70,100"})
    assert (params["font_size"], params["position"]) == (32, (70, 100))
    assert get_confounder("noise").resolve_params({"low_dose": "1e7"})["low_dose"] == 1e7


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UsageError, match="preset='tiny'.*study, study-small"):
        get_confounder("tag").resolve_params(preset="tiny")


def test_physically_impossible_values_fail_before_any_image():
    with pytest.raises(UsageError, match="hu_min < hu_max"):
        get_confounder("noise").resolve_params({"hu_min": 500.0, "hu_max": -500.0})
    with pytest.raises(UsageError, match="low_dose=0.0"):
        get_confounder("noise").resolve_params({"low_dose": 0})


# --- tag ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [1024, 256, 64])
def test_tag_changes_pixels_only_inside_its_box(side):
    image = random_images(1, side)[0] // 2  # below white, so every inked pixel changes
    out = get_confounder("tag").apply(image, np.random.default_rng(0), **tag_params())
    x0, y0, x1, y1 = tag_box(image.shape, tag_params())
    changed = out != image
    inside = np.zeros_like(changed)
    inside[y0:y1, x0:x1] = True
    assert changed[inside].any(), "the tag drew nothing"
    assert not changed[~inside].any(), "the tag touched pixels outside its box"


def test_tag_position_and_size_scale_with_the_image_side():
    params = tag_params()
    assert tag_layout((1024, 1024), params) == (64, (200, 200))
    assert tag_layout((256, 256), params) == (16, (50, 50))
    assert tag_layout((64, 64), params) == (4, (12, 12))
    big = np.array(tag_box((1024, 1024), params))
    for side in (256, 64):
        small = np.array(tag_box((side, side), params))
        scale = side / 1024
        assert np.allclose(small[:2], big[:2] * scale, atol=2)  # top-left corner
        assert np.allclose(small[2:] - small[:2], (big[2:] - big[:2]) * scale, atol=2)  # size


def test_tag_font_never_shrinks_below_the_minimum():
    assert tag_layout((16, 16), tag_params())[0] == 3


def test_tag_study_small_preset_draws_in_absolute_pixels_and_refuses_a_too_small_image():
    tag = get_confounder("tag")
    params = tag.resolve_params(preset="study-small")
    assert tag_layout((300, 300), params) == tag_layout((600, 600), params) == (32, (70, 100))
    with pytest.raises(UsageError, match="does not fit a 64x64 image"):
        tag.apply(flat_images(1, 64)[0], np.random.default_rng(0), **params)


# --- denoise ------------------------------------------------------------------------------------


def test_denoise_spectrum_is_zero_outside_the_disk():
    image = random_images(1, 128)[0].astype(np.float64)
    diameter = scaled_diameter(image.shape, get_confounder("denoise").resolve_params())
    spectrum = np.abs(np.fft.fft2(lowpass(image, diameter)))
    outside = ~lowpass_mask(image.shape, diameter)
    assert outside.any() and spectrum[~outside].max() > 1.0
    assert spectrum[outside].max() < 1e-9 * spectrum.max()


def test_denoise_uint8_output_is_the_rounded_float_stage():
    image = random_images(1, 128)[0]
    params = get_confounder("denoise").resolve_params()
    exact = np.clip(lowpass(image, scaled_diameter(image.shape, params)), 0, 255)
    out = low_pass_filter(image, np.random.default_rng(0), **params)
    assert out.dtype == np.uint8 and np.abs(out - exact).max() <= 0.5 + 1e-9


def cosine_image(side: int, cycles: int) -> np.ndarray:
    x = np.arange(side)
    return np.tile(128 + 100 * np.cos(2 * np.pi * cycles * x / side), (side, 1)).astype(np.uint8)


@pytest.mark.parametrize("side", [1024, 256])
def test_denoise_disk_diameter_scales_with_the_image_side(side):
    params = get_confounder("denoise").resolve_params()
    assert scaled_diameter((side, side), params) == 500 * side / 1024
    keep, cut = side * 100 // 1024, side * 300 // 1024  # inside / outside the 250/1024 radius
    rng = np.random.default_rng(0)
    kept = low_pass_filter(cosine_image(side, keep), rng, **params).astype(float)
    removed = low_pass_filter(cosine_image(side, cut), rng, **params).astype(float)
    assert kept.std() > 60  # amplitude 100 cosine survives
    assert removed.std() < 1  # only the mean is left


# --- noise --------------------------------------------------------------------------------------


def test_noise_variance_grows_as_the_dose_falls_as_physics_predicts():
    hu = np.full((512, 512), -200.0)
    rng = np.random.default_rng(0)
    noise = get_confounder("noise").resolve_params()
    var_full = simulate_dose(hu, noise["full_dose"], rng).var()
    var_low = simulate_dose(hu, noise["low_dose"], rng).var()
    assert var_low / var_full == pytest.approx(2e7 / 1.5e7, rel=0.03)
    photons = np.exp(-hu_to_mu(-200.0)) * noise["full_dose"]
    predicted = (1000 / (MU_WATER - MU_AIR)) ** 2 / photons
    assert var_full == pytest.approx(predicted, rel=0.03)


def test_noise_uint8_low_dose_is_noisier_and_keeps_the_mean_grey():
    noise = get_confounder("noise")
    images = flat_images(2, 256)
    out = apply_confounder(noise, images, np.array([True, False]), seed=3, params={})
    low, full = out.astype(np.float64)
    assert low.var() > 1.15 * full.var()
    assert abs(low.mean() - 128) < 0.1 and abs(full.mean() - 128) < 0.1  # no quantisation bias


def test_noise_same_seed_is_identical_and_another_seed_differs():
    noise, images = get_confounder("noise"), flat_images(3, 64)
    hit = np.array([True, False, True])
    first = apply_confounder(noise, images, hit, seed=7, params={})
    assert np.array_equal(first, apply_confounder(noise, images, hit, seed=7, params={}))
    assert not np.array_equal(first, apply_confounder(noise, images, hit, seed=8, params={}))


def test_an_images_noise_depends_on_its_id_not_on_the_batch():
    noise, images = get_confounder("noise"), random_images(4, 32)
    hit = np.array([False, True, False, True])
    whole = apply_confounder(noise, images, hit, seed=1, params={})
    alone = apply_confounder(noise, images[3:], hit[3:], seed=1, params={}, ids=[3])
    assert np.array_equal(alone[0], whole[3])


def test_noise_at_a_work_size_returns_the_input_size():
    out = apply_confounder(
        get_confounder("noise"),
        flat_images(1, 48),
        np.array([True]),
        seed=0,
        params={"work_size": 96},
    )
    assert out.shape == (1, 48, 48) and out.dtype == np.uint8 and out.std() > 0


# --- apply_confounder ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tag", "denoise"])
def test_apply_confounder_changes_only_the_confounded_images(name):
    images = random_images(4, 64)
    hit = np.array([True, False, True, False])
    out = apply_confounder(get_confounder(name), images, hit, seed=0, params={})
    assert out is not images and out.shape == images.shape and out.dtype == np.uint8
    assert np.array_equal(out[~hit], images[~hit])
    assert all(not np.array_equal(out[i], images[i]) for i in np.flatnonzero(hit))


def test_apply_confounder_gives_noise_baseline_to_every_unconfounded_image():
    noise, images = get_confounder("noise"), flat_images(2, 64)
    out = apply_confounder(noise, images, np.array([False, False]), seed=0, params={})
    assert all(not np.array_equal(out[i], images[i]) for i in range(2))
    expected = noise.baseline(images[1], np.random.default_rng([0, 1]), **noise.resolve_params())
    assert np.array_equal(out[1], expected)


def test_apply_confounder_leaves_its_input_untouched():
    images = random_images(2, 64)
    before = images.copy()
    apply_confounder(get_confounder("tag"), images, np.array([True, True]), seed=0, params={})
    assert np.array_equal(images, before)


def test_apply_confounder_refuses_a_sampling_confounder():
    with pytest.raises(ValueError, match="sampling confounder"):
        apply_confounder(
            get_confounder("sex"), flat_images(1, 8), np.array([True]), seed=0, params={}
        )


# --- plugins ------------------------------------------------------------------------------------


PLUGIN_SOURCE = textwrap.dedent(
    """
    import numpy as np
    from audit.confounders import Confounder

    def invert(image, rng, **params):
        return (255 - image).astype(np.uint8)

    def make_invert():
        return Confounder("invert", "processing", "Inverted grey levels.", "pixel", {},
                          apply=invert)

    INVERT = make_invert()
    NOT_A_CONFOUNDER = 42

    def returns_junk():
        return "junk"

    def exits():
        raise SystemExit(0)

    class Factory:
        @classmethod
        def make(cls):
            return make_invert()
    """
)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    name = "medaudit_test_plugin"
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_plugin_loads_from_a_module_function_spec(plugin_module):
    conf = load_plugin(f"{plugin_module}:make_invert")
    images = random_images(1, 16)
    out = apply_confounder(conf, images, np.array([True]), seed=0, params={})
    assert conf.name == "invert" and np.array_equal(out, 255 - images)
    assert load_plugin(f"{plugin_module}:INVERT") == conf
    assert get_confounder(f"{plugin_module}:make_invert") == conf
    assert load_plugin(f"{plugin_module}:Factory.make") == conf  # a classmethod is a function too


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("just_a_name_without_colon", "not 'module:function'"),
        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:NOT_A_CONFOUNDER", "is a int; expected a Confounder"),
        ("{mod}:returns_junk", "returned a str; expected a Confounder"),
        ("sys:exit", "is a builtin_function_or_method; expected a Confounder"),  # never called
        ("{mod}:exits", "calling it failed: SystemExit"),  # a plugin cannot end the audit
    ],
)
def test_a_bad_plugin_spec_gives_a_usage_error_that_says_why(plugin_module, spec, message):
    with pytest.raises(UsageError, match=message):
        load_plugin(spec.format(mod=plugin_module))


def test_entry_point_plugins_are_discovered(plugin_module, fresh_registry, monkeypatch):
    point = EntryPoint("invert", f"{plugin_module}:make_invert", "medaudit.confounders")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [point])
    assert available_confounders() == ["denoise", "invert", "noise", "sex", "tag"]
    assert get_confounder("invert").category == "processing"


def test_a_broken_entry_point_is_named_in_the_error(fresh_registry, monkeypatch):
    point = EntryPoint("ghost", "no_such_module_xyz:make", "medaudit.confounders")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [point])
    with pytest.raises(UsageError, match="entry point 'ghost'.*failed to load"):
        available_confounders()


def test_a_plugin_confounder_is_identified_by_its_code(plugin_module, tmp_path):
    """Editing a plugin (or swapping in another of the same name) never reuses an old run."""
    import importlib

    from audit.plan.grid import confounder_code

    assert confounder_code(get_confounder("tag")) == ""  # medaudit's own: the protocol covers it
    first = confounder_code(load_plugin(f"{plugin_module}:make_invert"))
    assert len(first) == 16
    source = tmp_path / f"{plugin_module}.py"
    source.write_text(PLUGIN_SOURCE.replace("255 - image", "254 - image"))
    importlib.reload(sys.modules[plugin_module])
    edited = confounder_code(load_plugin(f"{plugin_module}:make_invert"))
    assert edited != first
