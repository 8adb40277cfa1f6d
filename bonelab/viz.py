"""Figures and viewers for CT volumes, label maps and radiographs (matplotlib + ipywidgets).

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
axis-aligned directions with flips or permutations; an oblique volume is resampled).

Arrays follow SimpleITK: numpy ``(z, y, x)``; geometry ``(x, y, z)`` in LPS mm.  Every function
takes a :class:`bonelab.Volume`, a 3D ``SimpleITK.Image`` or a plain ``(z, y, x)`` array (read as
1 mm voxels at the origin).  Figure functions create figures through pyplot, so in a notebook
write ``fig = show_slices(ct)`` (or end the line with ``;``) to see each figure once.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LightSource, Normalize
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch

from bonelab import io as bio
from bonelab.errors import GeometryMismatchError, InvalidArgumentError, InvalidValuesError
from bonelab.volume import Volume

# Letters at the (left, right) end of each world axis as displayed: x runs R -> L, y A -> P,
# z I -> S (LPS coordinates grow toward the second letter).
_AXIS_ENDS = {0: ("R", "L"), 1: ("A", "P"), 2: ("I", "S")}
_AXIS_NAME = {0: "x", 1: "y", 2: "z"}
_BONE_RGB = (0.93, 0.88, 0.76)  # ivory, for a threshold (unlabelled) bone surface


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


# --- inputs ------------------------------------------------------------------------------------
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
    names = dict(lab.label_names or {})
    names.update({v: f"label {v}" for v in _present(array) if v not in names})
    return Volume(array, lab.spacing, lab.origin, lab.direction, names)


def _present(labels: np.ndarray) -> list:
    """The non-zero values in a label array, ascending."""
    return [int(v) for v in np.unique(labels) if v]


def _to_lps(volume: Volume, labels: Volume | None) -> tuple[Volume, Volume | None]:
    """Both volumes on one LPS-aligned grid (identity direction), for display."""
    if np.allclose(volume.direction, np.eye(3), atol=1e-6):
        return volume, labels
    image = bio.reorient(volume, "LPS")
    labels = bio.reorient(labels, "LPS") if labels is not None else None
    if np.allclose(image.direction, np.eye(3), atol=1e-6):
        return image, labels
    return _resample_aligned(image, False), _resample_aligned(labels, True) if labels is not None else None


def _resample_aligned(volume: Volume, is_label: bool) -> Volume:
    """Resample an oblique volume onto the LPS-aligned grid that covers it (same spacing):
    linear for intensities (outside = the volume's minimum), nearest neighbour for labels."""
    import SimpleITK as sitk

    corners = volume.corners()
    spacing = np.asarray(volume.spacing)
    lo, hi = corners.min(axis=0) + spacing / 2, corners.max(axis=0) - spacing / 2
    size = [int(n) for n in np.maximum(1, np.round((hi - lo) / spacing) + 1)]
    image = volume.to_sitk()
    if not is_label:
        image = sitk.Cast(image, sitk.sitkFloat32)
    out = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear,
        tuple(lo), tuple(spacing), tuple(np.eye(3).ravel()), 0.0 if is_label else float(volume.array.min()),
        image.GetPixelID(),
    )
    return Volume.from_sitk(out, label_names=volume.label_names)


