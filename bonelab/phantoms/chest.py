"""A procedural chest: ribs with costal cartilage, thoracic and upper lumbar vertebrae, sternum
(manubrium, body, xiphoid), clavicles, scapulae, humeral heads, lungs with a vessel tree, a
heart with its chambers and great vessels, diaphragm and upper abdomen, soft tissue and arms.

Frame: LPS (x left, y posterior, z superior), patient supine; arrays ``(z, y, x)``.  A PA chest
radiograph (or CT localizer) projects along y.

Anatomy and distributions (mm, degrees, HU).  "Measured" marks the quantities that
``tests/test_phantom_chest_spine.py`` measures on the generated volumes over several seeds:

=========================  ======================================  ======================================
quantity                   value                                   source / note
=========================  ======================================  ======================================
vertebral bodies T1..T12   height 15 -> 23, width 28 -> 42,        Panjabi et al. 1991, Spine 16:888
                           depth 16 -> 30 (linear); L1-L2 as in    (thoracic morphometry)
                           :mod:`bonelab.phantoms.spine`
thoracic discs             4 -> 6 mm; lumbar 9-10 mm
thoracic kyphosis T1-T12   N(40, 8), in [20, 60]                   adult normal range 20-50 deg
rib cage half-width        58 (T1) -> 135 (T10) x N(1, 0.06)       chest width ~270-300 mm
rib cage half-depth        42 (T1) -> 95 (T10) x N(1, 0.06)
ribs                       12 pairs; flat section 9-13 mm high,    anterior rib ends 3-4 interspaces
                           5-7 mm thick, cortex ~1 mm; each rib    below the posterior ones on a PA
                           drops 45 (rib 1) -> 125 mm (ribs 6-7)   film (issue 11)
                           from its head to its anterior end
rib sections in the axial  10-14 (measured; seeds give 10-12)      issue 11; the real chest CT of
slice through T7                                                   bonelab.data.example_ct: 11
costal cartilage           ribs 1-7 to the sternum, 8-10 to the    cartilage 100-200 HU; calcifies
                           cartilage above (costal margin);        with age (onset at 30 and rate
                           HU 130 +- 25, calcified spots up to     here are a schematic choice)
                           +450 HU, more of them with age
age                        U(20, 80) years                         drives cartilage calcification
sternum                    manubrium 50 long, 54 wide at the       adult sternal morphometry
                           clavicular notches; body ~100 long,     (manubrium ~50 mm, body ~100 mm);
                           27-31 wide, 10 thick; xiphoid 35        the joint widths are a choice
                           long, 16 -> 6 wide; joints 2.5 and
                           2 mm (measured: three parts, sizes)
clavicle                   S-shaped tube ~150 mm, radius 6-7
scapula                    triangular plate over ribs 2-8, spine,
                           acromion, glenoid
humerus                    head diameter 46 x scale (measured      Iannotti et al. 1992 (JBJS 74-A:
                           40-56), joint space 3 mm to the         491): head radius of curvature
                           glenoid, shaft radius 11-12             about 22-25 mm
lung                       -850 HU, texture SD 25; a pulmonary     healthy inspiration CT; vessels
                           artery to each hilum, 3 lobar trunks,   taper 7 -> ~1 mm radius and are
                           5 generations, kept inside the lung     densest at the hila (measured)
diaphragm domes            N(70, 8) mm above the costophrenic
                           recesses, the right ~15 mm higher
heart                      right atrium (right border), right      cardiothoracic ratio on a PA film
                           ventricle (anterior, on the dome),      0.42-0.50 in healthy adults
                           left ventricle (left border, apex       (Danzer 1919 defined the ratio;
                           down and left), left atrium, aortic     band of issue 11); drawn N(0.46, 0.02)
                           arch with its knob, pulmonary trunk,    in [0.42, 0.50], measured on the PA
                           SVC; epicardial fat                     projection (measured, with
                                                                   heart_mask and lung_mask)
subcutaneous fat           U(5, 35)                                habitus
trabecular / cortical HU   90 + 140 * density / U(1250, 1750)
=========================  ======================================  ======================================

Measurements on a chest CT, the phantom's or a real one: :func:`lung_mask` (from HU),
:func:`heart_mask` (the phantom's painted heart; a real CT's ``heart`` label serves instead) and
:func:`cardiothoracic_ratio` (from the two masks, as on a PA film).

What remains schematic: the vertebrae are the lumbar model scaled to thoracic sizes (no
costal facets, no rib-transverse-process joint space); ribs have one cross-section profile
along their length (no costal groove, no flared anterior ends); the scapula is a flat plate
without the coracoid; the humerus is a ball and a tube (no tubercles or bicipital groove);
the heart chambers are blended ellipsoids without valves, septa or coronary arteries; the
lung vessel tree is random (no lobes or fissures, no bronchial walls beyond the main bronchi);
the breasts and axillary soft tissue are missing and the arms are cut by the field of view.

Labels: 1 rib, 2 vertebra, 3 sternum, 4 clavicle, 5 scapula, 6 humerus (added; the meaning of
1-5 is unchanged).  Costal cartilage, lungs, heart and vessels are unlabelled.
"""

