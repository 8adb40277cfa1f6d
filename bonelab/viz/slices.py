"""Slices of CT volumes: orthogonal views, montages and MIPs, in physical mm.

Orientation convention (the radiological one, used by every function here):

* **axial** slices are seen from the patient's feet: the patient's **Left** is on the image
  **right**, **Anterior** is up;
* **coronal** slices are seen from the front: patient's Left on the image right, **Superior** up;
* **sagittal** slices are seen from the patient's left side: **Anterior** on the image left,
  Superior up.

Each panel carries the letters R/L, A/P, S/I at its edges, and its axes are world coordinates
in LPS millimetres (x to the patient's Left, y to Posterior, z to Superior), so an ``imshow``
extent is the physical extent and the aspect ratio is the physical one.  A volume stored in any
direction is first reoriented to LPS-aligned axes (:func:`bonelab.io.reorient`, exact for
axis-aligned directions with flips or permutations; an oblique volume is resampled with
:func:`bonelab.io.resample_axis_aligned`).

Arrays follow SimpleITK: numpy ``(z, y, x)``; geometry ``(x, y, z)`` in LPS mm.  Every function
takes a :class:`bonelab.Volume`, a 3D ``SimpleITK.Image`` or a plain ``(z, y, x)`` array (read as
1 mm voxels at the origin).  Figure functions create figures through pyplot, so in a notebook
write ``fig = show_slices(ct)`` (or end the line with ``;``) to see each figure once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from bonelab.errors import InvalidArgumentError
from bonelab.viz._inputs import _as_labels, _as_volume, _clim, _present, _to_lps, _value_label, _window_text
from bonelab.viz.colors import _add_legend, _label_rgba, _legend_handles, _lut
from bonelab.viz.figures import orientation_markers
from bonelab.volume import Volume

# Letters at the (left, right) end of each world axis as displayed: x runs R -> L, y A -> P,
# z I -> S (LPS coordinates grow toward the second letter).
_AXIS_ENDS = {0: ("R", "L"), 1: ("A", "P"), 2: ("I", "S")}
_AXIS_NAME = {0: "x", 1: "y", 2: "z"}


@dataclass(frozen=True)
class _View:
    """One orthogonal view: ``normal`` is the world axis the slice is perpendicular to; the
    image's columns run along world axis ``h`` and its rows along ``v``; ``origin`` is imshow's."""

    name: str
    normal: int
    h: int
    v: int
    origin: str
    seen_from: str

    @property
    def markers(self) -> tuple:
        """Letters at the image's (left, right, top, bottom) edges."""
        lo_v, hi_v = _AXIS_ENDS[self.v]
        top, bottom = (lo_v, hi_v) if self.origin == "upper" else (hi_v, lo_v)
        return (*_AXIS_ENDS[self.h], top, bottom)


# Slicing numpy axis (2 - normal) of an LPS-aligned array[z, y, x] leaves (rows, cols) = (v, h).
VIEWS = {
    "axial": _View("axial", normal=2, h=0, v=1, origin="upper", seen_from="from the feet"),
    "coronal": _View("coronal", normal=1, h=0, v=2, origin="lower", seen_from="from the front"),
    "sagittal": _View("sagittal", normal=0, h=1, v=2, origin="lower", seen_from="from the left"),
}



# --- one 2D panel ---------------------------------------------------------------------------------
def _extent(vol: Volume, view: _View) -> tuple:
    """imshow extent (left, right, bottom, top) in mm of a slice of LPS-aligned ``vol``."""
    def edges(axis):
        n = vol.size[axis]
        return vol.origin[axis] - vol.spacing[axis] / 2, vol.origin[axis] + vol.spacing[axis] * (n - 0.5)

    (h0, h1), (v0, v1) = edges(view.h), edges(view.v)
    return (h0, h1, v1, v0) if view.origin == "upper" else (h0, h1, v0, v1)


def _slice_index(vol: Volume, view: _View, position_mm: float) -> int:
    """Index along ``view.normal`` of the slice nearest to ``position_mm`` (LPS-aligned vol)."""
    ax = view.normal
    k = (position_mm - vol.origin[ax]) / vol.spacing[ax]
    n = vol.size[ax]
    if not -0.5 <= k <= n - 0.5:
        lo, hi = vol.origin[ax], vol.origin[ax] + vol.spacing[ax] * (n - 1)
        raise InvalidArgumentError(
            f"point {_AXIS_NAME[ax]} = {position_mm:.1f} mm is outside the volume ({lo:.1f} to {hi:.1f} mm)."
        )
    return int(np.clip(round(k), 0, n - 1))


def _take(array: np.ndarray, view: _View, k: int) -> np.ndarray:
    return np.take(array, k, axis=2 - view.normal)


