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

from bonelab.errors import InvalidArgumentError
from bonelab.phantoms import sdf
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import HU, Canvas, carve_joints, layered_body, shell_profile

LABELS = {1: "scaphoid", 2: "lunate", 3: "triquetrum", 4: "pisiform", 5: "trapezium",
          6: "trapezoid", 7: "capitate", 8: "hamate", 9: "radius", 10: "ulna"}
CARPAL_LABELS = tuple(range(1, 9))

#: Neutral carpal shapes (right wrist, scale 1): centre (x, y, z) mm, semi-axes (mm), exponent,
#: long-axis direction (None: axis-aligned), row ("proximal"/"distal").  The scaphoid's long
#: axis runs from the proximal pole (dorsal, ulnar) to the distal pole (palmar, radial), 34
#: degrees palmar-flexed in the sagittal plane and 33 degrees radial in the coronal plane.
CARPALS = {
    "scaphoid": ((-14.5, -1.5, 5.5), (7.0, 7.6, 14.5), 2.0, (-0.45, -0.5, -0.74), "proximal"),
    "lunate": ((-1.5, 0.5, 12.0), (7.2, 9.6, 9.2), 2.0, None, "proximal"),
    "triquetrum": ((11.0, 2.5, 9.0), (6.2, 7.0, 6.6), 2.1, None, "proximal"),
    "pisiform": ((12.0, -8.5, 7.0), (4.4, 4.8, 5.8), 2.0, None, "proximal"),
    "trapezium": ((-19.5, -6.5, -7.5), (8.3, 8.5, 8.3), 2.2, None, "distal"),
    "trapezoid": ((-10.5, 0.5, -7.5), (5.7, 8.8, 8.1), 2.2, None, "distal"),
    "capitate": ((0.0, 0.0, -7.0), (7.0, 9.6, 10.5), 2.2, None, "distal"),
    "hamate": ((12.5, 1.0, -5.0), (7.0, 9.4, 10.4), 2.2, None, "distal"),
}
#: Metacarpal bases 1-5: proximal end (x, y, z) mm, distal direction, base radius, shaft radius.
#: The thumb's metacarpal leaves the trapezium's saddle abducted about 37 degrees from the index
#: metacarpal (radially and palmarly).
METACARPALS = [
    ((-24.5, -11.0, -16.5), (-0.55, -0.40, -0.73), 7.0, 5.0),
    ((-11.0, 0.0, -19.5), (-0.08, -0.08, -1.0), 7.0, 4.5),
    ((1.0, 0.0, -21.5), (0.0, -0.06, -1.0), 7.5, 4.5),
    ((11.5, 1.0, -18.5), (0.08, -0.08, -1.0), 6.2, 4.0),
    ((19.5, 2.0, -16.0), (0.16, -0.08, -1.0), 6.0, 4.0),
]
#: Proximal-row kinematics relative to the hand (the capitate): share of the hand's flexion,
#: share of its in-plane deviation, and flexion coupled to deviation (degrees of flexion per
#: degree of radial deviation).  Approximate means of in vivo CT studies (Wolfe et al. 2000,
#: J Hand Surg Am 25:860; Moojen et al. 2002, J Hand Surg Am 27:1048; Kobayashi et al. 1997,
#: J Biomech 30:787): the scaphoid follows the capitate most, the lunate about half.
PROXIMAL_ROW = {"scaphoid": (0.75, 0.5, 0.7), "lunate": (0.5, 0.4, 0.5),
                "triquetrum": (0.55, 0.5, 0.45), "pisiform": (0.55, 0.5, 0.45)}
PIVOT = (0.0, 0.5, 2.5)  # capitate head: centre of radiocarpal and midcarpal rotation
BOX = ((-50.0, -32.0, -44.0), (42.0, 26.0, 46.0))  # neutral field of view (x, y, z) mm
RADIUS_AXIS = (-7.0, 1.0)  # (x, y) of the radial shaft axis, mm; the shaft runs along z
LUNATE_FOSSA = (-5.0, 0.5, 18.5)  # a point of the radial articular plane, mm
RADIUS_ULNAR_EDGE_X = 3.0  # x of the radius's ulnar corner (the sigmoid notch rim), mm
ULNA_HEAD = (17.0, 3.0)  # (x, y) of the ulnar head's centre, mm
SIDES = ("right", "left")


