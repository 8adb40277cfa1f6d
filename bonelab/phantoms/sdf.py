"""Signed-distance primitives shared by every phantom generator.

A shape is a signed-distance function (SDF): negative inside, zero on the surface, positive
outside, in millimetres.  Shapes are built in world coordinates (x, y, z) LPS mm and sampled on
a :class:`Grid` whose arrays are ``(z, y, x)`` (SimpleITK order).  Every shape knows its world
bounding box, so sampling touches only the voxels near it: a 10 mm carpal bone in a 6-million
voxel wrist costs a few hundred thousand evaluations, not six million.  That bounding-box
restriction is the reason these few functions are written here instead of taken from a library
(scikit-image and SimpleITK draw only axis-aligned ellipsoids and boxes, without distances).

Distances are exact for spheres and capsules and first-order estimates (value divided by
gradient length) for ellipsoids and superellipsoids: accurate within a few tenths of a mm near the
surface, which is all the partial-volume painting and the cortical shell need.

Primitives: :func:`ellipsoid`, :func:`superellipsoid`, :func:`sphere`, :func:`capsule` (a round
cone when its two radii differ), :func:`tube` (a swept tube through points, e.g. a spline),
:func:`triangle_plate`, :class:`Field` (any function of x, y, z).  Combinators: :func:`union`,
:func:`subtract`, :func:`intersect` (all with an optional smoothing radius ``k`` in mm, the
polynomial smooth minimum of Quilez).  Placement: :func:`rotation`, :func:`frame`.

>>> g = Grid((50, 50, 50), spacing=(0.5, 0.5, 0.5), origin=(-12.25, -12.25, -12.25))
>>> ball = sphere((0, 0, 0), 10)
>>> region, d = ball.sample(g)
>>> round(float((d < 0).sum() * 0.125) / 1000, 2)   # voxel volume in cm3, 4/3 pi r^3 = 4.19
4.19
"""

from __future__ import annotations

import numpy as np

#: Distance used outside a shape's bounding box (mm): far enough to never matter.
FAR = 1.0e4
#: Extra margin (mm) sampled around every bounding box, so blends and shells see true distances.
MARGIN = 4.0


class Grid:
    """A regular axis-aligned grid: ``shape`` (nz, ny, nx), ``spacing`` and ``origin`` (x, y, z) mm.

    >>> Grid((2, 3, 4), spacing=(0.5, 0.5, 1.0)).axis(0)
    array([0. , 0.5, 1. , 1.5], dtype=float32)
    """

    def __init__(self, shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = np.asarray(origin, dtype=float)

    @classmethod
    def around(cls, lo, hi, spacing) -> Grid:
        """The grid covering the world box ``lo``..``hi`` (x, y, z mm) at ``spacing`` (mm)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        sp = np.broadcast_to(np.asarray(spacing, float), (3,))
        n = np.maximum(np.round((hi - lo) / sp).astype(int), 1)
        origin = (lo + hi) / 2 - (n - 1) * sp / 2
        return cls(n[::-1], sp, origin)

    def axis(self, i: int, sl: slice = slice(None)) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along axis ``i`` (0=x, 1=y, 2=z)."""
        n = self.shape[2 - i]
        idx = np.arange(n)[sl]
        return (self.origin[i] + idx * self.spacing[i]).astype(np.float32)

    def coords(self, region):
        """Broadcastable coordinate arrays ``X (1,1,nx), Y (1,ny,1), Z (nz,1,1)`` of a region."""
        zs, ys, xs = region
        return (
            self.axis(0, xs)[None, None, :],
            self.axis(1, ys)[None, :, None],
            self.axis(2, zs)[:, None, None],
        )

    def region(self, lo, hi):
        """Index slices ``(z, y, x)`` of the voxels inside the world box, or None if empty."""
        lo = np.floor((np.asarray(lo) - self.origin) / self.spacing).astype(int)
        hi = np.ceil((np.asarray(hi) - self.origin) / self.spacing).astype(int) + 1
        n = np.asarray(self.shape[::-1])
        lo, hi = np.clip(lo, 0, n), np.clip(hi, 0, n)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1]))

    @property
    def full(self):
        """The region covering the whole grid."""
        return tuple(slice(0, n) for n in self.shape)


