"""Training steps timed on fixed synthetic batches, for the benchmarks that compare ways of
running the same networks (``memory_format.py``: weight layouts; ``precision.py``: float32 against
bfloat16): the step itself, the batches of chapters 5 and 6, and their losses."""

from __future__ import annotations

import statistics
import time

import torch


def step_rate(make, inputs, targets, loss, *, layout=None, bfloat16: bool = False, n: int = 5) -> float:
    """Samples per second of the training step of the network ``make()`` (seeded, AdamW):
    ``loss(net, inputs, targets)``, backward, optimiser step; the median of ``n`` steps after 2
    (oneDNN's set-up).  ``layout``: a ``torch.memory_format`` for the weights; ``bfloat16``: the
    forward pass under ``torch.autocast`` in bfloat16."""
    torch.manual_seed(0)
    net = make()
    if layout is not None:
        net = net.to(memory_format=layout)
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


def bce_loss(net, x, y):
    """Binary cross-entropy of the logits (in float32) against 0/1 targets."""
    return torch.nn.functional.binary_cross_entropy_with_logits(net(x).float(), y)


def vnet_batch():
    """Chapter 6's training batch: 8 patches of ``femur.PATCH`` voxels and 0/1 targets."""
    from bonelab.tasks import femur

    patches = torch.randn(8, 1, *femur.PATCH)
    return patches, (torch.rand_like(patches) > 0.5).float()


def detection_batch(size: int = 160):
    """Chapter 5's kind of batch: four ``size`` px films, each with two boxes and masks."""
    films = [torch.rand(1, size, size) for _ in range(4)]
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 30:70, 20:60] = masks[1, 40:90, 70:120] = 1
    boxes = torch.tensor([[20.0, 30.0, 60.0, 70.0], [70.0, 40.0, 120.0, 90.0]])
    return films, [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks} for _ in films]


def detection_loss(net, x, y):
    """The sum of a torchvision detection model's training losses (in float32)."""
    net.train()
    return sum(v.float() for v in net(x, y).values())
