"""DRR speed and accuracy: bonelab vs nanodrr vs DiffDRR on the real chest CT, in one run, each
renderer called through its public API as its own users call it.

    python benchmarks/drr_vs_diffdrr.py [--sizes 200 512 2000] [--repeat 5] [--device cpu|cuda] [--record]

``--record`` also writes everything printed to ``benchmarks/results/drr_vs_diffdrr.md`` and the
tables to ``drr_vs_diffdrr.json`` (``_cuda`` with ``--device cuda``), with the date, machine and
command; chapter 2 and the README show these figures.

The view is bonelab's ``pa(ct, size=N)`` (SDD 1020 mm, the detector covering the CT).  Each peer
is set up through its own API to cast the same rays, and only its render call is timed:

* bonelab: ``Renderer(ct, energy_keV=60)`` then ``renderer(geometry)``;
* nanodrr: ``Subject.from_filepath`` on the CT file, ``DRR.from_carm_intrinsics`` with the same
  SDD, pixel size and principal point, and the camera-to-world pose that puts its camera on
  bonelab's source and detector; ``drr(subject, rt_inv)`` under ``torch.no_grad()``;
* DiffDRR: ``diffdrr.data.read`` and ``diffdrr.drr.DRR`` with the same intrinsics, called with a
  ``RigidTransform`` pose under ``torch.no_grad()``; its default Siddon renderer and its
  trilinear one.

Each reads the HU its own way (nanodrr's and DiffDRR's HU -> mu / density differ from bonelab's
60 keV conversion), so each image is compared with the exact integral (``bonelab.drr.siddon``)
of the very values it integrates; that, the printed distance between its rays and bonelab's
(``rays``, mm) and its correlation with bonelab's image (``r``) show that all do the same work.
Times are medians of ``--repeat`` calls after one warm-up (2000 px on the CPU: one call), with
the process's CPU time beside the wall time.  On ``--device cuda`` every renderer runs on the
GPU and is timed with nanodrr's own protocol (25 warm-up calls, the median of 10 batches of 20,
CUDA events for GPU time, the host clock for wall time); geometry set-up is outside the timed
call for every renderer alike.

Then: how bonelab's time grows with detector pixels and volume size; how close the kernel is to
the memory bandwidth (a plain copy); and (CPU) how close it is to this machine's limit for its
inner loop, a tight loop of bilinear samples on one core times the cores.  Needs the bench
extra: see the Makefile's ``bench`` target.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import NamedTuple

import numpy as np
import torch
from _record import recording
from numba import njit

from bonelab import Volume
from bonelab.data import example_ct, example_ct_files
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


def rays_world(g):
    """Source (3,) and pixel centres (H*W, 3) of ``g`` in LPS mm, row-major."""
    rows, cols = np.mgrid[: g.height, : g.width]
    pix = g.pixel00() + cols[..., None] * g.pixel[0] * g.u + rows[..., None] * g.pixel[1] * g.v
    return np.asarray(g.source, float), pix.reshape(-1, 3)


def world_map(ct: Volume, peer_affine) -> np.ndarray:
    """4x4 map from bonelab's LPS world to a peer's world (RAS, perhaps re-centred): both worlds
    are affine images of the same voxel indices."""
    return np.asarray(peer_affine, float) @ np.linalg.inv(ct.affine)


def fit_pose(cam, world):
    """Camera-to-world 4x4 (rotation, maybe a reflection, and translation) taking a peer's ray
    end points in its camera frame onto bonelab's, by least squares (Kabsch); and the largest
    remaining distance (mm), which is ~0 when the peer's intrinsics (detector size, pixel size,
    distances, principal point) are bonelab's."""
    cam, world = np.asarray(cam, float), np.asarray(world, float)
    mc, mw = cam.mean(0), world.mean(0)
    u, _, vt = np.linalg.svd((cam - mc).T @ (world - mw))
    rot = (u @ vt).T
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, mw - rot @ mc
    return m, float(np.abs(cam @ rot.T + m[:3, 3] - world).max())


