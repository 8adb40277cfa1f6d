"""One training loop for every chapter: :func:`train`, driven by a :class:`TrainingTask`.

What the loop does, so that chapters do not repeat it: AdamW with a cosine or one-cycle schedule,
automatic mixed precision on CUDA, a checkpoint written atomically every epoch (``last.pt``) and
on every improvement of the validation metric (``best.pt``), resume from ``last.pt``, one row of
metrics per epoch in ``metrics.csv`` (and TensorBoard when installed), a progress bar, fixed seeds,
a stop with an error at the first non-finite loss, and DistributedDataParallel when launched with
``torchrun``.

Tasks
-----
What differs between segmentation, regression, detection and 3D patches lives in a task object
(in the manner of MONAI's ``prepare_batch`` and d2l's ``training_step``):

* :class:`SupervisedTask`: ``model(image) -> output``, ``loss(output, target)``, optionally
  ``metric_fn(output, target)``; segmentation, image-to-image regression, 3D patches
  ``(N, C, D, H, W)``.  ``train(..., loss=, metric_fn=)`` is shorthand for
  ``train(..., task=SupervisedTask(loss, metric_fn))``.
* :class:`DetectionTask`: torchvision-style detection models (Mask R-CNN): list batches, the
  model's loss dict, a matched-IoU score per image.
* A new kind of task subclasses :class:`TrainingTask` (see its methods).

A loss (a task's ``training_loss``) returns a scalar tensor or a dict of named scalar tensors whose
``"loss"`` is the total that is backpropagated; every other name is logged as ``train_<name>`` and
``val_<name>`` columns of ``metrics.csv`` (after the fixed :data:`CSV_COLUMNS`, sorted by name) and
as TensorBoard scalars.  The sample formats are described in :mod:`bonelab.datasets`.

Checkpoints
-----------
``last.pt`` and ``best.pt`` hold only tensors and plain containers (state dicts, numbers, strings,
lists, dicts) so they load with ``torch.load(path, weights_only=True)``, which executes no code.
Keys: ``format``, ``epoch`` (epochs completed), ``model`` (state dict), ``config``, ``metric``,
``metric_name``, and in ``last.pt`` also ``optimizer``, ``scheduler``, ``scaler``, ``rng``,
``best_metric``, ``best_epoch``, ``history``.  Use :func:`load_weights` to put the weights into a
network; with ``train(..., spec=ModelSpec(...))`` the run folder also holds ``model.json`` and
:func:`bonelab.models.load_model` rebuilds the network from it.
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
from bonelab.datasets import DictDataset, shapes_dataset
from bonelab.errors import InvalidArgumentError, InvalidValuesError, MissingFileError, UnreadableFileError
from bonelab.files import atomic_path, write_text
from bonelab.losses import DiceBCELoss, segmentation_loss
from bonelab.metrics import mask_iou, matched_iou
from bonelab.steps import DetectionTask, SupervisedTask, TrainingTask, _terms

__all__ = [
    "CSV_COLUMNS", "DetectionTask", "DiceBCELoss", "DictDataset", "SupervisedTask", "TrainResult",
    "TrainingTask", "load_weights", "mask_iou", "matched_iou", "seed_everything", "segmentation_loss",
    "shapes_dataset", "train",
]  # re-exported: DictDataset, shapes_dataset (bonelab.datasets), the losses (bonelab.losses), the
#   tasks (bonelab.steps) and the IoU helpers (bonelab.metrics)

CHECKPOINT_FORMAT = "bonelab-checkpoint-1"
SCHEDULES = ("cosine", "onecycle", "constant")
CSV_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_metric", "improved", "seconds", "samples_per_s")
# Settings that change the result: a resumed run must use the same ones.
_RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "schedule", "world_size")


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
    """torch.save through :func:`bonelab.files.atomic_path` (never half-written)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _csv_columns(rows: list[dict]) -> list[str]:
    """The fixed columns, then the named loss terms: ``train_*`` sorted, then ``val_*`` sorted."""
    extra = {key for row in rows for key in row} - set(CSV_COLUMNS)
    return [*CSV_COLUMNS, *sorted(k for k in extra if k.startswith("train_")),
            *sorted(k for k in extra if not k.startswith("train_"))]