# --- windows and colours -------------------------------------------------------------------------
def _clim(window, data: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) for a preset name in :data:`bonelab.io.WINDOWS`, a (level, width) pair, or
    None (the 1st to 99th percentile of the data)."""
    if window is None:
        flat = np.asarray(data).ravel()
        flat = flat[:: max(1, flat.size // 1_000_000)].astype(float)  # a strided sample is plenty
        flat = flat[np.isfinite(flat)]
        lo, hi = np.percentile(flat, [1, 99]) if flat.size else (0.0, 1.0)
        return float(lo), float(hi if hi > lo else lo + 1.0)
    if isinstance(window, str):
        if window.lower() not in bio.WINDOWS:
            raise InvalidArgumentError(
                f"window {window!r} unknown; use one of {sorted(bio.WINDOWS)}, a (level, width) pair in HU, or None."
            )
        level, width = bio.WINDOWS[window.lower()]
    else:
        try:
            level, width = (float(w) for w in window)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"window must be a preset name, (level, width) in HU or None; got {window!r}."
            ) from None
        if not width > 0:
            raise InvalidArgumentError(f"window width must be > 0 HU; got {width}.")
    return level - width / 2, level + width / 2


def _window_text(window) -> str:
    if window is None:
        return "window 1st-99th percentile"
    lo, hi = _clim(window, np.zeros(1))
    name = f"{window} " if isinstance(window, str) else ""
    return f"{name}window L {(lo + hi) / 2:g} / W {hi - lo:g} HU"


def _value_label(window) -> str:
    return "value" if window is None else "HU"


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    """255 RGB colours, each as far (CIELAB distance) from all earlier ones as possible, taken
    from saturated mid-to-light colours that stand out on a grey CT (greedy max-min, a
    Glasbey-style palette; matplotlib's qualitative maps stop at 20 colours)."""
    from skimage.color import rgb2lab

    g = np.linspace(0.0, 1.0, 16)
    rgb = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = rgb2lab(rgb[None])[0]
    keep = (lab[:, 0] > 40) & (lab[:, 0] < 90) & (np.hypot(lab[:, 1], lab[:, 2]) > 35)
    rgb, lab = rgb[keep], lab[keep]
    chosen = [int(np.argmin(np.abs(rgb - (1.0, 0.2, 0.2)).sum(axis=1)))]  # start from red
    dist = np.linalg.norm(lab - lab[chosen[0]], axis=1)
    for _ in range(254):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(lab - lab[chosen[-1]], axis=1))
    return rgb[chosen]


def label_colors(label_names) -> dict:
    """An RGBA colour (floats in [0, 1]) for each label value: the colour depends on the value
    only, so a value keeps its colour in every figure of the book; 0 (background) is
    transparent.  The first 255 values get distinct colours; later ones repeat them.

    ``label_names`` is ``{value: name}`` (or any iterable of values).

    >>> c = label_colors({0: "background", 1: "scaphoid", 2: "lunate"})
    >>> c[0], len({c[1], c[2]})
    ((0.0, 0.0, 0.0, 0.0), 2)
    >>> label_colors({2: "L2"})[2] == c[2]
    True
    """
    colours = {}
    for value in label_names:
        value = int(value)
        if value < 0:
            raise InvalidArgumentError(f"label values must be >= 0; got {value}.")
        rgb = _palette()[(value - 1) % 255] if value else (0.0, 0.0, 0.0)
        colours[value] = (*(float(c) for c in rgb), 1.0 if value else 0.0)
    return colours


def _lut(names: dict) -> np.ndarray:
    """(max value + 1, 4) RGBA lookup table indexed by label value."""
    table = np.zeros((max(names, default=0) + 1, 4))
    for value, rgba in label_colors(names).items():
        table[value] = rgba
    return table


def _label_rgba(labels2d: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    rgba = lut[labels2d]
    rgba[..., 3] *= alpha
    return rgba


def _legend_handles(values, names: dict) -> list:
    colours = label_colors(values)
    return [Patch(facecolor=colours[v], edgecolor="black", linewidth=0.3, label=names.get(v, f"label {v}"))
            for v in sorted(values)]


def _add_legend(fig: Figure, ax, handles: list, title: str = "labels") -> None:
    """A legend of ``handles`` outside the images: beside them (up to 20 entries) or below them
    in columns (the figure grows to make room)."""
    if not handles:
        return
    many = len(handles) > 20
    width, height = fig.get_size_inches()
    ncols = max(2, min(6, int(width / 2.5))) if many else 1
    kw = dict(handles=handles, fontsize="small", title=title, frameon=False, ncols=ncols)
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        if many:
            fig.set_size_inches(width, height + 0.22 * math.ceil(len(handles) / ncols) + 0.4)
        fig.legend(loc="outside lower center" if many else "outside right upper", **kw)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), **kw)


