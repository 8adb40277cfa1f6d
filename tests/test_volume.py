"""bonelab.volume.Volume: index <-> world maps checked against SimpleITK, conversions, copies."""

import numpy as np
import pytest
import SimpleITK as sitk

from bonelab import InvalidArgumentError, Volume
from bonelab.volume import default_label_names, label_centroids


def rotation(deg_z, deg_x):
    """A proper rotation (det +1): about z by deg_z, then about x by deg_x."""
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ rz


@pytest.fixture
def oblique():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(7, 9, 11)).astype(np.float32)
    return Volume(array, spacing=(0.7, 0.9, 2.5), origin=(-30.0, 12.5, 80.0), direction=rotation(25, -15))


def test_shape_size_and_extent(oblique):
    assert oblique.shape == (7, 9, 11)
    assert oblique.size == (11, 9, 7)
    np.testing.assert_allclose(oblique.size_mm, (11 * 0.7, 9 * 0.9, 7 * 2.5))


def test_index_world_round_trip_oblique(oblique):
    ijk = np.random.default_rng(1).uniform(-2, 12, size=(50, 3))
    xyz = oblique.index_to_world(ijk)
    np.testing.assert_allclose(oblique.world_to_index(xyz), ijk, atol=1e-9)
    # Moving one voxel along i moves spacing[0] mm along the first direction column.
    step = oblique.index_to_world([1, 0, 0]) - oblique.index_to_world([0, 0, 0])
    np.testing.assert_allclose(step, 0.7 * oblique.direction[:, 0], atol=1e-12)


def test_index_to_world_matches_simpleitk(oblique):
    image = oblique.to_sitk()
    ijk = np.random.default_rng(2).uniform(0, 6, size=(20, 3))
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in ijk])
    np.testing.assert_allclose(oblique.index_to_world(ijk), expected, atol=1e-9)
    homogeneous = np.c_[ijk, np.ones(len(ijk))] @ oblique.affine.T
    np.testing.assert_allclose(homogeneous[:, :3], expected, atol=1e-9)
    back = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in expected])
    np.testing.assert_allclose(oblique.world_to_index(expected), back, atol=1e-9)


def test_array_order_matches_simpleitk(oblique):
    image = oblique.to_sitk()
    assert image.GetSize() == oblique.size
    i, j, k = 10, 3, 5
    assert image.GetPixel(i, j, k) == oblique.array[k, j, i]


def test_sitk_round_trip(oblique):
    back = Volume.from_sitk(oblique.to_sitk(), label_names=None)
    assert back.same_grid(oblique, atol=1e-12)
    np.testing.assert_array_equal(back.array, oblique.array)
    assert back.array.dtype == np.float32
    back.array[0, 0, 0] = 99.0  # from_sitk copies: the original is untouched
    assert oblique.array[0, 0, 0] != 99.0


def test_from_sitk_refuses_2d():
    with pytest.raises(InvalidArgumentError, match="3D"):
        Volume.from_sitk(sitk.Image(4, 5, sitk.sitkFloat32))


def test_with_array_keeps_grid_and_checks_shape(oblique):
    labels = oblique.with_array(np.zeros(oblique.shape, np.uint8), label_names={1: "bone"})
    assert labels.same_grid(oblique) and labels.is_label
    assert labels.with_array(np.ones(oblique.shape, np.uint8)).label_names == {1: "bone"}
    assert not labels.with_array(np.ones(oblique.shape), label_names=None).is_label
    with pytest.raises(InvalidArgumentError, match=r"\(7, 9, 11\)"):
        oblique.with_array(np.zeros((11, 9, 7)))


