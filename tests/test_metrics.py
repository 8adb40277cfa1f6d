"""bonelab.metrics against answers computed by hand (small arrays) or by an independent library."""

import math

import numpy as np
import pytest
import torch

from bonelab import metrics as bm
from bonelab.errors import InvalidArgumentError, InvalidValuesError


def masks(shape=(3, 4, 4)):
    return np.zeros(shape, bool), np.zeros(shape, bool)


def test_dice_per_label_by_hand():
    p, t = masks()
    p[0, :2] = True  # 8 pixels
    t[0, :1] = True  # 4 pixels, all inside p: Dice = 2*4 / (8+4)
    p[1, 0, 0] = True  # false positive only: 0
    assert np.allclose(bm.dice_per_label(p, t), [2 / 3, 0.0, np.nan], equal_nan=True)
    t[1, 3, 3] = True  # one pixel each, disjoint: still 0
    t[2, 1, 1] = p[2, 1, 1] = True  # identical single pixel: 1
    assert np.allclose(bm.dice_per_label(p, t), [2 / 3, 0.0, 1.0])
    # only the target present: 0 (the empty-empty NaN does not hide a missed structure)
    p2, t2 = masks((1, 4, 4))
    t2[0, 2] = True
    assert bm.dice_per_label(p2, t2).tolist() == [0.0]


def test_dice_channels_are_independent_when_labels_overlap():
    p, t = masks((2, 4, 4))
    t[0, :3] = t[1, 1:] = True  # rows 1-2 belong to both labels
    p[:] = t
    p[1, 3] = False  # label 1 misses 4 of its 12 pixels: 2*8 / (8+12)
    assert np.allclose(bm.dice_per_label(p, t), [1.0, 0.8])
    assert np.allclose(bm.dice_per_label(p.astype(np.uint8), torch.from_numpy(t)), [1.0, 0.8])


def test_dice_in_3d_and_input_checks():
    p, t = masks((1, 2, 3, 3))
    p[0, 0] = True  # 9 voxels
    t[0] = True  # 18 voxels: 2*9 / 27
    assert bm.dice_per_label(p, t)[0] == pytest.approx(2 / 3)
    with pytest.raises(InvalidValuesError, match="threshold"):
        bm.dice_per_label(np.full((1, 2, 2), 0.7), t[:, 0, :2, :2])
    with pytest.raises(InvalidArgumentError, match="same shape"):
        bm.dice_per_label(p[:, 0], t)


def test_batch_dice_thresholds_logits_and_skips_empty_labels():
    target = torch.zeros(3, 2, 4, 4)
    target[0, 0, :2] = 1
    target[0, 1, 3] = 1
    target[1, 0, :1] = 1  # sample 1: label 0 as in dice_per_label (2/3), label 1 empty in both
    logits = torch.full_like(target, -5.0)
    logits[0] = torch.where(target[0] > 0, 5.0, -5.0)
    logits[1, 0, :2] = 0.1  # sigmoid 0.52 > 0.5
    scores = bm.batch_dice(logits, target)
    assert scores[:2].tolist() == pytest.approx([1.0, 2 / 3])
    assert math.isnan(scores[2])  # nothing anywhere: undefined
    assert bm.batch_dice(logits, target, threshold=0.6)[1] == 0.0  # 0.52 no longer counts


def test_upsampled_dice_sees_the_surface_inside_a_voxel_that_batch_dice_cannot():
    z, y, x = np.mgrid[:32, :32, :32] + 0.5  # a ball on a 1 mm grid, its surface off the voxel centres
    fine = torch.as_tensor((z - 16.3) ** 2 + (y - 15.2) ** 2 + (x - 16.9) ** 2 < 7.3 ** 2)[None, None].float()
    fractions = torch.nn.functional.avg_pool3d(fine, 2)  # how much of each 2 mm voxel the ball fills
    exact = torch.logit(fractions.clamp(1e-4, 1 - 1e-4))  # a network that learnt the fractions
    binary = torch.where(fractions > 0.5, 10.0, -10.0)  # one that learnt a binary 2 mm mask
    assert bm.batch_dice(exact, fractions).item() == bm.batch_dice(binary, fractions).item() == 1.0  # blind

    def dice_on_fine_truth(logits):
        up = torch.nn.functional.interpolate(torch.sigmoid(logits), scale_factor=2, mode="trilinear")
        return bm.dice_per_label(up[0] > 0.5, fine[0] > 0.5)[0]

    assert dice_on_fine_truth(exact) > dice_on_fine_truth(binary) + 0.04  # 0.976 against 0.929
    up_exact, up_binary = bm.upsampled_dice(exact, fractions).item(), bm.upsampled_dice(binary, fractions).item()
    assert up_exact > 0.99 and up_binary < up_exact - 0.04  # 0.999 and 0.948: the same ranking
    with pytest.raises(InvalidArgumentError, match="one shape"):
        bm.upsampled_dice(exact, fractions[..., :8])
    with pytest.raises(InvalidArgumentError, match="positive"):
        bm.upsampled_dice(exact, fractions, factor=0)


