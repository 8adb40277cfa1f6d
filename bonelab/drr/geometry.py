"""X-ray geometry (cone beam, C-arm, CT localizer): where the source is, where the detector is,
and which way is up.

Everything is in the CT's physical space: LPS millimetres (x to the patient's Left, y to
Posterior, z to Superior), the same space as :class:`bonelab.Volume`.

A :class:`Geometry` is a point source and a flat detector of ``size = (width, height)`` pixels:

* ``source``: the focal spot (x, y, z) mm.
* ``detector_center``: the centre of the detector (x, y, z) mm.  For an even width the centre
  lies between two pixel columns.
* ``u``: unit vector along a detector row, the direction of increasing **column** index
  (image right).  ``v``: unit vector along a column, the direction of increasing **row** index
  (image down).
* ``pixel = (su, sv)``: pixel pitch in mm along ``u`` and ``v``.

Image convention (all views): the rendered image is an array ``image[row, col]``, shape
``(height, width)``; pixel ``(0, 0)`` is the top-left corner as ``matplotlib.imshow`` shows it;
its centre is at ``detector_center - (width-1)/2*su*u - (height-1)/2*sv*v``.  Rows go down.

Clinical views (:func:`pa`, :func:`ap`, :func:`lateral`, :func:`oblique`, :func:`carm`) follow
how radiologists hang films, so a DRR looks like the radiograph a reader expects:

* **PA** (posteroanterior): the beam enters the patient's back and leaves through the front:
  source behind the patient (posterior, +y), detector in front (anterior, -y); the beam travels
  -y.  This is the standard chest film (chest against the detector), and the geometry of a
  C-arm with its tube under the table.  Displayed as if facing the patient: the patient's left
  on the image right (``u = +x``), head at the top (``v = -z``, rows go toward the feet).
* **AP** (anteroposterior): source in front, detector behind; the beam travels +y.  Displayed
  the same way as PA (patient's left on the image right, head up), as AP films are hung.  AP
  magnifies anterior structures (heart, sternum) more than PA does.
* **Lateral**: ``lateral("left")`` is the standard left lateral: the patient's left side against
  the detector (detector at +x, source at the patient's right, beam travels +x), displayed as
  seen from the patient's left: anterior on the image left, posterior (the spine) on the image
  right (``u = +y``), head up.  ``lateral("right")`` mirrors it (detector at -x, anterior on
  the image right).
* **C-arm angles** (:func:`carm`, :func:`oblique`): start from PA and rotate the source-detector
  pair rigidly about the isocentre, in the angiographic convention.  ``angle`` turns it about
  the patient's long axis: positive is LAO (the detector moves toward the patient's left, the
  source toward the right), negative is RAO; ``angle=90`` is exactly ``lateral("left")``.
  ``tilt`` is the cranial/caudal angulation: positive (cranial) moves the detector toward the
  head and the source toward the feet.  ``oblique(45)`` is LAO 45.

CT localizers (:func:`localizer`, a :class:`SlotScan`): the scout, topogram or surview a CT
scanner takes before the scan.  The tube and one detector row stay still (the tube above the
table for an AP scout, at the side for a lateral) while the table moves the patient through the
gantry, one row per table increment.  Across the table the beam is a fan from one focal spot
(magnified by ``sdd / sid`` at the isocentre; a CT gantry's distances, about 570 and 1040 mm);
along the table each row is taken with the focal spot at that row, so the projection is
parallel there (no magnification; the row pitch is the table increment).  Views are displayed
like the films (AP/PA: patient's left on the image right, head up; lateral like
``lateral("left")``).  :meth:`SlotScan.rows` gives the one-row cone beams it is made of; the
renderer integrates all rows in one pass.

Distances: ``sid`` is the source-to-isocentre distance and ``sdd`` the source-to-detector
distance (mm); the defaults (820 and 1020 mm) are those of a table radiograph with the patient's
mid-plane 200 mm in front of the detector; magnification at the isocentre is ``sdd / sid``.

:meth:`Geometry.projection_matrix` gives the 3x4 matrix ``P`` with ``P @ [x, y, z, 1] ~ [c, r, 1]``
(column, row, in pixels, pixel centres at integers), exactly the model the renderer uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from bonelab.errors import InvalidArgumentError, ProjectionGeometryError

DEFAULT_SID_MM = 820.0
DEFAULT_SDD_MM = 1020.0
DEFAULT_SIZE = (256, 256)


def _fmt_mm(a) -> str:
    return "(" + ", ".join(f"{x:.1f}" for x in a) + ")"


def _fmt_unit(a) -> str:
    return "(" + ", ".join(f"{x:+.3f}" for x in a) + ")"


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")


def _np(x) -> np.ndarray:
    """A float64 numpy copy of an array or (possibly grad-carrying) torch tensor."""
    if _is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


@dataclass(eq=False)
class _Detector:
    """What :class:`Geometry` and :class:`SlotScan` share: a flat detector of ``size = (width,
    height)`` pixels of ``pixel = (su, sv)`` mm, centred at ``detector_center`` with directions
    ``u`` (columns) and ``v`` (rows), and a focal spot ``source`` (all LPS mm)."""

    source: object
    detector_center: object
    u: object
    v: object
    pixel: tuple = (1.0, 1.0)
    size: tuple = DEFAULT_SIZE

    def __post_init__(self):
        if not _is_tensor(self.source):
            self.source = np.asarray(self.source, dtype=float)
            self.detector_center = np.asarray(self.detector_center, dtype=float)
            self.u = np.asarray(self.u, dtype=float)
            self.v = np.asarray(self.v, dtype=float)
        if np.ndim(self.pixel) == 0:
            self.pixel = (self.pixel, self.pixel)
        if np.ndim(self.size) == 0:
            self.size = (self.size, self.size)
        self.pixel = tuple(float(p) for p in self.pixel)
        self.size = tuple(int(s) for s in self.size)
        self.validate()

    # --- checks --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ProjectionGeometryError` for a geometry that cannot be rendered."""
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ProjectionGeometryError(
                f"detector size must be two positive pixel counts (width, height); got {self.size}."
            )
        if len(self.pixel) != 2 or not min(self.pixel) > 0 or not all(map(math.isfinite, self.pixel)):
            raise ProjectionGeometryError(
                f"pixel spacing must be two positive mm values (su, sv); got {self.pixel}."
            )
        s, d, u, v = (_np(a) for a in (self.source, self.detector_center, self.u, self.v))
        for name, a in (("source", s), ("detector_center", d), ("u", u), ("v", v)):
            if a.shape != (3,) or not np.all(np.isfinite(a)):
                raise ProjectionGeometryError(
                    f"{type(self).__name__}.{name} must be 3 finite mm values (x, y, z); got {a}.")
        if abs(np.linalg.norm(u) - 1) > 1e-6 or abs(np.linalg.norm(v) - 1) > 1e-6 or abs(u @ v) > 1e-6:
            raise ProjectionGeometryError(
                f"detector directions u={u} and v={v} must be orthonormal unit vectors."
            )
        n = np.cross(u, v)
        if abs((d - s) @ n) < 1e-6:
            raise ProjectionGeometryError(
                "the source lies in the detector plane; move the source (sid/sdd) so that sdd > 0."
            )

    # --- derived quantities ----------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal ``u x v`` of the detector plane."""
        return np.cross(_np(self.u), _np(self.v))

    @property
    def sdd(self) -> float:
        """Perpendicular source-to-detector-plane distance (mm)."""
        return float(abs((_np(self.detector_center) - _np(self.source)) @ self.normal))

    def pixel00(self):
        """World position of the centre of pixel (row 0, column 0); same type as the fields."""
        w, h = self.size
        su, sv = self.pixel
        return self.detector_center - (w - 1) / 2 * su * self.u - (h - 1) / 2 * sv * self.v

    def extent(self) -> tuple:
        """``matplotlib.imshow`` extent ``(left, right, bottom, top)`` in mm on the detector,
        centred on the detector centre, row 0 at the top: ``imshow(image, extent=g.extent())``
        labels the axes in detector mm (u to the right, v down).

        >>> pa(size=(100, 50), pixel=2.0, isocenter=(0, 0, 0)).extent()
        (-100.0, 100.0, 50.0, -50.0)
        """
        half_w, half_h = self.width * self.pixel[0] / 2, self.height * self.pixel[1] / 2
        return (-half_w, half_w, half_h, -half_h)

    def magnification(self, points) -> np.ndarray:
        """Geometric magnification ``sdd / d`` of world points (N, 3) or (3,) LPS mm, ``d`` their
        distance from the source along the detector normal: how much larger than life a
        structure there appears on the detector (for a :class:`SlotScan`: across the fan only;
        along the table there is none).

        >>> g = pa(isocenter=(0, 0, 0))   # sid 820, sdd 1020 mm
        >>> round(float(g.magnification([0, 0, 0])), 4), round(float(g.magnification([0, -100, 0])), 4)
        (1.2439, 1.1087)
        """
        depth = np.abs((np.asarray(points, dtype=float) - _np(self.source)) @ self.normal)
        return self.sdd / depth

    def edge_letters(self, names=None) -> tuple:
        """The patient directions at the image's (left, right, top, bottom) edges: those of
        ``-u``, ``+u``, ``-v``, ``+v`` as :func:`direction_letter` names them (``names`` as
        there).  :func:`bonelab.viz.film_markers` writes them on a film.

        >>> pa(isocenter=(0, 0, 0)).edge_letters()
        ('R', 'L', 'H', 'F')
        """
        u, v = _np(self.u), _np(self.v)
        return tuple(direction_letter(vec, names) for vec in (-u, u, -v, v))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + self.describe().replace("\n", "; ") + ")"