def test_corners_and_center(oblique):
    corners = oblique.corners()
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.mean(axis=0), oblique.center, atol=1e-9)
    # The centre is the world position of the middle continuous index.
    np.testing.assert_allclose(oblique.world_to_index(oblique.center), [5.0, 4.0, 3.0], atol=1e-9)
    # The edges from the first corner (index -0.5, -0.5, -0.5) along x, y, z (corners 4, 2, 1:
    # x varies slowest in the listing) have the physical extent.
    edges = corners[[4, 2, 1]] - corners[0]
    np.testing.assert_allclose(np.linalg.norm(edges, axis=1), oblique.size_mm, atol=1e-9)
    np.testing.assert_allclose(edges / np.linalg.norm(edges, axis=1)[:, None], oblique.direction.T, atol=1e-12)
    np.testing.assert_allclose(corners[0], oblique.index_to_world([-0.5, -0.5, -0.5]), atol=1e-12)


def test_identity_corners():
    v = Volume(np.zeros((2, 3, 4)), spacing=(1.0, 2.0, 3.0), origin=(10.0, 0.0, 0.0))
    np.testing.assert_allclose(v.corners().min(axis=0), (9.5, -1.0, -1.5))
    np.testing.assert_allclose(v.corners().max(axis=0), (13.5, 5.0, 4.5))
    np.testing.assert_allclose(v.center, (11.5, 2.0, 1.5))


def test_same_grid_detects_each_difference(oblique):
    assert oblique.same_grid(oblique.with_array(oblique.array * 2))
    moved = Volume(oblique.array, oblique.spacing, np.add(oblique.origin, (0, 0, 0.01)), oblique.direction)
    assert not oblique.same_grid(moved)
    flipped = Volume(oblique.array, oblique.spacing, oblique.origin, oblique.direction @ np.diag([1, 1, -1]))
    assert not oblique.same_grid(flipped)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"array": np.zeros((3, 4))}, "3D array"),
        ({"array": np.zeros((2, 2, 2)), "spacing": (1.0, 0.0, 1.0)}, "positive"),
        ({"array": np.zeros((2, 2, 2)), "origin": (0.0, 0.0)}, "origin"),
    ],
)
def test_volume_validates(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        Volume(**kwargs)


def test_geometry_str_and_repr(oblique):
    text = oblique.geometry_str()
    assert "size (x,y,z)=(11, 9, 7)" in text and "spacing=(0.7, 0.9, 2.5)" in text
    assert "image" in repr(oblique)


# --- label names and centroids ---------------------------------------------------------------------
def test_default_label_names_keeps_given_names_and_names_the_rest():
    assert default_label_names(np.array([[0, 2], [5, 2]]), {2: "ulna", 9: "absent"}) == {
        2: "ulna", 5: "label 5", 9: "absent"}
    assert default_label_names({3, 1}) == {1: "label 1", 3: "label 3"}
    assert default_label_names([0]) == {} and default_label_names([0], {0: "background"}) == {0: "background"}


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([1.0, -1.0, 1.0]), rotation(25, -15)])
def test_label_centroids_are_world_positions(direction):
    shape, spacing = (20, 24, 28), (0.8, 1.1, 2.0)
    lab = Volume(np.zeros(shape, np.uint8), spacing, (5.0, -40.0, 120.0), direction, label_names={})
    k, j, i = np.indices(shape)
    world = lab.index_to_world(np.stack([i, j, k], -1))
    centre = lab.center + [3.0, -4.0, 6.0]
    ball = np.linalg.norm(world - centre, axis=-1) < 6.0
    lab.array[ball] = 7
    lab.array[0, 0, :3] = 2  # three voxels in a row along x
    got = label_centroids(lab)
    assert sorted(got) == [2, 7]
    np.testing.assert_allclose(got[7], world[ball].mean(0), atol=1e-9)
    np.testing.assert_allclose(got[7], centre, atol=0.3)  # a voxelised ball is centred on its centre
    np.testing.assert_allclose(got[2], lab.index_to_world([1, 0, 0]), atol=1e-9)
    assert label_centroids(lab, [7, 99]).keys() == {7}


def test_value_at_reads_the_nearest_voxel(oblique):
    k, j, i = 3, 4, 5
    world = oblique.index_to_world([i + 0.3, j - 0.2, k + 0.4])
    assert oblique.value_at(world) == oblique.array[k, j, i]
    with pytest.raises(InvalidArgumentError, match="outside"):
        oblique.value_at(oblique.index_to_world([-3, 0, 0]))
