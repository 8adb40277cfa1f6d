"""A procedural right wrist: 8 carpal bones, distal radius and ulna, metacarpal bases, soft tissue.

Frame (LPS, anatomical position, palm forward): x points ulnar (medial, to the patient's left),
y dorsal (posterior), z proximal (superior).  A PA radiograph projects along y, a lateral one
along x.  Arrays are ``(z, y, x)``.

Anatomy and the distributions drawn (mm, degrees; N(mean, sd) clipped to about +-2.5 sd):

===========================  ==================================  =====================================
quantity                     value                               source / note
===========================  ==================================  =====================================
carpal layout                proximal row scaphoid-lunate-       standard anatomy (Gray's Anatomy);
                             triquetrum (+ pisiform palmar),     rows overlap in lateral view
                             distal row trapezium-trapezoid-
                             capitate-hamate
carpal volumes (cm3, mean    capitate 3.5, hamate 2.9, scaphoid  size order as specified for the
of 20 seeds, after joint     2.6, trapezium 2.0, lunate 1.6,     book; magnitudes of the order of
carving)                     trapezoid 1.3, triquetrum 1.1,      CT morphometry (Crisco et al. 2005,
                             pisiform 0.5                        J Hand Surg Am 30:35), which finds
                                                                 the triquetrum a little larger
scaphoid length              27 (long semi-axis 13.5)            25-30 mm in adults
joint spaces                 gap ~ U(1.2, 1.8)                   1-2 mm intercarpal joints
whole-wrist scale            N(1, 0.07), in [0.85, 1.15]         sex and stature differences ~10-15 %
per-bone size                N(1, 0.04) per semi-axis
per-bone pose                N(0, 0.5) mm, N(0, 3) deg
wrist pose                   radial/ulnar deviation U(-10, 15),  distal row turns fully, proximal row
                             flexion/extension U(-15, 15)        half (the carpal "link" mechanism)
radius                       width ~35, radial styloid ~10 mm    the radial side of the joint lies
                             more distal than the ulnar side     distal (radial inclination)
ulna head                    diameter ~16, styloid, ~6 mm        ulnar variance ~0
                             TFCC space to the triquetrum
cortical shell               carpals 0.7, radius/ulna 0.8 at     thin subchondral shells, thicker
                             the end to 2.5 in the shaft         diaphyseal cortex
trabecular HU                130 + 150 * density, density U(0,1) healthy to osteopenic
cortical HU                  U(1300, 1700)
subcutaneous fat             U(2, 7)                             body habitus
tendons                      8 flexors in a fatty carpal tunnel, tendon ~90 HU
                             7 extensors on the dorsum, r = 2
noise SD, PSF sigma          U(12, 25) HU, 0.35 mm               extremity CT, small voxels
===========================  ==================================  =====================================

Labels: 1 scaphoid, 2 lunate, 3 triquetrum, 4 pisiform, 5 trapezium, 6 trapezoid, 7 capitate,
8 hamate, 9 radius, 10 ulna.  Metacarpal bases 1-5 are bone with label 0 (they overlap the
distal row in real radiographs, so a network must learn to leave them out).
"""

from __future__ import annotations

import numpy as np

from bonelab.phantoms import sdf
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import HU, Canvas, carve_joints, layered_body, shell_profile

LABELS = {1: "scaphoid", 2: "lunate", 3: "triquetrum", 4: "pisiform", 5: "trapezium",
          6: "trapezoid", 7: "capitate", 8: "hamate", 9: "radius", 10: "ulna"}