@dataclass(eq=False)
class Geometry(_Detector):
    """One point source and one flat detector in LPS mm (see the module docstring).

    Parameters
    ----------
    source, detector_center : (3,) mm, LPS (numpy, or torch tensors for gradients to the pose)
    u, v : (3,) unit vectors of increasing column and row index
    pixel : (su, sv) mm
    size : (width, height) pixels

    Examples
    --------
    >>> g = Geometry(source=[0, -820, 0], detector_center=[0, 200, 0], u=[1, 0, 0], v=[0, 0, -1],
    ...              pixel=(1.0, 1.0), size=(5, 3))
    >>> g.project([[0, 0, 0]]).round(3)   # the isocentre lands on the detector centre
    array([[2., 1.]])
    """

    def check_outside(self, volume) -> None:
        """Raise :class:`ProjectionGeometryError` if the source is inside ``volume``'s box."""
        ijk = volume.world_to_index(_np(self.source))
        if np.all(ijk > -0.5) and np.all(ijk < np.asarray(volume.size) - 0.5):
            raise ProjectionGeometryError(
                f"the X-ray source {np.round(_np(self.source), 1)} mm is inside the CT volume "
                f"({volume.geometry_str()}); increase sid so that the source is outside the volume."
            )

    def projection_matrix(self) -> np.ndarray:
        """3x4 matrix ``P``: ``P @ [x, y, z, 1] = w * [col, row, 1]`` for a world point (LPS mm).

        >>> g = pa(size=(100, 100), pixel=2.0, isocenter=(0, 0, 0))
        >>> P = g.projection_matrix(); h = P @ [0, 0, 0, 1]
        >>> (h[:2] / h[2]).round(6).tolist()
        [49.5, 49.5]
        """
        s, u, v = _np(self.source), _np(self.u), _np(self.v)
        d0 = _np(self.pixel00())
        n = np.cross(u, v)
        h = (d0 - s) @ n
        su, sv = self.pixel
        m = np.stack([((s - d0) @ u * n + h * u) / su, ((s - d0) @ v * n + h * v) / sv, n])
        return np.concatenate([m, -(m @ s)[:, None]], axis=1)

    def project(self, points) -> np.ndarray:
        """World points (N, 3) LPS mm -> pixel coordinates (N, 2) as (column, row)."""
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        h = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ self.projection_matrix().T
        return h[:, :2] / h[:, 2:3]

    def transformed(self, rotation_deg, translation_mm, center=None) -> Geometry:
        """Move the source and detector rigidly: rotate by the rotation vector ``rotation_deg``
        (axis times angle in degrees, LPS) about ``center`` (mm; default the world origin, pass
        ``volume.center`` to turn about the CT's centre), then translate by ``translation_mm``.

        Torch tensors in, torch tensors out: gradients flow from a rendered image back to
        ``rotation_deg`` and ``translation_mm`` (pose estimation, 2D/3D registration).

        >>> import torch
        >>> g = pa(isocenter=(0, 0, 0)).transformed(torch.zeros(3), torch.tensor([1.0, 0, 0]))
        >>> g.source.tolist()
        [1.0, 820.0, 0.0]
        """
        import torch

        rot = torch.as_tensor(rotation_deg, dtype=torch.float64)
        trans = torch.as_tensor(translation_mm, dtype=rot.dtype, device=rot.device)
        c = torch.as_tensor(np.zeros(3) if center is None else np.asarray(center, float), dtype=rot.dtype)
        r = _rotation_matrix_torch(rot * (math.pi / 180.0))

        def move(p):
            return r @ (torch.as_tensor(p, dtype=rot.dtype) - c) + c + trans

        def turn(a):
            return r @ torch.as_tensor(a, dtype=rot.dtype)

        return replace(
            self, source=move(self.source), detector_center=move(self.detector_center),
            u=turn(self.u), v=turn(self.v),
        )

    def describe(self) -> str:
        """Multi-line human-readable summary (what ``bonelab drr`` prints)."""
        s, d = _np(self.source), _np(self.detector_center)
        return (
            f"source {_fmt_mm(s)} mm LPS\n"
            f"detector centre {_fmt_mm(d)} mm LPS, SDD {self.sdd:.1f} mm\n"
            f"detector {self.width} x {self.height} px (width x height), pixel "
            f"{self.pixel[0]:.3f} x {self.pixel[1]:.3f} mm\n"
            f"u (columns, image right) {_fmt_unit(_np(self.u))}, v (rows, image down) {_fmt_unit(_np(self.v))}"
        )


