"""A procedural chest: ribs, thoracic and upper lumbar vertebrae, sternum, clavicles, scapulae,
lungs with vessels, heart, mediastinum, diaphragm and upper abdomen, soft tissue.

Frame: LPS (x left, y posterior, z superior), patient supine; arrays ``(z, y, x)``.  A PA chest
radiograph (or CT localizer) projects along y.

Anatomy and distributions (mm, degrees, HU):

=========================  =======================================  ===================================
quantity                   value                                    source / note
=========================  =======================================  ===================================
vertebral bodies T1..T12   height 15 -> 23, width 28 -> 42,         Panjabi et al. 1991, Spine 16:888
                           depth 16 -> 30 (linear); L1-L2 as in     (thoracic morphometry)
                           :mod:`bonelab.phantoms.spine`
thoracic discs             4 -> 6 mm; lumbar 9-10 mm
thoracic kyphosis T1-T12   N(40, 8), in [20, 60]                    adult normal range 20-50 deg
rib cage half-width        55 (T1) -> 135 (T9) x N(1, 0.06)          chest width ~270-300 mm
rib cage half-depth        40 (T1) -> 95 (T10) x N(1, 0.06)
ribs                       12 pairs, radius 5 -> 3.5 mm, anterior   ribs 1-7 join the sternum through
                           ends 25-60 mm below their heads          costal cartilage (~120 HU)
sternum                    manubrium + body + xiphoid, ~160 mm
clavicle                   S-shaped tube ~150 mm, radius 6-7
scapula                    triangular plate over ribs 2-8, spine,
                           glenoid
lung                       -850 HU, texture SD 25, vessels from the  healthy inspiration CT
                           hila; domes N(70, 8) mm above the
                           costophrenic recesses, right ~15 higher
heart, aorta, trachea      40, 40 and -1000 HU; epicardial fat
subcutaneous fat           U(5, 35)                                 habitus
trabecular / cortical HU   90 + 140 * density / U(1250, 1750)
=========================  =======================================  ===================================

Labels: 1 rib, 2 vertebra, 3 sternum, 4 clavicle, 5 scapula.
"""

from __future__ import annotations

import numpy as np

from bonelab.phantoms import sdf
from bonelab.phantoms.spine import MEAN as LUMBAR_MEAN
from bonelab.phantoms.spine import vertebra
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import HU, Canvas

LABELS = {1: "rib", 2: "vertebra", 3: "sternum", 4: "clavicle", 5: "scapula"}
NAMES = [f"T{i}" for i in range(1, 13)] + ["L1", "L2"]