def _draws(rng: np.random.Generator, seed: int) -> dict:
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    return {
        "seed": int(seed),
        "scale": clipped(1.0, 0.07, 0.85, 1.15),
        "radial_inclination_deg": clipped(24.5, 2.2, 19.0, 30.0),
        "palmar_tilt_deg": clipped(13.0, 3.0, 5.5, 20.5),
        "ulnar_variance_mm": clipped(0.0, 0.8, -1.8, 1.8),
        "joint_gap_mm": float(rng.uniform(1.5, 2.0)),
        "density": float(rng.uniform(0, 1)),
        "cortical_hu": float(rng.uniform(1300, 1700)),
        "fat_mm": float(rng.uniform(2, 7)),
        "noise_hu": float(rng.uniform(12, 25)),
        "bone_size": {n: [clipped(1, 0.04, 0.9, 1.1) for _ in range(3)] for n in CARPALS},
        "bone_shift_mm": {n: [clipped(0, 0.5, -1.2, 1.2) for _ in range(3)] for n in CARPALS},
        "bone_turn_deg": {n: [clipped(0, 3, -7, 7) for _ in range(3)] for n in CARPALS},
    }


# --- posture ---------------------------------------------------------------------------------------
def _hand_rotation(deviation_deg: float, flexion_deg: float) -> np.ndarray:
    """Rotation of the hand: flexion (+, palm toward -y) about the radio-ulnar axis x, then
    ulnar deviation (+, fingers toward +x) about the dorsopalmar axis y."""
    return sdf.rotation(rx=-flexion_deg, ry=-deviation_deg)


def _poses(p: dict, s: float) -> dict:
    """Placement of every carpal (and ``"hand"``: metacarpals, soft tissue of the palm)."""
    dev, flex = p["deviation_deg"], p["flexion_deg"]
    pivot = np.asarray(PIVOT) * s
    hand = sdf.Placement(_hand_rotation(dev, flex), pivot)
    poses = {"hand": hand}
    for name, (centre, *_, row) in CARPALS.items():
        c = np.asarray(centre) * s
        jitter = sdf.Placement(sdf.rotation(*p["bone_turn_deg"][name]), c, p["bone_shift_mm"][name])
        if row == "distal":
            poses[name] = jitter.then(hand)
            continue
        fe, share, coupled = PROXIMAL_ROW[name]
        own = sdf.Placement(sdf.rotation(rx=coupled * dev), c)  # flexes in radial deviation
        row_move = sdf.Placement(_hand_rotation(share * dev, fe * flex), pivot)
        poses[name] = jitter.then(own).then(row_move)
    return poses


# --- bones -----------------------------------------------------------------------------------------
def _carpal(name: str, p: dict, move: sdf.Placement, s: float) -> sdf.Shape:
    c, radii, e, axis, _ = CARPALS[name]
    radii = np.asarray(radii) * p["bone_size"][name] * s
    base = np.eye(3) if axis is None else sdf.frame(axis, (1, 0, 0))
    center, rot = move.point(np.asarray(c) * s), move.rot(base)
    if name == "hamate":  # the hook of the hamate: a palmar process on the distal, ulnar body
        hook = sdf.capsule(move.point(np.array([13.5, -6.0, -8.0]) * s),
                           move.point(np.array([12.0, -13.5, -9.0]) * s), 3.2 * s, 2.4 * s)
        return sdf.union(sdf.superellipsoid(center, radii, rot, e, e), hook, k=2.0 * s)
    if name == "capitate":  # a round head that seats in the concavity of the lunate and scaphoid
        head = sdf.sphere(move.point(np.array([0.0, 0.5, 2.5]) * s), 6.2 * s * p["bone_size"][name][0])
        return sdf.union(sdf.superellipsoid(center, radii, rot, e, e), head, k=3.0 * s)
    if name == "scaphoid":
        return _scaphoid(center, radii, rot, s)
    return sdf.superellipsoid(center, radii, rot, e, e)


