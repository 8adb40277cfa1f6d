"""CT in, geometry right: reading, writing, resampling, reorienting and windowing volumes.

Everything here returns or takes a :class:`bonelab.Volume` (numpy ``(z, y, x)``, geometry
``(x, y, z)`` in LPS mm).  SimpleITK does the reading, writing and resampling; the code here adds
what a teaching package needs on top of it:

* a DICOM folder with several series (a scout beside the axial series, a second reconstruction,
  stray files) is never stacked into one volume: :func:`read_ct` picks the largest axial CT series
  and says which ones it skipped;
* every bad input becomes a :class:`bonelab.BonelabError` subclass that names the file and the
  problem (a missing path, a truncated NIfTI that SimpleITK would silently zero-fill, a 2D picture,
  an MR volume, NaNs, a label map on another grid);
* writes are atomic (temporary name in the same folder, then rename).

>>> import numpy as np, tempfile, pathlib
>>> from bonelab import Volume
>>> ct = Volume(np.full((4, 5, 6), -1000, np.float32), spacing=(0.8, 0.8, 2.0))
>>> ct.array[2, 2, 3] = 1200.0
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write(ct, folder / "ct.nii.gz")
>>> back = read_ct(folder / "ct.nii.gz")
>>> back.same_grid(ct), float(back.array.max())
(True, 1200.0)
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import warnings
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bonelab.errors import (
    GeometryMismatchError,
    InvalidArgumentError,
    InvalidValuesError,
    MissingFileError,
    NotCTError,
    UnreadableFileError,
)
from bonelab.volume import Volume

#: File formats :func:`write` (and :func:`read_ct` / :func:`read_labels`) handle.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")

#: Display windows as (level, width) in HU.  Values from Radiopaedia, "Windowing (CT)"
#: (https://radiopaedia.org/articles/windowing-ct): bone W1800 L400, soft tissue W350-400
#: L20-60 (we take W400 L50, the abdominal soft-tissue window), lungs W1500 L-600, brain W80 L40.
WINDOWS = {
    "bone": (400.0, 1800.0),
    "soft": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
}

#: HU ranges [low, high) used by :func:`hu_summary`.  Below -1500 HU nothing physical exists
#: (air is -1000): scanners write such values (-2048, -3024) outside the reconstructed field of
#: view.  -500 HU separates gas (air, lung) from tissue; 200 HU is a common threshold for bone
#: (trabecular bone starts near 100-300 HU, cortical bone reaches 1000-2000 HU).
HU_RANGES = {
    "padding": (-np.inf, -1500.0),
    "air": (-1500.0, -500.0),
    "soft": (-500.0, 200.0),
    "bone": (200.0, np.inf),
}

# Every CT holds air (around the body, lungs, airways, bowel) at about -1000 HU and fat near
# -100 HU; a volume whose minimum stays above this has neither, so it is not in HU.
_MIN_HU_FOR_AIR = -200.0
# Extended-scale CT stores up to 30,710 HU (metal); int16 padding goes down to -32768.
_HU_SCALE = (-32768.0, 32767.0)

_TAGS = {
    "description": "0008|103e",
    "modality": "0008|0060",
    "rows": "0028|0010",
    "columns": "0028|0011",
    "orientation": "0020|0037",
    "position": "0020|0032",
    "image_type": "0008|0008",
}


# --- small helpers ------------------------------------------------------------------------------
def _sitk():
    import SimpleITK as sitk

    return sitk


def _existing(path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or folder. Check the path (cwd is {Path.cwd()}).")
    return path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _check_finite(array: np.ndarray, source) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        _raise_nonfinite(int(np.isnan(array).sum()), int(np.isinf(array).sum()), array.size, source)


def _raise_nonfinite(n_nan: int, n_inf: int, n: int, source):
    raise InvalidValuesError(
        f"{source}: {n_nan} NaN and {n_inf} infinite voxel(s) out of {n}; every voxel needs a finite "
        "value. Fix the file, or replace them (for a CT, e.g. np.nan_to_num(a, nan=-1000))."
    )


def _check_3d(image, source) -> None:
    size = image.GetSize()
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and size[2] == 1):
        raise NotCTError(
            f"{source}: 2D image, not a CT volume (size {size[:2]} pixels). For a DICOM series, "
            "pass the folder that holds all its slices."
        )
    if image.GetDimension() != 3:
        raise NotCTError(f"{source}: {image.GetDimension()}D image, not a 3D CT volume (size {size}).")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NotCTError(
            f"{source}: {image.GetNumberOfComponentsPerPixel()} components per voxel (colour?), "
            "not a CT volume: a CT holds one HU value per voxel."
        )


def _check_hu(array: np.ndarray, source) -> None:
    """Refuse values that cannot be HU, saying why (see :func:`read_ct`)."""
    lo, hi = float(array.min()), float(array.max())
    bypass = " If this really is a CT in HU (e.g. cropped to tissue with no air), pass check_hu=False."
    if lo >= 0:
        raise NotCTError(
            f"{source}: all values are >= 0 (min {lo:g}, max {hi:g}), so they cannot be HU: every CT "
            "holds air (-1000 HU) around or inside the body and fat near -100 HU. This looks like an "
            "MR or other non-CT image, or raw CT values whose RescaleIntercept was not applied." + bypass
        )
    if lo > _MIN_HU_FOR_AIR:
        raise NotCTError(
            f"{source}: minimum {lo:g} > {_MIN_HU_FOR_AIR:g}, so no voxel holds air (-1000 HU) or fat "
            f"(-100 HU); values range {lo:g} to {hi:g}. This looks like a normalised or non-CT "
            "image rather than HU." + bypass
        )
    if lo < _HU_SCALE[0] or hi > _HU_SCALE[1]:
        raise NotCTError(
            f"{source}: values {lo:g} to {hi:g} lie outside any CT scale (extended-scale CT stops "
            f"at about 30,000 HU; padding at -32768), so they are not HU." + bypass
        )


def _check_nifti(path: Path) -> None:
    """Refuse a truncated NIfTI or one holding NaN/inf, which SimpleITK would hide.

    Measured (SimpleITK 2.5.7): a truncated .nii or .nii.gz is read without an error, the
    missing voxels filled with zeros; NaN voxels of a float NIfTI are read as 0.  So the header
    is parsed here with nibabel: for .nii.gz the gzip trailer (the uncompressed size) is compared
    with the size the header needs, and the stream is decompressed only on a mismatch (to tell a
    truncated file from a multi-member gzip); float data are scanned for NaN/inf.
    """
    import nibabel

    try:
        nii = nibabel.load(str(path))
        header = nii.header
        dtype = header.get_data_dtype()
        start = int(header.get_data_offset())
        # A single-file NIfTI's data start after the 352-byte header even where vox_offset is 0
        # (written by some converters; niftilib then reads from byte 352).
        start = max(start, 352) if _suffix(path) in (".nii", ".nii.gz") else start
        expected = start + int(np.prod(header.get_data_shape())) * dtype.itemsize
    except Exception as exc:  # nibabel raises many kinds on a broken header
        raise UnreadableFileError(f"{path}: unreadable NIfTI header ({exc}).") from None
    reason = _nifti_truncation(path, expected)
    if reason:
        raise UnreadableFileError(f"{path}: truncated or damaged NIfTI: {reason}. Copy or export it again.")
    if np.issubdtype(dtype, np.floating):
        data = np.asanyarray(nii.dataobj)
        if not np.isfinite(data).all():
            _raise_nonfinite(int(np.isnan(data).sum()), int(np.isinf(data).sum()), data.size, path)


def _nifti_truncation(path: Path, expected: int) -> str | None:
    """Why the NIfTI file holds fewer than ``expected`` (header + voxel) bytes, or None."""
    if _suffix(path) == ".nii":
        actual = path.stat().st_size
        return None if actual >= expected else f"file holds {actual} bytes, the header needs {expected}"
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        trailer = int.from_bytes(f.read(4), "little")
    if trailer == expected % 2**32:
        return None
    try:
        with gzip.open(path, "rb") as f:
            actual = 0
            while chunk := f.read(1 << 24):
                actual += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        return f"the gzip stream is cut short ({exc})"
    return None if actual >= expected else f"it decompresses to {actual} bytes, the header needs {expected}"


def _read_image_file(path: Path, what: str):
    """Read one image file with SimpleITK, turning its errors into UnreadableFileError."""
    sitk = _sitk()
    if _suffix(path) in (".nii", ".nii.gz"):
        _check_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise UnreadableFileError(
            f"{path}: cannot be read as {what} ({last.strip()}). Supported: a DICOM folder or a "
            f"{', '.join(VOLUME_SUFFIXES)} file."
        ) from None


# --- DICOM series --------------------------------------------------------------------------------
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
            print(f"read_ct: {len(infos)} series in {folder}; reading {_describe(infos[chosen])}; skipped: {skipped}")
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


# --- reading -----------------------------------------------------------------------------------
def read_ct(path, series_uid=None, *, verbose=True, check_hu=True) -> Volume:
    """Read a CT volume in HU (float32) from a DICOM folder or a NIfTI/NRRD/MetaImage file.

    A DICOM folder may hold several series: the largest axial CT series that is not a localizer
    is read (a line says which, and which were skipped, when ``verbose``), or the one whose
    SeriesInstanceUID is ``series_uid``.  Slices are sorted by position along the slice normal
    and RescaleSlope/RescaleIntercept are applied.

    ``check_hu`` refuses values that cannot be HU: a volume with no voxel below -200 HU holds
    neither air (-1000) nor fat (-100), which every CT field of view contains (MR magnitude
    images are >= 0; raw CT values without their intercept start at 0); and values beyond the
    int16 range of extended-scale CT; a DICOM series whose Modality is not CT.  Pass
    ``check_hu=False`` for a CT cropped to tissue.

    Raises MissingFileError, UnreadableFileError (empty folder, no DICOM, truncated file),
    NotCTError (2D, colour, not HU), InvalidValuesError (NaN/inf), InvalidArgumentError
    (unknown ``series_uid``; the message lists the available ones).

    >>> import numpy as np, tempfile, pathlib
    >>> from bonelab import Volume
    >>> ct = Volume(np.full((3, 4, 5), -1000, np.float32), spacing=(0.7, 0.7, 2.5))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_dicom_series(ct, folder, with_localizer=True)
    >>> vol = read_ct(folder, verbose=False)
    >>> vol.shape, vol.spacing, vol.array.dtype
    ((3, 4, 5), (0.7, 0.7, 2.5), dtype('float32'))
    """
    path = _existing(path)
    if path.is_dir():
        image, source = _read_dicom_folder(path, series_uid, verbose, check_hu)
    else:
        if series_uid is not None:
            raise InvalidArgumentError(f"{path}: series_uid applies to a DICOM folder, not to a file.")
        image, source = _read_image_file(path, "a CT volume"), path
    _check_3d(image, source)
    volume = Volume.from_sitk(_sitk().Cast(image, _sitk().sitkFloat32))
    _check_finite(volume.array, source)
    if check_hu:
        _check_hu(volume.array, source)
    return volume


def _label_dtype(array: np.ndarray) -> np.dtype:
    lo, hi = int(array.min()), int(array.max())
    if lo >= 0:
        return np.dtype(np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.uint32)
    return np.dtype(np.int16 if lo >= -32768 and hi <= 32767 else np.int32)


_LABEL_NAMES_KEY = "bonelab_label_names"  # metadata key holding the names as JSON


def _names_from_metadata(image) -> dict | None:
    if image.HasMetaDataKey(_LABEL_NAMES_KEY):
        try:
            return {int(k): v for k, v in json.loads(image.GetMetaData(_LABEL_NAMES_KEY)).items()}
        except (ValueError, AttributeError):
            return None
    return None


def _full_names(values: np.ndarray, label_names: dict | None, source) -> dict:
    names = dict(label_names or {})
    present = [int(v) for v in values if v != 0]
    unnamed = [v for v in present if v not in names]
    if label_names and unnamed:
        warnings.warn(f"{source}: label value(s) {unnamed} have no name in label_names; named 'label <n>'.")
    names.update({v: f"label {v}" for v in unnamed})
    return dict(sorted(names.items()))


def read_labels(path, like=None, *, resample=False, label_names=None) -> Volume:
    """Read a label map (integers; 0 = background) from a NIfTI/NRRD/MetaImage file.

    ``label_names`` ({value: name}) names the labels; without it, names stored by :func:`write`
    (NRRD/MetaImage) are used, else ``"label <n>"``.  With ``like`` (a CT Volume), the label map
    must lie on the same physical grid (shape, spacing, origin, direction, to 1e-3 mm):
    otherwise GeometryMismatchError shows both geometries, unless ``resample=True``, which
    resamples the labels onto ``like``'s grid with nearest neighbour.

    >>> import numpy as np, tempfile, pathlib
    >>> from bonelab import Volume
    >>> seg = Volume(np.zeros((3, 4, 5), np.uint8), label_names={1: "radius"})
    >>> seg.array[1, 2, 2] = 1
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "seg.nrrd"
    >>> write(seg, path)
    >>> read_labels(path, like=seg).label_names
    {1: 'radius'}
    """
    if like is not None and not isinstance(like, Volume):
        raise InvalidArgumentError(f"read_labels: like must be a bonelab Volume (the CT); got {type(like).__name__}.")
    path = _existing(path)
    if path.is_dir():
        raise UnreadableFileError(f"{path}: read_labels reads one file ({', '.join(VOLUME_SUFFIXES)}), not a folder.")
    image = _read_image_file(path, "a label map")
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise InvalidValuesError(
            f"{path}: a label map must be a 3D image with one value per voxel; got "
            f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} component(s)."
        )
    stored_names = _names_from_metadata(image)
    volume = Volume.from_sitk(image)
    array = volume.array
    _check_finite(array, path)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.allclose(array, np.round(array), atol=1e-3):
            raise InvalidValuesError(
                f"{path}: holds non-integer values (e.g. {array[array != np.round(array)].flat[0]:g}): "
                "a label map holds integer labels. Is this a probability map or a CT?"
            )
        array = np.round(array)
    array = array.astype(_label_dtype(array))
    names = _full_names(np.unique(array), label_names or stored_names, path)
    labels = volume.with_array(array, label_names=names)
    if like is None or labels.same_grid(like):
        return labels
    if not resample:
        raise GeometryMismatchError(
            f"{path}: the label map is not on the CT's grid.\n  labels: {labels.geometry_str()}\n"
            f"  CT:     {like.geometry_str()}\nPass resample=True to resample the labels onto the CT "
            "grid (nearest neighbour), or check that they belong to this CT."
        )
    out = _resample_onto(labels, like.size, like.spacing, like.origin, like.direction)
    if labels.array.any() and not out.array.any():
        raise GeometryMismatchError(
            f"{path}: no label voxel falls inside the CT after resampling: the two do not overlap.\n"
            f"  labels: {labels.geometry_str()}\n  CT:     {like.geometry_str()}"
        )
    return out


# --- writing -------------------------------------------------------------------------------------
def _atomic_folder_write(folder: Path, write_files) -> list[Path]:
    """Run ``write_files(tmp_dir) -> [names]`` in a temporary folder inside ``folder``, then move
    the files into ``folder`` (in the given order) and remove the temporary folder."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bonelab-tmp-", dir=folder))
    try:
        names = write_files(tmp)
        for name in names:
            os.replace(tmp / name, folder / name)
        return [folder / name for name in names]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write(volume: Volume, path) -> None:
    """Write ``volume`` to ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.mhd`` (with its
    ``.zraw``), atomically: written under a temporary name in the same folder, then renamed.
    Label names are stored in the file's metadata for NRRD/MetaImage (NIfTI cannot hold them).

    >>> import numpy as np, tempfile, pathlib
    >>> from bonelab import Volume
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ct.mha"
    >>> write(Volume(np.zeros((2, 3, 4), np.float32)), path)
    >>> path.exists()
    True
    """
    if not isinstance(volume, Volume):
        raise InvalidArgumentError(f"write needs a bonelab Volume; got {type(volume).__name__}.")
    path = Path(path).expanduser()
    suffix = _suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InvalidArgumentError(
            f"{path}: unknown volume format {suffix!r}; use one of {', '.join(VOLUME_SUFFIXES)}."
        )
    sitk = _sitk()
    image = volume.to_sitk()
    if volume.label_names and suffix not in (".nii", ".nii.gz"):
        image.SetMetaData(_LABEL_NAMES_KEY, json.dumps(volume.label_names))

    def write_files(tmp: Path) -> list[str]:
        try:
            sitk.WriteImage(image, str(tmp / path.name), useCompression=True)
        except RuntimeError as exc:
            raise UnreadableFileError(f"{path}: cannot be written ({str(exc).strip()[-200:]}).") from None
        # Data files (.zraw/.raw of a .mhd) first, the header last.
        return sorted((p.name for p in tmp.iterdir()), key=lambda n: n == path.name)

    _atomic_folder_write(path.parent, write_files)


