"""bonelab.timing.time_call: median of the repeats after an untimed warm-up."""

import itertools
import time

import pytest

from bonelab import InvalidArgumentError
from bonelab.timing import time_call


def test_time_call_is_the_median_of_the_repeats_after_the_warmup(monkeypatch):
    clock = itertools.count()  # every perf_counter() call advances one "second"
    durations = iter([100, 3, 1, 2])  # warm-up, then three timed calls
    calls = []

    def fn():
        calls.append(1)
        for _ in range(next(durations)):
            next(clock)

    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    assert time_call(fn, repeat=3, warmup=1) == 3  # durations 4, 2, 3 (+1 for the clock read): median 3
    assert len(calls) == 4


def test_time_call_refuses_no_repeats():
    with pytest.raises(InvalidArgumentError, match="repeat"):
        time_call(lambda: None, repeat=0)
