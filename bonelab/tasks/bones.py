"""The bone-extraction task of chapter 4: a radiograph or CT localizer in, its bone-only radiograph out.

simulate (protocol ``localizer``, target ``bone-radiograph``) -> :func:`train` -> :func:`evaluate`
-> apply (:func:`bonelab.extract_bones` with the run folder):

* :func:`train`: a 2D U-Net (:func:`bonelab.models.unet2d`, MONAI's ``UNet``) with one linear
  output channel, regressing the bone image of the input's view and physics (what the bones add
  to the film as it is displayed: :class:`bonelab.simulate.targets.BoneRadiographTarget`), with an
  image loss by name (:func:`bonelab.losses.image_loss`: ``"l1"``, ``"l1+ssim"``,
  ``"l1+ms-ssim"``) through :func:`bonelab.train.train`; the run folder holds the model spec.
* :func:`predict`: the network's bone image, clamped to the display range [0, 1] (optionally the
  mean of the image's and its mirror image's, ``flip_average``).
* :func:`evaluate`: RMSE, PSNR, SSIM and MS-SSIM of every sample of a split
  (:func:`bonelab.metrics.image_quality`), on the 0-1 scale and on the paper's 0-255 scale, with
  the view and subject of each (a pandas DataFrame); :func:`quality_table` averages per view.

Images are (N, 1, H, W) float32 in [0, 1], bone bright; rows run from the top of the hung film.

>>> # simulate.simulate("data/bones", "localizer", subjects=40, target="bone-radiograph")
>>> # model, result = train("data/bones", "runs/bones", epochs=20, loss="l1+ms-ssim")
>>> # rows = evaluate(load_model("runs/bones"), "data/bones", "test")
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bonelab.models import load_model as load_model  # the task's trained network: load_model(run)

NAME = "bones"
DESCRIPTION = "bone extraction: radiograph or CT localizer -> bone-only radiograph (U-Net regression)"
PROTOCOL = "localizer"
TARGETS = ("bone-radiograph",)
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
WIN_SIZE = 7
"""Gaussian window (pixels) of the SSIM terms: MS-SSIM over 5 scales needs 7 * 2**4 = 112 px
per side with it (an 11-px window needs 176), so 128-px images can use MS-SSIM."""
METRICS = ("rmse", "psnr", "ssim", "ms_ssim")


def augmentation(flip: bool = False, affine: bool = False, side_px: int = 128):
    """MONAI dict transforms for training samples, applied to input and target together.

    * ``flip``: a random left-right flip (p = 0.5): the films of a mirror-image body, whose bone
      image is the mirrored bone image (bones are close to left-right symmetric, so the flipped
      films are plausible subjects; the heart's side is not what the network learns).
    * ``affine``: in 80 % of the samples a random rotation (up to 8 degrees), scaling (up to
      10 %) and shift (up to 6 % of the image side ``side_px``, pixels), bilinear, zeros outside:
      other positionings of the same body.
    """
    from monai.transforms import Compose, RandAffined, RandFlipd

    keys = ("image", "target")
    steps = [RandFlipd(keys=keys, prob=0.5 if flip else 0.0, spatial_axis=1)]
    if affine:
        steps.append(RandAffined(keys=keys, prob=0.8, rotate_range=np.deg2rad(8.0), scale_range=0.1,
                                 translate_range=0.06 * side_px, mode="bilinear", padding_mode="zeros"))
    return Compose(steps)


def model_spec(info: dict, channels=DEFAULT_CHANNELS, num_res_units: int = 1, loss: str = "l1+ms-ssim"):
    """The :class:`~bonelab.models.ModelSpec` of this task's U-Net for data set ``info``."""
    from bonelab.models import ModelSpec

    spacing = info["pixel_spacing_mm_at_isocenter"]
    return ModelSpec("unet2d", {"in_channels": 1, "out_channels": 1, "channels": list(channels),
                                "num_res_units": num_res_units},
                     task=NAME, label_names=("bone",), input_size=(info["H"], info["W"]),
                     input_spacing_mm=(spacing, spacing),
                     extra={"protocol": info["protocol"], "loss": loss, "bone": info["target"].get("bone")})


def train(data, out, *, loss: str = "l1+ms-ssim", epochs: int = 20, batch_size: int = 16, lr: float = 3e-3,
          channels=DEFAULT_CHANNELS, num_res_units: int = 1, flip: bool = False, affine: bool = False,
          seed: int = 0, device=None, progress: bool = True, resume: bool = True):
    """Train the bone-extraction U-Net on simulated data set ``data`` (target ``bone-radiograph``)
    into run folder ``out`` with image loss ``loss`` (:func:`bonelab.losses.image_loss`, window
    :data:`WIN_SIZE`).  Returns ``(model, TrainResult)``; ``best.pt`` holds the weights of the
    lowest validation loss (what :func:`load_model` loads); ``flip``: random left-right flips,
    ``affine``: random rotations, scalings and shifts (:func:`augmentation`)."""
    from bonelab import simulate
    from bonelab.losses import image_loss
    from bonelab.steps import SupervisedTask
    from bonelab.tasks import check_dataset, task
    from bonelab.train import seed_everything
    from bonelab.train import train as train_loop

    info = check_dataset(data, task(NAME))
    criterion = image_loss(loss, win_size=WIN_SIZE)
    spec = model_spec(info, channels, num_res_units, loss)
    seed_everything(seed)
    model = spec.build()
    train_ds = simulate.load_split(data, "train", transform=augmentation(flip, affine, min(info["H"], info["W"])))
    val_ds = simulate.load_split(data, "val")
    result = train_loop(model, train_ds, val_ds, task=SupervisedTask(criterion, target_key="target"), out_dir=out,
                        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress,
                        resume=resume, schedule="onecycle", spec=spec)
    return model, result


def predict(model: torch.nn.Module, images, *, batch_size: int = 32, flip_average: bool = False,
            device=None) -> np.ndarray:
    """The bone images (N, 1, H, W) float32 in [0, 1] that ``model`` predicts for images (N, 1, H, W).

    ``flip_average``: also predict the left-right flipped image, flip that bone image back and
    average the two (test-time augmentation; for networks trained with ``flip=True``, which
    have seen both orientations)."""
    from bonelab.tasks import predict_batches

    def forward(net, x):
        bones = net(x).clamp(0, 1)
        return 0.5 * (bones + net(x.flip(-1)).clamp(0, 1).flip(-1)) if flip_average else bones

    return predict_batches(model, images, forward, batch_size=batch_size, device=device)


def score(pred, data, split: str = "test"):
    """Image quality of predicted bone images ``pred`` (N, 1, H, W) against the targets of
    ``split``: a DataFrame with ``index``, ``subject``, ``view``, ``rmse``, ``psnr``, ``ssim``,
    ``ms_ssim`` (0-1 scale) and ``rmse_255``, ``psnr_255``, ``ssim_255``, ``ms_ssim_255`` (images
    times 255, data range 255: the paper's scale)."""
    import pandas as pd

    from bonelab import simulate
    from bonelab.metrics import image_quality

    targets = np.asarray(simulate.load_split(data, split).targets, np.float32)
    meta = simulate.metadata(data, split)
    pred = np.asarray(pred, np.float32)
    unit = image_quality(pred, targets, data_range=1.0, ms_ssim_window=WIN_SIZE)
    paper = image_quality(255 * pred, 255 * targets, data_range=255.0, ms_ssim_window=WIN_SIZE)
    frame = pd.DataFrame({"index": np.arange(len(pred)), "subject": meta["subject"].to_numpy(),
                          "view": meta["view"].to_numpy()})
    for m in METRICS:
        frame[m] = np.asarray(unit[m], float)
        frame[f"{m}_255"] = np.asarray(paper[m], float)
    return frame


def evaluate(model: torch.nn.Module, data, split: str = "test", *, batch_size: int = 32, flip_average: bool = False,
             device=None, return_predictions: bool = False):
    """:func:`score` of ``model``'s predictions on ``split`` (:func:`predict`, with
    ``flip_average`` if asked); with ``return_predictions`` also the bone images (N, 1, H, W)."""
    from bonelab import simulate

    pred = predict(model, simulate.load_split(data, split).images, batch_size=batch_size, flip_average=flip_average,
                   device=device)
    rows = score(pred, data, split)
    return (rows, pred) if return_predictions else rows


def floor_scores(data, split: str = "test") -> dict:
    """The :func:`score` of two answers that need no network, the floors every model must beat:
    ``"input as bones"`` (the input radiograph itself, nothing removed) and ``"no bone"`` (an
    all-zero image: bone images are mostly dark, so this one scores deceptively well on RMSE,
    PSNR and SSIM)."""
    from bonelab import simulate

    images = np.asarray(simulate.load_split(data, split).images, np.float32)
    return {"input as bones": score(images, data, split), "no bone": score(np.zeros_like(images), data, split)}


def quality_table(rows, scale: str = "255", views=None):
    """Mean RMSE, PSNR, SSIM and MS-SSIM per view (rows, plus ``all``) from :func:`score` rows, on
    the paper's 0-255 scale (``scale="255"``) or on 0-1 (``scale="1"``)."""
    import pandas as pd

    from bonelab.errors import InvalidArgumentError

    if scale not in ("255", "1"):
        raise InvalidArgumentError(f"scale must be '255' or '1'; got {scale!r}.")
    columns = [f"{m}_255" if scale == "255" else m for m in METRICS]
    views = list(dict.fromkeys(rows["view"])) if views is None else list(views)
    table = rows.groupby("view")[columns].mean().reindex(views)
    table.loc["all"] = rows[columns].mean()
    table.columns = [c.upper().replace("_255", "").replace("MS_SSIM", "MS-SSIM") for c in columns]
    return pd.DataFrame(table)


# --------------------------------------------------------------------------------------------
# Command line: bonelab train bones --data DIR --out RUN
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bonelab train bones``."""
    from bonelab.losses import IMAGE_LOSSES

    parser.add_argument("--data", required=True, metavar="DIR", help="data set folder from bonelab simulate "
                        "localizer --target bone-radiograph")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (resumed if it holds last.pt)")
    parser.add_argument("--loss", default="l1+ms-ssim", choices=sorted(IMAGE_LOSSES))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--channels", type=int, nargs="+", default=list(DEFAULT_CHANNELS))
    parser.add_argument("--res-units", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--flip", action="store_true", help="random left-right flips")
    parser.add_argument("--affine", action="store_true", help="random rotations, scalings and shifts")


def run(args) -> int:
    """``bonelab train bones``: train, then print the test image quality per view (0-255 scale)."""
    start = time.perf_counter()
    _, result = train(args.data, args.out, loss=args.loss, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, channels=tuple(args.channels), num_res_units=args.res_units, flip=args.flip,
                      affine=args.affine, seed=args.seed, device=args.device)
    print(f"trained {result.epochs} epochs in {time.perf_counter() - start:.0f} s; best validation loss "
          f"{-result.best_metric:.4f} at epoch {result.best_epoch}; run folder {Path(args.out)}")
    from bonelab.simulate import dataset_info

    if "test" in dataset_info(args.data)["splits"]:
        rows = evaluate(load_model(args.out, device=args.device), args.data, "test", flip_average=args.flip,
                        device=args.device)
        print(quality_table(rows).round(3).to_string())
    return 0
