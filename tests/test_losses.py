"""bonelab.losses: segmentation losses and the MS-SSIM + L1 image loss, against exact values."""

import numpy as np
import pytest
import torch
from scipy import ndimage

import bonelab.losses as bl
import bonelab.train as bt
from bonelab.errors import InvalidArgumentError

C1 = (0.01 * 1.0) ** 2  # SSIM's luminance constant for data_range 1


def test_old_names_stay_importable_from_train():
    assert bt.DiceBCELoss is bl.DiceBCELoss and bt.segmentation_loss is bl.segmentation_loss


def test_segmentation_loss_prefers_the_right_answer():
    label = torch.zeros(2, 3, 8, 8)
    label[:, 0, :4] = 1
    label[1, 1, 2:5, 2:5] = 1  # label 1 absent from image 0
    label[:, 2, :, :2] = 1
    right, wrong = torch.where(label > 0, 8.0, -8.0), torch.where(label > 0, -8.0, 8.0)
    for kind in ("dice_ce", "dice_focal"):
        loss = bl.segmentation_loss(kind)
        assert float(loss(right, label)) < 0.01 and float(loss(wrong, label)) > 1.0
    # overlapping labels (a pixel in two bones) are representable: softmax cross-entropy is not
    overlap = torch.zeros(1, 2, 4, 4)
    overlap[0, :, :2] = 1
    assert float(bl.segmentation_loss()(torch.where(overlap > 0, 9.0, -9.0), overlap)) < 1e-3
    # the cross-entropy term is the mean binary cross-entropy: logits 0 give ln 2 per pixel
    dice_bce = bl.DiceBCELoss(lambda_dice=0.0)
    assert float(dice_bce(torch.zeros(2, 3, 4, 4), label[:, :, :4, :4])) == pytest.approx(np.log(2))
    # per-image Dice: the empty channel of image 0 costs about 1/6 of the loss even when right
    per_image = bl.segmentation_loss(batch_dice=False)
    assert float(per_image(right, label)) > 0.15
    classes = torch.zeros(2, 1, 8, 8)
    classes[:, 0, :4] = 2
    classes[:, 0, 4:6] = 1
    onehot = torch.nn.functional.one_hot(classes[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    loss = bl.segmentation_loss(multi_label=False)
    assert float(loss(onehot * 16, classes)) < 0.01 < float(loss(onehot * -16, classes))
    with pytest.raises(InvalidArgumentError):
        bl.segmentation_loss("l2")


def smooth_image(size, seed=0, shape=None):
    """A smooth random image in [0, 1]: (1, 1, size, size), or ``shape`` when given."""
    rng = np.random.default_rng(seed)
    shape = shape or (1, 1, size, size)
    image = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 0) + (3,) * (len(shape) - 2))
    image = (image - image.min()) / (image.max() - image.min())
    return torch.tensor(image, dtype=torch.float32)


def test_ms_ssim_threshold_is_the_measured_one():
    from monai.metrics.regression import compute_ms_ssim

    side = bl.ms_ssim_min_side()
    assert side == 176
    compute_ms_ssim(torch.rand(1, 1, side, side), torch.rand(1, 1, side, side), spatial_dims=2)
    with pytest.raises(ValueError):
        compute_ms_ssim(torch.rand(1, 1, side - 1, side), torch.rand(1, 1, side - 1, side), spatial_dims=2)
    loss = bl.MSSSIML1Loss()
    assert loss.multiscale((1, 1, 176, 200)) and not loss.multiscale((1, 1, 175, 400))


@pytest.mark.parametrize("size", [32, 176])  # single-scale SSIM below 176 px, MS-SSIM from 176
def test_identical_images_cost_nothing(size):
    image = smooth_image(size)
    terms = bl.MSSSIML1Loss()(image, image)
    assert sorted(terms) == ["l1", "loss", "ms_ssim"]
    assert float(terms["l1"]) == 0.0
    assert float(terms["ms_ssim"]) == pytest.approx(1.0, abs=1e-5)
    assert float(terms["loss"]) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("size", [32, 176])
