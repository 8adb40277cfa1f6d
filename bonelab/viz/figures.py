"""Figure helpers used by every chapter: orientation letters at the image edges, saving figures.

>>> import matplotlib.pyplot as plt
>>> fig, ax = plt.subplots()
>>> texts = orientation_markers(ax, left="R", right="L", top="H", bottom="F")
>>> [t.get_text() for t in texts]
['R', 'L', 'H', 'F']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonelab.files import atomic_path

# Where the letters sit, in axes fractions, with their alignment: at the middle of each edge.
_EDGES = {
    "left": dict(x=0.02, y=0.5, ha="left", va="center"),
    "right": dict(x=0.98, y=0.5, ha="right", va="center"),
    "top": dict(x=0.5, y=0.98, ha="center", va="top"),
    "bottom": dict(x=0.5, y=0.02, ha="center", va="bottom"),
}


def orientation_markers(ax, left=None, right=None, top=None, bottom=None, *, color="yellow", fontsize=11) -> list:
    """Write orientation letters (e.g. ``R``/``L``, ``A``/``P``, ``H``/``F``, or words such as
    "radial"/"ulnar") at the middle of the four edges of ``ax``, inside the image, in bold; an
    edge given None gets no letter.  Returns the matplotlib Text objects.

    Every film and slice of the book carries them: :func:`show_slices` and its kin from the
    volume's geometry, :func:`film_markers` from a DRR's :class:`bonelab.drr.Geometry`.

    >>> import matplotlib.pyplot as plt
    >>> _, ax = plt.subplots()
    >>> [t.get_position() for t in orientation_markers(ax, left="A", right="P")]
    [(0.02, 0.5), (0.98, 0.5)]
    """
    texts = []
    for edge, letter in (("left", left), ("right", right), ("top", top), ("bottom", bottom)):
        if letter is None:
            continue
        place = _EDGES[edge]
        texts.append(ax.text(place["x"], place["y"], str(letter), transform=ax.transAxes, color=color,
                             fontsize=fontsize, fontweight="bold", ha=place["ha"], va=place["va"]))
    return texts


def save_figure(fig, path, *, dpi=150) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg) atomically
    (:func:`bonelab.files.atomic_path`), creating the folder; returns the path.

    >>> import matplotlib.pyplot as plt, tempfile, pathlib
    >>> p = save_figure(plt.figure(), pathlib.Path(tempfile.mkdtemp()) / "figs" / "empty.png")
    >>> p.stat().st_size > 0
    True
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


__all__ = ["orientation_markers", "save_figure"]


def bland_altman(ax, measured, reference, *, units: str = "", what: str = "value"):
    """A Bland-Altman plot on ``ax``: per case the difference ``measured - reference`` against
    their mean, with the mean difference (bias) and the 95 % limits of agreement (bias ± 1.96 SD
    of the differences) as lines.  Returns ``(bias, sd)`` of the differences, in ``units``.

    >>> import matplotlib.pyplot as plt
    >>> _, ax = plt.subplots()
    >>> bland_altman(ax, [1.0, 2.0, 3.0], [1.0, 2.0, 2.0])[0] > 0
    True
    """
    from bonelab.errors import InvalidArgumentError

    m, r = np.asarray(measured, float), np.asarray(reference, float)
    if m.shape != r.shape or m.ndim != 1 or m.size < 2:
        raise InvalidArgumentError(f"bland_altman needs two 1D sequences of one length >= 2; got {m.shape}, {r.shape}.")
    diff, mean = m - r, (m + r) / 2
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    ax.scatter(mean, diff, s=22, color="tab:blue", zorder=3)
    unit = f" ({units})" if units else ""
    ax.axhline(bias, color="k", lw=1, label=f"bias {bias:+.3g}{unit}")
    for sign in (-1, 1):
        ax.axhline(bias + sign * 1.96 * sd, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel(f"mean of measured and reference {what}{unit}")
    ax.set_ylabel(f"measured - reference{unit}")
    ax.legend(loc="best", fontsize=8, title=f"limits of agreement (dashed): bias ± {1.96 * sd:.3g}{unit}",
              title_fontsize=8)
    return bias, sd