from __future__ import annotations

import numpy as np

from bonelab.phantoms import sdf
from bonelab.phantoms.spine import MEAN as LUMBAR_MEAN
from bonelab.phantoms.spine import vertebra
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import HU, Canvas

LABELS = {1: "rib", 2: "vertebra", 3: "sternum", 4: "clavicle", 5: "scapula", 6: "humerus"}
NAMES = [f"T{i}" for i in range(1, 13)] + ["L1", "L2"]
#: head-to-anterior-end drop of each rib (mm at scale 1): anterior ends 3-4 interspaces lower
RIB_DROP = {1: 45, 2: 75, 3: 95, 4: 110, 5: 120, 6: 125, 7: 125, 8: 120, 9: 110, 10: 100, 11: 70, 12: 50}
#: angle (degrees from the posterior midline) where each rib's bone ends and cartilage begins
RIB_END = {1: 140, 2: 145, 3: 145, 4: 142, 5: 138, 6: 134, 7: 130, 8: 124, 9: 118, 10: 112, 11: 100, 12: 75}
#: nominal heart width (mm, right atrial to left ventricular border) at heart scale 1, measured
#: once on the PA projection of the chambers below; the heart is scaled to the drawn CTR
HEART_WIDTH_MM = 144.5


def _draws(rng, seed):
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    return {"seed": int(seed), "scale": clipped(1.0, 0.05, 0.88, 1.12),
            "cage_width": clipped(1.0, 0.06, 0.88, 1.14), "cage_depth": clipped(1.0, 0.06, 0.88, 1.14),
            "kyphosis_deg": clipped(40, 8, 20, 60), "density": float(rng.uniform(0, 1)),
            "cortical_hu": float(rng.uniform(1250, 1750)), "fat_mm": float(rng.uniform(5, 35)),
            "noise_hu": float(rng.uniform(10, 25)), "dome_mm": clipped(70, 8, 50, 90),
            "ctr": clipped(0.46, 0.02, 0.42, 0.50), "age": float(rng.uniform(20, 80)),
            "vessel_seed": int(rng.integers(2**31))}


def _dims(i, s):
    """Vertebral dimensions (mm) of NAMES[i]."""
    if i < 12:
        t = i / 11
        h, w, d = 15 + 8 * t, 28 + 14 * t, 16 + 14 * t
        return {"height": h * s, "width": w * s, "depth": d * s, "pedicle": (3.5 + 1.0 * t) * s,
                "transverse": (20 - 6 * t) * s, "spinous": (28 + 4 * t) * s,
                "canal_w": (8 + 2 * t) * s, "canal_d": (7.5 + 0.5 * t) * s}
    j = i - 12
    return {k: v[j] * s for k, v in LUMBAR_MEAN.items()}


def spine(p):
    """Centres and rotations (local z cranial) of T1..L2, built upward from the L2 lower
    endplate at the origin; thoracic kyphosis spread evenly, a mild lumbar lordosis."""
    s = p["scale"]
    phi, top = -8.0, np.zeros(3)  # tilt in degrees, positive: the cranial axis leans anterior
    out = {}
    for i in reversed(range(14)):
        dims = _dims(i, s)
        disc = (9.5 if i >= 12 else 4 + 2 * i / 11) * s
        dphi = -3.0 if i >= 12 else p["kyphosis_deg"] / 12.0
        a = np.radians(phi)
        u = np.array([0.0, -np.sin(a), np.cos(a)])
        centre = top + u * (disc + dims["height"] / 2)
        top = centre + u * dims["height"] / 2
        R = np.column_stack([[1.0, 0, 0], [0, np.cos(a), np.sin(a)], u])
        out[NAMES[i]] = (centre, R, dims)
        phi += dphi  # lumbar lordosis leans back going up, thoracic kyphosis forward
    return out


class Cage:
    """Rib-cage centre line: half-width A(z), half-depth B(z) and centre y(z) (mm)."""

    def __init__(self, z_t1, z_t10, yc, p):
        s = p["scale"]
        self.zs = np.array([z_t10 - 80, z_t10, (z_t1 + z_t10) / 2, z_t1, z_t1 + 25])
        self.a = np.array([128, 135, 118, 58, 40]) * s * p["cage_width"]
        self.b = np.array([92, 95, 80, 42, 30]) * s * p["cage_depth"]
        self.yc = yc

    def at(self, z):
        return np.interp(z, self.zs, self.a), np.interp(z, self.zs, self.b)

    def distance(self, X, Y, Z, inset=0.0):
        """First-order distance (mm) to the cage cylinder shrunk by ``inset`` mm."""
        A, B = (np.asarray(v, np.float32)[:, None, None] - inset for v in self.at(Z[:, 0, 0]))
        u, v = X / A, (Y - self.yc) / B
        r = np.sqrt(u * u + v * v) + 1e-6
        return (r - 1.0) / (np.sqrt((u / A) ** 2 + (v / B) ** 2) / r + 1e-6)