@dataclass(eq=False)
class SlotScan(_Detector):
    """A CT localizer (scout, topogram, surview): a slot scan, in LPS mm (see the module docstring).

    The tube and one detector row stay still while the table moves the patient through the
    gantry: image row ``r`` is taken with the focal spot at ``source + (r - (height-1)/2) * sv * v``
    and the detector row through ``detector_center`` moved by the same amount.  Across the table
    (along ``u``) the beam is a fan from that focal spot (magnified by ``sdd / depth``); along the
    table (``v``) every row has its own focal spot, so the projection is parallel (no
    magnification; the row pitch is the table increment).  The detector row is flat; a real CT
    row is an arc about the focal spot, which changes only where the fan is sampled across the
    row (the column of each ray), not what each ray integrates.

    Parameters
    ----------
    source, detector_center : (3,) mm, LPS: the focal spot and the detector-row centre of the
        central row (between two rows for an even height)
    u : (3,) unit vector along the detector row (increasing column index, image right)
    v : (3,) unit vector of the table motion per row (increasing row index, image down);
        perpendicular to ``u`` and to the central ray ``detector_center - source``
    pixel : (su, sv): ``su`` the detector pitch across the fan (mm at the detector), ``sv`` the
        table increment per row (mm)
    size : (width, height): detector channels across, table positions (rows)

    Notes
    -----
    What a :class:`Geometry` offers that a slot scan has too: :meth:`project`,
    :meth:`check_outside`, ``sdd``, :meth:`pixel00`, :meth:`extent`, :meth:`magnification`
    (across the fan), :meth:`edge_letters`, :meth:`describe`; :meth:`rows` gives the one-row
    cone-beam geometries whose stacked renders are the image.  A single
    :meth:`projection_matrix` does not exist (the focal spot moves), nor does the differentiable
    :meth:`transformed`; move a scan with :meth:`translated`.  numpy only (no torch poses).

    >>> s = localizer(isocenter=(0, 0, 0), size=(5, 3), pixel=2.0, table_mm=1.0)
    >>> s.project([[0, 0, 0], [0, 0, -1]]).round(3).tolist()   # 1 mm toward the feet: one row down
    [[2.0, 1.0], [2.0, 2.0]]
    >>> [(g.size, g.source.round(1).tolist()) for g in s.rows()][0]
    ((5, 1), [0.0, -570.0, 1.0])
    """

    def __post_init__(self):
        for name in ("source", "detector_center", "u", "v"):
            setattr(self, name, _np(getattr(self, name)))
        super().__post_init__()

    def validate(self) -> None:
        """Raise :class:`ProjectionGeometryError` for a slot scan that cannot be rendered."""
        super().validate()
        ray = self.detector_center - self.source
        if abs(ray @ self.v) > 1e-6 * np.linalg.norm(ray):
            raise ProjectionGeometryError(
                f"a slot scan's table direction v={self.v} must be perpendicular to its central ray "
                f"(source -> detector centre, {np.round(ray, 3)}); move the scan along the table with "
                "SlotScan.translated (source and detector together), not the detector alone."
            )

    def check_outside(self, volume) -> None:
        """Raise :class:`ProjectionGeometryError` if the focal spot passes through ``volume``'s box
        at any table position (the segment from the first row's source to the last row's)."""
        first, last = (volume.world_to_index(self.row_source(r)) for r in (0, self.height - 1))
        lo, hi = -0.5 * np.ones(3), np.asarray(volume.size, float) - 0.5
        step = last - first
        t0, t1 = 0.0, 1.0
        for a in range(3):
            if abs(step[a]) < 1e-12:
                if not lo[a] < first[a] < hi[a]:
                    return
                continue
            ta, tb = sorted(((lo[a] - first[a]) / step[a], (hi[a] - first[a]) / step[a]))
            t0, t1 = max(t0, ta), min(t1, tb)
        if t1 > t0:
            raise ProjectionGeometryError(
                f"the X-ray source passes through the CT volume ({volume.geometry_str()}) during the "
                f"slot scan (its focal spot moves from {np.round(self.row_source(0), 1)} to "
                f"{np.round(self.row_source(self.height - 1), 1)} mm); increase sid so that the "
                "source is outside the volume."
            )

    def row_source(self, row) -> np.ndarray:
        """The focal spot (x, y, z) mm LPS when image row ``row`` is taken (row 0 at the top)."""
        return self.source + (row - (self.height - 1) / 2) * self.pixel[1] * self.v

    @property
    def source_step(self) -> np.ndarray:
        """How far the focal spot moves per row (x, y, z) mm: ``sv * v``."""
        return self.pixel[1] * self.v

    def central_row(self) -> Geometry:
        """The one-row cone beam through ``source`` and ``detector_center`` (row ``(height-1)/2``)."""
        return Geometry(self.source, self.detector_center, self.u, self.v, self.pixel, (self.width, 1))

    def rows(self) -> list:
        """The one-row cone-beam :class:`Geometry` of each table position, top row first: size
        ``(width, 1)``; rendering them and stacking the rows gives the localizer image."""
        g = self.central_row()
        return [replace(g, source=g.source + off, detector_center=g.detector_center + off)
                for off in ((r - (self.height - 1) / 2) * self.source_step for r in range(self.height))]

    def project(self, points) -> np.ndarray:
        """World points (N, 3) LPS mm -> pixel coordinates (N, 2) as (column, row): the row of the
        table position whose fan contains the point, the column where that fan's ray through it
        meets the detector row (the renderer's model)."""
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        along = (pts - self.source) @ self.v  # mm along the table from the central row
        cols = self.central_row().project(pts - along[:, None] * self.v)[:, 0]
        return np.stack([cols, (self.height - 1) / 2 + along / self.pixel[1]], axis=1)

    def translated(self, offset_mm) -> SlotScan:
        """The same scan with source and detector moved by ``offset_mm`` (x, y, z) mm: the patient
        lying ``-offset_mm`` away (sideways on the table, or another scan range along it).

        >>> localizer(isocenter=(0, 0, 0)).translated([0, 0, 10]).source.tolist()
        [0.0, -570.0, 10.0]
        """
        off = _np(offset_mm)
        return replace(self, source=self.source + off, detector_center=self.detector_center + off)

    def projection_matrix(self):
        raise InvalidArgumentError(
            "a slot scan (CT localizer) has no single projection matrix: its focal spot moves with "
            "the table, so the rays of different rows meet in no common point; use SlotScan.project "
            "(world -> pixel), or rows()[r].projection_matrix() for the matrix of row r."
        )

    def transformed(self, *args, **kwargs):
        raise InvalidArgumentError(
            "SlotScan.transformed does not exist (no differentiable pose for a slot scan); move it "
            "with SlotScan.translated, or transform its rows() (one-row Geometry objects)."
        )

    def describe(self) -> str:
        """Multi-line human-readable summary."""
        s, d = self.source, self.detector_center
        return (
            f"slot scan (CT localizer), central row: source {_fmt_mm(s)} mm LPS\n"
            f"detector-row centre {_fmt_mm(d)} mm LPS, SDD {self.sdd:.1f} mm\n"
            f"{self.width} channels of {self.pixel[0]:.3f} mm x {self.height} rows, table increment "
            f"{self.pixel[1]:.3f} mm\n"
            f"u (columns, image right) {_fmt_unit(self.u)}, v (rows, table motion, image down) {_fmt_unit(self.v)}"
        )