#: Neutral carpal shapes: centre (x, y, z) mm, semi-axes (mm), exponent, long-axis direction
#: (None: axis-aligned), row ("proximal"/"distal").
CARPALS = {
    "scaphoid": ((-14.0, -2.5, 5.5), (7.4, 7.0, 14.5), 2.0, (-0.5, -0.4, -0.77), "proximal"),
    "lunate": ((-1.0, 0.5, 12.5), (7.4, 9.8, 7.3), 2.0, None, "proximal"),
    "triquetrum": ((11.0, 2.5, 9.5), (6.2, 7.0, 6.6), 2.1, None, "proximal"),
    "pisiform": ((12.0, -8.5, 7.5), (4.4, 4.8, 5.8), 2.0, None, "proximal"),
    "trapezium": ((-19.0, -6.5, -7.5), (8.1, 8.5, 8.3), 2.2, None, "distal"),
    "trapezoid": ((-10.5, 0.5, -7.5), (5.7, 8.8, 8.1), 2.2, None, "distal"),
    "capitate": ((0.0, 0.0, -5.0), (7.0, 9.6, 11.6), 2.2, None, "distal"),
    "hamate": ((12.5, 1.0, -5.0), (7.0, 9.4, 10.4), 2.2, None, "distal"),
}
#: Metacarpal bases: proximal end, distal direction, base radius, shaft radius.
METACARPALS = [
    ((-25.0, -8.0, -19.0), (-0.35, -0.12, -0.93), 7.0, 5.0),
    ((-11.0, 0.0, -19.5), (-0.08, -0.08, -1.0), 7.0, 4.5),
    ((1.0, 0.0, -21.5), (0.0, -0.06, -1.0), 7.5, 4.5),
    ((11.5, 1.0, -18.5), (0.08, -0.08, -1.0), 6.2, 4.0),
    ((19.5, 2.0, -16.0), (0.16, -0.08, -1.0), 6.0, 4.0),
]
PIVOT = (0.0, 0.0, 4.0)  # capitate head: centre of the midcarpal motion
BOX = ((-50.0, -32.0, -44.0), (42.0, 26.0, 46.0))  # field of view (x, y, z) mm


def _draws(rng: np.random.Generator, seed: int) -> dict:
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    return {
        "seed": int(seed),
        "scale": clipped(1.0, 0.07, 0.85, 1.15),
        "deviation_deg": float(rng.uniform(-10, 15)),
        "flexion_deg": float(rng.uniform(-15, 15)),
        "joint_gap_mm": float(rng.uniform(1.2, 1.8)),
        "density": float(rng.uniform(0, 1)),
        "cortical_hu": float(rng.uniform(1300, 1700)),
        "fat_mm": float(rng.uniform(2, 7)),
        "noise_hu": float(rng.uniform(12, 25)),
        "bone_size": {n: [clipped(1, 0.04, 0.9, 1.1) for _ in range(3)] for n in CARPALS},
        "bone_shift_mm": {n: [clipped(0, 0.5, -1.2, 1.2) for _ in range(3)] for n in CARPALS},
        "bone_turn_deg": {n: [clipped(0, 3, -7, 7) for _ in range(3)] for n in CARPALS},
    }


def _carpal(name, p, row: sdf.Placement, s: float) -> sdf.Shape:
    c, radii, e, axis, _ = CARPALS[name]
    jitter = sdf.Placement(sdf.rotation(*p["bone_turn_deg"][name]), c, p["bone_shift_mm"][name])
    move = jitter.then(row)
    radii = np.asarray(radii) * p["bone_size"][name] * s
    base = np.eye(3) if axis is None else sdf.frame(axis, (1, 0, 0))
    center, rot = move.point(np.asarray(c) * s), move.rot(base)
    if name == "hamate":  # the hook of the hamate projects palmarly
        hook = sdf.ellipsoid(move.point(np.array([12.0, -9.0, -8.0]) * s), np.array([3.0, 4.5, 5.0]) * s, rot)
        return sdf.union(sdf.superellipsoid(center, radii, rot, e, e), hook, k=2.0)
    if name == "capitate":  # a round head that seats in the concavity of the lunate and scaphoid
        head = sdf.sphere(move.point(np.array([0.0, 0.5, 3.5]) * s), 7.0 * s * p["bone_size"][name][0])
        return sdf.union(sdf.superellipsoid(center, radii, rot, e, e), head, k=3.0 * s)
    if name == "scaphoid":  # a waist between the two poles
        return sdf.subtract(sdf.ellipsoid(center, radii, rot),
                            sdf.sphere(center + rot @ [radii[0] * 1.9, 0, 0], radii[0]), k=2.0)
    return sdf.superellipsoid(center, radii, rot, e, e)