def _write_csv_atomic(rows: list[dict], path: Path) -> None:
    """Rewrite the whole metrics table from the checkpoint's history, so after an interruption
    the CSV always matches ``last.pt`` (appending could leave a row of an epoch that was lost)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_csv_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


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
    metric_name: str = "neg_val_loss"  # what val_metric and best_metric measure

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

    def sum(self, values: dict) -> dict:
        """Sum named numbers over all processes, key by key (identity when not distributed).  Keys
        may differ between processes (a rank without validation batches has no loss terms)."""
        if self.world == 1:
            return values
        gathered = [None] * self.world
        dist.all_gather_object(gathered, values)
        return {k: sum(d.get(k, 0.0) for d in gathered) for k in sorted(set().union(*gathered))}

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is True on any process."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


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


def _choose_task(task, loss, metric_fn) -> TrainingTask:
    """The task of a run: ``task``, or a :class:`SupervisedTask` of ``loss`` and ``metric_fn``."""
    if (task is None) == (loss is None):
        raise InvalidArgumentError("pass exactly one of task= (a bonelab.train.TrainingTask) and loss= "
                                   "(shorthand for task=SupervisedTask(loss, metric_fn)).")
    if task is None:
        return SupervisedTask(loss, metric_fn)
    if metric_fn is not None:
        raise InvalidArgumentError("metric_fn= goes with loss=; with task= the task scores validation "
                                   "(e.g. SupervisedTask(loss, metric_fn)).")
    if not isinstance(task, TrainingTask):
        raise InvalidArgumentError(f"task must be a bonelab.train.TrainingTask (e.g. SupervisedTask, DetectionTask), "
                                   f"got {type(task).__name__}.")
    return task


def _check_spec(spec, model: torch.nn.Module) -> None:
    """Refuse a spec whose network would not take ``model``'s weights (before any work)."""
    from bonelab.models import ModelSpec

    if not isinstance(spec, ModelSpec):
        raise InvalidArgumentError(f"spec must be a bonelab.models.ModelSpec, got {type(spec).__name__}.")
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        built = {k: v.shape for k, v in spec.build().state_dict().items()}
    trained = {k: v.shape for k, v in model.state_dict().items()}
    if built != trained:
        differ = sorted(set(built) ^ set(trained)) or [k for k in built if built[k] != trained[k]]
        raise InvalidArgumentError(
            f"spec {spec.architecture}({spec.settings}) builds a network whose weights do not match the model's "
            f"(first difference: {differ[0]!r}); pass the spec the model was built from.")


def train(
    model: torch.nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    *,
    out_dir,
    epochs: int,
    loss: Callable | None = None,
    metric_fn: Callable | None = None,
    task: TrainingTask | None = None,
    spec=None,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device=None,
    amp: bool | None = None,
    channels_last: bool = False,
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
        The network; trained in place.  What it takes and returns is the task's business (for
        :class:`SupervisedTask`: ``image (N, C, H, W)`` or ``(N, C, D, H, W)`` -> output).
    train_ds, val_ds : Dataset
        Samples in the task's format (:mod:`bonelab.datasets`).
    out_dir : path
        Run folder: ``last.pt``, ``best.pt``, ``metrics.csv`` (and ``tensorboard/``, ``model.json``).
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    loss, metric_fn : callable
        Shorthand for ``task=SupervisedTask(loss, metric_fn)`` (see :class:`SupervisedTask`).
    task : TrainingTask
        What is trained and how it is scored; pass either ``task`` or ``loss``.
    spec : bonelab.models.ModelSpec or None
        Written to ``out_dir/model.json`` before the first epoch, so that
        :func:`bonelab.models.load_model` can rebuild the network; it must build a network with
        ``model``'s weight shapes.
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
    channels_last : bool
        Store a 2-D network's weights channels-last (NHWC) while it trains, so that its
        convolutions run oneDNN's channels-last kernels; the arithmetic is the same, the rounding
        order differs, and the model is returned in the default layout.  Off by default: on this
        project's 2-core CPU ``python benchmarks/memory_format.py`` measured chapter 3's training
        loop no faster channels-last (0.96x), although a U-Net training step timed alone ran 2.5x
        faster.
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

    Raises
    ------
    InvalidArgumentError
        Impossible settings, a sample the task cannot use, a loss without a "loss" total.
    InvalidValuesError
        A non-finite training loss (names the epoch and step; nothing is trained on NaN).

    Notes
    -----
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
    ...                task=SupervisedTask(segmentation_loss(), batch_dice), out_dir=tempfile.mkdtemp(),
    ...                epochs=1, batch_size=4, progress=False)
    >>> [row["epoch"] for row in result.history], result.metric_name
    ([1], 'batch_dice')
    """
    _check_arguments(train_ds, val_ds, epochs, batch_size, lr, weight_decay, schedule, num_workers)
    task = _choose_task(task, loss, metric_fn)
    if spec is not None:
        _check_spec(spec, model)
    if channels_last:
        _check_channels_last(model)
    ctx = _init_distributed(device)
    try:
        return _fit(model, train_ds, val_ds, ctx, task=task, spec=spec, out_dir=Path(out_dir), epochs=epochs,
                    batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, amp=amp,
                    channels_last=channels_last, num_workers=num_workers, resume=resume, progress=progress,
                    tensorboard=tensorboard, schedule=schedule)
    finally:
        if channels_last:  # back to the default layout: it then computes exactly as load_model's does
            model.to(memory_format=torch.contiguous_format)
        if ctx.owns_group:
            dist.destroy_process_group()


def _loaders(train_ds, val_ds, ctx: _Dist, task: TrainingTask, batch_size, num_workers, seed, epoch):
    """This epoch's loaders: shuffled training batches (sharded under DDP), validation in order."""
    generator = _epoch_generator(seed, epoch, ctx.rank)
    _seed_transforms(train_ds, generator.initial_seed() % 2**32)  # used when num_workers == 0
    if ctx.world > 1:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        val_ds = Subset(val_ds, range(ctx.rank, len(val_ds), ctx.world))
    else:
        sampler = RandomSampler(train_ds, generator=generator)
    common = {"batch_size": batch_size, "num_workers": num_workers, "worker_init_fn": _seed_worker,
              "generator": generator, "pin_memory": ctx.device.type == "cuda", "collate_fn": task.collate}
    return DataLoader(train_ds, sampler=sampler, **common), DataLoader(val_ds, shuffle=False, **common)


