"""Where voxels are: resampling onto a new spacing or onto any grid, and reorienting storage.

Grids are given as SimpleITK gives them: ``size`` (nx, ny, nz) voxels, ``spacing`` (x, y, z) mm,
``origin`` (x, y, z) LPS mm (centre of the first voxel), ``direction`` (3x3, columns = the world
directions of the index axes).  Arrays stay numpy ``(z, y, x)``.

>>> import numpy as np
>>> from bonelab import Volume
>>> v = Volume(np.zeros((10, 20, 30), np.float32), spacing=(0.5, 0.5, 2.0))
>>> resample(v, 1.0).shape
(20, 10, 15)
"""

from __future__ import annotations

import numpy as np

from bonelab.errors import InvalidArgumentError
from bonelab.io._common import _sitk
from bonelab.volume import Volume

#: Interpolator names accepted by :func:`resample` and :func:`resample_onto`.
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


def resample_onto(volume: Volume, size, spacing, origin, direction=None, *, interpolator=None,
                  average: bool = False) -> Volume:
    """Resample ``volume`` onto the grid of ITK-order ``size`` (nx, ny, nz), ``spacing`` (x, y, z)
    mm, ``origin`` (x, y, z) LPS mm and ``direction`` (3x3; default identity).  Voxels outside
    the input get the CT's minimum (0 for labels).  Linear interpolation for CT (float32),
    nearest neighbour for label maps (``volume.is_label``), unless ``interpolator`` (as in
    :func:`resample`).  The one resampling step of bonelab: :func:`resample`, ``read_labels(...,
    resample=True)`` and the oblique-volume figures of :mod:`bonelab.viz` all go through it.

    ``average=True`` (intensity volumes, going to coarser voxels): each output voxel takes the
    mean of the input over its own extent instead of a sample at its centre, so that noise and
    fine detail do not alias: the input is first smoothed along each axis by a Gaussian with the
    variance of a box one output voxel wide (less that of an input voxel), as SimpleITK's
    interpolators do not average.  A 0/1 mask resampled this way gives how much of each output
    voxel it fills.

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> v = Volume(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    >>> resample_onto(v, (1, 1, 1), (1, 1, 1), (0.5, 0.5, 0.5)).array.item()  # the mean of the 8
    3.5
    """
    sitk = _sitk()
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    ref = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in spacing])
    ref.SetOrigin([float(o) for o in origin])
    ref.SetDirection(tuple(direction.ravel()))
    image = volume.to_sitk()
    if not volume.is_label:
        image = sitk.Cast(image, sitk.sitkFloat32)
    if average:
        if volume.is_label:
            raise InvalidArgumentError("average=True averages intensities; a label map has none (pass its 0/1 "
                                       "indicator as an intensity volume to get occupancy fractions).")
        sigma = [(max(0.0, float(c) ** 2 - f**2) / 12.0) ** 0.5 for c, f in zip(spacing, volume.spacing)]
        if max(sigma) > 0:
            image = sitk.SmoothingRecursiveGaussian(image, [max(v, 1e-3) for v in sigma])
    default = 0.0 if volume.is_label else float(volume.array.min())
    out = sitk.Resample(image, ref, sitk.Transform(), _interpolator(interpolator, volume.is_label), default,
                        image.GetPixelID())
    return Volume.from_sitk(out, label_names=volume.label_names)


def resample_axis_aligned(volume: Volume) -> Volume:
    """``volume`` on the LPS-aligned grid (identity direction, same spacing) that covers it:
    for an oblique volume, which :func:`reorient` cannot straighten without resampling.

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    >>> tilted = Volume(np.ones((4, 4, 4), np.float32), direction=[[c, -s, 0], [s, c, 0], [0, 0, 1]])
    >>> straight = resample_axis_aligned(tilted)
    >>> straight.direction.diagonal().tolist(), straight.shape
    ([1.0, 1.0, 1.0], (4, 5, 5))
    """
    corners = volume.corners()
    spacing = np.asarray(volume.spacing)
    lo, hi = corners.min(axis=0) + spacing / 2, corners.max(axis=0) - spacing / 2
    size = np.maximum(1, np.round((hi - lo) / spacing) + 1)
    return resample_onto(volume, size, spacing, lo)


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
    return resample_onto(volume, size, values, origin, volume.direction, interpolator=interpolator)


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


__all__ = ["reorient", "resample", "resample_axis_aligned", "resample_onto"]
