"""Geometry of bonelab.drr: clinical view conventions, the projection matrix against the
renderer, rigid pose changes, CT localizers (slot scans), and the errors for geometries that
cannot be rendered."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bonelab import ProjectionGeometryError, Volume
from bonelab.drr import Geometry, SlotScan, ap, carm, lateral, localizer, oblique, pa, render, view
from bonelab.errors import InvalidArgumentError


def _rot_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.fixture(scope="module")
def grid():
    """A 48^3 volume, anisotropic spacing, rotated direction, off-origin: nothing is trivial."""
    return Volume(np.zeros((40, 48, 44), np.float32), spacing=(1.1, 0.9, 1.3),
                  origin=(-20.0, 15.0, 30.0), direction=_rot_z(20))


def _pixel_of(g, point):
    return g.project([point])[0]


@pytest.mark.parametrize("make", [pa, ap])
def test_frontal_views_show_patients_left_on_image_right_and_head_up(make):
    g = make(isocenter=(0, 0, 0), size=(101, 81), pixel=1.0)
    c0, r0 = _pixel_of(g, (0, 0, 0))
    assert (c0, r0) == pytest.approx((50, 40))
    assert _pixel_of(g, (10, 0, 0))[0] > c0 + 5  # patient's left (+x) -> image right
    assert _pixel_of(g, (0, 0, 10))[1] < r0 - 5  # superior (+z) -> up (smaller row)
    beam = g.detector_center - g.source
    assert np.sign(beam[1]) == (-1 if make is pa else 1)  # PA travels posterior -> anterior (-y)


def test_left_lateral_puts_detector_left_and_spine_on_image_right():
    g = lateral(isocenter=(0, 0, 0), size=64, pixel=1.0)
    assert g.detector_center[0] > 0 > g.source[0]
    c0, r0 = _pixel_of(g, (0, 0, 0))
    assert _pixel_of(g, (0, 10, 0))[0] > c0 + 5  # posterior -> image right
    assert _pixel_of(g, (0, 0, 10))[1] < r0 - 5
    right = lateral(isocenter=(0, 0, 0), side="right", size=64, pixel=1.0)
    assert right.detector_center[0] < 0 and _pixel_of(right, (0, 10, 0))[0] < c0 - 5


def test_carm_angle_and_tilt_signs():
    iso = np.array([5.0, -3.0, 2.0])
    g = carm(angle=90, isocenter=iso, sid=800, sdd=1000)
    np.testing.assert_allclose(g.source, iso + [-800, 0, 0], atol=1e-9)  # LAO 90: source at the patient's right
    left = lateral(isocenter=iso, sid=800, sdd=1000)
    for a, b in ((g.source, left.source), (g.detector_center, left.detector_center), (g.u, left.u), (g.v, left.v)):
        np.testing.assert_allclose(a, b, atol=1e-9)  # carm(90) is exactly the left lateral
    t = carm(tilt=20, isocenter=(0, 0, 0))
    assert t.detector_center[2] > 0 > t.source[2]  # cranial tilt: detector toward the head
    np.testing.assert_allclose(np.linalg.norm(t.source), 820.0)
    o = oblique(angle=45, isocenter=(0, 0, 0))
    np.testing.assert_allclose(o.source[:2], 820 * np.array([-np.sqrt(0.5), np.sqrt(0.5)]))  # LAO 45: right posterior
    assert view("oblique", isocenter=(0, 0, 0)).source == pytest.approx(o.source)


def test_magnification_is_sdd_over_sid():
    g = pa(isocenter=(0, 0, 0), sid=800, sdd=1000, size=(201, 201), pixel=0.5)
    c = g.project([[0, 0, 0], [10, 0, 0]])
    assert (c[1, 0] - c[0, 0]) * 0.5 == pytest.approx(10 * 1000 / 800)


def test_default_pixel_covers_the_volume(grid):
    for g in (pa(grid), lateral(grid), carm(grid, angle=30, tilt=10)):
        uv = g.project(grid.corners())
        assert uv.min() >= -0.5 and (uv.max(axis=0) <= np.array(g.size) - 0.5).all()
        assert uv[:, 0].max() - uv[:, 0].min() > 0.8 * g.width or uv[:, 1].max() - uv[:, 1].min() > 0.8 * g.height


def _gaussian_ball(grid, center_mm, sigma_mm=2.0):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.size], indexing="ij"), -1)  # (nx, ny, nz, 3)
    xyz = grid.index_to_world(ijk)
    r2 = ((xyz - center_mm) ** 2).sum(-1)
    return grid.with_array(np.exp(-r2 / (2 * sigma_mm**2)).transpose(2, 1, 0).astype(np.float32))


@pytest.mark.parametrize("make", [
    lambda v: pa(v, size=(96, 80), pixel=0.35),
    lambda v: lateral(v, "left", size=(96, 80), pixel=0.35),
    lambda v: carm(v, angle=35, tilt=-15, size=(90, 90), pixel=0.6, sid=300, sdd=500),
])
@pytest.mark.parametrize("method", ["kernel", "torch"])
def test_projection_matrix_matches_renderer_to_a_tenth_of_a_pixel(grid, make, method):
    center = grid.center + np.array([6.0, -4.0, 5.0])
    ball = _gaussian_ball(grid, center)
    g = make(ball)
    img = render(ball, g, values="mu", method=method, step_mm=0.25, device="cpu").numpy().astype(float)
    rows, cols = np.mgrid[: g.height, : g.width]
    centroid = np.array([(img * cols).sum(), (img * rows).sum()]) / img.sum()
    expected = g.project([center])[0]
    assert np.abs(expected - (np.array(g.size) - 1) / 2).max() > 3  # really off-centre
    np.testing.assert_allclose(centroid, expected, atol=0.1)


def test_transformed_moves_rigidly_and_keeps_gradients():
    g = pa(isocenter=(0, 0, 0), size=8, pixel=1.0)
    rot = torch.tensor([0.0, 0.0, 90.0], dtype=torch.float64, requires_grad=True)
    moved = g.transformed(rot, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    np.testing.assert_allclose(moved.source.detach().numpy(), [-820 + 1, 2, 3], atol=1e-9)  # (0, 820, 0) turned 90 deg
    np.testing.assert_allclose(moved.u.detach().numpy(), [0, 1, 0], atol=1e-12)
    moved.source.sum().backward()
    assert rot.grad.abs().sum() > 0
    same = g.transformed(torch.zeros(3), torch.zeros(3))
    np.testing.assert_allclose(same.projection_matrix(), g.projection_matrix(), atol=1e-9)


@pytest.mark.parametrize("kwargs", [dict(size=(0, 10)), dict(size=(10, -1)), dict(pixel=0.0), dict(pixel=-1.0)])
def test_zero_or_negative_sizes_are_refused(kwargs):
    args = dict(source=[0, -800, 0], detector_center=[0, 200, 0], u=[1, 0, 0], v=[0, 0, -1],
                pixel=1.0, size=(10, 10))
    args.update(kwargs)
    with pytest.raises(ProjectionGeometryError, match="positive"):
        Geometry(**args)


def test_source_inside_volume_and_bad_distances_are_refused(grid):
    with pytest.raises(ProjectionGeometryError, match="inside the CT volume"):
        pa(grid, sid=10, sdd=100)
    with pytest.raises(ProjectionGeometryError, match="sid < sdd"):
        pa(grid, sid=900, sdd=800)
    with pytest.raises(ProjectionGeometryError, match="orthonormal"):
        Geometry([0, -800, 0], [0, 200, 0], [1, 0, 0], [1, 0, 0])
    with pytest.raises(InvalidArgumentError, match="unknown view"):
        view("axial", grid)
    with pytest.raises(ProjectionGeometryError, match="one detector size"):
        render(grid, [pa(grid, size=8), pa(grid, size=9)], values="mu")


def test_source_inside_volume_is_refused_by_render(grid):
    inside = Geometry(grid.center, grid.center + [0, 500, 0], [1, 0, 0], [0, 0, -1], 1.0, 8)
    with pytest.raises(ProjectionGeometryError, match="increase sid"):
        render(grid, inside, values="mu")


# --- CT localizers (slot scans) ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["ap", "pa"])
def test_frontal_localizers_show_patients_left_on_image_right_and_head_up(name):
    s = localizer(isocenter=(0, 0, 0), view=name, size=(101, 81), pixel=1.0)
    c0, r0 = _pixel_of(s, (0, 0, 0))
    assert (c0, r0) == pytest.approx((50, 40))
    assert _pixel_of(s, (10, 0, 0))[0] > c0 + 5  # patient's left (+x) -> image right
    assert _pixel_of(s, (0, 0, 10))[1] < r0 - 5  # superior (+z) -> up
    beam = s.detector_center - s.source
    assert np.sign(beam[1]) == (1 if name == "ap" else -1)  # AP: tube anterior, beam travels +y
    np.testing.assert_allclose(np.linalg.norm(beam), 1040.0)
    np.testing.assert_allclose(s.source, [0, -570.0 if name == "ap" else 570.0, 0])


def test_lateral_localizer_is_displayed_like_the_left_lateral():
    s = localizer(isocenter=(0, 0, 0), view="lateral", size=64)
    film = lateral(isocenter=(0, 0, 0), size=64)
    assert s.detector_center[0] > 0 > s.source[0]  # detector at the patient's left
    np.testing.assert_allclose(s.u, film.u, atol=1e-12)
    np.testing.assert_allclose(s.v, film.v, atol=1e-12)


def test_localizer_magnifies_across_the_fan_and_not_along_the_table():
    s = localizer(isocenter=(0, 0, 0), size=(201, 201), pixel=0.8, table_mm=0.5)
    assert s.sdd == pytest.approx(1040.0) and s.pixel == (0.8, 0.5)
    for depth in (0.0, -100.0, 80.0):  # y: nearer the tube or the detector
        c = s.project([[0, depth, 0], [10, depth, 0], [0, depth, -10]])
        mag = 1040.0 / (570.0 + depth)
        assert (c[1, 0] - c[0, 0]) * 0.8 == pytest.approx(10 * mag)  # fan: sdd / distance from the focal spot
        assert (c[2, 1] - c[0, 1]) * 0.5 == pytest.approx(10.0)  # table: parallel, 10 mm = 20 rows
        assert c[2, 0] == pytest.approx(c[0, 0])
    assert float(s.magnification([0, 0, 0])) == pytest.approx(1040 / 570)


def test_localizer_default_pixels_cover_the_volume_and_are_square_at_the_isocentre(grid):
    for name in ("ap", "pa", "lateral"):
        s = localizer(grid, name, size=(80, 96))
        uv = s.project(grid.corners())
        assert uv.min() >= -0.5 and (uv.max(axis=0) <= np.array(s.size) - 0.5).all(), name
        assert (np.ptp(uv, axis=0) > 0.8 * np.array(s.size)).any(), name
        assert s.pixel[0] / s.pixel[1] == pytest.approx(1040 / 570)
    assert localizer(grid, table_mm=0.7).pixel == pytest.approx((0.7 * 1040 / 570, 0.7))
    assert localizer(grid, pixel=1.2).pixel == pytest.approx((1.2, 1.2 * 570 / 1040))


def test_slot_scan_is_its_rows():
    s = localizer(isocenter=(5, -3, 40), size=(32, 6), pixel=1.5, table_mm=2.0, angle=20)
    rows = s.rows()
    assert len(rows) == 6 and all(isinstance(g, Geometry) and g.size == (32, 1) for g in rows)
    steps = np.diff([g.source for g in rows], axis=0)
    np.testing.assert_allclose(steps, np.tile(2.0 * s.v, (5, 1)), atol=1e-12)  # the table moves 2 mm per row
    np.testing.assert_allclose(np.mean([g.source for g in rows], axis=0), s.source, atol=1e-12)
    rng = np.random.default_rng(0)
    for r in (0, 3, 5):  # a point in row r's fan lands in row r, in the column that row's cone beam gives it
        point = rows[r].source + 570 * (s.detector_center - s.source) / s.sdd + rng.uniform(-40, 40) * s.u
        col, row = s.project([point])[0]
        assert row == pytest.approx(r) and col == pytest.approx(rows[r].project([point])[0, 0])
    with pytest.raises(InvalidArgumentError, match="no single projection matrix"):
        s.projection_matrix()
    with pytest.raises(InvalidArgumentError, match="translated"):
        s.transformed(np.zeros(3), np.zeros(3))
    moved = s.translated(3.0 * s.u)  # the patient 3 mm toward -u: the isocentre lands 3 mm (at it) left
    shift = moved.project([[5, -3, 40]])[0] - s.project([[5, -3, 40]])[0]
    assert shift[0] * s.pixel[0] == pytest.approx(-3.0 * 1040 / 570) and shift[1] == pytest.approx(0)


def test_localizer_errors_say_how_to_fix(grid):
    with pytest.raises(ProjectionGeometryError, match="sid < sdd"):
        localizer(grid, sid=1040, sdd=1040)
    with pytest.raises(ProjectionGeometryError, match="sid < sdd"):
        localizer(grid, sid=1100, sdd=1040)
    with pytest.raises(InvalidArgumentError, match="unknown localizer view 'oblique'; use one of"):
        localizer(grid, "oblique")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ProjectionGeometryError, match="table increment per row"):
            localizer(grid, table_mm=bad)
    with pytest.raises(ProjectionGeometryError, match="positive"):
        SlotScan([0, -570, 0], [0, 470, 0], [1, 0, 0], [0, 0, -1], (1.0, 0.0), (8, 8))
    s = localizer(grid, size=16)
    with pytest.raises(ProjectionGeometryError, match="perpendicular.*SlotScan.translated"):
        replace(s, detector_center=s.detector_center + 10 * s.v)  # the detector alone along the table
    with pytest.raises(ProjectionGeometryError, match="increase sid"):
        localizer(grid, sid=10, sdd=100)
    with pytest.raises(ProjectionGeometryError, match="one detector size"):
        render(grid, [localizer(grid, size=8), pa(grid, size=9)], values="mu")


@pytest.mark.parametrize("name", ["ap", "lateral"])
@pytest.mark.parametrize("method", ["kernel", "torch"])
def test_slot_scan_project_matches_renderer_to_a_tenth_of_a_pixel(grid, name, method):
    center = grid.center + np.array([6.0, -4.0, 5.0])
    ball = _gaussian_ball(grid, center)
    s = localizer(ball, name, size=(80, 72), pixel=0.6, table_mm=0.35)
    img = render(ball, s, values="mu", method=method, step_mm=0.25, device="cpu").numpy().astype(float)
    rows, cols = np.mgrid[: s.height, : s.width]
    centroid = np.array([(img * cols).sum(), (img * rows).sum()]) / img.sum()
    expected = s.project([center])[0]
    assert (np.abs(expected - (np.array(s.size) - 1) / 2) > 3).all()  # off-centre both ways
    np.testing.assert_allclose(centroid, expected, atol=0.1)