#: Names of the patient directions along the LPS axes: ``{(axis, sign): letter}``, axis 0 = x,
#: 1 = y, 2 = z; H(ead) and F(eet) along z, as radiographs are marked.
PATIENT_DIRECTIONS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "H", (2, -1): "F"}


def direction_letter(vector, names=None) -> str:
    """The name of the patient direction closest to a world ``vector`` (x, y, z) LPS: the axis of
    its largest component and that component's sign, looked up in ``names`` (default
    :data:`PATIENT_DIRECTIONS`; pass e.g. ``{(0, 1): "ulnar", (0, -1): "radial", ...}`` for an
    anatomical frame such as a hand's).

    >>> direction_letter([0.1, -0.9, 0.2]), direction_letter([0, 0, -1])
    ('A', 'F')
    """
    vec = _np(vector).ravel()
    if vec.shape != (3,) or not np.any(vec):
        raise InvalidArgumentError(f"direction_letter needs a non-zero (x, y, z) vector; got {vec}.")
    axis = int(np.argmax(np.abs(vec)))
    table = PATIENT_DIRECTIONS if names is None else names
    key = (axis, int(np.sign(vec[axis])))
    if key not in table:
        raise InvalidArgumentError(f"names has no entry for (axis, sign) = {key}; give all six directions.")
    return table[key]