def _scaphoid(center, radii, rot, s: float) -> sdf.Shape:
    """Two poles joined by a narrower waist, the distal pole set radially so that the bone
    curves around the capitate's head (local z: the long axis toward the distal pole; local x:
    ulnar).  ``radii``: pole half-widths (x, y) and half the bone's length (z), mm."""
    a, b, half = radii
    pole = half - a  # pole centres sit one pole radius in from each end

    def at(local):
        return center + rot @ np.asarray(local, float)

    proximal = sdf.ellipsoid(at([0.0, 0.0, -pole]), [a, b, a], rot)
    distal = sdf.ellipsoid(at([-0.15 * a, 0.0, pole]), [0.95 * a, 0.95 * b, a], rot)
    waist = sdf.capsule(at([0.0, 0.0, -pole]), at([-0.15 * a, 0.0, pole]), 0.58 * a)
    return sdf.union(proximal, distal, waist, k=2.5 * s)


def _articular_normal(p: dict) -> np.ndarray:
    """Outward normal of the distal radial articular plane: tilted ulnarly by the radial
    inclination and palmarly by the palmar tilt (x ulnar, y dorsal, z proximal)."""
    n = np.array([np.tan(np.radians(p["radial_inclination_deg"])),
                  -np.tan(np.radians(p["palmar_tilt_deg"])), -1.0])
    return n / np.linalg.norm(n)


def _radius(p: dict, s: float) -> sdf.Shape:
    """Distal radius: shaft, flared metaphysis and radial styloid, cut by the inclined articular
    plane and hollowed by a shallow dish (the scaphoid and lunate fossae)."""
    ax, ay = RADIUS_AXIS
    end = sdf.superellipsoid(np.array([ax, 0.5, 26.0]) * s, np.array([15.5, 10.5, 13.0]) * s, e_xy=2.6, e_z=2.4)
    styloid = sdf.capsule(np.array([-19.0, 0.0, 24.0]) * s, np.array([-21.5, -0.5, 10.0]) * s, 5.5 * s, 3.0 * s)
    shaft = sdf.capsule(np.array([ax, ay, 36.0]) * s, np.array([ax, ay, 100.0]) * s, 10.5 * s, 9.5 * s)
    body = sdf.union(end, styloid, shaft, k=5.0 * s)
    n, p0 = _articular_normal(p), np.asarray(LUNATE_FOSSA) * s
    nx, ny, nz, off = (float(v) for v in (*n, n @ p0))
    plane = sdf.Field(lambda X, Y, Z: X * nx + Y * ny + Z * nz - off, body.lo, body.hi)
    depth, radii = 2.2 * s, np.array([27.0, 18.6, 20.0]) * s
    dish = sdf.ellipsoid(p0 + n * (radii[2] - depth), radii, sdf.frame(n, (1, 0, 0)))
    return sdf.subtract(sdf.intersect(body, plane, k=1.5 * s), dish, k=1.0 * s)


def _radius_ulnar_corner_z(p: dict, s: float) -> float:
    """z (mm) of the radial articular plane at the radius's ulnar corner (the level against
    which ulnar variance is measured)."""
    x0, _, z0 = np.asarray(LUNATE_FOSSA) * s
    return float(z0 + np.tan(np.radians(p["radial_inclination_deg"])) * (RADIUS_ULNAR_EDGE_X * s - x0))


def _ulna(p: dict, s: float) -> sdf.Shape:
    """Distal ulna: the head (its distal dome at the ulnar variance drawn), the ulnar styloid on
    its dorsal-ulnar side, the shaft."""
    hx, hy = ULNA_HEAD
    dome = _radius_ulnar_corner_z(p, s) - p["ulnar_variance_mm"]  # positive variance: more distal
    semi = np.array([8.0, 8.0, 7.5]) * s
    head = sdf.ellipsoid(np.array([hx * s, hy * s, dome + semi[2]]), semi)
    styloid = sdf.capsule(np.array([20.5 * s, 6.5 * s, dome + 3.0 * s]),
                          np.array([21.5 * s, 6.5 * s, dome - 3.5 * s]), 3.0 * s, 1.5 * s)
    shaft = sdf.capsule(np.array([16.5 * s, 3.5 * s, dome + 12.0 * s]), np.array([15.5, 4.0, 100.0]) * s,
                        6.5 * s, 6.0 * s)
    return sdf.union(head, styloid, shaft, k=3.0 * s)


