"""Label colours (one per value, the same in every figure of the book) and legends.

>>> label_colors({1: "radius"})[1] == label_colors([1, 2])[1]
True
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch

from bonelab.errors import InvalidArgumentError
from bonelab.volume import default_label_names


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
    colours, names = label_colors(values), default_label_names(values, names)
    return [Patch(facecolor=colours[v], edgecolor="black", linewidth=0.3, label=names[v]) for v in sorted(values)]


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


__all__ = ["label_colors"]