# Class maps whose confusion matrix and FCN scores are worked out in the comments.
TARGET = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
# rows = truth: [[3, 1, 0], [0, 2, 1], [1, 0, 2]]; t = (4, 3, 3); column sums (4, 3, 3)
# IoU: 3/(4+4-3) = 0.6, 2/(3+3-2) = 0.5, 2/(3+3-2) = 0.5


def test_confusion_matrix_and_fcn_scores_by_hand():
    cm = bm.confusion_matrix(PRED, TARGET, n_classes=3)
    assert cm.tolist() == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert bm.pixel_accuracy(cm) == pytest.approx(7 / 10)
    assert bm.mean_accuracy(cm) == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert bm.mean_iou(cm) == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    assert bm.frequency_weighted_iou(cm) == pytest.approx((4 * 0.6 + 3 * 0.5 + 3 * 0.5) / 10)
    # 2D maps, torch tensors and an unused extra class give the same numbers
    cm4 = bm.confusion_matrix(torch.from_numpy(PRED.reshape(2, 5)), TARGET.reshape(2, 5), n_classes=4)
    assert cm4[:3, :3].tolist() == cm.tolist() and cm4[3].sum() == cm4[:, 3].sum() == 0
    assert bm.mean_iou(cm4) == pytest.approx(bm.mean_iou(cm))
    assert bm.mean_accuracy(cm4) == pytest.approx(bm.mean_accuracy(cm))


def test_class_predicted_but_absent_from_target():
    # rows: t0 = [1, 0, 0, 1], t1 = [0, 2, 0, 0]; classes 2 and 3 absent from the target
    cm = bm.confusion_matrix([0, 3, 1, 1], [0, 0, 1, 1], n_classes=4)
    assert bm.pixel_accuracy(cm) == pytest.approx(3 / 4)
    assert bm.mean_accuracy(cm) == pytest.approx((1 / 2 + 1) / 2)  # classes 2, 3 undefined
    assert bm.mean_iou(cm) == pytest.approx((0.5 + 1 + 0) / 3)  # class 3: IoU 0 counts, class 2 NaN
    assert bm.frequency_weighted_iou(cm) == pytest.approx((2 * 0.5 + 2 * 1) / 4)


def test_confusion_matrix_rejects_bad_maps():
    with pytest.raises(InvalidValuesError, match="argmax"):
        bm.confusion_matrix(PRED.astype(float), TARGET, 3)
    with pytest.raises(InvalidValuesError, match="n_classes"):
        bm.confusion_matrix(PRED, TARGET, 2)
    with pytest.raises(InvalidArgumentError):
        bm.confusion_matrix(PRED[:5], TARGET, 3)


def smooth(shape, seed=0):
    """A smooth random image (or batch) in [0, 1]: texture for the window-based metrics."""
    from scipy import ndimage

    a = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), (0,) * (len(shape) - 2) + (3, 3))
    return ((a - a.min()) / (a.max() - a.min())).astype(np.float32)


