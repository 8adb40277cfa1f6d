"""The Triton GPU kernel: same sums as the numba CPU kernel (checked without a GPU through
Triton's CPU interpreter), a 3000 x 3000 detector on CUDA, and how ``method="auto"`` chooses.
Analytic accuracy and CPU/GPU agreement on the chest CT on CUDA: tests/test_drr_render.py."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bonelab import InvalidArgumentError, Volume
from bonelab.drr import Renderer, _triton, pa, render

# Run in a fresh interpreter: TRITON_INTERPRET must be set before the kernel is defined, and
# must not leak into the GPU tests of this session.
PARITY = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np
    from bonelab.drr import Renderer, carm, lateral, pa
    from bonelab.phantoms import wrist

    ct = wrist(3, spacing=2.0).ct
    worst = []
    for kvp in (None, 80):
        r = Renderer(ct, kvp=kvp, device="cpu")
        for g in (pa(ct, size=(20, 16)), lateral(ct, "left", size=16), carm(ct, angle=30, tilt=20, size=16)):
            for layout in ("ray", "detector"):
                r._gpu_layout = layout
                cpu = r._kernel(g, None).numpy()
                gpu = r._kernel(g, None, use_triton=True).numpy()
                assert gpu.shape == cpu.shape and np.isfinite(gpu).all(), (gpu.shape, cpu.shape)
                diff = np.abs(gpu - cpu)
                edge = diff.max(axis=(1, 2)) / (1e-3 * np.abs(cpu).max(axis=(1, 2)) + 1e-3)
                worst.append((diff.mean() / np.abs(cpu).mean(), edge.max()))
    print(max(w[0] for w in worst), max(w[1] for w in worst))
""")


def _interpreter_works() -> bool:
    """Triton's CPU interpreter before 3.9 fails on numpy 2.4 (loop bounds from tensors)."""
    if not _triton.available():
        return False
    import triton

    return tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 9)


@pytest.mark.skipif(not _interpreter_works(), reason="needs Triton 3.9+ (its CPU interpreter)")
def test_triton_kernel_matches_numba_kernel_in_the_interpreter():
    """Mono and polychromatic (4 material channels), three views, both memory layouts.  The
    kernels differ only where float rounding puts a ray's entry plane on the other side of a
    slab boundary: an air brick's mean then stands in for one edge sample, which moves a pixel by
    less than 0.1% of its channel's largest integral (plus 1e-3 for near-empty channels)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", PARITY], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mean_rel, edge = map(float, done.stdout.split())
    assert mean_rel < 1e-3, mean_rel
    assert edge < 1.0, edge


def _sphere(n=64, spacing=1.0, mu=0.02, radius=20.0):
    grid = Volume(np.zeros((n, n, n), np.float32), spacing=(spacing,) * 3)
    z, y, x = np.meshgrid(*[np.arange(n) * spacing] * 3, indexing="ij")
    c = (n - 1) * spacing / 2
    r = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)
    return grid.with_array((mu * np.clip(radius + 0.5 * spacing - r, 0, spacing) / spacing).astype(np.float32))


@pytest.mark.gpu
def test_cuda_kernel_detector_of_3000_pixels_square():
    vol = _sphere(n=48)
    img = render(vol, pa(vol, size=3000), values="mu", device="cuda")
    assert img.shape == (3000, 3000) and torch.isfinite(img).all()
    centre = float(img[1500, 1500])
    assert abs(centre - 0.02 * 40) / (0.02 * 40) < 5e-3


def test_auto_method_on_a_gpu_picks_triton_kernel_or_torch(monkeypatch):
    vol = _sphere(n=8)
    r = Renderer(vol, values="mu", device="cuda")  # no GPU needed: nothing is moved yet
    monkeypatch.setattr(_triton, "available", lambda: True)
    assert r._method("auto") == "kernel"
    assert r._method("auto", step_mm=0.5) == "torch"  # the GPU kernel has no step option
    with pytest.raises(InvalidArgumentError, match="step_mm"):
        r._method("kernel", step_mm=0.5)
    monkeypatch.setattr(_triton, "available", lambda: False)
    assert r._method("auto") == "torch"
    with pytest.raises(InvalidArgumentError, match="Triton"):
        r._method("kernel")
    assert Renderer(vol, values="mu", device="cpu")._method("auto") == "kernel"
