"""Fused Triton ray march for CUDA: the GPU twin of :func:`bonelab.drr._kernels.march_planes`.

Written by hand because no library does it (``grid_sample`` materialises every sample point as a
tensor; see :mod:`bonelab.drr._kernels`).  Triton ships inside the CUDA builds of PyTorch, so
the GPU path needs no extra install; where Triton is missing, CUDA renders fall back to the
torch path.

Method (Joseph 1982, as on the CPU): the volume arrives permuted so that index axis ``x`` is the
one most parallel to the rays, and every ray is sampled on the planes ``x = i``, bilinearly in
``(y, z)``; each sample stands for the ray's length across the slab ``[i - 0.5, i + 0.5]``
(partial at the two ends of the box, which are sampled trilinearly at their midpoints).  One Triton program handles ``BLOCK`` neighbouring rays
of the flattened detector; as all rays of a view step through the same planes, a program walks
the planes once for all its rays, and neighbouring rays read neighbouring voxels.

Empty-space skipping: the brick grid of :func:`bonelab.drr._kernels.brick_stats` (8-voxel
bricks; a brick is air when it and its 1-voxel border lie below the empty threshold).  A
sample inside an air brick adds the brick's mean value and reads no voxels, so air costs no
volume traffic and the integral stays unbiased, as on the CPU: the two kernels compute the same
sums (to float32 rounding).

Testing without a GPU: with ``TRITON_INTERPRET=1`` set before this module is imported, Triton
runs the kernel on CPU tensors (slowly); ``tests/test_drr_triton.py`` does that in a subprocess.
"""

from __future__ import annotations

import math

import numpy as np

from bonelab.drr._kernels import BS
from bonelab.errors import InvalidArgumentError

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch builds come without Triton
    triton = None

BLOCK = 128  # rays per program: one warp group's worth of neighbouring detector pixels