@dataclass
class _Run:
    """The objects one run carries from epoch to epoch (all restored on resume)."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, wrapped in DistributedDataParallel when distributed
    task: TrainingTask
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


def _check_finite_loss(terms: dict, ctx: _Dist, epoch: int, step: int) -> None:
    """Stop (on every process together) at the first non-finite loss instead of training on it."""
    if ctx.any(not bool(torch.isfinite(terms["loss"].detach()).all())):
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise InvalidValuesError(
            f"the training loss is not finite at epoch {epoch}, step {step} ({values}, on some process); "
            "lower lr, check the inputs for NaN (bonelab.files.check_finite), or try amp=False.  "
            "last.pt holds the previous epoch.")


def _train_epoch(run: _Run, loader, ctx: _Dist, bar, epoch: int) -> dict:
    """One pass over the training batches; returns the sample-weighted sums of every loss term
    (``train_<name>``) and ``samples``."""
    run.net.train()
    sums = {"samples": 0}
    for step, batch in enumerate(loader, start=1):
        batch = run.task.prepare_batch(batch, ctx.device)
        n = run.task.batch_size(batch)
        run.optimizer.zero_grad(set_to_none=True)
        with run.autocast(ctx.device):
            terms = _terms(run.task.training_loss(run.net, batch), f"{type(run.task).__name__}.training_loss")
        _check_finite_loss(terms, ctx, epoch, step)
        run.scaler.scale(terms["loss"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        for name, value in terms.items():
            sums[f"train_{name}"] = sums.get(f"train_{name}", 0.0) + float(value.detach()) * n
        sums["samples"] += n
        bar.update()
        bar.set_postfix(epoch=epoch, loss=f"{float(terms['loss'].detach()):.4f}")
    return sums


def _validate(run: _Run, loader, ctx: _Dist) -> dict:
    """Validation pass; returns sample-weighted sums of the named terms (``val_<name>``),
    ``val_samples``, and the sum and count of the defined scores (NaN skipped)."""
    run.net.eval()
    sums = {"val_samples": 0, "score_sum": 0.0, "score_count": 0, "scored_batches": 0}
    with torch.no_grad():
        for batch in loader:
            batch = run.task.prepare_batch(batch, ctx.device)
            n = run.task.batch_size(batch)
            with run.autocast(ctx.device):
                terms, scores = run.task.validation_step(run.net, batch)
            for name, value in terms.items():
                sums[f"val_{name}"] = sums.get(f"val_{name}", 0.0) + float(value) * n
            sums["val_samples"] += n
            if scores is not None:
                scores = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
                valid = ~torch.isnan(scores)
                sums["score_sum"] += float(scores[valid].sum())
                sums["score_count"] += int(valid.sum())
                sums["scored_batches"] += 1
    return sums


def _epoch_row(sums: dict, task: TrainingTask) -> dict:
    """Epoch means of the reduced sums: train_*/val_* terms and the validation metric."""
    means = {k: v / sums["samples"] for k, v in sums.items() if k.startswith("train_")}
    means.update({k: v / sums["val_samples"] for k, v in sums.items() if k.startswith("val_")
                  and k != "val_samples"})
    means.setdefault("val_loss", math.nan)
    if sums["scored_batches"]:
        metric = sums["score_sum"] / sums["score_count"] if sums["score_count"] else math.nan
    elif not math.isnan(means["val_loss"]):
        metric = -means["val_loss"]
    else:
        raise InvalidArgumentError(
            f"{type(task).__name__}.validation_step returned neither a 'loss' term nor scores, so no model "
            "can be called best; return per-sample scores or a validation loss.")
    return {**means, "val_metric": metric}


def _save(run: _Run, state: dict, out_dir: Path, improved: bool, writer) -> None:
    """Write last.pt (and best.pt when improved), then metrics.csv, each atomically (rank 0)."""
    weights = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    row = state["history"][-1]
    common = {"format": CHECKPOINT_FORMAT, "epoch": state["epoch"], "model": weights,
              "config": run.config, "metric": row["val_metric"], "metric_name": run.task.metric_name}
    _save_atomic({**common, **state, "optimizer": run.optimizer.state_dict(),
                  "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                  "rng": _rng_state()}, out_dir / "last.pt")
    if improved:
        _save_atomic(common, out_dir / "best.pt")
    _write_csv_atomic(state["history"], out_dir / "metrics.csv")
    if writer is not None:
        for key in _csv_columns([row]):
            if key == "lr" or key.startswith(("train_", "val_")):
                writer.add_scalar(key, row[key], state["epoch"])


def _check_channels_last(model: torch.nn.Module) -> None:
    """``train(channels_last=True)`` needs a network whose convolutions are all 2-D (5-D weights
    cannot be laid out channels-last)."""
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}
    if not kinds or not all(issubclass(k, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for k in kinds):
        raise InvalidArgumentError("channels_last=True needs a network whose convolutions are all 2-D "
                                   f"(this one has {sorted(k.__name__ for k in kinds) or 'none'})")


def _fit(model, train_ds, val_ds, ctx: _Dist, *, task, spec, out_dir, epochs, batch_size, lr, weight_decay,
         seed, amp, channels_last, num_workers, resume, progress, tensorboard, schedule) -> TrainResult:
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    if spec is not None and ctx.main:
        from bonelab.models import save_spec

        save_spec(out_dir, spec)
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    use_amp = ctx.device.type == "cuda" if amp is None else bool(amp)
    amp_dtype = torch.float16 if ctx.device.type == "cuda" else torch.bfloat16
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / ctx.world) / batch_size)
    run = _Run(
        model=model, net=model, task=task, optimizer=optimizer,
        scheduler=_make_scheduler(optimizer, schedule, lr, epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=use_amp and amp_dtype == torch.float16),
        amp_dtype=amp_dtype, use_amp=use_amp,
        config={"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "seed": seed, "schedule": schedule, "world_size": ctx.world, "task": type(task).__name__},
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
        train_loader, val_loader = _loaders(train_ds, val_ds, ctx, task, batch_size, num_workers, seed, epoch)
        train_sums = _train_epoch(run, train_loader, ctx, bar, epoch)
        train_seconds = time.perf_counter() - start
        sums = ctx.sum({**train_sums, **_validate(run, val_loader, ctx)})
        means = _epoch_row(sums, task)
        metric = means["val_metric"]
        improved = state["best_epoch"] == 0 or metric > state["best_metric"] or (
            math.isnan(state["best_metric"]) and not math.isnan(metric))
        if improved:
            state["best_metric"], state["best_epoch"] = metric, epoch
        state["epoch"] = epoch
        state["history"].append({
            "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **means, "improved": int(improved),
            "seconds": time.perf_counter() - start, "samples_per_s": sums["samples"] / train_seconds,
        })
        bar.set_postfix(epoch=epoch, loss=f"{means['train_loss']:.4f}", val=f"{metric:.4f}")
        if ctx.main:
            _save(run, state, out_dir, improved, writer)
        if ctx.world > 1:
            dist.barrier()

    bar.close()
    if writer is not None:
        writer.close()
    return TrainResult(out_dir, state["epoch"], state["best_epoch"], state["best_metric"], state["history"],
                       task.metric_name)