def _draws(rng, seed):
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    return {"seed": int(seed), "scale": clipped(1.0, 0.05, 0.88, 1.12),
            "cage_width": clipped(1.0, 0.06, 0.88, 1.14), "cage_depth": clipped(1.0, 0.06, 0.88, 1.14),
            "kyphosis_deg": clipped(40, 8, 20, 60), "density": float(rng.uniform(0, 1)),
            "cortical_hu": float(rng.uniform(1250, 1750)), "fat_mm": float(rng.uniform(5, 35)),
            "noise_hu": float(rng.uniform(10, 25)), "dome_mm": clipped(70, 8, 50, 90),
            "heart_scale": clipped(1.0, 0.07, 0.85, 1.2),
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


def _rib(i, side, verts, cage, s):
    """Rib ``i`` (1-12) on ``side`` (+1 left): head at vertebra T``i``, around the cage, down."""
    c, R, d = verts[f"T{i}"]
    head = c + R @ np.array([side * (d["width"] / 2 + 1), d["depth"] / 2 + 1, 0.2 * d["height"]])
    tuberc = c + R @ np.array([side * (d["width"] / 2 + 16 * s), d["depth"] / 2 + 18 * s, 0.0])
    end = {1: 150, 2: 160, 3: 165, 4: 165, 5: 165, 6: 160, 7: 155, 8: 145, 9: 135, 10: 125, 11: 100, 12: 75}[i]
    drop = (20 + 5 * min(i, 7)) * s
    pts = [head, tuberc]
    for th in np.linspace(35, end, 7):
        z = tuberc[2] - drop * (th - 35) / (end - 35)
        A, B = cage.at(z)
        t = np.radians(th)
        pts.append(np.array([side * A * np.sin(t), cage.yc + B * np.cos(t), z]))
    radius = (4.5 - 0.08 * abs(i - 6)) * s
    return sdf.tube(pts, [radius] * len(pts)), pts[-1]


def chest(seed: int, spacing: float = 2.0, noise: bool = True) -> Subject:
    """Generate a chest CT (HU) with rib, vertebra, sternum, clavicle and scapula labels.

    Parameters
    ----------
    seed : int
        Same seed, same subject bit for bit.
    spacing : float
        Isotropic voxel size in mm (default 2.0: about 180 x 140 x 175 voxels; at least 0.8).
    noise : bool
        Add CT noise.

    >>> s = chest(0, spacing=4.0)
    >>> s.label_names[1], s.kind
    ('rib', 'chest')
    """
    spacing = check_inputs("chest", seed, spacing, 0.8)
    ss = np.random.SeedSequence(int(seed))
    rng, rng_tex = (np.random.default_rng(c) for c in ss.spawn(2))
    p = _draws(rng, seed)
    s, fat = p["scale"], p["fat_mm"]
    verts = spine(p)
    # put the cage centre at y=0: vertebral bodies sit in its posterior part
    t8 = verts["T8"][0]
    shift = np.array([0.0, -(t8[1] - 55 * s * p["cage_depth"]), -verts["T6"][0][2]])
    verts = {k: (c + shift, R, d) for k, (c, R, d) in verts.items()}
    z_t1, z_t10 = verts["T1"][0][2], verts["T10"][0][2]
    cage = Cage(z_t1, z_t10, 0.0, p)
    z_lo, z_hi = verts["L2"][0][2] - 15 * s, z_t1 + 40 * s
    half_x = max(135 * s * p["cage_width"] + 40, 185 * s) + fat
    grid = sdf.Grid.around((-half_x, -(95 * s * p["cage_depth"] + 30 + fat), z_lo),
                           (half_x, 95 * s * p["cage_depth"] + 60 + fat, z_hi), spacing)
    canvas = Canvas(grid, rng_tex)
    _soft_tissue(canvas, p, cage, verts, s)

    trab = 90.0 + 140.0 * p["density"]
    p["trabecular_hu"] = trab
    cort = p["cortical_hu"]
    for name, (c, R, d) in verts.items():
        shape = vertebra(sdf.Placement(R, shift=c), d, thoracic=name.startswith("T"))
        region, dist = shape.sample(grid)
        canvas.bone(region, dist, 2, cort, trab, 1.0)
    ends = {}
    for i in range(1, 13):
        for side in (-1, 1):
            shape, ends[(i, side)] = _rib(i, side, verts, cage, s)
            region, dist = shape.sample(grid)
            canvas.bone(region, dist, 1, cort, trab * 1.1, 1.2)
    _sternum_clavicles(canvas, cage, verts, ends, s, cort, trab)
    _scapulae(canvas, cage, verts, s, cort, trab)
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.8)
    return make_subject("chest", hu, canvas.labels, grid, LABELS, p)


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
    t3 = verts["T3"][0]
    neck = sdf.capsule((0, t3[1] - 10 * s, t3[2]), (0, t3[1] - 10 * s, t3[2] + 120 * s), 62 * s + fat)
    region, d = sdf.union(sdf.Field(body, lo, hi), neck, *shoulders, k=20.0).sample(g, g.full)
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
    _vessels(canvas, p, verts, s)
    # mediastinum: fat, heart with epicardial fat on the left dome, aorta, trachea; soft tissue
    # (azygos, oesophagus, paravertebral muscle) around the thoracic spine
    heart_c = np.array([25 * s, -35 * s, z_base + 0.9 * dome + 42 * s])
    hs = p["heart_scale"] * s
    hr = sdf.rotation(ry=-35, rz=-25)
    canvas.fill(sdf.ellipsoid((0, -20 * s, verts["T4"][0][2]), np.array([42, 60, 90]) * s), HU["fat"] + 30)
    canvas.fill(sdf.ellipsoid(heart_c, np.array([72, 56, 64]) * hs, hr), HU["fat"])
    canvas.fill(sdf.ellipsoid(heart_c, np.array([66, 50, 58]) * hs, hr), HU["blood"])
    column = [verts[f"T{i}"] for i in range(1, 13)]
    canvas.fill(sdf.tube([c for c, _, _ in column], [d["width"] / 2 + 10 * s for _, _, d in column]), HU["soft"])
    sp = verts["T8"][0]
    arch = [heart_c + np.array([-12, 5, 50]) * s, np.array([-5 * s, -25 * s, verts["T4"][0][2]]),
            np.array([12 * s, sp[1] - 30 * s, verts["T4"][0][2] - 5 * s]),
            np.array([22 * s, sp[1] - 22 * s, verts["T6"][0][2]]), np.array([15 * s, sp[1] - 20 * s, z_base - 40 * s])]
    canvas.fill(sdf.tube(arch, 13 * s), HU["blood"])
    t1, t5 = verts["T1"][0], verts["T5"][0]
    carina = np.array([0.0, t5[1] - 35 * s, t5[2]])
    airway = [sdf.capsule(np.array([0, t1[1] - 30 * s, t1[2] + 50 * s]), carina, 9 * s)]
    for side in (-1, 1):
        airway.append(sdf.capsule(carina, carina + np.array([side * 45, 5, -25]) * s, 7 * s, 5 * s))
    canvas.fill(sdf.union(*airway), HU["air"])