class _Offset(sdf.Shape):
    """A shape grown by ``r`` mm (its distance minus r): a fat layer around the heart."""

    def __init__(self, shape, r):
        self.shape, self.r = shape, float(r)
        self.lo, self.hi = shape.lo - r, shape.hi + r

    def evaluate(self, grid, region):
        return self.shape.evaluate(grid, region) - np.float32(self.r)


def flat_tube(points, half_thick, half_height, out_dirs) -> sdf.Shape:
    """A tube of elliptic cross-section swept along ``points`` (N, 3 world mm): semi-axes
    ``half_thick`` along ``out_dirs`` (per point, e.g. the outward normal of the rib cage) and
    ``half_height`` across it (per point, mm).  Each segment is an elliptic cylinder with
    ellipsoidal end caps, so consecutive segments join without seams.  A rib is flat (about
    twice as high as it is thick); :func:`sdf.tube` sweeps only round sections, hence this
    primitive (a candidate for :mod:`bonelab.phantoms.sdf`).

    >>> t = flat_tube([(0, 0, 0), (0, 0, 20)], [2, 2], [5, 5], [(1, 0, 0), (1, 0, 0)])
    >>> g = sdf.Grid((1, 1, 3), origin=(0, 3, 10))  # x = 0, 1, 2 mm at y = 3 (of 5), mid-segment
    >>> [round(float(v), 1) for v in t.sample(g, g.full)[1][0, 0]]
    [-2.0, -0.6, 0.4]
    """
    points = np.asarray(points, float)
    parts = []
    for k in range(len(points) - 1):
        a, b = points[k], points[k + 1]
        axis = b - a
        length = float(np.linalg.norm(axis))
        if length < 1e-6:
            continue
        ta = 0.5 * (half_thick[k] + half_thick[k + 1])
        tb = 0.5 * (half_height[k] + half_height[k + 1])
        rot = sdf.frame(axis, 0.5 * (np.asarray(out_dirs[k]) + np.asarray(out_dirs[k + 1])))

        def fn(x, y, z, ta=ta, tb=tb, h=length / 2):
            zc = z - np.clip(z, -h, h)  # beyond the segment: an ellipsoidal cap of depth ta
            return sdf.superellipsoid_distance(x, y, zc, (ta, tb, ta))

        parts.append(sdf.Local(fn, (ta, tb, length / 2 + ta), (a + b) / 2, rot))
    return sdf.union(*parts)


def _cage_normal(point, cage):
    """Outward horizontal normal of the cage's elliptic section at ``point`` (x, y, z mm)."""
    A, B = cage.at(point[2])
    n = np.array([point[0] / A**2, (point[1] - cage.yc) / B**2, 0.0])
    return n / (np.linalg.norm(n) + 1e-9)


def _rib(i, side, verts, cage, s):
    """Rib ``i`` (1-12) on ``side`` (+1 left): head at vertebra T``i``, neck to the transverse
    process, then around the cage, dropping :data:`RIB_DROP` mm to its anterior end.
    Returns the shape and the anterior end point."""
    c, R, d = verts[f"T{i}"]
    head = c + R @ np.array([side * (d["width"] / 2 + 1), d["depth"] / 2 + 1, 0.2 * d["height"]])
    tuberc = c + R @ np.array([side * (d["width"] / 2 + 16 * s), d["depth"] / 2 + 18 * s, 0.0])
    end, drop = RIB_END[i], RIB_DROP[i] * s
    pts = [head, tuberc]
    for th in np.linspace(35, end, 9):
        f = (th - 35) / (end - 35)
        z = tuberc[2] + 4 * s * np.sin(np.pi * min(f * 3, 1)) - drop * f**1.3  # up at the angle, then down
        A, B = cage.at(z)
        t = np.radians(th)
        pts.append(np.array([side * A * np.sin(t), cage.yc + B * np.cos(t), z]))
    dense = sdf.catmull_rom(pts, 5)
    u = np.linspace(0, 1, len(dense))
    # round at the head and neck (r ~ 4.5), flat along the shaft; upper and lowest ribs smaller
    size = 1.0 - 0.025 * abs(i - 6.5)
    flat = np.clip((u - 0.1) / 0.15, 0, 1)
    half_thick = (4.5 - 1.6 * flat) * s * size
    half_height = (4.8 + 1.8 * flat) * s * size
    normals = [_cage_normal(q, cage) if k > 2 else np.array([side * 1.0, 0, 0]) for k, q in enumerate(dense)]
    normals = [n if np.linalg.norm(n) > 0.5 else np.array([side * 1.0, 0, 0]) for n in normals]
    return flat_tube(dense, half_thick, half_height, normals), pts[-1]


