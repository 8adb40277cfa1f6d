"""What every figure of :mod:`bonelab.viz` takes in: volumes, label maps and windows, made uniform.

A figure takes a :class:`bonelab.Volume`, a 3D ``SimpleITK.Image`` or a plain ``(z, y, x)``
array (read as 1 mm voxels at the origin); label maps on the same grid; and a window given as a
preset name, ``(level, width)`` in HU or None.
"""

from __future__ import annotations

import numpy as np

from bonelab.errors import GeometryMismatchError, InvalidArgumentError, InvalidValuesError
from bonelab.io.intensity import window_bounds
from bonelab.io.spatial import reorient, resample_axis_aligned
from bonelab.volume import Volume, default_label_names


def _as_volume(volume, what: str = "volume") -> Volume:
    """A Volume from a Volume, a 3D SimpleITK image or a (z, y, x) array (1 mm voxels)."""
    if isinstance(volume, Volume):
        return volume
    if hasattr(volume, "GetDimension"):
        return Volume.from_sitk(volume)
    array = np.asarray(volume)
    if array.ndim != 3:
        raise InvalidArgumentError(
            f"{what} must be a bonelab.Volume, a 3D SimpleITK image or a (z, y, x) array; got shape {array.shape}."
        )
    return Volume(array)


def _as_labels(labels, volume: Volume) -> Volume | None:
    """The label map as a Volume on ``volume``'s grid, with a name for every value present."""
    if labels is None:
        return None
    if isinstance(labels, Volume) or hasattr(labels, "GetDimension"):
        lab = _as_volume(labels, "labels")
    else:
        array = np.asarray(labels)
        if array.shape != volume.shape:
            raise GeometryMismatchError(
                f"labels have shape {array.shape} but the volume has {volume.shape} (z, y, x); "
                "pass a label map on the CT's grid (resample it with nearest neighbour first)."
            )
        lab = volume.with_array(array, label_names=None)
    if not lab.same_grid(volume):
        raise GeometryMismatchError(
            f"labels ({lab.geometry_str()}) are not on the volume's grid ({volume.geometry_str()}); "
            "resample them onto the CT first, e.g. bonelab.io.read_labels(path, like=ct, resample=True)."
        )
    array = lab.array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise InvalidValuesError("labels must hold whole numbers (0 = background); got fractional values.")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise InvalidValuesError(f"labels must be >= 0 (0 = background); found {int(array.min())}.")
    return Volume(array, lab.spacing, lab.origin, lab.direction, default_label_names(_present(array), lab.label_names))


def _present(labels: np.ndarray) -> list:
    """The non-zero values in a label array, ascending."""
    return [int(v) for v in np.unique(labels) if v]


def _to_lps(volume: Volume, labels: Volume | None) -> tuple[Volume, Volume | None]:
    """Both volumes on one LPS-aligned grid (identity direction), for display."""
    if np.allclose(volume.direction, np.eye(3), atol=1e-6):
        return volume, labels
    image = reorient(volume, "LPS")
    labels = reorient(labels, "LPS") if labels is not None else None
    if np.allclose(image.direction, np.eye(3), atol=1e-6):
        return image, labels
    return resample_axis_aligned(image), resample_axis_aligned(labels) if labels is not None else None



def _clim(window, data: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) for a preset name in :data:`bonelab.io.WINDOWS`, a (level, width) pair
    (:func:`bonelab.io.window_bounds`), or None (the 1st to 99th percentile of the data)."""
    if window is None:
        flat = np.asarray(data).ravel()
        flat = flat[:: max(1, flat.size // 1_000_000)].astype(float)  # a strided sample is plenty
        flat = flat[np.isfinite(flat)]
        lo, hi = np.percentile(flat, [1, 99]) if flat.size else (0.0, 1.0)
        return float(lo), float(hi if hi > lo else lo + 1.0)
    return window_bounds(window)


def _window_text(window) -> str:
    if window is None:
        return "window 1st-99th percentile"
    lo, hi = _clim(window, np.zeros(1))
    name = f"{window} " if isinstance(window, str) else ""
    return f"{name}window L {(lo + hi) / 2:g} / W {hi - lo:g} HU"


def _value_label(window) -> str:
    return "value" if window is None else "HU"
