"""Evaluation metrics for every chapter: overlap, confusion-matrix scores, image quality, volumes.

* Segmentation overlap: :func:`dice_per_label` (multi-label masks, one Dice per label) and
  :func:`batch_dice` (the same on network logits, for :func:`bonelab.train.train`).
* Semantic segmentation scores from a confusion matrix (Long et al. 2015, the FCN paper):
  :func:`confusion_matrix`, :func:`pixel_accuracy`, :func:`mean_accuracy`, :func:`mean_iou`,
  :func:`frequency_weighted_iou`.
* Image quality of predicted images against references: :func:`image_quality` (RMSE, PSNR,
  SSIM, MS-SSIM per image, through MONAI's metrics), chapter 4.
* Agreement of measured volumes: :func:`volume_agreement` (R², regression line, mean absolute difference).

Conventions shared by all functions here:

* Multi-label masks are *stacked binary channels* ``(L, ...)``: channel ``l`` says where label ``l``
  is, and channels may overlap (carpal bones do in a radiograph).  They are never an argmax map.
* Class maps for the confusion-matrix scores are integer arrays (any shape) holding class indices
  ``0 .. n_classes - 1``.
* A score that is undefined (a Dice with both masks empty, the accuracy of a class absent from the
  target) is NaN and left out of every mean (``nanmean``), so absent structures neither reward nor
  punish a model.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bonelab.errors import InvalidArgumentError, InvalidValuesError
from bonelab.files import check_finite

# --------------------------------------------------------------------------------------------
# Dice on multi-label masks
# --------------------------------------------------------------------------------------------


def _as_bool_tensor(array, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.dtype != torch.bool:
        values = torch.unique(tensor)
        if not bool(((values == 0) | (values == 1)).all()):
            raise InvalidValuesError(
                f"{name} must be a binary mask (bool or 0/1), got values {values[:5].tolist()}...; "
                "threshold probabilities first (e.g. probs > 0.5)."
            )
        tensor = tensor != 0
    return tensor


def dice_per_label(pred, target) -> np.ndarray:
    """Dice coefficient of each label channel of a multi-label mask.

    Parameters
    ----------
    pred, target : bool (or 0/1) arrays or tensors, shape (L, H, W) (or (L, D, H, W))
        Stacked binary masks, one channel per label; channels may overlap (not an argmax map).

    Returns
    -------
    ndarray, shape (L,), float64
        ``2 |P ∩ T| / (|P| + |T|)`` per label.  Convention for empty masks: both empty -> NaN
        (nothing to find, nothing found: undefined, and excluded by ``np.nanmean``); only one
        empty -> 0.  (MONAI's ``compute_dice`` returns 1 or NaN for *any* empty target instead;
        we keep its numbers and only change the empty-empty case.)

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((3, 4, 4), bool); t = np.zeros((3, 4, 4), bool)
    >>> p[0, :2] = True; t[0, :1] = True          # label 0: 8 vs 4 pixels, 4 shared
    >>> p[1, 0, 0] = True                         # label 1: false positive only
    >>> dice_per_label(p, t)                      # label 2: both empty
    array([0.66666667, 0.        ,        nan])
    """
    from monai.metrics import compute_dice

    p = _as_bool_tensor(pred, "pred")
    t = _as_bool_tensor(target, "target")
    if p.shape != t.shape or p.ndim < 2:
        raise InvalidArgumentError(
            f"pred and target must both be (L, H, W) label stacks of the same shape; got "
            f"{tuple(p.shape)} and {tuple(t.shape)}."
        )
    dice = compute_dice(p[None].double(), t[None].double(), include_background=True, ignore_empty=False)[0]
    both_empty = ~p.flatten(1).any(1) & ~t.flatten(1).any(1)
    dice[both_empty] = float("nan")
    return dice.double().cpu().numpy()


def batch_dice(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Mean Dice over labels for each sample of a batch of multi-label sigmoid logits.

    The default validation metric of :func:`bonelab.train.train` for segmentation.

    Parameters
    ----------
    logits : tensor (N, L, H, W)
        Raw network outputs; a pixel belongs to label ``l`` where ``sigmoid(logit) > threshold``.
    target : tensor (N, L, H, W), bool or 0/1
    threshold : float
        Probability threshold.

    Returns
    -------
    tensor (N,)
        Per sample, the mean of :func:`dice_per_label` over labels present in prediction or
        target (NaN when every label is empty in both).

    Examples
    --------
    >>> import torch
    >>> t = torch.zeros(1, 2, 4, 4); t[0, 0, :2] = 1
    >>> batch_dice(torch.where(t > 0, 10.0, -10.0), t)
    tensor([1.])
    """
    pred = torch.sigmoid(logits.detach().float()) > threshold
    scores = [np.nanmean(d) if not np.isnan(d).all() else math.nan
              for d in (dice_per_label(p, t) for p, t in zip(pred, target.detach() > 0.5))]
    return torch.tensor(scores, dtype=torch.float32)


