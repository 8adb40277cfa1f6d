"""NIfTI files as SimpleITK reads them, checked: truncation and NaN voxels, which it hides.

Measured with SimpleITK 2.5.7 (each case has a test in ``tests/test_io.py``): a truncated
``.nii``/``.nii.gz`` is read without an error, the missing voxels filled with zeros, and NaN
voxels of a float NIfTI read back as 0.  :func:`check_nifti` parses the header with nibabel to
catch both before SimpleITK reads the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from bonelab.errors import UnreadableFileError
from bonelab.io._common import _check_finite, _suffix


def check_nifti(path) -> None:
    """Refuse a truncated ``.nii``/``.nii.gz`` file or one holding NaN/inf, which SimpleITK would hide.

    Raises :class:`~bonelab.errors.UnreadableFileError` (broken header, truncated file) or
    :class:`~bonelab.errors.InvalidValuesError` (NaN/inf voxels); returns None for a sound file.
    :func:`bonelab.io.read_ct` and :func:`bonelab.io.read_labels` call it on every NIfTI.

    Measured (SimpleITK 2.5.7): a truncated .nii or .nii.gz is read without an error, the
    missing voxels filled with zeros; NaN voxels of a float NIfTI are read as 0.  So the header
    is parsed here with nibabel: for .nii.gz the gzip trailer (the uncompressed size) is compared
    with the size the header needs, and the stream is decompressed only on a mismatch (to tell a
    truncated file from a multi-member gzip); float data are scanned for NaN/inf.

    >>> import numpy as np, tempfile, pathlib
    >>> from bonelab import Volume, io
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ct.nii"
    >>> io.write(Volume(np.zeros((4, 5, 6), np.float32)), path)
    >>> check_nifti(path)
    >>> _ = path.write_bytes(path.read_bytes()[:-100])
    >>> check_nifti(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bonelab.errors.UnreadableFileError: ...ct.nii: truncated or damaged NIfTI: file holds ... bytes, the header needs .... Copy or export it again.
    """
    import nibabel

    path = Path(path)
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
        _check_finite(np.asanyarray(nii.dataobj), path)


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


__all__ = ["check_nifti"]
