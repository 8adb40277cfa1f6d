"""DICOM: finding the series in a folder, reading one, and writing an HU volume as a CT series.

A DICOM folder with several series (a scout beside the axial series, a second reconstruction,
stray files) is never stacked into one volume: :func:`bonelab.io.read_ct` reads the largest
axial CT series (chosen here) and says which ones it skipped.  :func:`write_dicom_series`
writes with pydicom, because SimpleITK's writer (measured, 2.5.7) stores a Secondary Capture
object and drops a RescaleIntercept set in the metadata.

>>> import numpy as np, tempfile
>>> from bonelab import Volume
>>> folder = tempfile.mkdtemp()
>>> _ = write_dicom_series(Volume(np.full((3, 4, 5), -1000, np.float32)), folder, with_localizer=True)
>>> [s["description"] for s in list_dicom_series(folder)]
['bonelab CT', 'Localizer']
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bonelab.errors import InvalidArgumentError, InvalidValuesError, NotCTError, UnreadableFileError
from bonelab.io._common import VOLUME_SUFFIXES, _atomic_folder_write, _check_finite, _existing, _sitk
from bonelab.io.intensity import WINDOWS
from bonelab.volume import Volume

_TAGS = {
    "description": "0008|103e",
    "modality": "0008|0060",
    "rows": "0028|0010",
    "columns": "0028|0011",
    "orientation": "0020|0037",
    "position": "0020|0032",
    "image_type": "0008|0008",
}



def _series_files(folder: Path) -> dict:
    """{series UID: [files sorted by slice position]} for the DICOM series in ``folder``."""
    sitk = _sitk()
    shown = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_GlobalWarningDisplayOff()  # GDCM warns on stderr about stray files
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(shown)


def _header(file: str):
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return reader


def _tag(reader, key: str, default: str = "") -> str:
    tag = _TAGS[key]
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else default


def _floats(text: str) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in text.split("\\")])
    except ValueError:
        return None


def _slice_normal(iop: np.ndarray | None) -> np.ndarray | None:
    if iop is None or iop.size != 6:
        return None
    return np.cross(iop[:3], iop[3:])


def _series_info(uid: str, files: list) -> dict:
    reader = _header(files[0])
    normal = _slice_normal(_floats(_tag(reader, "orientation")))
    return {
        "uid": uid,
        "description": _tag(reader, "description"),
        "modality": _tag(reader, "modality"),
        "n_files": len(files),
        "rows": int(_tag(reader, "rows", "0") or 0),
        "columns": int(_tag(reader, "columns", "0") or 0),
        # Axial: the slice normal (row x column direction) within about 25 degrees of the
        # patient's z axis (allows a gantry tilt).
        "is_axial": bool(normal is not None and abs(normal[2]) >= 0.9),
        "image_type": _tag(reader, "image_type"),
    }


def _no_series_error(folder: Path) -> UnreadableFileError:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    content = f"it holds {len(names)} item(s): {shown}" if names else "it is empty"
    return UnreadableFileError(
        f"{folder}: no DICOM series found ({content}). Pass a folder of DICOM slices, the folder "
        f"of the series if it sits in a subfolder, or a {', '.join(VOLUME_SUFFIXES)} file."
    )


def list_dicom_series(folder) -> list[dict]:
    """One dict per DICOM series in ``folder`` (not recursive), largest first.

    Keys: ``uid`` (SeriesInstanceUID), ``description``, ``modality``, ``n_files``, ``rows``,
    ``columns``, ``is_axial`` (slice normal from ImageOrientationPatient within ~25 degrees of
    the patient's z axis) and ``image_type`` (e.g. ``ORIGINAL\\PRIMARY\\LOCALIZER``).

    >>> import numpy as np, tempfile
    >>> from bonelab import Volume
    >>> ct = Volume(np.full((3, 4, 5), -1000, np.float32))
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_dicom_series(ct, folder, with_localizer=True)
    >>> [(s["n_files"], s["is_axial"]) for s in list_dicom_series(folder)]
    [(3, True), (1, False)]
    """
    folder = _existing(folder)
    if not folder.is_dir():
        raise InvalidArgumentError(f"{folder}: list_dicom_series needs a folder, got a file.")
    series = [_series_info(uid, files) for uid, files in _series_files(folder).items()]
    return sorted(series, key=lambda s: (-s["n_files"], s["uid"]))


def _rank(info: dict) -> tuple:
    """Sort key for the series read_ct picks: CT, axial, not a localizer, most slices."""
    return (
        info["modality"] == "CT",
        info["is_axial"],
        "LOCALIZER" not in info["image_type"].upper(),
        info["n_files"],
        info["rows"] * info["columns"],
    )


def _describe(info: dict) -> str:
    kind = "axial" if info["is_axial"] else "not axial"
    extra = ", LOCALIZER" if "LOCALIZER" in info["image_type"].upper() else ""
    return f"{info['uid']} '{info['description']}' ({info['n_files']} {info['modality']} file(s), {kind}{extra})"


def _check_slice_spacing(files: list, folder: Path) -> None:
    """Refuse a series whose slices are unevenly spaced (a missing slice or two stacks in one
    series): SimpleITK would read it on one regular grid and misplace every slice after the gap."""
    if len(files) < 3:
        return
    readers = [_header(f) for f in files]
    normal = _slice_normal(_floats(_tag(readers[0], "orientation")))
    positions = [_floats(_tag(r, "position")) for r in readers]
    if normal is None or any(p is None or p.size != 3 for p in positions):
        return
    steps = np.diff([float(p @ normal) for p in positions])
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > 0.1 * abs(median) + 1e-3)
    if median == 0 or bad.size:
        i = int(bad[0]) if bad.size else 0
        raise UnreadableFileError(
            f"{folder}: slices are not evenly spaced: {steps[i]:.3f} mm between {Path(files[i]).name} "
            f"and {Path(files[i + 1]).name}, median {median:.3f} mm. A slice is missing or two stacks "
            "share one SeriesInstanceUID; fix the series (or select its files) before reading."
        )


def _read_dicom_folder(folder: Path, series_uid, verbose: bool, check_hu: bool):
    sitk = _sitk()
    series = _series_files(folder)
    if not series:
        raise _no_series_error(folder)
    infos = {uid: _series_info(uid, files) for uid, files in series.items()}
    if series_uid is not None:
        if series_uid not in series:
            listing = "; ".join(_describe(i) for i in infos.values())
            raise InvalidArgumentError(f"{folder}: no series with UID {series_uid!r}. Available: {listing}.")
        chosen = series_uid
    else:
        chosen = max(infos, key=lambda uid: _rank(infos[uid]))
        if verbose and len(infos) > 1:
            skipped = "; ".join(_describe(i) for uid, i in infos.items() if uid != chosen)
            print(f"read_ct: {len(infos)} series in {Path(folder).name}/; reading {_describe(infos[chosen])}; skipped: {skipped}")
    modality = infos[chosen]["modality"]
    if check_hu and modality not in ("CT", ""):
        raise NotCTError(
            f"{folder}: series {chosen} has Modality {modality}, not CT, so its values are not HU. "
            "Pass check_hu=False to read it anyway."
        )
    files = series[chosen]
    _check_slice_spacing(files, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()  # GDCM applies RescaleSlope/Intercept: values come out in HU
    except RuntimeError as exc:
        raise UnreadableFileError(f"{folder}: series {chosen} cannot be read ({str(exc).strip()[-200:]}).") from None
    return image, f"{folder} (series {chosen})"




def _new_uid(entropy=None) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=entropy)


def _ct_dataset(*, rows, columns, study_uid, series_uid, frame_uid, patient_name, description, series_number):
    """The tags shared by every image written here (CT Image Storage, signed 16-bit pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    now = datetime.now(UTC)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = patient_name
    ds.PatientID = "BONELAB"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.Modality = "CT"
    ds.Manufacturer = "bonelab"
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.PatientPosition = "HFS"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleType = 1, "HU"
    return ds


def _intercept(lo: float, hi: float, source) -> int:
    """A RescaleIntercept that puts [lo, hi] HU inside int16 with slope 1 (-1024 when it fits,
    the usual CT choice)."""
    if hi - lo > 65535:
        raise InvalidValuesError(f"{source}: values span {lo:g} to {hi:g}, too wide for 16-bit CT in HU.")
    for b in (-1024, int(np.round((lo + hi) / 2))):
        if lo - b >= -32768 and hi - b <= 32767:
            return b
    raise InvalidValuesError(f"{source}: values {lo:g} to {hi:g} do not fit 16-bit CT.")


def _save(ds, pixels: np.ndarray, intercept: int, path: Path) -> None:
    from pydicom.uid import generate_uid

    stored = np.round(pixels - intercept).astype("<i2")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.RescaleIntercept = intercept
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _ds_floats(values) -> list:
    return [float(f"{v:.6f}") for v in values]


def write_dicom_series(
    volume: Volume,
    folder,
    *,
    series_description="bonelab CT",
    with_localizer=False,
    patient_name="Bonelab^Phantom",
    study_uid=None,
    series_number=2,
) -> list[Path]:
    """Write an HU volume as an axial CT DICOM series (one file per z slice) into ``folder``.

    Files are CT Image Storage, int16 with RescaleSlope 1 and a RescaleIntercept chosen so the
    HU range fits (-1024 when possible; values rounded to whole HU), with ImagePositionPatient,
    ImageOrientationPatient (the volume's x and y directions), PixelSpacing, SliceThickness, one
    new SeriesInstanceUID and the StudyInstanceUID ``study_uid`` (new if None).  DICOM stacks
    slices along the row x column normal, so a left-handed direction (determinant -1, e.g. a
    NIfTI-derived ``diag(1, -1, 1)``) is written with its y axis reversed: :func:`read_ct` gives
    back the same voxels at the same world positions, stored in another order (``reorient``
    both to compare arrays).

    ``with_localizer=True`` adds, in the same folder, a one-image scout series (ImageType
    ``ORIGINAL\\PRIMARY\\LOCALIZER``: the mean HU along y (floored at -1024) as a coronal
    image, superior at the top) and a ``README.txt``, the clutter a real export folder holds.

    pydicom writes the files because SimpleITK's writer (measured, 2.5.7) stores a Secondary
    Capture object and drops a RescaleIntercept set in the metadata.

    Returns the paths written (the CT slices in order, then the localizer and README).

    >>> import numpy as np, tempfile
    >>> from bonelab import Volume
    >>> paths = write_dicom_series(Volume(np.zeros((3, 4, 5), np.float32)), tempfile.mkdtemp())
    >>> len(paths)
    3
    """
    if not isinstance(volume, Volume) or volume.is_label:
        raise InvalidArgumentError("write_dicom_series writes a CT Volume in HU (not a label map or an array).")
    folder = Path(folder).expanduser()
    _check_finite(volume.array, "write_dicom_series volume")
    hu = volume.array.astype(np.float32)
    direction = volume.direction
    origin = np.asarray(volume.origin)
    if np.linalg.det(direction) < 0:  # DICOM stacks slices along row x column: flip the rows
        origin = origin + direction[:, 1] * volume.spacing[1] * (hu.shape[1] - 1)
        direction = direction @ np.diag([1.0, -1.0, 1.0])
        hu = hu[:, ::-1]
    intercept = _intercept(float(hu.min()), float(hu.max()), "write_dicom_series volume")
    study_uid = study_uid or _new_uid()
    frame_uid = _new_uid([study_uid, "frame of reference"])  # one frame per study
    series_uid = _new_uid()
    sx, sy, sz = volume.spacing
    common = dict(study_uid=study_uid, frame_uid=frame_uid, patient_name=patient_name)

    def write_files(tmp: Path) -> list[str]:
        names = []
        ds = _ct_dataset(rows=hu.shape[1], columns=hu.shape[2], series_uid=series_uid,
                         description=series_description, series_number=series_number, **common)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = _ds_floats(np.r_[direction[:, 0], direction[:, 1]])
        ds.PixelSpacing = _ds_floats([sy, sx])  # DICOM: row spacing (between rows = y), then column
        ds.SliceThickness = ds.SpacingBetweenSlices = float(f"{sz:.6f}")
        ds.WindowCenter, ds.WindowWidth = WINDOWS["bone"]
        for k, plane in enumerate(hu):
            position = origin + direction[:, 2] * sz * k
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = _ds_floats(position)
            ds.SliceLocation = float(f"{position[2]:.6f}")
            names.append(f"CT_{series_uid[-8:]}_{k + 1:04d}.dcm")
            _save(ds, plane, intercept, tmp / names[-1])
        if with_localizer:
            names += _write_localizer(volume, tmp, series_description, common)
        return names

    return _atomic_folder_write(folder, write_files)


def _write_localizer(volume: Volume, tmp: Path, described: str, common: dict) -> list[str]:
    """A scout-like coronal image (mean HU along y, superior at the top) and a README.txt.
    Values below air (-1024 HU, the scanner's padding outside the field of view) count as air,
    as they would in a real projection."""
    sx, _, sz = volume.spacing
    d = volume.direction
    image = np.maximum(volume.array, -1024).astype(np.float32).mean(axis=1)[::-1]  # (z, x), top = last slice
    top_left = volume.index_to_world([0, (volume.size[1] - 1) / 2, volume.size[2] - 1])
    uid = _new_uid()
    ds = _ct_dataset(rows=image.shape[0], columns=image.shape[1], series_uid=uid,
                     description="Localizer", series_number=1, **common)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = _ds_floats(np.r_[d[:, 0], -d[:, 2]])
    ds.ImagePositionPatient = _ds_floats(top_left)
    ds.PixelSpacing = _ds_floats([sz, sx])
    ds.InstanceNumber = 1
    intercept = _intercept(float(image.min()), float(image.max()), "localizer")
    names = [f"SCOUT_{uid[-8:]}.dcm", "README.txt"]
    _save(ds, image, intercept, tmp / names[0])
    (tmp / names[1]).write_text(
        f"Written by bonelab.io.write_dicom_series: the axial CT series '{described}' "
        f"({volume.shape[0]} slices) and a one-image localizer. This file is not DICOM.\n"
    )
    return names


__all__ = ["list_dicom_series", "write_dicom_series"]