def _radius(s: float) -> sdf.Shape:
    end = sdf.superellipsoid(np.array([-8.0, 0.5, 28.5]) * s, np.array([17.5, 11.5, 11.0]) * s,
                             e_xy=2.6, e_z=2.4)
    styloid = sdf.capsule(np.array([-20.0, 0.0, 26.0]) * s, np.array([-24.0, 0.0, 15.0]) * s, 5.5 * s, 3.5 * s)
    shaft = sdf.capsule(np.array([-6.0, 1.0, 35.0]) * s, np.array([-3.0, 2.0, 95.0]) * s, 11.0 * s, 9.0 * s)
    return sdf.union(end, styloid, shaft, k=5.0 * s)


def _ulna(s: float) -> sdf.Shape:
    head = sdf.ellipsoid(np.array([18.0, 3.0, 30.0]) * s, np.array([8.0, 8.0, 8.5]) * s)
    styloid = sdf.capsule(np.array([20.5, 7.0, 26.0]) * s, np.array([22.0, 7.0, 18.0]) * s, 3.0 * s, 1.5 * s)
    shaft = sdf.capsule(np.array([17.5, 3.5, 34.0]) * s, np.array([16.0, 4.0, 95.0]) * s, 7.0 * s, 6.0 * s)
    return sdf.union(head, styloid, shaft, k=3.0 * s)


def _metacarpal(i: int, row: sdf.Placement, s: float) -> sdf.Shape:
    a, direction, rb, rs = METACARPALS[i]
    a = row.point(np.asarray(a) * s)
    d = row.rot() @ (np.asarray(direction) / np.linalg.norm(direction))
    base = sdf.ellipsoid(a - 1.0 * s * d, [rb * s, rb * s * 1.1, 5.0 * s], sdf.frame(d))
    return sdf.union(base, sdf.capsule(a, a + 45.0 * s * d, rs * s * 1.1, rs * s * 0.8), k=4.0 * s)


def _body(s: float, fat_mm: float) -> sdf.Shape:
    # cross-section (half-width a, half-depth b, centre cx, cy) along z: forearm -> wrist -> palm
    zs = np.array([-60.0, -40.0, -20.0, 0.0, 20.0, 60.0])
    a = np.array([41.0, 40.0, 37.0, 33.0, 31.0, 31.0]) * s + 0.5 * fat_mm
    b = np.array([15.0, 16.0, 18.5, 20.0, 20.5, 22.0]) * s + 0.5 * fat_mm
    cx = np.array([-5.0, -5.0, -4.0, -2.0, 1.0, 2.0]) * s
    cy = np.array([-2.0, -2.0, -1.0, 0.0, 1.5, 2.5]) * s

    def fn(X, Y, Z):
        z = Z[:, 0, 0]
        A, B, CX, CY = (np.interp(z, zs, v).astype(np.float32)[:, None, None] for v in (a, b, cx, cy))
        u, v = (X - CX) / A, (Y - CY) / B
        r = np.sqrt(u * u + v * v) + 1e-6
        # first-order distance to the ellipse: (r - 1) / |grad r|
        g = np.sqrt((u / A) ** 2 + (v / B) ** 2) / r + 1e-6
        return (r - 1.0) / g

    forearm = sdf.Field(fn, (-80, -40, -80), (80, 40, 120))
    thenar = sdf.ellipsoid(np.array([-28.0, -12.0, -30.0]) * s, np.array([18.0, 16.0, 30.0]) * s)
    return sdf.union(forearm, thenar, k=8.0)


#: Tendons (x, y) at the wrist in mm: flexors in the carpal tunnel (palmar, y < 0), extensor
#: compartments on the dorsum (y > 0); they run along z, curving palmar/dorsal with the bones.
TENDONS = [(-8, -13), (-3, -14), (2, -14), (7, -13), (-6, -17), (0, -18), (5, -17), (-12, -12),  # flexors
           (-24, -6), (-19, 10), (-11, 14), (-3, 15), (4, 15), (10, 14), (18, 11)]                # extensors


def _tendons(canvas: Canvas, s: float):
    """Tendons (~90 HU) in fatty connective tissue: a fat pad in the carpal tunnel around the
    flexor tendons, then the tendons; unlabelled soft tissue."""
    canvas.fill(sdf.ellipsoid(np.array([-2.0, -15.0, 0.0]) * s, np.array([14.0, 5.5, 40.0]) * s), HU["fat"] + 30)
    for x, y in TENDONS:
        bow = -2.0 if y < 0 else 2.0  # tendons bow away from the carpus
        pts = [np.array([x, y - bow, 50.0]) * s, np.array([x, y, 5.0]) * s, np.array([x * 1.3, y + bow, -50.0]) * s]
        canvas.fill(sdf.tube(pts, 2.0 * s), 90.0)