def test_image_quality_rmse_and_psnr_by_numpy():
    rng = np.random.default_rng(1)
    target = smooth((3, 1, 112, 120))
    prediction = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    q = bm.image_quality(prediction, torch.from_numpy(target))  # numpy and torch mix
    mse = ((prediction.astype(np.float64) - target) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(q["rmse"], np.sqrt(mse), rtol=1e-6)
    np.testing.assert_allclose(q["psnr"], 10 * np.log10(1.0 / mse), rtol=1e-6)
    assert sorted(q) == ["ms_ssim", "psnr", "rmse", "ssim"]
    assert all(v.shape == (3,) and v.dtype == np.float64 for v in q.values())  # one value per image
    import pandas as pd

    assert pd.DataFrame(q).shape == (3, 4)


def test_ssim_of_an_image_with_itself_and_with_a_constant_offset_by_hand():
    image = smooth((1, 1, 128, 128))
    same = bm.image_quality(image, image)
    assert same["ssim"][0] == pytest.approx(1.0, abs=1e-6) and same["ms_ssim"][0] == pytest.approx(1.0, abs=1e-6)
    assert same["rmse"][0] == 0 and same["psnr"][0] == math.inf
    # A constant image mu and a copy offset by c: every window has means mu and mu + c and zero
    # variances, so the contrast-structure terms are (0 + C2) / (0 + C2) = 1 and SSIM is the
    # luminance term at every position; MS-SSIM keeps only the coarsest scale's, to its weight.
    # (dark values: MONAI computes in float32, and the variances' round-off grows with the mean)
    from bonelab.losses import MS_SSIM_WEIGHTS

    mu, c = 0.05, 0.1
    c1 = (0.01 * 1.0) ** 2
    luminance = (2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1)
    q = bm.image_quality(np.full((128, 128), mu + c, np.float32), np.full((128, 128), mu, np.float32))
    assert q["ssim"][0] == pytest.approx(luminance, rel=1e-4)
    assert q["ms_ssim"][0] == pytest.approx(luminance ** MS_SSIM_WEIGHTS[-1], rel=1e-4)
    assert q["rmse"][0] == pytest.approx(c, rel=1e-6) and q["psnr"][0] == pytest.approx(20.0, rel=1e-6)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    ref = rng.random((64, 64)).astype(np.float32)
    noisy = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1).astype(np.float32)
    q = bm.image_quality(noisy, ref, ms_ssim_window=3)
    _, ssim_map = structural_similarity(noisy, ref, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
    assert q["ssim"][0] == pytest.approx(ssim_map[5:-5, 5:-5].mean(), abs=1e-5)  # MONAI: valid window


def test_ms_ssim_decreases_with_noise():
    rng = np.random.default_rng(2)
    target = smooth((1, 1, 128, 128))
    noisy = np.concatenate([np.clip(target + rng.normal(0, s, target.shape), 0, 1) for s in (0.01, 0.03, 0.1, 0.3)])
    q = bm.image_quality(noisy, np.repeat(target, 4, axis=0))
    for name in ("ms_ssim", "ssim", "psnr"):
        assert np.all(np.diff(q[name]) < 0), (name, q[name])
    assert np.all(np.diff(q["rmse"]) > 0)


def test_the_0_255_scale_changes_rmse_only():
    rng = np.random.default_rng(3)
    target = smooth((2, 1, 128, 128))
    prediction = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    unit = bm.image_quality(prediction, target)
    eight_bit = bm.image_quality(prediction * 255, target * 255, data_range=255)
    np.testing.assert_allclose(eight_bit["rmse"], 255 * unit["rmse"], rtol=1e-6)
    np.testing.assert_allclose(eight_bit["psnr"], unit["psnr"], rtol=1e-6)
    for name in ("ssim", "ms_ssim"):  # equal to float32 round-off (MONAI computes them in float32)
        np.testing.assert_allclose(eight_bit[name], unit[name], rtol=1e-5)
    # ... and data_range must follow the scale: left at 1.0, SSIM's constants are 255^2 too small
    wrong = bm.image_quality(prediction * 255, target * 255, data_range=1.0)
    assert abs(wrong["psnr"][0] - unit["psnr"][0]) > 40


def test_image_quality_input_checks():
    from bonelab.losses import ms_ssim_min_side

    assert ms_ssim_min_side(7) == 112
    with pytest.raises(InvalidArgumentError, match=r"at least 112 px .*7-px|7-px.*at least 112 px"):
        bm.image_quality(np.zeros((111, 200)), np.zeros((111, 200)))
    with pytest.raises(InvalidArgumentError, match="ms_ssim_window=5"):
        bm.image_quality(np.zeros((100, 100)), np.zeros((100, 100)))
    with pytest.raises(InvalidArgumentError, match="176 px"):
        bm.image_quality(np.zeros((175, 175)), np.zeros((175, 175)), ms_ssim_window=11)
    bm.image_quality(np.zeros((112, 112)), np.zeros((112, 112)))  # the limit itself is fine
    with pytest.raises(InvalidArgumentError, match="differ in shape"):
        bm.image_quality(np.zeros((128, 128)), np.zeros((128, 130)))
    with pytest.raises(InvalidValuesError):
        bm.image_quality(np.full((128, 128), np.nan), np.zeros((128, 128)))
    with pytest.raises(InvalidArgumentError, match=r"\(N, C, H, W\)"):
        bm.image_quality(np.zeros((1, 128, 128)), np.zeros((1, 128, 128)))
    with pytest.raises(InvalidArgumentError, match="odd"):
        bm.image_quality(np.zeros((128, 128)), np.zeros((128, 128)), ssim_window=8)
    with pytest.raises(InvalidArgumentError, match="data_range"):
        bm.image_quality(np.zeros((128, 128)), np.zeros((128, 128)), data_range=0)


def test_volume_agreement_by_hand():
    assert bm.volume_agreement([2, 4, 6], [1, 2, 3]) == {"r2": 1.0, "slope": 2.0, "intercept": 0.0,
                                                         "mean_abs_diff": 2.0}
    # true (0, 1, 2), pred (0, 2, 1): cov = 1, var(true) = 2 -> slope 0.5, intercept 1 - 0.5 = 0.5,
    # r = 1 / sqrt(2 * 2) = 0.5 -> r2 0.25; |diff| = (0, 1, 1) -> 2/3
    got = bm.volume_agreement([0, 2, 1], [0, 1, 2])
    assert got == pytest.approx({"r2": 0.25, "slope": 0.5, "intercept": 0.5, "mean_abs_diff": 2 / 3})
    with pytest.raises(InvalidArgumentError):
        bm.volume_agreement([1, 2], [1, 2])
    with pytest.raises(InvalidValuesError, match="equal"):
        bm.volume_agreement([1, 2, 3], [5, 5, 5])
    with pytest.raises(InvalidValuesError):
        bm.volume_agreement([1, np.nan, 3], [1, 2, 3])