def _rotation_matrix_torch(rotvec):
    """Rodrigues' formula, differentiable also at zero angle (float64 torch)."""
    import torch

    theta2 = (rotvec * rotvec).sum()
    k = torch.zeros(3, 3, dtype=rotvec.dtype, device=rotvec.device)
    k = k.index_put((torch.tensor([2, 1, 0, 2, 1, 0]), torch.tensor([1, 2, 2, 0, 0, 1])),
                    torch.stack([rotvec[0], -rotvec[0], rotvec[1], -rotvec[1], rotvec[2], -rotvec[2]]))
    small = theta2 < 1e-12
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta**2)
    return torch.eye(3, dtype=rotvec.dtype, device=rotvec.device) + a * k + b * (k @ k)


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # about z


def _isocenter(volume, isocenter) -> np.ndarray:
    if isocenter is not None:
        return np.asarray(isocenter, dtype=float)
    if volume is None:
        raise InvalidArgumentError("give a volume (to centre the view on it) or an isocenter=(x, y, z) in mm.")
    return volume.center


def _check_distances(sid, sdd) -> None:
    if not (sid > 0 and sdd > sid):
        raise ProjectionGeometryError(
            f"need 0 < sid < sdd (source-to-isocentre, source-to-detector, mm); got sid={sid}, sdd={sdd}."
        )


