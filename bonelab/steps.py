"""The per-batch interface of the training loop: what differs between segmentation, regression,
detection and 3D patches (:func:`bonelab.train.train` runs any of them).

* :class:`SupervisedTask`: ``model(image) -> output``, ``loss(output, target)``, optionally a
  per-sample metric: segmentation, image-to-image regression and 3D patches;
  ``train(..., loss=, metric_fn=)`` builds one.
* :class:`DetectionTask`: torchvision-style detection models (Mask R-CNN): list batches, the
  model's own loss dict, matched IoU as the validation score.
* A new kind of task subclasses :class:`TrainingTask` (see its methods), in the manner of
  MONAI's ``prepare_batch`` and d2l's ``training_step``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import default_collate

from bonelab.datasets import detection_collate
from bonelab.errors import InvalidArgumentError
from bonelab.metrics import mask_iou, matched_iou


def _terms(value, source: str) -> dict:
    """A loss value as a dict of named scalar tensors with the total under "loss"."""
    if isinstance(value, torch.Tensor):
        return {"loss": value}
    if not isinstance(value, dict) or "loss" not in value:
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise InvalidArgumentError(
            f"{source} returned {found}; it must return a scalar tensor or a dict of named tensors with "
            "the total under 'loss' (e.g. {'loss': a + b, 'a': a, 'b': b}).")
    return value


def _floats(terms: dict) -> dict:
    """Named loss terms as Python floats (for logging)."""
    return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}


def _to_device(value, device: torch.device):
    """Move the tensors in nested dicts, lists and tuples to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


class TrainingTask:
    """What :func:`train` asks of a task; subclass it for a new kind of training.

    The loop calls, per batch: ``collate`` (in the DataLoader), ``prepare_batch``, then
    ``training_loss`` (training, model in train mode, under autocast when AMP is on) or
    ``validation_step`` (model in eval mode, no gradients).  ``model`` is the network as the loop
    holds it (wrapped in DistributedDataParallel under torchrun).

    Attributes
    ----------
    metric_name : str
        Name of the validation score that picks ``best.pt`` (the mean of ``validation_step``'s
        scores, or the negative validation loss when a task gives no scores).

    Examples
    --------
    A task for ``(x, y)`` samples, as a ``TensorDataset`` gives them (collate, prepare_batch and
    validation_step keep their defaults):

    >>> import tempfile
    >>> from bonelab.train import train
    >>> class PairTask(TrainingTask):
    ...     def batch_size(self, batch): return len(batch[0])
    ...     def predict(self, model, batch): return model(batch[0])
    ...     def training_loss(self, model, batch):
    ...         return torch.nn.functional.mse_loss(self.predict(model, batch), batch[1])
    >>> data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    >>> result = train(torch.nn.Linear(3, 1), data, data, task=PairTask(), out_dir=tempfile.mkdtemp(),
    ...                epochs=2, device="cpu", progress=False)
    >>> result.metric_name, [row["val_metric"] == -row["val_loss"] for row in result.history]
    ('neg_val_loss', [True, True])
    """

    metric_name = "neg_val_loss"

    def collate(self, samples: list):
        """Samples -> one batch (default: torch's ``default_collate``, which stacks tensors)."""
        return default_collate(samples)

    def prepare_batch(self, batch, device: torch.device):
        """Check the batch, move it to ``device`` and cast it for the model (default: move only)."""
        return _to_device(batch, device)

    def batch_size(self, batch) -> int:
        """Number of samples in a prepared batch (weights the epoch means)."""
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, batch):
        """The model's output for a prepared batch (what the chapters show or score)."""
        raise NotImplementedError

    def training_loss(self, model: torch.nn.Module, batch) -> torch.Tensor | dict:
        """Scalar loss tensor, or a dict of named scalar tensors whose "loss" is the total."""
        raise NotImplementedError

    def validation_step(self, model: torch.nn.Module, batch) -> tuple[dict, torch.Tensor | None]:
        """``(named loss terms as floats, possibly empty; per-sample scores (N,) or None)``.

        Scores are higher-is-better; NaN scores are skipped in the mean.  Default: the training
        loss terms and no scores.
        """
        terms = _terms(self.training_loss(model, batch), f"{type(self).__name__}.training_loss")
        return _floats(terms), None