def chest(seed: int, spacing: float = 2.0, noise: bool = True) -> Subject:
    """Generate a chest CT (HU) with rib, vertebra, sternum, clavicle, scapula and humerus labels.

    Parameters
    ----------
    seed : int
        Same seed, same subject bit for bit.
    spacing : float
        Isotropic voxel size in mm (default 2.0: about 200 x 160 x 205 voxels (z, y, x); at
        least 0.8).
    noise : bool
        Add CT noise.

    Returns
    -------
    Subject
        ``ct`` in HU and ``labels`` (see the module table), arrays (z, y, x), LPS mm;
        ``params`` holds the draws (``ctr``: the cardiothoracic ratio the heart was sized to,
        ``age``: drives cartilage calcification).

    >>> s = chest(0, spacing=4.0)
    >>> s.label_names[1], s.label_names[6], s.kind
    ('rib', 'humerus', 'chest')
    """
    spacing = check_inputs("chest", seed, spacing, 0.8)
    ss = np.random.SeedSequence(int(seed))
    rng, rng_tex = (np.random.default_rng(c) for c in ss.spawn(2))
    p = _draws(rng, seed)
    s, fat = p["scale"], p["fat_mm"]
    verts, cage = _frame(p)
    z_t1 = verts["T1"][0][2]
    z_lo, z_hi = verts["L2"][0][2] - 15 * s, z_t1 + 40 * s
    half_x = max(135 * s * p["cage_width"] + 40, 185 * s) + fat
    grid = sdf.Grid.around((-half_x, -(95 * s * p["cage_depth"] + 30 + fat), z_lo),
                           (half_x, 95 * s * p["cage_depth"] + 60 + fat, z_hi), spacing)
    canvas = Canvas(grid, rng_tex)
    _soft_tissue(canvas, p, cage, verts, s)

    trab = 90.0 + 140.0 * p["density"]
    p["trabecular_hu"] = trab
    cort = p["cortical_hu"]
    p["vertebrae"] = {name: {"center_mm": c.tolist()} for name, (c, _, _) in verts.items()}
    for name, (c, R, d) in verts.items():
        shape = vertebra(sdf.Placement(R, shift=c), d, thoracic=name.startswith("T"))
        region, dist = shape.sample(grid)
        canvas.bone(region, dist, 2, cort, trab, 1.0)
    ends, ribs = {}, []
    for i in range(1, 13):
        for side in (-1, 1):
            shape, ends[(i, side)] = _rib(i, side, verts, cage, s)
            ribs.append(shape)
    region, dist = sdf.union(*ribs).sample(grid)  # one region: texture and paint once, not 24 times
    canvas.bone(region, dist, 1, cort, trab * 1.1, 1.0)
    _sternum(canvas, cage, verts, s, cort, trab)
    _costal_cartilage(canvas, cage, verts, ends, p, s)
    _clavicles(canvas, cage, verts, s, cort, trab)
    glenoids = _scapulae(canvas, cage, verts, s, cort, trab)
    _humeri(canvas, glenoids, s, cort, trab)
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.8)
    return make_subject("chest", hu, canvas.labels, grid, LABELS, p)


def _frame(p):
    """Vertebrae (centre, rotation, dimensions) and the rib cage of the draws ``p``, with the
    cage centre at y = 0 (the vertebral bodies sit in its posterior part) and T6 at z = 0."""
    s = p["scale"]
    verts = spine(p)
    t8 = verts["T8"][0]
    shift = np.array([0.0, -(t8[1] - 55 * s * p["cage_depth"]), -verts["T6"][0][2]])
    verts = {k: (c + shift, R, d) for k, (c, R, d) in verts.items()}
    return verts, Cage(verts["T1"][0][2], verts["T10"][0][2], 0.0, p)


def _heart_placement(p, verts):
    """Centre (x, y, z mm) and size factor of the heart: sized so that its width is the drawn
    cardiothoracic ratio times the inner thoracic width, seated on the left hemidiaphragm."""
    s = p["scale"]
    thorax_width = 2 * (135 * p["cage_width"] - 9) * s  # inner rib margins at the widest level
    f = p["ctr"] * thorax_width / HEART_WIDTH_MM
    z_base = verts["T12"][0][2] - 20 * s
    return np.array([22 * f, -24 * s, z_base + 0.9 * p["dome_mm"] * s + 50 * f]), f


def heart_mask(subject: Subject):
    """The heart of a chest phantom (chambers and epicardial fat, as painted) as a uint8 Volume
    on the subject's grid (arrays (z, y, x)), rebuilt from ``subject.params``: the phantom's
    label map holds bones only.

    >>> s = chest(0, spacing=4.0)
    >>> m = heart_mask(s); 400 < float(m.array.sum()) * 64 / 1000 < 900   # cm3
    True
    """
    p = subject.params
    verts, _ = _frame(p)
    c, f = _heart_placement(p, verts)
    heart, _ = _heart(c, f, verts, p["scale"])
    grid = sdf.Grid(subject.ct.shape, subject.ct.spacing, subject.ct.origin)
    out = np.zeros(grid.shape, np.uint8)
    region, d = _Offset(heart, 3.0 * f).sample(grid)
    if region is not None:
        out[region] = d < 0
    return subject.ct.with_array(out, label_names={1: "heart"})


def _arm_axis(side, z_sh, s):
    """Top and bottom points of an arm hanging at the side (x, y, z mm)."""
    return (np.array([side * 168 * s, 8 * s, z_sh + 5 * s]),
            np.array([side * 182 * s, 16 * s, z_sh - 320 * s]))


