"""An interactive slice viewer for notebooks (ipywidgets), drawn by matplotlib as a PNG so that it
works in any front end and headless.

Volumes are numpy ``(z, y, x)`` with their LPS geometry; windows in HU.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from matplotlib.figure import Figure

from bonelab.io.intensity import WINDOWS
from bonelab.viz._inputs import _as_labels, _as_volume, _clim, _to_lps
from bonelab.viz.colors import _add_legend, _legend_handles
from bonelab.viz.slices import VIEWS, _draw_slice, _View


class SliceViewer:
    """Holder of the widgets and the matplotlib figure behind :func:`slice_viewer` (built by it)."""

    def __init__(self, volume, labels=None, *, window="bone"):
        import ipywidgets as w

        vol = _as_volume(volume)
        self.volume, self.labels = _to_lps(vol, _as_labels(labels, vol))
        presets = list(WINDOWS)
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


__all__ = ["SliceViewer", "slice_viewer"]
