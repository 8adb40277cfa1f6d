"""Training throughput on the CPU in float32 and in bfloat16 (``torch.autocast``, the weights and
the optimiser in float32): the measurement behind ``bonelab.tasks.femur.train(amp=None)``, which
trains in bfloat16 where ``bonelab.config.cpu_bfloat16_is_fast()`` finds bfloat16 matrix units.

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

import statistics
import sys
import time

import torch
from _record import recording


def step_rate(make, inputs, targets, loss, bfloat16: bool, n: int = 5) -> float:
    """Samples per second of ``n`` training steps (after 2) of the network ``make()``."""
    torch.manual_seed(0)
    net = make()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    for i in range(n + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            value = loss(net, inputs, targets)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return len(inputs) / statistics.median(times)


def main() -> None:
    from bonelab.config import cpu_bfloat16_is_fast
    from bonelab.models import maskrcnn2d, unet2d, vnet3d
    from bonelab.tasks import femur

    films = torch.randn(16, 1, 128, 128)
    bones = (torch.rand(16, 10, 128, 128) > 0.5).float()
    patches = torch.randn(8, 1, *femur.PATCH)
    occupied = torch.rand_like(patches)

    def bce(net, x, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(net(x).float(), y)

    size = 160
    radiographs = [torch.rand(1, size, size) for _ in range(4)]
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 30:70, 20:60] = masks[1, 40:90, 70:120] = 1
    boxes = torch.tensor([[20.0, 30.0, 60.0, 70.0], [70.0, 40.0, 120.0, 90.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks} for _ in radiographs]

    def detection_loss(net, x, y):
        net.train()
        return sum(v.float() for v in net(x, y).values())

    cases = [
        ("ch3 U-Net, 128 px, batch 16", "films/s",
         lambda: unet2d(out_channels=10, channels=(8, 16, 32, 64, 128), num_res_units=1), films, bones, bce),
        (f"ch6 V-Net, patches {femur.PATCH}, batch 8", "patches/s", lambda: vnet3d(**femur.VNET), patches, occupied,
         bce),
        (f"ch5 Mask R-CNN, {size} px, batch 4", "films/s", lambda: maskrcnn2d(num_classes=7, size=size), radiographs,
         targets, detection_loss),
    ]
    with recording("precision", "CPU", enabled="--record" in sys.argv) as tables:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"cpu_bfloat16_is_fast() = {cpu_bfloat16_is_fast()}\n")
        lines = ["| network | unit | float32 | bfloat16 | ratio |", "|---|---|---|---|---|"]
        rows = []
        for name, unit, make, x, y, loss in cases:
            fp32, bf16 = (step_rate(make, x, y, loss, b) for b in (False, True))
            rows.append({"network": name, "unit": unit, "float32": fp32, "bfloat16": bf16, "ratio": bf16 / fp32})
            lines.append(f"| {name} | {unit} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")
        tables["steps"] = rows
        tables["markdown"] = {"steps": "\n".join(lines)}
        print(tables["markdown"]["steps"])

if __name__ == "__main__":
    main()