def region_shape(region) -> tuple:
    """The shape (voxels per axis) of ``region``, a tuple of slices."""
    return tuple(s.stop - s.start for s in region)


def intersect_regions(a, b):
    """Intersection of two regions (None when empty)."""
    if a is None or b is None:
        return None
    out = tuple(slice(max(p.start, q.start), min(p.stop, q.stop)) for p, q in zip(a, b))
    return None if any(s.stop <= s.start for s in out) else out


def union_regions(regions):
    """Smallest region holding all the given regions (None entries ignored)."""
    regions = [r for r in regions if r is not None]
    if not regions:
        return None
    return tuple(
        slice(min(r[i].start for r in regions), max(r[i].stop for r in regions)) for i in range(3)
    )


def relative(inner, outer):
    """Slices of ``inner`` expressed inside an array that covers ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))


# --- smooth booleans ---------------------------------------------------------------------------
def smin(a, b, k: float):
    """Polynomial smooth minimum with blend radius ``k`` mm (plain minimum when k == 0)."""
    if k <= 0:
        return np.minimum(a, b)
    # b + h (a - b) - k h (1 - h) with h = clip(0.5 - (a - b) / 2k), in place on float32 temporaries
    d = np.subtract(a, b, dtype=np.float32)
    h = np.multiply(d, np.float32(-0.5 / k))
    h += np.float32(0.5)
    np.clip(h, 0.0, 1.0, out=h)
    t = h * np.float32(k)
    t += d
    t -= np.float32(k)
    t *= h
    t += b
    return t


def smax(a, b, k: float):
    """Polynomial smooth maximum (see :func:`smin`)."""
    return -smin(-a, -b, k)


# --- rotations ---------------------------------------------------------------------------------
def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` from angles in degrees about the world x, y, z axes.

    Columns are the world directions of the local axes.

    >>> np.round(rotation(rz=90) @ [1, 0, 0], 6)
    array([0., 1., 0.])
    """
    a, b, c = np.radians([rx, ry, rz])
    rx_ = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry_ = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz_ = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz_ @ ry_ @ rx_


def frame(z_dir, x_hint=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Rotation whose local z axis points along ``z_dir`` and local x axis as close as possible
    to ``x_hint`` (both world vectors).

    >>> np.round(frame((0, 0, 1)), 6).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    ez = np.asarray(z_dir, float)
    ez = ez / np.linalg.norm(ez)
    ex = np.asarray(x_hint, float) - np.dot(x_hint, ez) * ez
    if np.linalg.norm(ex) < 1e-6:
        ex = np.cross(ez, [0.0, 1.0, 0.0]) if abs(ez[1]) < 0.9 else np.cross(ez, [1.0, 0.0, 0.0])
    ex = ex / np.linalg.norm(ex)
    return np.column_stack([ex, np.cross(ez, ex), ez])


# --- the shape base class ----------------------------------------------------------------------
class Shape:
    """Base class: a signed distance with a world bounding box ``lo``, ``hi`` (x, y, z mm)."""

    lo: np.ndarray
    hi: np.ndarray

    def region(self, grid: Grid):
        """Grid region covering the bounding box plus :data:`MARGIN`."""
        return grid.region(self.lo - MARGIN, self.hi + MARGIN)

    def evaluate(self, grid: Grid, region) -> np.ndarray:
        """Signed distance (mm, float32) on ``region``; :data:`FAR` where the shape is far."""
        raise NotImplementedError

    def sample(self, grid: Grid, region=None):
        """``(region, distances)`` over the shape's own region (or the given one); the region is
        None (and distances None) when the shape misses the grid."""
        region = self.region(grid) if region is None else region
        if region is None:
            return None, None
        return region, self.evaluate(grid, region)

    def _into(self, grid, region, out, combine):
        """Evaluate on the part of ``region`` near this shape and combine into ``out``."""
        sub = intersect_regions(self.region(grid), region)
        if sub is not None:
            rel = relative(sub, region)
            out[rel] = combine(out[rel], self.evaluate(grid, sub))
        return out


class Local(Shape):
    """A shape defined in a local frame: ``fn(lx, ly, lz) -> distance`` with the local bounding
    half-extent ``half`` (mm), placed at ``center`` with rotation ``rot`` (3x3, columns = world
    directions of the local axes)."""

    def __init__(self, fn, half, center=(0, 0, 0), rot=None):
        self.fn = fn
        self.center = np.asarray(center, float)
        self.rot = np.eye(3) if rot is None else np.asarray(rot, float)
        half = np.asarray(half, float)
        ext = np.abs(self.rot) @ half  # world half-extent of the rotated local box
        self.lo, self.hi = self.center - ext, self.center + ext

    def evaluate(self, grid, region):
        X, Y, Z = grid.coords(region)
        cx, cy, cz = (float(v) for v in self.center)
        dx, dy, dz = X - cx, Y - cy, Z - cz
        r = self.rot.astype(np.float32)
        lx = r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz
        ly = r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz
        lz = r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz
        return np.broadcast_to(self.fn(lx, ly, lz), region_shape(region)).astype(np.float32)


class Field(Shape):
    """Any world-space distance ``fn(X, Y, Z)`` (broadcastable mm arrays) inside a given box."""

    def __init__(self, fn, lo, hi):
        self.fn = fn
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)

    def evaluate(self, grid, region):
        X, Y, Z = grid.coords(region)
        return np.broadcast_to(self.fn(X, Y, Z), region_shape(region)).astype(np.float32)