def principal_point(g):
    """(sdd, x0, y0) in mm: source-to-detector-plane distance and the offset of the detector
    centre from the foot of the perpendicular, along the columns (u) and rows (v)."""
    s, c = np.asarray(g.source, float), np.asarray(g.detector_center, float)
    n = g.normal if (c - s) @ g.normal > 0 else -g.normal  # pointing from the source to the detector
    off = c - (s + g.sdd * n)
    return g.sdd, float(off @ g.u), float(off @ g.v)


def peer_rays(g, to_peer) -> np.ndarray:
    """The source and pixel centres of ``g`` (1 + H*W, 3) in a peer's world (``world_map``)."""
    s, p = rays_world(g)
    return np.concatenate([s[None], p]) @ to_peer[:3, :3].T + to_peer[:3, 3]


class Setup(NamedTuple):
    """A renderer set up for one geometry: ``render()`` -> (H, W) tensor (the timed call), the
    values it integrates as (z, y, x) on the CT's grid (for its exact reference), and how far its
    rays lie from bonelab's (mm)."""

    render: object
    values: np.ndarray
    ray_offset_mm: float


def make_renderers(ct: Volume, mu: Volume, device: str = "cpu"):
    """name -> (setup(g) -> Setup, memory estimate(n_rays) in MB).  Every renderer is set up as
    its own users set it up, and only its render call is timed."""
    out = {}
    bonelab = Renderer(ct, energy_keV=ENERGY_KEV, device=device)
    if device == "cpu":
        out["bonelab kernel (numba, default step)"] = (
            lambda g: Setup(lambda: bonelab(g), mu.array, 0.0), lambda n: n * 4e-6)
        out["bonelab kernel, 1 mm step"] = (
            lambda g: Setup(lambda: bonelab(g, step_mm=1.0), mu.array, 0.0), lambda n: n * 4e-6)
    else:
        out["bonelab kernel (Triton, default step)"] = (
            lambda g: Setup(lambda: bonelab(g), mu.array, 0.0), lambda n: n * 4e-6)
    out["bonelab torch path (grid_sample)"] = (
        lambda g: Setup(lambda: bonelab(g, method="torch", memory_budget_mb=1024), mu.array, 0.0),
        lambda n: 1024 + n * 4e-6)
    path = str(example_ct_files()["cxr.nii.gz"])
    try:
        out.update(nanodrr_renderers(ct, path, device))
    except ImportError as exc:
        print(f"nanodrr not installed ({exc}); skipped")
    try:
        out.update(diffdrr_renderers(ct, path, device))
    except ImportError as exc:
        print(f"diffdrr not importable ({exc}); skipped")
    return out


def nanodrr_renderers(ct, path, device):
    """nanodrr as its README uses it: ``Subject.from_filepath`` (its own HU -> mu), a camera from
    ``DRR.from_carm_intrinsics``, and a camera-to-world pose ``rt_inv``; backend "auto" (torch on
    the CPU, its fused Triton kernel on CUDA)."""
    from importlib.metadata import version

    from nanodrr.data import Subject
    from nanodrr.drr import DRR

    subject = Subject.from_filepath(path).to(device)
    to_peer = world_map(ct, subject.voxel_to_world.double().cpu().numpy())
    values = subject.image[0, 0].cpu().numpy()  # (z, y, x), the mu it integrates (1/mm)

    def setup(g):
        sdd, x0, y0 = principal_point(g)
        drr = DRR.from_carm_intrinsics(sdd=sdd, delx=g.pixel[0], dely=g.pixel[1], x0=-x0, y0=-y0,
                                       height=g.height, width=g.width, device=device)
        cam = np.concatenate([drr.src[0].cpu().numpy(), drr.tgt[0].cpu().numpy()])
        pose, offset = fit_pose(cam, peer_rays(g, to_peer))
        rt_inv = torch.tensor(pose, dtype=torch.float32, device=device)[None]

        def render():
            with torch.no_grad():
                return drr(subject, rt_inv)[0, 0]
        return Setup(render, values, offset)

    name = f"nanodrr {version('nanodrr')} ({'torch' if device == 'cpu' else 'Triton'}, 500 samples)"
    mem = (lambda n: n * 3 * 4 * 3 / 2**20) if device != "cpu" else (lambda n: n * 500 * 4 * 4 * 3 / 2**20)
    return {name: (setup, mem)}