def test_constant_offset_gives_exact_terms(size):
    # Constant images: no contrast or structure, so SSIM is its luminance term
    # (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), the same at every scale; MS-SSIM keeps only the
    # coarsest scale's luminance, raised to its weight (the contrast terms are exactly 1).
    # (dark values: MONAI computes in float32, and the variances' round-off grows with the mean)
    target, prediction = torch.full((2, 1, size, size), 0.05), torch.full((2, 1, size, size), 0.15)
    luminance = (2 * 0.05 * 0.15 + C1) / (0.05**2 + 0.15**2 + C1)
    expected = luminance ** bl.MS_SSIM_WEIGHTS[-1] if size >= 176 else luminance
    terms = bl.MSSSIML1Loss(alpha=0.84)(prediction, target)
    assert float(terms["l1"]) == pytest.approx(0.1, rel=1e-6)
    assert float(terms["ms_ssim"]) == pytest.approx(expected, rel=1e-4)
    assert float(terms["loss"]) == pytest.approx(0.84 * (1 - expected) + 0.16 * 0.1, rel=1e-4)
    # on a textured image the offset costs the same L1, and alpha=0 leaves L1 alone
    image = smooth_image(size)
    terms = bl.MSSSIML1Loss(alpha=0.0)(image + 0.1, image)
    assert float(terms["l1"]) == pytest.approx(0.1, rel=1e-5) == pytest.approx(float(terms["loss"]))


@pytest.mark.parametrize("size", [48, 192])
def test_denoising_a_prediction_lowers_the_loss(size):
    target = smooth_image(size, seed=1)
    noisy = target + 0.15 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    denoised = torch.tensor(ndimage.gaussian_filter(noisy.numpy(), sigma=(0, 0, 1.5, 1.5)))
    loss = bl.MSSSIML1Loss()
    worse, better = loss(noisy, target), loss(denoised, target)
    assert float(better["loss"]) < 0.7 * float(worse["loss"])
    assert float(better["ms_ssim"]) > float(worse["ms_ssim"]) and float(better["l1"]) < float(worse["l1"])


def test_3d_patches_and_gradients():
    target = smooth_image(0, shape=(2, 1, 16, 16, 16))
    prediction = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0)))
    prediction.requires_grad_(True)
    terms = bl.MSSSIML1Loss()(prediction, target)
    terms["loss"].backward()
    assert 0 < float(terms["loss"].detach()) < 1
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    assert float(bl.MSSSIML1Loss()(target, target)["loss"]) == pytest.approx(0.0, abs=1e-5)


def test_bad_inputs_are_named():
    loss = bl.MSSSIML1Loss()
    with pytest.raises(InvalidArgumentError, match="same shape|one shape"):
        loss(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 30))
    with pytest.raises(InvalidArgumentError, match="window"):
        loss(torch.zeros(1, 1, 8, 32), torch.zeros(1, 1, 8, 32))
    with pytest.raises(InvalidArgumentError, match="alpha"):
        bl.MSSSIML1Loss(alpha=1.5)


def test_named_image_losses_choose_the_scales_and_weights():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 128, 128, generator=g)
    noisy = (target + 0.2 * torch.randn(2, 1, 128, 128, generator=g)).clamp(0, 1)
    l1 = bl.image_loss("l1")(noisy, target)
    assert float(l1["loss"]) == pytest.approx(float(l1["l1"]), rel=1e-6)   # alpha 0: L1 alone
    single, multi = bl.image_loss("l1+ssim"), bl.image_loss("l1+ms-ssim")
    assert not single.multiscale(target.shape) and multi.multiscale(target.shape)
    assert float(single(noisy, target)["ms_ssim"]) != pytest.approx(float(multi(noisy, target)["ms_ssim"]), abs=1e-3)
    with pytest.raises(InvalidArgumentError, match="at least 112 px"):
        multi(target[..., :100, :100], target[..., :100, :100])
    with pytest.raises(InvalidArgumentError, match="unknown"):
        bl.image_loss("vgg")