# --- local distance functions ------------------------------------------------------------------
def superellipsoid_distance(lx, ly, lz, radii, e_xy: float = 2.0, e_z: float = 2.0):
    """First-order distance (mm) to the superellipsoid
    ``((|x/a|^e_xy + |y/b|^e_xy)^(e_z/e_xy) + |z/c|^e_z)^(1/e_z) = 1``.

    Exponents 2 give an ellipsoid; larger values square the shape off (a vertebral body has
    e_z around 6: flat endplates with rounded rims).
    """
    a, b, c = (float(r) for r in radii)
    e_xy, e_z = float(e_xy), float(e_z)
    if e_xy == 2.0 and e_z == 2.0:  # ellipsoid: Quilez's cheaper bound k0 (k0 - 1) / k1
        k0 = np.sqrt((lx / a) ** 2 + (ly / b) ** 2 + (lz / c) ** 2)
        k1 = np.sqrt((lx / (a * a)) ** 2 + (ly / (b * b)) ** 2 + (lz / (c * c)) ** 2) + 1e-6
        return k0 * (k0 - 1.0) / k1
    ux, uy, uz = np.abs(lx) / a + 1e-6, np.abs(ly) / b + 1e-6, np.abs(lz) / c + 1e-6
    px, py, pz = ux**e_xy, uy**e_xy, uz**e_z
    q = px + py
    qz = q ** (e_z / e_xy)
    f = (qz + pz) ** (1.0 / e_z)
    # gradient of f: chain rule through the two nested power sums
    common = f ** (1.0 - e_z)
    gq = common * q ** (e_z / e_xy - 1.0)
    gx = gq * px / ux / a
    gy = gq * py / uy / b
    gz = common * pz / uz / c
    grad = np.sqrt(gx * gx + gy * gy + gz * gz) + 1e-6
    return (f - 1.0) / grad


def superellipsoid(center, radii, rot=None, e_xy: float = 2.0, e_z: float = 2.0) -> Local:
    """A superellipsoid with semi-axes ``radii`` (local x, y, z mm) at ``center`` (world mm).

    >>> s = superellipsoid((0, 0, 0), (10, 5, 5), e_xy=2, e_z=2)
    >>> g = Grid((1, 1, 3), origin=(9, 0, 0)); float(np.round(s.sample(g, g.full)[1][0, 0, 2], 2))
    1.0
    """
    radii = np.asarray(radii, float)
    return Local(lambda x, y, z: superellipsoid_distance(x, y, z, radii, e_xy, e_z), radii, center, rot)


