"""Is this machine running at its usual speed today?  Run it before timing ``make book``.

    python benchmarks/machine_speed.py

Times the training step of the reference U-Net that ../shared/ENVIRONMENT-NOTES.md quotes for
this 2-core CPU (MONAI ``UNet``, 2-D, channels 8-128, one residual unit, 128 x 128 px, batch 8,
10 output channels, cross-entropy, Adam): 3 warm-up steps, then the median of 5 runs of 4 steps.
Prints samples per second and the ratio to the quoted reference (about 114 samples/s).  The
first full build of the book scales with it: on 2026-12-02 this step ran at 47-54 samples/s and
``make book`` took 1:10:33, against 48-50 minutes on days of usual speed.
"""

from __future__ import annotations

import statistics
import time

import torch
from monai.networks.nets import UNet

REFERENCE_SAMPLES_PER_S = 114.0  # ENVIRONMENT-NOTES.md, "Training speed on this CPU"
BATCH = 8


def training_rate(runs: int = 5, steps: int = 4) -> float:
    """Median samples per second of the reference U-Net's training step."""
    torch.manual_seed(0)
    net = UNet(2, 1, 10, (8, 16, 32, 64, 128), (2, 2, 2, 2), num_res_units=1)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(BATCH, 1, 128, 128)
    y = torch.randint(0, 10, (BATCH, 128, 128))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * BATCH / (time.perf_counter() - t))
    return statistics.median(rates)


if __name__ == "__main__":
    rate = training_rate()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| step | samples/s | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| reference U-Net, 128 px, batch {BATCH} | {rate:.1f} | {REFERENCE_SAMPLES_PER_S:.0f} | "
          f"{rate / REFERENCE_SAMPLES_PER_S:.2f}x |")
