"""Figures of X-ray projections: orientation letters on a film from its geometry, and a drawing of
the geometry itself (source, detector, rays) over the CT it images.

Everything is in LPS mm (x to the patient's left, y posterior, z superior); a
:class:`bonelab.drr.Geometry` gives the source, the detector centre and its ``u`` (image right)
and ``v`` (image down) directions.  Volumes are numpy ``(z, y, x)`` with their geometry.

>>> import matplotlib.pyplot as plt
>>> from bonelab.drr import pa
>>> _, ax = plt.subplots()
>>> [t.get_text() for t in film_markers(ax, pa(isocenter=(0, 0, 0)))]
['R', 'L', 'H', 'F']
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from bonelab.errors import InvalidArgumentError
from bonelab.io.intensity import window_bounds
from bonelab.viz._inputs import _as_volume, _to_lps
from bonelab.viz.figures import orientation_markers
from bonelab.viz.slices import VIEWS, _extent, _slice_index, _take

# Axis titles of the two planes a geometry is drawn in (world axis -> label).
_AXIS_TITLES = {0: "x (mm) \u2192 patient's left", 1: "y (mm) \u2192 posterior", 2: "z (mm) \u2192 head"}


def film_markers(ax, geometry, names=None, **style) -> list:
    """Orientation letters on a projection image drawn in ``ax``: at each edge the patient
    direction it faces, from ``geometry`` (:meth:`bonelab.drr.Geometry.edge_letters`; ``names``
    for an anatomical frame, e.g. radial/ulnar/proximal/distal).  ``style`` goes to
    :func:`orientation_markers`.  Returns the Text objects.

    >>> import matplotlib.pyplot as plt
    >>> from bonelab.drr import lateral
    >>> _, ax = plt.subplots()
    >>> [t.get_text() for t in film_markers(ax, lateral(side="left", isocenter=(0, 0, 0)))]
    ['A', 'P', 'H', 'F']
    """
    return orientation_markers(ax, *geometry.edge_letters(names), **style)


def _detector_line(geometry, along: str) -> tuple:
    """The ends of the detector's central row (``along="u"``) or column (``"v"``), world mm."""
    w, h = geometry.size
    su, sv = geometry.pixel
    u, v, p00 = (np.asarray(a, dtype=float) for a in (geometry.u, geometry.v, geometry.pixel00()))
    if along == "u":
        start = p00 + (h - 1) / 2 * sv * v
        return start, start + (w - 1) * su * u
    start = p00 + (w - 1) / 2 * su * u
    return start, start + (h - 1) * sv * v


