"""Losses that MONAI does not provide in the form the chapters need (each class says why).

* :class:`DiceBCELoss` and :func:`segmentation_loss`: multi-label (overlapping) masks, chapter 3.
* :class:`MSSSIML1Loss` and :func:`image_loss`: image-to-image regression (bone-only radiographs), chapter 4.

A loss is called as ``loss(prediction, target)`` and returns a scalar tensor, or a dict of named
tensors whose ``"loss"`` is the total to backpropagate (the other entries are logged by
:func:`bonelab.train.train` as ``train_<name>`` / ``val_<name>`` columns).
"""

from __future__ import annotations

import torch

from bonelab.errors import InvalidArgumentError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-scale exponents of MS-SSIM (Wang, Simoncelli & Bovik 2003), MONAI's default."""


def ms_ssim_min_side(win_size: int = 11, n_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest image side (pixels) on which MONAI 1.6.1's ``compute_ms_ssim`` runs.

    MONAI requires ``side // 2 ** (n_scales - 1) > win_size - 1``: the window must still fit after
    the last of the ``n_scales - 1`` halvings.  Measured: 176 px is accepted and 175 px refused
    with the default 5 scales and 11-px window (MONAI's message says "larger than 160").

    >>> ms_ssim_min_side()
    176
    """
    return win_size * 2 ** (n_scales - 1)


class DiceBCELoss(torch.nn.Module):
    """Soft Dice + binary cross-entropy on per-channel sigmoid logits, for multi-label masks.

    ``forward(logits (N, L, H, W), target (N, L, H, W) in {0, 1})`` -> scalar
    ``lambda_dice * DiceLoss + lambda_bce * BCEWithLogits``.  Written here because MONAI 1.6's
    ``DiceCELoss(sigmoid=True)`` uses binary cross-entropy only for a single channel: with L > 1
    channels it applies *softmax* cross-entropy across channels, which cannot represent a pixel
    inside two overlapping bones (or inside none).  The Dice part is MONAI's ``DiceLoss``.

    >>> import torch
    >>> t = torch.zeros(1, 2, 4, 4); t[:, :, :2] = 1      # both labels on the same pixels
    >>> float(DiceBCELoss()(torch.where(t > 0, 9.0, -9.0), t)) < 1e-3
    True
    """

    def __init__(self, batch: bool = True, lambda_dice: float = 1.0, lambda_bce: float = 1.0):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, batch=batch)
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.lambda_dice, self.lambda_bce = lambda_dice, lambda_bce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lambda_dice * self.dice(logits, target) + self.lambda_bce * self.bce(logits, target)


def segmentation_loss(kind: str = "dice_ce", multi_label: bool = True, batch_dice: bool = True) -> torch.nn.Module:
    """The segmentation loss for ``loss(logits, label)``.

    Parameters
    ----------
    kind : "dice_ce" or "dice_focal"
        Dice + cross-entropy (multi-label: :class:`DiceBCELoss`, because MONAI's
        ``DiceCELoss(sigmoid=True)`` applies a softmax cross-entropy across channels; one class per
        pixel: ``monai.losses.DiceCELoss``) or Dice + focal (``monai.losses.DiceFocalLoss``, whose
        focal term is a per-channel sigmoid focal loss; for small structures on a large background).
    multi_label : bool
        True: sigmoid per channel, label ``(N, L, H, W)`` stacked binary masks (overlaps allowed).
        False: softmax over channels, label ``(N, 1, H, W)`` class indices (one class per pixel).
    batch_dice : bool
        Sum the Dice terms over the whole batch per label (MONAI's ``batch=True``) instead of per
        image: a label absent from one image (a bone outside the field of view) then does not cost
        that image a Dice loss near 1 whatever the network predicts.

    Examples
    --------
    >>> import torch
    >>> loss = segmentation_loss()
    >>> float(loss(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8))) > 0
    True
    """
    from monai.losses import DiceCELoss, DiceFocalLoss

    if kind not in ("dice_ce", "dice_focal"):
        raise InvalidArgumentError(f"kind must be 'dice_ce' or 'dice_focal', got {kind!r}.")
    if kind == "dice_focal":
        if multi_label:
            return DiceFocalLoss(sigmoid=True, batch=batch_dice)
        return DiceFocalLoss(softmax=True, to_onehot_y=True, batch=batch_dice)
    if multi_label:
        return DiceBCELoss(batch=batch_dice)
    return DiceCELoss(softmax=True, to_onehot_y=True, batch=batch_dice)


class MSSSIML1Loss(torch.nn.Module):
    """``alpha * (1 - MS-SSIM) + (1 - alpha) * L1`` for image-to-image regression (Gusarev et al. 2017).

    The loss of the bone-suppression literature (also DeBoNet): structure through MS-SSIM, absolute
    intensities through L1, and no pretrained weights (a perceptual loss needs downloaded
    VGG/AlexNet weights; none works offline).  MONAI 1.6.1 has ``SSIMLoss`` but no MS-SSIM loss and
    no mixed loss, so this combines MONAI's ``compute_ms_ssim`` / ``compute_ssim_and_cs`` with
    ``l1_loss``.

    **Small images.**  MS-SSIM with 5 scales and a ``win_size`` window needs every spatial side of
    at least :func:`ms_ssim_min_side` pixels (176 for the 11-px window: measured on MONAI 1.6.1,
    which refuses 175).  On smaller inputs this loss uses single-scale SSIM with the same window
    instead (``self.multiscale(shape)`` says which one applies); the term keeps the name
    ``"ms_ssim"``.  Inputs need a side of at least ``win_size`` pixels.

    While a prediction is uncorrelated with its target (an untrained network), MS-SSIM is 0 with a
    zero gradient (MONAI clips negative contrast terms, as the reference implementation does): the
    L1 term alone drives the first steps, one reason for ``alpha < 1``.

    Parameters
    ----------
    alpha : float in [0, 1]
        Weight of the (MS-)SSIM term (0.84 in Gusarev et al.; 0 gives L1 alone, the similarity
        still reported).
    data_range : float
        Value range of the images (1.0 for images scaled to [0, 1]); sets SSIM's stability constants.
    win_size : int
        Side of the Gaussian window (sigma 1.5 px), pixels.
    scales : "auto", "multi" or "single"
        MS-SSIM where the images are large enough ("auto"), always ("multi"), or single-scale SSIM.

    Notes
    -----
    ``forward(prediction, target)``: float tensors ``(N, C, H, W)`` or ``(N, C, D, H, W)`` of the same
    shape, in the units of ``data_range``.  Returns a dict of scalar tensors: ``"loss"`` (the total),
    ``"ms_ssim"`` (batch-mean similarity, 1 for identical images) and ``"l1"`` (mean absolute error).

    Examples
    --------
    >>> import torch
    >>> target = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> terms = MSSSIML1Loss()(target + 0.1, target)     # a constant offset of 0.1
    >>> round(float(terms["l1"]), 6), float(terms["ms_ssim"]) < 1
    (0.1, True)
    """

    def __init__(self, alpha: float = 0.84, data_range: float = 1.0, win_size: int = 11,
                 scales: str = "auto"):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or not data_range > 0 or win_size < 3 or win_size % 2 == 0:
            raise InvalidArgumentError(f"need 0 <= alpha <= 1, data_range > 0 and an odd win_size >= 3; got "
                                       f"alpha={alpha}, data_range={data_range}, win_size={win_size}.")
        if scales not in ("auto", "multi", "single"):
            raise InvalidArgumentError(f"scales must be 'auto', 'multi' or 'single'; got {scales!r}.")
        self.alpha, self.data_range, self.win_size, self.scales = alpha, data_range, win_size, scales

    def multiscale(self, shape) -> bool:
        """True when MS-SSIM applies to inputs of ``shape`` ``(N, C, *spatial)``, False for SSIM:
        ``scales="auto"`` by the image size, ``"single"`` never, ``"multi"`` always (images too
        small for it raise)."""
        fits = min(shape[2:]) >= ms_ssim_min_side(self.win_size)
        if self.scales == "multi" and not fits:
            raise InvalidArgumentError(
                f"MS-SSIM with a {self.win_size}-px window needs images of at least "
                f"{ms_ssim_min_side(self.win_size)} px on each side; got {tuple(shape[2:])}. Use larger "
                "images, a smaller win_size, or scales='single'.")
        return fits and self.scales != "single"

    def similarity(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample MS-SSIM (or SSIM on small inputs), shape ``(N,)``."""
        from monai.metrics.regression import compute_ms_ssim, compute_ssim_and_cs

        dims = prediction.ndim - 2
        if self.multiscale(prediction.shape):
            return compute_ms_ssim(prediction, target, spatial_dims=dims, data_range=self.data_range,
                                   kernel_size=self.win_size, weights=MS_SSIM_WEIGHTS).flatten()
        ssim_map, _ = compute_ssim_and_cs(prediction, target, spatial_dims=dims, data_range=self.data_range,
                                          kernel_size=(self.win_size,) * dims, kernel_sigma=(1.5,) * dims)
        return ssim_map.flatten(1).mean(1)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> dict:
        if prediction.shape != target.shape or prediction.ndim not in (4, 5):
            raise InvalidArgumentError(
                f"MSSSIML1Loss needs prediction and target of one shape (N, C, H, W) or (N, C, D, H, W); "
                f"got {tuple(prediction.shape)} and {tuple(target.shape)}.")
        if min(prediction.shape[2:]) < self.win_size:
            raise InvalidArgumentError(
                f"MSSSIML1Loss: images {tuple(prediction.shape[2:])} are smaller than the {self.win_size}-px "
                "SSIM window; use larger images or a smaller win_size.")
        ms_ssim = self.similarity(prediction.float(), target.float()).mean()
        l1 = torch.nn.functional.l1_loss(prediction.float(), target.float())
        return {"loss": self.alpha * (1 - ms_ssim) + (1 - self.alpha) * l1, "ms_ssim": ms_ssim, "l1": l1}


IMAGE_LOSSES = {"l1": (0.0, "single"), "l1+ssim": (0.84, "single"), "l1+ms-ssim": (0.84, "multi")}
"""The image-regression losses of chapter 4 by name: (alpha, scales) of :class:`MSSSIML1Loss`."""


def image_loss(kind: str = "l1+ms-ssim", *, win_size: int = 7, data_range: float = 1.0) -> MSSSIML1Loss:
    """An image-to-image regression loss by name: ``"l1"`` (L1 alone), ``"l1+ssim"`` (0.84 SSIM +
    0.16 L1) or ``"l1+ms-ssim"`` (0.84 MS-SSIM + 0.16 L1, Gusarev et al. 2017), with a
    ``win_size``-pixel Gaussian window (7 by default, so that MS-SSIM runs on images of
    :func:`ms_ssim_min_side` (7) = 112 pixels and more).

    >>> image_loss("l1+ssim").alpha, image_loss("l1+ms-ssim").scales
    (0.84, 'multi')
    """
    if kind not in IMAGE_LOSSES:
        raise InvalidArgumentError(f"image loss {kind!r} is unknown; use one of {sorted(IMAGE_LOSSES)}.")
    alpha, scales = IMAGE_LOSSES[kind]
    return MSSSIML1Loss(alpha=alpha, data_range=data_range, win_size=win_size, scales=scales)
