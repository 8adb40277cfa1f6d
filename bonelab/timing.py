"""Timing a call the way the chapters and benchmarks report speed: warm up, repeat, take the median.

The first call of a renderer or a network pays for compilation (numba, Triton), caches and
thread start-up, so it is run and thrown away; the median of the repeats is robust to a slow
outlier on a shared machine.  CUDA work is asynchronous, so with a CUDA ``device`` the clock
stops only after ``torch.cuda.synchronize()``.

>>> seconds = time_call(lambda: sum(range(1000)), repeat=3)
>>> 0 < seconds < 1
True
"""

from __future__ import annotations

import statistics
import time

from bonelab.errors import InvalidArgumentError


def time_call(fn, repeat: int = 3, *, warmup: int = 1, device=None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` calls, after ``warmup`` untimed calls.

    ``device``: where ``fn`` runs (a ``torch.device`` or a string such as ``"cuda"``); on a CUDA
    device each call is followed by ``torch.cuda.synchronize()`` inside the timed interval.

    >>> time_call(lambda: None, repeat=5, warmup=0) < 0.01
    True
    """
    if int(repeat) < 1 or int(warmup) < 0:
        raise InvalidArgumentError(f"time_call needs repeat >= 1 and warmup >= 0; got {repeat=}, {warmup=}.")
    sync = _synchronizer(device)
    for _ in range(int(warmup)):
        fn()
        sync()
    times = []
    for _ in range(int(repeat)):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronizer(device):
    """A function that waits for queued work on ``device`` (a no-op off CUDA)."""
    if device is None or "cuda" not in str(device):
        return lambda: None
    import torch

    return torch.cuda.synchronize


__all__ = ["time_call"]
