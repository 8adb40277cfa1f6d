"""CT in, geometry right: reading, writing, resampling, reorienting and windowing volumes.

Everything here returns or takes a :class:`bonelab.Volume` (numpy ``(z, y, x)``, geometry
``(x, y, z)`` in LPS mm).  SimpleITK does the reading, writing and resampling; the modules add
what a teaching package needs on top of it:

* :mod:`~bonelab.io.volumes`: :func:`read_ct`, :func:`read_labels`, :func:`write` (checked
  reading, atomic writing);
* :mod:`~bonelab.io.dicom`: the series in a DICOM folder, and a CT series writer;
* :mod:`~bonelab.io.nifti`: the NIfTI checks SimpleITK lacks (truncation, NaN);
* :mod:`~bonelab.io.spatial`: :func:`resample`, :func:`resample_onto`, :func:`reorient`;
* :mod:`~bonelab.io.intensity`: display windows (:data:`WINDOWS`, :func:`window`), HU statistics
  (:func:`hu_summary`, :func:`histogram_peaks`).

Every name is importable from ``bonelab.io`` directly:

>>> from bonelab import io
>>> io.window_bounds("bone")
(-500.0, 1300.0)
"""

from bonelab.io.dicom import list_dicom_series, write_dicom_series
from bonelab.io.intensity import HU_RANGES, WINDOWS, histogram_peaks, hu_summary, window, window_bounds
from bonelab.io.nifti import check_nifti
from bonelab.io.spatial import reorient, resample, resample_axis_aligned, resample_onto
from bonelab.io.volumes import VOLUME_SUFFIXES, read_ct, read_labels, write

__all__ = [
    "HU_RANGES",
    "VOLUME_SUFFIXES",
    "WINDOWS",
    "check_nifti",
    "histogram_peaks",
    "hu_summary",
    "list_dicom_series",
    "read_ct",
    "read_labels",
    "reorient",
    "resample",
    "resample_axis_aligned",
    "resample_onto",
    "window",
    "window_bounds",
    "write",
    "write_dicom_series",
]
