"""Tissue values and the painter that turns signed-distance shapes into a CT volume in HU.

HU table (values at 120 kVp; ranges as in standard CT texts, e.g. Kalender, *Computed
Tomography*, 3rd ed. 2011, and the issue that specifies the phantoms):

===================  ==========  ============================================================
tissue               HU          note
===================  ==========  ============================================================
air                  -1000
lung parenchyma      -850        -900..-800 at inspiration; texture + vessels added
fat                  -100        -120..-80
skin                 30
muscle, soft tissue  40          blood and heart ~40, liver ~60
intervertebral disc  80          annulus fibrosus 70-100
trabecular bone      100..300    per-subject density, healthy to osteoporotic; marrow texture
cortical bone        1200..1800  per subject; thin shells read lower after partial volume
metal implant        3071        the 12-bit scanner ceiling (painted higher, then clipped)
===================  ==========  ============================================================

Bone: a cortical shell around a trabecular interior; the marrow texture (band-passed noise) also
varies the shell's thickness (+-35 %) and density (+-6 %), so a bone's histogram decays smoothly
from trabecular to cortical values as in real CT.

Partial volume: each shape is painted with its voxel occupancy (from the signed distance), and
the finished volume is blurred with a Gaussian point-spread function; CT noise is added *before*
the blur, so it comes out spatially correlated like reconstructed CT noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bonelab.phantoms.sdf import FAR, Grid, Shape, region_shape, relative, union_regions

HU = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "water": 0.0,
    "skin": 30.0,
    "soft": 40.0,
    "muscle": 45.0,
    "blood": 40.0,
    "liver": 60.0,
    "disc": 80.0,
    "cartilage": 110.0,
    "metal": 6000.0,  # painted value; clipped to the scanner ceiling
}
HU_MIN, HU_MAX = -1024.0, 3071.0


class Canvas:
    """A CT volume being painted: ``hu`` float32 and ``labels`` uint8 on a :class:`Grid`.

    Later paint covers earlier paint (painter's algorithm), blended by voxel occupancy.

    >>> from bonelab.phantoms.sdf import Grid, sphere
    >>> c = Canvas(Grid((20, 20, 20), origin=(-10, -10, -10)), np.random.default_rng(0))
    >>> c.fill(sphere((0, 0, 0), 8), HU["soft"])
    >>> float(c.hu[10, 10, 10])
    40.0
    """

    def __init__(self, grid: Grid, rng: np.random.Generator, background: float = HU["air"]):
        self.grid = grid
        self.rng = rng
        self.hu = np.full(grid.shape, background, np.float32)
        self.labels = np.zeros(grid.shape, np.uint8)
        self.h = float(np.mean(grid.spacing))

    def occupancy(self, d: np.ndarray) -> np.ndarray:
        """Fraction of each voxel inside the surface, from the signed distance (mm)."""
        occ = np.multiply(d, np.float32(-1.0 / self.h), dtype=np.float32)
        occ += np.float32(0.5)
        return np.clip(occ, 0.0, 1.0, out=occ)

    def _blend(self, region, d, value):
        occ = self.occupancy(d)
        cur = self.hu[region]
        if np.isscalar(value):
            # cur += occ * (value - cur), in place on float32
            diff = np.subtract(np.float32(value), cur, dtype=np.float32)
        else:
            diff = np.subtract(value, cur, dtype=np.float32)
        diff *= occ
        cur += diff

    def fill(self, shape: Shape, value, region=None, d=None):
        """Paint ``shape`` (or precomputed distances ``d`` on ``region``) with ``value`` HU (a
        number or an array on the region)."""
        if d is None:
            region, d = shape.sample(self.grid, region)
            if region is None:
                return
        self._blend(region, d, value)

    def texture(self, shape, sigma_mm: float) -> np.ndarray:
        """Zero-mean, unit-variance Gaussian-filtered noise of a region shape (marrow texture)."""
        noise = self.rng.standard_normal(shape, dtype=np.float32)
        sigma = np.maximum(sigma_mm / self.grid.spacing[::-1], 0.5)
        tex = ndimage.gaussian_filter(noise, sigma, mode="wrap")
        return tex / (tex.std() + 1e-6)

    def bone(self, region, d, label: int, cortical: float, trabecular: float, shell,
             texture_sd: float = 0.25, texture_mm: float = 0.8):
        """Paint a bone from its distances ``d`` on ``region``: a cortical shell of thickness
        ``shell`` mm (a number or an array on the region) around a trabecular interior whose HU
        varies with a marrow texture (relative SD ``texture_sd``, grain ``texture_mm``).
        Voxels inside get ``label`` (0 paints bone without a label)."""
        if region is None:
            return
        tex = self.texture(d.shape, texture_mm)
        trab = trabecular * (1.0 + texture_sd * tex) + 15.0 * tex
        # the cortex varies too: thickness +-35 % and density +-6 % (1 SD), so the bone histogram
        # decays smoothly from trabecular to cortical values as in real CT, not in two humps
        shell = np.maximum(shell * (1.0 + 0.35 * tex), 0.3)
        cortical = cortical * (1.0 + 0.06 * tex)
        cort_frac = np.clip((shell + d) / self.h + 0.5, 0.0, 1.0)
        value = trab + (cortical - trab) * cort_frac
        self._blend(region, d, value)
        if label:
            lab = self.labels[region]
            lab[d < 0] = label

    def finish(self, noise_sd: float, psf_mm: float) -> np.ndarray:
        """Add CT noise (``noise_sd`` HU after the blur), blur with a Gaussian PSF of
        ``psf_mm`` sigma, clip to the scanner range; returns the HU volume (float32)."""
        sigma = np.maximum(psf_mm / self.grid.spacing[::-1], 1e-3)
        gain = noise_gain(sigma)
        vol = self.hu
        vol += self.rng.standard_normal(vol.shape, dtype=np.float32) * np.float32(noise_sd / gain)
        out = ndimage.gaussian_filter(vol, sigma, mode="nearest", truncate=3.0)
        np.clip(out, HU_MIN, HU_MAX, out=out)
        return out


def noise_gain(sigma_vox) -> float:
    """Standard deviation left after a Gaussian blur (``sigma_vox`` per axis) of unit white noise."""
    g = 1.0
    for s in np.broadcast_to(sigma_vox, (3,)):
        delta = np.zeros(31)
        delta[15] = 1.0
        w = ndimage.gaussian_filter1d(delta, float(s), mode="constant")
        g *= float(np.sqrt((w * w).sum()))
    return g


def carve_joints(samples, gap: float):
    """Separate touching or overlapping bones by a joint space of about ``gap`` mm.

    ``samples`` is a list of ``(region, d)`` from :meth:`Shape.sample`.  Each bone keeps the
    part of itself on its own side of the bisector with every neighbour, minus half the gap:
    ``d_i' = max(d_i, (d_i - min_j d_j + gap) / 2)``.  Oversized neighbours thus meet at flat
    or congruent articular facets, the way packed carpal bones and vertebral joints look.

    >>> from bonelab.phantoms.sdf import Grid, sphere
    >>> g = Grid((1, 1, 41), origin=(-20, 0, 0))
    >>> a, b = sphere((-6, 0, 0), 8).sample(g), sphere((6, 0, 0), 8).sample(g)
    >>> (ra, da), (rb, db) = carve_joints([a, b], gap=2.0)
    >>> float(da[0, 0, 19:22].max()) > 0 and float(db[0, 0, 19:22].max()) > 0  # gap at x=-1..1
    True
    """
    whole = union_regions([r for r, _ in samples])
    if whole is None:
        return samples
    shape = region_shape(whole)
    m1 = np.full(shape, FAR, np.float32)
    m2 = np.full(shape, FAR, np.float32)
    arg = np.full(shape, -1, np.int16)
    for i, (reg, d) in enumerate(samples):
        if reg is None:
            continue
        rel = relative(reg, whole)
        a1, a2, ag = m1[rel], m2[rel], arg[rel]
        closer = d < a1
        a2[...] = np.where(closer, a1, np.minimum(a2, d))
        ag[closer] = i
        a1[...] = np.where(closer, d, a1)
    out = []
    for i, (reg, d) in enumerate(samples):
        if reg is None:
            out.append((reg, d))
            continue
        rel = relative(reg, whole)
        other = np.where(arg[rel] == i, m2[rel], m1[rel])
        out.append((reg, np.maximum(d, (d - other + gap) * 0.5)))
    return out


def shell_profile(region, grid: Grid, axis_point, axis_dir, thin: float, thick: float,
                  start: float, length: float):
    """Cortical thickness (mm) along a long bone: ``thin`` at the bone end, rising smoothly to
    ``thick`` over ``length`` mm once the position along ``axis_dir`` passes ``start`` mm from
    ``axis_point`` (the diaphysis of a femur or radius)."""
    X, Y, Z = grid.coords(region)
    p = np.asarray(axis_point, float)
    u = np.asarray(axis_dir, float) / np.linalg.norm(axis_dir)
    s = (X - p[0]) * u[0] + (Y - p[1]) * u[1] + (Z - p[2]) * u[2]
    t = np.clip((s - start) / length, 0.0, 1.0)
    t = t * t * (3 - 2 * t)
    return (thin + (thick - thin) * t).astype(np.float32)


def layered_body(canvas: Canvas, outer: Shape, skin_mm: float, fat_mm: float,
                 inner_value: float = HU["muscle"]):
    """Paint a body: skin, then subcutaneous fat ``fat_mm`` thick, then ``inner_value`` inside.
    Returns the region and outer distance (reused to test "inside the body")."""
    region, d = outer.sample(canvas.grid)
    occ = canvas.occupancy
    hu = canvas.hu[region]
    # one pass per layer boundary: air -> skin -> fat -> inner, each step blended by occupancy
    hu[...] = HU["air"]
    for depth, step in ((0.0, HU["skin"] - HU["air"]), (skin_mm, HU["fat"] - HU["skin"]),
                        (skin_mm + fat_mm, inner_value - HU["fat"])):
        o = occ(d + np.float32(depth))
        o *= np.float32(step)
        hu += o
    return region, d

