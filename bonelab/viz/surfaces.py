"""Bone in 3D: iso-surfaces (marching cubes) of a CT or of its labels, a shaded static rendering,
and an interactive itkwidgets view where a live notebook allows one.

Vertices are in LPS mm (x, y, z); volumes come in as numpy ``(z, y, x)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LightSource
from matplotlib.figure import Figure

from bonelab.errors import InvalidArgumentError
from bonelab.viz._inputs import _as_labels, _as_volume, _present
from bonelab.viz.colors import _add_legend, _legend_handles, label_colors
from bonelab.volume import Volume

_BONE_RGB = (0.93, 0.88, 0.76)  # ivory, for a threshold (unlabelled) bone surface


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
            surfaces.append(Surface(value, lab.label_names[value], verts, faces))
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
    except Exception:  # ImportError, or the pre-release failing at import time
        return "the interactive viewer needs itkwidgets: pip install 'bonelab[viz3d]' and run the notebook live"
    try:
        from IPython import get_ipython
    except ImportError:
        return "IPython is not installed"
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return "the interactive viewer needs a live Jupyter notebook"
    return None


def view3d(volume, *, labels=None, interactive=True, **kw):
    """An interactive itkwidgets 3D view in a live Jupyter notebook; everywhere else (scripts,
    the book build, itkwidgets missing or failing) the static :func:`render_bone_3d` figure,
    with a one-line message saying why.  ``kw`` goes to :func:`render_bone_3d`;
    ``interactive=False`` forces the static figure (use it in executed book cells).

    >>> import numpy as np
    >>> fig = view3d(np.where(np.indices((12, 12, 12)).sum(0) < 12, 500.0, -1000.0), step=1)  # doctest: +ELLIPSIS
    3D view: a static rendering (...)
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
    print(f"3D view: a static rendering ({reason})")
    return render_bone_3d(volume, labels=labels, **kw)


__all__ = ["Surface", "bone_surfaces", "render_bone_3d", "view3d"]
