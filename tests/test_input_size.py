"""A Vision Transformer is fine-tuned at the audit's input size: its position grid is resized."""

from __future__ import annotations

import pytest
import torch
from audit_checks import assert_finished
from torchvision.models import VisionTransformer

from audit.errors import UsageError
from audit.models.architectures import Backbone, create_backbone, strip_classifier
from audit.models.input_size import fit_input_size


def small_vit(image_size: int = 32) -> Backbone:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image_size, patch_size=8, num_layers=1, num_heads=2,
                              hidden_dim=16, mlp_dim=32)  # fmt: skip
    return strip_classifier(model, "vit-small-test")


def test_a_vit_runs_at_another_input_size_with_its_class_token_kept() -> None:
    vit = small_vit(32)
    fitted = fit_input_size(vit, 64)
    assert fitted.module is not vit.module, "the loaded backbone is left as it was"
    assert vit.module.image_size == 32 and fitted.module.image_size == 64
    before = vit.module.encoder.pos_embedding
    after = fitted.module.encoder.pos_embedding
    assert before.shape == (1, 1 + 4 * 4, 16) and after.shape == (1, 1 + 8 * 8, 16)
    torch.testing.assert_close(after[:, 0], before[:, 0])
    features = fitted.module.eval()(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, fitted.feature_dim)


def test_the_same_size_and_convolutional_backbones_are_untouched() -> None:
    vit = small_vit(32)
    assert fit_input_size(vit, 32) is vit
    resnet = create_backbone("resnet18")
    assert fit_input_size(resnet, 40) is resnet


def test_an_interpolated_grid_of_the_same_side_is_the_identity() -> None:
    from audit.models.input_size import _interpolated_grid

    embedding = torch.randn(1, 1 + 5 * 5, 8)
    torch.testing.assert_close(_interpolated_grid(embedding, 5), embedding)


def test_a_side_that_is_not_whole_patches_says_which_sides_work() -> None:
    with pytest.raises(UsageError, match=r"8-pixel patches: `input_size` 60 .* 56 or 64"):
        fit_input_size(small_vit(32), 60)


def test_check_fine_tunes_a_vit_b_16_checkpoint_at_a_small_input_size(tmp_path) -> None:
    """torchvision's ViT-B/16 refuses anything but 224 px; the audit fits it to 32 px."""

    import torchvision

    from audit import cli

    torch.manual_seed(0)
    user, reference = tmp_path / "vit.pt", tmp_path / "ref.pt"
    torch.save(torchvision.models.vit_b_16().state_dict(), user)
    torch.save(torchvision.models.resnet18().state_dict(), reference)
    code = cli.main([
        "--quiet", "check", str(user), "--modality", "cxr", "--synthetic", "--reference",
        str(reference), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--confounders", "tag", "--levels", "0,1", "--folds", "1", "--epochs", "1",
        "--max-steps", "1", "--batch-size", "8", "--input-size", "32", "--image-size", "32",
        "--synthetic-patients", "40", "--resamples", "100", "--no-report",
    ])  # fmt: skip
    results = assert_finished(code, tmp_path / "out")
    assert {m["arch"] for m in results["models"]} == {"vit_b_16", "resnet18"}