def _decorate(ax, view: _View, title: str | None, ticks: bool = True) -> None:
    """Axis labels in mm with the directions, and R/L/A/P/S/I letters at the image edges."""
    h_lo, h_hi = _AXIS_ENDS[view.h]
    v_lo, v_hi = _AXIS_ENDS[view.v]
    up = v_lo if view.origin == "upper" else v_hi
    if ticks:
        ax.set_xlabel(f"{_AXIS_NAME[view.h]} (mm), {h_lo} \u2192 {h_hi}")
        ax.set_ylabel(f"{_AXIS_NAME[view.v]} (mm), {up} up")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    orientation_markers(ax, *view.markers, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)


def _short_names(names: dict) -> dict:
    """``names`` without the prefix they all share up to an underscore ("vertebrae_L1" -> "L1")."""
    prefix = os.path.commonprefix(list(names.values())) if len(names) > 1 else ""
    cut = prefix.rfind("_") + 1
    return {v: n[cut:] or n for v, n in names.items()}


def _name_structures(ax, lab2d: np.ndarray, labels: Volume, view: _View, values, min_pixels: int = 12) -> None:
    """Write each structure's name on it, at the centroid of its pixels in this slice (in mm):
    with many structures, a legend of near colours cannot be matched to the image; a name can."""
    short = _short_names({v: labels.label_names.get(v, str(v)) for v in values})
    for v in values:
        rows, cols = np.nonzero(lab2d == v)
        if rows.size < min_pixels:
            continue
        x = labels.origin[view.h] + cols.mean() * labels.spacing[view.h]
        y = labels.origin[view.v] + rows.mean() * labels.spacing[view.v]
        ax.text(x, y, short[v], color="white", fontsize=7, ha="center", va="center",
                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")])


def _draw_slice(ax, vol: Volume, labels: Volume | None, view: _View, k: int, clim, *, label_alpha=0.4,
                show_labels=True, ticks=True, title=True, interpolation=None, names_on_image=False):
    """Draw slice ``k`` of LPS-aligned ``vol`` (and its labels) in ``ax``; return (image artist,
    label values present).  ``names_on_image`` writes each label's name on its structure."""
    extent = _extent(vol, view)
    image = ax.imshow(_take(vol.array, view, k), cmap="gray", norm=Normalize(*clim, clip=True), extent=extent,
                      origin=view.origin, interpolation=interpolation)
    present = set()
    if labels is not None and show_labels:
        lab2d = _take(labels.array, view, k)
        present = set(_present(lab2d))
        ax.imshow(_label_rgba(lab2d, _lut(labels.label_names), label_alpha), extent=extent, origin=view.origin,
                  interpolation="nearest")
        if names_on_image:
            _name_structures(ax, lab2d, labels, view, sorted(present))
    position = vol.origin[view.normal] + k * vol.spacing[view.normal]
    text = f"{view.name.capitalize()}, {_AXIS_NAME[view.normal]} = {position:.1f} mm\n(seen {view.seen_from})"
    _decorate(ax, view, text if title is True else title, ticks)
    return image, present



# --- public figures --------------------------------------------------------------------------------
def show_slices(volume, labels=None, *, point=None, window="bone", title=None, axes=None, label_alpha=0.4,
                legend=True, names_on_image=None) -> Figure:
    """Axial, coronal and sagittal slices through ``point`` (LPS mm, default the volume centre),
    in physical mm with the radiological convention (see the module docstring: axial seen from
    the feet with the patient's left on the image right and anterior up; coronal seen from the
    front; sagittal seen from the left, anterior on the left), with R/L/A/P/S/I letters.

    ``volume`` : Volume (HU), SimpleITK image or (z, y, x) array.  ``labels``: label map on the
    same grid (Volume with ``label_names``, or an integer array), drawn translucently with a
    legend of the labels present in the three slices.  ``window``: preset name from
    :data:`bonelab.io.WINDOWS`, (level, width) in HU, or None (1st-99th percentile).  ``axes``:
    three matplotlib Axes to draw into.  Dashed lines mark where the other two slices cut.
    ``names_on_image``: write each structure's name on it instead of drawing a legend (default:
    when more than 12 labels are present, whose colours a legend could not tell apart); the
    prefix all names share is dropped ("vertebrae_L1" is written "L1").

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> ct = Volume(np.full((20, 30, 40), -1000, np.float32), spacing=(1.0, 1.0, 2.0))
    >>> fig = show_slices(ct)
    >>> [ax.get_title().split(",")[0] for ax in fig.axes[:3]]
    ['Axial', 'Coronal', 'Sagittal']
    """
    vol = _as_volume(volume)
    lab = _as_labels(labels, vol)
    point = vol.center if point is None else np.asarray(point, dtype=float).reshape(3)
    vol, lab = _to_lps(vol, lab)
    clim = _clim(window, vol.array)
    if axes is None:
        sx, sy, _ = vol.size_mm
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), layout="constrained", width_ratios=[sx, sx, sy])
    elif len(axes) != 3:
        raise InvalidArgumentError(f"axes must be three matplotlib Axes (axial, coronal, sagittal); got {len(axes)}.")
    fig = axes[0].figure
    cuts = {name: _slice_index(vol, view, point[view.normal]) for name, view in VIEWS.items()}
    if names_on_image is None:
        in_cuts = set().union(*(_present(_take(lab.array, VIEWS[n], k)) for n, k in cuts.items())) if lab is not None else set()
        names_on_image = len(in_cuts) > 12
    present = set()
    for ax, view in zip(axes, VIEWS.values()):
        image, seen = _draw_slice(ax, vol, lab, view, cuts[view.name], clim, label_alpha=label_alpha,
                                  names_on_image=names_on_image)
        present |= seen
        ax.axvline(point[view.h], color="cyan", lw=0.6, ls="--", alpha=0.6)
        ax.axhline(point[view.v], color="cyan", lw=0.6, ls="--", alpha=0.6)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=_value_label(window))
    if legend and lab is not None and not names_on_image:
        _add_legend(fig, axes[-1], _legend_handles(present, lab.label_names))
    fig.suptitle(title or f"Orthogonal slices through ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm LPS, "
                          f"{_window_text(window)}", fontsize=11)
    return fig


