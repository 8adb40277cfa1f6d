"""Train and evaluate segmentation networks on a :mod:`bonelab.simulate` data set.

The second half of the simulate -> train -> evaluate -> apply pipeline:

* :func:`train_segmentation`: a 2D U-Net on ``DIR/train_*`` with validation on ``DIR/val_*``
  (through :func:`bonelab.train.train`: checkpoints, resume, metrics.csv), optionally with
  random left-right flips (MONAI) to learn left and right wrists in one network.
* :func:`predict` and :func:`evaluate`: per-sample, per-bone Dice on a held-out split, with the
  view and the fraction of the bone hidden behind other bones next to each score;
  :func:`dice_table` groups them per view, :func:`format_table` prints them.
* The ``bonelab train`` command (:func:`add_train_arguments`, :func:`run_train`).

>>> # ds = simulate.simulate("data/wrist", subjects=40)
>>> # result = train_segmentation("data/wrist", "runs/wrist", epochs=20)
>>> # rows = evaluate(load_segmentation_model("runs/wrist"), "data/wrist", "test")
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_CHANNELS = (16, 32, 64, 128, 256)


def augmentation(flip: bool = False):
    """MONAI dict transforms for training samples: with ``flip``, a random left-right flip
    (p = 0.5) of image and label together, so that one network learns left and right wrists
    (the virtual wrists are all right ones; without flips a left wrist should be mirrored before
    segmentation, see :func:`bonelab.segment.segment_xray`'s ``mirror``).  Pose, zoom and
    acquisition variety come from the simulation itself."""
    from monai.transforms import Compose, RandFlipd

    return Compose([RandFlipd(keys=("image", "label"), prob=0.5 if flip else 0.0, spatial_axis=1)])


def segmentation_model(n_labels: int, channels=DEFAULT_CHANNELS, num_res_units: int = 1) -> torch.nn.Module:
    """The U-Net of this pipeline: :func:`bonelab.models.unet2d` with ``n_labels`` sigmoid outputs."""
    from bonelab.models import unet2d

    return unet2d(in_channels=1, out_channels=n_labels, channels=channels, num_res_units=num_res_units)


def train_segmentation(data, out, *, epochs: int = 20, batch_size: int = 16, lr: float = 3e-3,
                       channels=DEFAULT_CHANNELS, num_res_units: int = 1, seed: int = 0, flip: bool = False,
                       device=None, progress: bool = True, resume: bool = True):
    """Train a multi-label U-Net on a simulated data set folder ``data``; run folder ``out``.

    Writes ``out/model.json`` (the network settings and label names, for
    :func:`load_segmentation_model`) next to the checkpoints and ``metrics.csv`` of
    :func:`bonelab.train.train`.  Returns ``(model, TrainResult)``; the model holds the last
    epoch's weights (``best.pt`` the best validation Dice).
    """
    from bonelab import simulate
    from bonelab.metrics import batch_dice
    from bonelab.train import segmentation_loss, seed_everything, train

    info = simulate.dataset_info(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"n_labels": len(info["label_names"]), "channels": list(channels), "num_res_units": num_res_units,
            "label_names": info["label_names"], "size": info["H"],
            "pixel_spacing_mm_at_isocenter": info["pixel_spacing_mm_at_isocenter"]}
    (out / "model.json").write_text(json.dumps(spec, indent=1))
    seed_everything(seed)
    model = segmentation_model(spec["n_labels"], channels, num_res_units)
    train_ds = simulate.load_split(data, "train", transform=augmentation(flip))
    val_ds = simulate.load_split(data, "val")
    result = train(model, train_ds, val_ds, loss=segmentation_loss(), out_dir=out, epochs=epochs,
                   batch_size=batch_size, lr=lr, seed=seed, metric_fn=batch_dice, device=device,
                   progress=progress, resume=resume, schedule="onecycle")
    return model, result


def load_segmentation_model(run, checkpoint: str = "best.pt", device=None) -> torch.nn.Module:
    """The network of run folder ``run`` (``model.json`` + ``best.pt``), in eval mode; its
    settings are attached as ``model.bonelab_spec`` (label names, input size, pixel spacing)."""
    from bonelab.errors import MissingFileError
    from bonelab.train import load_weights

    run = Path(run)
    if not (run / "model.json").exists():
        raise MissingFileError(f"{run / 'model.json'} does not exist; is {run} a train_segmentation run folder?")
    spec = json.loads((run / "model.json").read_text())
    model = load_weights(segmentation_model(spec["n_labels"], spec["channels"], spec["num_res_units"]),
                       run / checkpoint, device=device)
    model.bonelab_spec = spec
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, images, *, batch_size: int = 32, device=None) -> np.ndarray:
    """Sigmoid probabilities (N, L, H, W) float32 of ``model`` for images (N, 1, H, W)."""
    from bonelab import config

    dev = config.device(device)
    model = model.to(dev).eval()
    outs = []
    for i in range(0, len(images), batch_size):
        x = torch.as_tensor(np.array(images[i:i + batch_size], dtype=np.float32), device=dev)
        outs.append(torch.sigmoid(model(x)).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def evaluate(model: torch.nn.Module, data, split: str = "test", *, threshold: float = 0.5, batch_size: int = 32,
             device=None, return_predictions: bool = False):
    """Dice of every bone in every sample of ``split``: a list of dicts (one per sample and bone)
    with ``subject``, ``view``, ``bone``, ``dice`` (NaN where the bone is absent from both masks),
    ``hidden`` (the fraction of the bone's true mask also covered by another bone,
    :func:`bonelab.simulate.hidden_fraction`) and ``index`` (the sample's row in the split).
    With ``return_predictions`` also the thresholded masks (N, L, H, W) bool.
    """
    from bonelab import simulate
    from bonelab.metrics import dice_per_label

    ds = simulate.load_split(data, split)
    names = simulate.dataset_info(data)["label_names"]
    meta = simulate.read_metadata(data, split)
    pred = predict(model, ds.images, batch_size=batch_size, device=device) > threshold
    rows = []
    for i, m in enumerate(meta):
        truth = np.asarray(ds.labels[i]) > 0
        dice, hidden = dice_per_label(pred[i], truth), simulate.hidden_fraction(truth)
        for b, name in enumerate(names):
            rows.append({"index": i, "subject": m["subject"], "view": m["view"], "bone": name,
                         "dice": float(dice[b]), "hidden": float(hidden[b])})
    return (rows, pred) if return_predictions else rows


def dice_table(rows, views=("pa", "oblique", "lateral")) -> dict:
    """Mean Dice per bone and view from :func:`evaluate` rows: ``{bone: {view: mean, ...,
    "all": mean}}`` plus a ``"mean"`` row (the mean over bones of each column)."""
    bones = list(dict.fromkeys(r["bone"] for r in rows))
    table = {}
    for b in bones:
        table[b] = {v: _nanmean([r["dice"] for r in rows if r["bone"] == b and v in ("all", r["view"])])
                    for v in (*views, "all")}
    table["mean"] = {v: _nanmean([table[b][v] for b in bones]) for v in (*views, "all")}
    return table


def _nanmean(values) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else math.nan


def format_table(table: dict) -> str:
    """A plain-text table of :func:`dice_table` (bones as rows, views as columns)."""
    cols = list(next(iter(table.values())))
    lines = [f"{'bone':<12}" + "".join(f"{c:>10}" for c in cols)]
    for bone, row in table.items():
        lines.append(f"{bone:<12}" + "".join(f"{row[c]:>10.3f}" for c in cols))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line: bonelab train wrist --data DIR --out RUN
# --------------------------------------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bonelab train``."""
    parser.add_argument("task", choices=["wrist"], help="what to train (wrist: bone segmentation)")
    parser.add_argument("--data", required=True, metavar="DIR", help="data set folder from bonelab simulate")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (resumed if it holds last.pt)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--channels", type=int, nargs="+", default=list(DEFAULT_CHANNELS))
    parser.add_argument("--res-units", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--flip", action="store_true", help="random left-right flips (left and right wrists)")


def run_train(args) -> int:
    """Run ``bonelab train`` from parsed arguments; prints the test Dice per view when the data
    set has a test split."""
    start = time.perf_counter()
    _, result = train_segmentation(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, channels=tuple(args.channels), num_res_units=args.res_units,
                                   seed=args.seed, flip=args.flip, device=args.device)
    print(f"trained {result.epochs} epochs in {time.perf_counter() - start:.0f} s; best validation Dice "
          f"{result.best_metric:.3f} (epoch {result.best_epoch}) -> {result.best_checkpoint}")
    if (Path(args.data) / "test_images.npy").exists():
        rows = evaluate(load_segmentation_model(args.out, device=args.device), args.data, "test", device=args.device)
        print(format_table(dice_table(rows)))
    return 0