def _soft_tissue(canvas, p, cage, verts, s):
    fat = p["fat_mm"]
    g = canvas.grid
    wall = 18 * s

    def body(X, Y, Z):  # chest wall + fat around the cage, wider shoulders at the top
        z = Z[:, 0, 0]
        A, B = cage.at(z)
        shoulder = np.clip((z - verts["T5"][0][2]) / (50 * s), 0, 1) * 100 * s  # shoulder girdle
        A = (A + wall + fat + shoulder).astype(np.float32)[:, None, None]
        B = (B + wall + fat).astype(np.float32)[:, None, None]
        B = B + 18 * s
        # a superellipse (exponent 2.6): chest cross-sections are boxier than ellipses
        u, v = np.abs(X) / A + 1e-6, np.abs(Y - 18 * s) / B + 1e-6
        pu, pv = u ** 2.6, v ** 2.6
        r = (pu + pv) ** (1 / 2.6)
        gx, gy = pu / u / A, pv / v / B
        return (r - 1.0) / (r ** -1.6 * np.sqrt(gx * gx + gy * gy) + 1e-6)

    lo = g.origin - 50
    hi = g.origin + g.spacing * np.array(g.shape[::-1]) + 50
    z_sh = verts["T2"][0][2] + 15 * s
    shoulders = [sdf.capsule((side * 40 * s, -5 * s, z_sh), (side * 160 * s, 10 * s, z_sh), 48 * s + fat)
                 for side in (-1, 1)]
    arms = [sdf.capsule(*_arm_axis(side, z_sh, s), 42 * s + fat, 36 * s + fat) for side in (-1, 1)]
    t3 = verts["T3"][0]
    neck = sdf.capsule((0, t3[1] - 10 * s, t3[2]), (0, t3[1] - 10 * s, t3[2] + 120 * s), 62 * s + fat)
    region, d = sdf.union(sdf.Field(body, lo, hi), neck, *shoulders, *arms, k=20.0).sample(g, g.full)
    hu = canvas.hu[region]
    hu[...] = HU["air"]
    for depth, step in ((0.0, HU["skin"] - HU["air"]), (2.0, HU["fat"] - HU["skin"]),
                        (2.0 + fat, HU["muscle"] - HU["fat"])):
        o = canvas.occupancy(d + np.float32(depth))
        o *= np.float32(step)
        hu += o

    # lungs: inside the cage (inset past the ribs), above the domes, lateral to the mediastinum
    dome = p["dome_mm"] * s
    z_base = verts["T12"][0][2] - 20 * s  # the deepest (costophrenic) recesses

    def lungs(X, Y, Z):
        inside = cage.distance(X, Y, Z, inset=9 * s)
        side = np.sign(X)
        top = verts["T1"][0][2] + 18 * s
        zd = z_base + np.where(side < 0, 15 * s, 0.0) + dome * (
            1 - ((np.abs(X) - 60 * s) / (110 * s)) ** 2 - ((Y + 10 * s) / (130 * s)) ** 2)
        apex = Z - top + 0.004 * (X * X + Y * Y) / s
        return np.maximum(np.maximum(inside, zd - Z), np.maximum(apex, 14 * s - np.abs(X)))

    # below the diaphragm (painted first; the lungs cover it above the domes): liver on the right,
    # stomach with a gas bubble on the left
    canvas.fill(sdf.ellipsoid((-60 * s, -5 * s, z_base + dome - 55 * s), np.array([100, 85, 70]) * s), HU["liver"])
    canvas.fill(sdf.ellipsoid((65 * s, -20 * s, z_base + 0.8 * dome - 22 * s), np.array([28, 22, 18]) * s),
                HU["air"] + 30)
    lung_region, dl = sdf.Field(lungs, lo, hi).sample(g)
    tex = canvas.texture(dl.shape, 2.0)
    Y = g.coords(lung_region)[1]
    canvas.fill(None, HU["lung"] + 25 * tex + 0.25 * Y, lung_region, dl)
    hila = {side: np.array([side * 52 * s, 0.0, verts["T6"][0][2] + 5 * s]) for side in (-1, 1)}
    p["hila_mm"] = {"right": hila[-1].tolist(), "left": hila[1].tolist()}
    _vessels(canvas, p, hila, lungs, s)
    # mediastinum: fat, the heart and great vessels, trachea; soft tissue (azygos, oesophagus,
    # paravertebral muscle) around the thoracic spine
    canvas.fill(sdf.ellipsoid((0, -20 * s, verts["T4"][0][2]), np.array([30, 45, 75]) * s), HU["fat"] + 30)
    column = [verts[f"T{i}"] for i in range(1, 13)]
    canvas.fill(sdf.tube([c for c, _, _ in column], [d["width"] / 2 + 10 * s for _, _, d in column]), HU["soft"])
    heart_c, f = _heart_placement(p, verts)
    heart, vessels = _heart(heart_c, f, verts, s)
    canvas.fill(_Offset(heart, 3.0 * f), HU["fat"])  # epicardial fat
    canvas.fill(heart, HU["blood"])
    canvas.fill(vessels, HU["blood"])
    t1, t5 = verts["T1"][0], verts["T5"][0]
    carina = np.array([0.0, t5[1] - 35 * s, t5[2]])
    airway = [sdf.capsule(np.array([0, t1[1] - 30 * s, t1[2] + 50 * s]), carina, 9 * s)]
    for side in (-1, 1):
        airway.append(sdf.capsule(carina, carina + np.array([side * 45, 5, -25]) * s, 7 * s, 5 * s))
    canvas.fill(sdf.union(*airway), HU["air"])