def _view(beam, u, v, volume, isocenter, sid, sdd, size, pixel) -> Geometry:
    """A geometry whose central ray travels along ``beam`` through the isocentre."""
    _check_distances(sid, sdd)
    iso = _isocenter(volume, isocenter)
    beam = np.asarray(beam, float) / np.linalg.norm(beam)
    src, det = iso - sid * beam, iso + (sdd - sid) * beam
    if np.ndim(size) == 0:
        size = (int(size), int(size))
    if pixel is None:
        pixel = _covering_scale(Geometry(src, det, np.asarray(u, float), np.asarray(v, float), (1.0, 1.0), size), volume)
    g = Geometry(src, det, u, v, pixel, size)
    if volume is not None:
        g.check_outside(volume)
    return g


def _covering_scale(probe, volume) -> float:
    """The factor by which to scale ``probe``'s pixels (a view whose pixels are 1 mm at the scale
    that is to be found) so that its detector covers the volume's projection with a 5% margin; a
    400 mm field of view without a volume.  The one sizing rule of :func:`carm` and :func:`localizer`."""
    size = np.asarray(probe.size)
    if volume is None:
        return 400.0 / max(probe.size)
    probe.check_outside(volume)
    off = probe.project(volume.corners()) - (size - 1) / 2
    return float(1.05 * 2 * np.max(np.abs(off) / size))


def carm(volume=None, angle: float = 0.0, tilt: float = 0.0, *, isocenter=None, sid=DEFAULT_SID_MM,
         sdd=DEFAULT_SDD_MM, size=DEFAULT_SIZE, pixel=None) -> Geometry:
    """A PA view rotated by ``angle`` degrees about the patient's long axis (positive: LAO, the
    detector toward the patient's left) and tilted by ``tilt`` degrees (positive: cranial, the
    detector toward the head); see the module docstring.

    Parameters
    ----------
    volume : Volume or None. Centres the view (default isocentre) and sizes the default pixel.
    angle, tilt : degrees
    isocenter : (x, y, z) mm LPS, default the volume centre
    sid, sdd : source-to-isocentre and source-to-detector distances, mm
    size : int or (width, height) pixels
    pixel : mm, default such that the detector covers the whole volume

    Examples
    --------
    >>> g = carm(angle=90, isocenter=(0, 0, 0))
    >>> (g.source.round(3) + 0.0).tolist()   # the source is at the patient's right (-x)
    [-820.0, 0.0, 0.0]
    """
    r = _rot("z", angle) @ _rot("x", -tilt)
    return _view(r @ [0, -1, 0], r @ [1, 0, 0], r @ [0, 0, -1], volume, isocenter, sid, sdd, size, pixel)