def _metacarpal(i: int, hand: sdf.Placement, s: float) -> sdf.Shape:
    a, direction, rb, rs = METACARPALS[i]
    a = hand.point(np.asarray(a) * s)
    d = hand.rot() @ (np.asarray(direction) / np.linalg.norm(direction))
    base = sdf.ellipsoid(a - 1.0 * s * d, [rb * s, rb * s * 1.1, 5.0 * s], sdf.frame(d))
    return sdf.union(base, sdf.capsule(a, a + 45.0 * s * d, rs * s * 1.1, rs * s * 0.8), k=4.0 * s)


def _seat(samples, fixed: int, gap: float, seated=None):
    """Carve the ``seated`` bones (indices; default all others) out of bone ``fixed`` grown by
    ``gap`` mm: the radius keeps its designed articular surface, the capitate its round head, and
    the bones on them take their shape (a congruent joint: the lunate's cup), where the symmetric
    :func:`carve_joints` would flatten both sides."""
    reg_f, d_f = samples[fixed]
    seated = set(range(len(samples))) - {fixed} if seated is None else set(seated)
    out = []
    for i, (reg, d) in enumerate(samples):
        both = sdf.intersect_regions(reg, reg_f)
        if i in seated and both is not None:
            d = d.copy()
            mine = sdf.relative(both, reg)
            d[mine] = np.maximum(d[mine], gap - d_f[sdf.relative(both, reg_f)])
        out.append((reg, d))
    return out


def _unit_gradient(d: np.ndarray, spacing: float) -> np.ndarray:
    """Rescale a carved distance to unit gradient, ``d / |grad d|`` (a first-order correction).
    Where :func:`carve_joints` halves the difference of two distances that are not antiparallel
    (at the margins of a joint), the result changes slower than the true distance, and the
    cortex painted from it comes out up to twice too thick; the sign (the label) is unchanged."""
    g = np.gradient(d, spacing)
    norm = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    return (d / np.clip(norm, 0.5, 1.0)).astype(np.float32)


# --- soft tissue -----------------------------------------------------------------------------------
def _unbend(X, Y, Z, p: dict, s: float):
    """Coordinates of the neutral forearm-and-hand from posed ones: points distal of the wrist
    turn back with the hand, blended over 30 mm around the pivot (soft tissue bends smoothly)."""
    pivot = np.asarray(PIVOT) * s
    t = np.clip((pivot[2] + 15.0 * s - Z) / (30.0 * s), 0.0, 1.0)
    w = (t * t * (3 - 2 * t)).astype(np.float32)
    b, a = np.radians(p["deviation_deg"]) * w, np.radians(p["flexion_deg"]) * w
    x, y, z = X - pivot[0], Y - pivot[1], Z - pivot[2]
    # inverse of Ry(-dev) Rx(-flex): Rx(flex) Ry(dev), applied with per-point weighted angles
    x1, z1 = x * np.cos(b) + z * np.sin(b), -x * np.sin(b) + z * np.cos(b)
    y2, z2 = y * np.cos(a) - z1 * np.sin(a), y * np.sin(a) + z1 * np.cos(a)
    return x1 + pivot[0], y2 + pivot[1], z2 + pivot[2]


def _body(p: dict, s: float, hand: sdf.Placement) -> sdf.Shape:
    fat_mm = p["fat_mm"]
    # cross-section (half-width a, half-depth b, centre cx, cy) along z: palm -> wrist -> forearm
    zs = np.array([-60.0, -40.0, -20.0, 0.0, 20.0, 60.0])
    a = np.array([41.0, 40.0, 37.0, 33.0, 31.0, 31.0]) * s + 0.5 * fat_mm
    b = np.array([15.0, 16.0, 18.5, 20.0, 20.5, 22.0]) * s + 0.5 * fat_mm
    cx = np.array([-5.0, -5.0, -4.0, -2.0, 1.0, 2.0]) * s
    cy = np.array([-2.0, -2.0, -1.0, 0.0, 1.5, 2.5]) * s
    bent = p["deviation_deg"] != 0 or p["flexion_deg"] != 0

    def fn(X, Y, Z):
        if bent:
            X, Y, Z = _unbend(X, Y, Z, p, s)
        A, B, CX, CY = (np.interp(Z, zs, v).astype(np.float32) for v in (a, b, cx, cy))
        u, v = (X - CX) / A, (Y - CY) / B
        r = np.sqrt(u * u + v * v) + 1e-6
        # first-order distance to the ellipse: (r - 1) / |grad r|
        g = np.sqrt((u / A) ** 2 + (v / B) ** 2) / r + 1e-6
        return (r - 1.0) / g

    forearm = sdf.Field(fn, (-100, -90, -80), (100, 90, 120))
    thenar = sdf.ellipsoid(hand.point(np.array([-30.0, -14.0, -30.0]) * s), np.array([18.0, 18.0, 32.0]) * s,
                           hand.rot())
    return sdf.union(forearm, thenar, k=8.0)


