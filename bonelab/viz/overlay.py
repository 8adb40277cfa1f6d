"""2D images with masks on top: radiographs, DRRs and single CT slices, with a legend of names.

>>> import numpy as np
>>> ax = overlay(np.zeros((8, 8)), np.eye(8, dtype=int), label_names={1: "diagonal"})
>>> [t.get_text() for t in ax.get_legend().get_texts()]
['diagonal']
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.patches import Patch

from bonelab.errors import GeometryMismatchError, InvalidArgumentError
from bonelab.viz._inputs import _clim, _present
from bonelab.viz.colors import label_colors
from bonelab.volume import default_label_names


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
        names = default_label_names(values, label_names)
        return [mask == v for v in values], values, [names[v] for v in values]
    if mask.ndim != 3 or mask.shape[1:] != shape:
        raise GeometryMismatchError(
            f"mask must be a label map (H, W) or channels (C, H, W) matching the image {shape}; got {mask.shape}."
        )
    n = mask.shape[0]
    if label_names is None:
        values = list(range(1, n + 1))
        names = list(default_label_names(values).values())
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


__all__ = ["overlay"]