def _vessels(canvas, p, verts, s):
    """Pulmonary vessels: random branching tubes from each hilum (blood HU)."""
    rng = np.random.default_rng(p["vessel_seed"])
    hil_z = verts["T6"][0][2]
    for side in (-1, 1):
        stack = [(np.array([side * 40 * s, -5 * s, hil_z]), np.array([side * 1.0, 0.0, 0.0]), 6.0 * s, 0)]
        while stack:
            a, direction, r, depth = stack.pop()
            length = rng.uniform(20, 35) * s
            b = a + direction * length
            canvas.fill(sdf.capsule(a, b, r, r * 0.8), HU["blood"])
            if depth < 4:
                for _ in range(2):
                    d = direction + rng.normal(0, 0.6, 3)
                    d[0] = side * abs(d[0])
                    stack.append((b, d / np.linalg.norm(d), r * 0.7, depth + 1))


def _sternum_clavicles(canvas, cage, verts, ends, s, cort, trab):
    z_top = verts["T2"][0][2] - 5 * s
    z_bot = verts["T9"][0][2]

    def y_front(z):  # anterior surface of the cage
        return cage.yc - cage.at(z)[1] - 4 * s

    manubrium = sdf.ellipsoid((0, y_front(z_top - 25 * s), z_top - 25 * s), np.array([26, 7, 26]) * s,
                              sdf.rotation(rx=-15))
    body = sdf.capsule((0, y_front(z_top - 55 * s), z_top - 55 * s), (0, y_front(z_bot), z_bot), 12 * s, 10 * s)
    body = sdf.intersect(body, sdf.superellipsoid((0, y_front((z_top + z_bot) / 2) + 2 * s, (z_top + z_bot) / 2),
                                                  (30 * s, 7 * s, 200 * s), e_xy=4))
    xiphoid = sdf.capsule((0, y_front(z_bot), z_bot), (0, y_front(z_bot) - 5 * s, z_bot - 35 * s), 6 * s, 3 * s)
    region, d = sdf.union(manubrium, body, xiphoid, k=4 * s).sample(canvas.grid)
    canvas.bone(region, d, 3, cort, trab, 1.0)
    # costal cartilage: ribs 1-10 to the sternal edge (unlabelled, cartilage HU)
    for i in range(1, 11):
        for side in (-1, 1):
            e = ends[(i, side)]
            zt = np.clip(e[2] + 10 * s, z_bot - 20 * s, z_top - 15 * s)
            target = np.array([side * 14 * s, y_front(zt) + 2 * s, zt])
            canvas.fill(sdf.tube([e, (e + target) / 2 + np.array([0, -5 * s, 5 * s]), target], 4.0 * s),
                        HU["cartilage"])
    for side in (-1, 1):
        pts = [np.array([side * 20 * s, y_front(z_top) + 9 * s, z_top + 8 * s]),
               np.array([side * 60 * s, y_front(z_top) + 5 * s, z_top + 16 * s]),
               np.array([side * 110 * s, y_front(z_top) + 12 * s, z_top + 22 * s]),
               np.array([side * 150 * s, 25 * s, z_top + 20 * s])]
        region, d = sdf.tube(pts, [7 * s, 6 * s, 6 * s, 7.5 * s]).sample(canvas.grid)
        canvas.bone(region, d, 4, cort, trab, 1.5)


def _scapulae(canvas, cage, verts, s, cort, trab):
    z2, z3, z8 = (verts[n][0][2] for n in ("T2", "T3", "T8"))

    def on_back(x, z, off):
        A, B = cage.at(z)
        return np.array([x, cage.yc + B * np.sqrt(max(1 - (x / (A + 15 * s)) ** 2, 0.05)) + off, z])

    for side in (-1, 1):
        sup = on_back(side * 60 * s, z2 + 10 * s, 20 * s)
        inf = on_back(side * 85 * s, z8, 20 * s)
        lat = on_back(side * 130 * s, z3 - 5 * s, 18 * s)
        plate = sdf.triangle_plate(sup, inf, lat, 5.0 * s)
        spine_ = sdf.capsule(on_back(side * 62 * s, z3, 24 * s), on_back(side * 140 * s, z2 + 20 * s, 20 * s),
                             4.5 * s, 6 * s)
        glenoid = sdf.ellipsoid(lat + np.array([side * 8, -12, 8]) * s, np.array([10, 12, 18]) * s)
        region, d = sdf.union(plate, spine_, glenoid, k=6 * s).sample(canvas.grid)
        canvas.bone(region, d, 5, cort, trab, 1.5)