# --- one 2D panel ----------------------------------------------------------------------------------
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
    style = dict(transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold", ha="center", va="center")
    for letter, (x, y) in zip(view.markers, ((0.04, 0.5), (0.96, 0.5), (0.5, 0.95), (0.5, 0.05))):
        ax.text(x, y, letter, **style)
    if title:
        ax.set_title(title, fontsize=10)


def _draw_slice(ax, vol: Volume, labels: Volume | None, view: _View, k: int, clim, *, label_alpha=0.4,
                show_labels=True, ticks=True, title=True, interpolation=None):
    """Draw slice ``k`` of LPS-aligned ``vol`` (and its labels) in ``ax``; return (image artist,
    label values present)."""
    extent = _extent(vol, view)
    image = ax.imshow(_take(vol.array, view, k), cmap="gray", norm=Normalize(*clim, clip=True), extent=extent,
                      origin=view.origin, interpolation=interpolation)
    present = set()
    if labels is not None and show_labels:
        lab2d = _take(labels.array, view, k)
        present = set(_present(lab2d))
        ax.imshow(_label_rgba(lab2d, _lut(labels.label_names), label_alpha), extent=extent, origin=view.origin,
                  interpolation="nearest")
    position = vol.origin[view.normal] + k * vol.spacing[view.normal]
    text = f"{view.name.capitalize()}, {_AXIS_NAME[view.normal]} = {position:.1f} mm\n(seen {view.seen_from})"
    _decorate(ax, view, text if title is True else title, ticks)
    return image, present


# --- public figures --------------------------------------------------------------------------------
def show_slices(volume, labels=None, *, point=None, window="bone", title=None, axes=None, label_alpha=0.4,
                legend=True) -> Figure:
    """Axial, coronal and sagittal slices through ``point`` (LPS mm, default the volume centre),
    in physical mm with the radiological convention (see the module docstring: axial seen from
    the feet with the patient's left on the image right and anterior up; coronal seen from the
    front; sagittal seen from the left, anterior on the left), with R/L/A/P/S/I letters.

    ``volume`` : Volume (HU), SimpleITK image or (z, y, x) array.  ``labels``: label map on the
    same grid (Volume with ``label_names``, or an integer array), drawn translucently with a
    legend of the labels present in the three slices.  ``window``: preset name from
    :data:`bonelab.io.WINDOWS`, (level, width) in HU, or None (1st-99th percentile).  ``axes``:
    three matplotlib Axes to draw into.  Dashed lines mark where the other two slices cut.

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
    present = set()
    for ax, view in zip(axes, VIEWS.values()):
        k = _slice_index(vol, view, point[view.normal])
        image, seen = _draw_slice(ax, vol, lab, view, k, clim, label_alpha=label_alpha)
        present |= seen
        ax.axvline(point[view.h], color="cyan", lw=0.6, ls="--", alpha=0.6)
        ax.axhline(point[view.v], color="cyan", lw=0.6, ls="--", alpha=0.6)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=_value_label(window))
    if legend and lab is not None:
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


# --- 2D images with masks (radiographs, DRRs) ------------------------------------------------------
def _as_2d(image) -> np.ndarray:
    """A (H, W) float array from a numpy array or torch tensor, dropping leading size-1 axes."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image, dtype=float)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InvalidArgumentError(f"overlay needs a 2D image (H, W); got shape {array.shape}.")
    return array


def _channels(mask, shape: tuple, label_names) -> tuple[list, list, list]:
    """Split ``mask`` into (boolean channel masks, label values for colours, names)."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 2:
        if mask.shape != shape:
            raise GeometryMismatchError(f"mask shape {mask.shape} differs from the image's {shape} (H, W).")
        values = _present(mask)
        names = dict(label_names or {})
        return [mask == v for v in values], values, [names.get(v, f"label {v}") for v in values]
    if mask.ndim != 3 or mask.shape[1:] != shape:
        raise GeometryMismatchError(
            f"mask must be a label map (H, W) or channels (C, H, W) matching the image {shape}; got {mask.shape}."
        )
    n = mask.shape[0]
    if label_names is None:
        values, names = list(range(1, n + 1)), [f"channel {c}" for c in range(n)]
    elif isinstance(label_names, dict):
        keys = [k for k in label_names if int(k) or len(label_names) != n + 1]  # drop a background 0
        if len(keys) != n:
            raise InvalidArgumentError(f"label_names has {len(label_names)} entries for {n} mask channels.")
        values, names = [int(k) for k in keys], [label_names[k] for k in keys]
    else:
        names = [str(s) for s in label_names]
        if len(names) != n:
            raise InvalidArgumentError(f"label_names has {len(names)} names for {n} mask channels.")
        values = list(range(1, n + 1))
    return [mask[c] > 0.5 for c in range(n)], values, names


def overlay(image2d, mask, *, label_names=None, ax=None, alpha=0.4, extent=None, window=None, title=None):
    """Draw a 2D image (a radiograph, a DRR, one CT slice) in grey with masks on top: each
    structure gets a translucent fill and an outline in its :func:`label_colors` colour, and a
    legend of names lists the structures present.  Returns the Axes.

    ``mask`` is an integer label map (H, W) with ``label_names`` ``{value: name}``, or channels
    (C, H, W) (overlapping structures, e.g. bones in a projection; a channel is "in" where > 0.5)
    with ``label_names`` a list of C names (colours of values 1..C) or a ``{value: name}`` dict
    whose entries, in order, name the channels (C entries, or C + 1 with a background 0).  ``extent``
    (left, right, bottom, top) in mm, as imshow's, with row 0 at the top; ``window`` as in
    :func:`show_slices` (None: 1st-99th percentile).

    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((32, 32))
    >>> masks = np.zeros((2, 32, 32)); masks[0, 5:20, 5:20] = 1; masks[1, 10:30, 10:30] = 1
    >>> ax = overlay(img, masks, label_names=["radius", "ulna"])
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['radius', 'ulna']
    """
    img = _as_2d(image2d)
    h, w = img.shape
    pixel = extent is None
    left, right, bottom, top = (-0.5, w - 0.5, h - 0.5, -0.5) if pixel else (float(e) for e in extent)
    extent = (left, right, bottom, top)
    if ax is None:
        ratio = abs(bottom - top) / abs(right - left)
        _, ax = plt.subplots(figsize=(6.5, min(10.0, max(2.5, 5.5 * ratio))), layout="constrained")
    ax.imshow(img, cmap="gray", norm=Normalize(*_clim(window, img), clip=True), extent=extent, origin="upper")
    handles = []
    if mask is not None:
        # contour needs pixel-centre coordinates matching imshow's extent (row 0 at the top).
        xs = left + (np.arange(w) + 0.5) * (right - left) / w
        ys = top + (np.arange(h) + 0.5) * (bottom - top) / h
        channels, values, names = _channels(mask, img.shape, label_names)
        colours = label_colors(values)
        for inside, value, name in zip(channels, values, names):
            if not inside.any():
                continue
            fill = np.zeros((h, w, 4))
            fill[inside] = (*colours[value][:3], alpha)
            ax.imshow(fill, extent=extent, origin="upper", interpolation="nearest")
            ax.contour(xs, ys, inside.astype(float), levels=[0.5], colors=[colours[value]], linewidths=1.2)
            handles.append(Patch(facecolor=colours[value], edgecolor=colours[value], label=name))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    if handles:  # beside the image: masks cover much of a radiograph
        ax.legend(handles=handles, fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  ncols=math.ceil(len(handles) / 25))
    unit = "pixel" if pixel else "mm"
    ax.set_xlabel(f"u ({unit})")
    ax.set_ylabel(f"v ({unit})")
    if title:
        ax.set_title(title)
    return ax


# --- histograms ------------------------------------------------------------------------------------
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


def _mark_peaks(ax, edges: np.ndarray, counts: np.ndarray, colour, n_max: int = 3) -> None:
    """Mark up to ``n_max`` prominent peaks (on a smoothed log-count curve, at least 0.1% of the
    highest bin) with their HU."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    smooth = gaussian_filter1d(np.log1p(counts.astype(float)), 1.5)
    peaks, props = find_peaks(np.concatenate([[0.0], smooth, [0.0]]), prominence=0.5)  # a factor of 1.6
    peaks, prominence = peaks - 1, props["prominences"]
    keep = counts[peaks] >= 1e-3 * counts.max()  # not the noise among a few stray voxels
    top = peaks[keep][np.argsort(prominence[keep])[::-1][:n_max]]
    centres = (edges[:-1] + edges[1:]) / 2
    for p in sorted(top):
        ax.plot(centres[p], counts[p], "v", color=colour, ms=6)
        ax.annotate(f"{centres[p]:.0f}", (centres[p], counts[p]), xytext=(0, 6), textcoords="offset points",
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
        _mark_peaks(ax, edges, counts, colour)
    if log:
        ax.set_yscale("log")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * (4.0 if log else 1.1))  # room for the peak labels
    ax.set_xlabel("HU")
    ax.set_ylabel(f"voxels per {(range[1] - range[0]) / bins:g} HU bin")
    ax.set_title("HU histogram (peaks marked in HU)")
    ax.legend(fontsize="small")
    return ax


# --- 3D surfaces -----------------------------------------------------------------------------------
class Surface(NamedTuple):
    """A triangle mesh: ``verts`` (N, 3) in LPS mm (x, y, z), ``faces`` (M, 3) vertex indices."""

    label: int
    name: str
    verts: np.ndarray
    faces: np.ndarray


def _factors(spacing, step: float) -> np.ndarray:
    """Block sizes (x, y, z) giving voxels of about ``step`` times the finest spacing."""
    spacing = np.asarray(spacing, dtype=float)
    return np.maximum(1, np.round(step * spacing.min() / spacing)).astype(int)


def _body(down: np.ndarray) -> np.ndarray:
    """The largest connected region above -500 HU (the patient; not the couch or the air)."""
    from scipy import ndimage

    parts, n = ndimage.label(down > -500)
    if n == 0:
        return np.zeros(down.shape, bool)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    return parts == np.argmax(sizes)


def _mesh(field: np.ndarray, level: float, factors_zyx: np.ndarray, offset_zyx, vol: Volume):
    """Marching cubes on a block-averaged field; vertices to LPS mm via the volume's geometry
    (block b covers voxels f*b .. f*b + f - 1, centred at f*b + (f - 1)/2)."""
    from skimage.measure import marching_cubes

    if not (field.min() < level < field.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), int)
    verts, faces, _, _ = marching_cubes(field, level)
    zyx = verts * factors_zyx + (factors_zyx - 1) / 2 + np.asarray(offset_zyx)
    # skimage's triangles wind so that matplotlib's face normals point into the bright side in
    # (z, y, x) index space; the (z, y, x) -> (x, y, z) swap mirrors them outward unless the
    # direction matrix mirrors them back (det < 0).  Outward normals make the shading right.
    if np.linalg.det(vol.direction) < 0:
        faces = faces[:, ::-1]
    return vol.index_to_world(zyx[:, ::-1]), faces