def _heart(c, f, verts, s):
    """The heart (chambers, blended) and the great vessels around centre ``c`` (mm), scaled by
    ``f``.  In a PA view the right atrium makes the right border, the left ventricle the left
    border with the apex down and to the left, the pulmonary trunk and the aortic knob the upper
    left border, the superior vena cava the upper right one."""
    deep = np.array([1.0, 1.25, 1.0])  # the heart fills the depth between sternum and spine

    def at(v):
        return c + np.asarray(v, float) * deep * f

    apex_dir = np.array([0.62, -0.5, -0.6])
    chambers = [
        sdf.ellipsoid(at((28, -4, -12)), np.array([34, 40, 60]) * f, sdf.frame(apex_dir, (0, 0, 1))),  # LV
        sdf.ellipsoid(at((2, -30, -16)), np.array([46, 28, 38]) * deep * f, sdf.rotation(rz=-25, ry=-15)),  # RV
        sdf.ellipsoid(at((-36, 8, 6)), np.array([26, 36, 42]) * deep * f),  # RA
        sdf.ellipsoid(at((6, 34, 26)), np.array([34, 22, 26]) * deep * f),  # LA
    ]
    heart = sdf.union(*chambers, k=10.0 * f)
    sp4, sp6 = verts["T4"][0], verts["T6"][0]
    root = at((-6, 2, 28))
    arch = [root, at((-14, -4, 70)), np.array([-2 * s, sp4[1] - 42 * s, sp4[2] + 8 * s]),
            np.array([18 * s, sp4[1] - 22 * s, sp4[2] + 2 * s]),  # the aortic knob, left of T4
            np.array([20 * s, sp6[1] - 18 * s, sp6[2]]), np.array([14 * s, sp6[1] - 18 * s, sp6[2] - 170 * s])]
    aorta = sdf.tube(arch, [14 * s, 15 * s, 14 * s, 14 * s, 12 * s, 11 * s])
    trunk = sdf.tube([at((12, -26, 22)), at((26, -14, 52)), at((40, 0, 60))], [14 * f, 13 * f, 10 * f])
    t1 = verts["T1"][0]
    svc = sdf.capsule(at((-38, 6, 24)), np.array([-28 * s, t1[1] - 40 * s, t1[2]]), 10 * s)
    ivc = sdf.capsule(at((-32, 14, -20)), at((-30, 20, -90)), 12 * s)
    return heart, sdf.union(aorta, trunk, svc, ivc)


def _vessels(canvas, p, hila, lungs, s):
    """Pulmonary vessels: a pulmonary artery to each hilum (radius 9 -> 7.5 mm), then three lobar
    trunks that branch in two, five times, from 7 mm to ~1 mm radius, spreading toward the periphery; a branch that would leave the
    lung tries other directions and is dropped after four tries, so the tree stays inside
    the lung and is densest at the hila."""
    rng = np.random.default_rng(p["vessel_seed"])

    def in_lung(q):
        return float(lungs(*(np.full((1, 1, 1), v, np.float32) for v in q))[0, 0, 0]) < -2.0

    for side, hilum in hila.items():
        # the pulmonary artery from the mediastinum to the hilum, then three lobar trunks
        canvas.fill(sdf.capsule(hilum * np.array([0.45, 1, 1]) + np.array([0, -5 * s, 10 * s]), hilum, 9 * s, 7.5 * s),
                    HU["blood"])
        stack = [(hilum, np.array(d, float) / np.linalg.norm(d), 8.0 * s, 0)
                 for d in ((side * 0.5, 0.1, 0.85), (side * 0.9, -0.4, -0.15), (side * 0.5, 0.45, -0.75))]
        while stack:
            a, direction, r, depth = stack.pop()
            length = rng.uniform(22, 34) * s * 0.8**depth
            for _ in range(4):  # a branch that would leave the lung tries another direction
                b = a + direction * length
                if in_lung(b):
                    break
                direction = direction + rng.normal(0, 0.8, 3)
                direction /= np.linalg.norm(direction)
            else:
                continue
            canvas.fill(sdf.capsule(a, b, r, r * 0.85), HU["blood"])
            if depth < 5:
                outward = (b - hilum) / (np.linalg.norm(b - hilum) + 1e-9)
                for _ in range(2):
                    d = direction + 0.5 * outward + rng.normal(0, 0.55, 3)
                    stack.append((b, d / np.linalg.norm(d), r * 0.62, depth + 1))


def _front(cage, s):
    """y (mm) of the anterior surface of the cage at height z."""
    return lambda z: cage.yc - cage.at(z)[1] - 4 * s


