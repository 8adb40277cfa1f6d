"""DRR speed and accuracy: bonelab vs nanodrr vs DiffDRR on the real chest CT, in one run.

    python benchmarks/drr_vs_diffdrr.py [--sizes 200 512 2000] [--repeat 3] [--device cpu|cuda] [--record]

``--record`` also writes everything printed to ``benchmarks/results/drr_vs_diffdrr.md`` (or
``drr_vs_diffdrr_cuda.md`` with ``--device cuda``), with the date, machine and command at the
top; chapter 2 shows these files.

On ``--device cuda`` every renderer runs on the GPU (bonelab's Triton kernel and torch path,
nanodrr's fused Triton kernel, DiffDRR), times are medians of CUDA-synchronised runs, and the
peak is the GPU memory allocated by torch during the call.

Every renderer integrates the same attenuation volume (bonelab.drr.physics.hu_to_mu at 60 keV
of bonelab.data.example_ct()) along the same rays: a PA view from bonelab.drr.pa (SDD 1020 mm,
the detector covering the CT).  nanodrr and DiffDRR are given those rays directly (source and
pixel positions; nanodrr with an identity camera pose, DiffDRR's renderer in voxel coordinates),
so no pose convention can differ; their own HU conversions are bypassed.  Errors are the mean
relative difference from bonelab.drr.siddon (exact ray-voxel intersections) over body pixels.

Prints ms per DRR, rays per second, peak memory (resident-set growth during the call, sampled
every 2 ms), error, and bonelab's speed-up; then how bonelab's time grows with detector pixels and
with volume size; then how close the kernel is to the memory bandwidth (a plain copy).
Needs the bench extra: see the Makefile's ``bench`` target.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from bonelab import Volume
from bonelab.data import example_ct
from bonelab.drr import Renderer, pa, siddon
from bonelab.drr.physics import hu_to_mu

ENERGY_KEV = 60.0
MEM_LIMIT_MB = 8000  # skip a competitor whose estimated working set exceeds this (CPU; on a GPU 80% of it)
TIME_LIMIT_S = 90  # ... or whose estimated time per DRR exceeds this


class PeakRSS:
    """Peak growth of this process's resident memory (MB) while the block runs."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self):
        while not self._stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mb = self.peak - self.base


def rays(g, ct: Volume):
    """Source (3,) and pixel centres (H*W, 3), world LPS mm, row-major; and the same in voxel
    index coordinates."""
    rows, cols = np.mgrid[: g.height, : g.width]
    pix = g.pixel00() + cols[..., None] * g.pixel[0] * g.u + rows[..., None] * g.pixel[1] * g.v
    pix = pix.reshape(-1, 3)
    return g.source, pix, ct.world_to_index(g.source), ct.world_to_index(pix)


def make_renderers(ct: Volume, mu: Volume, device: str = "cpu"):
    """name -> (render(g) -> (H, W) torch tensor on ``device``, memory estimate(n_rays) in MB)."""
    out = {}
    bonelab = Renderer(ct, energy_keV=ENERGY_KEV, device=device)
    if device == "cpu":
        out["bonelab kernel (numba, default step)"] = (lambda g: bonelab(g), lambda n: n * 4e-6)
        out["bonelab kernel, 1 mm step"] = (lambda g: bonelab(g, step_mm=1.0), lambda n: n * 4e-6)
    else:
        out["bonelab kernel (Triton, default step)"] = (lambda g: bonelab(g), lambda n: n * 4e-6)
    out["bonelab torch path (grid_sample)"] = (
        lambda g: bonelab(g, method="torch", memory_budget_mb=1024), lambda n: 1024 + n * 4e-6)
    mu_t = torch.from_numpy(mu.array).to(device)
    backend = "torch" if device == "cpu" else "triton"
    try:
        from nanodrr.data import Subject
        from nanodrr.drr.renderer import render as nano_render

        affine = torch.as_tensor(ct.affine, dtype=torch.float64)
        subject = Subject(mu_t[None, None], torch.zeros(1, 1, 1, 1, 1, device=device), affine.float(),
                          affine.inverse().float(), Subject._make_voxel_to_grid(mu_t[None, None].shape),
                          torch.tensor(ct.center).float(), max_label=0, convert_to_mu=False).to(device)

        def nano(g):
            s, p, _, _ = rays(g, ct)
            src = torch.tensor(s, dtype=torch.float32, device=device)[None, None]
            tgt = torch.tensor(p, dtype=torch.float32, device=device)[None]
            eye = torch.eye(4, device=device)[None]
            img = nano_render(subject, eye[:, :3, :3], eye, torch.tensor([g.sdd], device=device), g.height, g.width,
                              n_samples=500, src=src, tgt=tgt, backend=backend)
            return img[0, 0]

        mem = (lambda n: n * 3 * 4 * 3 / 2**20) if backend == "triton" else (lambda n: n * 500 * 4 * 4 * 3 / 2**20)
        out[f"nanodrr 0.1.7 ({backend}, 500 samples)"] = (nano, mem)
    except ImportError as exc:
        print(f"nanodrr not installed ({exc}); skipped")
    try:
        from diffdrr.renderers import Siddon, Trilinear

        vol_xyz = mu_t.permute(2, 1, 0)  # DiffDRR indexes its volume [x, y, z]

        def diffdrr(renderer):
            def run(g):
                s, p, si, pi = rays(g, ct)
                img = torch.tensor(np.linalg.norm(p - s, axis=-1), dtype=torch.float32, device=device)[None, None]
                src = torch.tensor(si, dtype=torch.float32, device=device)[None, None]
                tgt = torch.tensor(pi, dtype=torch.float32, device=device)[None]
                with torch.no_grad():
                    return renderer(vol_xyz, src, tgt, img)[0, 0].reshape(g.height, g.width)
            return run

        out["DiffDRR 0.6.1 Siddon (default)"] = (diffdrr(Siddon()), lambda n: n * sum(ct.size) * 4 * 8 / 2**20)
        out["DiffDRR 0.6.1 trilinear (500 samples)"] = (diffdrr(Trilinear()), lambda n: n * 500 * 4 * 4 * 3 / 2**20)
    except ImportError as exc:
        print(f"diffdrr not importable ({exc}); skipped")
    return out