def bone_surfaces(volume, *, threshold=200.0, labels=None, label_ids=None, step=2, max_faces=150_000,
                  body_only=True) -> list:
    """Iso-surfaces for :func:`render_bone_3d`: one at ``threshold`` HU, or (with ``labels``) one
    per label in ``label_ids`` (default: all present).  Returns a list of :class:`Surface` in LPS
    mm.  The volume is block-averaged to voxels about ``step`` times its finest spacing (smooth
    and fast); the step grows until the faces fit ``max_faces``.  ``body_only`` keeps only bone
    connected to the patient's body (drops the couch) in threshold mode.

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> z, y, x = np.mgrid[:30, :30, :30]
    >>> ct = Volume(np.where((x - 15)**2 + (y - 15)**2 + (z - 15)**2 < 100, 1000.0, -1000.0))
    >>> s = bone_surfaces(ct, step=1, body_only=False)[0]
    >>> s.verts.min(axis=0).round(1), s.verts.max(axis=0).round(1)  # 200 HU: 40% from 9 mm (in) to 10 mm (out)
    (array([5.6, 5.6, 5.6]), array([24.4, 24.4, 24.4]))
    """
    from skimage.transform import downscale_local_mean

    vol = _as_volume(volume)
    lab = _as_labels(labels, vol)
    if lab is not None:
        present = set(_present(lab.array))
        ids = sorted(present if label_ids is None else {int(v) for v in label_ids})
        if not present.intersection(ids):
            raise InvalidArgumentError(
                f"none of label_ids {ids[:10]} is present in the labels (present: {sorted(present)[:10]}...)."
            )
    if step < 1 or max_faces < 1:
        raise InvalidArgumentError(f"step must be >= 1 and max_faces >= 1; got {step}, {max_faces}.")
    for _ in range(4):
        f = _factors(vol.spacing, step)[::-1]  # (z, y, x)
        if lab is None:
            down = downscale_local_mean(vol.array.astype(np.float32), tuple(f), cval=float(vol.array.min()))
            if body_only:
                down = np.where(_body(down), down, down.min())
            verts, faces = _mesh(down, threshold, f, 0, vol)
            surfaces = [Surface(0, f"HU >= {threshold:g}", verts, faces)] if len(faces) else []
        else:
            surfaces = _label_surfaces(lab, ids, f)
        total = sum(len(s.faces) for s in surfaces)
        if total <= max_faces:
            break
        step = step * math.sqrt(total / max_faces) * 1.05
    return surfaces