#: Tendons (x, y) at the wrist in mm: flexors in the carpal tunnel (palmar, y < 0), extensor
#: compartments on the dorsum (y > 0); they run along z, curving palmar/dorsal with the bones.
TENDONS = [(-8, -13), (-3, -14), (2, -14), (7, -13), (-6, -17), (0, -18), (5, -17), (-12, -12),  # flexors
           (-24, -6), (-19, 10), (-11, 14), (-3, 15), (4, 15), (10, 14), (18, 11)]                # extensors


def _tendons(canvas: Canvas, s: float, hand: sdf.Placement):
    """Tendons (~90 HU) in fatty connective tissue: a fat pad in the carpal tunnel around the
    flexor tendons, then the tendons (their distal ends move with the hand); unlabelled."""
    canvas.fill(sdf.ellipsoid(np.array([-2.0, -15.0, 0.0]) * s, np.array([14.0, 5.5, 40.0]) * s), HU["fat"] + 30)
    for x, y in TENDONS:
        bow = -2.0 if y < 0 else 2.0  # tendons bow away from the carpus
        pts = [np.array([x, y - bow, 50.0]) * s, np.array([x, y, 5.0]) * s,
               hand.point(np.array([x * 1.3, y + bow, -50.0]) * s)]
        canvas.fill(sdf.tube(pts, 2.0 * s), 90.0)


def _field(p: dict, s: float, spacing: float) -> sdf.Grid:
    """The neutral box, widened dorsally or palmarly for a flexed or extended hand."""
    lo, hi = np.asarray(BOX[0]) * s, np.asarray(BOX[1]) * s
    reach = 45.0 * s * np.sin(np.radians(p["flexion_deg"]))
    lo[1] -= max(reach, 0.0)
    hi[1] += max(-reach, 0.0)
    return sdf.Grid.around(lo, hi, spacing)


def _mirrored(grid: sdf.Grid, *arrays):
    """A left wrist from a right one: the arrays flipped along x and the grid's x origin moved so
    that every voxel lands at the mirrored LPS position (x -> -x); direction stays identity."""
    nx = grid.shape[2]
    origin = grid.origin.copy()
    origin[0] = -(origin[0] + (nx - 1) * grid.spacing[0])
    flipped = [np.ascontiguousarray(a[:, :, ::-1]) for a in arrays]
    return sdf.Grid(grid.shape, grid.spacing, origin), flipped


def _check_posture(side, deviation_deg, flexion_deg):
    if side not in SIDES:
        raise InvalidArgumentError(f"wrist: side must be 'right' or 'left'; got {side!r}.")
    for name, value, lo, hi in (("deviation_deg", deviation_deg, -40, 40), ("flexion_deg", flexion_deg, -70, 70)):
        try:
            ok = lo <= float(value) <= hi
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidArgumentError(
                f"wrist: {name} must be a number of degrees in [{lo}, {hi}]; got {value!r} "
                f"(typical: deviation -20 (radial) to +30 (ulnar), flexion -60 (extension) to +60).")