def _new_uid(entropy=None) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=entropy)


def _ct_dataset(*, rows, columns, study_uid, series_uid, frame_uid, patient_name, description, series_number):
    """The tags shared by every image written here (CT Image Storage, signed 16-bit pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    now = datetime.now(timezone.utc)
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


# --- geometry ----------------------------------------------------------------------------------
_INTERPOLATORS = {"linear": "sitkLinear", "nearest": "sitkNearestNeighbor", "bspline": "sitkBSpline",
                  "lanczos": "sitkLanczosWindowedSinc"}


def _interpolator(interpolator, is_label: bool):
    sitk = _sitk()
    if interpolator is None:
        return sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    if isinstance(interpolator, str):
        if interpolator not in _INTERPOLATORS:
            raise InvalidArgumentError(
                f"interpolator {interpolator!r} unknown; use one of {sorted(_INTERPOLATORS)}."
            )
        return getattr(sitk, _INTERPOLATORS[interpolator])
    return interpolator  # a SimpleITK constant such as sitk.sitkBSpline


def _resample_onto(volume: Volume, size, spacing, origin, direction, interpolator=None) -> Volume:
    """Resample ``volume`` onto the grid given by ITK-order ``size``, ``spacing``, ``origin`` and
    ``direction`` (outside the input: the CT's minimum, or 0 for labels)."""
    sitk = _sitk()
    ref = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in spacing])
    ref.SetOrigin([float(o) for o in origin])
    ref.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    image = volume.to_sitk()
    if not volume.is_label:
        image = sitk.Cast(image, sitk.sitkFloat32)
    default = 0.0 if volume.is_label else float(volume.array.min())
    out = sitk.Resample(image, ref, sitk.Transform(), _interpolator(interpolator, volume.is_label), default,
                        image.GetPixelID())
    return Volume.from_sitk(out, label_names=volume.label_names)