def ellipsoid(center, radii, rot=None) -> Local:
    """An ellipsoid with semi-axes ``radii`` (local x, y, z mm) at ``center`` (world mm)."""
    return superellipsoid(center, radii, rot)


def sphere(center, radius: float) -> Local:
    """A sphere (exact distance)."""
    return Local(lambda x, y, z: np.sqrt(x * x + y * y + z * z) - radius, [radius] * 3, center)


class _Capsule(Shape):
    def __init__(self, a, b, ra, rb):
        self.a, self.b = np.asarray(a, float), np.asarray(b, float)
        self.ra, self.rb = float(ra), float(rb)
        r = max(self.ra, self.rb)
        self.lo = np.minimum(self.a, self.b) - r
        self.hi = np.maximum(self.a, self.b) + r

    def evaluate(self, grid, region):
        X, Y, Z = grid.coords(region)
        ax, ay, az = (float(v) for v in self.a)
        bx, by, bz = (float(v) for v in self.b - self.a)
        L2 = bx * bx + by * by + bz * bz + 1e-12
        px, py, pz = X - ax, Y - ay, Z - az
        h = np.clip((px * bx + py * by + pz * bz) / L2, 0.0, 1.0)
        dx, dy, dz = px - h * bx, py - h * by, pz - h * bz
        d = np.sqrt(dx * dx + dy * dy + dz * dz) - (self.ra + (self.rb - self.ra) * h)
        return np.broadcast_to(d, region_shape(region)).astype(np.float32)


def capsule(a, b, ra: float, rb: float | None = None) -> Shape:
    """A capsule from world point ``a`` to ``b`` with radius ``ra`` (a round cone when ``rb`` is
    given: the radius varies linearly from ``ra`` to ``rb``; distance approximate then)."""
    return _Capsule(a, b, ra, ra if rb is None else rb)