def timed(fn, g, repeat):
    """(image as numpy, best wall seconds, best CPU seconds of this process, peak memory MB).  CPU
    time (all threads) is reported too because it is robust to other jobs sharing the machine.
    For CUDA results the runs are synchronised and the peak is torch's GPU allocation."""
    img = fn(g)  # warm-up: compilation, caches, layouts
    if img.is_cuda:
        return _timed_cuda(fn, g, repeat)
    wall = cpu = np.inf
    with PeakRSS() as mem:
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            img = fn(g)
            wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return img.numpy(), wall, cpu, mem.mb


def _timed_cuda(fn, g, repeat):
    """As :func:`timed` on the GPU: median of ``max(repeat, 10)`` synchronised runs (CPU time is
    the host's, mostly launch overhead)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    walls, cpus = [], []
    for _ in range(max(repeat, 10)):
        t, c = time.perf_counter(), time.process_time()
        img = fn(g)
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return img.cpu().numpy(), float(np.median(walls)), float(np.median(cpus)), peak


def comparison(ct, mu, sizes, repeat, device="cpu"):
    renderers = make_renderers(ct, mu, device)
    limit_mb = MEM_LIMIT_MB if device == "cpu" else 0.8 * torch.cuda.get_device_properties(0).total_memory / 2**20
    siddon(mu, pa(ct, size=4))  # compile the reference before timing it
    rows = []
    for size in sizes:
        g = pa(ct, size=size)
        t = time.perf_counter()
        ref = siddon(mu, g)
        t_ref = time.perf_counter() - t
        body = ref > 0.5
        n = g.width * g.height
        first = None
        print(f"\n{size}x{size} detector, pixel {g.pixel[0]:.3f} mm; exact Siddon reference (bonelab.drr.siddon, "
              f"numba): {1000 * t_ref:.0f} ms", flush=True)
        for name, (fn, mem_mb) in renderers.items():
            done = [r for r in rows if r[0] == name and r[2] is not None]
            est_t = done[-1][2] * n / done[-1][1] ** 2 if done else 0.0  # time grows with pixels
            if mem_mb(n) > limit_mb or est_t > TIME_LIMIT_S:
                why = f"needs ~{mem_mb(n) / 1024:.0f} GB" if mem_mb(n) > limit_mb else f"would take ~{est_t:.0f} s"
                print(f"  {name:42s} skipped: {why}")
                rows.append((name, size, None, None, None, None, why))
                continue
            img, sec, cpu, peak = timed(fn, g, repeat if size <= 512 or device != "cpu" else 1)
            err = float(np.mean(np.abs(img[body] - ref[body]) / ref[body]))
            first = first or (sec, cpu)
            rows.append((name, size, sec, cpu, peak, err, None))
            print(f"  {name:42s} {1000 * sec:9.1f} ms (CPU {1000 * cpu:8.1f} ms)  {n / sec / 1e6:6.2f} Mrays/s  "
                  f"peak +{peak:6.0f} MB  err {100 * err:5.2f}%  bonelab x{sec / first[0]:5.1f} "
                  f"(CPU x{cpu / first[1]:5.1f})", flush=True)
    return rows


def scaling(ct, repeat, device="cpu"):
    print("\nbonelab kernel: time vs detector pixels (PA, same field of view)")
    r = Renderer(ct, energy_keV=ENERGY_KEV, device=device)
    base = None
    for size in (100, 200, 400, 800) if device == "cpu" else (200, 512, 1024, 2048, 3000):
        _, sec, _, _ = timed(lambda g: r(g), pa(ct, size=size), repeat)
        base = base or sec / size**2
        print(f"  {size:5d}^2 px {1000 * sec:8.1f} ms   {size**2 / sec / 1e6:6.2f} Mrays/s   time/pixel x{sec / size**2 / base:5.2f}")
    print("bonelab kernel: time vs volume size (200x200 PA; CT decimated or slices repeated)")
    for label, arr, spacing in (
        ("1/8 voxels (stride 2)", ct.array[::2, ::2, ::2], np.array(ct.spacing) * 2),
        ("original", ct.array, np.array(ct.spacing)),
        ("2x slices (z repeated)", np.repeat(ct.array, 2, axis=0), np.array(ct.spacing) * [1, 1, 0.5]),
    ):
        v = Volume(np.ascontiguousarray(arr), spacing=spacing, origin=ct.origin, direction=ct.direction)
        rv = Renderer(v, energy_keV=ENERGY_KEV, device=device)
        _, sec, _, _ = timed(rv, pa(v, size=200), repeat)
        print(f"  {label:24s} {v.array.size / 1e6:6.1f} M voxels  {1000 * sec:8.1f} ms")


def bandwidth(ct, repeat, device="cpu"):
    if device == "cpu":
        a = np.ones(64 * 2**20, np.float32)
        b = np.empty_like(a)
        best = min(_copy_time(a, b) for _ in range(repeat))
        what = "numpy copy of 256 MB"
    else:
        a = torch.ones(256 * 2**20, device=device)
        b = torch.empty_like(a)
        best = min(_copy_time_cuda(a, b) for _ in range(max(repeat, 10)))
        what = "torch copy of 1 GB on the GPU"
    bw = 2 * a.nbytes / best / 1e9
    r = Renderer(ct, energy_keV=ENERGY_KEV, device=device)
    g = pa(ct, size=512)
    _, sec, _, _ = timed(lambda g: r(g), g, repeat)
    vol_bytes = ct.array.size * 4
    print(f"\nmemory bandwidth ({what}): {bw:.1f} GB/s")
    print(f"  reading the {vol_bytes / 1e6:.0f} MB attenuation volume once at that rate: {1000 * vol_bytes / 1e9 / bw:.0f} ms; "
          f"the 512x512 kernel render: {1000 * sec:.0f} ms = {sec / (vol_bytes / 1e9 / bw):.1f}x that bound")


def _copy_time(a, b):
    t = time.perf_counter()
    np.copyto(b, a)
    return time.perf_counter() - t


def _copy_time_cuda(a, b):
    torch.cuda.synchronize()
    t = time.perf_counter()
    b.copy_(a)
    torch.cuda.synchronize()
    return time.perf_counter() - t


RESULTS = Path(__file__).resolve().parent / "results" / "drr_vs_diffdrr.md"
RESULTS_CUDA = RESULTS.with_name("drr_vs_diffdrr_cuda.md")


class _Tee(io.StringIO):
    """Print to the terminal and keep a copy (for --record)."""

    def write(self, text):
        sys.__stdout__.write(text)
        return super().write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 512, 2000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--record", action="store_true", help=f"also write the output to {RESULTS.parent}")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if not args.record:
        return run(args)
    out = _Tee()
    with contextlib.redirect_stdout(out):
        run(args)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = ("all renderers on the CPU" if args.device == "cpu"
             else f"all renderers on a {torch.cuda.get_device_name()}")
    header = (f"Measured {when} on {platform.machine()} Linux, {os.cpu_count()} CPU cores ({where}), with "
              f"`python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`.\n\n")
    dest = RESULTS if args.device == "cpu" else RESULTS_CUDA
    dest.parent.mkdir(exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(header + "```text\n" + out.getvalue() + "```\n", encoding="utf-8")
    tmp.replace(dest)


def run(args):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
    ct, _ = example_ct()
    mu = ct.with_array(hu_to_mu(ct.array, energy_keV=ENERGY_KEV))
    print(f"chest CT {ct.shape} (z, y, x), spacing {ct.spacing} mm; mu at {ENERGY_KEV:.0f} keV")
    rows = comparison(ct, mu, args.sizes, args.repeat, args.device)
    print("\n| renderer | detector | ms / DRR (wall) | CPU ms | Mrays/s | peak MB | error vs Siddon | "
          "bonelab speed-up (wall, CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        mine = next(r for r in rows if r[1] == size and r[2] is not None)
        for name, s, sec, cpu, peak, err, why in (r for r in rows if r[1] == size):
            if sec is None:
                print(f"| {name} | {s}x{s} | skipped: {why} | | | | | |")
            else:
                print(f"| {name} | {s}x{s} | {1000 * sec:.1f} | {1000 * cpu:.1f} | {s * s / sec / 1e6:.2f} | "
                      f"{peak:.0f} | {100 * err:.2f}% | {sec / mine[2]:.1f}x, {cpu / mine[3]:.1f}x |")
    scaling(ct, args.repeat, args.device)
    bandwidth(ct, args.repeat, args.device)


if __name__ == "__main__":
    main()