def _label_surfaces(lab: Volume, ids: list, f: np.ndarray) -> list:
    """One surface per label: the label's bounding box (plus a margin) as a 0/1 field,
    block-averaged, cut at 0.5."""
    from scipy import ndimage
    from skimage.transform import downscale_local_mean

    boxes = ndimage.find_objects(lab.array)
    surfaces = []
    for value in ids:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is None:
            continue
        lo = [max(0, s.start - 2 * m) for s, m in zip(box, f)]
        hi = [min(n, s.stop + 2 * m) for s, m, n in zip(box, f, lab.shape)]
        crop = lab.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == value
        down = downscale_local_mean(crop.astype(np.float32), tuple(f))
        verts, faces = _mesh(down, 0.5, f, lo, lab)
        if len(faces):
            surfaces.append(Surface(value, lab.label_names.get(value, f"label {value}"), verts, faces))
    return surfaces


def render_bone_3d(volume, *, threshold=200.0, labels=None, label_ids=None, step=2, ax=None, elev=12.0,
                   azim=-70.0, max_faces=150_000, body_only=True) -> Figure:
    """A static, shaded 3D rendering of bone in matplotlib: the iso-surface at ``threshold`` HU
    (bone above it, couch dropped; iodinated contrast above it shows too), or one surface per
    label (``labels`` + ``label_ids``) in its :func:`label_colors` colour with a legend.  Axes
    in LPS mm with equal aspect; the default view is from the front (anterior), a little from
    the patient's left, head up.  Faces are capped by ``max_faces`` (coarser blocks, see
    :func:`bone_surfaces`) so a 512 x 512 x 133 chest CT renders in a few seconds.

    >>> import numpy as np
    >>> z, y, x = np.mgrid[:20, :20, :20]
    >>> fig = render_bone_3d(np.where((x - 10)**2 + (y - 10)**2 + (z - 10)**2 < 36, 800.0, -1000.0), step=1)
    >>> fig.axes[0].name
    '3d'
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    surfaces = bone_surfaces(volume, threshold=threshold, labels=labels, label_ids=label_ids, step=step,
                             max_faces=max_faces, body_only=body_only)
    if ax is None:
        fig = plt.figure(figsize=(8, 8), layout="constrained")
        ax = fig.add_subplot(projection="3d")
    elif getattr(ax, "name", "") != "3d":
        raise InvalidArgumentError("render_bone_3d needs a 3D Axes (fig.add_subplot(projection='3d')).")
    fig = ax.figure
    colours = label_colors([s.label for s in surfaces])
    if surfaces:
        # One collection for all surfaces: mplot3d depth-sorts faces within a collection but only
        # whole collections against each other, so separate ones would overlap wrongly.
        triangles = np.concatenate([s.verts[s.faces] for s in surfaces])
        rgb = np.concatenate([np.tile(colours[s.label][:3] if s.label else _BONE_RGB, (len(s.faces), 1))
                              for s in surfaces])
        # LightSource's azimuth is clockwise from +y: this lights from above and left of the camera.
        light = LightSource(azdeg=90.0 - azim + 50.0, altdeg=elev + 40.0)
        # edges in the face colour (shaded alike) hide the anti-aliasing seams between triangles
        ax.add_collection3d(Poly3DCollection(triangles, facecolors=rgb, edgecolors=rgb, linewidths=0.3,
                                             shade=True, lightsource=light))
        lo, hi = triangles.min(axis=(0, 1)), triangles.max(axis=(0, 1))
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
        ax.set_box_aspect(np.maximum(hi - lo, 1e-6))
    ax.set_xlabel("x (mm), R \u2192 L")
    ax.set_ylabel("y (mm), A \u2192 P")
    ax.set_zlabel("z (mm), I \u2192 S")
    ax.view_init(elev=elev, azim=azim)
    n_faces = sum(len(s.faces) for s in surfaces)
    what = f"surfaces of {len(surfaces)} labels" if labels is not None else f"bone surface at {threshold:g} HU"
    ax.set_title(f"3D {what} ({n_faces:,} triangles)")
    if labels is not None and surfaces:
        _add_legend(fig, ax, _legend_handles([s.label for s in surfaces], {s.label: s.name for s in surfaces}))
    return fig


def _no_interactive_reason() -> str | None:
    """Why itkwidgets cannot show a live view here, or None if it may."""
    try:
        import itkwidgets  # noqa: F401
    except Exception as exc:  # ImportError, or the pre-release failing at import time
        return f"itkwidgets is not usable ({type(exc).__name__}); pip install 'bonelab[viz3d]' in a live notebook"
    try:
        from IPython import get_ipython
    except ImportError:
        return "IPython is not installed"
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return "no Jupyter kernel with a front end is running"
    return None


def view3d(volume, *, labels=None, interactive=True, **kw):
    """An interactive itkwidgets 3D view in a live Jupyter notebook; everywhere else (scripts,
    the book build, itkwidgets missing or failing) the static :func:`render_bone_3d` figure,
    with a one-line message saying why.  ``kw`` goes to :func:`render_bone_3d`;
    ``interactive=False`` forces the static figure (use it in executed book cells).

    >>> import numpy as np
    >>> fig = view3d(np.where(np.indices((12, 12, 12)).sum(0) < 12, 500.0, -1000.0), step=1)  # doctest: +ELLIPSIS
    view3d: static rendering (...)
    """
    reason = _no_interactive_reason() if interactive else "interactive=False"
    if reason is None:
        try:
            import itkwidgets

            vol = _as_volume(volume)
            extra = {"label_image": _as_labels(labels, vol).to_sitk()} if labels is not None else {}
            return itkwidgets.view(image=vol.to_sitk(), **extra)
        except Exception as exc:  # the pre-release fails in many ways without a live front end
            reason = f"itkwidgets.view failed: {type(exc).__name__}: {exc}".splitlines()[0]
    print(f"view3d: static rendering ({reason})")
    return render_bone_3d(volume, labels=labels, **kw)


# --- interactive viewer ----------------------------------------------------------------------------
class SliceViewer:
    """Holder of the widgets and the matplotlib figure behind :func:`slice_viewer` (built by it)."""

    def __init__(self, volume, labels=None, *, window="bone"):
        import ipywidgets as w

        vol = _as_volume(volume)
        self.volume, self.labels = _to_lps(vol, _as_labels(labels, vol))
        presets = list(bio.WINDOWS)
        level_width = _clim(window, self.volume.array)
        start = window.lower() if isinstance(window, str) else "custom"
        self.axis = w.Dropdown(options=list(VIEWS), value="axial", description="view")
        self.slice = w.IntSlider(description="slice", continuous_update=False, layout=w.Layout(width="95%"))
        self.preset = w.Dropdown(options=[*presets, "custom"], value=start, description="window")
        self.level = w.FloatText(value=(level_width[0] + level_width[1]) / 2, description="level (HU)")
        self.width = w.BoundedFloatText(value=level_width[1] - level_width[0], min=1.0, max=1e6,
                                        description="width (HU)")
        self.show_labels = w.Checkbox(value=self.labels is not None, disabled=self.labels is None,
                                      description="labels")
        self._size = (7.5, 6.0)
        self.figure = Figure(figsize=self._size, layout="constrained")  # not pyplot: never auto-shown
        self.picture = w.Image(format="png")
        self._busy = False
        self._set_slider()
        self.axis.observe(self._on_axis, names="value")
        self.preset.observe(self._on_preset, names="value")
        for control in (self.level, self.width):
            control.observe(self._on_level_width, names="value")
        for control in (self.slice, self.show_labels):
            control.observe(lambda _: self.redraw(), names="value")
        controls = w.HBox([self.axis, self.preset, self.level, self.width, self.show_labels],
                          layout=w.Layout(flex_flow="row wrap"))
        self.widget = w.VBox([controls, self.slice, self.picture])
        self.redraw()

    @property
    def view(self) -> _View:
        return VIEWS[self.axis.value]

    @property
    def image(self):
        """The AxesImage showing the current slice (its array is the slice in HU)."""
        return self.figure.axes[0].images[0]

    def _set_slider(self) -> None:
        n = self.volume.size[self.view.normal]
        self.slice.max = n - 1
        self.slice.value = n // 2

    def _on_axis(self, _change) -> None:
        self._busy = True
        self._set_slider()
        self._busy = False
        self.redraw()

    def _on_preset(self, change) -> None:
        if change["new"] == "custom" or self._busy:
            return
        lo, hi = _clim(change["new"], np.zeros(1))
        self._busy = True
        self.level.value, self.width.value = (lo + hi) / 2, hi - lo
        self._busy = False
        self.redraw()

    def _on_level_width(self, _change) -> None:
        if self._busy:
            return
        self._busy = True
        level_width = (self.level.value, self.width.value)
        if self.preset.value != "custom" and _clim(self.preset.value, np.zeros(1)) != _clim(level_width, None):
            self.preset.value = "custom"
        self._busy = False
        self.redraw()

    def redraw(self) -> None:
        """Draw the current slice into the figure and the PNG shown by the widget."""
        if self._busy:
            return
        fig, view = self.figure, self.view
        fig.clear()
        fig.set_size_inches(*self._size)  # a long legend grows the figure: start again each time
        ax = fig.add_subplot()
        clim = _clim((self.level.value, self.width.value), None)
        # nearest: antialiased resampling of a 512 x 512 slice took half of each redraw
        image, present = _draw_slice(ax, self.volume, self.labels, view, self.slice.value, clim,
                                     show_labels=self.show_labels.value, interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8, label="HU")
        if present:
            _add_legend(fig, ax, _legend_handles(present, self.labels.label_names))
        buffer = BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        self.picture.value = buffer.getvalue()


def slice_viewer(volume, labels=None, *, window="bone"):
    """An interactive viewer (ipywidgets): a view dropdown (axial/coronal/sagittal), a slice
    slider, a window preset dropdown (+ "custom" level/width in HU), a label-overlay toggle
    with a legend of the names in the slice.  Slices are drawn by matplotlib in the orientation
    of :func:`show_slices` and shown as a PNG, so it works in any front end and headless.

    Returns an ``ipywidgets.VBox`` (display it as a cell's last line); its ``viewer`` attribute
    is the :class:`SliceViewer` with the controls (``axis``, ``slice``, ``preset``, ``level``,
    ``width``, ``show_labels``), the ``figure`` and the ``image`` artist.

    >>> import numpy as np
    >>> box = slice_viewer(np.random.default_rng(0).normal(size=(8, 16, 16)), window=(0, 4))
    >>> box.viewer.axis.value = "coronal"; box.viewer.image.get_array().shape
    (8, 16)
    """
    viewer = SliceViewer(volume, labels, window=window)
    viewer.widget.viewer = viewer
    return viewer.widget


def save_figure(fig, path, *, dpi=150) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg) atomically, creating
    the folder; returns the path.

    >>> import matplotlib.pyplot as plt, tempfile, pathlib
    >>> p = save_figure(plt.figure(), pathlib.Path(tempfile.mkdtemp()) / "figs" / "empty.png")
    >>> p.stat().st_size > 0
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=f".{path.stem}-")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