def _sternal_levels(verts, s):
    """z (mm) of the jugular notch, the sternal angle (manubriosternal joint) and the
    xiphisternal joint: T2/T3, T4/T5 and T9 levels."""
    z_top = verts["T2"][0][2] - 5 * s
    return z_top, z_top - 50 * s, verts["T9"][0][2]


def _plate(top, bottom, w_top, w_bottom, thick, e_xy=2.6):
    """A plate from ``top`` to ``bottom`` (world mm) whose width changes linearly from
    ``w_top`` to ``w_bottom`` (mm, left-right) at ``thick`` mm (antero-posterior)."""
    axis = np.asarray(top, float) - np.asarray(bottom, float)
    half = np.linalg.norm(axis) / 2
    wmax = max(w_top, w_bottom) / 2

    def fn(x, y, z):
        w = (w_bottom + (w_top - w_bottom) * np.clip((z + half) / (2 * half), 0, 1)) / 2
        return sdf.superellipsoid_distance(x * (wmax / w), y, z, (wmax, thick / 2, half), e_xy, 5.0)

    rot = sdf.frame(axis, (1.0, 0.0, 0.0))
    return sdf.Local(fn, (wmax, thick / 2, half), (np.asarray(top) + bottom) / 2, rot)


def _sternum(canvas, cage, verts, s, cort, trab):
    """Manubrium, body and xiphoid: three bones of label 3 separated by the manubriosternal
    (2.5 mm) and xiphisternal (2 mm) synchondroses, filled with cartilage."""
    y = _front(cage, s)
    z_top, z_angle, z_xiph = _sternal_levels(verts, s)
    gap1, gap2 = 2.5 * s, 2.0 * s

    def pt(z, dy=0.0):
        return np.array([0.0, y(z) + dy, z])

    parts = [_plate(pt(z_top, 6 * s), pt(z_angle + gap1 / 2, 5 * s), 54 * s, 30 * s, 12 * s),
             _plate(pt(z_angle - gap1 / 2, 5 * s), pt(z_xiph + gap2 / 2, 4.5 * s), 27 * s, 31 * s, 10 * s),
             _plate(pt(z_xiph - gap2 / 2, 3 * s), pt(z_xiph - 35 * s, 0.0), 16 * s, 6 * s, 5 * s)]
    canvas.fill(sdf.capsule(pt(z_top, 6 * s), pt(z_xiph - 20 * s, 3 * s), 4.5 * s, 2.5 * s), HU["cartilage"])  # the joints
    for shape in parts:
        region, d = shape.sample(canvas.grid)
        canvas.bone(region, d, 3, cort, trab, 1.0)


def _costal_cartilage(canvas, cage, verts, ends, p, s):
    """Costal cartilage (unlabelled): ribs 1-7 to the sternal edge, ribs 8-10 up to the
    cartilage of the rib above (the costal margin).  HU 120 +- 25, with calcified spots that
    appear from age 30 and cover more of the cartilage with age."""
    y = _front(cage, s)
    z_top, z_angle, z_xiph = _sternal_levels(verts, s)
    insert = {1: z_top - 12 * s, 2: z_angle}
    insert.update({i: z_angle + (z_xiph - z_angle) * (i - 2) / 5 for i in range(3, 8)})
    paths = []
    for side in (-1, 1):
        for i in range(1, 11):
            e = ends[(i, side)]
            if i <= 7:
                zt = insert[i]
                target = np.array([side * 13 * s, y(zt) + 4 * s, zt])
                mid = np.array([side * (abs(e[0]) * 0.45 + 8 * s), y((e[2] + zt) / 2) - 2 * s, (e[2] + zt) / 2 - 4 * s])
            else:  # joins the cartilage of the rib above, medially and upward
                above = ends[(i - 1, side)]
                target = np.array([above[0] * 0.55, y(above[2] - 10 * s) + 2 * s, above[2] - 10 * s])
                mid = (e + target) / 2 + np.array([0, -3 * s, -2 * s])
            paths.append(sdf.tube([e, mid, target], [4.2 * s, 4.0 * s, 3.8 * s]))
    shape = sdf.union(*paths)
    region, d = shape.sample(canvas.grid)
    tex = canvas.texture(d.shape, 1.5)
    calcified = np.clip((p["age"] - 30.0) / 50.0, 0.0, 1.0)  # none at 30, most at 80
    value = HU["cartilage"] + 10.0 + 25.0 * tex + 450.0 * np.clip(tex - (2.2 - 1.6 * calcified), 0.0, 1.0)
    canvas.fill(None, value, region, d)


def _clavicles(canvas, cage, verts, s, cort, trab):
    y = _front(cage, s)
    z_top = _sternal_levels(verts, s)[0]
    for side in (-1, 1):
        pts = [np.array([side * 20 * s, y(z_top) + 9 * s, z_top + 8 * s]),
               np.array([side * 60 * s, y(z_top) + 5 * s, z_top + 16 * s]),
               np.array([side * 110 * s, y(z_top) + 12 * s, z_top + 22 * s]),
               np.array([side * 150 * s, 25 * s, z_top + 20 * s])]
        region, d = sdf.tube(pts, [7 * s, 6 * s, 6 * s, 7.5 * s]).sample(canvas.grid)
        canvas.bone(region, d, 4, cort, trab, 1.5)