def upsampled_dice(logits: torch.Tensor, target: torch.Tensor, factor: int = 2, threshold: float = 0.5) -> torch.Tensor:
    """:func:`batch_dice` on a grid ``factor`` times finer: the probability and the target, both
    partial-volume fractions on the network's grid, are resampled (linear interpolation, torch's
    ``interpolate`` with ``align_corners=False``) and thresholded there.

    Why: where the targets are fill fractions (how much of each coarse voxel the structure
    fills, e.g. :func:`bonelab.tasks.femur.occupancy`), :func:`batch_dice` thresholds them at
    the network's own voxels and so scores a binary mask, blind to where the surface runs inside
    a voxel; a network can gain sub-voxel accuracy and lose batch Dice.  Resampled finer, the
    fractions put the surface where it is, as the evaluation on the fine ground truth does.

    Parameters
    ----------
    logits, target : tensor (N, L, H, W) or (N, L, D, H, W)
        Raw network outputs and targets in 0-1 on the same grid.
    factor : int
        How many times finer along each axis (2 for 2 mm network voxels and 1 mm truth).

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([[[[1.0, 1.0, 0.4, 0.0]]]])  # the surface runs inside voxel 2
    >>> exact = torch.logit(t.clamp(1e-4, 1 - 1e-4))  # a network that learnt the fraction
    >>> binary = torch.where(t > 0.5, 10.0, -10.0)  # one that learnt a binary mask
    >>> float(batch_dice(exact, t)[0]), float(batch_dice(binary, t)[0])  # blind to the difference
    (1.0, 1.0)
    >>> round(float(upsampled_dice(exact, t)[0]), 4), round(float(upsampled_dice(binary, t)[0]), 4)
    (1.0, 0.8889)
    """
    if factor < 1:
        raise InvalidArgumentError(f"factor must be a positive integer; got {factor}.")
    mode = {4: "bilinear", 5: "trilinear"}.get(logits.ndim)
    if mode is None or logits.shape != target.shape:
        raise InvalidArgumentError(f"logits and target must share one shape (N, L, H, W) or (N, L, D, H, W); got "
                                   f"{tuple(logits.shape)} and {tuple(target.shape)}.")
    def fine(x):
        return torch.nn.functional.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)

    prob = torch.sigmoid(logits.detach().float())
    return batch_dice(torch.logit(fine(prob).clamp(1e-6, 1 - 1e-6)), fine(target.detach().float()),
                      threshold=threshold)


# --------------------------------------------------------------------------------------------
# Confusion-matrix scores (Long, Shelhamer & Darrell 2015, "Fully convolutional networks")
# --------------------------------------------------------------------------------------------
# MONAI's ConfusionMatrixMetric gives one-vs-rest TP/FP/TN/FN per class, not the n x n matrix the
# FCN definitions are written on, and its MeanIoU works on one-hot stacks; the four FCN scores are
# a few lines each from the matrix, so they are written here on it.