def available() -> bool:
    """Whether the Triton kernel can run (Triton importable)."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _slab(t0, t1, s, d, n):
        """Intersect [t0, t1] with the parameter range where s + t d lies in [-0.5, n - 0.5]."""
        flat = tl.abs(d) < 1e-12
        sd = tl.where(flat, 1.0, d)
        ta = (-0.5 - s) / sd
        tb = (n - 0.5 - s) / sd
        inside = (s >= -0.5) & (s <= n - 0.5)
        t0 = tl.where(flat, tl.where(inside, t0, 1.0), tl.maximum(t0, tl.minimum(ta, tb)))
        t1 = tl.where(flat, tl.where(inside, t1, 0.0), tl.minimum(t1, tl.maximum(ta, tb)))
        return t0, t1

    @triton.jit
    def _bilinear(vol, b, s_y, s_z, fy, fz, mask):
        """Bilinear value in the (y, z) plane from the 4 voxels at offsets b, +s_y, +s_z."""
        v00 = tl.load(vol + b, mask=mask, other=0.0)
        v01 = tl.load(vol + b + s_y, mask=mask, other=0.0)
        v10 = tl.load(vol + b + s_z, mask=mask, other=0.0)
        v11 = tl.load(vol + b + s_z + s_y, mask=mask, other=0.0)
        c0 = v00 + fy * (v01 - v00)
        return c0 + fz * (v10 + fy * (v11 - v10) - c0)

    @triton.jit
    def _march_planes(vol, s_x, s_y, s_z, skip, nby, nbx, bmean, nbrick, lut, lut_lo, lut_inv, nl,
                      out, npix, w, src0, src1, src2, p00, p01, p02, du0, du1, du2, dv0, dv1, dv2,
                      l00, l01, l02, l10, l11, l12, l20, l21, l22, n0, n1, n2,
                      C: tl.constexpr, CP: tl.constexpr, USE_LUT: tl.constexpr, BLOCK: tl.constexpr,
                      BSZ: tl.constexpr):
        """One program: BLOCK rays (flattened pixels), all planes x = 0 .. n0-1.  ``vol`` is the
        edge-padded volume addressed as ``z * s_z + y * s_y + x * s_x`` (padded indices);
        ``out`` is (C, npix) float32; ``lut`` (C, nl) maps values to channels when USE_LUT."""
        pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = pix < npix
        r = (pix // w).to(tl.float32)
        c = (pix % w).to(tl.float32)
        dx = p00 + c * du0 + r * dv0 - src0
        dy = p01 + c * du1 + r * dv1 - src1
        dz = p02 + c * du2 + r * dv2 - src2
        wx_ = l00 * dx + l01 * dy + l02 * dz
        wy_ = l10 * dx + l11 * dy + l12 * dz
        wz_ = l20 * dx + l21 * dy + l22 * dz
        length = tl.sqrt(wx_ * wx_ + wy_ * wy_ + wz_ * wz_)  # mm per unit of the ray parameter
        # Clip t in [0, 1] to the box [-0.5, n - 0.5]^3 (slab method, all three axes).
        t0 = tl.zeros([BLOCK], dtype=tl.float32)
        t1 = tl.full([BLOCK], 1.0, dtype=tl.float32)
        t0, t1 = _slab(t0, t1, src0, dx, n0)
        t0, t1 = _slab(t0, t1, src1, dy, n1)
        t0, t1 = _slab(t0, t1, src2, dz, n2)
        hit = live & (t1 > t0) & (tl.abs(dx) > 1e-12)
        sdx = tl.where(hit, dx, 1.0)
        xa = src0 + t0 * sdx
        xb = src0 + t1 * sdx
        lo = tl.minimum(xa, xb)
        hi = tl.maximum(xa, xb)
        wx = tl.where(hit, length / tl.abs(sdx), 0.0)  # mm of ray per unit of x
        ya = dy / sdx
        za = dz / sdx
        first = tl.floor(lo + 0.5)  # the planes of the two partial end slabs
        last = tl.floor(hi + 0.5)
        chan = tl.arange(0, CP)
        acc = tl.zeros([BLOCK, CP], dtype=tl.float32)
        for i in range(0, n0):
            fi = i * 1.0
            a = tl.maximum(fi - 0.5, lo)
            bb = tl.minimum(fi + 0.5, hi)
            wgt = tl.where(hit & (bb > a), (bb - a) * wx, 0.0)
            on = wgt > 0.0
            # interior slabs: the sample on the plane x = i; end slabs: at their midpoint
            end = (fi == first) | (fi == last)
            xs = tl.where(end, 0.5 * (a + bb), fi)
            # padded coordinates of the sample, kept inside the padded volume
            x = tl.minimum(tl.maximum(xs + 1.0, 0.0), n0 + 0.999)
            y = tl.minimum(tl.maximum(src1 + (xs - src0) * ya + 1.0, 0.0), n1 + 0.999)
            z = tl.minimum(tl.maximum(src2 + (xs - src0) * za + 1.0, 0.0), n2 + 0.999)
            ix = x.to(tl.int32)
            j = y.to(tl.int32)
            k = z.to(tl.int32)
            brick = ((k // BSZ) * nby + j // BSZ) * nbx + ix // BSZ
            air = (tl.load(skip + brick, mask=on, other=0) != 0) & (end == 0)  # ends: always sampled
            read = on & (air == 0)
            fx = x - ix
            fy = y - j
            fz = z - k
            val = _bilinear(vol, k * s_z + j * s_y + ix * s_x, s_y, s_z, fy, fz, read)
            far = read & (fx > 0.0)  # off-plane (end slab) samples: the next plane's 4 taps too
            val += fx * (_bilinear(vol, k * s_z + j * s_y + (ix + 1) * s_x, s_y, s_z, fy, fz, far) - val)
            if USE_LUT:
                q = tl.minimum(tl.maximum((val - lut_lo) * lut_inv, 0.0), nl - 1.0)
                m = tl.minimum(q.to(tl.int32), nl - 2)
                f = q - m
                at = chan[None, :] * nl + m[:, None]
                tmask = read[:, None] & (chan[None, :] < C)
                la = tl.load(lut + at, mask=tmask, other=0.0)
                lb = tl.load(lut + at + 1, mask=tmask, other=0.0)
                mapped = la + f[:, None] * (lb - la)
            else:
                mapped = tl.broadcast_to(val[:, None], [BLOCK, CP])
            mean = tl.load(bmean + chan[None, :] * nbrick + brick[:, None],
                           mask=(on & air)[:, None] & (chan[None, :] < C), other=0.0)
            acc += tl.where(air[:, None], mean, mapped) * wgt[:, None]
        dst = chan[None, :] * npix + pix[:, None]
        tl.store(out + dst, acc, mask=live[:, None] & (chan[None, :] < C))


def march_planes(vol, skip, bmean, lut, lut_lo: float, lut_inv: float, frame, out):
    """Launch the kernel: arguments as :func:`bonelab.drr._kernels.march_planes`, as torch
    tensors on one device (``vol`` may be any strided view of the padded volume in (z, y, x)
    order of the kernel's axes; ``lut`` of shape (0, 2) integrates the values themselves).
    ``frame`` = (src, pix0, du, dv, lin) in the kernel's index space, numpy float64.
    ``out`` (C, H, W) float32, contiguous, receives channel value x mm."""
    src, pix0, du, dv, lin = (np.asarray(a, dtype=np.float64) for a in frame)
    nch, h, w = out.shape
    if max(vol.numel(), out.numel()) >= 2**31:  # the kernel indexes with int32
        raise InvalidArgumentError(f"the GPU kernel handles up to 2**31 voxels and output values; got a volume "
                                   f"of {vol.numel()} and {out.numel()} outputs: use method='torch' or crop.")
    use_lut = lut.shape[0] > 0
    npix = h * w
    n2, n1, n0 = (s - 2 for s in vol.shape)
    sz, sy, sx = vol.stride()
    grid = (math.ceil(npix / BLOCK),)
    _march_planes[grid](
        vol, sx, sy, sz, skip, skip.shape[1], skip.shape[2], bmean, bmean.shape[1],
        lut if use_lut else bmean,  # without a table, any tensor fills the unused slot
        float(lut_lo), float(lut_inv), max(int(lut.shape[1]), 2),
        out, npix, w, *map(float, src), *map(float, pix0), *map(float, du), *map(float, dv),
        *map(float, lin.ravel()), n0, n1, n2,
        C=nch, CP=max(1, 1 << (nch - 1).bit_length()), USE_LUT=use_lut, BLOCK=BLOCK, BSZ=BS,
    )
    return out
