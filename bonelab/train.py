"""One training loop for every chapter: :func:`train`.

What it does, so that chapters do not repeat it: AdamW with a cosine or one-cycle schedule,
automatic mixed precision on CUDA, a checkpoint written atomically every epoch (``last.pt``) and
on every improvement of the validation metric (``best.pt``), resume from ``last.pt``, one row of
metrics per epoch in ``metrics.csv`` (and TensorBoard when installed), a progress bar, fixed seeds,
and DistributedDataParallel when launched with ``torchrun``.

Batch format
------------
A data set (any ``torch.utils.data.Dataset``) returns one sample as a dict::

    {"image": float array/tensor (C, H, W),    # network input, e.g. a normalised radiograph
     "label": array/tensor (L, H, W)}          # target: L stacked binary masks (multi-label),
                                               # or (1, H, W) class indices (softmax losses),
                                               # or (C', H, W) images (regression)

(3D tasks add a depth axis: ``(C, D, H, W)``.)  Extra keys (e.g. ``"subject"``) are allowed and
ignored.  The default collate stacks samples into ``image (N, C, H, W)`` and ``label (N, L, H, W)``;
the loop casts both to float32.  :class:`DictDataset` builds such a data set from two arrays
(numpy memmaps included, so a data set on disk is read lazily).

The model maps ``image`` to logits ``(N, L, H, W)``; ``loss(logits, label)`` is a scalar tensor
(e.g. :func:`segmentation_loss`); ``metric_fn(logits, label)`` returns one score per sample (a
tensor ``(N,)``, NaN allowed and skipped) or the batch mean as a float, higher is better
(e.g. :func:`bonelab.metrics.batch_dice`).

Checkpoints
-----------
``last.pt`` and ``best.pt`` hold only tensors and plain containers (state dicts, numbers, strings,
lists, dicts) so they load with ``torch.load(path, weights_only=True)``, which executes no code.
Keys: ``format``, ``epoch`` (epochs completed), ``model`` (state dict), ``config``, ``metric``,
and in ``last.pt`` also ``optimizer``, ``scheduler``, ``scaler``, ``rng``, ``best_metric``,
``best_epoch``, ``history``.  Use :func:`load_weights` to put the weights into a network
(:func:`bonelab.models.load_model` rebuilds the network of a run folder from its spec).
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

import bonelab.config as cfg
from bonelab.errors import InvalidArgumentError, MissingFileError, UnreadableFileError

CHECKPOINT_FORMAT = "bonelab-checkpoint-1"
SCHEDULES = ("cosine", "onecycle", "constant")
CSV_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_metric", "improved", "seconds", "samples_per_s")
# Settings that change the result: a resumed run must use the same ones.
_RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "schedule", "world_size")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class DictDataset(Dataset):
    """Samples ``{"image": images[i], "label": labels[i]}`` as float32 tensors (the batch format).

    Parameters
    ----------
    images : array-like (N, C, H, W)
        Numpy arrays (memmaps too: read one sample at a time) or tensors.
    labels : array-like (N, L, H, W)
    transform : callable or None
        Applied to each sample dict (e.g. a ``monai.transforms.Compose`` of dict transforms).

    Examples
    --------
    >>> import numpy as np
    >>> ds = DictDataset(np.zeros((4, 1, 8, 8)), np.ones((4, 2, 8, 8), bool))
    >>> len(ds), ds[0]["image"].shape, ds[0]["label"].dtype
    (4, torch.Size([1, 8, 8]), torch.float32)
    """

    def __init__(self, images, labels, transform: Callable | None = None):
        if len(images) != len(labels):
            raise InvalidArgumentError(f"{len(images)} images but {len(labels)} labels; they must pair up.")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        sample = {
            "image": torch.as_tensor(np.array(self.images[index], dtype=np.float32)),
            "label": torch.as_tensor(np.array(self.labels[index], dtype=np.float32)),
        }
        return self.transform(sample) if self.transform is not None else sample


def shapes_dataset(n: int, size: int = 32, seed: int = 0, noise: float = 0.05) -> DictDataset:
    """A toy two-label data set for trying the loop: a disc and a square that may overlap.

    The image adds the two shapes' "attenuations" (0.5 and 0.8) plus Gaussian noise, like bones
    overlapping in a radiograph; the labels are the two binary masks (overlap kept).

    Returns
    -------
    DictDataset of ``n`` samples: image (1, size, size), label (2, size, size).

    Examples
    --------
    >>> ds = shapes_dataset(3, size=16)
    >>> ds[0]["image"].shape, ds[0]["label"].shape
    (torch.Size([1, 16, 16]), torch.Size([2, 16, 16]))
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, 2, size, size), bool)
    for i in range(n):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        labels[i, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < (rng.uniform(0.12, 0.25) * size) ** 2
        y0, x0 = rng.integers(0, size // 2, 2)
        side = rng.integers(size // 5, size // 2)
        labels[i, 1, y0 : y0 + side, x0 : x0 + side] = True
    images = 0.5 * labels[:, :1] + 0.8 * labels[:, 1:] + rng.normal(0, noise, (n, 1, size, size))
    return DictDataset(images.astype(np.float32), labels)


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
        Dice + cross-entropy (multi-label: :class:`DiceBCELoss`; one class per pixel:
        ``monai.losses.DiceCELoss``) or Dice + focal (``monai.losses.DiceFocalLoss``, whose focal term
        is a per-channel sigmoid focal loss; for small structures on a large background).
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


# --------------------------------------------------------------------------------------------
# Seeds and random states
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and all GPUs).

    Call it before building a model so that its initial weights are reproducible.

    >>> seed_everything(0); a = torch.rand(1); seed_everything(0); bool(a == torch.rand(1))
    True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_transforms(dataset, seed: int) -> None:
    """Seed every MONAI random transform held by ``dataset`` (their generators are their own, not
    numpy's global one, and are not in the checkpoint: reseeding them per epoch keeps resume exact)."""
    from monai.data.utils import set_rnd

    set_rnd(dataset, seed=seed)


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy, random and the MONAI transforms of this worker's
    copy of the data set from the worker's torch seed (set by the loader's seeded generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    _seed_transforms(torch.utils.data.get_worker_info().dataset, seed)


def _rng_state() -> dict:
    """The global random states as tensors and numbers (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": math.nan if gauss_next is None else float(gauss_next)},
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    gauss_next = None if math.isnan(p["gauss_next"]) else p["gauss_next"]
    random.setstate((p["version"], tuple(p["state"].tolist()), gauss_next))


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """A generator for one epoch's shuffling and worker seeds: depends only on (seed, epoch, rank),
    so a resumed run draws the same batches without storing the generator's state."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 1_009 + rank) % 2**63)
    return generator


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary name in the same folder, then rename (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_csv_atomic(rows: list[dict], path: Path) -> None:
    """Rewrite the whole metrics table from the checkpoint's history, so after an interruption
    the CSV always matches ``last.pt`` (appending could leave a row of an epoch that was lost)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def _read_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist; check the run folder (last.pt, best.pt).")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise UnreadableFileError(f"cannot read checkpoint {path} with weights_only=True: {error}") from error
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UnreadableFileError(f"{path} is not a bonelab checkpoint (written by bonelab.train.train).")
    return ckpt


def load_weights(model: torch.nn.Module, checkpoint_path, device=None) -> torch.nn.Module:
    """Load the weights of a bonelab checkpoint (``last.pt`` or ``best.pt``) into ``model``.

    The file is read with ``torch.load(weights_only=True)``.  Returns ``model`` on ``device``
    (default :func:`bonelab.config.device`) in eval mode.

    Examples
    --------
    >>> # net = load_weights(unet2d(out_channels=10), "runs/wrist/best.pt")
    """
    dev = cfg.device(device)
    ckpt = _read_checkpoint(checkpoint_path, map_location=dev)
    model.load_state_dict(ckpt["model"])
    return model.to(dev).eval()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns (the model itself is trained in place and ends with the
    weights of the last epoch; load ``best_checkpoint`` for the best ones)."""

    out_dir: Path
    epochs: int  # epochs completed in total (including resumed ones)
    best_epoch: int
    best_metric: float
    history: list  # one dict per epoch, the rows of metrics.csv

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def metrics_csv(self) -> Path:
        return self.out_dir / "metrics.csv"


@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # True when train() initialised the process group (and must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Sum numbers over all processes (identity when not distributed)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()


def _init_distributed(device) -> _Dist:
    """Join (or start, from torchrun's environment) a process group when WORLD_SIZE > 1."""
    running = dist.is_available() and dist.is_initialized()
    if not running and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist(0, 1, cfg.device(device), False)
    dev = cfg.device(device)
    if dev.type == "cuda":
        if dev.index is None:  # one GPU per process: the local rank picks it
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not running:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), dev, not running)


def _make_scheduler(optimizer, schedule: str, lr: float, total_steps: int):
    """Learning-rate schedule stepped once per batch."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _tensorboard_writer(setting, out_dir: Path):
    if setting is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        if setting:
            raise InvalidArgumentError(
                "tensorboard=True needs the tensorboard package: pip install tensorboard "
                "(or pass tensorboard=None to log only when it is installed)."
            ) from error
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def _unpack(batch, device: torch.device):
    if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
        raise InvalidArgumentError(
            "each sample must be a dict with 'image' (C, H, W) and 'label' (L, H, W); see the batch "
            "format in bonelab.train (bonelab.train.DictDataset builds one from arrays)."
        )
    return (batch["image"].to(device, torch.float32, non_blocking=True),
            batch["label"].to(device, torch.float32, non_blocking=True))


def _check_arguments(train_ds, val_ds, epochs, batch_size, lr, weight_decay, schedule, num_workers):
    for name, ds in (("train_ds", train_ds), ("val_ds", val_ds)):
        if len(ds) == 0:
            raise InvalidArgumentError(f"{name} is empty; check the data folder or split.")
    if epochs < 1 or batch_size < 1 or num_workers < 0:
        raise InvalidArgumentError(
            f"need epochs >= 1, batch_size >= 1, num_workers >= 0; got {epochs}, {batch_size}, {num_workers}."
        )
    if not lr > 0 or weight_decay < 0:
        raise InvalidArgumentError(f"need lr > 0 and weight_decay >= 0; got {lr}, {weight_decay}.")
    if schedule not in SCHEDULES:
        raise InvalidArgumentError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")


def train(
    model: torch.nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    *,
    loss: Callable,
    out_dir,
    epochs: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device=None,
    amp: bool | None = None,
    metric_fn: Callable | None = None,
    num_workers: int = 0,
    resume: bool = True,
    progress: bool = True,
    tensorboard: bool | None = None,
    schedule: str = "cosine",
) -> TrainResult:
    """Train ``model`` on ``train_ds``, validate on ``val_ds`` after every epoch, keep the best.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``image (N, C, H, W)`` to logits ``(N, L, H, W)``; trained in place.
    train_ds, val_ds : Dataset
        Samples in the batch format of this module (dicts with "image" and "label").
    loss : callable
        ``loss(logits, label)`` -> scalar tensor, e.g. :func:`segmentation_loss`.
    out_dir : path
        Run folder: ``last.pt``, ``best.pt``, ``metrics.csv`` (and ``tensorboard/``).
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    batch_size : int
        Samples per step and per process (under torchrun the global batch is ``world * batch_size``).
    lr, weight_decay : float
        AdamW peak learning rate and decoupled weight decay.
    seed : int
        Seeds Python, numpy and torch at the start of a fresh run, the shuffling of every epoch and
        the data-loader workers; the same seed gives the same run (on the same hardware).
    device : str, torch.device or None
        None: :func:`bonelab.config.device` (cuda when available); under torchrun ``cuda:LOCAL_RANK``.
    amp : bool or None
        Mixed precision; None means on for CUDA (float16 with a GradScaler), off on CPU
        (``amp=True`` on CPU uses bfloat16).
    metric_fn : callable or None
        ``metric_fn(logits, label)`` -> per-sample scores ``(N,)`` or a float (batch mean), higher
        is better; its mean over ``val_ds`` picks ``best.pt``.  None: the negative validation loss.
    num_workers : int
        DataLoader worker processes (seeded through ``worker_init_fn``).
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists (model, optimiser, schedule, scaler, random
        states, best metric, history).  On CPU an interrupted and resumed run ends with exactly the
        weights of an uninterrupted one.  False starts afresh and overwrites the folder's files.
    progress : bool
        Show a tqdm bar (main process only).
    tensorboard : bool or None
        Also log to TensorBoard: None when the ``tensorboard`` package is installed.
    schedule : "cosine", "onecycle" or "constant"
        Learning rate per step: cosine decay from ``lr`` to 0, one-cycle (warm-up to ``lr`` then
        annealing), or constant.

    Returns
    -------
    TrainResult

    Distributed training: launch the same script with ``torchrun --nproc_per_node=K script.py``;
    ``train`` joins the process group (gloo on CPU, nccl on CUDA), shards the training set with a
    DistributedSampler and validation by index, averages the metrics over all processes, and only
    rank 0 writes files and shows progress.

    Examples
    --------
    >>> import tempfile
    >>> from bonelab.models import unet2d
    >>> from bonelab.metrics import batch_dice
    >>> seed_everything(0); net = unet2d(out_channels=2, channels=(4, 8), num_res_units=0)
    >>> result = train(net, shapes_dataset(8, 16), shapes_dataset(4, 16, seed=1),
    ...                loss=segmentation_loss(), out_dir=tempfile.mkdtemp(), epochs=1,
    ...                batch_size=4, metric_fn=batch_dice, progress=False)
    >>> [row["epoch"] for row in result.history]
    [1]
    """
    _check_arguments(train_ds, val_ds, epochs, batch_size, lr, weight_decay, schedule, num_workers)
    ctx = _init_distributed(device)
    try:
        return _fit(model, train_ds, val_ds, ctx, loss=loss, out_dir=Path(out_dir), epochs=epochs,
                    batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, amp=amp,
                    metric_fn=metric_fn, num_workers=num_workers, resume=resume, progress=progress,
                    tensorboard=tensorboard, schedule=schedule)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _loaders(train_ds, val_ds, ctx: _Dist, batch_size, num_workers, seed, epoch):
    """This epoch's loaders: shuffled training batches (sharded under DDP), validation in order."""
    generator = _epoch_generator(seed, epoch, ctx.rank)
    _seed_transforms(train_ds, generator.initial_seed() % 2**32)  # used when num_workers == 0
    if ctx.world > 1:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        val_ds = Subset(val_ds, range(ctx.rank, len(val_ds), ctx.world))
    else:
        sampler = RandomSampler(train_ds, generator=generator)
    common = dict(batch_size=batch_size, num_workers=num_workers, worker_init_fn=_seed_worker,
                  generator=generator, pin_memory=ctx.device.type == "cuda")
    return DataLoader(train_ds, sampler=sampler, **common), DataLoader(val_ds, shuffle=False, **common)


@dataclass
class _Run:
    """The objects one run carries from epoch to epoch (all restored on resume)."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, wrapped in DistributedDataParallel when distributed
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype
    use_amp: bool
    config: dict

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.use_amp)


def _resume(run: _Run, last_path: Path) -> dict:
    """Restore model, optimiser, schedule, scaler and random states from ``last.pt``; return the
    loop state (epoch, best metric, best epoch, history)."""
    ckpt = _read_checkpoint(last_path)
    saved = ckpt["config"]
    changed = ", ".join(f"{k}={saved.get(k)!r}" for k in _RESUME_KEYS if saved.get(k) != run.config[k])
    if changed:
        raise InvalidArgumentError(
            f"{last_path} was written with different settings ({changed}); pass the same settings "
            "to resume, or resume=False / a new out_dir to start again."
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    return {k: ckpt[k] for k in ("epoch", "best_metric", "best_epoch", "history")}


def _train_epoch(run: _Run, loader, loss, ctx: _Dist, bar, epoch: int) -> tuple[float, int]:
    """One pass over the training batches; returns (sum of sample losses, samples seen)."""
    run.net.train()
    loss_sum, seen = 0.0, 0
    for batch in loader:
        image, label = _unpack(batch, ctx.device)
        run.optimizer.zero_grad(set_to_none=True)
        with run.autocast(ctx.device):
            logits = run.net(image)
        batch_loss = loss(logits.float(), label)  # the loss in float32, also under AMP
        run.scaler.scale(batch_loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        value = float(batch_loss.detach())
        loss_sum += value * len(image)
        seen += len(image)
        bar.update()
        bar.set_postfix(epoch=epoch, loss=f"{value:.4f}")
    return loss_sum, seen


def _validate(run: _Run, loader, loss, metric_fn, ctx: _Dist) -> tuple[float, int, float, int]:
    """Validation pass; returns (loss sum, samples, metric sum, metric count), NaN scores skipped."""
    run.net.eval()
    loss_sum, seen, metric_sum, metric_n = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for batch in loader:
            image, label = _unpack(batch, ctx.device)
            with run.autocast(ctx.device):
                logits = run.net(image)
            logits = logits.float()
            loss_sum += float(loss(logits, label)) * len(image)
            seen += len(image)
            if metric_fn is not None:
                scores = torch.as_tensor(metric_fn(logits, label), dtype=torch.float64).flatten().cpu()
                weight = len(image) if scores.numel() == 1 else 1  # a float is the batch mean
                valid = ~torch.isnan(scores)
                metric_sum += float(scores[valid].sum()) * weight
                metric_n += int(valid.sum()) * weight
    return loss_sum, seen, metric_sum, metric_n


def _save(run: _Run, state: dict, out_dir: Path, improved: bool, writer) -> None:
    """Write last.pt (and best.pt when improved), then metrics.csv, each atomically (rank 0)."""
    weights = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    row = state["history"][-1]
    common = {"format": CHECKPOINT_FORMAT, "epoch": state["epoch"], "model": weights,
              "config": run.config, "metric": row["val_metric"]}
    _save_atomic({**common, **state, "optimizer": run.optimizer.state_dict(),
                  "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                  "rng": _rng_state()}, out_dir / "last.pt")
    if improved:
        _save_atomic(common, out_dir / "best.pt")
    _write_csv_atomic(state["history"], out_dir / "metrics.csv")
    if writer is not None:
        for key in ("train_loss", "val_loss", "val_metric", "lr"):
            writer.add_scalar(key, row[key], state["epoch"])


def _fit(model, train_ds, val_ds, ctx: _Dist, *, loss, out_dir, epochs, batch_size, lr, weight_decay,
         seed, amp, metric_fn, num_workers, resume, progress, tensorboard, schedule) -> TrainResult:
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(ctx.device)
    use_amp = ctx.device.type == "cuda" if amp is None else bool(amp)
    amp_dtype = torch.float16 if ctx.device.type == "cuda" else torch.bfloat16
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / ctx.world) / batch_size)
    run = _Run(
        model=model, net=model, optimizer=optimizer,
        scheduler=_make_scheduler(optimizer, schedule, lr, epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=use_amp and amp_dtype == torch.float16),
        amp_dtype=amp_dtype, use_amp=use_amp,
        config=dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                    schedule=schedule, world_size=ctx.world),
    )
    if resume and (out_dir / "last.pt").exists():
        state = _resume(run, out_dir / "last.pt")
    else:
        state = {"epoch": 0, "best_metric": math.nan, "best_epoch": 0, "history": []}
        seed_everything(seed)
    if ctx.world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    writer = _tensorboard_writer(tensorboard, out_dir) if ctx.main else None
    bar = tqdm(total=epochs * steps_per_epoch, initial=state["epoch"] * steps_per_epoch,
               disable=not (progress and ctx.main), desc="training", unit="step")

    for epoch in range(state["epoch"] + 1, epochs + 1):
        start = time.perf_counter()
        train_loader, val_loader = _loaders(train_ds, val_ds, ctx, batch_size, num_workers, seed, epoch)
        loss_sum, seen = _train_epoch(run, train_loader, loss, ctx, bar, epoch)
        train_seconds = time.perf_counter() - start
        sums = ctx.sum([loss_sum, seen, *_validate(run, val_loader, loss, metric_fn, ctx)])
        loss_sum, seen, val_loss_sum, val_seen, metric_sum, metric_n = sums
        val_loss = val_loss_sum / val_seen
        metric = -val_loss if metric_fn is None else (metric_sum / metric_n if metric_n else math.nan)
        improved = state["best_epoch"] == 0 or metric > state["best_metric"] or (
            math.isnan(state["best_metric"]) and not math.isnan(metric))
        if improved:
            state["best_metric"], state["best_epoch"] = metric, epoch
        state["epoch"] = epoch
        state["history"].append({
            "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
            "val_loss": val_loss, "val_metric": metric, "improved": int(improved),
            "seconds": time.perf_counter() - start, "samples_per_s": seen / train_seconds,
        })
        bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.4f}", val=f"{metric:.4f}")
        if ctx.main:
            _save(run, state, out_dir, improved, writer)
        if ctx.world > 1:
            dist.barrier()

    bar.close()
    if writer is not None:
        writer.close()
    return TrainResult(out_dir, state["epoch"], state["best_epoch"], state["best_metric"], state["history"])
