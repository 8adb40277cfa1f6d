"""Training throughput on the CPU in the default (NCHW) and the channels-last (NHWC) weight layout:
the measurement behind ``bonelab.train.train(channels_last=False)``, the default.

    python benchmarks/memory_format.py

Three networks, each trained the way its chapter trains it, in both layouts (the V-Net's is
``channels_last_3d``, NDHWC):

* chapter 3's U-Net (``bonelab.tasks.wrist.train``'s network, widths 8-128, one residual unit):
  ``bonelab.train.train`` on a simulated wrist data set (12 subjects x 4 samples per view,
  128 x 128 px), 6 epochs; the samples per second of the loop's own ``metrics.csv`` (epochs 2-6,
  the first holds oneDNN's set-up);
* chapter 6's V-Net (``bonelab.tasks.femur.VNET``) and chapter 5's Mask R-CNN
  (``bonelab.models.maskrcnn2d``, 160 px): training steps on fixed synthetic batches (patches of
  ``femur.PATCH``, batch 8; four 160 px films with two boxes each), median of 5 steps after 2.

Prints one table: samples per second in each layout and their ratio (channels-last / default).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
from _training_steps import bce_loss, detection_batch, detection_loss, step_rate, vnet_batch


def _wrist_rate(folder: Path, data: Path, channels_last: bool) -> float:
    from bonelab import simulate
    from bonelab.losses import segmentation_loss
    from bonelab.metrics import batch_dice
    from bonelab.tasks import wrist
    from bonelab.train import seed_everything, train

    info = simulate.dataset_info(data)
    seed_everything(0)
    net = wrist.model_spec(info, (8, 16, 32, 64, 128), 1).build()
    result = train(net, simulate.load_split(data, "train", transform=wrist.augmentation(True)),
                   simulate.load_split(data, "val"), loss=segmentation_loss(), metric_fn=batch_dice,
                   out_dir=folder, epochs=6, batch_size=16, lr=3e-3, schedule="onecycle", device="cpu",
                   progress=False, tensorboard=False, channels_last=channels_last)
    return statistics.median(row["samples_per_s"] for row in result.history[1:])


def main() -> None:
    from bonelab import simulate
    from bonelab.models import maskrcnn2d, vnet3d
    from bonelab.tasks import femur

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = simulate.simulate(Path(tmp) / "wrist", "wrist", subjects=12, per_view=4, size=128, workers=1,
                                 progress=False)
        rows.append(("ch3 U-Net, train() on wrist films 128 px", "films/s",
                     *(_wrist_rate(Path(tmp) / f"run-{cl}", data, cl) for cl in (False, True))))

    patches, occupied = vnet_batch()
    rows.append((f"ch6 V-Net, patches {femur.PATCH}, batch 8", "patches/s",
                 *(step_rate(lambda: vnet3d(**femur.VNET), patches, occupied, bce_loss,
                             layout=torch.channels_last_3d if cl else None) for cl in (False, True))))

    size = 160
    films, targets = detection_batch(size)
    rows.append((f"ch5 Mask R-CNN, films {size} px, batch 4", "films/s",
                 *(step_rate(lambda: maskrcnn2d(num_classes=7, size=size), films, targets, detection_loss,
                             layout=torch.channels_last if cl else None) for cl in (False, True))))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| network | unit | default (NCHW) | channels-last | ratio |")
    print("|---|---|---|---|---|")
    for name, unit, default, last in rows:
        print(f"| {name} | {unit} | {default:.1f} | {last:.1f} | {last / default:.2f}x |")


if __name__ == "__main__":
    main()
