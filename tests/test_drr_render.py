"""Rendering accuracy against ground truth: analytic phantoms (exact chord lengths), the exact
Siddon reference on the real chest CT, kernel vs torch paths, gradients, labels, CT localizers
(slot scans), bad input."""

import numpy as np
import pytest
import torch

from bonelab import GeometryMismatchError, InvalidValuesError, Volume
from bonelab.drr import (
    Renderer,
    ap,
    carm,
    label_masks,
    lateral,
    localizer,
    march,
    pa,
    project_labels,
    render,
    siddon,
)


# --- analytic phantom ---------------------------------------------------------------------------
def _rot(axis, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class Sphere:
    def __init__(self, c, r, mu):
        self.c, self.r, self.mu = np.asarray(c, float), r, mu

    def sdf(self, p):
        return np.linalg.norm(p - self.c, axis=-1) - self.r

    def chord(self, s, e):
        b = ((self.c - s) * e).sum(-1)
        q = ((self.c - s) ** 2).sum(-1) - b**2
        return 2 * np.sqrt(np.clip(self.r**2 - q, 0, None))

    def grown(self, delta):
        return Sphere(self.c, self.r + delta, self.mu)


class Box:
    """Oriented box: centre, rotation (columns = box axes in LPS), half sizes (mm)."""

    def __init__(self, c, rot, half, mu):
        self.c, self.rot, self.half, self.mu = np.asarray(c, float), rot, np.asarray(half, float), mu

    def sdf(self, p):
        q = np.abs((p - self.c) @ self.rot) - self.half
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)

    def chord(self, s, e):
        sl, el = (s - self.c) @ self.rot, e @ self.rot
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (-self.half - sl) / el, (self.half - sl) / el
        t0 = np.nan_to_num(np.minimum(ta, tb), nan=-np.inf).max(-1)
        t1 = np.nan_to_num(np.maximum(ta, tb), nan=np.inf).min(-1)
        return np.clip(t1 - t0, 0, None)

    def grown(self, delta):
        return Box(self.c, self.rot, self.half + delta, self.mu)


class Cylinder:
    """Finite cylinder: centre, unit axis, radius, half length (mm)."""

    def __init__(self, c, axis, r, half, mu):
        self.c, self.a, self.r, self.h, self.mu = np.asarray(c, float), np.asarray(axis, float), r, half, mu
        self.a /= np.linalg.norm(self.a)

    def sdf(self, p):
        d = p - self.c
        z = d @ self.a
        rho = np.linalg.norm(d - z[..., None] * self.a, axis=-1)
        q = np.stack([rho - self.r, np.abs(z) - self.h], -1)
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)

    def chord(self, s, e):
        d = s - self.c
        w0 = d - (d @ self.a)[..., None] * self.a
        w1 = e - (e @ self.a)[..., None] * self.a
        a, b, c = (w1 * w1).sum(-1), (w0 * w1).sum(-1), (w0 * w0).sum(-1) - self.r**2
        disc = np.sqrt(np.clip(b**2 - a * c, 0, None))
        r0, r1 = (-b - disc) / a, (-b + disc) / a
        z0, ez = d @ self.a, e @ self.a
        za, zb = (-self.h - z0) / ez, (self.h - z0) / ez
        t0 = np.maximum(r0, np.minimum(za, zb))
        t1 = np.minimum(r1, np.maximum(za, zb))
        return np.where(b**2 > a * c, np.clip(t1 - t0, 0, None), 0.0)

    def grown(self, delta):
        return Cylinder(self.c, self.a, self.r + delta, self.h + delta, self.mu)


def _world(grid):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.size], indexing="ij"), -1)
    return grid.index_to_world(ijk).transpose(2, 1, 0, 3)  # (z, y, x, 3)


@pytest.fixture(scope="module")
def phantom():
    """Three separate objects of known mu (1/mm) in a rotated, anisotropic ~0.45 mm grid,
    voxelised with a one-voxel linear ramp across each surface (anti-aliased).  The fine grid
    and the ramp make the voxel model converge to the analytic objects (its own error, measured
    with a 0.05 mm step, is about 0.2%), so the comparison measures the renderer, not staircases."""
    grid = Volume(np.zeros((140, 150, 150), np.float32), spacing=(0.45, 0.42, 0.48), origin=(-30, -35, -40),
                  direction=_rot("z", 15) @ _rot("x", -10))
    c = grid.center
    objects = [
        Sphere(c + [-14, 0, -10], 12.0, 0.02),
        Box(c + [14, -4, -12], _rot("z", 30) @ _rot("y", 20), (7, 8, 9), 0.05),
        Cylinder(c + [0, 6, 18], (1, 0.4, 0.2), 6.0, 12.0, 0.03),
    ]
    p = _world(grid)
    occupancy = [np.clip(0.5 - o.sdf(p) / 0.45, 0, 1) for o in objects]
    assert sum(occ > 0 for occ in occupancy).max() == 1  # no overlaps: the exact sum is exact
    mu = sum(o.mu * occ for o, occ in zip(objects, occupancy))
    return grid.with_array(mu.astype(np.float32)), objects