def pa(volume=None, **kwargs) -> Geometry:
    """Posteroanterior view: source posterior, detector anterior (the beam enters the back),
    patient's left on the image right, head up.

    >>> pa(isocenter=(0, 0, 0)).source.tolist()
    [0.0, 820.0, 0.0]
    """
    return carm(volume, 0.0, 0.0, **kwargs)


def ap(volume=None, *, isocenter=None, sid=DEFAULT_SID_MM, sdd=DEFAULT_SDD_MM, size=DEFAULT_SIZE,
       pixel=None) -> Geometry:
    """Anteroposterior view: source anterior, detector posterior; displayed like a PA film
    (patient's left on the image right, head up).

    >>> ap(isocenter=(0, 0, 0)).source.tolist()
    [0.0, -820.0, 0.0]
    """
    return _view([0, 1, 0], [1, 0, 0], [0, 0, -1], volume, isocenter, sid, sdd, size, pixel)


def lateral(volume=None, side: str = "left", *, isocenter=None, sid=DEFAULT_SID_MM, sdd=DEFAULT_SDD_MM,
            size=DEFAULT_SIZE, pixel=None) -> Geometry:
    """Lateral view with the patient's ``side`` ("left" or "right") against the detector,
    displayed as seen from that side (left lateral: anterior on the image left).

    >>> lateral(isocenter=(0, 0, 0)).source.tolist()
    [-820.0, 0.0, 0.0]
    """
    if side not in ("left", "right"):
        raise InvalidArgumentError(f"lateral side must be 'left' or 'right'; got {side!r}.")
    sign = 1.0 if side == "left" else -1.0
    return _view([sign, 0, 0], [0, sign, 0], [0, 0, -1], volume, isocenter, sid, sdd, size, pixel)


def oblique(volume=None, angle: float = 45.0, tilt: float = 0.0, **kwargs) -> Geometry:
    """An oblique view: :func:`carm` at ``angle`` degrees (default 45) and ``tilt``."""
    return carm(volume, angle, tilt, **kwargs)


def view(name: str, volume=None, *, angle: float = 0.0, tilt: float = 0.0, **kwargs) -> Geometry:
    """A view by name: ``pa``, ``ap``, ``lateral-left``, ``lateral-right``, ``oblique`` or ``carm``
    (``angle``/``tilt`` apply to ``oblique``/``carm``; for ``pa`` they rotate it like :func:`carm`).

    >>> view("lateral-right", isocenter=(0, 0, 0)).source.tolist()
    [820.0, 0.0, 0.0]
    """
    name = name.lower().replace("_", "-")
    if name in ("pa", "carm"):
        return carm(volume, angle, tilt, **kwargs)
    if name == "oblique":
        return oblique(volume, angle if angle else 45.0, tilt, **kwargs)
    if name in ("ap", "lateral-left", "lateral-right", "lateral"):
        if angle or tilt:
            raise InvalidArgumentError(f"angle/tilt apply to the pa, oblique and carm views, not {name!r}.")
        return ap(volume, **kwargs) if name == "ap" else lateral(volume, name.split("-")[-1]
                                                                 if "-" in name else "left", **kwargs)
    raise InvalidArgumentError(
        f"unknown view {name!r}; use one of pa, ap, lateral-left, lateral-right, oblique, carm."
    )


#: CT gantry distances of a localizer (mm): focal spot to isocentre and to the detector row, as on
#: typical multi-slice scanners (about 570 and 1040 mm).
LOCALIZER_SID_MM = 570.0
LOCALIZER_SDD_MM = 1040.0

# beam direction, u (image right) and v (rows, image down) of each localizer view
_LOCALIZER_VIEWS = {
    "ap": ([0, 1, 0], [1, 0, 0], [0, 0, -1]),  # tube anterior (above a supine patient)
    "pa": ([0, -1, 0], [1, 0, 0], [0, 0, -1]),  # tube posterior (under the table)
    "lateral": ([1, 0, 0], [0, 1, 0], [0, 0, -1]),  # tube at the patient's right, as lateral("left")
}


