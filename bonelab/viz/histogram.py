"""HU histograms of a CT, whole and per group of labelled structures, with their peaks marked.

>>> import numpy as np
>>> ax = hu_histogram(np.full((4, 4, 4), 40.0))
>>> [t.get_text() for t in ax.texts]
['45']
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from bonelab.errors import InvalidArgumentError
from bonelab.io.intensity import histogram_peaks
from bonelab.viz._inputs import _as_labels, _as_volume, _present


def _group_ids(groups: dict, names: dict) -> dict:
    """{group: [label values]} from ids or label names."""
    by_name = {n: v for v, n in names.items()}
    out = {}
    for group, members in groups.items():
        ids = []
        for m in members:
            if isinstance(m, str):
                if m not in by_name:
                    raise InvalidArgumentError(f"label_groups[{group!r}] names {m!r}, which is not a label name.")
                ids.append(by_name[m])
            else:
                ids.append(int(m))
        out[group] = ids
    return out


def _mark_peaks(ax, values: np.ndarray, colour, bins, range) -> None:
    """Mark the prominent peaks of the histogram of ``values`` with their HU
    (:func:`bonelab.io.histogram_peaks`)."""
    for centre, count in sorted(histogram_peaks(values, bins=bins, range=range)):
        ax.plot(centre, count, "v", color=colour, ms=6)
        ax.annotate(f"{centre:.0f}", (centre, count), xytext=(0, 6), textcoords="offset points",
                    ha="center", fontsize=8, color=colour)


def hu_histogram(volume, *, labels=None, label_groups=None, bins=310, range=(-1100, 2000), ax=None, log=True):
    """Histogram of the volume's HU, and (with ``labels``) of groups of labelled structures,
    overlaid as step curves; up to three peaks per curve are marked with their HU.  Values
    outside ``range`` (e.g. -2048 padding outside the field of view) are left out.

    ``label_groups``: ``{"bone": [ids or label names], "lung": [...]}``; without it, one curve
    per label when at most 6 labels are present, else one curve for all labelled voxels.
    Returns the Axes.

    >>> import numpy as np
    >>> ct = np.full((10, 10, 10), -1000.0); ct[3:7, 3:7, 3:7] = 1000.0
    >>> ax = hu_histogram(ct, labels=(ct > 0).astype(int), label_groups={"bone": [1]})
    >>> [t.get_text() for t in ax.texts]  # bin centres: 10 HU bins from -1100
    ['-995', '1005', '1005']
    """
    vol = _as_volume(volume)
    lab = _as_labels(labels, vol)
    hu = vol.array
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    curves = [("whole volume", hu.ravel())]
    if lab is not None:
        present = _present(lab.array)
        if label_groups is None:
            label_groups = ({lab.label_names[v]: [v] for v in present} if len(present) <= 6
                            else {f"all {len(present)} labels": present})
        for group, ids in _group_ids(label_groups, lab.label_names).items():
            curves.append((group, hu[np.isin(lab.array, ids)]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, values), colour in zip(curves, colours):
        counts, edges = np.histogram(values, bins=bins, range=range)
        ax.stairs(counts, edges, color=colour, label=f"{name} ({int(counts.sum()):,} voxels)")
        _mark_peaks(ax, values, colour, bins, range)
    if log:
        ax.set_yscale("log")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * (4.0 if log else 1.1))  # room for the peak labels
    ax.set_xlabel("HU")
    ax.set_ylabel(f"voxels per {(range[1] - range[0]) / bins:g} HU bin")
    ax.set_title("HU histogram (peaks marked in HU)")
    ax.legend(fontsize="small")
    return ax


__all__ = ["hu_histogram"]