def _directions(g):
    rows, cols = np.mgrid[: g.height, : g.width]
    pix = g.pixel00() + cols[..., None] * g.pixel[0] * g.u + rows[..., None] * g.pixel[1] * g.v
    e = pix - g.source
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def _exact(objects, g):
    e = _directions(g)
    return sum(o.mu * o.chord(g.source, e) for o in objects)


def _interior(objects, g, delta=2.0):
    """Rays that stay ``delta`` mm away from every surface: each object is either crossed at
    least ``delta`` deep (its shrunk copy is hit) or missed by ``delta``.  Rays grazing a surface
    measure the partial-volume ramp of the voxelisation, not the renderer, so they are left out."""
    e = _directions(g)
    ok = np.ones((g.height, g.width), bool)
    for o in objects:
        ok &= (o.grown(-delta).chord(g.source, e) > 0) | (o.grown(delta).chord(g.source, e) == 0)
    return ok


VIEWS = [
    lambda v, n: pa(v, size=n),
    lambda v, n: ap(v, size=n, sid=400, sdd=600),
    lambda v, n: lateral(v, "left", size=n),
    lambda v, n: carm(v, angle=30, tilt=20, size=n),
]


@pytest.mark.parametrize("size", [(48, 40), (64, 64)])
@pytest.mark.parametrize("view", VIEWS)
def test_analytic_phantom_mean_relative_error_below_half_percent(phantom, view, size):
    vol, objects = phantom
    g = view(vol, size)
    exact = _exact(objects, g)
    img = render(vol, g, values="mu").numpy()
    clear = _interior(objects, g)
    inside = clear & (exact > 0.1)  # at least 5 mm of the weakest object
    assert inside.sum() > 40
    err = np.abs(img[inside] - exact[inside]) / exact[inside]
    assert err.mean() <= 0.005, err.mean()
    # rays missing every object see nothing but the mean of skipped near-empty bricks (< 2e-3 /mm)
    assert np.abs(img[clear & (exact == 0)]).max() < 1e-4


@pytest.mark.parametrize("step_mm", [0.3, 0.6])
def test_explicit_step_trilinear_march_is_as_accurate(phantom, step_mm):
    vol, objects = phantom
    g = carm(vol, angle=-35, tilt=10, size=(48, 48))
    exact = _exact(objects, g)
    inside = _interior(objects, g) & (exact > 0.1)
    img = render(vol, g, values="mu", step_mm=step_mm).numpy()
    assert (np.abs(img[inside] - exact[inside]) / exact[inside]).mean() <= 0.005


def test_kernel_torch_and_siddon_agree_on_the_phantom(phantom):
    vol, objects = phantom
    g = carm(vol, angle=-160, tilt=5, size=(40, 36))  # an oblique view from the front, slightly tilted
    k = render(vol, g, values="mu", method="kernel").numpy()
    t = render(vol, g, values="mu", method="torch", device="cpu").numpy()
    s = siddon(vol, g)
    m = _interior(objects, g) & (s > 0.1)
    assert np.abs(k - t)[m].mean() / s[m].mean() < 2e-3
    assert np.abs(k - s)[m].mean() / s[m].mean() < 5e-3


def test_torch_path_memory_budget_only_changes_chunking(phantom):
    vol, _ = phantom
    g = pa(vol, size=(32, 24))
    mu = torch.from_numpy(vol.array)
    big = march(mu, vol, g, memory_budget_mb=1024)
    tiny = march(mu, vol, g, memory_budget_mb=0.01)  # one detector row per chunk
    torch.testing.assert_close(big, tiny)


def test_batch_of_geometries_matches_single_renders(phantom):
    vol, _ = phantom
    gs = [pa(vol, size=24), lateral(vol, size=24), carm(vol, angle=60, size=24)]
    r = Renderer(vol, values="mu")
    batch = r(gs, progress=True)
    assert batch.shape == (3, 24, 24)
    for b, g in zip(batch, gs):
        torch.testing.assert_close(b, r(g))


