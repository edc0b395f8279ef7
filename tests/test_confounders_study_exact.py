"""Study-exact confounder options: the tag's font weight, the denoise mask and rounding.

The options default to today's behaviour, and they are not declared on the built-in confounders
yet (a declared parameter enters results.json and every run key); ``with_options()`` is each
confounder with them declared, which is what these tests exercise through the registry's
machinery (defaults, presets, coercion, checks, ``apply_confounder``).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import scipy.fftpack
from PIL import Image, ImageDraw

from audit.confounders import apply_confounder, get_confounder
from audit.confounders import denoise as denoise_module
from audit.confounders import tag as tag_module
from audit.confounders.denoise import low_pass_filter, lowpass_mask
from audit.confounders.tag import (
    EXTRALIGHT_FILE,
    draw_tag,
    extralight_file,
    font_file,
    font_record,
    resolved_font,
    tag_box,
)
from audit.errors import UsageError


def smooth_random_image(side: int, seed: int = 0) -> np.ndarray:
    """Grey levels well inside (0, 255), so neither rounding nor truncation is clipped."""
    return np.random.default_rng(seed).integers(40, 216, size=(side, side), dtype=np.uint8)


@pytest.fixture
def no_font_caches():
    """Tests that change where fonts are found start and end with empty caches."""
    for cached in (extralight_file, resolved_font, tag_module._font):
        cached.cache_clear()
    yield
    for cached in (extralight_file, resolved_font, tag_module._font):
        cached.cache_clear()


# --- the built-ins are unchanged -----------------------------------------------------------------


def test_the_builtins_do_not_declare_the_options_so_records_and_run_keys_stay_as_they_were():
    assert "font_weight" not in get_confounder("tag").defaults
    assert not {"mask", "rounding"} & set(get_confounder("denoise").defaults)
    assert dict(tag_module.with_options().defaults) == {
        **tag_module.DEFAULTS,
        "font_weight": "regular",
    }
    assert dict(denoise_module.with_options().defaults) == {
        **denoise_module.DEFAULTS,
        "mask": "disk",
        "rounding": "round",
    }


def test_the_options_defaults_draw_what_the_builtins_draw():
    image = smooth_random_image(256)
    rng = np.random.default_rng(0)
    for module in (tag_module, denoise_module):
        builtin = get_confounder(module.with_options().name)
        declared = module.with_options()
        assert np.array_equal(
            builtin.apply(image, rng, **builtin.resolve_params()),
            declared.apply(image, rng, **declared.resolve_params()),
        )


# --- denoise: the study's ellipse mask and truncation -------------------------------------------


def test_the_ellipse_mask_keeps_197045_bins_at_1024_px_724_more_than_the_disk():
    params = denoise_module.with_options().resolve_params(preset="study-exact")
    diameter = denoise_module.scaled_diameter((1024, 1024), params)
    ellipse = lowpass_mask((1024, 1024), diameter, "ellipse")
    disk = lowpass_mask((1024, 1024), diameter, "disk")
    assert ellipse.sum() == 197_045 and disk.sum() == 196_321
    assert not (disk & ~ellipse).any()  # the ellipse holds the disk ...
    k = np.fft.fftfreq(1024) * 1024
    radius = np.hypot(k[:, None], k[None, :])[ellipse & ~disk]
    assert len(radius) == 724 and radius.min() > 250 and radius.max() < 251  # ... plus a ring


def test_the_ellipse_mask_is_the_studys_pil_ellipse_on_the_shifted_spectrum():
    drawn = Image.new("L", (1024, 1024), color=0)
    ImageDraw.Draw(drawn).ellipse((262, 262, 762, 762), fill=1)  # the study's box at 1024
    expected = np.fft.ifftshift(np.asarray(drawn, dtype=bool))
    assert np.array_equal(lowpass_mask((1024, 1024), 500.0, "ellipse"), expected)


def test_study_exact_denoise_is_the_studys_pipeline_pixel_for_pixel_at_1024():
    """fftshift(fft2), times the drawn mask, ifft2(ifftshift), real part, clip, astype."""
    image = smooth_random_image(1024)
    drawn = Image.new("L", (1024, 1024), color=0)
    ImageDraw.Draw(drawn).ellipse((262, 262, 762, 762), fill=1)
    spectrum = scipy.fftpack.fftshift(scipy.fftpack.fft2(image)) * np.asarray(drawn)
    real = np.real(scipy.fftpack.ifft2(scipy.fftpack.ifftshift(spectrum)))
    expected = np.maximum(0, np.minimum(real, 255)).astype(np.uint8)
    params = denoise_module.with_options().resolve_params(preset="study-exact")
    out = low_pass_filter(image, np.random.default_rng(0), **params)
    assert np.array_equal(out, expected)


def test_truncation_is_about_half_a_grey_level_darker_than_rounding():
    image = smooth_random_image(1024, seed=1)
    conf = denoise_module.with_options()
    rng = np.random.default_rng(0)
    rounded = low_pass_filter(image, rng, **conf.resolve_params({"mask": "ellipse"}))
    truncated = low_pass_filter(image, rng, **conf.resolve_params(preset="study-exact"))
    darker = rounded.astype(float) - truncated.astype(float)
    assert darker.min() >= 0 and darker.max() <= 1  # never brighter, at most one level darker
    assert 0.45 < darker.mean() < 0.55
    assert abs(rounded.astype(float).mean() - image.mean()) < 0.05  # rounding keeps the mean


def test_the_options_apply_through_apply_confounder_and_preset_layering():
    conf = denoise_module.with_options()
    assert conf.resolve_params(preset="study-exact") == {
        **denoise_module.DEFAULTS,
        "mask": "ellipse",
        "rounding": "truncate",
    }
    assert conf.resolve_params({"rounding": "round"}, preset="study-exact")["rounding"] == "round"
    images = smooth_random_image(64)[None]
    params = conf.resolve_params(preset="study-exact")
    out = apply_confounder(conf, images, np.array([True]), seed=0, params=params)
    assert out.dtype == np.uint8 and not np.array_equal(out, images)


@pytest.mark.parametrize(("key", "value"), [("mask", "square"), ("rounding", "floor")])
def test_a_bad_denoise_option_fails_before_any_image(key, value):
    with pytest.raises(UsageError, match=f"{key}='{value}'.*expected one of"):
        denoise_module.with_options().resolve_params({key: value})


def test_the_ellipse_mask_scales_with_the_side_like_the_disk():
    for side in (512, 256):
        diameter = 500 * side / 1024
        ellipse = lowpass_mask((side, side), diameter, "ellipse")
        disk = lowpass_mask((side, side), diameter, "disk")
        assert abs(int(ellipse.sum()) - int(disk.sum())) < 0.03 * disk.sum()


# --- tag: the study's light font, and the font's record ----------------------------------------


def sha256_of(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_the_regular_font_is_todays_file_and_its_record_names_the_file_and_hash():
    font = resolved_font("regular")
    assert font.path == font_file() and font.weight_used == "regular" and not font.fell_back
    assert font.sha256 == sha256_of(font.path)
    assert font_record(get_confounder("tag").resolve_params()) == {
        "file": "DejaVuSans.ttf",
        "sha256": font.sha256,
        "weight_asked": "regular",
        "weight_used": "regular",
    }


def test_extralight_is_the_file_the_studys_matplotlib_query_finds_where_installed():
    from matplotlib import font_manager

    found = extralight_file()
    font = resolved_font("extralight")
    if found is None:
        assert font.weight_used == "regular" and font.path == font_file()
        pytest.skip("DejaVu Sans ExtraLight is not installed here: the fallback is checked")
    assert os.path.basename(found) == EXTRALIGHT_FILE
    assert font.path == found and font.weight_used == "extralight" and not font.fell_back
    assert font.sha256 == sha256_of(found) != resolved_font("regular").sha256
    study_query = font_manager.FontProperties(family="sans-serif", weight="light")
    studys_file = font_manager.findfont(study_query)
    if os.path.basename(studys_file).startswith("DejaVuSans"):  # matplotlib's default sans list
        assert os.path.samefile(studys_file, found)


def test_extralight_falls_back_to_regular_as_the_study_did_and_says_so(
    no_font_caches, monkeypatch, caplog
):
    monkeypatch.setattr(tag_module, "extralight_file", lambda: None)
    font = resolved_font("extralight")
    assert font.path == font_file() and font.weight_used == "regular" and font.fell_back
    assert font.record() == {
        "file": "DejaVuSans.ttf",
        "sha256": sha256_of(font_file()),
        "weight_asked": "extralight",
        "weight_used": "regular",
    }
    assert "ExtraLight is not installed" in caplog.text
    params = tag_module.with_options().resolve_params(preset="study-exact")
    image = smooth_random_image(256) // 2
    regular = tag_module.with_options().resolve_params()
    rng = np.random.default_rng(0)
    assert np.array_equal(draw_tag(image, rng, **params), draw_tag(image, rng, **regular))


@pytest.mark.parametrize("side", [1024, 256])
def test_the_light_tag_changes_pixels_only_inside_its_own_box_and_inks_fewer(side):
    conf = tag_module.with_options()
    light = conf.resolve_params(preset="study-exact")
    regular = conf.resolve_params()
    image = smooth_random_image(side) // 2  # below white, so every inked pixel changes
    rng = np.random.default_rng(0)
    out = draw_tag(image, rng, **light)
    x0, y0, x1, y1 = tag_box(image.shape, light)
    inside = np.zeros(image.shape, dtype=bool)
    inside[y0:y1, x0:x1] = True
    changed = out != image
    assert changed[inside].any() and not changed[~inside].any()
    inked_regular = (draw_tag(image, rng, **regular) != image).sum()
    if resolved_font("extralight").weight_used == "extralight":
        assert changed.sum() < 0.8 * inked_regular  # a thinner stroke
    else:
        assert changed.sum() == inked_regular


def test_the_light_tag_at_1024_is_the_studys_draw_call():
    """``ImageDraw.text((200, 200), "R", font=truetype(file, 64), fill="white")`` on the image."""
    image = smooth_random_image(1024) // 2
    expected = Image.fromarray(image)
    font = tag_module.ImageFont.truetype(resolved_font("extralight").path, 64)
    ImageDraw.Draw(expected).text((200, 200), "R", font=font, fill="white")
    params = tag_module.with_options().resolve_params(preset="study-exact")
    out = draw_tag(image, np.random.default_rng(0), **params)
    assert np.array_equal(out, np.asarray(expected))


def test_a_bad_font_weight_fails_before_any_image():
    with pytest.raises(UsageError, match="font_weight='bold'.*expected one of regular, extralight"):
        tag_module.with_options().resolve_params({"font_weight": "bold"})
    with pytest.raises(UsageError, match="font_weight='bold'"):
        resolved_font("bold")


def test_with_options_loads_as_a_plugin():
    from audit.confounders import load_plugin

    assert load_plugin("audit.confounders.tag:with_options") == tag_module.with_options()
    assert load_plugin("audit.confounders.denoise:with_options") == denoise_module.with_options()
