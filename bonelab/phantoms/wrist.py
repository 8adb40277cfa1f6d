"""A procedural wrist: 8 carpal bones, distal radius and ulna, metacarpal bases, soft tissue;
right or left, in any radial/ulnar deviation and flexion/extension.

Frame (LPS, anatomical position, palm forward).  Right wrist: x points ulnar (medial, to the
patient's left), y dorsal (posterior), z proximal (superior).  A left wrist is the right one of
the same seed mirrored through x = 0 (radius at +x, the patient's left), so both are real wrists
in LPS with identity direction.  A PA radiograph projects along y, a lateral one along x.
Arrays are ``(z, y, x)``.

Reference measurements and what the generated volumes measure (20 seeds, neutral posture,
measured by ``tests/test_phantom_wrist.py`` on the label map or HU; mm, degrees):

=============================  =====================  ======================  ==================================
quantity                       reference              measured (mean, range)  source / note
=============================  =====================  ======================  ==================================
radial inclination (PA)        22, normal ~16-28      21.8 (15.6-26.0)        Medoff 2005, Hand Clin 21:279;
                                                                              styloid tip to ulnar corner
radial height (PA)             11-12, normal ~8-16    11.9 (8.8-15.2)         Medoff 2005
palmar tilt (lateral)          11, normal ~3-20       11.3 (5.7-15.5)         Medoff 2005; tangent to the lips
ulnar variance                 ~0, -2..+2             -0.1 (-1.6..+1.6)       Gelberman et al. 1975; dome of the
                                                                              ulnar head vs the ulnar corner
ulnar styloid                  3-8 beyond the dome    ~5                      dorsal-ulnar, on the head
scaphoid length                25-32                  26.4 (22.4-32.1)        Heinzelmann et al. 2007, J Hand
                                                                              Surg Am 32:1005 (27 F, 31 M)
scaphoid waist / poles         waist the narrowest    0.8 (0.7-0.9)           equivalent diameters of sections
scaphoid long axis (lateral)   ~45-50 to the radius   45.9 (36.8-56.9)        scapholunate angle 30-60 (Linscheid
                                                                              1972 normal); distal pole palmar
capitate head                  in the lunate's cup    1.6-4 mm deep           the lunate is carved around it
hook of the hamate             palmar process         > 3 mm palmar of the    Gray's Anatomy
                                                      capitate
thumb metacarpal               30-45 from the index   37.9 (36.7-39.3)        abducted at the trapezium saddle
joint spaces                   1.5-2                  1.3-1.6 (closest        radiocarpal, midcarpal,
                                                      approach, 0.4 mm grid)  intercarpal; drawn U(1.5, 2.0)
carpal volumes (cm3)           capitate > hamate >    3.3, 2.8, 2.1, 1.8,     order of CT morphometry (Crisco
                               scaphoid > trapezium   1.7, 1.3, 1.1, 0.5      et al. 2005, J Hand Surg Am 30:35),
                               > lunate > trapezoid                           which finds the triquetrum a
                               > triquetrum > pisif.                          little larger
carpal cortex                  0.5-1                  0.63-0.66 (means of     area method of cortical bone
                                                      the 8 carpals)          mapping (Treece et al. 2010)
radius cortex                  ~1 at the metaphysis,  ~1 at 7 mm, ~2 at 22    thin subchondral plate, thicker
                               thicker in the shaft   mm from the joint       diaphyseal cortex
trabecular HU (carpals)        200-400                240 + 120 * density     healthy to osteopenic; radius
                                                                              metaphysis 0.85 of that
=============================  =====================  ======================  ==================================

Drawn per subject: whole-wrist scale N(1, 0.07) in [0.85, 1.15] (sex and stature differences
~10-15 %); per carpal N(1, 0.04) per semi-axis, N(0, 0.5) mm shift and N(0, 3) deg turn; radial
inclination N(24.5, 2.2) and palmar tilt N(13, 3) of the articular plane (the label surface
measures ~2 deg less: the rims are rounded); ulnar variance N(0, 0.8) in [-1.8, 1.8]; cortical HU
U(1300, 1700); subcutaneous fat U(2, 7) mm; CT noise U(12, 25) HU; PSF sigma 0.35 mm.  Tendons:
8 flexors in a fatty carpal tunnel and 7 extensors on the dorsum (~90 HU).

Posture (``deviation_deg``, ``flexion_deg``).  The hand (distal row, metacarpals, palm soft
tissue) turns about the capitate's head, the centre of both the radiocarpal and midcarpal
motion: flexion (+) about the radio-ulnar axis x, then ulnar deviation (+) about the dorsopalmar
axis y.  The proximal row follows partly, with approximate means of in vivo CT kinematics
(Wolfe et al. 2000, J Hand Surg Am 25:860; Moojen et al. 2003, J Hand Surg Am 28:81;
Kobayashi et al. 1997, J Biomech 30:787): it takes about half of the flexion (scaphoid 0.75,
lunate 0.5, triquetrum 0.55: the radiocarpal and midcarpal joints share it) and about half of
the deviation in plane, and it flexes in radial deviation and extends in ulnar deviation
(scaphoid 0.7, lunate 0.5, triquetrum 0.45 degrees per degree), so the scaphoid looks short in
radial deviation (the ring sign) and long in ulnar deviation.  The soft tissue of the hand
bends with it over 30 mm around the wrist.  Joint spaces stay open in every posture: the bones
are carved apart after they are posed (the radius keeps its articular surface and the carpals
take its shape; the lunate and scaphoid take the capitate head's shape).

What stays schematic: bones are smooth blends of ellipsoids and capsules (no tubercles of the
scaphoid or trapezium, no Lister's tubercle, no sigmoid notch beyond a flat facet, a rounded
saddle at the thumb's base); joint spaces are soft tissue (no cartilage, no TFCC disc); the
kinematic coefficients are constants (real ones vary between people and with the arc, and the
proximal row also translates); bone shapes do not vary beyond size and small turns; no growth
plates, no pathology, no sesamoids.

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
#: Proximal-row kinematics (relative to the radius): share of the hand's flexion,
#: share of its in-plane deviation, and flexion coupled to deviation (degrees of flexion per
#: degree of radial deviation).  Approximate means of in vivo CT studies (Wolfe et al. 2000,
#: J Hand Surg Am 25:860; Moojen et al. 2003, J Hand Surg Am 28:81; Kobayashi et al. 1997,
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
    turn back with the hand, blended over 30 mm around the pivot (soft tissue bends smoothly).
    The blend weight depends on z alone, so the rotations are per slice."""
    pivot = [float(v) * s for v in PIVOT]  # Python floats: numpy scalars would promote to float64
    t = np.clip((pivot[2] + 15.0 * s - Z) / (30.0 * s), 0.0, 1.0)
    w = (t * t * (3 - 2 * t)).astype(np.float32)
    b, a = np.radians(p["deviation_deg"]) * w, np.radians(p["flexion_deg"]) * w
    x, y, z = X - pivot[0], Y - pivot[1], Z - pivot[2]
    # inverse of Ry(-dev) Rx(-flex): Rx(flex) Ry(dev), applied with per-slice weighted angles
    x1, z1 = x * np.cos(b) + z * np.sin(b), -x * np.sin(b) + z * np.cos(b)
    y2, z2 = y * np.cos(a) - z1 * np.sin(a), y * np.sin(a) + z1 * np.cos(a)
    return x1 + pivot[0], y2 + pivot[1], z2 + pivot[2]