def resample(volume: Volume, spacing, *, interpolator=None) -> Volume:
    """Resample onto a new voxel spacing ``(sx, sy, sz)`` mm (or one float, isotropic).

    The direction and the centre of the grid stay; the voxel count becomes
    ``round(size_mm / spacing)``, so the new grid covers the same box (exactly when ``size_mm``
    is a multiple of ``spacing``, else to within half a new voxel at each side).  The origin
    (centre of the first voxel) therefore moves by half the spacing change: keeping it instead
    would shift the whole field of view by that much (0.75 mm going from 1.5 to 3 mm slices).
    Linear interpolation for CT (float32), nearest neighbour for label maps
    (``volume.is_label``), unless ``interpolator`` ("linear", "nearest", "bspline", "lanczos"
    or a SimpleITK constant).

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> v = Volume(np.zeros((10, 20, 30), np.float32), spacing=(0.5, 0.5, 2.0))
    >>> r = resample(v, 1.0)
    >>> r.shape, r.size_mm, r.origin
    ((20, 10, 15), (15.0, 10.0, 20.0), (0.25, 0.25, -0.5))
    """
    values = np.asarray(spacing, dtype=float).ravel()
    if values.size == 1:
        values = np.repeat(values, 3)
    if values.size != 3 or not np.all(values > 0):
        raise InvalidArgumentError(f"spacing must be one or three positive mm values (x, y, z); got {spacing}.")
    size = np.maximum(1, np.round(np.asarray(volume.size_mm) / values)).astype(int)
    origin = volume.center - volume.direction @ (values * (size - 1) / 2)
    return _resample_onto(volume, size, values, origin, volume.direction, interpolator)