def wrist(seed: int, spacing: float = 0.4, noise: bool = True, *, side: str = "right",
          deviation_deg: float = 0.0, flexion_deg: float = 0.0) -> Subject:
    """Generate a wrist CT (HU) with 10 bone labels, in a chosen side and posture.

    Parameters
    ----------
    seed : int
        Same seed, same subject bit for bit (the posture and side do not change the anatomy).
    spacing : float
        Isotropic voxel size in mm (default 0.4: about 230 x 145 x 230 voxels over 92 x 58 x 90 mm
        in neutral; at least 0.2).
    noise : bool
        Add CT noise (False gives the noise-free, blurred volume; handy for tests).
    side : "right" or "left"
        ``"left"`` is the mirror image of the right wrist of the same seed through the LPS plane
        x = 0 (the anatomy mirrored, the geometry still identity-directed LPS).
    deviation_deg : float
        Radial (-) or ulnar (+) deviation of the hand, degrees (typical -20..+30).
    flexion_deg : float
        Flexion (+, palmar) or extension (-, dorsal) of the hand, degrees (range -60..+60).

    Returns
    -------
    Subject
        ``kind="wrist"``; arrays ``(z, y, x)``; a right wrist has x ulnar, y dorsal, z proximal
        (see the module docstring); ``params`` records the anatomy drawn, the side and posture.

    >>> s = wrist(0, spacing=1.0)
    >>> s.label_names[7], s.ct.array.dtype, s.labels.array.dtype
    ('capitate', dtype('float32'), dtype('uint8'))
    >>> left = wrist(0, spacing=1.0, side="left")
    >>> bool(left.ct.origin[0] == -(s.ct.origin[0] + (s.ct.shape[2] - 1) * 1.0))
    True
    """
    spacing = check_inputs("wrist", seed, spacing, 0.2)
    _check_posture(side, deviation_deg, flexion_deg)
    rng = np.random.default_rng(seed)
    p = _draws(rng, seed)
    p.update(side=side, deviation_deg=float(deviation_deg), flexion_deg=float(flexion_deg))
    s = p["scale"]
    grid = _field(p, s, spacing)
    canvas = Canvas(grid, rng)
    poses = _poses(p, s)
    layered_body(canvas, _body(p, s, poses["hand"]), 1.5, p["fat_mm"])
    _tendons(canvas, s, poses["hand"])

    name_to_label = {v: k for k, v in LABELS.items()}
    bones = [(9, _radius(p, s), "radius"), (10, _ulna(p, s), "ulna")]
    bones += [(name_to_label[n], _carpal(n, p, poses[n], s), "carpal") for n in CARPALS]
    bones += [(0, _metacarpal(i, poses["hand"], s), "metacarpal") for i in range(5)]
    gap = p["joint_gap_mm"] * s
    index = {n: i for i, n in enumerate(["radius", "ulna", *CARPALS])}
    samples = _seat([b[1].sample(grid) for b in bones], index["radius"], gap)
    samples = _seat(samples, index["capitate"], gap, [index["lunate"], index["scaphoid"]])
    samples = carve_joints(samples, gap)
    trab = 240.0 + 120.0 * p["density"]
    p["trabecular_hu"] = trab
    for (label, _, kind), (region, d) in zip(bones, samples):
        if region is None:
            continue
        d = _unit_gradient(d, spacing)
        cortical, trabecular, shell = p["cortical_hu"], trab, 0.7
        if kind in ("radius", "ulna"):  # thin subchondral plate, ~1-1.5 mm metaphysis, thick shaft
            level = _radius_ulnar_corner_z(p, s)
            shell = shell_profile(region, grid, (0, 0, level), (0, 0, 1), 0.9, 2.8, 6 * s, 30 * s)
            trabecular = 0.85 * trab  # metaphyseal bone: a little less dense than the carpals
        elif kind == "metacarpal":
            shell = 1.2
        canvas.bone(region, d, label, cortical, trabecular, shell)
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.35)
    labels = canvas.labels
    if side == "left":
        grid, (hu, labels) = _mirrored(grid, hu, labels)
    return make_subject("wrist", hu, labels, grid, LABELS, p)


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
    axes = {"PA": 1, "lateral": 2}
    if view not in axes:
        raise InvalidArgumentError(f"view must be 'PA' or 'lateral'; got {view!r}.")
    lab = np.asarray(getattr(labels, "array", labels))
    count = np.zeros(np.delete(lab.shape, axes[view]), np.int16)
    for i in label_ids:
        count += (lab == i).any(axis=axes[view])
    union = (count >= 1).sum()
    return float((count >= 2).sum() / union) if union else 0.0
