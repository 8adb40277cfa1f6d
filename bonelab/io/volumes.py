"""Reading and writing CT volumes and label maps, checked: a DICOM folder or a NIfTI/NRRD/MetaImage file in,
a :class:`bonelab.Volume` out (numpy ``(z, y, x)``, geometry ``(x, y, z)`` in LPS mm).

Every bad input becomes a :class:`bonelab.BonelabError` subclass that names the file and the
problem (a missing path, a truncated NIfTI that SimpleITK would silently zero-fill, a 2D picture,
an MR volume, NaNs, a label map on another grid); writes are atomic (temporary name in the same
folder, then rename).

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

import json
import warnings
from pathlib import Path

import numpy as np

from bonelab.errors import (
    GeometryMismatchError,
    InvalidArgumentError,
    InvalidValuesError,
    NotCTError,
    UnreadableFileError,
)
from bonelab.files import atomic_path
from bonelab.io._common import VOLUME_SUFFIXES, _atomic_folder_write, _check_finite, _existing, _sitk, _suffix
from bonelab.io.dicom import _read_dicom_folder
from bonelab.io.nifti import check_nifti
from bonelab.io.spatial import resample_onto
from bonelab.volume import Volume, default_label_names

# -100 HU; a volume whose minimum stays above this has neither, so it is not in HU.
_MIN_HU_FOR_AIR = -200.0
# Extended-scale CT stores up to 30,710 HU (metal); int16 padding goes down to -32768.
_HU_SCALE = (-32768.0, 32767.0)



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




def _read_image_file(path: Path, what: str):
    """Read one image file with SimpleITK, turning its errors into UnreadableFileError."""
    sitk = _sitk()
    if _suffix(path) in (".nii", ".nii.gz"):
        check_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise UnreadableFileError(
            f"{path}: cannot be read as {what} ({last.strip()}). Supported: a DICOM folder or a "
            f"{', '.join(VOLUME_SUFFIXES)} file."
        ) from None




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
    >>> from bonelab.io import write_dicom_series
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
    names = default_label_names(values, label_names)
    unnamed = [v for v in names if v not in (label_names or {})]
    if label_names and unnamed:
        warnings.warn(f"{source}: label value(s) {unnamed} have no name in label_names; named 'label <n>'.",
                      stacklevel=3)  # the caller of read_labels
    return names


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
    out = resample_onto(labels, like.size, like.spacing, like.origin, like.direction)
    if labels.array.any() and not out.array.any():
        raise GeometryMismatchError(
            f"{path}: no label voxel falls inside the CT after resampling: the two do not overlap.\n"
            f"  labels: {labels.geometry_str()}\n  CT:     {like.geometry_str()}"
        )
    return out




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

    def write_image(target: Path) -> None:
        try:
            sitk.WriteImage(image, str(target), useCompression=True)
        except RuntimeError as exc:
            raise UnreadableFileError(f"{path}: cannot be written ({str(exc).strip()[-200:]}).") from None

    if suffix != ".mhd":
        with atomic_path(path) as tmp:
            write_image(tmp)
        return

    def write_files(tmp: Path) -> list[str]:
        # A .mhd header names its data file (.zraw), so the pair is written under the final names in
        # a temporary folder and moved: the data file first, the header last.
        write_image(tmp / path.name)
        return sorted((p.name for p in tmp.iterdir()), key=lambda n: n == path.name)

    _atomic_folder_write(path.parent, write_files)


__all__ = ["VOLUME_SUFFIXES", "read_ct", "read_labels", "write"]