def reorient(volume: Volume, orientation="LPS") -> Volume:
    """Permute/flip the array so its index axes point to ``orientation`` (DICOM convention: the
    letters name where x, y, z point, e.g. "LPS" = identity direction, "RAS", "LPI").  Only the
    storage order changes: each voxel keeps its world position (SimpleITK's DICOMOrient).  An
    oblique volume gets the permutation whose axes lie closest to ``orientation``; its
    direction stays oblique (no resampling).

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> reorient(Volume(np.zeros((2, 3, 4), np.float32)), "RAS").direction.diagonal()
    array([-1., -1.,  1.])
    """
    code = str(orientation).upper()
    axis_of = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
    if len(code) != 3 or sorted(axis_of.get(c, -1) for c in code) != [0, 1, 2]:
        raise InvalidArgumentError(
            f"orientation {orientation!r} must be three letters, one from each of L/R, P/A, S/I "
            "(e.g. 'LPS', 'RAS')."
        )
    out = _sitk().DICOMOrient(volume.to_sitk(), code)
    return Volume.from_sitk(out, label_names=volume.label_names)


# --- display and summaries -----------------------------------------------------------------------
def window(volume_or_array, preset=None, *, level=None, width=None) -> np.ndarray:
    """Map HU to [0, 1] for display: ``(hu - (level - width/2)) / width``, clipped; float32.

    Give a preset name from :data:`WINDOWS` ("bone", "soft", "lung", "brain") or ``level`` and
    ``width`` in HU.

    >>> window(np.array([-1000.0, 400.0, 1300.0]), "bone").tolist()
    [0.0, 0.5, 1.0]
    """
    if preset is not None:
        if level is not None or width is not None:
            raise InvalidArgumentError("window takes a preset or level/width, not both.")
        if str(preset).lower() not in WINDOWS:
            raise InvalidArgumentError(f"window preset {preset!r} unknown; use one of {sorted(WINDOWS)}.")
        level, width = WINDOWS[str(preset).lower()]
    if level is None or width is None or not width > 0:
        raise InvalidArgumentError(
            f"window needs a preset or both level and width > 0 (HU); got {level=}, {width=}."
        )
    hu = volume_or_array.array if isinstance(volume_or_array, Volume) else np.asarray(volume_or_array)
    out = (hu.astype(np.float32) - np.float32(level - width / 2)) / np.float32(width)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def hu_summary(volume) -> dict:
    """HU statistics of a CT: ``min``, ``max``, ``mean``, ``std``, percentiles ``p1`` ... ``p99``
    and ``fraction_<name>`` of voxels in each :data:`HU_RANGES` range (padding, air, soft, bone;
    they sum to 1).  Takes a Volume or an array.

    >>> s = hu_summary(np.array([-1000.0, 0.0, 40.0, 1000.0]))
    >>> s["fraction_bone"], s["fraction_soft"]
    (0.25, 0.5)
    """
    hu = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    hu = hu.astype(np.float32, copy=False).ravel()
    if hu.size == 0:
        raise InvalidValuesError("hu_summary got an empty array.")
    _check_finite(hu, "hu_summary input")
    levels = (1, 5, 25, 50, 75, 95, 99)
    summary = {"n_voxels": int(hu.size), "min": float(hu.min()), "max": float(hu.max()),
               "mean": float(hu.mean(dtype=np.float64)), "std": float(hu.std(dtype=np.float64))}
    summary.update({f"p{q}": float(v) for q, v in zip(levels, np.percentile(hu, levels))})
    for name, (lo, hi) in HU_RANGES.items():
        summary[f"fraction_{name}"] = float(np.count_nonzero((hu >= lo) & (hu < hi)) / hu.size)
    return summary


__all__ = [
    "HU_RANGES",
    "VOLUME_SUFFIXES",
    "WINDOWS",
    "hu_summary",
    "list_dicom_series",
    "read_ct",
    "read_labels",
    "reorient",
    "resample",
    "window",
    "write",
    "write_dicom_series",
]