def diffdrr_renderers(ct, path, device):
    """DiffDRR as its tutorials use it: ``diffdrr.data.read`` (its own HU -> density, the volume
    centred at the world origin) and ``diffdrr.drr.DRR`` called with a ``RigidTransform`` pose;
    its default Siddon renderer and its trilinear one."""
    from importlib.metadata import version

    from diffdrr.data import read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform

    subject = read(path, orientation=None)
    to_peer = world_map(ct, subject.volume.affine)
    values = subject.density.data[0].permute(2, 1, 0).numpy()  # DiffDRR keeps (x, y, z)
    v = version("diffdrr")

    def setup_for(renderer, **kwargs):
        def setup(g):
            sdd, x0, y0 = principal_point(g)
            world = peer_rays(g, to_peer)
            for reverse in (False, True):  # the detector's x-axis convention that needs no reflection
                drr = DRR(subject, sdd=sdd, height=g.height, width=g.width, delx=g.pixel[0], dely=g.pixel[1],
                          x0=x0, y0=y0, reverse_x_axis=reverse, renderer=renderer).to(device)
                src, tgt = drr.detector(RigidTransform(torch.eye(4, device=device)[None]), None)
                cam = np.concatenate([src[0].cpu().numpy(), tgt[0].cpu().numpy()])
                pose, offset = fit_pose(cam, world)
                if np.linalg.det(pose[:3, :3]) > 0:
                    break
            rigid = RigidTransform(torch.tensor(pose, dtype=torch.float32, device=device)[None])

            def render():
                with torch.no_grad():
                    return drr(rigid, **kwargs)[0, 0]
            return Setup(render, values, offset)
        return setup

    return {
        f"DiffDRR {v} Siddon (default)": (setup_for("siddon"), lambda n: n * sum(ct.size) * 4 * 8 / 2**20),
        f"DiffDRR {v} trilinear (500 samples)": (setup_for("trilinear", n_points=500),
                                                 lambda n: n * 500 * 4 * 4 * 3 / 2**20),
    }


def timed(fn, repeat):
    """(image as numpy, median wall seconds, median CPU seconds of this process, peak memory MB)
    after one warm-up call (compilation, caches).  CPU time (all threads) is robust to other jobs
    sharing the machine.  On CUDA: :func:`_timed_cuda`."""
    img = fn()
    if img.is_cuda:
        return _timed_cuda(fn)
    walls, cpus = [], []
    with PeakRSS() as mem:
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            img = fn()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
    return img.numpy(), float(np.median(walls)), float(np.median(cpus)), mem.mb


