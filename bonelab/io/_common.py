"""Helpers shared by the modules of :mod:`bonelab.io`: paths, suffixes, SimpleITK, finite checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bonelab.errors import MissingFileError
from bonelab.files import check_finite

#: File formats :func:`bonelab.io.write` (and :func:`~bonelab.io.read_ct` / :func:`~bonelab.io.read_labels`)
#: handle.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")

# What to do about NaN/inf voxels, in every finite-value error of bonelab.io.
_FINITE_FIX = ("every voxel needs a finite value. Fix the file, or replace them "
               "(for a CT, e.g. np.nan_to_num(a, nan=-1000))")


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


def _check_finite(array, source) -> None:
    """NaN/inf voxels -> InvalidValuesError naming ``source`` (bonelab.files.check_finite)."""
    check_finite(array, str(source), _FINITE_FIX)


def _atomic_folder_write(folder: Path, write_files) -> list[Path]:
    """Run ``write_files(tmp_dir) -> [names]`` in a temporary folder inside ``folder``, then move
    the files into ``folder`` (in the given order) and remove the temporary folder.

    For sets of files that name each other (a DICOM series, a MetaImage header and its data
    file), which :func:`bonelab.files.atomic_path` (one file, renamed) cannot write."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bonelab-tmp-", dir=folder))
    try:
        names = write_files(tmp)
        for name in names:
            os.replace(tmp / name, folder / name)
        return [folder / name for name in names]
    except BaseException:
        if created and not any(p != tmp for p in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
