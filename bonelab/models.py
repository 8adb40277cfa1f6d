"""Network factories: the MONAI networks the chapters train, with the book's defaults.

Every network here maps an image batch to *logits* of the same spatial size:

* 2D: input ``(N, C_in, H, W)`` float -> output ``(N, C_out, H, W)`` logits.
* 3D: input ``(N, C_in, D, H, W)`` float -> output ``(N, C_out, D, H, W)`` logits.

For multi-label segmentation (overlapping bones) apply ``torch.sigmoid`` per channel; for
one-class-per-pixel segmentation apply ``softmax`` over the channel axis.  The matching losses are
in :func:`bonelab.losses.segmentation_loss`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

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


class _ResidualStage(torch.nn.Module):
    """``n`` convolutions (kernel ``k``, 'same' padding), each with norm and PReLU, whose output is
    added to the stage's input: the residual stage of Milletari et al. 2016 (and of MONAI's VNet)."""

    def __init__(self, channels: int, n: int, k: int, norm: str, dropout: float):
        super().__init__()
        layers = [torch.nn.Dropout3d(dropout)] if dropout else []
        for _ in range(n):
            layers += [torch.nn.Conv3d(channels, channels, k, padding=k // 2), _norm3d(norm, channels),
                       torch.nn.PReLU(channels)]
        self.body = torch.nn.Sequential(*layers)
        self.act = torch.nn.PReLU(channels)

    def forward(self, x):
        return self.act(self.body(x) + x)


def _norm3d(norm: str, channels: int) -> torch.nn.Module:
    if norm == "batch":
        return torch.nn.BatchNorm3d(channels)
    if norm == "instance":
        return torch.nn.InstanceNorm3d(channels, affine=True)
    if norm == "none":
        return torch.nn.Identity()
    raise InvalidArgumentError(f"norm must be 'batch', 'instance' or 'none'; got {norm!r}.")


class VNet3D(torch.nn.Module):
    """A V-Net (Milletari, Navab and Ahmadi 2016, "V-Net: fully convolutional neural networks for
    volumetric medical image segmentation") of any width and depth; build it with :func:`vnet3d`.

    Level ``i`` works at ``widths[i]`` feature maps with a residual stage of ``convs[i]``
    convolutions on the way down, and at ``2 * widths[i]`` maps with another ``convs[i]`` on the
    way up; a strided 2x2x2 convolution goes down a level, a transposed 2x2x2 convolution comes
    back up, and the way up concatenates the skip of the same level before its residual stage.  ``(N, C_in, D, H, W)`` -> logits ``(N, C_out, D, H, W)``.
    """

    def __init__(self, in_channels, out_channels, widths, convs, kernel_size, norm, dropout):
        super().__init__()
        w, k = list(widths), kernel_size
        # Input stage: the paper adds the input, repeated over the first level's maps, to its output.
        self.stem = torch.nn.Sequential(torch.nn.Conv3d(in_channels, w[0], k, padding=k // 2), _norm3d(norm, w[0]))
        self.stem_act = torch.nn.PReLU(w[0])
        self.down = torch.nn.ModuleList()
        for i in range(1, len(w)):
            deep = dropout if i >= len(w) - 2 else 0.0  # dropout on the deepest stages, as MONAI's VNet
            self.down.append(torch.nn.Sequential(
                torch.nn.Conv3d(w[i - 1], w[i], 2, stride=2), _norm3d(norm, w[i]), torch.nn.PReLU(w[i]),
                _ResidualStage(w[i], convs[i], k, norm, deep)))
        # The way up works at twice the maps of the way down (as in the paper): coming up from level
        # i, a transposed convolution gives w[i-1] maps, the skip of level i-1 adds w[i-1] more.
        self.up_conv, self.up_stage = torch.nn.ModuleList(), torch.nn.ModuleList()
        below = w[-1]
        for i in range(len(w) - 1, 0, -1):
            self.up_conv.append(torch.nn.Sequential(
                torch.nn.ConvTranspose3d(below, w[i - 1], 2, stride=2), _norm3d(norm, w[i - 1]),
                torch.nn.PReLU(w[i - 1])))
            self.up_stage.append(_ResidualStage(2 * w[i - 1], convs[i - 1], k, norm,
                                                dropout if i >= len(w) - 2 else 0.0))
            below = 2 * w[i - 1]
        self.head = torch.nn.Conv3d(below, out_channels, 1)
        self.in_channels, self.repeat = in_channels, w[0]

    def forward(self, x):
        reps = -(-self.repeat // self.in_channels)
        skip = self.stem_act(self.stem(x) + x.repeat(1, reps, 1, 1, 1)[:, :self.repeat])
        skips = [skip]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for up, stage in zip(self.up_conv, self.up_stage):
            y = stage(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)


def vnet3d(in_channels: int = 1, out_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128, 256),
           convs: Sequence[int] = (1, 2, 3, 3, 3), kernel_size: int = 5, norm: str = "batch",
           dropout: float = 0.0) -> torch.nn.Module:
    """A 3D V-Net (Milletari et al. 2016) of configurable width and depth.

    The defaults are the paper's network: five levels of 16-256 feature maps, residual stages of 1,
    2, 3, 3 and 3 convolutions of 5x5x5 on the way down and 3, 3, 2 and 1 on the way up, PReLU,
    strided convolutions down and transposed ones up: 65.2 million parameters.  MONAI's
    ``monai.networks.nets.VNet`` has fewer convolutions per stage (45.6 million parameters),
    fixed widths, and needs about 18 s per training step at 64^3, batch 2, on a 2-core CPU.  What this version adds
    to the paper: a normalisation layer after each convolution (batch norm by default, as MONAI's
    VNet; the 2016 paper had none), and ``widths``/``convs``/``kernel_size`` so that a V-Net fits a
    laptop: chapter 6 trains ``widths=(8, 16, 32, 64)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels; output channels (logits: one per label for sigmoid, per class for softmax).
    widths : sequence of int
        Feature maps per level, finest first; ``len(widths) - 1`` halvings, so D, H and W must be
        divisible by ``2 ** (len(widths) - 1)``; each width even and at least 2.
    convs : sequence of int
        Convolutions in each level's residual stages, down and up (same length as ``widths``; the
        paper's 1, 2, 3, 3, 3 on the way down and 3, 3, 2, 1 on the way up).
    kernel_size : int
        Odd convolution size (5 in the paper).
    norm : "batch", "instance" or "none"
    dropout : float
        Dropout of the two deepest stages (0 by default; MONAI's VNet uses 0.5).

    Returns
    -------
    VNet3D: ``(N, in_channels, D, H, W)`` -> logits ``(N, out_channels, D, H, W)``.

    Examples
    --------
    >>> net = vnet3d(out_channels=2, widths=(4, 8, 16), convs=(1, 1, 2), kernel_size=3)
    >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
    torch.Size([1, 2, 16, 16, 16])
    >>> round(count_parameters(vnet3d()) / 1e6, 1)   # the paper's network
    65.2
    """
    widths, convs = tuple(int(w) for w in widths), tuple(int(c) for c in convs)
    if len(widths) < 2 or len(convs) != len(widths):
        raise InvalidArgumentError(f"widths needs at least two levels and convs one count per level; got "
                                   f"widths={widths}, convs={convs}.")
    if min(widths) < 2 or any(w % 2 for w in widths) or min(convs) < 1:
        raise InvalidArgumentError(f"every width must be even and >= 2 and every conv count >= 1; got "
                                   f"widths={widths}, convs={convs}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InvalidArgumentError(f"kernel_size must be odd and positive; got {kernel_size}.")
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgumentError(f"dropout must lie in [0, 1); got {dropout}.")
    return VNet3D(in_channels, out_channels, widths, convs, kernel_size, norm, dropout)


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, shape) -> torch.Tensor:
    """Paste Mask R-CNN's box-frame masks ``masks`` (P, 1, M, M) into images of ``shape`` (H, W)
    at the exact, sub-pixel position of ``boxes`` (P, 4) ``(x1, y1, x2, y2)`` pixels: (P, 1, H, W).

    Written here because torchvision's ``paste_masks_in_image`` rounds every box to whole pixels
    and stretches it by one more (Detectron's inclusive-box convention), which moves outlines by
    up to a pixel.  Here
    each pixel ``k`` is sampled (bilinear) where training put it: torchvision makes the mask
    targets with ``roi_align(..., aligned=False)``, which holds pixel ``k`` at coordinate ``k``, so
    bin ``i`` of a box ``[x1, x2)`` is centred on ``x1 + (i + 1/2) (x2 - x1) / M``.  On chapter 5's
    test films (counted Mask R-CNN, 30 epochs) this paste scored mean IoU 0.837 where
    torchvision's scored 0.819 (one model, measured when this was written).

    >>> m = torch.zeros(1, 1, 4, 4); m[..., 1:3, 1:3] = 1      # the box's two middle bins of four
    >>> paste_masks(m, torch.tensor([[2.0, 2.0, 10.0, 10.0]]), (12, 12))[0, 0, :, 6].round(decimals=3).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0]

    (bins 2 px wide from x = 2: the middle two are centred on pixels 5 and 7.)
    """
    import torch.nn.functional as F

    n, _, m, _ = masks.shape
    h, w = int(shape[0]), int(shape[1])
    if n == 0:
        return masks.new_zeros((0, 1, h, w))
    x1, y1, x2, y2 = boxes.to(masks.dtype).unbind(1)

    def bins(n_pixels, start, end):  # (P, n_pixels): each pixel's position in bins, bin centres at 0 ... M-1
        pixels = torch.arange(n_pixels, dtype=masks.dtype)[None]
        return (pixels - start[:, None]) / ((end - start) / m).clamp(min=1e-3)[:, None] - 0.5

    u, v = bins(w, x1, x2), bins(h, y1, y2)
    grid = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1) * (2 / (m - 1)) - 1
    return F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def maskrcnn2d(num_classes: int, size: int, widths=(16, 32, 64, 128), fpn_channels: int = 64,
               anchor_sizes=(16, 32, 64, 128), detections_per_image: int = 20,
               sampling_ratio: int = 2, train_sampling_ratio: int = 1) -> torch.nn.Module:
    """A light Mask R-CNN for grey radiographs of ``size`` x ``size`` pixels, built from
    torchvision's parts and meant to be trained from scratch on a CPU.

    torchvision has Mask R-CNN builders only for ResNet-50 (44 M parameters) and none for a light
    backbone, so this one is assembled: a four-stage CNN (``widths`` channels at strides 2, 4, 8
    and 16, ``Conv2dNormActivation`` blocks with trainable ``BatchNorm2d``), torchvision's
    ``BackboneWithFPN`` over strides 4, 8, 16 plus its max-pool level (stride 32), and small heads
    (``fpn_channels`` features, a 256-wide box head, a 4 x 64 mask head), and samples fewer
    proposals and RoIs per image than torchvision's defaults (150 proposals, 64 RoIs, against
    2000 and 512, sized for COCO's scores of objects per image): a lateral spine film holds
    seven, and the smaller samples make a training step 1.5 times faster.  Its RoI poolers sample
    ``train_sampling_ratio`` points per bin and axis while training and ``sampling_ratio`` in
    eval mode: RoIAlign's backward pass is a third of a CPU training step, one point makes a step
    1.15 to 1.25 times faster, and two points at inference scored better masks on chapter 5's
    test films (mean IoU 0.837 against 0.818, one model trained with one point).  Masks are
    pasted into the image by :func:`paste_masks`, not by torchvision's whole-pixel paste.  It
    avoids the pitfalls of torchvision's detection models without pretrained weights:

    * the backbone builders default to ``FrozenBatchNorm2d``, whose statistics would stay random:
      here every norm layer is a trainable ``BatchNorm2d``;
    * the anchor generator needs one tuple of sizes per feature map: ``anchor_sizes`` (pixels)
      has one size per map (4 maps: ``"0"``, ``"1"``, ``"2"``, ``"pool"``);
    * the RoI poolers' ``featmap_names`` must name maps the FPN returns (unknown names are dropped
      silently): they pool ``"0"``, ``"1"`` and ``"2"``;
    * ``min_size``/``max_size`` (800/1333 by default) would resize every image: both are ``size``;
      the ImageNet mean/std normalisation would be applied to radiographs in [0, 1]: mean 0, std 1.

    ``num_classes`` counts the background, as in torchvision (6 levels + background: 7).  In
    train mode ``model(images, targets)`` returns the loss dict; in eval mode ``model(images)``
    returns ``boxes``, ``labels``, ``scores`` and ``masks`` (P, 1, H, W) per image (torchvision's
    convention; :class:`bonelab.steps.DetectionTask` trains it).

    >>> net = maskrcnn2d(num_classes=3, size=64).eval()
    >>> out = net([torch.zeros(1, 64, 64)])[0]
    >>> sorted(out), count_parameters(net) < 2_000_000
    (['boxes', 'labels', 'masks', 'scores'], True)
    """
    from collections import OrderedDict

    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import Conv2dNormActivation

    widths = [int(w) for w in widths]
    if len(widths) != 4 or min(widths) < 1 or len(anchor_sizes) != 4:
        raise InvalidArgumentError(f"maskrcnn2d needs 4 widths and 4 anchor sizes (one per feature map); "
                                   f"got widths={widths}, anchor_sizes={anchor_sizes}.")
    if num_classes < 2 or size < 32:
        raise InvalidArgumentError(f"num_classes counts the background (>= 2) and size must be >= 32 px; "
                                   f"got {num_classes}, {size}.")

    def stage(cin, cout):  # halves the resolution; BatchNorm2d is Conv2dNormActivation's (trainable) default
        return torch.nn.Sequential(Conv2dNormActivation(cin, cout, 3, 2), Conv2dNormActivation(cout, cout, 3))

    body = torch.nn.Sequential(OrderedDict(stem=stage(1, widths[0]), s1=stage(widths[0], widths[1]),
                                           s2=stage(widths[1], widths[2]), s3=stage(widths[2], widths[3])))
    backbone = BackboneWithFPN(body, {"s1": "0", "s2": "1", "s3": "2"}, widths[1:], fpn_channels)
    maps = ["0", "1", "2"]
    f = fpn_channels
    roi_align, transform = _detection_parts()
    net = MaskRCNN(
        backbone, num_classes=None, min_size=size, max_size=size, image_mean=[0.0], image_std=[1.0],
        rpn_anchor_generator=AnchorGenerator(tuple((int(a),) for a in anchor_sizes), ((0.5, 1.0, 2.0),) * 4),
        box_roi_pool=roi_align(maps, 7, train_sampling_ratio, sampling_ratio),
        mask_roi_pool=roi_align(maps, 14, train_sampling_ratio, sampling_ratio),
        box_head=TwoMLPHead(f * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes),
        mask_head=MaskRCNNHeads(f, (64, 64, 64, 64), 1), mask_predictor=MaskRCNNPredictor(64, 64, num_classes),
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=64,
        box_detections_per_img=detections_per_image)
    net.transform = transform(size, size, [0.0], [1.0])  # same settings, exact mask paste
    return net


@functools.cache
def _detection_parts() -> tuple:
    """Two subclasses of torchvision parts for :func:`maskrcnn2d`, made once, when first needed
    (so that importing this module does not import torchvision's detection package)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
    from torchvision.ops import MultiScaleRoIAlign

    class RoIAlignTrainEval(MultiScaleRoIAlign):
        """torchvision's MultiScaleRoIAlign with one sampling ratio in train mode, another in eval."""

        def __init__(self, featmap_names, output_size, train_sampling_ratio: int, sampling_ratio: int):
            super().__init__(featmap_names, output_size, train_sampling_ratio)
            self.ratios = {True: int(train_sampling_ratio), False: int(sampling_ratio)}

        def train(self, mode: bool = True):
            self.sampling_ratio = self.ratios[bool(mode)]
            return super().train(mode)

    class ExactPasteTransform(GeneralizedRCNNTransform):
        """torchvision's detection transform, with masks pasted by :func:`paste_masks`."""

        def postprocess(self, result, image_shapes, original_image_sizes):
            if self.training:
                return result
            for pred, shape, original in zip(result, image_shapes, original_image_sizes):
                pred["boxes"] = resize_boxes(pred["boxes"], shape, original)
                if "masks" in pred:
                    pred["masks"] = paste_masks(pred["masks"], pred["boxes"], original)
            return result

    return RoIAlignTrainEval, ExactPasteTransform


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (elements) of ``model``; only those with ``requires_grad`` by default.

    >>> count_parameters(torch.nn.Conv2d(1, 4, kernel_size=3))   # 4*1*3*3 weights + 4 biases
    40
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# Model specs: what a run folder records so that the network can be rebuilt
# --------------------------------------------------------------------------------------------
SPEC_FILE = "model.json"
SPEC_FORMAT = "bonelab-model-spec-1"

ARCHITECTURES: dict = {"unet2d": unet2d, "vnet3d": vnet3d, "maskrcnn2d": maskrcnn2d}
"""Network factories by name: a :class:`ModelSpec` names one and holds its keyword arguments.
A chapter that adds an architecture registers it with :func:`register_architecture`."""


def register_architecture(name: str):
    """Decorator: make a network factory buildable from a :class:`ModelSpec` under ``name``.

    >>> @register_architecture("tiny_conv")
    ... def tiny_conv(in_channels=1, out_channels=1):
    ...     return torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
    >>> ModelSpec("tiny_conv", {"out_channels": 2}).build().out_channels
    2
    """
    def wrap(factory):
        ARCHITECTURES[name] = factory
        return factory

    return wrap


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a trained network and feed it correctly.

    Attributes
    ----------
    architecture : a name in :data:`ARCHITECTURES` (e.g. ``"unet2d"``)
    settings : keyword arguments of that factory (e.g. ``{"out_channels": 10, "channels": [16, 32]}``)
    task : the :mod:`bonelab.tasks` name that trained it (e.g. ``"wrist"``), ``""`` when none
    label_names : names of the output channels (labels or classes), in channel order
    input_size : the input size the network was trained at, pixels ``(H, W)`` or ``(D, H, W)``
    input_spacing_mm : pixel (or voxel) size of the training inputs in mm, same axis order as
        ``input_size``; for radiographs the spacing at the isocentre
    extra : anything else a task needs to apply the model (JSON types only)

    >>> spec = ModelSpec("unet2d", {"out_channels": 2, "channels": [4, 8]}, label_names=("a", "b"))
    >>> ModelSpec.from_dict(spec.to_dict()) == spec
    True
    """

    architecture: str
    settings: dict = field(default_factory=dict)
    task: str = ""
    label_names: tuple = ()
    input_size: tuple | None = None
    input_spacing_mm: tuple | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # Normalise sequences to tuples so that a spec read back from JSON compares equal.
        object.__setattr__(self, "label_names", tuple(self.label_names))
        for name in ("input_size", "input_spacing_mm"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    def build(self) -> torch.nn.Module:
        """A freshly initialised network of this spec."""
        if self.architecture not in ARCHITECTURES:
            raise InvalidArgumentError(f"architecture {self.architecture!r} is unknown; known: "
                                       f"{sorted(ARCHITECTURES)} (import the module that registers it).")
        return ARCHITECTURES[self.architecture](**self.settings)

    def to_dict(self) -> dict:
        """JSON-ready dict (with a ``format`` key checked by :meth:`from_dict`)."""
        d = asdict(self)
        for name in ("label_names", "input_size", "input_spacing_mm"):
            d[name] = None if d[name] is None else list(d[name])
        return {"format": SPEC_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict, source: str = "model spec") -> ModelSpec:
        """Inverse of :meth:`to_dict`; raises :class:`~bonelab.errors.InvalidArgumentError` for
        another format or missing fields."""
        if not isinstance(d, dict) or d.get("format") != SPEC_FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise InvalidArgumentError(f"{source} has format {found!r}, expected {SPEC_FORMAT!r}; it was "
                                       "written by another bonelab version: train the model again.")
        names = {f.name for f in fields(cls)}
        if "architecture" not in d:
            raise InvalidArgumentError(f"{source} names no architecture; it is not a bonelab model spec.")
        return cls(**{k: v for k, v in d.items() if k in names})


def save_spec(run, spec: ModelSpec) -> Path:
    """Write ``spec`` to ``run/model.json`` atomically; returns the path."""
    from bonelab.files import write_json

    return write_json(Path(run) / SPEC_FILE, spec.to_dict())


def read_spec(run) -> ModelSpec:
    """The :class:`ModelSpec` of run folder ``run`` (its ``model.json``).

    Raises :class:`~bonelab.errors.MissingFileError` when the folder has no spec, and
    :class:`~bonelab.errors.InvalidArgumentError` when the file is not a spec of this version
    (:class:`~bonelab.errors.DataError` when it is not JSON).
    """
    from bonelab.files import read_json

    path = Path(run) / SPEC_FILE
    d = read_json(path, what="bonelab run folder", make="train one with bonelab.train or `bonelab train`")
    return ModelSpec.from_dict(d, source=str(path))


def load_model(run, checkpoint: str = "best.pt", device=None) -> torch.nn.Module:
    """Rebuild the network of run folder ``run`` from its spec and load ``checkpoint`` into it
    (read with ``torch.load(weights_only=True)``); in eval mode on ``device`` (default
    :func:`bonelab.config.device`).  Read the spec itself with :func:`read_spec`.

    >>> # net = load_model("runs/wrist"); spec = read_spec("runs/wrist")
    """
    from bonelab.train import load_weights

    return load_weights(read_spec(run).build(), Path(run) / checkpoint, device=device)
