"""The wrist task of chapter 3: multi-label segmentation of 10 bones in simulated radiographs.

simulate (protocol ``wrist``, target ``masks``) -> :func:`train` -> :func:`evaluate` -> apply
(:func:`bonelab.segment.segment_xray` with the run folder):

* :func:`train`: a 2D U-Net (:func:`bonelab.models.unet2d`) with one sigmoid output per bone,
  trained with Dice + BCE per channel through :func:`bonelab.train.train` (checkpoints, resume,
  metrics.csv); the run folder holds the model spec, so :func:`bonelab.models.load_model` rebuilds it.
* :func:`evaluate`: per-sample, per-bone Dice on a held-out split with the view and the fraction of
  the bone hidden behind other bones next to each score (a pandas DataFrame);
  :func:`dice_table` groups it per view, :func:`subject_ci` adds a bootstrap confidence interval
  over test subjects.
* :func:`position_baseline`: an image-free baseline (the mean training mask of each view,
  thresholded at 0.5, predicted for every test image): what a network scores by knowing only
  where bones usually are.  A network's gain over it is what it learnt from the image.

>>> # simulate.simulate("data/wrist", "wrist", subjects=40)
>>> # model, result = train("data/wrist", "runs/wrist", epochs=20)
>>> # rows = evaluate(load_model("runs/wrist"), "data/wrist", "test")
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bonelab.models import load_model as load_model  # the task's trained network: load_model(run)

NAME = "wrist"
DESCRIPTION = "wrist bone segmentation (10 bones, multi-label U-Net) on a simulated data set"
PROTOCOL = "wrist"
TARGETS = ("masks",)
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
VIEWS = ("pa", "oblique", "lateral")


def augmentation(flip: bool = False):
    """MONAI dict transforms for training samples: with ``flip``, a random left-right flip
    (p = 0.5) of image and label together.  A hung film flipped left-right is the film of the
    mirror-image wrist, i.e. of a wrist of the other side hung the clinical way
    (``tests/test_protocols.py::test_mirrored_subject_mirrors_the_film``), so flips add subjects
    for free; the protocol draws both sides already."""
    from monai.transforms import Compose, RandFlipd

    return Compose([RandFlipd(keys=("image", "label"), prob=0.5 if flip else 0.0, spatial_axis=1)])


def model_spec(info: dict, channels=DEFAULT_CHANNELS, num_res_units: int = 1):
    """The :class:`~bonelab.models.ModelSpec` of this task's U-Net for data set ``info``."""
    from bonelab.models import ModelSpec

    spacing = info["pixel_spacing_mm_at_isocenter"]
    return ModelSpec("unet2d", {"in_channels": 1, "out_channels": len(info["label_names"]),
                                "channels": list(channels), "num_res_units": num_res_units},
                     task=NAME, label_names=tuple(info["label_names"]), input_size=(info["H"], info["W"]),
                     input_spacing_mm=(spacing, spacing), extra={"protocol": info["protocol"]})


def train(data, out, *, epochs: int = 20, batch_size: int = 16, lr: float = 3e-3, channels=DEFAULT_CHANNELS,
          num_res_units: int = 1, seed: int = 0, flip: bool = False, device=None, progress: bool = True,
          resume: bool = True, amp: bool | None = None):
    """Train the multi-label U-Net on simulated data set ``data`` (protocol ``wrist``, target
    ``masks``) into run folder ``out``.  Returns ``(model, TrainResult)``; the model holds the last
    epoch's weights (``best.pt`` the best validation Dice, what :func:`load_model` loads).

    ``amp``: mixed precision; None trains in bfloat16 on CPUs with bfloat16 matrix units
    (:func:`bonelab.config.bfloat16_where_fast`) and leaves CUDA to :func:`bonelab.train.train`
    (float16).  On chapter 3's data (80 subjects, 5 films per view, 128 px, 40 epochs) bfloat16
    trained at 159 films/s against 118 in float32 on this project's 2-core Xeon and reached the
    same test Dice (0.807 against 0.806)."""
    from bonelab import simulate
    from bonelab.config import bfloat16_where_fast
    from bonelab.losses import segmentation_loss
    from bonelab.metrics import batch_dice
    from bonelab.tasks import check_dataset, task
    from bonelab.train import seed_everything
    from bonelab.train import train as train_loop

    info = check_dataset(data, task(NAME))
    spec = model_spec(info, channels, num_res_units)
    seed_everything(seed)
    model = spec.build()
    train_ds = simulate.load_split(data, "train", transform=augmentation(flip))
    val_ds = simulate.load_split(data, "val")
    result = train_loop(model, train_ds, val_ds, loss=segmentation_loss(), out_dir=out, epochs=epochs,
                        batch_size=batch_size, lr=lr, seed=seed, metric_fn=batch_dice, device=device,
                        progress=progress, resume=resume, schedule="onecycle", spec=spec,
                        amp=bfloat16_where_fast(amp, device))
    return model, result


def predict(model: torch.nn.Module, images, *, batch_size: int = 32, flip_average: bool = False,
            device=None) -> np.ndarray:
    """Sigmoid probabilities (N, L, H, W) float32 of ``model`` for images (N, 1, H, W).

    ``flip_average``: also predict the left-right flipped image, flip the probabilities back and
    average the two (test-time augmentation).  Exact for hung wrist films: the flipped film is
    the film of the mirror-image wrist, whose bones are the same bones flipped
    (see :func:`augmentation`)."""
    from bonelab.tasks import predict_batches

    def probabilities(net, x):
        p = torch.sigmoid(net(x))
        return 0.5 * (p + torch.sigmoid(net(x.flip(-1))).flip(-1)) if flip_average else p

    return predict_batches(model, images, probabilities, batch_size=batch_size, device=device)