def draw_geometry(ax, geometry, volume, plane="axial", *, window=(0.0, 2000.0)):
    """Draw ``geometry`` over a slice of ``volume`` through its centre: the source (star), the
    central ray and the rays to the ends of the detector, the detector (with its first and last
    pixel), the direction of ``u`` (``plane="axial"``: the axial plane, seen from the feet) or
    ``v`` (``"sagittal"``: seen from the patient's left), the CT's box and the way the patient
    faces (anterior).  Axes in LPS mm with equal aspect; returns ``ax``.

    >>> import matplotlib.pyplot as plt, numpy as np
    >>> from bonelab import Volume
    >>> from bonelab.drr import pa
    >>> ct = Volume(np.zeros((20, 30, 40), np.float32), origin=(-20, -15, -10))
    >>> ax = draw_geometry(plt.subplots()[1], pa(ct, size=16), ct)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['X-ray source', 'CT centre', 'detector']
    """
    if plane not in ("axial", "sagittal"):
        raise InvalidArgumentError(f"plane must be 'axial' or 'sagittal'; got {plane!r}.")
    vol, _ = _to_lps(_as_volume(volume), None)
    view = VIEWS[plane]
    a, b = view.h, view.v  # the world axes along the image's columns and rows
    centre = vol.center
    extent = _extent(vol, view)
    ax.imshow(_take(vol.array, view, _slice_index(vol, view, centre[view.normal])), cmap="gray",
              norm=Normalize(*window_bounds(window), clip=True), extent=extent, origin=view.origin)
    ax.add_patch(plt.Rectangle((min(extent[:2]), min(extent[2:])), abs(extent[1] - extent[0]),
                               abs(extent[3] - extent[2]), fill=False, ls=":", color="tab:blue"))
    along = "u" if plane == "axial" else "v"
    ends = _detector_line(geometry, along)
    source, det = np.asarray(geometry.source, dtype=float), np.asarray(geometry.detector_center, dtype=float)
    for end in ends:
        ax.plot([source[a], end[a]], [source[b], end[b]], color="gold", lw=0.8, ls="--")
    ax.plot([source[a], det[a]], [source[b], det[b]], color="orange", lw=1)
    ax.plot([ends[0][a], ends[1][a]], [ends[0][b], ends[1][b]], color="tab:green", lw=4, solid_capstyle="butt")
    last = geometry.size[0 if along == "u" else 1] - 1
    for end, tag in zip(ends, ("col 0", f"col {last}") if along == "u" else ("row 0", f"row {last}")):
        ax.annotate(tag, (end[a], end[b]), textcoords="offset points", xytext=(6, 0), fontsize=8, color="tab:green")
    length = float(np.linalg.norm(ends[1] - ends[0]))
    beam = (det - source) / np.linalg.norm(det - source)
    start = ends[0] - 0.15 * length * beam  # the u or v arrow, just in front of the detector
    stop = start + 0.5 * length * np.asarray(getattr(geometry, along), dtype=float)
    ax.annotate("", xy=(stop[a], stop[b]), xytext=(start[a], start[b]),
                arrowprops=dict(arrowstyle="->", color="tab:green", lw=2))
    ax.annotate(f"{along} (image {'right' if along == 'u' else 'down'})", (stop[a], stop[b]),
                textcoords="offset points", xytext=(4, 4), color="tab:green", fontsize=9, fontweight="bold")
    face = centre - np.array([0.0, 0.6 * vol.size_mm[1], 0.0])  # the patient faces anterior, -y
    ax.annotate("", xy=(face[a], face[b]), xytext=(centre[a], centre[b]),
                arrowprops=dict(arrowstyle="->", color="c", lw=1.5))
    ax.annotate("patient faces", (face[a], face[b]), textcoords="offset points", xytext=(3, 3), color="c", fontsize=9)
    ax.plot(source[a], source[b], "r*", ms=14, label="X-ray source")
    ax.plot(centre[a], centre[b], "c+", ms=12, mew=2, label="CT centre")
    ax.plot([], [], color="tab:green", lw=4, label="detector")
    ax.set_aspect("equal")
    ax.grid(alpha=0.25)
    ax.autoscale()
    xs, ys = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    ax.set_xlim(*xs)
    ax.set_ylim(*(ys[::-1] if view.origin == "upper" else ys))  # axial: anterior (-y) up, as CT slices are shown
    ax.set(xlabel=_AXIS_TITLES[a], ylabel=_AXIS_TITLES[b] + (" (down)" if view.origin == "upper" else ""))
    ax.legend(fontsize="small", loc="best", framealpha=0.8)
    return ax


def geometry_figure(geometry, volume, *, title=None) -> Figure:
    """Two panels of :func:`draw_geometry`: the axial plane (seen from the feet, showing ``u``)
    and the sagittal plane (seen from the patient's left, showing ``v``) through the CT centre.

    >>> import numpy as np
    >>> from bonelab import Volume
    >>> from bonelab.drr import lateral
    >>> ct = Volume(np.zeros((20, 30, 40), np.float32))
    >>> fig = geometry_figure(lateral(ct, "left", size=16), ct)
    >>> [ax.get_title().split(" (")[0] for ax in fig.axes]
    ['Axial plane through the CT centre', 'Sagittal plane through the CT centre']
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), layout="constrained")
    for ax, plane in zip(axes, ("axial", "sagittal")):
        draw_geometry(ax, geometry, volume, plane)
        ax.set_title(f"{plane.capitalize()} plane through the CT centre (seen {VIEWS[plane].seen_from})")
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["draw_geometry", "film_markers", "geometry_figure"]


def show_film(ax, image, geometry, *, names=None, title=None, percentiles=(1.0, 99.7)):
    """A projection image (H, W) as a film: in mm on the detector (``geometry``'s pixel pitch,
    centred), grey, bone bright, with a display window at ``percentiles`` of the image (as a
    reader sets it) and the orientation letters of :func:`film_markers` (``names`` as there).
    Returns the AxesImage.

    >>> import matplotlib.pyplot as plt
    >>> from bonelab.drr import pa
    >>> _, ax = plt.subplots()
    >>> im = show_film(ax, np.random.default_rng(0).random((8, 8)), pa(isocenter=(0, 0, 0), size=8, pixel=2.0))
    >>> im.get_extent()
    [-8.0, 8.0, 8.0, -8.0]
    """
    img = np.asarray(image, dtype=float)
    su, sv = geometry.pixel
    w, h = geometry.width * su, geometry.height * sv
    lo, hi = np.percentile(img, percentiles)
    im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=(-w / 2, w / 2, h / 2, -h / 2))
    film_markers(ax, geometry, names)
    ax.set(title=title, xlabel="detector u (mm)", ylabel="detector v (mm)")
    return im