def _timed_cuda(fn, warmup=25, batches=10, calls=20):
    """nanodrr's own protocol on the GPU: ``warmup`` calls, then the median over ``batches`` of
    the mean time per call in a batch of ``calls``, as GPU time (CUDA events) and as wall time
    (host clock, synchronised).  Returns (image, wall s, GPU s, peak GPU MB) in the CPU
    columns' place."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    gpu, wall = [], []
    for _ in range(batches):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        start.record()
        for _ in range(calls):
            img = fn()
        end.record()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - t) / calls)
        gpu.append(start.elapsed_time(end) / 1000 / calls)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return img.cpu().numpy(), float(np.median(wall)), float(np.median(gpu)), peak


def comparison(ct, mu, sizes, repeat, device="cpu"):
    renderers = make_renderers(ct, mu, device)
    limit_mb = MEM_LIMIT_MB if device == "cpu" else 0.8 * torch.cuda.get_device_properties(0).total_memory / 2**20
    siddon(mu, pa(ct, size=4))  # compile the reference before timing it
    rows, images = [], {}
    for size in sizes:
        g = pa(ct, size=size)
        t = time.perf_counter()
        siddon(mu, g)
        t_ref = time.perf_counter() - t
        n = g.width * g.height
        first = None
        print(f"\n{size}x{size} detector, pixel {g.pixel[0]:.3f} mm; exact Siddon reference (bonelab.drr.siddon, "
              f"numba): {1000 * t_ref:.0f} ms", flush=True)
        refs = {}
        for name, (setup, mem_mb) in renderers.items():
            done = [r for r in rows if r[0] == name and r[2] is not None]
            est_t = done[-1][2] * n / done[-1][1] ** 2 if done else 0.0  # time grows with pixels
            if mem_mb(n) > limit_mb or est_t > TIME_LIMIT_S:
                why = f"needs ~{mem_mb(n) / 1024:.0f} GB" if mem_mb(n) > limit_mb else f"would take ~{est_t:.0f} s"
                print(f"  {name:42s} skipped: {why}")
                rows.append((name, size, None, None, None, None, why, None, None))
                continue
            s = setup(g)
            img, sec, cpu, peak = timed(s.render, repeat if size <= 512 or device != "cpu" else 1)
            key = id(s.values)
            if key not in refs:  # the exact integral of what this renderer integrates
                refs[key] = siddon(Volume(np.ascontiguousarray(s.values, np.float32), spacing=ct.spacing,
                                          origin=ct.origin, direction=ct.direction), g)
            ref = refs[key]
            body = ref > 0.05 * ref.max()
            err = float(np.mean(np.abs(img[body] - ref[body]) / ref[body]))
            first = first or (sec, cpu, img)
            r = float(np.corrcoef(first[2].ravel(), img.ravel())[0, 1])  # agreement with bonelab's image
            images[name, size] = img
            rows.append((name, size, sec, cpu, peak, err, None, r, s.ray_offset_mm))
            print(f"  {name:42s} {1000 * sec:9.1f} ms ({'GPU' if device != 'cpu' else 'CPU'} "
                  f"{1000 * cpu:8.1f} ms)  {n / sec / 1e6:6.2f} Mrays/s  peak +{peak:6.0f} MB  "
                  f"err {100 * err:5.2f}%  r {r:.4f}  rays {s.ray_offset_mm:.0e} mm  bonelab x{sec / first[0]:5.1f} "
                  f"(CPU x{cpu / first[1]:5.1f})", flush=True)
    return rows, images


def scaling(ct, repeat, device="cpu"):
    print("\nbonelab kernel: time vs detector pixels (PA, same field of view)")
    r = Renderer(ct, energy_keV=ENERGY_KEV, device=device)
    base = None
    for size in (100, 200, 400, 800) if device == "cpu" else (200, 512, 1024, 2048, 3000):
        g = pa(ct, size=size)
        _, sec, _, _ = timed(lambda r=r, g=g: r(g), repeat)
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
        gv = pa(v, size=200)
        _, sec, _, _ = timed(lambda rv=rv, gv=gv: rv(gv), repeat)
        print(f"  {label:24s} {v.array.size / 1e6:6.1f} M voxels  {1000 * sec:8.1f} ms")


def bandwidth(ct, repeat, device="cpu"):
    if device == "cpu":
        a = np.ones(64 * 2**20, np.float32)
        b = np.empty_like(a)
        best = min(_time(lambda: np.copyto(b, a)) for _ in range(repeat))
        what = "numpy copy of 256 MB"
    else:
        a = torch.ones(256 * 2**20, device=device)
        b = torch.empty_like(a)
        best = min(_copy_time_cuda(a, b) for _ in range(max(repeat, 10)))
        what = "torch copy of 1 GB on the GPU"
    bw = 2 * a.nbytes / best / 1e9
    r = Renderer(ct, energy_keV=ENERGY_KEV, device=device)
    g = pa(ct, size=512)
    _, sec, _, _ = timed(lambda r=r, g=g: r(g), repeat)
    vol_bytes = ct.array.size * 4
    print(f"\nmemory bandwidth ({what}): {bw:.1f} GB/s")
    print(f"  reading the {vol_bytes / 1e6:.0f} MB attenuation volume once at that rate: {1000 * vol_bytes / 1e9 / bw:.0f} ms; "
          f"the 512x512 kernel render: {1000 * sec:.0f} ms = {sec / (vol_bytes / 1e9 / bw):.1f}x that bound")


def _copy_time_cuda(a, b):
    torch.cuda.synchronize()
    t = time.perf_counter()
    b.copy_(a)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 512, 2000])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--record", action="store_true",
                   help="also write the output to benchmarks/results/drr_vs_diffdrr[_cuda].md and .json")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    where = "all renderers on the CPU" if args.device == "cpu" else f"all renderers on a {torch.cuda.get_device_name()}"
    name = "drr_vs_diffdrr" if args.device == "cpu" else "drr_vs_diffdrr_cuda"
    with recording(name, where, args.record) as tables:
        run(args, tables)


def run(args, tables):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
    ct, _ = example_ct()
    mu = ct.with_array(hu_to_mu(ct.array, energy_keV=ENERGY_KEV))
    print(f"chest CT {ct.shape} (z, y, x), spacing {ct.spacing} mm; mu at {ENERGY_KEV:.0f} keV")
    rows, _ = comparison(ct, mu, args.sizes, args.repeat, args.device)
    keys = ("renderer", "detector_px", "wall_ms", "cpu_ms" if args.device == "cpu" else "gpu_ms", "peak_mb",
            "error_vs_exact", "skipped", "r_vs_bonelab", "ray_offset_mm")
    tables["renderers"] = [dict(zip(keys, (*r[:2], *(None if v is None else 1000 * v for v in r[2:4]), *r[4:])))
                           for r in rows]
    tables["markdown"] = {"renderers": renderer_markdown(tables["renderers"])}
    print("\n" + tables["markdown"]["renderers"])
    scaling(ct, args.repeat, args.device)
    bandwidth(ct, args.repeat, args.device)
    if args.device == "cpu":
        tables["kernel_limit"] = kernel_limit(ct, mu, args.repeat)
        tables["markdown"]["kernel_limit"] = limit_markdown(tables["kernel_limit"])
        print("\n" + tables["markdown"]["kernel_limit"])


def renderer_markdown(rows) -> str:
    """The comparison as a markdown table: times, throughput, memory, agreement, and each
    renderer's time over bonelab's default kernel's at the same detector size."""
    second = "cpu_ms" if "cpu_ms" in rows[0] else "gpu_ms"
    lines = [f"| renderer | detector | ms / DRR (wall) | {'CPU' if second == 'cpu_ms' else 'GPU'} ms | Mrays/s | "
             "peak MB | error vs exact | r vs bonelab | time / bonelab's (wall, " +
             ("CPU" if second == "cpu_ms" else "GPU") + ") |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = r["detector_px"]
        if r["skipped"]:
            lines.append(f"| {r['renderer']} | {n}x{n} | skipped: {r['skipped']} | | | | | | |")
            continue
        mine = next(m for m in rows if m["detector_px"] == n and not m["skipped"])
        lines.append(f"| {r['renderer']} | {n}x{n} | {r['wall_ms']:.1f} | {r[second]:.1f} | "
                     f"{n * n / r['wall_ms'] / 1000:.3f} | {r['peak_mb']:.0f} | {100 * r['error_vs_exact']:.2f}% | "
                     f"{r['r_vs_bonelab']:.4f} | {r['wall_ms'] / mine['wall_ms']:.1f}x, "
                     f"{r[second] / mine[second]:.1f}x |")
    return "\n".join(lines)


def limit_markdown(rows) -> str:
    lines = [f"Tight loop of bilinear samples: {rows[0]['limit_msamples_per_s']:.0f} M samples/s on all cores.", "",
             "| kernel | detector | ms / DRR | M samples/s | limit / kernel |", "|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['detector_px']}x{r['detector_px']} | {r['wall_ms']:.1f} | "
              f"{r['msamples_per_s']:.0f} | {r['limit_over_kernel']:.2f}x |" for r in rows]
    return "\n".join(lines)


@njit(cache=True, fastmath=True)
def _bilinear_loop(vol, starts, slopes, out):
    """The machine's limit for the default kernel's inner loop, on one core: one bilinear sample
    (4 taps) per plane of the contiguous axis along straight lines through ``vol`` (n2, n1, n0),
    summed; no clipping, no lookup table, no empty-space test.  ``starts`` (R, 2) and ``slopes``
    (R, 2): each line's (axis-1, axis-2) position at plane 0 and its change per plane."""
    n0 = vol.shape[2]
    for r in range(starts.shape[0]):
        y, z = starts[r, 0], starts[r, 1]
        acc = 0.0
        for i in range(n0):
            j, k = int(y), int(z)
            fy, fz = y - j, z - k
            c0 = vol[k, j, i] + fy * (vol[k, j + 1, i] - vol[k, j, i])
            c1 = vol[k + 1, j, i] + fy * (vol[k + 1, j + 1, i] - vol[k + 1, j, i])
            acc += c0 + fz * (c1 - c0)
            y += slopes[r, 0]
            z += slopes[r, 1]
        out[r] = acc


def planes_crossed(ct, g) -> float:
    """Samples the default kernel takes for ``g``: the voxel planes each ray crosses along the
    axis most parallel to the rays (the one it marches along), summed over rays."""
    s, p = rays_world(g)
    si, pi = ct.world_to_index(s), ct.world_to_index(p)
    d = pi - si
    axis = int(np.argmax(np.abs(d).mean(0)))
    n = np.asarray(ct.size, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (-0.5 - si) / d, (n - 0.5 - si) / d
    t0 = np.nanmax(np.minimum(ta, tb), axis=1).clip(0, 1)
    t1 = np.nanmin(np.maximum(ta, tb), axis=1).clip(0, 1)
    return float(np.sum(np.abs(d[:, axis]) * np.clip(t1 - t0, 0, None)))


def kernel_limit(ct, mu, repeat):
    """How far the CPU kernel is from what this machine can do: bilinear samples per second of
    :func:`_bilinear_loop` on one core (lines with a PA view's slopes through the chest CT's
    mu volume, laid out as the kernel lays it out), times the cores, against the kernel's samples
    per second without empty-space skipping (every plane interpolated) and with it (planes
    crossed per second, skipped ones included)."""
    cores = os.cpu_count()
    vol = np.ascontiguousarray(np.moveaxis(mu.array, 1, 2))  # (z, x, y): the AP axis contiguous, as for PA
    # Lines in raster order that diverge from a point 1020 mm away, as a cone beam's rays do
    # (neighbours share cache lines, as in the kernel); all inside the volume.
    n1, n2, n0 = vol.shape[1], vol.shape[0], vol.shape[2]
    kk, jj = np.meshgrid(np.linspace(1, n2 - 3, 100), np.linspace(1, n1 - 3, 200), indexing="ij")
    starts = np.stack([jj.ravel(), kk.ravel()], 1)
    centre = np.array([(n1 - 2) / 2, (n2 - 2) / 2])
    # per plane (one voxel along y): x changes by offset_x(mm) / 1020 mm in x voxels, z likewise
    # in z voxels: (offset in voxels) * (voxel mm) / 1020 * (y voxel mm) / (voxel mm)
    slopes = (starts - centre) * mu.spacing[1] / 1020.0
    end = starts + slopes * (n0 - 1)
    keep = ((end > 0) & (end < np.array([n1, n2]) - 2)).all(1)
    starts, slopes = np.ascontiguousarray(starts[keep]), np.ascontiguousarray(slopes[keep])
    out = np.empty(len(starts))
    _bilinear_loop(vol, starts[:2], slopes[:2], out[:2])  # compile
    best = min(_time(lambda: _bilinear_loop(vol, starts, slopes, out)) for _ in range(repeat))
    limit = len(starts) * vol.shape[2] / best
    print("\nkernel vs this machine's limit (bilinear samples, 4 taps each)")
    print(f"  tight loop, one core: {limit / 1e6:7.1f} M samples/s; x {cores} cores = {cores * limit / 1e6:7.1f} M samples/s")
    rows = []
    for label, empty in (("default kernel, no empty-space skipping", -1e9), ("default kernel (skips air)", None)):
        r = Renderer(ct, energy_keV=ENERGY_KEV, empty_below=empty)
        for size in (200, 512):
            g = pa(ct, size=size)
            _, sec, _, _ = timed(lambda r=r, g=g: r(g), repeat)
            rate = planes_crossed(ct, g) / sec
            print(f"  {label:40s} {size}x{size} {1000 * sec:7.1f} ms {rate / 1e6:6.1f} M samples/s  "
                  f"limit / kernel {cores * limit / rate:.2f}")
            rows.append({"kernel": label, "detector_px": size, "wall_ms": 1000 * sec, "msamples_per_s": rate / 1e6,
                         "limit_msamples_per_s": cores * limit / 1e6, "limit_over_kernel": cores * limit / rate})
    return rows


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