# --- CT localizers (slot scans) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ball():
    """A uniform sphere (r 15 mm, mu 0.03/mm) in a rotated, anisotropic ~0.5 mm grid,
    anti-aliased like ``phantom``."""
    grid = Volume(np.zeros((76, 80, 72), np.float32), spacing=(0.48, 0.45, 0.5), origin=(10, -20, 35),
                  direction=_rot("z", -20) @ _rot("y", 10))
    sphere = Sphere(grid.center + [1.5, -2.0, 2.5], 15.0, 0.03)
    mu = sphere.mu * np.clip(0.5 - sphere.sdf(_world(grid)) / 0.48, 0, 1)
    return grid.with_array(mu.astype(np.float32)), sphere


def _slot_rays(s):
    """Every pixel's ray of a slot scan, analytically: its row's focal spot and the pixel centre."""
    rows, cols = np.mgrid[: s.height, : s.width]
    off = (rows - (s.height - 1) / 2)[..., None] * s.pixel[1] * s.v  # the table has moved by this
    src = s.source + off
    pix = s.detector_center + off + (cols - (s.width - 1) / 2)[..., None] * s.pixel[0] * s.u
    e = pix - src
    return src, e / np.linalg.norm(e, axis=-1, keepdims=True)


@pytest.mark.parametrize("view", ["ap", "lateral"])
def test_localizer_of_a_sphere_integrates_exact_chords(ball, view):
    vol, sphere = ball
    s = localizer(vol, view, size=(64, 56), pixel=1.4, table_mm=0.8)
    src, e = _slot_rays(s)
    exact = sphere.mu * sphere.chord(src, e)
    img = render(vol, s, values="mu").numpy()
    deep = sphere.grown(-1.0).chord(src, e) > 0  # rays at least 1 mm inside the surface
    miss = sphere.grown(1.0).chord(src, e) == 0
    assert deep.sum() > 200
    err = np.abs(img[deep] - exact[deep])
    assert (err / exact[deep]).mean() < 0.005, (err / exact[deep]).mean()
    # every ray: within 1.5% of the central ray's integral (the voxelised surface's ramp is
    # half a voxel wide; Joseph sampling adds a little where rays run obliquely to the grid)
    assert err.max() < 0.015 * sphere.mu * 2 * sphere.r, err.max()
    assert np.abs(img[miss]).max() < 1e-4
    # extent: along the table the diameter itself (parallel), across the fan magnified by the
    # focal-spot distance (exactly 2 r sdd / sqrt(d^2 - r^2), d the centre's depth; ~ sdd / sid)
    hit = img > 1e-3
    along = hit.any(axis=1).sum() * s.pixel[1]
    across = hit.any(axis=0).sum() * s.pixel[0]
    depth = abs(float((sphere.c - s.source) @ s.normal))
    assert along == pytest.approx(2 * sphere.r, abs=2 * s.pixel[1])
    assert across == pytest.approx(2 * sphere.r * s.sdd / np.sqrt(depth**2 - sphere.r**2), abs=2 * s.pixel[0])
    assert across == pytest.approx(2 * sphere.r * s.sdd / depth, rel=0.06)


def test_localizer_renders_as_its_stacked_rows_on_every_path(ball):
    vol, _ = ball
    s = localizer(vol, "pa", size=(24, 20), angle=15)
    r = Renderer(vol, values="mu", device="cpu")
    one = r(s)  # the kernel: all rows in one call (the focal spot steps with the rows)
    rows = r(s.rows())  # (H, 1, W): each row a one-row cone beam
    assert one.shape == (20, 24) and rows.shape == (20, 1, 24)
    torch.testing.assert_close(one, rows[:, 0])
    torch.testing.assert_close(r(s, method="torch", step_mm=0.25), one, rtol=0, atol=5e-3 * float(one.max()))
    np.testing.assert_allclose(siddon(vol, s), siddon(vol, s.rows())[:, 0], atol=1e-9)
    batch = r([s, pa(vol, size=(24, 20))])
    assert batch.shape == (2, 20, 24)
    torch.testing.assert_close(batch[0], one)
    assert r.integrals(s).shape == (1, 1, 20, 24)
    bright = r(s, output="intensity")
    torch.testing.assert_close(bright, torch.exp(-one))


