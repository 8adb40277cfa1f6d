"""Speed of the phantom generators at their default sizes (target: at most 3 s per subject).

Prints one row per generator: default spacing, grid shape (z, y, x), voxels, wall-clock and CPU
seconds per subject (mean of 3 seeds, after one warm-up subject), the 3 s target and the ratio
of wall time to target (below 1 meets it).  CPU time is printed too because other processes on a
shared machine inflate wall time but not the process's own CPU time.

    python benchmarks/phantoms_speed.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np

from bonelab.phantoms import GENERATORS

TARGET_S = 3.0


def measure(kind: str, seeds) -> dict:
    gen = GENERATORS[kind]
    gen(10_000)  # warm-up: imports, allocator
    wall, cpu = [], []
    for seed in seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        s = gen(seed)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    spacing = inspect.signature(gen).parameters["spacing"].default
    return {"kind": kind, "spacing": spacing, "shape": s.ct.shape, "voxels": int(np.prod(s.ct.shape)),
            "wall": float(np.mean(wall)), "cpu": float(np.mean(cpu))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    rows = [measure(k, range(args.seeds)) for k in GENERATORS]
    print(f"{'generator':13s} {'spacing mm':>10s} {'shape (z,y,x)':>16s} {'Mvoxels':>8s} "
          f"{'wall s':>7s} {'cpu s':>6s} {'target s':>8s} {'wall/target':>11s}")
    for r in rows:
        shape = "x".join(str(n) for n in r["shape"])
        print(f"{r['kind']:13s} {r['spacing']:10.2f} {shape:>16s} {r['voxels'] / 1e6:8.1f} "
              f"{r['wall']:7.2f} {r['cpu']:6.2f} {TARGET_S:8.1f} {r['wall'] / TARGET_S:11.2f}")
    return rows


if __name__ == "__main__":
    main()
