"""Training throughput on the CPU in float32 and in bfloat16 (``torch.autocast``, the weights and
the optimiser in float32): the speed half of the measurement behind
``bonelab.config.bfloat16_where_fast``, through which the femur and wrist tasks train in bfloat16
where ``bonelab.config.cpu_bfloat16_is_fast()`` finds bfloat16 matrix units (the accuracy half
is in each task's docstring: the lumbar U-Net lost accuracy and stays in float32).

    python benchmarks/precision.py [--record]

The training steps of three networks on fixed synthetic batches, median of 5 steps after 2
(oneDNN's set-up):

* chapter 3's U-Net (``bonelab.models.unet2d``, widths 8-128, one residual unit, ten sigmoid
  labels), 128 x 128 px, batch 16, the size ``bonelab.tasks.wrist.train`` trains;
* chapter 6's V-Net (``bonelab.tasks.femur.VNET``), patches of ``femur.PATCH``, batch 8;
* chapter 5's Mask R-CNN (``bonelab.models.maskrcnn2d``), four 160 px films with two boxes each.

Prints one table: samples per second in each precision and their ratio (bfloat16 / float32).
A ratio under 1 means bfloat16 is emulated on this CPU (no AMX): keep float32 there.
"""

from __future__ import annotations

import sys

import torch
from _record import recording
from _training_steps import bce_loss, detection_batch, detection_loss, step_rate, vnet_batch


def main() -> None:
    from bonelab.config import cpu_bfloat16_is_fast
    from bonelab.models import maskrcnn2d, unet2d, vnet3d
    from bonelab.tasks import femur

    films = torch.randn(16, 1, 128, 128)
    bones = (torch.rand(16, 10, 128, 128) > 0.5).float()
    patches, occupied = vnet_batch()
    size = 160
    radiographs, targets = detection_batch(size)

    cases = [
        ("ch3 U-Net, 128 px, batch 16", "films/s",
         lambda: unet2d(out_channels=10, channels=(8, 16, 32, 64, 128), num_res_units=1), films, bones, bce_loss),
        (f"ch6 V-Net, patches {femur.PATCH}, batch 8", "patches/s", lambda: vnet3d(**femur.VNET), patches, occupied,
         bce_loss),
        (f"ch5 Mask R-CNN, {size} px, batch 4", "films/s", lambda: maskrcnn2d(num_classes=7, size=size), radiographs,
         targets, detection_loss),
    ]
    with recording("precision", "CPU", enabled="--record" in sys.argv) as tables:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"cpu_bfloat16_is_fast() = {cpu_bfloat16_is_fast()}\n")
        lines = ["| network | unit | float32 | bfloat16 | ratio |", "|---|---|---|---|---|"]
        rows = []
        for name, unit, make, x, y, loss in cases:
            fp32, bf16 = (step_rate(make, x, y, loss, bfloat16=b) for b in (False, True))
            rows.append({"network": name, "unit": unit, "float32": fp32, "bfloat16": bf16, "ratio": bf16 / fp32})
            lines.append(f"| {name} | {unit} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")
        tables["steps"] = rows
        tables["markdown"] = {"steps": "\n".join(lines)}
        print(tables["markdown"]["steps"])


if __name__ == "__main__":
    main()
