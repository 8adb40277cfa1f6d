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


def test_image_quality_on_constant_images_by_hand():
    a, b = np.full((48, 48), 0.5, np.float32), np.full((48, 48), 0.25, np.float32)
    q = bm.image_quality(a, b, data_range=1.0, ms_ssim_kernel=3)
    c1 = (0.01 * 1.0) ** 2
    luminance = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)  # contrast/structure terms are 1
    assert q["rmse"] == pytest.approx(0.25)
    assert q["psnr"] == pytest.approx(10 * np.log10(1 / 0.25**2), rel=1e-6)
    assert q["ssim"] == pytest.approx(luminance, rel=1e-4)
    assert q["ms_ssim"] == pytest.approx(luminance**0.1333, rel=1e-4)  # only the coarsest scale's l
    # data_range scales PSNR: same images in [0, 255]
    q255 = bm.image_quality(a * 255, b * 255, data_range=255.0, ms_ssim_kernel=3)
    assert q255["psnr"] == pytest.approx(q["psnr"], rel=1e-5)
    assert q255["ssim"] == pytest.approx(q["ssim"], rel=1e-4)


def test_image_quality_matches_scikit_image_ssim_and_averages_per_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    ref = rng.random((64, 64)).astype(np.float32)
    noisy = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1).astype(np.float32)
    q = bm.image_quality(noisy, ref, data_range=1.0, ms_ssim_kernel=3)
    _, ssim_map = structural_similarity(noisy, ref, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
    assert q["ssim"] == pytest.approx(ssim_map[5:-5, 5:-5].mean(), abs=1e-5)  # MONAI: valid window
    assert q["rmse"] == pytest.approx(np.sqrt(((noisy - ref) ** 2).mean()), rel=1e-5)
    assert 0 < q["ms_ssim"] < 1
    batch = np.stack([ref + 0.1, ref + 0.3])[:, None]
    qb = bm.image_quality(batch, np.stack([ref, ref])[:, None], data_range=1.0, ms_ssim_kernel=3)
    assert qb["rmse"] == pytest.approx(0.2, rel=1e-5)
    assert qb["psnr"] == pytest.approx((20 + 20 * np.log10(1 / 0.3)) / 2, rel=1e-5)


def test_image_quality_input_checks():
    small = np.zeros((32, 32), np.float32)
    with pytest.raises(InvalidArgumentError, match="too small"):
        bm.image_quality(small, small, data_range=1.0)
    with pytest.raises(InvalidArgumentError, match="differ in shape"):
        bm.image_quality(np.zeros((48, 48)), np.zeros((48, 64)), data_range=1.0, ms_ssim_kernel=3)
    with pytest.raises(InvalidValuesError):
        bm.image_quality(np.full((48, 48), np.nan), np.zeros((48, 48)), data_range=1.0, ms_ssim_kernel=3)
    with pytest.raises(InvalidArgumentError):
        bm.image_quality(np.zeros((1, 48, 48)), np.zeros((1, 48, 48)), data_range=1.0)


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
