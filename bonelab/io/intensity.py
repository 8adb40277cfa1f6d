"""CT intensities: display windows and HU statistics (histogram peaks, tissue fractions).

HU values go in as a :class:`bonelab.Volume` or any array; display values come out in [0, 1].

>>> import numpy as np
>>> window_bounds("bone")
(-500.0, 1300.0)
>>> window(np.array([-1000.0, 400.0]), level=400, width=1800).tolist()
[0.0, 0.5]
"""

from __future__ import annotations

import numpy as np

from bonelab.errors import InvalidArgumentError, InvalidValuesError
from bonelab.io._common import _check_finite
from bonelab.volume import Volume

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


def window_bounds(window) -> tuple[float, float]:
    """The HU range ``(low, high)`` a display window spreads over the grey levels: ``window``
    is a preset name from :data:`WINDOWS` ("bone", "soft", "lung", "brain"; any case) or a
    ``(level, width)`` pair in HU; ``low = level - width / 2``, ``high = level + width / 2``.
    The one place bonelab turns a window into numbers (:func:`window`, the figures of
    :mod:`bonelab.viz`).

    >>> window_bounds("lung"), window_bounds((40, 400))
    ((-1350.0, 150.0), (-160.0, 240.0))
    """
    if isinstance(window, str):
        if window.lower() not in WINDOWS:
            raise InvalidArgumentError(
                f"window preset {window!r} unknown; use one of {sorted(WINDOWS)} or a (level, width) pair in HU."
            )
        level, width = WINDOWS[window.lower()]
    else:
        try:
            level, width = (float(w) for w in window)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"window must be a preset name ({sorted(WINDOWS)}) or (level, width) in HU; got {window!r}."
            ) from None
    if not width > 0:
        raise InvalidArgumentError(f"window width must be > 0 HU; got {width}.")
    return level - width / 2, level + width / 2


def window(volume_or_array, preset=None, *, level=None, width=None) -> np.ndarray:
    """Map HU to [0, 1] for display: ``(hu - (level - width/2)) / width``, clipped; float32.

    Give a preset name from :data:`WINDOWS` ("bone", "soft", "lung", "brain") or ``level`` and
    ``width`` in HU (see :func:`window_bounds`).

    >>> window(np.array([-1000.0, 400.0, 1300.0]), "bone").tolist()
    [0.0, 0.5, 1.0]
    """
    if preset is not None and (level is not None or width is not None):
        raise InvalidArgumentError("window takes a preset or level/width, not both.")
    if preset is None and (level is None or width is None):
        raise InvalidArgumentError(
            f"window needs a preset or both level and width > 0 (HU); got {level=}, {width=}."
        )
    low, high = window_bounds(preset if preset is not None else (level, width))
    hu = volume_or_array.array if isinstance(volume_or_array, Volume) else np.asarray(volume_or_array)
    out = (hu.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def histogram_peaks(values, *, bins=310, range=(-1100.0, 2000.0), n_max=3, prominence=0.5,
                    min_fraction=1e-3) -> list[tuple[float, int]]:
    """The prominent peaks of the histogram of ``values`` (HU, any shape): a list of
    ``(bin centre in HU, count)``, most prominent first, at most ``n_max``.

    The counts are histogrammed over ``range`` in ``bins`` bins, then the curve ``log(1 + count)``
    is smoothed (Gaussian, sigma 1.5 bins) and its peaks found with
    :func:`scipy.signal.find_peaks`: a peak must rise ``prominence`` above its surroundings on
    that log curve (0.5: a factor of about 1.6 in count) and hold at least ``min_fraction`` of
    the highest bin (not the noise among a few stray voxels).  The ends of the range count as
    valleys, so a peak in the first or last bin is found.

    >>> hu = np.r_[np.full(5000, -1000.0), np.full(3000, 40.0), np.full(800, 1000.0)]
    >>> [round(c) for c, _ in histogram_peaks(hu, bins=62, range=(-1100, 2000))]
    [-975, 25, 1025]
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    counts, edges = np.histogram(np.asarray(values).ravel(), bins=bins, range=range)
    smooth = gaussian_filter1d(np.log1p(counts.astype(float)), 1.5)
    peaks, props = find_peaks(np.concatenate([[0.0], smooth, [0.0]]), prominence=prominence)
    peaks, strength = peaks - 1, props["prominences"]
    keep = counts[peaks] >= min_fraction * max(counts.max(), 1)
    top = peaks[keep][np.argsort(strength[keep])[::-1][:n_max]]
    centres = (edges[:-1] + edges[1:]) / 2
    return [(float(centres[p]), int(counts[p])) for p in top]


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


__all__ = ["HU_RANGES", "WINDOWS", "histogram_peaks", "hu_summary", "window", "window_bounds"]