def score(pred, data, split: str = "test"):
    """Dice of every bone in every sample of ``split`` for predicted masks ``pred`` (N, L, H, W)
    bool: a DataFrame with ``index`` (row in the split), ``subject``, ``view``, ``bone``, ``dice``
    (NaN where the bone is absent from both masks) and ``hidden`` (the fraction of the bone's true
    mask also covered by another bone, :func:`bonelab.metrics.hidden_fraction`) and ``pixels``
    (the bone's true mask area in pixels: what the detector resolution sets)."""
    import pandas as pd

    from bonelab import simulate
    from bonelab.metrics import dice_per_label, hidden_fraction

    ds = simulate.load_split(data, split)
    names = simulate.dataset_info(data)["label_names"]
    meta = simulate.metadata(data, split)
    rows = []
    for i, (subject, view) in enumerate(zip(meta["subject"], meta["view"])):
        truth = np.asarray(ds.targets[i]) > 0
        dice, hidden = dice_per_label(pred[i], truth), hidden_fraction(truth)
        area = truth.reshape(len(names), -1).sum(axis=1)
        rows += [{"index": i, "subject": subject, "view": view, "bone": name, "dice": float(dice[b]),
                  "hidden": float(hidden[b]), "pixels": int(area[b])} for b, name in enumerate(names)]
    return pd.DataFrame(rows)


def evaluate(model: torch.nn.Module, data, split: str = "test", *, threshold: float = 0.5, batch_size: int = 32,
             flip_average: bool = False, device=None, return_predictions: bool = False):
    """:func:`score` of ``model``'s thresholded predictions (:func:`predict`, with
    ``flip_average`` if asked) on ``split``; with ``return_predictions`` also the masks
    (N, L, H, W) bool."""
    from bonelab import simulate

    pred = predict(model, simulate.load_split(data, split).images, batch_size=batch_size,
                   flip_average=flip_average, device=device) > threshold
    rows = score(pred, data, split)
    return (rows, pred) if return_predictions else rows


def position_baseline(data, split: str = "test", *, threshold: float = 0.5):
    """The image-free baseline: for each view, the mean training mask (over every training
    sample of that view) thresholded at ``threshold``, predicted for every image of ``split``.
    Returns the :func:`score` DataFrame of those predictions."""
    from bonelab import simulate

    train = simulate.load_split(data, "train")
    train_views = simulate.metadata(data, "train")["view"].to_numpy()
    views = simulate.metadata(data, split)["view"].to_numpy()
    prior = {v: np.asarray(train.targets[np.flatnonzero(train_views == v)], np.float32).mean(axis=0) > threshold
             for v in np.unique(views)}
    pred = np.stack([prior[v] for v in views])
    return score(pred, data, split)


def dice_table(rows, views=VIEWS):
    """Mean Dice per bone (rows, in label order) and view (columns, plus ``all``) from
    :func:`score` rows, and a ``mean`` row (the mean over bones of each column)."""
    import pandas as pd

    bones = list(dict.fromkeys(rows["bone"]))
    table = rows.pivot_table(index="bone", columns="view", values="dice", aggfunc="mean").reindex(bones)
    table = table.reindex(columns=[v for v in views if v in table.columns])
    table["all"] = rows.groupby("bone")["dice"].mean().reindex(bones)
    return pd.concat([table, table.mean().to_frame("mean").T])


def subject_ci(rows, *, by_view: bool = True, confidence: float = 0.95, seed: int = 0):
    """Mean Dice with a bootstrap confidence interval over test subjects (per view and ``all``):
    a DataFrame with ``dice``, ``low``, ``high``, ``subjects``.  Each subject's mean Dice is one
    observation (images of one subject are not independent); see
    :func:`bonelab.metrics.bootstrap_ci`."""
    import pandas as pd

    from bonelab.metrics import bootstrap_ci

    groups = {**({v: rows[rows["view"] == v] for v in VIEWS if (rows["view"] == v).any()} if by_view else {}),
              "all": rows}
    out = {}
    for name, part in groups.items():
        per_subject = part.groupby("subject")["dice"].mean().dropna().to_numpy()
        mean, low, high = bootstrap_ci(per_subject, confidence=confidence, seed=seed)
        out[name] = {"dice": mean, "low": low, "high": high, "subjects": len(per_subject)}
    return pd.DataFrame(out).T


# --------------------------------------------------------------------------------------------
# Command line: bonelab train wrist --data DIR --out RUN
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bonelab train wrist``."""
    parser.add_argument("--data", required=True, metavar="DIR", help="data set folder from bonelab simulate wrist")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (resumed if it holds last.pt)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--channels", type=int, nargs="+", default=list(DEFAULT_CHANNELS))
    parser.add_argument("--res-units", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--flip", action="store_true", help="random left-right flips")


def run(args) -> int:
    """Run ``bonelab train wrist``; prints the test Dice per view when the data set has a test split."""
    start = time.perf_counter()
    _, result = train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      channels=tuple(args.channels), num_res_units=args.res_units, seed=args.seed, flip=args.flip,
                      device=args.device)
    print(f"trained {result.epochs} epochs in {time.perf_counter() - start:.0f} s; best validation Dice "
          f"{result.best_metric:.3f} (epoch {result.best_epoch}) -> {result.best_checkpoint}")
    if (Path(args.data) / "test_images.npy").exists():
        rows = evaluate(load_model(args.out, device=args.device), args.data, "test", device=args.device)
        print(dice_table(rows).round(3).to_string())
    return 0