def _per_sample(scores, n: int) -> torch.Tensor:
    """A metric's result as ``(n,)`` float64 on the CPU: a float is the batch mean (repeated n times)."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
    return scores.expand(n) if scores.numel() == 1 else scores


class SupervisedTask(TrainingTask):
    """Image -> target training: segmentation, image-to-image regression, 3D patches.

    Samples are dicts (:mod:`bonelab.datasets`): ``sample[input_key]`` ``(C, H, W)`` or
    ``(C, D, H, W)`` is the network input (cast to float32), ``sample[target_key]`` the target
    (cast to ``target_dtype``: float32 for masks and images, ``torch.long`` for class indices).

    Parameters
    ----------
    loss : callable
        ``loss(output, target)`` -> scalar tensor, or a dict with the total under "loss" (e.g.
        :func:`bonelab.losses.segmentation_loss`, :class:`bonelab.losses.MSSSIML1Loss`); computed
        in float32, also under AMP.
    metric_fn : callable or None
        ``metric_fn(output, target)`` -> per-sample scores ``(N,)`` (NaN allowed and skipped) or the
        batch mean as a float, higher is better (e.g. :func:`bonelab.metrics.batch_dice`).  None:
        the negative validation loss picks the best model.
    input_key, target_key : str
        The sample's keys of input and target.
    target_dtype : torch.dtype
    inferer : callable or None
        How validation applies the network: ``inferer(inputs, model)`` -> output, e.g.
        :func:`bonelab.segment.sliding_windows` for a 3D network trained on patches and applied to
        whole volumes in windows, so that validation scores what inference will do; None:
        ``model(inputs)``.  Training always calls the model on its batch.

    Examples
    --------
    >>> from bonelab.datasets import shapes_dataset
    >>> from bonelab.losses import segmentation_loss
    >>> task = SupervisedTask(segmentation_loss())
    >>> batch = task.prepare_batch(task.collate([shapes_dataset(2, 16)[i] for i in range(2)]), torch.device("cpu"))
    >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> task.batch_size(batch), task.predict(net, batch).shape, float(task.training_loss(net, batch).detach()) > 0
    (2, torch.Size([2, 2, 16, 16]), True)
    """

    def __init__(self, loss: Callable, metric_fn: Callable | None = None, input_key: str = "image",
                 target_key: str = "label", target_dtype: torch.dtype = torch.float32, inferer: Callable | None = None):
        if not callable(loss) or (metric_fn is not None and not callable(metric_fn)):
            raise InvalidArgumentError("SupervisedTask needs a callable loss(output, target) and metric_fn "
                                       f"callable or None; got {type(loss).__name__}, {type(metric_fn).__name__}.")
        self.loss, self.metric_fn = loss, metric_fn
        if inferer is not None and not callable(inferer):
            raise InvalidArgumentError(f"inferer must be callable(inputs, model) or None; got {type(inferer).__name__}.")
        self.inferer = inferer
        self.input_key, self.target_key, self.target_dtype = input_key, target_key, target_dtype

    @property
    def metric_name(self) -> str:
        if self.metric_fn is None:
            return "neg_val_loss"
        return getattr(self.metric_fn, "__name__", type(self.metric_fn).__name__)

    def prepare_batch(self, batch, device: torch.device) -> dict:
        keys = (self.input_key, self.target_key)
        if not isinstance(batch, dict) or not all(k in batch for k in keys):
            found = f"keys {sorted(batch)}" if isinstance(batch, dict) else f"a {type(batch).__name__}"
            raise InvalidArgumentError(
                f"each sample must be a dict with {self.input_key!r} (C, H, W) and {self.target_key!r} (L, H, W); "
                f"got {found}.  See the sample formats in bonelab.datasets (DictDataset builds one from "
                "arrays), or pass SupervisedTask(input_key=..., target_key=...).")
        for key in keys:
            if not isinstance(batch[key], torch.Tensor):
                raise InvalidArgumentError(
                    f"sample[{key!r}] collated to a {type(batch[key]).__name__}, not a tensor; the data set must "
                    "return numpy arrays or tensors of one shape for it.")
        return {**batch, self.input_key: batch[self.input_key].to(device, torch.float32, non_blocking=True),
                self.target_key: batch[self.target_key].to(device, self.target_dtype, non_blocking=True)}

    def batch_size(self, batch) -> int:
        return len(batch[self.input_key])

    def predict(self, model: torch.nn.Module, batch) -> torch.Tensor:
        return model(batch[self.input_key])

    def _loss(self, output: torch.Tensor, batch):
        with torch.autocast(output.device.type, enabled=False):  # the loss in float32, also under AMP
            return self.loss(output.float(), batch[self.target_key])

    def training_loss(self, model: torch.nn.Module, batch):
        return self._loss(self.predict(model, batch), batch)

    def validation_step(self, model: torch.nn.Module, batch) -> tuple[dict, torch.Tensor | None]:
        if self.inferer is None:
            output = self.predict(model, batch).float()
        else:
            # float32 windows: under bfloat16 autocast MONAI would blend them in bfloat16
            output = self.inferer(batch[self.input_key], lambda x: model(x).float())
        terms = _terms(self._loss(output, batch), "the loss")
        scores = None
        if self.metric_fn is not None:
            scores = _per_sample(self.metric_fn(output, batch[self.target_key]), self.batch_size(batch))
        return _floats(terms), scores


class L2RegularisedTask(SupervisedTask):
    """:class:`SupervisedTask` whose training loss adds ``l2`` times the sum of the squared weights
    (of convolutions and linear layers; biases and normalisation parameters are left out), the
    compound "loss + L2 regulariser" of papers such as Zhao et al. 2020 (proximal femur V-Net).

    An L2 term in the loss is what *coupled* weight decay does (``torch.optim.Adam(weight_decay=)``:
    the gradient gains ``2 * l2 * w``, which Adam then rescales per parameter); AdamW's decoupled
    decay shrinks the weights outside the adaptive step and is a different regulariser, so train
    this task with ``weight_decay=0``.  The terms are reported as ``loss``, ``fit`` (the data
    term) and ``l2``; validation scores the data term only.

    >>> from bonelab.datasets import shapes_dataset
    >>> from bonelab.losses import segmentation_loss
    >>> task = L2RegularisedTask(segmentation_loss(), l2=1e-3)
    >>> batch = task.prepare_batch(task.collate([shapes_dataset(2, 16)[i] for i in range(2)]), torch.device("cpu"))
    >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> terms = task.training_loss(net, batch)
    >>> bool(torch.isclose(terms["loss"], terms["fit"] + 1e-3 * net.weight.pow(2).sum()))
    True
    """

    def __init__(self, loss: Callable, metric_fn: Callable | None = None, *, l2: float = 1e-5, **kwargs):
        super().__init__(loss, metric_fn, **kwargs)
        if not l2 >= 0:
            raise InvalidArgumentError(f"l2 must be >= 0; got {l2}.")
        self.l2 = float(l2)

    def training_loss(self, model: torch.nn.Module, batch) -> dict:
        fit = _terms(super().training_loss(model, batch), "the loss")["loss"]
        weights = [m.weight for m in model.modules()
                   if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
        penalty = sum(w.float().pow(2).sum() for w in weights)
        return {"loss": fit + self.l2 * penalty, "fit": fit.detach(), "l2": penalty.detach()}


class DetectionTask(TrainingTask):
    """Training of torchvision-style detection and instance-segmentation models (Mask R-CNN).

    The model follows torchvision's convention: in train mode ``model(images, targets)`` returns a
    dict of losses (summed into "loss"; each term logged, e.g. ``train_loss_mask``), in eval mode
    ``model(images)`` returns one dict per image with ``"boxes"`` ``(P, 4)``, ``"labels"``,
    ``"scores"`` and, for Mask R-CNN, ``"masks"`` ``(P, 1, H, W)`` probabilities.  Batches are lists
    (:func:`bonelab.datasets.detection_collate`); samples are described in :mod:`bonelab.datasets`.
    Validation gives no loss (torchvision models compute none in eval mode) and one score per image:
    :func:`matched_iou` between the predictions scoring at least ``score_threshold`` and the true
    instances, on masks (``> mask_threshold``) or, with ``iou="box"``, on boxes
    (``monai.data.box_utils.box_iou``).

    Parameters
    ----------
    score_threshold : float
        Predictions below this confidence are ignored when scoring.
    mask_threshold : float
        Mask probability above which a pixel belongs to a predicted instance.
    iou : "mask" or "box"

    Examples
    --------
    >>> from bonelab.datasets import ShapesInstances
    >>> task = DetectionTask()
    >>> images, targets = task.prepare_batch(task.collate(list(ShapesInstances(2, 16))), torch.device("cpu"))
    >>> exact = [{"masks": t["masks"][:, None].float(), "boxes": t["boxes"], "scores": torch.ones(2),
    ...           "labels": t["labels"]} for t in targets]
    >>> task.score(exact[0], targets[0])
    1.0
    """

    metric_name = "matched_iou"

    def __init__(self, score_threshold: float = 0.5, mask_threshold: float = 0.5, iou: str = "mask"):
        if iou not in ("mask", "box"):
            raise InvalidArgumentError(f"iou must be 'mask' or 'box', got {iou!r}.")
        self.score_threshold, self.mask_threshold, self.iou = score_threshold, mask_threshold, iou

    def collate(self, samples: list) -> tuple[list, list]:
        return detection_collate(samples)

    def prepare_batch(self, batch, device: torch.device) -> tuple[list, list]:
        images, targets = batch
        needed = ("boxes", "labels") + (("masks",) if self.iou == "mask" else ())
        for image, target in zip(images, targets):
            if not isinstance(image, torch.Tensor) or image.ndim != 3:
                raise InvalidArgumentError(
                    f"a detection image must be a (C, H, W) tensor, got "
                    f"{getattr(image, 'shape', type(image).__name__)}; "
                    "see the sample format in bonelab.datasets.")
            if not isinstance(target, dict) or not all(k in target for k in needed):
                found = sorted(target) if isinstance(target, dict) else type(target).__name__
                raise InvalidArgumentError(
                    f"a detection target must be a dict with {list(needed)}, got {found}; see the sample format "
                    "in bonelab.datasets (ShapesInstances is an example).")
            if target["boxes"].ndim != 2 or target["boxes"].shape[-1] != 4:
                raise InvalidArgumentError(f"target['boxes'] must be (K, 4) (x0, y0, x1, y1) pixels, got "
                                           f"{tuple(target['boxes'].shape)}.")
        return ([image.to(device, torch.float32, non_blocking=True) for image in images],
                [_to_device(target, device) for target in targets])

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def predict(self, model: torch.nn.Module, batch) -> list[dict]:
        return model(batch[0])

    def training_loss(self, model: torch.nn.Module, batch) -> dict:
        losses = model(*batch)
        if not isinstance(losses, dict) or not losses:
            raise InvalidArgumentError(
                f"in train mode model(images, targets) returned {type(losses).__name__}; a detection model must "
                "return a dict of loss tensors there (torchvision's convention).")
        return {**losses, "loss": sum(losses.values())}

    def score(self, prediction: dict, target: dict) -> float:
        """:func:`matched_iou` of one image's prediction and target (see the class docstring)."""
        keep = prediction["scores"] >= self.score_threshold
        if self.iou == "box":
            from monai.data.box_utils import box_iou

            iou = box_iou(prediction["boxes"][keep].float(), target["boxes"].float())
        else:
            predicted = prediction["masks"][keep][:, 0] > self.mask_threshold
            iou = mask_iou(predicted, target["masks"] > 0)
        return matched_iou(iou)

    def validation_step(self, model: torch.nn.Module, batch) -> tuple[dict, torch.Tensor]:
        predictions = self.predict(model, batch)
        if not isinstance(predictions, (list, tuple)) or len(predictions) != self.batch_size(batch):
            raise InvalidArgumentError(
                f"in eval mode model(images) returned {type(predictions).__name__}; a detection model must return "
                "one dict of predictions per image there (torchvision's convention).")
        scores = [self.score(p, t) for p, t in zip(predictions, batch[1])]
        return {}, torch.tensor(scores, dtype=torch.float64)
