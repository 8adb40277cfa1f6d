"""Figures and viewers for CT volumes, label maps and radiographs (matplotlib + ipywidgets).

Orientation convention (the radiological one, used by every function here; see
:mod:`bonelab.viz.slices`): axial slices seen from the feet, coronal from the front, sagittal
from the patient's left, with R/L, A/P, S/I letters at the edges and axes in LPS mm.  Arrays
follow SimpleITK: numpy ``(z, y, x)``; geometry ``(x, y, z)`` in LPS mm.

* :mod:`~bonelab.viz.slices`: :func:`show_slices`, :func:`montage`, :func:`mip`;
* :mod:`~bonelab.viz.overlay`: :func:`overlay` (masks on a radiograph or a slice);
* :mod:`~bonelab.viz.projection`: :func:`film_markers` (orientation letters from a DRR's
  geometry), :func:`draw_geometry` / :func:`geometry_figure` (source, detector and rays over the CT);
* :mod:`~bonelab.viz.histogram`: :func:`hu_histogram`;
* :mod:`~bonelab.viz.surfaces`: :func:`bone_surfaces`, :func:`render_bone_3d`, :func:`view3d`;
* :mod:`~bonelab.viz.widgets`: :func:`slice_viewer`;
* :mod:`~bonelab.viz.colors`: :func:`label_colors`;
* :mod:`~bonelab.viz.figures`: :func:`orientation_markers`, :func:`save_figure`.

Figure functions create figures through pyplot, so in a notebook write ``fig = show_slices(ct)``
(or end the line with ``;``) to see each figure once.

>>> from bonelab import viz
>>> sorted(viz.VIEWS)
['axial', 'coronal', 'sagittal']
"""

from bonelab.viz.colors import label_colors
from bonelab.viz.figures import bland_altman, orientation_markers, save_figure
from bonelab.viz.histogram import hu_histogram
from bonelab.viz.overlay import overlay
from bonelab.viz.projection import draw_geometry, film_markers, geometry_figure, show_film
from bonelab.viz.slices import VIEWS, mip, montage, show_slices
from bonelab.viz.surfaces import Surface, bone_surfaces, render_bone_3d, view3d
from bonelab.viz.widgets import SliceViewer, slice_viewer

__all__ = [
    "bland_altman",
    "VIEWS",
    "SliceViewer",
    "Surface",
    "bone_surfaces",
    "draw_geometry",
    "film_markers",
    "show_film",
    "geometry_figure",
    "hu_histogram",
    "label_colors",
    "mip",
    "montage",
    "orientation_markers",
    "overlay",
    "render_bone_3d",
    "save_figure",
    "show_slices",
    "slice_viewer",
    "view3d",
]