def test_project_labels_of_a_slot_scan_equals_its_stacked_rows(ball):
    vol, sphere = ball
    p = _world(vol)
    lab = np.zeros(vol.shape, np.int16)
    lab[sphere.sdf(p) < 0] = 2
    lab[(sphere.sdf(p) < 0) & (p[..., 2] > sphere.c[2])] = 5  # the upper half: another label
    labels = vol.with_array(lab, label_names={2: "lower", 5: "upper"})
    s = localizer(vol, "lateral", size=(40, 36))
    paths, values = project_labels(labels, s)
    stacked, _ = project_labels(labels, s.rows())
    assert values == [2, 5] and paths.shape == (2, 36, 40)
    torch.testing.assert_close(paths, stacked[:, :, 0].transpose(0, 1))
    upper_rows = paths[1].sum(1).nonzero().flatten()
    lower_rows = paths[0].sum(1).nonzero().flatten()
    assert upper_rows.float().mean() < lower_rows.float().mean()  # head up: the upper half on top


# --- the real chest CT -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest():
    from bonelab.data import example_ct
    from bonelab.drr.physics import hu_to_mu

    ct, labels = example_ct()
    # A crop decimated to 1.4 x 1.4 x 2.5 mm: coarser voxels widen the (legitimate) gap between
    # trilinear sampling and Siddon's constant voxels (0.5% at full resolution, 0.6% here).
    sub = (slice(30, 100), slice(40, 480, 2), slice(24, 488, 2))
    step = np.array([2, 2, 1])
    origin = ct.index_to_world([24, 40, 30])
    grid = dict(spacing=np.array(ct.spacing) * step, origin=origin, direction=ct.direction)
    small = Volume(ct.array[sub].copy(), **grid)
    lab = Volume(labels.array[sub].copy(), label_names=labels.label_names, **grid)
    return small, small.with_array(hu_to_mu(small.array, energy_keV=60.0)), lab


@pytest.mark.parametrize("view", ["pa", "lateral"])
def test_renderer_within_one_percent_of_siddon_on_the_chest_ct(chest, view):
    ct, mu, _ = chest
    g = pa(ct, size=(64, 56)) if view == "pa" else lateral(ct, size=(64, 56))
    ref = siddon(mu, g)
    img = render(ct, g, energy_keV=60.0).numpy()  # from HU through bonelab.drr.physics
    body = ref > 0.5
    err = np.abs(img[body] - ref[body]) / ref[body]
    assert err.mean() <= 0.01, err.mean()


def test_polychromatic_render_matches_spectrum_weighted_beer_lambert():
    from bonelab.drr import physics

    ct = Volume(np.full((30, 30, 30), -1000.0, np.float32), spacing=(2.0, 2.0, 2.0))
    ct.array[5:25, 5:25, 5:25] = 0.0  # a 40 mm cube of water-like tissue
    g = pa(ct, size=9, pixel=8.0)  # the centre pixel sees the cube, the corners only air
    got = render(ct, g, kvp=80, output="intensity")[4, 4].item()
    air = 20 * 2.0  # mm of air in front of and behind the cube, inside the volume
    paths = (physics.decompose_lut([0.0])[:, 0] * 40.0 + physics.decompose_lut([-1000.0])[:, 0] * air) / 10.0
    want = float(physics.polychromatic_intensity(paths.astype(float), physics.spectrum(80)))
    assert got == pytest.approx(want, rel=2e-3)
    mono = render(ct, g, energy_keV=60.0, output="intensity")
    line = render(ct, g, energy_keV=60.0)
    torch.testing.assert_close(mono, torch.exp(-line))
    radiograph = render(ct, g, kvp=80, output="radiograph", photons_per_pixel=1e4, seed=0)
    assert 0 <= radiograph.min() and radiograph.max() <= 1 and radiograph[4, 4] > radiograph[0, 0]


# --- gradients ---------------------------------------------------------------------------------
def _tiny():
    grid = Volume(np.zeros((5, 6, 4), np.float32), spacing=(2.0, 1.5, 1.0), origin=(1, 2, 3))
    g = carm(grid, angle=10, tilt=5, size=(3, 2), pixel=2.0, sid=60, sdd=100)
    mu = torch.rand(5, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return grid, g, mu


def test_gradcheck_volume():
    grid, g, mu = _tiny()
    mu.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: march(m, grid, g), (mu,), eps=1e-6, atol=1e-6)