def _scapulae(canvas, cage, verts, s, cort, trab):
    """Scapulae (label 5): body plate over ribs 2-8, spine and acromion, glenoid.  Returns the
    glenoid centre and its lateral direction per side."""
    z2, z3, z8 = (verts[n][0][2] for n in ("T2", "T3", "T8"))

    def on_back(x, z, off):
        A, B = cage.at(z)
        return np.array([x, cage.yc + B * np.sqrt(max(1 - (x / (A + 15 * s)) ** 2, 0.05)) + off, z])

    glenoids = {}
    for side in (-1, 1):
        sup = on_back(side * 60 * s, z2 + 10 * s, 20 * s)
        inf = on_back(side * 85 * s, z8, 20 * s)
        lat = on_back(side * 130 * s, z3 - 5 * s, 18 * s)
        plate = sdf.triangle_plate(sup, inf, lat, 5.0 * s)
        spine_ = sdf.tube([on_back(side * 62 * s, z3, 24 * s), on_back(side * 130 * s, z2 + 18 * s, 22 * s),
                           np.array([side * 150 * s, 12 * s, z2 + 30 * s])], [4.5 * s, 6 * s, 7 * s])
        glenoid = lat + np.array([side * 12, -14, 6]) * s
        cup = sdf.ellipsoid(glenoid, np.array([8, 13, 19]) * s)
        region, d = sdf.union(plate, spine_, cup, k=6 * s).sample(canvas.grid)
        canvas.bone(region, d, 5, cort, trab, 1.5)
        glenoids[side] = glenoid
    return glenoids


def _humeri(canvas, glenoids, s, cort, trab):
    """Humeral heads (diameter 46 x scale) 3 mm lateral to the glenoid, neck and shaft down the
    arm (label 6)."""
    for side, g in glenoids.items():
        r = 23 * s
        head = g + np.array([side * (8 * s + 3 + r), 4 * s, -3 * s])
        _, bottom = _arm_axis(side, head[2] - 5 * s, s)
        shaft_top = head + np.array([side * 8, 4, -30]) * s
        shape = sdf.union(sdf.sphere(head, r), sdf.capsule(head + np.array([side * 6, 0, -10]) * s, shaft_top,
                                                             17 * s, 13 * s),
                          sdf.capsule(shaft_top, bottom, 12 * s, 11 * s), k=8 * s)
        region, d = shape.sample(canvas.grid)
        canvas.bone(region, d, 6, cort, trab, 2.0)


# --- measurements on a chest CT (the phantom's or a real one) ------------------------------------
def lung_mask(ct) -> np.ndarray:
    """Aerated lung (and airway) of a chest CT (HU, arrays (z, y, x)): the connected regions
    below -400 HU that touch no side of the volume in x or y (the air around the body does) and
    hold at least 5 % of the largest such region's voxels.  Boolean array (z, y, x)."""
    from scipy import ndimage

    comp, n = ndimage.label(ct.array < -400)
    sides = np.unique(np.concatenate([comp[:, :, 0].ravel(), comp[:, :, -1].ravel(),
                                      comp[:, 0, :].ravel(), comp[:, -1, :].ravel()]))
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[sides] = 0
    keep = sizes >= 0.05 * sizes.max()
    keep[0] = False
    return keep[comp]


def cardiothoracic_ratio(heart, lungs, spacing_x: float) -> dict:
    """Cardiothoracic ratio as on a PA film, from a heart mask and a lung mask (boolean arrays
    (z, y, x): :func:`heart_mask` and :func:`lung_mask` for a phantom, the ``heart`` and
    ``lung_*`` labels of a TotalSegmentator-style label map for a real CT).

    Both are projected along y (PA).  The cardiac width is the heart silhouette's widest
    extent in x (right heart border to left heart border, MRD + MLD); the thoracic width is
    the widest row of the projected lungs (the inner rib margins, usually just above the
    domes).  ``spacing_x`` is the x voxel size in mm.  Returns ``{"ctr", "cardiac_mm",
    "thoracic_mm"}``.

    >>> heart = np.zeros((1, 1, 10), bool); heart[0, 0, 3:7] = True
    >>> lungs = np.zeros((1, 1, 10), bool); lungs[0, 0, 1:3] = lungs[0, 0, 7:9] = True
    >>> float(cardiothoracic_ratio(heart, lungs, 2.0)["ctr"])
    0.5
    """
    cols = np.nonzero(np.asarray(heart).any(axis=(0, 1)))[0]
    cardiac = float(np.ptp(cols) + 1) * float(spacing_x)
    proj = np.asarray(lungs).any(axis=1)  # (z, x)
    widths = [np.ptp(np.nonzero(row)[0]) + 1 for row in proj if row.any()]
    thoracic = float(max(widths)) * float(spacing_x)
    return {"ctr": cardiac / thoracic, "cardiac_mm": cardiac, "thoracic_mm": thoracic}
