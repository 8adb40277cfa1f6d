"""Simulation throughput: samples per second of ``bonelab.simulate.simulate`` against the time of the
pure renders and label projections it performs, and where the rest goes.

    python benchmarks/simulate_speed.py [--record]

For the wrist (96 x 96 px, 4 subjects x 3 views x 2 = 24 samples) and the chest (256 x 256 px,
2 subjects x 2 views x 3 = 12 samples): the subjects are generated first (their time is printed,
not counted: it is the phantom's cost, and a reader's own CTs have none), then ``simulate`` runs
twice in this process with one worker, into two new folders: the first call (spectra modelled by
spekpy unless its disk cache holds them, numba kernels compiled or loaded) and the steady state
(everything cached, as in every later run and every worker after the first subject).

During each run the calls of the renderer's material integrals (``Renderer.integrals``) and of
``project_labels`` are timed in place: that is the pure render and projection time; the other
timed parts are the renderer's construction, the acquisition chain (``simulate.radiograph``),
the target and the files.  The steady-state ratio ``simulate / (render + projection)`` is the
figure of merit (goal: at most 1.5).

``--record`` also writes the output to ``benchmarks/results/simulate_speed.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch
from _record import recording

CASES = (  # protocol, subjects, views (None = all), samples per view, detector pixels
    ("wrist", 4, None, 2, 96),
    ("chest", 2, None, 3, 256),
)


@contextmanager
def stopwatch(spent: dict):
    """Time, in place, the parts of a simulation run that this benchmark separates."""
    import bonelab.drr
    import bonelab.files
    import bonelab.simulate.physics
    from bonelab.drr import Renderer

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    with ExitStack() as stack:
        for owner, attr, name in (
            (Renderer, "integrals", "render (material integrals)"),
            (bonelab.drr, "project_labels", "label projection"),
            (Renderer, "__init__", "renderer construction"),
            (bonelab.simulate.physics, "radiograph", "acquisition chain (radiograph)"),
            (bonelab.files, "save_npz", "writing sample files"),
        ):
            stack.enter_context(mock.patch.object(owner, attr, timed(name, getattr(owner, attr))))
        yield


def run_case(name, n_subjects, views, per_view, size):
    from bonelab.simulate import generate_subject, protocol, simulate

    p = protocol(name)
    t = time.perf_counter()
    subjects = [generate_subject(p, i, 0, p.spacing_mm) for i in range(n_subjects)]
    t_subjects = time.perf_counter() - t
    n_views = len(p.views) if views is None else len(views)
    n = samples(name, n_subjects, views, per_view)
    print(f"\n{name}: {n_subjects} subjects (generated in {t_subjects:.1f} s, not counted), {n_views} views x "
          f"{per_view} = {n} samples at {size} x {size} px, one worker")
    rows = []
    for run in ("first call", "steady state"):
        spent = defaultdict(float)
        with tempfile.TemporaryDirectory() as out, stopwatch(spent):
            t = time.perf_counter()
            simulate(out, p, subjects=subjects, views=views, per_view=per_view, size=size, fractions=(1, 0, 0),
                     splits=("train",), workers=1, progress=False)
            total = time.perf_counter() - t
        pure = spent["render (material integrals)"] + spent["label projection"]
        rows.append((run, total, pure, dict(spent)))
        print(f"  {run:13s} {total:6.2f} s  {n / total:6.1f} samples/s   render + projection {pure:5.2f} s "
              f"({n / pure:6.1f} samples/s)   simulate / (render + projection) = {total / pure:4.2f}")
        other = total - sum(spent.values())
        for part, sec in (*sorted(spent.items(), key=lambda kv: -kv[1]), ("rest (targets, set-up, metadata)", other)):
            print(f"      {part:36s} {sec:6.2f} s  {100 * sec / total:5.1f}%")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true",
                    help="also write the output to benchmarks/results/simulate_speed.md and .json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a simulation worker runs (one process per core)
    with recording("simulate_speed", "one simulation worker", args.record) as tables:
        print(f"torch {torch.__version__}, 1 thread (as one simulation worker), {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        table = []
        for case in CASES:
            for run, total, pure, spent in run_case(*case):
                table.append({"protocol": case[0], "detector_px": case[4], "samples": samples(*case[:4]),
                              "run": run, "simulate_s": total, "render_and_projection_s": pure,
                              "ratio": total / pure, "parts_s": spent})
        tables["simulate"] = table
        tables["markdown"] = {"simulate": simulate_markdown(table)}
        print("\n" + tables["markdown"]["simulate"])


def simulate_markdown(table) -> str:
    lines = ["| protocol | detector | samples | run | simulate s | samples/s | render + projection s | "
             "simulate / (render + projection) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['protocol']} | {r['detector_px']}x{r['detector_px']} | {r['samples']} | {r['run']} | "
              f"{r['simulate_s']:.2f} | {r['samples'] / r['simulate_s']:.1f} | {r['render_and_projection_s']:.2f} | "
              f"{r['ratio']:.2f} |" for r in table]
    return "\n".join(lines)


def samples(name, n_subjects, views, per_view) -> int:
    from bonelab.simulate import protocol

    return n_subjects * (len(protocol(name).views) if views is None else len(views)) * per_view


if __name__ == "__main__":
    main()