def wrist(seed: int, spacing: float = 0.4, noise: bool = True) -> Subject:
    """Generate a right wrist CT (HU) with 10 bone labels.

    Parameters
    ----------
    seed : int
        Same seed, same subject bit for bit.
    spacing : float
        Isotropic voxel size in mm (default 0.4: about 230 x 145 x 225 voxels over 92 x 58 x 90 mm;
        at least 0.2).
    noise : bool
        Add CT noise (False gives the noise-free, blurred volume; handy for tests).

    Returns
    -------
    Subject
        ``kind="wrist"``; arrays ``(z, y, x)``; x ulnar, y dorsal, z proximal (see module doc).

    >>> s = wrist(0, spacing=1.0)
    >>> s.label_names[7], s.ct.array.dtype, s.labels.array.dtype
    ('capitate', dtype('float32'), dtype('uint8'))
    """
    spacing = check_inputs("wrist", seed, spacing, 0.2)
    rng = np.random.default_rng(seed)
    p = _draws(rng, seed)
    s = p["scale"]
    grid = sdf.Grid.around(np.asarray(BOX[0]) * s, np.asarray(BOX[1]) * s, spacing)
    canvas = Canvas(grid, rng)
    layered_body(canvas, _body(s, p["fat_mm"]), 1.5, p["fat_mm"])
    _tendons(canvas, s)

    pivot = np.asarray(PIVOT) * s
    distal = sdf.Placement(sdf.rotation(rx=p["flexion_deg"], ry=-p["deviation_deg"]), pivot)
    proximal = sdf.Placement(sdf.rotation(rx=0.5 * p["flexion_deg"], ry=-0.5 * p["deviation_deg"]), pivot)
    rows = {"proximal": proximal, "distal": distal}
    name_to_label = {v: k for k, v in LABELS.items()}
    bones = [(name_to_label[n], _carpal(n, p, rows[CARPALS[n][4]], s), 0.7) for n in CARPALS]
    bones += [(9, _radius(s), "long"), (10, _ulna(s), "long")]
    bones += [(0, _metacarpal(i, distal, s), "mc") for i in range(5)]

    samples = carve_joints([b[1].sample(grid) for b in bones], p["joint_gap_mm"] * s)
    trab = 130.0 + 150.0 * p["density"]
    p["trabecular_hu"] = trab
    for (label, _, shell), (region, d) in zip(bones, samples):
        if region is None:
            continue
        if shell == "long":
            shell = shell_profile(region, grid, (0, 0, 25 * s), (0, 0, 1), 0.8, 2.5, 10 * s, 30 * s)
        elif shell == "mc":
            shell = 1.2
        canvas.bone(region, d, label, p["cortical_hu"], trab, shell)
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.35)
    return make_subject("wrist", hu, canvas.labels, grid, LABELS, p)


CARPAL_LABELS = tuple(range(1, 9))


def projected_overlap(labels, view: str = "PA", label_ids=CARPAL_LABELS) -> float:
    """Fraction of the projected carpal area covered by two or more carpal bones.

    Each bone's mask is projected along the view's axis (PA: along y, array axis 1; lateral:
    along x, array axis 2); the result is (area where >= 2 projections overlap) / (area of their
    union).  Real wrists: the carpals partly overlap in a PA view and mostly in a lateral one.

    Parameters
    ----------
    labels : Volume or ndarray (z, y, x)
        A wrist label map.
    view : "PA" or "lateral"

    >>> s = wrist(0, spacing=1.0)
    >>> projected_overlap(s.labels, "PA") < projected_overlap(s.labels, "lateral")
    True
    """
    from bonelab.errors import InvalidArgumentError

    axes = {"PA": 1, "lateral": 2}
    if view not in axes:
        raise InvalidArgumentError(f"view must be 'PA' or 'lateral'; got {view!r}.")
    lab = np.asarray(getattr(labels, "array", labels))
    count = np.zeros(np.delete(lab.shape, axes[view]), np.int16)
    for i in label_ids:
        count += (lab == i).any(axis=axes[view])
    union = (count >= 1).sum()
    return float((count >= 2).sum() / union) if union else 0.0