def localizer(volume=None, view: str = "ap", *, isocenter=None, sid=LOCALIZER_SID_MM, sdd=LOCALIZER_SDD_MM,
              size=DEFAULT_SIZE, pixel=None, table_mm=None, angle: float = 0.0) -> SlotScan:
    """A CT localizer (scout, topogram, surview) of ``volume``: a :class:`SlotScan`.

    Views, displayed like the films of :func:`ap`, :func:`pa` and :func:`lateral`: ``"ap"``
    (tube anterior, above a supine patient; the beam travels +y), ``"pa"`` (tube posterior; -y),
    both with the patient's left on the image right, and ``"lateral"`` (beam +x, detector at the
    patient's left; anterior on the image left).  Head at the top: rows go toward the feet
    (``v = -z``), the table moving the patient one ``table_mm`` per row.

    Parameters
    ----------
    volume : Volume or None. Centres the scan (default isocentre) and sizes the default pixel.
    view : "ap", "pa" or "lateral"
    isocenter : (x, y, z) mm LPS, default the volume centre
    sid, sdd : focal spot to isocentre and to the detector row, mm (a CT gantry's, default
        :data:`LOCALIZER_SID_MM` and :data:`LOCALIZER_SDD_MM`)
    size : int or (width, height): detector channels across the fan, rows (table positions)
    pixel : detector pitch across the fan, mm at the detector; default such that the fan covers
        the volume (5% margin), or ``table_mm * sdd / sid``
    table_mm : table increment per row, mm; default ``pixel * sid / sdd`` (square pixels at the
        isocentre), or such that the rows cover the volume
    angle : degrees the tube and detector are turned about the table axis (z, through the
        isocentre) in the sense of :func:`carm`'s angle (x toward y): how a patient lying rotated
        by ``-angle`` is seen

    Notes
    -----
    Without a volume and without ``pixel`` and ``table_mm`` the field is 400 mm at the isocentre.

    >>> s = localizer(isocenter=(0, 0, 0), size=(512, 300))
    >>> s.source.tolist(), round(s.pixel[0] / s.pixel[1], 4)   # square at the isocentre: sdd / sid
    ([0.0, -570.0, 0.0], 1.8246)
    """
    if view not in _LOCALIZER_VIEWS:
        raise InvalidArgumentError(f"unknown localizer view {view!r}; use one of {sorted(_LOCALIZER_VIEWS)}.")
    _check_distances(sid, sdd)
    if np.ndim(size) == 0:
        size = (int(size), int(size))
    for name, value in (("pixel", pixel), ("table_mm", table_mm)):
        if value is not None and not (np.ndim(value) == 0 and float(value) > 0 and math.isfinite(float(value))):
            raise ProjectionGeometryError(
                f"{name} ({'the detector pitch across the fan' if name == 'pixel' else 'the table increment per row'}"
                f", mm) must be one positive number; got {value!r}."
            )
    iso = _isocenter(volume, isocenter)
    r = _rot("z", angle)
    beam, u, v = (r @ np.asarray(a, float) for a in _LOCALIZER_VIEWS[view])
    mag = sdd / sid
    if pixel is None and table_mm is None:
        # a probe scan 1 mm at the isocentre both ways (sdd / sid at the detector across the fan)
        at_iso = _covering_scale(SlotScan(iso - sid * beam, iso + (sdd - sid) * beam, u, v, (mag, 1.0), size), volume)
        pixel, table_mm = at_iso * mag, at_iso
    elif pixel is None:
        pixel = float(table_mm) * mag
    elif table_mm is None:
        table_mm = float(pixel) / mag
    scan = SlotScan(iso - sid * beam, iso + (sdd - sid) * beam, u, v, (float(pixel), float(table_mm)), size)
    if volume is not None:
        scan.check_outside(volume)
    return scan


def is_view(geometry) -> bool:
    """Whether ``geometry`` is one view (a :class:`Geometry` or a :class:`SlotScan`), not a list."""
    return isinstance(geometry, (Geometry, SlotScan))


def as_list(geometry) -> list:
    """A view (:class:`Geometry` or :class:`SlotScan`) or a sequence of them -> a non-empty list
    sharing one detector size."""
    geoms = [geometry] if is_view(geometry) else list(geometry)
    if not geoms or not all(is_view(g) for g in geoms):
        raise InvalidArgumentError("geometry must be a bonelab.drr.Geometry or SlotScan, or a non-empty list of them.")
    if len({g.size for g in geoms}) != 1:
        raise ProjectionGeometryError(
            f"a batch of geometries must share one detector size; got {sorted({g.size for g in geoms})}."
        )
    return geoms
