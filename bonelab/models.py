"""Network factories: the MONAI networks the chapters train, with the book's defaults.

Every network here maps an image batch to *logits* of the same spatial size:

* 2D: input ``(N, C_in, H, W)`` float -> output ``(N, C_out, H, W)`` logits.
* 3D: input ``(N, C_in, D, H, W)`` float -> output ``(N, C_out, D, H, W)`` logits.

For multi-label segmentation (overlapping bones) apply ``torch.sigmoid`` per channel; for
one-class-per-pixel segmentation apply ``softmax`` over the channel axis.  The matching losses are
in :func:`bonelab.train.segmentation_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bonelab.errors import InvalidArgumentError


def unet2d(
    in_channels: int = 1,
    out_channels: int = 10,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    num_res_units: int = 2,
    dropout: float = 0.0,
    norm: str = "instance",
) -> torch.nn.Module:
    """A 2D residual U-Net (``monai.networks.nets.UNet``), stride 2 between levels.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for a radiograph).
    out_channels : int
        Output channels: one per label (multi-label sigmoid) or per class (softmax).
    channels : sequence of int
        Feature maps per level, finest first; ``len(channels) - 1`` down-samplings, so H and W must
        be divisible by ``2 ** (len(channels) - 1)`` (16 for the default).
    num_res_units : int
        Residual units per level (0 gives plain convolutions).
    dropout : float
        Dropout probability inside every block.
    norm : str
        Normalisation layer ("instance" or "batch").

    Returns
    -------
    torch.nn.Module: ``(N, in_channels, H, W)`` -> logits ``(N, out_channels, H, W)``.

    Examples
    --------
    >>> import torch
    >>> net = unet2d(out_channels=3, channels=(8, 16, 32), num_res_units=1)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """
    from monai.networks.nets import UNet

    if len(channels) < 2:
        raise InvalidArgumentError(f"channels needs at least two levels, got {tuple(channels)}.")
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm,
    )


def vnet3d(in_channels: int = 1, out_channels: int = 1, dropout: float = 0.5) -> torch.nn.Module:
    """The V-Net of Milletari et al. 2016 (``monai.networks.nets.VNet``), 3D.

    MONAI's VNet has fixed widths (16, 32, 64, 128, 256 feature maps, 5x5x5 residual stages): about
    45.6 million parameters and roughly 18 s per training step at 64^3, batch 2, on a 2-core CPU.
    Its constructor offers no width argument, so a compact variant needs its own module.

    Parameters
    ----------
    in_channels : int
        Image channels; must divide 16 (1, 2, 4, 8 or 16), a constraint of MONAI's input block.
    out_channels : int
        Output channels (labels or classes).
    dropout : float
        Dropout probability of the deeper down/up stages (MONAI's default 0.5).

    Returns
    -------
    torch.nn.Module: ``(N, in_channels, D, H, W)`` -> logits ``(N, out_channels, D, H, W)``, with
    D, H and W divisible by 16.

    Examples
    --------
    >>> count_parameters(vnet3d()) > 45_000_000
    True
    """
    from monai.networks.nets import VNet

    if in_channels < 1 or 16 % in_channels:
        raise InvalidArgumentError(f"in_channels must divide 16 for MONAI's VNet, got {in_channels}.")
    return VNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob_down=dropout,
        dropout_prob_up=(dropout, dropout),
    )


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (elements) of ``model``; only those with ``requires_grad`` by default.

    >>> count_parameters(torch.nn.Conv2d(1, 4, kernel_size=3))   # 4*1*3*3 weights + 4 biases
    40
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