def test_gradcheck_pose():
    grid, g, mu = _tiny()
    rot = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    trans = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)

    def f(r, t):
        return march(mu, grid, g.transformed(r, t, center=grid.center))

    assert torch.autograd.gradcheck(f, (rot, trans), eps=1e-6, atol=1e-5)


# --- labels ------------------------------------------------------------------------------------
def test_label_paths_match_voxelised_chords_and_masks_overlap(phantom):
    vol, objects = phantom
    p = _world(vol)
    inside = [objects[0].sdf(p) < 0, objects[1].sdf(p) < 0]
    lab = np.zeros(vol.shape, np.int16)
    lab[inside[0]] = 7  # sphere
    lab[inside[1]] = 3  # box
    labels = vol.with_array(lab, label_names={3: "box", 7: "sphere"})
    g = carm(vol, angle=70, size=(48, 48))  # sphere and box overlap in this projection
    paths, values = project_labels(labels, g, like=vol)
    assert values == [3, 7] and paths.shape == (2, 48, 48)
    for ch, mask, obj in ((0, inside[1], objects[1]), (1, inside[0], objects[0])):
        voxelised = siddon(vol.with_array(mask.astype(np.float32)), g)  # exact chord, same voxels
        np.testing.assert_allclose(paths[ch].numpy(), voxelised, atol=1e-4)  # exact, every label at once
        exact = _exact([obj.grown(0.0)], g) / obj.mu  # analytic chord (mm) of the smooth object
        m = _interior(objects[:2], g) & (exact > 5)
        assert np.abs(paths[ch].numpy()[m] - exact[m]).mean() < 0.5  # voxel staircase < 1 voxel
    masks = label_masks(paths, min_mm=1.0)
    assert masks.dtype == torch.bool and (masks[0] & masks[1]).sum() > 10


def test_many_labels_in_one_pass_sum_to_the_labelled_chord():
    n = 120
    lab = np.repeat(np.arange(1, n + 1, dtype=np.int16), 1)[None, :, None] * np.ones((20, 1, 16), np.int16)
    labels = Volume(lab, spacing=(1.0, 0.5, 1.0))  # 120 slabs of 0.5 mm along y
    g = pa(labels, size=8)
    paths, values = project_labels(labels, g)
    assert len(values) == n and paths.shape == (n, 8, 8)
    total = paths.sum(0)[3:5, 3:5]
    mu_chord = render(labels.with_array(np.ones(lab.shape, np.float32)), g, values="mu")[3:5, 3:5]
    torch.testing.assert_close(total, mu_chord, rtol=2e-3, atol=0)
    assert (paths[:, 4, 4] > 0.4).all()  # every slab crossed, ~0.5 mm each


def test_label_map_on_another_grid_is_refused(phantom):
    vol, _ = phantom
    other = Volume(np.zeros((10, 10, 10), np.int16), spacing=(2, 2, 2))
    with pytest.raises(GeometryMismatchError, match="resample"):
        project_labels(other, pa(other, size=4), like=vol)


def test_nan_in_ct_is_refused():
    ct = Volume(np.zeros((8, 8, 8), np.float32))
    ct.array[3, 3, 3] = np.nan
    with pytest.raises(InvalidValuesError, match="NaN"):
        render(ct, pa(ct, size=4), values="mu")


@pytest.mark.gpu
def test_cpu_kernel_and_cuda_agree(chest):
    """The Triton kernel computes the numba kernel's sums; the torch path on CUDA agrees too."""
    ct, _, _ = chest
    g = [pa(ct, size=(64, 48)), lateral(ct, size=(64, 48)), carm(ct, angle=30, tilt=15, size=(64, 48))]
    cpu = render(ct, g, device="cpu")
    gpu = render(ct, g, device="cuda")
    assert gpu.is_cuda
    assert (gpu.cpu() - cpu).abs().mean() / cpu.abs().mean() < 1e-3
    torch_path = render(ct, g, device="cuda", method="torch").cpu()
    assert (torch_path - cpu).abs().mean() / cpu.abs().mean() < 5e-3


@pytest.mark.gpu
@pytest.mark.parametrize("view", VIEWS)
def test_analytic_phantom_on_cuda(phantom, view):
    vol, objects = phantom
    g = view(vol, (64, 64))
    exact = _exact(objects, g)
    img = render(vol, g, values="mu", device="cuda")
    assert img.is_cuda
    inside = _interior(objects, g) & (exact > 0.1)
    err = np.abs(img.cpu().numpy()[inside] - exact[inside]) / exact[inside]
    assert err.mean() <= 0.005, err.mean()