def confusion_matrix(pred, target, n_classes: int) -> np.ndarray:
    """Confusion matrix ``n[i, j]`` = number of pixels of true class ``i`` predicted as class ``j``.

    Parameters
    ----------
    pred, target : integer arrays or tensors of the same shape (e.g. (H, W) or (N, H, W))
        Class index maps with values in ``0 .. n_classes - 1`` (0 is usually background).
    n_classes : int

    Returns
    -------
    ndarray (n_classes, n_classes), int64; rows are the truth, columns the prediction.

    Examples
    --------
    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], n_classes=3)
    array([[1, 0, 0],
           [1, 1, 1],
           [0, 0, 0]])
    """
    p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred)
    t = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
    if p.shape != t.shape:
        raise InvalidArgumentError(f"pred {p.shape} and target {t.shape} must have the same shape.")
    if not (np.issubdtype(p.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)):
        raise InvalidValuesError(
            f"pred and target must be integer class maps, got {p.dtype} and {t.dtype}; "
            "take argmax over the class channel of the network output first."
        )
    for name, a in (("pred", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise InvalidValuesError(
                f"{name} holds class indices {a.min()}..{a.max()} outside 0..{n_classes - 1}; "
                "pass the right n_classes."
            )
    flat = t.ravel().astype(np.int64) * n_classes + p.ravel()
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _per_class(cm: np.ndarray):
    cm = np.asarray(cm, dtype=np.float64)
    diag = np.diag(cm)
    true_per_class = cm.sum(axis=1)  # t_i in the FCN paper
    union = true_per_class + cm.sum(axis=0) - diag
    return diag, true_per_class, union


def pixel_accuracy(cm: np.ndarray) -> float:
    """Pixel accuracy ``sum_i n_ii / sum_i t_i``: the fraction of pixels labelled correctly.

    >>> pixel_accuracy([[3, 1], [0, 4]])
    0.875
    """
    diag, true_per_class, _ = _per_class(cm)
    return float(diag.sum() / true_per_class.sum())


def mean_accuracy(cm: np.ndarray) -> float:
    """Mean accuracy ``(1/n_cl) sum_i n_ii / t_i`` over classes present in the target.

    >>> mean_accuracy([[3, 1], [0, 4]])   # (3/4 + 4/4) / 2
    0.875
    """
    diag, true_per_class, _ = _per_class(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(diag / true_per_class))


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU ``(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``.

    A class absent from both target and prediction is left out (NaN); a class absent from the
    target but predicted counts as IoU 0, as in the FCN reference code.

    >>> round(mean_iou([[3, 1], [0, 4]]), 4)   # (3/4 + 4/5) / 2
    0.775
    """
    diag, _, union = _per_class(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(diag / union))


def frequency_weighted_iou(cm: np.ndarray) -> float:
    """Frequency-weighted IoU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``.

    >>> frequency_weighted_iou([[3, 1], [0, 4]])   # (4 * 3/4 + 4 * 4/5) / 8
    0.775
    """
    diag, true_per_class, union = _per_class(cm)
    present = true_per_class > 0
    iou = diag[present] / union[present]
    return float((true_per_class[present] * iou).sum() / true_per_class.sum())


# --------------------------------------------------------------------------------------------
# Image quality
# --------------------------------------------------------------------------------------------


def _as_image_batch(array, name: str) -> torch.Tensor:
    """``array`` (H, W) or (N, C, H, W), numpy or torch, as a float64 CPU tensor (N, C, H, W)."""
    tensor = (array.detach().cpu() if isinstance(array, torch.Tensor)
              else torch.from_numpy(np.array(array, dtype=np.float64)))  # a copy: inputs may be read-only memmaps
    tensor = tensor.double()
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    if tensor.ndim != 4:
        raise InvalidArgumentError(
            f"{name} must be one image (H, W) or a batch (N, C, H, W); got shape {tuple(tensor.shape)}."
        )
    check_finite(tensor.numpy(), name, "replace them before measuring image quality")
    return tensor


def _window(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 3 or value % 2 == 0:
        raise InvalidArgumentError(f"{name} must be an odd number of pixels >= 3 (e.g. 11 or 7); got {value!r}.")
    return int(value)


def image_quality(prediction, target, *, data_range: float = 1.0, ssim_window: int = 11,
                  ms_ssim_window: int = 7) -> dict:
    """RMSE, PSNR, SSIM and MS-SSIM of each predicted image against its reference (chapter 4).

    Computed with MONAI 1.6's regression metrics (``monai.metrics``: ``RMSEMetric``,
    ``PSNRMetric``, ``SSIMMetric``, ``MultiScaleSSIMMetric``; torchmetrics, the first choice of
    the design notes, is not installed), with these settings:

    * RMSE: ``sqrt(mean((prediction - target)^2))`` over the pixels (and channels) of each image,
      in the images' units.
    * PSNR: ``10 log10(data_range^2 / MSE)`` dB (``inf`` for identical images).
    * SSIM (Wang et al. 2004): Gaussian window of ``ssim_window`` pixels (11) and sigma 1.5 px,
      ``K1 = 0.01``, ``K2 = 0.03``, so ``C1 = (K1 data_range)^2`` and ``C2 = (K2 data_range)^2``;
      population (not sample) covariances; the SSIM map is taken where the window fits inside
      the image ("valid", no padding) and averaged.
    * MS-SSIM (Wang, Simoncelli & Bovik 2003): 5 scales (2 x 2 average pooling between them),
      scale weights :data:`bonelab.losses.MS_SSIM_WEIGHTS` = (0.0448, 0.2856, 0.3001, 0.2363,
      0.1333), Gaussian window of ``ms_ssim_window`` pixels (7) and sigma 1.5 px, the same K1, K2
      and data_range; contrast-structure terms at every scale, the luminance term at the coarsest
      only; negative terms are clipped to 0 (as MONAI and the reference code do).  MONAI needs
      each side to be at least ``16 * ms_ssim_window`` pixels
      (:func:`bonelab.losses.ms_ssim_min_side`): 112 px for the 7-px window, 176 px for 11 px.

    SSIM and MS-SSIM are computed in float32 (MONAI converts), RMSE and PSNR in float64.

    On the 0-255 scale of the paper (Xiang, Yu & Cheng), pass the images times 255 with
    ``data_range=255``: RMSE is then 255 times larger, while PSNR, SSIM and MS-SSIM stay the same
    (data_range scales the peak and the constants with the images; checked in
    tests/test_metrics.py to float32 round-off).

    Parameters
    ----------
    prediction, target : arrays or tensors (numpy or torch), (N, C, H, W) or one image (H, W)
        Same shape and intensity units; rows down.  Bone radiographs: (N, 1, H, W) in [0, 1].
    data_range : float
        The intensity range (max - min possible value): 1.0 for images in [0, 1], 255 on an 8-bit
        scale.  Sets PSNR's peak and SSIM's constants.
    ssim_window : odd int >= 3
        Side of SSIM's Gaussian window, pixels (the standard 11); each side of the images must be
        at least this long.
    ms_ssim_window : odd int >= 3
        Side of MS-SSIM's Gaussian window, pixels.  7 by default, so that 112 px images qualify
        (the standard 11 needs 176 px); say which one a table uses.

    Returns
    -------
    dict of float64 arrays of shape (N,), one value per image: ``rmse`` (image units), ``psnr``
    (dB), ``ssim`` and ``ms_ssim`` (1 for identical images).  ``pandas.DataFrame(result)`` is a
    table with one row per image; ``result["psnr"].mean()`` is the batch mean.

    Raises
    ------
    InvalidArgumentError
        Shapes that differ or are not (H, W) / (N, C, H, W); a data_range that is not positive; a
        window that is not odd and >= 3; images too small for a window (the message names the
        minimum side and the window, and the window that would fit).
    InvalidValuesError
        NaN or infinite pixels.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((128, 128), np.float32); ref[32:96, 32:96] = 1
    >>> q = image_quality(ref + 0.1, ref)
    >>> round(float(q["rmse"][0]), 4), round(float(q["psnr"][0]), 2), q["ssim"].shape
    (0.1, 20.0, (1,))
    >>> float(image_quality(ref, ref)["ms_ssim"][0])
    1.0
    """
    from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, RMSEMetric, SSIMMetric

    from bonelab.losses import MS_SSIM_WEIGHTS, ms_ssim_min_side

    p = _as_image_batch(prediction, "prediction")
    t = _as_image_batch(target, "target")
    if p.shape != t.shape:
        raise InvalidArgumentError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape; "
                                   "pass images of the same size (resize one first).")
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise InvalidArgumentError(f"data_range must be a positive number (1.0 for images in [0, 1], 255 for "
                                   f"8-bit images); got {data_range!r}.")
    ssim_window = _window(ssim_window, "ssim_window")
    ms_ssim_window = _window(ms_ssim_window, "ms_ssim_window")
    side = min(p.shape[-2:])
    if side < ssim_window:
        raise InvalidArgumentError(f"images of {tuple(p.shape[-2:])} px are smaller than the {ssim_window}-px SSIM "
                                   f"window; pass a smaller odd ssim_window (<= {side}) or larger images.")
    need = ms_ssim_min_side(ms_ssim_window)
    if side < need:
        fits = side // 16 - (1 - side // 16 % 2)  # the largest odd k with 16 * k <= side
        hint = f"pass ms_ssim_window={fits}" if fits >= 3 else "MS-SSIM needs images of at least 48 px"
        raise InvalidArgumentError(
            f"images of {tuple(p.shape[-2:])} px are too small for 5-scale MS-SSIM with a {ms_ssim_window}-px "
            f"window: MONAI needs a short side of at least {need} px (16 x the window); {hint}, or larger images.")
    settings = dict(spatial_dims=2, data_range=float(data_range), kernel_sigma=1.5, k1=0.01, k2=0.03)
    metrics = {
        "rmse": RMSEMetric(),
        "psnr": PSNRMetric(max_val=float(data_range)),
        "ssim": SSIMMetric(win_size=ssim_window, **settings),
        "ms_ssim": MultiScaleSSIMMetric(kernel_size=ms_ssim_window, weights=MS_SSIM_WEIGHTS, **settings),
    }
    return {name: metric(p, t).double().reshape(len(p)).numpy() for name, metric in metrics.items()}


# --------------------------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------------------------


def volume_agreement(pred_volumes, true_volumes) -> dict:
    """Agreement of predicted and true volumes (or any paired measurements, e.g. BMD).

    Parameters
    ----------
    pred_volumes, true_volumes : 1D sequences of the same length (>= 3), same units (e.g. mL)

    Returns
    -------
    dict of floats
        ``r2``: squared Pearson correlation, i.e. the R² of the least-squares line
        ``pred = slope * true + intercept``; ``slope``, ``intercept`` of that line (intercept in
        the volume units); ``mean_abs_diff``: mean of ``|pred - true|`` (volume units).
        R² alone hides a bias, so read it together with slope, intercept and the mean difference.

    Examples
    --------
    >>> volume_agreement([2, 4, 6], [1, 2, 3])
    {'r2': 1.0, 'slope': 2.0, 'intercept': 0.0, 'mean_abs_diff': 2.0}
    """
    from scipy.stats import linregress

    p = np.asarray(pred_volumes, dtype=np.float64)
    t = np.asarray(true_volumes, dtype=np.float64)
    if p.ndim != 1 or p.shape != t.shape or p.size < 3:
        raise InvalidArgumentError(
            f"pred_volumes and true_volumes must be 1D and of equal length >= 3; got {p.shape} and {t.shape}."
        )
    check_finite(p, "pred_volumes", "drop those cases first")
    check_finite(t, "true_volumes", "drop those cases first")
    if np.ptp(t) == 0:
        raise InvalidValuesError("all true volumes are equal: a regression line is undefined.")
    fit = linregress(t, p)
    return {
        "r2": float(fit.rvalue**2),
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "mean_abs_diff": float(np.abs(p - t).mean()),
    }


def hidden_fraction(masks) -> np.ndarray:
    """For each channel of (L, H, W) masks, the fraction of its pixels also covered by another
    channel (the part of a bone seen through, or hidden behind, another); NaN for empty ones.

    >>> m = np.zeros((2, 4, 4), bool); m[0, :2] = True; m[1, 1:] = True
    >>> hidden_fraction(m).round(3).tolist()
    [0.5, 0.333]
    """
    m = np.asarray(masks) > 0
    count = m.sum(axis=0)
    area = m.sum(axis=(1, 2)).astype(float)
    shared = (m & (count >= 2)[None]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, shared / area, np.nan)


def bootstrap_ci(values, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple:
    """Mean of ``values`` (one number per independent unit, e.g. per test subject) and its
    percentile-bootstrap confidence interval: ``(mean, low, high)`` (scipy.stats.bootstrap).
    NaN values are dropped; with fewer than two values the interval is (NaN, NaN).

    >>> m, lo, hi = bootstrap_ci([0.8, 0.85, 0.9, 0.95, 0.88])
    >>> round(m, 3), lo < m < hi
    (0.876, True)
    """
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if v.size < 2 or np.all(v == v[0]):
        return float(v.mean()), math.nan, math.nan
    res = bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two stacks of binary masks: ``a (P, H, W)``, ``b (T, H, W)`` -> ``(P, T)`` float64.

    Written here because neither torchvision (box IoU only) nor MONAI (per-channel IoU of one-hot
    stacks, not pairs) offers it; intersections are one matrix product.  Empty pairs score 0.

    >>> a = torch.zeros(1, 4, 4, dtype=torch.bool); a[0, :2] = True       # 8 pixels
    >>> b = torch.zeros(2, 4, 4, dtype=torch.bool); b[0, :1] = True; b[1] = True
    >>> mask_iou(a, b)
    tensor([[0.5000, 0.5000]], dtype=torch.float64)
    """
    a, b = a.flatten(1).double(), b.flatten(1).double()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def matched_iou(iou: torch.Tensor) -> float:
    """Symmetric best-match IoU from a ``(P predicted, T true)`` IoU matrix, in [0, 1].

    Each true instance scores the IoU of its best-matching prediction (missed objects score 0) and
    each prediction that of its best-matching true instance (false positives score 0); the result
    is the mean over all ``P + T`` instances, so both misses and spurious detections cost.  NaN
    when there are neither predictions nor true instances (skipped in the epoch mean).

    >>> matched_iou(torch.tensor([[1.0, 0.0]]))     # one of two objects found exactly
    0.6666666666666666
    """
    iou = torch.as_tensor(iou, dtype=torch.float64)
    p, t = iou.shape
    if p + t == 0:
        return math.nan
    if p == 0 or t == 0:
        return 0.0
    return float((iou.max(0).values.sum() + iou.max(1).values.sum()) / (p + t))