def montage(volume, *, axis="axial", n=12, window="bone", labels=None) -> Figure:
    """``n`` evenly spaced slices (ends excluded) along ``axis`` ("axial", "coronal",
    "sagittal") in a grid, each titled with its position in mm, in the orientation of
    :func:`show_slices`; one colour bar, and a legend of the labels shown.

    >>> import numpy as np
    >>> fig = montage(np.zeros((30, 20, 20), np.float32), n=6, window=None)
    >>> sum(1 for ax in fig.axes if ax.images)
    6
    """
    view = _view(axis)
    vol = _as_volume(volume)
    lab = _as_labels(labels, vol)
    vol, lab = _to_lps(vol, lab)
    count = vol.size[view.normal]
    if not 1 <= int(n) <= count:
        raise InvalidArgumentError(f"n must be between 1 and the {count} {axis} slices; got {n}.")
    picks = np.round(np.linspace(0, count - 1, int(n) + 2)[1:-1]).astype(int)
    if len(np.unique(picks)) < len(picks):  # n close to the slice count: include the ends
        picks = np.round(np.linspace(0, count - 1, int(n))).astype(int)
    cols = math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.5, 2.6 * rows + 0.6), layout="constrained",
                             squeeze=False)
    clim = _clim(window, vol.array)
    present = set()
    for ax, k in zip(grid.ravel(), picks):
        pos = vol.origin[view.normal] + k * vol.spacing[view.normal]
        image, seen = _draw_slice(ax, vol, lab, view, int(k), clim, ticks=False,
                                  title=f"{_AXIS_NAME[view.normal]} = {pos:.1f} mm")
        present |= seen
    for ax in grid.ravel()[len(picks):]:
        ax.remove()
    fig.colorbar(image, ax=grid.ravel()[: len(picks)].tolist(), shrink=0.8, label=_value_label(window))
    if lab is not None:
        _add_legend(fig, grid.ravel()[len(picks) - 1], _legend_handles(present, lab.label_names))
    fig.suptitle(f"{view.name.capitalize()} montage ({view.seen_from}): {len(picks)} of {count} slices, "
                 f"{_window_text(window)}", fontsize=11)
    return fig


def mip(volume, *, axis="coronal", window=None, ax=None):
    """Maximum intensity projection along the normal of ``axis`` ("coronal": along y,
    "sagittal": along x, "axial": along z), in physical mm with the orientation of
    :func:`show_slices`; bright bone and contrast stand out.  Returns the Axes.

    >>> import numpy as np
    >>> ax = mip(np.zeros((10, 20, 30), np.float32), window="bone")
    >>> ax.images[0].get_array().shape
    (10, 30)
    """
    view = _view(axis)
    vol, _ = _to_lps(_as_volume(volume), None)
    projection = vol.array.max(axis=2 - view.normal)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    clim = _clim(window, projection)
    image = ax.imshow(projection, cmap="gray", norm=Normalize(*clim, clip=True), extent=_extent(vol, view),
                      origin=view.origin)
    _decorate(ax, view, f"{view.name.capitalize()} MIP ({view.seen_from}): max along {_AXIS_NAME[view.normal]}")
    ax.figure.colorbar(image, ax=ax, shrink=0.8, label=f"maximum {_value_label(window)}")
    return ax


def _view(axis: str) -> _View:
    if axis not in VIEWS:
        raise InvalidArgumentError(f"axis must be one of {list(VIEWS)}; got {axis!r}.")
    return VIEWS[axis]


__all__ = ["VIEWS", "mip", "montage", "show_slices"]