def catmull_rom(points, n_per_segment: int = 6) -> np.ndarray:
    """Points (N, 3) of a centripetal-free (uniform) Catmull-Rom spline through ``points``."""
    p = np.asarray(points, float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, n_per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(
            0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                   + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    out.append(p[-2][None])
    return np.vstack(out)


def tube(points, radii, smooth: bool = True, n_per_segment: int = 6) -> Shape:
    """A tube swept along ``points`` (N, 3 world mm) with per-point radii (mm): a chain of round
    cones; with ``smooth`` the path is a Catmull-Rom spline through the points (ribs, clavicles).

    >>> t = tube([(0, 0, 0), (10, 0, 0), (20, 5, 0)], [2, 2, 1])
    >>> len(t.children) > 2
    True
    """
    points = np.asarray(points, float)
    radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
    if smooth and len(points) > 2:
        dense = catmull_rom(points, n_per_segment)
        s = np.linspace(0, len(points) - 1, len(dense))
        radii = np.interp(s, np.arange(len(points)), radii)
        points = dense
    return union(*[capsule(points[i], points[i + 1], radii[i], radii[i + 1]) for i in range(len(points) - 1)])


def triangle_plate(a, b, c, thickness: float, rounding: float = 3.0) -> Shape:
    """A flat plate over the triangle ``a, b, c`` (world mm), ``thickness`` mm thick, its rim
    rounded over ``rounding`` mm (a scapula, the sacrum seen from the front).

    >>> t = triangle_plate((0, 0, 0), (20, 0, 0), (0, 0, 20), 4.0)
    >>> g = Grid((1, 1, 1), origin=(5, 0, 5)); float(np.round(t.sample(g, g.full)[1][0, 0, 0], 1))
    -2.0
    """
    a, b, c = (np.asarray(v, float) for v in (a, b, c))
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n)
    cen = (a + b + c) / 3
    edges = []
    for p0, p1 in ((a, b), (b, c), (c, a)):
        e = np.cross(n, p1 - p0)
        e /= np.linalg.norm(e)
        if e @ (cen - p0) > 0:
            e = -e  # outward in-plane normal
        edges.append((e, float(e @ p0)))

    nx, ny, nz, off_n = float(n[0]), float(n[1]), float(n[2]), float(n @ a)

    def fn(X, Y, Z):
        slab = np.abs(X * nx + Y * ny + Z * nz - off_n) - thickness / 2
        out = slab
        for e, off in edges:
            out = smax(out, X * float(e[0]) + Y * float(e[1]) + Z * float(e[2]) - off, rounding)
        return out

    pts = np.array([a, b, c])
    return Field(fn, pts.min(0) - thickness, pts.max(0) + thickness)


# --- combinators -------------------------------------------------------------------------------
class _Union(Shape):
    def __init__(self, children, k):
        self.children, self.k = list(children), float(k)
        self.lo = np.min([c.lo for c in self.children], axis=0)
        self.hi = np.max([c.hi for c in self.children], axis=0)

    def evaluate(self, grid, region):
        out = np.full(region_shape(region), FAR, np.float32)
        for i, c in enumerate(self.children):
            # smin(FAR, b) == b: the first child is copied, not blended
            c._into(grid, region, out, (lambda a, b: b) if i == 0 else (lambda a, b: smin(a, b, self.k)))
        return out


class _Subtract(Shape):
    def __init__(self, a, cutters, k):
        self.a, self.cutters, self.k = a, list(cutters), float(k)
        self.lo, self.hi = a.lo, a.hi

    def evaluate(self, grid, region):
        out = self.a.evaluate(grid, region)
        for c in self.cutters:
            c._into(grid, region, out, lambda a, b: smax(a, -b, self.k))
        return out


class _Intersect(Shape):
    def __init__(self, a, others, k):
        self.a, self.others, self.k = a, list(others), float(k)
        self.lo, self.hi = a.lo, a.hi

    def evaluate(self, grid, region):
        out = self.a.evaluate(grid, region)
        for c in self.others:
            # outside a cutter's box the intersection is empty: start from FAR there
            full = np.full(out.shape, FAR, np.float32)
            c._into(grid, region, full, lambda a, b: b)
            out = smax(out, full, self.k)
        return out


def union(*shapes: Shape, k: float = 0.0) -> Shape:
    """Union of shapes; ``k`` > 0 blends them with a fillet of about ``k`` mm."""
    return shapes[0] if len(shapes) == 1 and k == 0 else _Union(shapes, k)


def subtract(a: Shape, *cutters: Shape, k: float = 0.0) -> Shape:
    """``a`` minus the cutters (smoothly when ``k`` > 0)."""
    return _Subtract(a, cutters, k)


def intersect(a: Shape, *others: Shape, k: float = 0.0) -> Shape:
    """``a`` intersected with the others; the result keeps ``a``'s box."""
    return _Intersect(a, others, k)


class Placement:
    """A rigid motion ``p -> R (p - pivot) + pivot + shift`` (world mm; ``R`` 3x3) used to pose
    groups of shapes (a carpal row, a vertebra) before they are built.

    >>> P = Placement(rotation(rz=90), pivot=(0, 0, 0), shift=(1, 0, 0))
    >>> np.round(P.point((1, 0, 0)), 6).tolist()
    [1.0, 1.0, 0.0]
    """

    def __init__(self, R=None, pivot=(0, 0, 0), shift=(0, 0, 0)):
        self.R = np.eye(3) if R is None else np.asarray(R, float)
        self.pivot = np.asarray(pivot, float)
        self.shift = np.asarray(shift, float)

    def point(self, p) -> np.ndarray:
        """Move a point (or points, shape (..., 3))."""
        p = np.asarray(p, float)
        return (p - self.pivot) @ self.R.T + self.pivot + self.shift

    def rot(self, R=None) -> np.ndarray:
        """Rotate a frame (columns = local axes)."""
        return self.R if R is None else self.R @ np.asarray(R, float)

    def then(self, other: Placement) -> Placement:
        """This motion followed by ``other``."""
        R = other.R @ self.R
        shift = other.point(self.point(np.zeros(3))) - np.zeros(3) @ R.T
        return Placement(R, (0, 0, 0), shift)
