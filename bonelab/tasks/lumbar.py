"""The lumbar task of chapter 5: L1-L5 and the sacrum in lateral radiographs, segmented two ways.

simulate (protocol ``lumbar``, target ``instances``: one mask per structure, overlaps kept) ->
:func:`train` (``model="semantic"`` or ``"instance"``) -> :func:`predict_levels` -> :func:`score`
-> apply (:func:`bonelab.detect_vertebrae`, :func:`bonelab.segment_xray`):

* **semantic**: a MONAI U-Net (:func:`bonelab.models.unet2d`) with a softmax over background,
  L1-L5 and sacrum (:data:`CLASS_NAMES`), trained with Dice + cross-entropy on the class map of
  :func:`level_map`;
* **instance**: a light torchvision Mask R-CNN (:func:`bonelab.models.maskrcnn2d`) trained from
  scratch, whose classes are either the six levels (``labelling="level"``) or "vertebra" and
  "sacrum" (``labelling="vertebra"``), the levels then counted up the spine from the sacrum
  (:func:`order_levels`).

Both end as six predicted level masks per image (:func:`predict_levels`), scored by one rule
(:func:`score`, :func:`fcn_table`): the confusion matrix of the class maps gives the FCN metrics of
Long et al. 2015 (pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, background
included), and a level is *recognised* when its predicted mask overlaps the true one with IoU >=
0.5.  The class map of the instance model: every pixel takes the level of the highest-scoring
instance whose mask covers it.

Images are (N, 1, H, W) float32 in [0, 1], bone bright, rows from the top of the hung film
(cranial); level masks (N, 6, H, W) bool in the order of :data:`LEVELS`.

>>> # simulate.simulate("data/lumbar", "lumbar", subjects=60, target="instances", views=("lateral",))
>>> # unet, _ = train("data/lumbar", "runs/lumbar-unet", model="semantic", epochs=30)
>>> # rcnn, _ = train("data/lumbar", "runs/lumbar-rcnn", model="instance", epochs=30)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bonelab.errors import InvalidArgumentError
from bonelab.models import load_model as load_model  # the task's trained network: load_model(run)

NAME = "lumbar"
DESCRIPTION = "lumbar spine: L1-L5 and sacrum, semantic U-Net or instance Mask R-CNN"
PROTOCOL = "lumbar"
TARGETS = ("instances",)
LEVELS = ("L1", "L2", "L3", "L4", "L5", "sacrum")
CLASS_NAMES = ("background",) + LEVELS
LABELLINGS = ("level", "vertebra")
MODELS = ("semantic", "instance")
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
DEFAULT_WIDTHS = (16, 32, 64, 128)
RECOGNISED_IOU = 0.5


# --------------------------------------------------------------------------------------------
# Targets: the stored per-structure masks -> level masks, class maps, detection targets
# --------------------------------------------------------------------------------------------
def _channel(info: dict, name: str) -> int | None:
    names = list(info["label_names"])
    return names.index(name) if name in names else None


def level_channels(info: dict) -> list:
    """Indices of :data:`LEVELS` among the stored structures of data set ``info``; raises when a
    level is missing (a data set of another protocol)."""
    found = [_channel(info, name) for name in LEVELS]
    if None in found:
        raise InvalidArgumentError(f"the data set's structures {info['label_names']} lack "
                                   f"{[n for n, c in zip(LEVELS, found) if c is None]}; simulate the 'lumbar' protocol.")
    return found


def level_map(levels) -> np.ndarray:
    """The class map (H, W) uint8 of level masks ``levels`` (6, H, W) (0 background, 1-5 L1-L5,
    6 sacrum).  Masks are painted from L1 down, so where two neighbours overlap in projection (an
    endplate seen obliquely, the facet joints) the lower level wins.

    >>> m = np.zeros((6, 1, 4), bool); m[0, 0, :2] = True; m[1, 0, 1:3] = True
    >>> level_map(m).tolist()
    [[1, 2, 2, 0]]
    """
    m = np.asarray(levels, bool)
    out = np.zeros(m.shape[1:], np.uint8)
    for k, mask in enumerate(m, start=1):
        out[mask] = k
    return out


def instance_target(levels, labelling: str = "level") -> dict:
    """A torchvision detection target from level masks ``levels`` (6, H, W): the levels present,
    labelled 1-6 (``"level"``) or 1 vertebra / 2 sacrum (``"vertebra"``); boxes as
    :func:`bonelab.simulate.targets.instances_from_masks` makes them.

    >>> m = np.zeros((6, 8, 8), np.uint8); m[4, 2:4, 2:6] = 1; m[5, 5:8, 1:7] = 1
    >>> instance_target(m, "vertebra")["labels"].tolist(), instance_target(m)["labels"].tolist()
    ([1, 2], [5, 6])
    """
    from bonelab.simulate.targets import instances_from_masks

    _check_labelling(labelling)
    ids = list(range(1, 7)) if labelling == "level" else [1, 1, 1, 1, 1, 2]
    return instances_from_masks(levels, ids)


def _check_labelling(labelling: str) -> None:
    if labelling not in LABELLINGS:
        raise InvalidArgumentError(f"labelling must be one of {LABELLINGS}; got {labelling!r}.")


class LevelSplit:
    """One split of a lumbar ``instances`` data set with the level targets of both model families.

    ``levels`` (N, 6, H, W) bool, ``maps`` (N, H, W) uint8 (:func:`level_map`), ``metal``
    (N, H, W) bool (screws and rods), ``implants`` (N,) bool (the view shows metal), ``images``
    (N, 1, H, W).  With ``kind="semantic"`` a sample is
    ``{"image", "label": (1, H, W) float32 class map}`` (MONAI / :class:`bonelab.steps.SupervisedTask`);
    with ``kind="instance"`` it is ``(image, detection target)`` (:func:`instance_target`,
    :class:`bonelab.steps.DetectionTask`).  ``transform`` (e.g. :func:`augmentation`) maps
    ``{"image", "levels": (6, H, W) float}`` of each sample before its targets are made from it.
    """

    def __init__(self, data, split: str, kind: str = "semantic", labelling: str = "level", transform=None):
        from bonelab import simulate
        from bonelab.tasks import check_dataset, task

        if kind not in MODELS:
            raise InvalidArgumentError(f"kind must be one of {MODELS}; got {kind!r}.")
        _check_labelling(labelling)
        self.info = check_dataset(data, task(NAME))
        stored = simulate.load_split(data, split)
        self.images = np.asarray(stored.images, np.float32)
        targets = np.asarray(stored.targets)
        self.levels = targets[:, level_channels(self.info)] > 0
        implant = _channel(self.info, "implant")
        self.metal = targets[:, implant] > 0 if implant is not None else np.zeros_like(self.levels[:, 0])
        self.implants = self.metal.reshape(len(targets), -1).any(axis=1)
        self.maps = np.stack([level_map(m) for m in self.levels]) if len(targets) else np.zeros((0,) + self.images.shape[2:], np.uint8)
        self.kind, self.labelling, self.transform = kind, labelling, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, levels = torch.from_numpy(self.images[i].copy()), self.levels[i]
        if self.transform is not None:
            moved = self.transform({"image": image, "levels": torch.from_numpy(levels.astype(np.float32))})
            image = torch.from_numpy(np.asarray(moved["image"], np.float32))  # a plain tensor, not MONAI's MetaTensor
            levels = np.asarray(moved["levels"]) > 0.5
        if self.kind == "semantic":
            cmap = self.maps[i] if self.transform is None else level_map(levels)
            return {"image": image, "label": torch.from_numpy(cmap[None].astype(np.float32))}
        return image, instance_target(levels, self.labelling)


def conditions(data, split: str, levels: LevelSplit | None = None):
    """Per sample of ``split``: ``subject``, ``view``, ``implants`` (the view shows metal) and
    ``degeneration`` (the subject was generated with degeneration: narrowed discs, osteophytes,
    sclerosis, possibly a wedge fracture; from the protocol's per-subject options), as a DataFrame."""
    from bonelab import simulate
    from bonelab.simulate.jobs import subject_options

    info = simulate.dataset_info(data)
    meta = simulate.metadata(data, split).reset_index(drop=True)
    levels = levels if levels is not None else LevelSplit(data, split)
    p = simulate.protocol(info["protocol"])
    degenerate = {s: subject_options(p, info["seed"], int(str(s).lstrip("s"))).get("degeneration") is not None
                  for s in meta["subject"].unique()} if info.get("source") == "phantoms" else {}
    return meta[["subject", "view"]].assign(implants=levels.implants,
                                            degeneration=meta["subject"].map(degenerate).fillna(False).astype(bool))


def hidden_by(split: LevelSplit):
    """How much of each level is hidden in projection, per sample of ``split``: the fraction of
    its pixels also covered by a neighbouring level (``neighbour``) and by metal (``implant``), as
    a long DataFrame (``index``, ``level``, ``neighbour``, ``implant``).  The iliac bones and T12
    are unlabelled in the phantom, so what they hide is not counted."""
    import pandas as pd

    rows = []
    for i, lv in enumerate(split.levels):
        for k, name in enumerate(LEVELS):
            area = lv[k].sum()
            if area:
                near = np.any([lv[j] for j in (k - 1, k + 1) if 0 <= j < len(LEVELS)], axis=0)
                rows.append({"index": i, "level": name, "neighbour": (lv[k] & near).sum() / area,
                             "implant": (lv[k] & split.metal[i]).sum() / area})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Models and training
# --------------------------------------------------------------------------------------------
def augmentation(size: int):
    """MONAI dict transforms for training films of ``size`` pixels (``{"image": (1, H, W),
    "levels": (6, H, W)}``, as :class:`LevelSplit` passes them): in 80 % of the films one random
    affine map of film and level masks together, rotation up to 10 degrees, scaling up to 12 %
    and a shift up to 7.5 % of the side (the film's border pixels extend it, the masks get
    background; masks are moved by nearest neighbour, so they stay masks).  Lateral films are
    never flipped: a flipped film would show the spine facing the other way."""
    from monai.transforms import Compose, RandAffined

    shift = 0.075 * size
    return Compose([RandAffined(keys=("image", "levels"), prob=0.8, rotate_range=np.deg2rad(10.0), scale_range=0.12,
                                translate_range=(shift, shift), mode=("bilinear", "nearest"),
                                padding_mode=("border", "zeros"))])


def model_spec(info: dict, model: str = "semantic", *, labelling: str = "level", channels=DEFAULT_CHANNELS,
               widths=DEFAULT_WIDTHS, num_res_units: int = 1):
    """The :class:`~bonelab.models.ModelSpec` of the semantic U-Net or the instance Mask R-CNN."""
    from bonelab.models import ModelSpec

    spacing = info["pixel_spacing_mm_at_isocenter"]
    common = {"task": NAME, "label_names": LEVELS, "input_size": (info["H"], info["W"]),
              "input_spacing_mm": (spacing, spacing)}
    if model == "semantic":
        return ModelSpec("unet2d", {"in_channels": 1, "out_channels": len(CLASS_NAMES), "channels": list(channels),
                                    "num_res_units": num_res_units},
                         extra={"protocol": info["protocol"], "model": model, "activation": "softmax"}, **common)
    if model != "instance":
        raise InvalidArgumentError(f"model must be one of {MODELS}; got {model!r}.")
    _check_labelling(labelling)
    n = len(LEVELS) if labelling == "level" else 2
    return ModelSpec("maskrcnn2d", {"num_classes": n + 1, "size": int(info["H"]), "widths": list(widths)},
                     extra={"protocol": info["protocol"], "model": model, "labelling": labelling}, **common)


def train(data, out, *, model: str = "semantic", labelling: str = "level", epochs: int = 20,
          batch_size: int = 8, lr: float | None = None, channels=DEFAULT_CHANNELS, widths=DEFAULT_WIDTHS,
          seed: int = 0, device=None, progress: bool = True, resume: bool = True, amp: bool | None = None,
          augment: bool = True):
    """Train the semantic U-Net (``model="semantic"``: Dice + cross-entropy over
    :data:`CLASS_NAMES`, MONAI's ``DiceCELoss``) or the instance Mask R-CNN (``"instance"``, with
    ``labelling`` ``"level"`` or ``"vertebra"``; torchvision's losses) on lumbar data set ``data``
    into run folder ``out``.  ``lr`` defaults to 3e-3 (U-Net) and 2e-3 (Mask R-CNN), with a
    one-cycle schedule.  Returns ``(network, TrainResult)``; ``best.pt`` holds the weights of the
    best validation score (mean Dice, or the matched mask IoU of :class:`bonelab.steps.DetectionTask`).

    ``augment``: move the training films by :func:`augmentation` (validation films are never
    moved).  On chapter 5's data (80 subjects, 2 films each, 160 px), 40 epochs of the U-Net
    reached test mean IoU 0.775 with it and 0.754 without, the counted Mask R-CNN (14 epochs)
    0.745 and 0.721 (one seed each); with it, longer training keeps paying: 0.816 at 60 epochs
    and 0.853 at 80 (U-Net); 0.811 at 20 and, with the faster and exactly pasted Mask R-CNN of
    :func:`bonelab.models.maskrcnn2d`, 0.854 at 36 (counted Mask R-CNN; 0.846 with levels as
    classes).

    ``amp``: mixed precision as :func:`bonelab.train.train` takes it.  None trains the U-Net in
    float32 on a CPU, even one with bfloat16 units, because it lost accuracy in bfloat16 (40
    epochs, no augmentation: mean IoU 0.732 against 0.754, same data and seed), and the Mask R-CNN
    in bfloat16 where :func:`bonelab.config.bfloat16_where_fast` says so: there it kept its
    accuracy (counted, 20 epochs: 0.806 against 0.811) and, with one RoIAlign sample per bin in
    training (:func:`bonelab.models.maskrcnn2d`), a training step took 0.14 s against 0.23 s."""
    from monai.losses import DiceCELoss

    from bonelab.config import bfloat16_where_fast
    from bonelab.steps import DetectionTask, SupervisedTask
    from bonelab.tasks import check_dataset, task
    from bonelab.train import seed_everything
    from bonelab.train import train as train_loop

    info = check_dataset(data, task(NAME))
    spec = model_spec(info, model, labelling=labelling, channels=channels, widths=widths)
    seed_everything(seed)
    net = spec.build()
    train_ds = LevelSplit(data, "train", model, labelling, transform=augmentation(info["H"]) if augment else None)
    val_ds = LevelSplit(data, "val", model, labelling)
    if model == "semantic":
        fit = SupervisedTask(DiceCELoss(to_onehot_y=True, softmax=True), level_dice, target_key="label")
        lr = 3e-3 if lr is None else lr
    else:
        fit = DetectionTask()
        lr = 2e-3 if lr is None else lr
        amp = bfloat16_where_fast(amp, device)
    result = train_loop(net, train_ds, val_ds, task=fit, out_dir=out, epochs=epochs, batch_size=batch_size, lr=lr,
                        seed=seed, device=device, progress=progress, resume=resume, schedule="onecycle", spec=spec,
                        amp=amp)
    return net, result


def level_dice(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-sample mean Dice (N,) over the levels present in prediction or truth, of the argmax of
    ``logits`` (N, 7, H, W) against class maps ``label`` (N, 1, H, W): the U-Net's validation score.

    >>> label = torch.zeros(1, 1, 4, 4); label[0, 0, :2] = 3
    >>> logits = torch.nn.functional.one_hot(label[:, 0].long(), 7).permute(0, 3, 1, 2).float()
    >>> level_dice(logits, label).tolist()
    [1.0]
    """
    k = len(CLASS_NAMES)
    pred = torch.nn.functional.one_hot(logits.argmax(1), k)[..., 1:].flatten(1, 2).float()
    truth = torch.nn.functional.one_hot(label[:, 0].long(), k)[..., 1:].flatten(1, 2).float()
    sizes = pred.sum(1) + truth.sum(1)
    dice = torch.where(sizes > 0, 2 * (pred * truth).sum(1) / sizes.clamp_min(1), torch.nan)
    return torch.nanmean(dice, dim=1)


# --------------------------------------------------------------------------------------------
# Predictions -> six level masks per image
# --------------------------------------------------------------------------------------------
def order_levels(masks, labels, scores, *, score_threshold: float = 0.5) -> tuple:
    """Levels of "vertebra" / "sacrum" detections by counting up the spine from the sacrum.

    ``masks`` (P, H, W) bool, ``labels`` (P,) (1 vertebra, 2 sacrum), ``scores`` (P,).  The
    best-scoring sacrum is the anchor; vertebrae scoring at least ``score_threshold`` whose mask
    overlaps an already kept, better one by IoU > 0.5 are dropped; the rest, above the sacrum's
    centre, are sorted by the row of their centre (the film hangs cranial up) and named L5, L4, ...
    from the bottom; more than five: the top ones are left unnamed (a thoracic or transitional
    vertebra).  Without a sacrum the counting starts at the lowest vertebra.  Returns
    ``(levels (P,) int: 1-5 L1-L5, 6 sacrum, 0 unnamed, kept)``.

    >>> m = np.zeros((3, 30, 10), bool); m[0, 2:6] = m[1, 10:14] = m[2, 20:28] = True
    >>> order_levels(m, np.array([1, 1, 2]), np.array([0.9, 0.8, 0.9]))[0].tolist()
    [4, 5, 6]
    """
    from bonelab.metrics import mask_iou

    masks, labels, scores = np.asarray(masks, bool), np.asarray(labels), np.asarray(scores, float)
    levels = np.zeros(len(masks), int)
    rows = np.array([np.flatnonzero(m.any(axis=1)).mean() if m.any() else np.nan for m in masks])
    ok = (scores >= score_threshold) & np.isfinite(rows)
    sacra = np.flatnonzero(ok & (labels == 2))
    bottom = np.inf
    if len(sacra):
        best = sacra[np.argmax(scores[sacra])]
        levels[best] = 6
        bottom = rows[best]
    kept = []
    for i in np.flatnonzero(ok & (labels == 1))[np.argsort(-scores[ok & (labels == 1)])]:
        if rows[i] >= bottom:
            continue
        if kept and float(mask_iou(torch.from_numpy(masks[[i]]), torch.from_numpy(masks[kept])).max()) > 0.5:
            continue
        kept.append(i)
    for level, i in zip(range(5, 0, -1), sorted(kept, key=lambda i: -rows[i])):
        levels[i] = level
    return levels, np.asarray(kept, int)


def instance_levels(prediction: dict, labelling: str, *, score_threshold: float = 0.5,
                    mask_threshold: float = 0.5, image_size=None) -> tuple:
    """Six level masks (6, H, W) bool, the class map (H, W) uint8 and the six level scores (6,)
    (NaN where not found) of one Mask R-CNN prediction (torchvision's dict: ``masks`` (P, 1, H, W)
    probabilities, ``labels``, ``scores``; ``image_size`` (H, W) is needed when P is 0).  With
    ``labelling="level"`` each level is the best-scoring detection of its class; with
    ``"vertebra"`` levels come from :func:`order_levels`.  Level masks: each level's named
    instance masks (probability above ``mask_threshold``; neighbours may overlap).  Class map,
    where one pixel takes one class: the level whose named instance is most probable there, or
    background where no named instance's probability exceeds ``mask_threshold``.  (The other
    rule tried, the highest-scoring covering instance, scored mean IoU 0.846 against 0.854 on
    chapter 5's test films and 0.823 against 0.827 on its validation films, same network.)

    >>> p = {"masks": torch.zeros(2, 1, 6, 3), "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.8])}
    >>> p["masks"][0, 0, :3] = 0.9; p["masks"][1, 0, 2:5] = 0.6   # a vertebra above the sacrum, touching
    >>> instance_levels(p, "vertebra")[1][:, 0].tolist()             # L5, the sacrum, background
    [5, 5, 5, 6, 6, 0]
    """
    _check_labelling(labelling)
    probabilities = _numpy(prediction["masks"])[:, 0]
    masks = probabilities > mask_threshold
    labels, scores = _numpy(prediction["labels"]).astype(int), _numpy(prediction["scores"]).astype(float)
    if not len(masks) and image_size is None:
        raise InvalidArgumentError("a prediction without detections needs image_size=(H, W).")
    h, w = masks.shape[1:] if len(masks) else tuple(image_size)
    if labelling == "level":
        named = np.where(scores >= score_threshold, labels, 0)
        for k in range(1, 7):  # one instance per level: the best one
            same = np.flatnonzero(named == k)
            named[same[np.argsort(-scores[same])][1:]] = 0
    else:
        named = order_levels(masks, labels, scores, score_threshold=score_threshold)[0]
    levels = np.zeros((6, h, w), bool)
    probability = np.zeros((7, h, w), np.float32)  # per class; background at the threshold
    probability[0] = mask_threshold
    level_scores = np.full(6, np.nan)
    for i in np.flatnonzero(named):
        levels[named[i] - 1] |= masks[i]
        probability[named[i]] = np.maximum(probability[named[i]], probabilities[i])
        level_scores[named[i] - 1] = scores[i]
    return levels, probability.argmax(axis=0).astype(np.uint8), level_scores


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def predict_levels(model, images, *, spec=None, batch_size: int = 8, score_threshold: float = 0.5,
                   device=None) -> tuple:
    """Level masks (N, 6, H, W) bool and class maps (N, H, W) uint8 that ``model`` (a trained
    semantic U-Net or instance Mask R-CNN; ``spec`` its :class:`~bonelab.models.ModelSpec`, found
    from a run folder given as ``model``) predicts for ``images`` (N, 1, H, W) in [0, 1]."""
    from bonelab.models import read_spec
    from bonelab.tasks import predict_batches

    if isinstance(model, (str, Path)):
        spec, model = read_spec(model), load_model(model, device=device)
    if spec is None:
        raise InvalidArgumentError("predict_levels needs spec= (the run's ModelSpec) with a network, or a run folder.")
    images = np.asarray(images, np.float32)
    if spec.extra.get("model") == "semantic":
        maps = predict_batches(model, images, lambda net, x: net(x).argmax(1).to(torch.uint8), batch_size=batch_size,
                               device=device).astype(np.uint8)
        return np.stack([maps == k for k in range(1, 7)], axis=1), maps

    def levels_and_map(net, x):  # per image: the 6 level masks and the class map, as 7 channels
        out = []
        for pred in net(list(x)):
            lv, cm, _ = instance_levels(pred, spec.extra["labelling"], score_threshold=score_threshold,
                                        image_size=images.shape[2:])
            out.append(np.concatenate([lv, cm[None]]))
        return torch.from_numpy(np.stack(out))

    packed = predict_batches(model, images, levels_and_map, batch_size=batch_size, device=device)
    return packed[:, :6] > 0.5, packed[:, 6].astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------
def score(pred_levels, pred_maps, split: LevelSplit, meta=None):
    """Per sample and level: ``dice``, ``iou``, ``recognised`` (IoU >= :data:`RECOGNISED_IOU`) of
    predicted level masks ``pred_levels`` (N, 6, H, W) against ``split``'s, with ``present`` (the
    level is in the view), ``implants``, ``subject`` and ``view`` (from ``meta``, the split's
    :func:`bonelab.simulate.metadata`); and the per-sample confusion matrices (N, 7, 7) of the
    class maps ``pred_maps`` (N, H, W) (:func:`bonelab.metrics.confusion_matrix`).  Returns
    ``(rows DataFrame, matrices)``."""
    import pandas as pd

    from bonelab.metrics import confusion_matrix

    pred = np.asarray(pred_levels, bool)
    truth = split.levels
    if pred.shape != truth.shape:
        raise InvalidArgumentError(f"pred_levels has shape {pred.shape}; the split's level masks are {truth.shape}.")
    inter = (pred & truth).sum(axis=(2, 3))
    union = (pred | truth).sum(axis=(2, 3))
    sizes = pred.sum(axis=(2, 3)) + truth.sum(axis=(2, 3))
    n = len(pred)
    frame = pd.DataFrame({
        "index": np.repeat(np.arange(n), 6), "level": np.tile(LEVELS, n),
        "present": truth.any(axis=(2, 3)).ravel(), "implants": np.repeat(split.implants, 6),
        "dice": np.divide(2 * inter, sizes, out=np.full(inter.shape, np.nan), where=sizes > 0).ravel(),
        "iou": np.divide(inter, union, out=np.full(inter.shape, np.nan), where=union > 0).ravel()})
    frame["recognised"] = frame["iou"] >= RECOGNISED_IOU
    if meta is not None:
        for column in ("subject", "view"):
            frame[column] = np.repeat(meta[column].to_numpy(), 6)
    matrices = np.stack([confusion_matrix(p, t, len(CLASS_NAMES)) for p, t in zip(np.asarray(pred_maps), split.maps)])
    return frame, matrices


def fcn_metrics(matrix) -> dict:
    """Pixel accuracy, mean accuracy, mean IoU and frequency-weighted IoU (Long et al. 2015) of
    one confusion matrix (rows truth, columns prediction; background included)."""
    from bonelab.metrics import frequency_weighted_iou, mean_accuracy, mean_iou, pixel_accuracy

    return {"pixel accuracy": pixel_accuracy(matrix), "mean accuracy": mean_accuracy(matrix),
            "mean IoU": mean_iou(matrix), "f.w. IoU": frequency_weighted_iou(matrix)}


def fcn_table(matrices, groups: dict | None = None):
    """FCN metrics (:func:`fcn_metrics`) of the summed per-sample confusion matrices
    ``{model: (N, 7, 7)}``, for all samples and for each boolean mask in ``groups`` (e.g.
    ``{"with implants": implants, "without": ~implants}``): a DataFrame indexed (model, group)."""
    import pandas as pd

    rows = {}
    for name, m in matrices.items():
        m = np.asarray(m)
        for group, keep in {"all": np.ones(len(m), bool), **(groups or {})}.items():
            if np.any(keep):
                rows[(name, group)] = fcn_metrics(m[np.asarray(keep, bool)].sum(axis=0))
    return pd.DataFrame(rows).T


def one_pixel_scores(split: LevelSplit):
    """FCN metrics (:func:`fcn_metrics`) of the truth moved by one pixel: every level mask of
    ``split`` eroded, or dilated, by one pixel (scipy's 3 x 3 cross), painted into class maps as
    :func:`level_map` paints them, and scored against the split's own maps.  What one pixel of
    outline costs at the split's resolution: a network whose outlines are off by one pixel
    everywhere scores about this.  Returns a DataFrame with the rows "truth eroded by 1 px" and
    "truth dilated by 1 px"."""
    import pandas as pd
    from scipy import ndimage

    from bonelab.metrics import confusion_matrix

    rows = {}
    for name, move in (("eroded", ndimage.binary_erosion), ("dilated", ndimage.binary_dilation)):
        matrix = sum(confusion_matrix(level_map([move(m) for m in levels]), truth, len(CLASS_NAMES))
                     for levels, truth in zip(split.levels, split.maps))
        rows[f"truth {name} by 1 px"] = fcn_metrics(matrix)
    return pd.DataFrame(rows).T


def recognition_rate(rows) -> float:
    """Share of the levels present in the views that were recognised (IoU >= 0.5 with the right level)."""
    present = rows[rows["present"]]
    return float(present["recognised"].mean()) if len(present) else float("nan")


def compare_bootstrap(matrices_a, matrices_b, subjects, metric: str = "mean IoU", *, n_resamples: int = 2000,
                      seed: int = 0) -> tuple:
    """Difference of an FCN ``metric`` between two models (a - b) on the same samples, with a 95%
    bootstrap interval over test subjects: subjects are drawn with replacement, the confusion
    matrices of their samples summed per model.  Returns ``(difference, low, high)``."""
    a, b, subjects = np.asarray(matrices_a), np.asarray(matrices_b), np.asarray(subjects)
    ids = np.unique(subjects)
    per_a = np.stack([a[subjects == s].sum(axis=0) for s in ids])
    per_b = np.stack([b[subjects == s].sum(axis=0) for s in ids])
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(ids), len(ids))
        diffs.append(fcn_metrics(per_a[pick].sum(0))[metric] - fcn_metrics(per_b[pick].sum(0))[metric])
    point = fcn_metrics(per_a.sum(0))[metric] - fcn_metrics(per_b.sum(0))[metric]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(point), float(low), float(high)


# --------------------------------------------------------------------------------------------
# Real data: BUU-LSPINE's corner points -> vertebra masks
# --------------------------------------------------------------------------------------------
def corner_masks(corners, shape) -> np.ndarray:
    """Quadrilateral vertebra masks (N, H, W) bool from corner points ``corners`` (N, 4, 2) as
    (x, y) pixels (column, row), in any order: BUU-LSPINE annotates each of L1-L5 by the four
    corners of its body.  Corners are ordered around their centre before the polygon is filled
    (``skimage.draw.polygon``), so a crossed order still gives the convex quadrilateral.

    >>> int(corner_masks([[[1, 1], [5, 1], [1, 3], [5, 3]]], (6, 8)).sum())   # a 5 x 3 rectangle
    15
    """
    from skimage.draw import polygon

    c = np.asarray(corners, float)
    if c.ndim != 3 or c.shape[1:] != (4, 2) or not np.isfinite(c).all():
        raise InvalidArgumentError(f"corners must be (N, 4, 2) finite (x, y) pixels; got shape {c.shape}.")
    h, w = (int(v) for v in shape)
    out = np.zeros((len(c), h, w), bool)
    for k, quad in enumerate(c):
        centre = quad.mean(axis=0)
        quad = quad[np.argsort(np.arctan2(quad[:, 1] - centre[1], quad[:, 0] - centre[0]))]
        rr, cc = polygon(quad[:, 1], quad[:, 0], (h, w))
        out[k, rr, cc] = True
        # polygon() fills the interior; the corner pixels themselves belong to the body too
        inside = (np.round(quad[:, 1]).astype(int).clip(0, h - 1), np.round(quad[:, 0]).astype(int).clip(0, w - 1))
        out[k][inside] = True
    return out


# --------------------------------------------------------------------------------------------
# bonelab train lumbar
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bonelab train lumbar``."""
    parser.add_argument("--data", required=True, metavar="DIR", help="data set folder from bonelab simulate lumbar "
                                                                     "--target instances")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (resumed if it holds last.pt)")
    parser.add_argument("--model", choices=MODELS, default="semantic", help="U-Net (semantic) or Mask R-CNN (instance)")
    parser.add_argument("--labelling", choices=LABELLINGS, default="level",
                        help="instance classes: the six levels, or vertebra/sacrum counted from the sacrum")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="torch device (default: cuda if available)")


def run(args) -> int:
    """Run ``bonelab train lumbar``; prints the FCN metrics and the recognition rate on the test split."""
    start = time.perf_counter()
    _, result = train(args.data, args.out, model=args.model, labelling=args.labelling, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    print(f"trained {result.epochs} epochs in {time.perf_counter() - start:.0f} s; best validation score "
          f"{result.best_metric:.3f} (epoch {result.best_epoch}) -> {result.best_checkpoint}")
    if (Path(args.data) / "test_images.npy").exists():
        test = LevelSplit(args.data, "test")
        levels, maps = predict_levels(args.out, test.images, device=args.device)
        rows, matrices = score(levels, maps, test)
        print(fcn_table({args.model: matrices}).round(3).to_string())
        print(f"recognition rate {recognition_rate(rows):.3f}")
    return 0