def _upsample(a: np.ndarray, shape) -> np.ndarray:
    """Linear interpolation of ``a`` onto ``shape`` samples spanning the same extent (first and
    last samples coincide), one axis at a time (scipy's ``zoom`` took 0.85 s for this)."""
    for axis, n in enumerate(shape):
        q = np.linspace(0.0, a.shape[axis] - 1.0, n)
        i0 = np.minimum(q.astype(np.intp), a.shape[axis] - 2)
        f = (q - i0).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(3)])
        lo, hi = np.take(a, i0, axis=axis), np.take(a, i0 + 1, axis=axis)
        a = lo + (hi - lo) * f
    return a


def _body(p: dict, s: float, hand: sdf.Placement) -> sdf.Shape:
    fat_mm = p["fat_mm"]
    # cross-section (half-width a, half-depth b, centre cx, cy) along z: palm -> wrist -> forearm,
    # tabulated every 0.5 mm so that a bent body looks its sections up by index (np.interp on
    # every voxel of a bent body cost about a second)
    zs = np.array([-60.0, -40.0, -20.0, 0.0, 20.0, 60.0]) * s
    step = 0.5
    table_z = np.arange(-100.0, 130.0, step)
    table = np.stack([np.interp(table_z, zs, np.array(v) * s) + extra for v, extra in (
        ([41.0, 40.0, 37.0, 33.0, 31.0, 31.0], 0.5 * fat_mm), ([15.0, 16.0, 18.5, 20.0, 20.5, 22.0], 0.5 * fat_mm),
        ([-5.0, -5.0, -4.0, -2.0, 1.0, 2.0], 0.0), ([-2.0, -2.0, -1.0, 0.0, 1.5, 2.5], 0.0))]).astype(np.float32)

    def ellipse(X, Y, Z):
        i = np.clip(np.rint((Z - float(table_z[0])) * (1.0 / step)), 0, len(table_z) - 1).astype(np.intp)
        A, B, CX, CY = (np.take(row, i) for row in table)
        u, v = (X - CX) / A, (Y - CY) / B
        r = np.sqrt(u * u + v * v) + 1e-6
        # first-order distance to the ellipse: (r - 1) / |grad r|
        g = np.sqrt((u / A) ** 2 + (v / B) ** 2) / r + 1e-6
        return (r - 1.0) / g

    bent = p["deviation_deg"] != 0 or p["flexion_deg"] != 0
    bend_from = (PIVOT[2] + 15.0) * s  # proximal of this z the forearm is straight

    def bent_body(X, Y, Z):
        out = np.empty(np.broadcast_shapes(X.shape, Y.shape, Z.shape), np.float32)
        distal = Z[:, 0, 0] < bend_from
        out[distal] = ellipse(*_unbend(X, Y, Z[distal], p, s))
        out[~distal] = ellipse(X, Y, Z[~distal])
        return out

    def fn(X, Y, Z):
        n = (Z.shape[0], Y.shape[1], X.shape[2])
        if not bent or min(n) < 8:
            return ellipse(X, Y, Z)
        # a bent body costs two rotations per voxel (over 1 s at 0.4 mm): evaluate it on a grid
        # half as fine, spanning the same box, and interpolate linearly; the distance is smooth,
        # so the error is about h^2 / 8R, under 0.01 mm for the 15 mm radius of the forearm
        m = [(k + 3) // 2 for k in n]
        zc, yc, xc = (np.linspace(float(c.ravel()[0]), float(c.ravel()[-1]), k, dtype=np.float32)
                      for c, k in ((Z, m[0]), (Y, m[1]), (X, m[2])))
        coarse = bent_body(xc[None, None, :], yc[None, :, None], zc[:, None, None])
        return _upsample(coarse, n)

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

    Examples
    --------
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
