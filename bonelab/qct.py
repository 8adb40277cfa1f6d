"""Quantitative CT of the hip: calibration, bone mineral density, and finding the hip in a scan.

QCT turns HU into bone mineral density with a calibration phantom scanned with the patient
(*synchronous* calibration): rods of known K2HPO4 (or hydroxyapatite) concentration lie under the
patient, their mean HU are fitted against their concentrations with a line, and the line turns
every voxel into mg/cm3.  *Asynchronous* calibration scans the phantom on another occasion (once
a day, or once per scanner) and relies on the scanner staying stable in between.  Either way the
concentrations come from the phantom's certificate: two phantoms of one model differ.

Functions (volumes are :class:`bonelab.Volume`, arrays ``(z, y, x)``, positions ``(x, y, z)`` in
LPS mm, axis-aligned grids):

* :func:`rod_hu`, :func:`fit_calibration`, :func:`calibrate`: the calibration line;
* :func:`hu_to_bmd_mg_cm3`: HU -> mg/cm3 with that line;
* :func:`find_femoral_heads`, :func:`hip_roi`, :func:`crop_mm`: the region of interest around one
  hip, found from the image alone;
* :func:`measure_femur_axes`, :func:`neck_shaft_angle_deg`: a femur's head, neck and shaft axes
  measured from its mask (a reader's scan has no phantom parameters);
* :func:`femur_regions`, :func:`vbmd_mg_cm3`, :func:`areal_bmd_g_cm2`: volumetric BMD of the
  total proximal femur, neck and trochanter (integral and trabecular), and a CTXA-like areal BMD.

>>> from bonelab.phantoms.hip import hip
>>> s = hip(0, spacing=3.0)
>>> cal = calibrate(s.ct, s.params["calibration"])
>>> round(cal.slope_hu_per_mg_cm3, 2), round(s.params["calibration"]["slope_hu_per_mg_cm3"], 2)
(1.17, 1.17)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonelab.errors import GeometryMismatchError, InvalidArgumentError, InvalidValuesError, NotCTError
from bonelab.volume import Volume

#: The least sphere score (votes at the centre over the body's mean vote) that :func:`find_femoral_heads`
#: takes for a femoral head: hip phantoms score 180-270 (6 seeds, at 1.25 mm and as 0.65 mm QCT), the
#: humeral heads of the chest CT of :func:`bonelab.data.example_ct` about 50.
HEAD_SCORE_MIN = 100.0



@dataclass(frozen=True)
class Calibration:
    """A QCT calibration line ``HU = intercept_hu + slope_hu_per_mg_cm3 * density`` (mg/cm3 of the
    rods' material, e.g. K2HPO4), with its fit quality.

    >>> float(Calibration(2.0, 1.25, 1.0, 5).bmd_mg_cm3(127.0))
    100.0
    """

    intercept_hu: float
    slope_hu_per_mg_cm3: float
    r2: float
    n_rods: int

    def bmd_mg_cm3(self, hu):
        """Density (mg/cm3) of HU values (scalar or array)."""
        return (np.asarray(hu, dtype=np.float64) - self.intercept_hu) / self.slope_hu_per_mg_cm3


def _lps(ct: Volume, who: str) -> Volume:
    if not isinstance(ct, Volume):
        raise InvalidArgumentError(f"{who} needs a bonelab.Volume (read one with bonelab.io.read_ct); "
                                   f"got {type(ct).__name__}.")
    if not np.allclose(ct.direction, np.eye(3)):
        from bonelab.io import reorient

        ct = reorient(ct, "LPS")
        if not np.allclose(ct.direction, np.eye(3)):
            raise GeometryMismatchError(f"{who}: the volume is oblique; resample it first with "
                                        "bonelab.io.spatial.resample_axis_aligned.")
    return ct


def _axes_mm(v: Volume) -> tuple:
    """World coordinate vectors (z, y, x) in mm of an axis-aligned LPS volume's voxel centres."""
    return tuple(v.origin[a] + v.spacing[a] * np.arange(v.shape[2 - a]) for a in (2, 1, 0))


def rod_hu(ct: Volume, centers_xy_mm, radius_mm: float, *, margin_mm: float = 2.0) -> np.ndarray:
    """Mean HU of each calibration rod: the voxels within ``radius_mm - margin_mm`` of the rod's
    axis (rods run along z, through every slice), median over the slices.

    Parameters
    ----------
    ct : Volume (HU, axis-aligned; reoriented to LPS here)
    centers_xy_mm : sequence of (x, y) LPS mm, one per rod
    radius_mm : float
        The rods' radius; ``margin_mm`` keeps the partial-volume edge out.

    Returns
    -------
    ndarray (n_rods,) float64, HU.
    """
    ct = _lps(ct, "rod_hu")
    centers = np.asarray(centers_xy_mm, dtype=float).reshape(-1, 2)
    r = float(radius_mm) - float(margin_mm)
    if r <= 0:
        raise InvalidArgumentError(f"radius_mm ({radius_mm}) must exceed margin_mm ({margin_mm}).")
    _, y, x = _axes_mm(ct)
    out = []
    for cx, cy in centers:
        inside = (x[None, :] - cx) ** 2 + (y[:, None] - cy) ** 2 <= r * r
        if not inside.any():
            raise GeometryMismatchError(f"rod at x={cx:.1f}, y={cy:.1f} mm lies outside the CT "
                                        f"(x {x[0]:.0f}..{x[-1]:.0f}, y {y[0]:.0f}..{y[-1]:.0f} mm).")
        out.append(np.median(ct.array[:, inside].mean(axis=1)))
    return np.asarray(out, dtype=np.float64)


def fit_calibration(rod_hu_values, concentrations_mg_cm3) -> Calibration:
    """Least-squares line HU = b0 + b1 * concentration through the rods (synchronous calibration).

    Raises :class:`~bonelab.errors.InvalidArgumentError` for fewer than two rods, unequal lengths,
    or rods of one concentration, and :class:`~bonelab.errors.InvalidValuesError` for a slope that
    is not positive (denser rods must read higher HU: swapped rods or the wrong phantom).

    >>> cal = fit_calibration([2.0, 127.0, 252.0], [0.0, 100.0, 200.0])
    >>> round(cal.intercept_hu, 6), round(cal.slope_hu_per_mg_cm3, 6), cal.r2
    (2.0, 1.25, 1.0)
    """
    hu = np.asarray(rod_hu_values, dtype=np.float64).ravel()
    c = np.asarray(concentrations_mg_cm3, dtype=np.float64).ravel()
    if hu.size < 2 or hu.shape != c.shape:
        raise InvalidArgumentError(f"a calibration needs at least two rods, one HU per concentration; got "
                                   f"{hu.size} HU values and {c.size} concentrations.")
    if not (np.isfinite(hu).all() and np.isfinite(c).all()):
        raise InvalidValuesError("rod HU values and concentrations must be finite.")
    if np.ptp(c) == 0:
        raise InvalidArgumentError("all rods have one concentration: the slope is undefined.")
    slope, intercept = np.polyfit(c, hu, 1)
    if slope <= 0:
        raise InvalidValuesError(f"the calibration slope is {slope:.3g} HU per mg/cm3 (must be positive): the "
                                 "concentrations do not match the rods (order, phantom model or certificate).")
    pred = intercept + slope * c
    ss = float(((hu - hu.mean()) ** 2).sum())
    r2 = 1.0 - float(((hu - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return Calibration(float(intercept), float(slope), round(r2, 12), int(hu.size))


def calibrate(ct: Volume, rods: dict) -> Calibration:
    """The calibration line of ``ct`` from its phantom ``rods``: a dict with
    ``rod_centers_xy_mm`` [(x, y), ...], ``rod_radius_mm`` and ``concentrations_mg_cm3`` (the
    keys of a hip phantom's ``params["calibration"]``, and of the ``--rods`` JSON file of
    ``bonelab bmd``)."""
    missing = [k for k in ("rod_centers_xy_mm", "rod_radius_mm", "concentrations_mg_cm3") if k not in rods]
    if missing:
        raise InvalidArgumentError(f"rods lacks {missing}; give rod_centers_xy_mm [[x, y], ...] (LPS mm), "
                                   "rod_radius_mm and concentrations_mg_cm3 (from the phantom's certificate).")
    hu = rod_hu(ct, rods["rod_centers_xy_mm"], rods["rod_radius_mm"])
    return fit_calibration(hu, rods["concentrations_mg_cm3"])


def hu_to_bmd_mg_cm3(ct, calibration: Calibration):
    """Density in mg/cm3 of a CT (a Volume -> a Volume on the same grid, float32; an array -> an
    array) through ``calibration``."""
    if isinstance(ct, Volume):
        return Volume(calibration.bmd_mg_cm3(ct.array).astype(np.float32), ct.spacing, ct.origin, ct.direction)
    return calibration.bmd_mg_cm3(ct)


# --- the hip in a scan ----------------------------------------------------------------------
def find_femoral_heads(ct: Volume, *, step_mm: float = 2.0, radii_mm=(19.0, 21.0, 23.0, 25.0)) -> dict:
    """Centres of both femoral heads, found from the image alone (a Hough transform for spheres).

    The scan is averaged down to ``step_mm`` voxels.  Where bone meets soft tissue the HU
    gradient points into the bone; on the surface of a femoral head it points at the head's centre.
    Every strong edge voxel votes at the points ``radius`` mm along its gradient, for each of
    ``radii_mm`` (adult femoral heads are 40-50 mm across), and ``radius + 3`` mm against it (the
    acetabular cup, whose bone lies outside the joint space): a head in its cup piles its votes
    up at its centre, a plate's or a cylinder's spread out.  The strongest pile on each side of the body's midline
    (more than 45 mm off it: the vertebrae and the sacrum sit on it) is a head; the pair must sit
    at one height (within 40 mm) and 130-230 mm apart.

    Returns
    -------
    dict: ``"left"``, ``"right"``: (x, y, z) LPS mm (within a few mm); ``"score_left"``,
    ``"score_right"``: the votes there over the mean vote of the body (at least
    :data:`HEAD_SCORE_MIN`).

    Raises
    ------
    NotCTError
        No pair of femoral heads (a CT without both hips: e.g. a chest or a single-hip scan).
    """
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter, maximum_filter

    from bonelab.io.spatial import resample

    ct = _lps(ct, "find_femoral_heads")
    # average blocks of about step_mm (cheap on a 0.6 mm scan), then resample and smooth there
    shrink = [max(1, int(round(step_mm / s))) for s in ct.spacing]
    coarse = resample(Volume.from_sitk(sitk.BinShrink(ct.to_sitk(), shrink)), (step_mm,) * 3)
    a = gaussian_filter(np.clip(coarse.array, -200.0, 1000.0), 0.5)
    g = np.stack(np.gradient(a, step_mm))  # (3, z, y, x) HU per mm
    mag = np.sqrt((g**2).sum(axis=0))
    strong = (mag > 40.0) & (a > 0.0)
    k = np.argwhere(strong)
    unit = (g[:, strong] / mag[strong]).T  # (n, 3) in (z, y, x)
    votes = np.zeros(a.shape, np.float32)
    # the head's surface (bone inside: the gradient points at the centre) and the acetabulum's
    # (bone outside, a few mm further out: the gradient points away from the centre)
    for r in [*radii_mm, *(-(r + 3.0) for r in radii_mm)]:
        c = np.rint(k + unit * (r / step_mm)).astype(int)
        ok = np.all((c >= 0) & (c < np.array(a.shape)), axis=1)
        np.add.at(votes, tuple(c[ok].T), 1.0)
    votes = gaussian_filter(votes, 1.0)
    z, y, x = _axes_mm(coarse)
    body = coarse.array > -300
    midline = float(np.average(np.broadcast_to(x, body.shape)[body])) if body.any() else float(x.mean())
    norm = float(votes[body].mean()) + 1e-6
    peaks = (votes == maximum_filter(votes, size=5)) & (votes > 0)
    sides = {}
    for side, keep in (("left", x > midline + 45.0), ("right", x < midline - 45.0)):
        idx = np.argwhere(peaks & keep[None, None, :])
        best = idx[np.argsort(votes[tuple(idx.T)])[::-1][:8]]
        sides[side] = [(np.array([x[i[2]], y[i[1]], z[i[0]]]), float(votes[tuple(i)]) / norm) for i in best]
    pairs = [(sl + sr, pl, pr, sl, sr) for pl, sl in sides["left"] for pr, sr in sides["right"]
             if 130.0 <= pl[0] - pr[0] <= 230.0 and abs(pl[2] - pr[2]) <= 40.0]
    if not pairs or min(max(pairs, key=lambda t: t[0])[3:]) < HEAD_SCORE_MIN:
        raise NotCTError("no pair of femoral heads in this CT (no two spheres of 38-50 mm, one on each side, "
                         "at one height and 130-230 mm apart): it needs both hips in the field of view.")
    _, pl, pr, sl, sr = max(pairs, key=lambda t: t[0])
    found = {"left": tuple(float(v) for v in pl), "right": tuple(float(v) for v in pr),
             "score_left": sl, "score_right": sr}
    return found


#: The box :func:`hip_roi` takes around a femoral head (mm): medial, lateral, anterior, posterior,
#: inferior, superior of the head centre.  Wide enough for the greater trochanter of a large femur
#: (head to the trochanter's lateral edge is up to 90 mm), the whole acetabulum, and the femur
#: down below the lesser trochanter.
ROI_MARGINS_MM = {"medial": 35.0, "lateral": 95.0, "anterior": 45.0, "posterior": 45.0,
                  "inferior": 115.0, "superior": 35.0}


def hip_roi(ct: Volume, side: str = "left", *, head=None) -> tuple[np.ndarray, np.ndarray]:
    """The region of interest (``lo``, ``hi``: (x, y, z) LPS mm corners) around the ``side``
    hip: :data:`ROI_MARGINS_MM` around the femoral head that :func:`find_femoral_heads` finds
    (or ``head``, an (x, y, z) you give), clipped to the scan."""
    if side not in ("left", "right"):
        raise InvalidArgumentError(f"side must be 'left' or 'right'; got {side!r}.")
    ct = _lps(ct, "hip_roi")
    h = np.asarray(find_femoral_heads(ct)[side] if head is None else head, dtype=float)
    m = ROI_MARGINS_MM
    # LPS: the patient's left is +x, so the left femur's lateral side is +x
    sign = 1.0 if side == "left" else -1.0
    xs = sorted((h[0] - sign * m["medial"], h[0] + sign * m["lateral"]))
    lo = np.array([xs[0], h[1] - m["anterior"], h[2] - m["inferior"]])
    hi = np.array([xs[1], h[1] + m["posterior"], h[2] + m["superior"]])
    first = np.asarray(ct.origin)
    last = first + (np.asarray(ct.size) - 1) * np.asarray(ct.spacing)
    return np.maximum(lo, first), np.minimum(hi, last)


def crop_mm(volume: Volume, lo, hi) -> Volume:
    """The part of an axis-aligned ``volume`` whose voxel centres lie within the box ``lo``-``hi``
    ((x, y, z) LPS mm), on the same voxels (no resampling)."""
    volume = _lps(volume, "crop_mm")
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    sl = []
    for a in (2, 1, 0):
        c = volume.origin[a] + volume.spacing[a] * np.arange(volume.shape[2 - a])
        idx = np.flatnonzero((c >= lo[a] - 1e-6) & (c <= hi[a] + 1e-6))
        if idx.size == 0:
            raise GeometryMismatchError(f"the box {lo.round(1).tolist()}-{hi.round(1).tolist()} mm misses the volume.")
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    origin = [volume.origin[a] + volume.spacing[a] * sl[2 - a].start for a in range(3)]
    return Volume(volume.array[tuple(sl)].copy(), volume.spacing, origin, volume.direction, volume.label_names)


# --- regions and BMD ------------------------------------------------------------------------
def femur_regions(like: Volume, head_center_mm, neck_shaft_junction_mm, shaft_direction, head_radius_mm: float,
                  neck_radius_mm: float) -> dict:
    """Boolean region masks (same grid as ``like``) of a proximal femur, from its axes:

    * ``head_neck``: medial of the neck's base (the plane across the neck axis 20 mm lateral of
      the head's surface), the region where the femoral head meets the acetabulum;
    * ``neck``: a 10 mm slab across the neck axis, centred 8 mm lateral of the head's surface,
      within the neck's radius + 5 mm (a CTXA/DXA-like femoral neck region);
    * ``trochanter``: lateral of the neck's base and at most 45 mm below the neck-shaft junction
      along the shaft;
    * ``total``: head, neck and trochanter: everything above 45 mm below the junction.

    These are boxes of space, not bone: intersect them with a femur mask (:func:`vbmd_mg_cm3`).
    ``shaft_direction`` is the unit vector down the shaft (distal); all positions (x, y, z) LPS mm.
    On a reader's CT, measure them from the femur's mask with :func:`measure_femur_axes`."""
    like = _lps(like, "femur_regions")
    H, J = np.asarray(head_center_mm, float), np.asarray(neck_shaft_junction_mm, float)
    d = np.asarray(shaft_direction, float) / np.linalg.norm(shaft_direction)
    u = (H - J) / np.linalg.norm(H - J)  # along the neck, toward the head
    z, y, x = _axes_mm(like)
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij", sparse=True)
    P = (X - J[0], Y - J[1], Z - J[2])
    along_neck = P[0] * u[0] + P[1] * u[1] + P[2] * u[2]
    along_shaft = P[0] * d[0] + P[1] * d[1] + P[2] * d[2]
    length = float(np.linalg.norm(H - J))
    base = length - head_radius_mm - 20.0
    mid = length - head_radius_mm - 8.0
    off_axis2 = (P[0] ** 2 + P[1] ** 2 + P[2] ** 2) - along_neck**2
    above = along_shaft <= 45.0
    head_neck = np.broadcast_to(along_neck >= base, like.shape)
    neck = (np.abs(along_neck - mid) <= 5.0) & (off_axis2 <= (neck_radius_mm + 5.0) ** 2)
    trochanter = (along_neck < base) & above
    total = head_neck | trochanter
    return {"head_neck": np.ascontiguousarray(head_neck), "neck": np.broadcast_to(neck, like.shape).copy(),
            "trochanter": np.broadcast_to(trochanter, like.shape).copy(), "total": np.broadcast_to(total, like.shape).copy()}


#: Where :func:`measure_femur_axes` takes the shaft: this far below the head centre (mm), under
#: the lesser trochanter (whose lower edge lies up to about 100 mm below the head centre in the
#: hip phantoms' largest femurs) and inside :func:`hip_roi`'s box (115 mm below the head).
SHAFT_WINDOW_MM = (100.0, 115.0)


def _sphere_fit(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points`` (n, 3): the algebraic fit, linear in the centre
    and in ``r**2 - |c|**2`` (no library fits spheres; it is three lines of numpy)."""
    a = np.column_stack([2 * points, np.ones(len(points))])
    sol, *_ = np.linalg.lstsq(a, (points**2).sum(axis=1), rcond=None)
    c = sol[:3]
    return c, float(np.sqrt(sol[3] + c @ c))


def _core_centroid(section: np.ndarray, x: np.ndarray, y: np.ndarray, spacing_yx) -> tuple[float, float]:
    """(x, y) mm centroid of the core of a bone's cross-section (the pixels deeper than 60 % of
    its deepest): a bump on the outline, such as the lesser trochanter, barely moves it."""
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(section, sampling=spacing_yx)
    iy, ix = np.nonzero(depth >= 0.6 * depth.max())
    return float(x[ix].mean()), float(y[iy].mean())


def measure_femur_axes(mask: Volume, *, shaft_window_mm=SHAFT_WINDOW_MM) -> dict:
    """The axes of a proximal femur, measured from its mask alone: the arguments of
    :func:`femur_regions`, for a reader's CT where no phantom parameters exist.

    * head: a sphere fitted to the mask's surface over the top of the head (the cap within 20 mm
      of the femur's highest point, then the upper hemisphere of that first sphere);
    * shaft: a line through the centroids of the cores of the mask's axial slices 100-115 mm
      below the head centre (``shaft_window_mm``: below the lesser trochanter), pointing distal;
    * neck axis: from the centroid of the bone 2-12 mm outside the head's sphere to the head
      centre; the neck-shaft junction is the point of the shaft axis closest to that line;
    * neck radius: from the least cross-section of the neck (the area of bone within a head
      radius of the neck axis, in 1 mm steps), ``sqrt(area / pi)``.

    ``mask`` is an axis-aligned volume whose non-zero voxels are one proximal femur with its head
    and at least 10 mm of shaft in the window.  Returns a dict with ``head_center_mm``,
    ``neck_shaft_junction_mm`` ((x, y, z) LPS mm), ``shaft_direction`` (unit, distal),
    ``head_radius_mm`` and ``neck_radius_mm``: pass it whole to :func:`femur_regions` (and to
    :func:`neck_shaft_angle_deg`).  Measured on 12 hip phantom scans (true masks on the QCT grid
    of chapter 6): the head centre within 1.1 mm of the truth, the shaft axis within 6 degrees,
    the junction within 11 mm (the neck axis is the weakest part); on a trained V-Net's masks of
    6 of them, within 3.9 mm, 7.5 degrees and 15.5 mm (the network errs at the head's top, in
    its cup).  tests/test_qct.py checks the phantoms' own grids.

    >>> from bonelab.phantoms.hip import hip
    >>> s = hip(3, spacing=2.0)
    >>> femur = Volume((s.labels.array == 1).astype("uint8"), s.labels.spacing, s.labels.origin)
    >>> axes = measure_femur_axes(femur)
    >>> round(axes["head_radius_mm"]), round(s.params["femur_left"]["head_diameter_mm"] / 2)
    (23, 23)

    Raises
    ------
    InvalidValuesError
        An empty mask, one with no round cap on top or no neck beside it (another bone), or one
        with no shaft in the window (a mask cut off above the lesser trochanter).
    """
    from scipy.ndimage import binary_erosion

    mask = _lps(mask, "measure_femur_axes")
    m = mask.array > 0
    if not m.any():
        raise InvalidValuesError("measure_femur_axes: the mask is empty.")
    z, y, x = _axes_mm(mask)

    def world(idx):  # (n, 3) (z, y, x) indices -> (n, 3) (x, y, z) mm
        return np.column_stack([x[idx[:, 2]], y[idx[:, 1]], z[idx[:, 0]]])

    surface = world(np.argwhere(m & ~binary_erosion(m)))
    bone = world(np.argwhere(m))
    top = surface[surface[:, 2] >= surface[:, 2].max() - 20.0]
    centre, radius = _sphere_fit(top[np.linalg.norm(top[:, :2] - top[:, :2].mean(0), axis=1) <= 30.0])
    dist = np.linalg.norm(surface - centre, axis=1)
    cap = surface[(np.abs(dist - radius) <= 0.2 * radius) & (surface[:, 2] >= centre[2])]
    if len(cap) < 20:
        raise InvalidValuesError("measure_femur_axes: the top of the mask is no femoral head (no round cap).")
    centre, radius = _sphere_fit(cap)
    radius += 0.5 * float(np.mean(mask.spacing))  # surface voxels' centres lie half a voxel inside the surface

    lo, hi = centre[2] - shaft_window_mm[1], centre[2] - shaft_window_mm[0]
    ks = [k for k in range(m.shape[0]) if lo <= z[k] <= hi and m[k].any()]
    if len(ks) * mask.spacing[2] < 10.0:
        raise InvalidValuesError(f"measure_femur_axes: the mask holds under 10 mm of femoral shaft "
                                 f"{shaft_window_mm[0]:g}-{shaft_window_mm[1]:g} mm below the head (z {lo:.0f} to "
                                 f"{hi:.0f} mm); it needs the femur down below the lesser trochanter.")
    cents = np.array([[*_core_centroid(m[k], x, y, mask.spacing[1::-1]), z[k]] for k in ks])
    mid = cents.mean(axis=0)
    d = np.linalg.svd(cents - mid)[2][0]
    d = -d if d[2] > 0 else d  # distal: down, -z in LPS

    r = np.linalg.norm(bone - centre, axis=1)
    neck_bone = bone[(r >= radius + 2.0) & (r <= radius + 12.0)]
    if not (np.isfinite(radius) and 15.0 <= radius <= 35.0 and len(neck_bone)):
        raise InvalidValuesError(f"measure_femur_axes: the head fitted to the mask is {radius:.1f} mm in radius, with "
                                 "no neck beside it; adult femoral heads are 20-25 mm in radius.")
    u = centre - neck_bone.mean(axis=0)
    u /= np.linalg.norm(u)  # along the neck, toward the head
    # closest point of the shaft line (mid + t d) to the neck line (centre + s u)
    w, b = mid - centre, u @ d
    t = (b * (w @ u) - (w @ d)) / (1.0 - b * b)
    junction = mid + t * d
    rel = bone - centre
    along = -(rel @ u)
    off = np.linalg.norm(rel + np.outer(along, u), axis=1)
    voxel_mm3 = float(np.prod(mask.spacing))
    steps = np.arange(radius + 2.0, radius + 20.0, 1.0)
    areas = [np.count_nonzero((np.abs(along - s) <= 0.5) & (off <= radius)) * voxel_mm3 for s in steps]
    return {"head_center_mm": centre.tolist(), "neck_shaft_junction_mm": junction.tolist(),
            "shaft_direction": d.tolist(), "head_radius_mm": radius,
            "neck_radius_mm": float(np.sqrt(min(areas) / np.pi))}


def neck_shaft_angle_deg(axes: dict) -> float:
    """The neck-shaft angle (degrees) of femur axes (the arguments of :func:`femur_regions`, e.g.
    from :func:`measure_femur_axes`): between the neck axis (junction to head centre) and the shaft
    pointing distal; 120-135 degrees in adults, 180 for a straight bone.

    >>> round(neck_shaft_angle_deg({"head_center_mm": [0, 0, 0], "neck_shaft_junction_mm": [1, 0, -1],
    ...                              "shaft_direction": [0, 0, -1]}), 1)
    135.0
    """
    u = np.subtract(axes["head_center_mm"], axes["neck_shaft_junction_mm"])
    d = np.asarray(axes["shaft_direction"], float)
    return float(np.degrees(np.arccos(np.clip(u @ d / np.linalg.norm(u) / np.linalg.norm(d), -1.0, 1.0))))


def _check_grid(a: Volume, b: Volume, what: str) -> None:
    if a.shape != b.shape or not np.allclose(a.spacing, b.spacing) or not np.allclose(a.origin, b.origin, atol=1e-3):
        raise GeometryMismatchError(f"{what} lies on another grid than the BMD volume (shape {b.shape} vs {a.shape}, "
                                    f"spacing {b.spacing} vs {a.spacing}); resample it with "
                                    "bonelab.io.read_labels(path, like=ct, resample=True).")


def vbmd_mg_cm3(bmd: Volume, mask: Volume, region=None, *, peel_mm: float | None = None) -> float:
    """Volumetric BMD (mg/cm3): the mean density of ``bmd`` over the voxels of ``mask`` (non-zero)
    within ``region`` (a boolean array of the same shape, e.g. from :func:`femur_regions`).

    ``peel_mm=None`` gives the *integral* BMD (cortex and trabecular bone together);
    ``peel_mm=3`` the *trabecular* BMD: only voxels more than 3 mm inside the mask's surface,
    which peels the cortex off (1-4 mm at the neck and the calcar)."""
    _check_grid(bmd, mask, "the mask")
    m = mask.array > 0
    if peel_mm is not None:
        from scipy.ndimage import distance_transform_edt

        m = distance_transform_edt(m, sampling=mask.spacing[::-1]) > peel_mm
    if region is not None:
        m = m & np.asarray(region, bool)
    if not m.any():
        raise InvalidValuesError("no voxel of the mask lies in this region (a mask on another hip, or peeled away).")
    return float(bmd.array[m].astype(np.float64).mean())


def areal_bmd_g_cm2(bmd: Volume, mask: Volume, region=None, *, axis: str = "y") -> float:
    """A CTXA-like areal BMD (g/cm2): the bone mineral of the mask (within ``region``) projected
    along ``axis`` (``"y"``, antero-posterior, as a DXA hip scan sees it), i.e. total mineral mass
    divided by the projected area.  Voxels of negative density (marrow fat) count as they are."""
    _check_grid(bmd, mask, "the mask")
    ax = {"z": 0, "y": 1, "x": 2}.get(axis)
    if ax is None:
        raise InvalidArgumentError(f"axis must be 'x', 'y' or 'z'; got {axis!r}.")
    m = mask.array > 0
    if region is not None:
        m = m & np.asarray(region, bool)
    if not m.any():
        raise InvalidValuesError("no voxel of the mask lies in this region.")
    sx, sy, sz = bmd.spacing
    voxel_cm3 = sx * sy * sz / 1000.0
    mass_g = float(bmd.array[m].astype(np.float64).sum()) * voxel_cm3 / 1000.0
    pixel_cm2 = {0: sx * sy, 1: sx * sz, 2: sy * sz}[ax] / 100.0
    area_cm2 = float(m.any(axis=ax).sum()) * pixel_cm2
    return mass_g / area_cm2
