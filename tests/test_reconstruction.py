"""Reconstruction: fixed masks, PSNR/SSIM on masked pixels, norm_pix un-normalisation, figure panels, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from maelab import MAE
from maelab.cli import main
from maelab.eval.reconstruction import PSNR_CAP, evaluate_reconstruction, masked_mse, masked_ssim, psnr_from_mse
from maelab.report import draw_reconstruction
from maelab.visualize import (
    GREY,
    choose_images,
    fixed_noise,
    pixel_mask,
    prediction_to_input_space,
    reconstruct,
    reconstruction_panels,
    save_figure,
)

from .conftest import TINY_MODEL

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def tiny_mae(seed: int = 0, **kw: object) -> MAE:
    torch.manual_seed(seed)
    return MAE(**TINY_MODEL, **kw).eval()


def uint8_images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_fixed_masks_identical_across_calls_and_models() -> None:
    assert torch.equal(fixed_noise(6, 64, 3), fixed_noise(6, 64, 3))
    assert not torch.equal(fixed_noise(6, 64, 3), fixed_noise(6, 64, 4))
    imgs, noise = uint8_images(), fixed_noise(4, 64, 0)
    a = reconstruct(tiny_mae(0), imgs, MEAN, STD, noise)
    b = reconstruct(tiny_mae(1, norm_pix_loss=True), imgs, MEAN, STD, noise)
    assert torch.equal(a.mask, b.mask)
    assert not torch.allclose(a.prediction, b.prediction)  # different models, same masks
    assert a.mask.mean().item() == pytest.approx(0.75)


def test_higher_mask_ratio_masks_a_superset() -> None:
    imgs, noise = uint8_images(), fixed_noise(4, 64, 0)
    low = reconstruct(tiny_mae(), imgs, MEAN, STD, noise, mask_ratio=0.5).mask
    high = reconstruct(tiny_mae(), imgs, MEAN, STD, noise, mask_ratio=0.9).mask
    assert low.mean().item() == pytest.approx(0.5) and high.mean().item() == pytest.approx(0.9, abs=0.02)
    assert torch.all(high >= low)


def test_pixel_mask_covers_the_masked_patches() -> None:
    mask = torch.zeros(1, 64)
    mask[0, 9] = 1  # row 1, column 1 of the 8x8 grid of 4x4 patches
    pm = pixel_mask(mask, 4)
    assert pm.shape == (1, 1, 32, 32) and pm.sum() == 16
    assert pm[0, 0, 4:8, 4:8].eq(1).all()


def test_psnr_and_ssim_known_values() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.8
    pm = torch.zeros(2, 1, 32, 32)
    pm[:, :, :16] = 1
    assert masked_ssim(x, x, pm) == pytest.approx(torch.ones(2))
    assert psnr_from_mse(masked_mse(x, x, pm)) == pytest.approx(torch.full((2,), PSNR_CAP))
    y = x + 0.1 * pm  # error 0.1 on masked pixels only
    assert masked_mse(y, x, pm) == pytest.approx(torch.full((2,), 0.01))
    assert psnr_from_mse(masked_mse(y, x, pm)) == pytest.approx(torch.full((2,), 20.0))
    z = x + 0.1 * (1 - pm)  # error only on visible pixels: invisible to the masked metrics
    assert masked_mse(z, x, pm).abs().max() < 1e-12
    assert masked_ssim(x + 0.2 * torch.rand_like(x) * pm, x, pm).max() < 0.99


def test_norm_pix_prediction_unnormalised_with_true_patch_stats() -> None:
    model = tiny_mae(norm_pix_loss=True)
    imgs = torch.randn(2, 3, 32, 32)
    # Predicting the normalised target exactly gives back the image.
    assert torch.allclose(prediction_to_input_space(model, imgs, model.target(imgs)), imgs, atol=1e-4)
    # Hand case: a prediction of zeros is every patch's true mean; of ones, mean + std (unbiased, +1e-6).
    patch = torch.arange(48, dtype=torch.float32)  # one 4x4x3 patch with mean 23.5
    imgs = model.unpatchify(patch.repeat(1, 64, 1))
    zeros = prediction_to_input_space(model, imgs, torch.zeros(1, 64, 48))
    assert torch.allclose(zeros, torch.full_like(zeros, 23.5))
    ones = prediction_to_input_space(model, imgs, torch.ones(1, 64, 48))
    assert torch.allclose(ones, torch.full_like(ones, 23.5 + math.sqrt(patch.var().item() + 1e-6)))


def test_plain_model_prediction_is_unchanged() -> None:
    model, pred = tiny_mae(), torch.randn(2, 64, 48)
    assert torch.equal(prediction_to_input_space(model, torch.randn(2, 3, 32, 32), pred), model.unpatchify(pred))


def test_panels_blank_masked_and_paste_visible(tmp_path: Path) -> None:
    model, imgs = tiny_mae(), uint8_images(3)
    noise = fixed_noise(3, 64, 0)
    panels = reconstruction_panels(model, imgs, MEAN, STD, noise)
    assert panels.shape == (3, 4, 3, 32, 32)
    original, masked_input, prediction, pasted = panels.unbind(1)
    assert torch.allclose(original, imgs.float() / 255, atol=1e-6)
    pm = reconstruct(model, imgs, MEAN, STD, noise).mask.expand_as(original).bool()
    assert pm.float().mean().item() == pytest.approx(0.75)
    assert masked_input[pm].eq(GREY).all() and torch.equal(masked_input[~pm], original[~pm])
    assert torch.equal(pasted[~pm], original[~pm]) and torch.equal(pasted[pm], prediction[pm])
    assert not torch.allclose(prediction[~pm], original[~pm])  # the raw reconstruction is the model's
    png = save_figure(panels, tmp_path / "fig.png", "title", "caption")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_choose_images_is_seeded() -> None:
    assert torch.equal(choose_images(100, 8, 1), choose_images(100, 8, 1))
    assert len(set(choose_images(100, 8, 1).tolist())) == 8
    assert not torch.equal(choose_images(100, 8, 1), choose_images(100, 8, 2))


def test_evaluate_is_batch_size_and_subset_invariant() -> None:
    model, imgs = tiny_mae(), uint8_images(6)
    a = evaluate_reconstruction(model, imgs, MEAN, STD, seed=0, batch_size=6)
    b = evaluate_reconstruction(model, imgs, MEAN, STD, seed=0, batch_size=4)
    assert a["psnr"] == pytest.approx(b["psnr"]) and a["ssim"] == pytest.approx(b["ssim"])
    assert a["mse_loss_space"] == pytest.approx(b["mse_loss_space"], rel=1e-5)
    # Image i keeps noise row i when scored alone, so one image's number equals its share of the whole.
    parts = [
        evaluate_reconstruction(model, imgs, MEAN, STD, seed=0, indices=torch.tensor([i]))["psnr"] for i in range(6)
    ]
    assert sum(parts) / 6 == pytest.approx(a["psnr"], rel=1e-5)


def test_loss_space_mse_matches_training_loss() -> None:
    model, imgs = tiny_mae(norm_pix_loss=True), uint8_images(2)
    noise = fixed_noise(2, 64, 0)
    from maelab.augment import normalize

    loss, _, _ = model(normalize(imgs, MEAN, STD), noise=noise)
    assert reconstruct(model, imgs, MEAN, STD, noise).loss_space_mse.mean().item() == pytest.approx(
        loss.item(), rel=1e-5
    )


def test_cli_reconstruct(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fig = tmp_path / "fig.png"
    assert main(["reconstruct", str(tiny_run), "--n", "3", "--out", str(fig), "--mask-ratio", "0.5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert fig.is_file() and "PSNR" in out
    result = json.loads((tiny_run / "eval" / "reconstruction_mr0.5_seed0.json").read_text())
    assert result["mask_ratio"] == 0.5 and result["num_images"] == 12 and result["trained_mask_ratio"] == 0.75
    assert 0 < result["psnr"] < PSNR_CAP and -1 <= result["ssim"] <= 1
    assert (tiny_run / "eval" / "reconstruction_mr0.5_seed0.md").read_text().startswith("# Reconstruction")


def test_figure_titles_name_the_seed_of_the_images_and_masks(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed in a reconstruction figure's title picks its images and masks (fixed so that figures compare across
    training seeds), so the title says so, in ``maelab reconstruct`` and in ``maelab report``'s own figure."""
    titles: list[str] = []

    def keep_title(panels: torch.Tensor, path: Path, title: str, *args: object, **kwargs: object) -> Path:
        titles.append(title)
        return save_figure(panels, path, title, *args, **kwargs)

    monkeypatch.setattr("maelab.visualize.save_figure", keep_title)
    fig = tmp_path / "fig.png"
    assert main(["reconstruct", str(tiny_run), "--n", "2", "--out", str(fig), "--seed", "3", "--quiet"]) == 0
    assert draw_reconstruction(tiny_run, tmp_path / "report.png", n=2, seed=3).is_file() and fig.is_file()
    assert titles == [
        f"{tiny_run.name}: mask ratio 0.75, image/mask seed 3",
        f"{tiny_run.name}: test images, mask ratio 0.75, image/mask seed 3",
    ]


def test_cli_reconstruct_rejects_bad_ratio(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconstruct", str(tiny_run), "--mask-ratio", "1.0", "--quiet"]) == 2
    assert "--mask-ratio" in capsys.readouterr().err
