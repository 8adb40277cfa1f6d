"""A procedural hip (QCT-style): both proximal femurs, both hip bones with their acetabular cups,
the sacrum, the lowest lumbar vertebrae, soft tissue, and an optional QCT calibration phantom
under the patient.

Frame: LPS (x left, y posterior, z superior), patient supine, origin midway between the femoral
head centres; arrays ``(z, y, x)``.  The field runs from 130 mm below the head centres (below the
lesser trochanters, as a hip QCT does) to above the iliac crests (as a pelvis AP film does).

Anatomy and distributions (mm, degrees, HU, mg/cm3).  Every row marked (t) is measured on the
generated volume by ``tests/test_phantom_hip.py`` and asserted to lie in its band over several
seeds (draws are clipped a little inside each band, so that a measurement on 1.25 mm voxels
stays in it).

============================  ====================================  ===================================
quantity                      value / distribution                  source / note
============================  ====================================  ===================================
femoral head diameter (t)     N(46, 2.5) x scale, in [40, 50]       adult range 40-50 mm
neck diameter (t)             N(32, 1.3) x scale, in [30, 35]       narrowest cross-section, circular
neck length (head centre to   N(52, 3) x scale                      femoral offset ~40 mm
shaft axis)
neck-shaft angle (t)          N(127, 4), in [120, 135]              Noble et al. 1988, Clin Orthop
                                                                    235:148
femoral anteversion (t)       N(12, 4), in [5, 20]                  ~10-15 deg in adult CT series
                                                                    (ibid.; Sugano 1998)
cortex over the head (t)      U(0.6, 1.0)                           subchondral plate 0.5-1 mm
cortex at the calcar (t)      N(4.0, 0.4), in [3.2, 4.8]            inferomedial neck 3-5 mm
diaphyseal cortex (t)         N(5.8, 0.5), in [5, 7]                5-7 mm
trabecular pattern (t)        compressive group x U(1.3, 1.6),      Singh et al. 1970 (JBJS 52A:457);
                              Ward's triangle x U(0.5, 0.7) of the  Ward's region is the lowest-density
                              base trabecular density               region of the neck in QCT
hip joint space (t)           4.5 - 0.02 (age - 20) + N(0, 0.4),    Lequesne et al. 2004 (Osteoarthr
                              in [2, 5]; age U(20, 85) years        Cartil 12:209): 3-5 mm, narrower
                                                                    with age
centre-edge angle (t)         N(32 - 0.8 (inclination - 40), 3),    Wiberg 1939; normal 25-40 deg;
                              in [25, 40]                           falls as inclination rises
acetabular inclination (t)    N(40, 2.5), in [35, 45]               radiographic, Murray 1993 (JBJS
                                                                    75B:228); Sharp angle 33-42 deg
acetabular anteversion (t)    N(17, 1.5), in [15, 20]               CT, Murray's radiographic def.
acetabular sector angles (t)  anterior N(48, 3), in [38, 56] (low   Anda et al. 1986 (J Comput Assist
                              roofs cap it); posterior follows      Tomogr 10:1084): 64 +- 6, 102 +- 8;
                              (85-115); axial slice, head centre    the anterior wall is ~15 deg short
pubic symphysis gap (t)       N(5, 0.5), in [4, 6]                  fibrocartilage disc 4-6 mm
sacroiliac joint gap (t)      N(3, 0.5), in [2, 4]                  2-4 mm on CT
inter-head distance           N(175, 8) x scale                     pelvic width
trabecular HU                 100 + 150 * density, density U(0, 1)  healthy to osteoporotic
cortical HU                   U(1300, 1800)
subcutaneous fat              U(10, 45)                             body habitus
calibration rods (K2HPO4)     -51.8, -53.4, 58.9, 157.0, 375.8      Mindways Model 3 CT style; real
                              mg/cm3                                values come from each phantom's
                                                                    certificate
calibration line              HU = b0 + b1 * c, b0 ~ N(0, 4) HU,    simulated scanner/kVp
                              b1 ~ U(1.15, 1.35) HU per mg/cm3      (single-material model)
============================  ====================================  ===================================

The rods are built with exactly that calibration line, so ``params["calibration"]`` holds the
truth a chapter can recover by regression, and ``params["trabecular_bmd_mg_cm3"]`` the femoral
*base* trabecular density implied by the same line (the density outside the compressive group
and Ward's triangle, which scale it by ``params["femur_*"]["compressive_factor"]`` and
``["ward_factor"]``).

Labels: 1 femur_left, 2 femur_right, 3 pelvis (both hip bones: ilium, ischium, pubis), 4 sacrum
(added at the end of the table: TotalSegmentator labels the sacrum apart from the hip bones,
so a reader's own labelled CTs line up).  The coccyx, L4, L5 and the calibration phantom are
unlabelled.

What is built: iliac wings as curved plates (concave iliac fossa, thick posterior part) with a
thickened crest from the anterior superior iliac spine to the posterior superior spine; an
acetabulum that is a cup over the femoral head (a spherical shell cut by an elliptic cone that the
centre-edge angle, inclination and anteversion set, its walls wrapping the head further in
front and behind than its roof does laterally) lined with cartilage across the joint space;
pubic rami and bodies with the symphysis gap; the ischial body, ramus, spine and tuberosity,
which frame the oval obturator foramen; the sacrum (S1-S5 with alae, sacral canal and the anterior
foramina) meeting the ilia at the sacroiliac joints; femurs with head, neck, greater and lesser
trochanters (the lesser posteromedial, below the neck) and an intertrochanteric crest.

What remains schematic: the neck is round (real necks are oval, taller than deep); there is no
acetabular fossa or notch, no labrum, no fovea capitis; the joint surfaces are concentric
spheres (real joints are slightly incongruent); the trabecular groups are smooth density
fields, not oriented trabeculae; the sacroiliac joint follows the bisector of two overlapping
shapes rather than the ear-shaped auricular surface; the lumbar vertebrae are plain bodies with
a spinous process; muscles are one soft-tissue value with a few fat planes.
"""

from __future__ import annotations

import numpy as np

from bonelab.phantoms import sdf
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import (
    HU,
    Canvas,
    carve_joints,
    layered_body,
    shell_profile,
)

LABELS = {1: "femur_left", 2: "femur_right", 3: "pelvis", 4: "sacrum"}
#: Mindways Model 3 CT style K2HPO4 concentrations (mg/cm3) of rods A-E.
ROD_CONCENTRATIONS = (-51.8, -53.4, 58.9, 157.0, 375.8)
ROD_RADIUS_MM = 6.0
#: Field of view along z (mm from the head centres, times the subject's scale).
Z_RANGE = (-130.0, 128.0)


def _draws(rng, seed):
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    s = clipped(1.0, 0.05, 0.88, 1.12)
    age = float(rng.uniform(20, 85))
    p = {"seed": int(seed), "scale": s,
         "head_separation_mm": clipped(175, 8, 155, 195) * s,
         "density": float(rng.uniform(0, 1)),
         "cortical_hu": float(rng.uniform(1300, 1800)),
         "fat_mm": float(rng.uniform(10, 45)),
         "habitus": clipped(1.0, 0.07, 0.85, 1.15),
         "noise_hu": float(rng.uniform(10, 22)),
         "age_years": age,
         "symphysis_gap_mm": clipped(5.0, 0.5, 4.2, 5.8),
         "sacroiliac_gap_mm": clipped(3.0, 0.5, 2.2, 3.8),
         "calibration": {"intercept_hu": clipped(0.0, 4.0, -10, 10),
                         "slope_hu_per_mg_cm3": float(rng.uniform(1.15, 1.35))}}
    joint_space = 4.5 - 0.02 * (age - 20)
    for side in ("left", "right"):
        p[f"femur_{side}"] = {
            "head_diameter_mm": clipped(46 * s, 2.5, 40.5, 49.5),
            "neck_diameter_mm": clipped(32 * s, 1.3, 30.5, 34.0),
            "neck_length_mm": clipped(52 * s, 3, 44, 60),
            "neck_shaft_angle_deg": clipped(127, 4, 122.5, 132.5),
            "anteversion_deg": clipped(12, 4, 6, 19),
            "shaft_diameter_mm": clipped(28 * s, 1.5, 24, 32),
            "shaft_cortex_mm": clipped(5.8, 0.5, 5.1, 6.6),
            "head_cortex_mm": float(rng.uniform(0.6, 1.0)),
            "calcar_cortex_mm": clipped(4.0, 0.4, 3.4, 4.6),
            "compressive_factor": float(rng.uniform(1.3, 1.6)),
            "ward_factor": float(rng.uniform(0.5, 0.7)),
        }
        inclination = clipped(40, 2.5, 36, 44)
        p[f"acetabulum_{side}"] = {
            "joint_space_mm": clipped(joint_space, 0.4, 2.2, 4.8),
            # a steeper roof covers less of the head: the two correlate negatively
            "centre_edge_deg": clipped(32 - 0.8 * (inclination - 40), 3, 28, 38.5),
            "inclination_deg": inclination,
            "anteversion_deg": clipped(17, 1.5, 15.2, 19.0),
            "anterior_sector_deg": clipped(48, 3, 43, 53),
        }
    return p


# --- femur -------------------------------------------------------------------------------------
def femur_axes(head, f, side):
    """Neck direction (towards the head), shaft direction (distal) and the neck-shaft junction for
    a femur with head centre ``head`` and parameters ``f``; ``side`` = +1 left, -1 right."""
    delta = np.radians(7.0)  # shaft adduction
    d_s = np.array([-side * np.sin(delta), 0.0, -np.cos(delta)])
    gamma = np.radians(180.0 - f["neck_shaft_angle_deg"]) - delta
    beta = np.radians(f["anteversion_deg"])
    v = np.array([-side * np.sin(gamma) * np.cos(beta), -np.sin(gamma) * np.sin(beta), np.cos(gamma)])
    return v, d_s, head - v * f["neck_length_mm"]


def _neck_frame(v, d_s):
    """Unit vector perpendicular to the neck axis ``v`` toward the shaft (the inferomedial,
    calcar side of the neck)."""
    inf = d_s - (d_s @ v) * v
    return inf / np.linalg.norm(inf)


#: The neck is drawn this much thinner than its nominal diameter: the fillets that blend it
#: into the head and the trochanters add about that much at the waist (measured on the volume).
_NECK_FILLET = 0.875


def femur(head, f, side, s) -> tuple[sdf.Shape, tuple]:
    """A proximal femur: head, neck, greater and lesser trochanter, intertrochanteric crest,
    shaft.  Returns the shape and ``(junction, shaft direction)`` for the cortical profile."""
    v, d_s, J = femur_axes(head, f, side)
    rh, rs = f["head_diameter_mm"] / 2, f["shaft_diameter_mm"] / 2
    rn = f["neck_diameter_mm"] / 2 * _NECK_FILLET
    lateral = np.array([side, 0.0, 0.0])
    posterior = np.array([0.0, 1.0, 0.0])
    waist = head - v * (rh + 6)
    gt = J + lateral * 21 * s - d_s * 12 * s + posterior * 5 * s  # greater trochanter centre
    lt = J + d_s * 40 * s - lateral * 16 * s + posterior * 9 * s  # lesser trochanter, posteromedial
    parts = [
        sdf.capsule(head - v * rh * 0.55, waist, rn * 1.15, rn),
        sdf.capsule(waist, J - d_s * 2 * s, rn, rn * 1.5),
        sdf.capsule(J - d_s * 12 * s, J + d_s * 60 * s, rs * 1.45, rs * 1.05),
        sdf.capsule(J + d_s * 60 * s, J + d_s * 260 * s, rs * 1.05, rs),
        sdf.ellipsoid(gt, np.array([12, 17, 23]) * s),
        sdf.ellipsoid(lt, np.array([8, 8, 12]) * s),
        # intertrochanteric crest: a posterior ridge from the greater to the lesser trochanter
        sdf.capsule(gt + posterior * 9 * s + d_s * 12 * s, lt - d_s * 3 * s, 6 * s, 5 * s),
    ]
    shape = sdf.union(sdf.sphere(head, rh), sdf.union(*parts, k=9.0 * s), k=3.0 * s)
    return shape, (J, d_s)


def _gauss_to_segment(X, Y, Z, a, b, sigma):
    """exp(-d^2 / 2 sigma^2) of the distance d (mm) from world points to the segment a-b."""
    ab = np.asarray(b, float) - a
    px, py, pz = X - a[0], Y - a[1], Z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return np.exp(-(dx * dx + dy * dy + dz * dz) / np.float32(2 * sigma * sigma))


def femur_landmarks(head, f, side) -> dict:
    """World points (x, y, z mm) of the calcar, the compressive group's two ends and Ward's
    triangle for a femur (the same construction the painter uses)."""
    v, d_s, _ = femur_axes(head, f, side)
    inf = _neck_frame(v, d_s)
    rh, rn = f["head_diameter_mm"] / 2, f["neck_diameter_mm"] / 2
    up = -inf  # the superolateral side of the neck, toward the tensile group
    post = np.array([0.0, 1.0, 0.0]) - v[1] * v
    post = post / np.linalg.norm(post)
    return {"calcar": head - v * (rh + 14) + (inf * 0.87 + post * 0.5) * rn,
            "compressive_top": head + up * rh * 0.7 + v * rh * 0.35,
            "compressive_bottom": head - v * (rh + 12) + inf * rn * 0.5,
            "ward": head - v * (rh + 14) + up * rn * 0.1,
            "tensile_top": head - inf * rh * 0.6 + v * rh * 0.2,
            "tensile_bottom": head - v * (rh + 24) + up * rn * 0.9}


def _near(region, grid, centre, half):
    """The part of ``region`` within ``half`` mm of ``centre`` (a box) and its slices inside
    ``region``; (None, None) when they do not meet."""
    sub = sdf.intersect_regions(region, grid.region(np.asarray(centre) - half, np.asarray(centre) + half))
    return (None, None) if sub is None else (sub, sdf.relative(sub, region))


def femur_cortex(region, grid, head, f, side, s):
    """Cortical thickness (mm) over a femur's region: ``head_cortex_mm`` over the head and neck,
    rising to ``shaft_cortex_mm`` down the diaphysis, thickened to ``calcar_cortex_mm`` at the
    calcar (inferomedial neck)."""
    _, d_s, J = femur_axes(head, f, side)
    base = shell_profile(region, grid, J, d_s, f["head_cortex_mm"], f["shaft_cortex_mm"], 20 * s, 40 * s)
    c = femur_landmarks(head, f, side)["calcar"]
    sub, rel = _near(region, grid, c + d_s * 15 * s, 45.0 * s)
    if sub is not None:
        # the thick medial cortex runs from the neck down the shaft's medial side (Adams' arch)
        w = _gauss_to_segment(*grid.coords(sub), c, c + d_s * 30 * s, 6.0 * s)
        base[rel] += (f["calcar_cortex_mm"] - base[rel]) * w
    return base


def femur_trabecular_factor(region, grid, head, f, side):
    """Relative trabecular density over a femur's region: 1 away from the groups, up to
    ``compressive_factor`` along the principal compressive group, a milder rise along the
    principal tensile group, down to ``ward_factor`` in Ward's triangle between them."""
    factor = np.ones([s.stop - s.start for s in region], np.float32)
    sub, rel = _near(region, grid, head, 2.2 * f["head_diameter_mm"])
    if sub is None:
        return factor
    X, Y, Z = grid.coords(sub)
    m = femur_landmarks(head, f, side)
    comp = _gauss_to_segment(X, Y, Z, m["compressive_top"], m["compressive_bottom"], 5.0)
    tens = _gauss_to_segment(X, Y, Z, m["tensile_top"], m["tensile_bottom"], 3.5)
    ward = _gauss_to_segment(X, Y, Z, m["ward"], m["ward"], 6.0)
    groups = 1.0 + (f["compressive_factor"] - 1.0) * comp + 0.5 * (f["compressive_factor"] - 1.0) * tens
    factor[rel] = groups * (1.0 - (1.0 - f["ward_factor"]) * ward)
    return factor


# --- pelvis ------------------------------------------------------------------------------------
def acetabular_axis(a, side) -> np.ndarray:
    """Unit vector out of the acetabular opening (lateral, inferior, anterior) for inclination and
    anteversion ``a`` (Murray's radiographic definitions); ``side`` = +1 left, -1 right."""
    inc, av = np.radians(a["inclination_deg"]), np.radians(a["anteversion_deg"])
    return np.array([side * np.sin(inc) * np.cos(av), -np.sin(av), -np.cos(inc) * np.cos(av)])


def _cup_frame(m):
    """Unit vectors perpendicular to the cup's pole ``m``: ``e2`` antero-posterior, ``e1``
    completing the frame (from the roof toward the acetabular notch)."""
    e2 = np.array([0.0, 1.0, 0.0]) - m[1] * m
    e2 /= np.linalg.norm(e2)
    return np.cross(e2, m), e2


def _cup_keep(u, m, cot1, cot2):
    """Positive where the vectors ``u`` (..., 3) from the head centre point into the cup: an
    elliptic cone about the pole ``m`` with half-angle cotangents ``cot1`` (roof) and ``cot2``
    (walls).  Its value is about the distance to the cone's surface times the sine of the
    half-angle, for unit ``u`` and at distance |u| otherwise."""
    e1, e2 = _cup_frame(m)
    return u @ m - np.sqrt(((u @ e1) * cot1) ** 2 + ((u @ e2) * cot2) ** 2)


def _rim_angle(directions, angles, m, cot1, cot2) -> float:
    """The largest of ``angles`` (degrees) whose direction lies inside the cup."""
    return float(angles[_cup_keep(directions, m, cot1, cot2) > 0].max())


def cup_half_angles(a, side=1) -> tuple[float, float]:
    """Half-angles (radians) of the bony cup about its pole: ``(roof, walls)``, solved by
    alternating bisections so that the coronal slice through the head centre shows the drawn
    centre-edge angle and the axial slice the drawn anterior sector angle (the walls wrap the
    head further in front and behind than the roof does laterally)."""
    m = -acetabular_axis(a, side)
    t = np.arange(-89.0, 90.0, 0.02)  # coronal: from the vertical toward lateral
    coronal = np.column_stack([side * np.sin(np.radians(t)), np.zeros_like(t), np.cos(np.radians(t))])
    q = np.arange(0.0, 180.0, 0.02)  # axial: from the medial direction toward anterior
    axial = np.column_stack([-side * np.cos(np.radians(q)), -np.sin(np.radians(q)), np.zeros_like(q)])

    def bisect(measure, target):
        lo, hi = np.radians(30.0), np.radians(89.5)
        for _ in range(28):  # each rim moves outward as its half-angle grows
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if measure(mid) > target else (mid, hi)
        return (lo + hi) / 2

    walls = np.radians(80.0)
    for _ in range(3):
        roof = bisect(lambda r, w=walls: _rim_angle(coronal, t, m, 1 / np.tan(r), 1 / np.tan(w)),
                      a["centre_edge_deg"])
        walls = bisect(lambda w, r=roof: _rim_angle(axial, q, m, 1 / np.tan(r), 1 / np.tan(w)),
                       a["anterior_sector_deg"])
    return float(roof), float(walls)


def acetabulum(H, r_cup, a, side):
    """The cup's cavity (a sphere of radius ``r_cup``, head radius plus joint space, about the
    head centre ``H``) and the cutter that opens it: everything within ``r_cup + 11`` mm of H
    outside an elliptic cone about the pole (:func:`cup_half_angles`)."""
    m = -acetabular_axis(a, side)
    roof, walls = cup_half_angles(a, side)
    cot1, cot2 = 1.0 / np.tan(roof), 1.0 / np.tan(walls)
    scale = float(np.sin((roof + walls) / 2))
    hx, hy, hz = (float(c) for c in H)
    reach = r_cup + 11.0  # just past the cup's wall: the rami and the ischium beyond stay whole

    def inside_cone(X, Y, Z):
        u = np.stack(np.broadcast_arrays(X - hx, Y - hy, Z - hz), axis=-1)
        return (_cup_keep(u, m, cot1, cot2) * scale).astype(np.float32)

    opening = sdf.Field(inside_cone, H - reach, H + reach)
    return sdf.sphere(H, r_cup), sdf.intersect(sdf.sphere(H, reach), opening)


def _wing_distance(x, y, z):
    """Signed distance (mm, approximate) to a left iliac wing in unit-scale coordinates: ``x``
    lateral, ``y`` posterior, ``z`` superior from the left head centre's frame origin.

    The wing's mid-surface is a flaring cylinder about a vertical axis at (45, -15): radius
    48 mm at z = 20, flaring more the higher it goes (the waist of the ilium above the
    acetabulum, the wide crest), swept from the anterior superior iliac spine
    (azimuth -22 deg) to the posterior superior spine (100 deg).  It is thin (3 mm) over the
    iliac fossa, thick at the crest, at its base over the acetabulum and posteriorly where it
    meets the sacrum.  Hand-written because it is a curved plate with a varying outline and
    thickness, which no library primitive draws.
    """
    du, dy = x - 45.0, y + 15.0
    r = np.sqrt(du * du + dy * dy)
    th = np.degrees(np.arctan2(dy, du))
    # the crest's highest point lies over the posterior half of the wing, so that in an AP view
    # the crest is an arc highest at about two thirds of the way out, not a lateral horn
    crest = np.where(th < 55.0, 118.0 - 63.0 * ((th - 55.0) / 77.0) ** 2,
                     118.0 - 33.0 * ((th - 55.0) / 45.0) ** 2)
    base = 5.0 + 7.0 * np.clip((th - 40.0) / 50.0, 0.0, 1.0)
    below_crest = np.maximum(crest - z, 0.0)
    above_base = np.maximum(z - base, 0.0)
    thick = (3.0 + 8.0 * np.exp(-below_crest / 6.0) + 14.0 * np.exp(-above_base / 12.0)
             + 15.0 * np.clip((th - 55.0) / 35.0, 0.0, 1.0))
    rise = z - 20.0
    sheet = np.abs(r - (48.0 + 0.22 * rise + 0.0025 * rise * rise)) - thick / 2
    outline = np.maximum(np.radians(th - 100.0), np.radians(-22.0 - th)) * r
    d = sdf.smax(sheet, z - crest, 4.0)
    d = sdf.smax(d, base - z, 4.0)
    return sdf.smax(d, outline, 3.0)


def iliac_wing(side, s) -> sdf.Shape:
    """The iliac wing of one side (``side`` = +1 left, -1 right) at scale ``s``."""
    lo = np.array([20.0, -70.0, -5.0]) * s
    hi = np.array([150.0, 100.0, 125.0]) * s
    if side < 0:
        lo, hi = np.array([-hi[0], lo[1], lo[2]]), np.array([-lo[0], hi[1], hi[2]])
    return sdf.Field(lambda X, Y, Z: _wing_distance(side * X / s, Y / s, Z / s) * s, lo, hi)


def hip_bone(side, H, r_cup, a, gap, s) -> sdf.Shape:
    """One hip bone (ilium, ischium, pubis) around the acetabulum at ``H`` (the head centre) with
    a cup of inner radius ``r_cup``; its medial face stops ``gap / 2`` mm from the midline (the
    symphysis).  ``side`` = +1 left, -1 right; ``s`` the subject's scale."""
    def at(x, y, z):  # a point of this side at unit scale: x lateral from the midline
        return np.array([side * x * s, y * s, z * s])

    cavity, cutter = acetabulum(H, r_cup, a, side)
    hx = abs(H[0]) / s
    pubis = at(11.0, -54.0, -36.0)
    tuber = at(hx - 27.0, 24.0, -63.0)
    parts = [
        sdf.sphere(H + at(1.5, 0.0, 2.0), r_cup + 8.0),  # the cup's wall
        # the supra-acetabular ilium, leaning laterally into the wing
        sdf.ellipsoid(H + at(-5.0, 3.0, 26.0), np.array([14, 18, 24]) * s, sdf.rotation(ry=side * 15)),
        iliac_wing(side, s),
        # body of the ilium along the pelvic brim to the sacroiliac joint
        sdf.capsule(H + at(-22.0, 8.0, 6.0), at(50.0, 48.0, 42.0), 7.0 * s, 9.0 * s),
        # superior pubic ramus to the pubic body, inferior ramus and ischial ramus to the tuberosity
        sdf.capsule(H + at(-16.0, -22.0, -12.0), pubis + at(6.0, 2.0, 12.0), 9.0 * s, 6.5 * s),
        sdf.ellipsoid(pubis, np.array([13, 8, 19]) * s),
        sdf.capsule(pubis + at(2.0, 4.0, -18.0), tuber + at(-6.0, -8.0, -6.0), 5.5 * s, 7.0 * s),
        # ischial body behind and below the cup, the ischial spine, the tuberosity
        sdf.ellipsoid(H + at(-12.0, 19.0, -4.0), np.array([11, 12, 24]) * s),  # posterior column
        sdf.capsule(H + at(-10.0, 16.0, -16.0), tuber, 13.0 * s, 11.0 * s),
        sdf.capsule(H + at(-14.0, 22.0, -20.0), H + at(-34.0, 42.0, -24.0), 6.0 * s, 2.0 * s),
        sdf.ellipsoid(tuber, np.array([14, 17, 16]) * s),
    ]
    # the obturator foramen: an oval hole framed by the rami, the ischium and the pubic body,
    # its long axis tilted top-lateral as an AP film shows it
    foramen = sdf.ellipsoid(at(hx - 49.0, -22.0, -45.0), np.array([13, 45, 18]) * s, sdf.rotation(ry=side * 12))
    bone = sdf.subtract(sdf.union(*parts, k=7.0 * s), cavity, cutter, foramen, k=1.5)
    half_gap = gap / 2
    medial = sdf.Field(lambda X, Y, Z: half_gap - side * X + 0 * (Y + Z), bone.lo, bone.hi)
    return sdf.intersect(bone, medial, k=1.0)


def sacrum(s) -> tuple[sdf.Shape, sdf.Shape]:
    """The sacrum (S1-S5 with alae, sacral canal, anterior foramina) and the coccyx."""
    # centre line of the bodies, promontory to apex (concave anteriorly), mm at unit scale
    line = np.array([[0, 42, 60], [0, 55, 38], [0, 65, 18], [0, 71, 0], [0, 73, -16], [0, 71, -30]], float)
    half_width = [50.0, 42.0, 31.0, 21.0, 14.0]
    depth = [18.0, 14.0, 11.0, 9.0, 7.0]
    parts, holes = [], []
    for i in range(5):
        a, b = line[i] * s, line[i + 1] * s
        c, axis = (a + b) / 2, (a - b) / np.linalg.norm(a - b)
        R = sdf.frame(axis, (1.0, 0.0, 0.0))
        parts.append(sdf.superellipsoid(c, np.array([half_width[i], depth[i], 12.5]) * s, R, e_xy=3.0, e_z=3.0))
        if i < 4:  # anterior foramina between segments, left and right
            ant = R @ np.array([0.0, -1.0, 0.0])
            for side in (-1, 1):
                p = b + np.array([side * half_width[i + 1] * 0.55 * s, 0, 0])
                holes.append(sdf.capsule(p + ant * 20 * s, p - ant * 6 * s, (4.5 - 0.6 * i) * s))
    canal = sdf.tube(line[:5] * s + np.array([0, 10, 0]) * s, np.array([9, 8, 6, 5, 4]) * s)
    bone = sdf.subtract(sdf.union(*parts, k=6.0 * s), canal, *holes, k=1.0)
    coccyx = sdf.tube(np.array([[0, 70, -34], [0, 64, -46], [0, 56, -55]]) * s, np.array([6, 4.5, 3]) * s)
    return bone, coccyx


def lumbar_vertebrae(s) -> sdf.Shape:
    """L5 and L4 above the promontory: bodies, pedicles and spinous processes (unlabelled)."""
    parts = []
    for i, (y, z) in enumerate(((36.0, 85.0), (30.0, 123.0))):
        c = np.array([0.0, y, z]) * s
        parts += [sdf.superellipsoid(c, np.array([26, 18, 13.5]) * s, sdf.rotation(rx=-12 + 8 * i), e_xy=2.2, e_z=6.0),
                  sdf.capsule(c + np.array([-14, 14, 2]) * s, c + np.array([14, 14, 2]) * s, 6 * s),
                  sdf.capsule(c + np.array([0, 30, 0]) * s, c + np.array([0, 58, -8]) * s, 6 * s, 4 * s),
                  sdf.capsule(c + np.array([-(40 + 8 * (1 - i)), 22, 4]) * s,
                              c + np.array([40 + 8 * (1 - i), 22, 4]) * s, 5 * s)]
    return sdf.union(*parts, k=4.0 * s)


# --- soft tissue -------------------------------------------------------------------------------
def _superellipse_distance(x, y, a, b, e):
    """First-order distance (mm) to the 2D superellipse |x/a|^e + |y/b|^e = 1."""
    ux, uy = np.abs(x) / a + 1e-6, np.abs(y) / b + 1e-6
    px, py = ux**e, uy**e
    f = (px + py) ** (1.0 / e)
    common = f ** (1.0 - e)
    gx, gy = common * px / ux / a, common * py / uy / b
    return (f - 1.0) / (np.sqrt(gx * gx + gy * gy) + 1e-6)


def _body_shape(p, s, grid) -> sdf.Shape:
    """The outer body: a trunk of superelliptic cross-section that ends at the perineum, blended
    into two thighs (vertical cylinders below the hips).  Both cross-sections are computed on
    one axial plane and combined per slice: hand-written because a 3D superellipsoid and
    capsules evaluated over the whole grid took over half of the generator's 3 s budget."""
    h = p["habitus"] * s
    fat = p["fat_mm"]
    a, b, cy = max(165 * h, 175 * s) + fat, 105 * h + fat, 15 * h
    # the thighs reach well up into the trunk: where two overlapping shapes are both shallow,
    # min() underestimates the depth below the skin and the fat layer would show inside
    z_perineum, z_thighs = -62.0 * s, 40.0 * s
    r_thigh = 78 * h + fat

    def fn(X, Y, Z):
        trunk = _superellipse_distance(X, Y - cy, a, b, 2.4).astype(np.float32)
        legs = np.minimum(*(np.sqrt((X - side * 98 * h) ** 2 + (Y - 12 * h) ** 2) - r_thigh
                            for side in (-1, 1))).astype(np.float32)
        out = np.empty(np.broadcast_shapes(X.shape, Y.shape, Z.shape), np.float32)
        out[...] = trunk
        # Z grows with the slice index: the perineum shapes only the lowest slices, the thighs
        # change nothing above their top
        n_perineum = int(np.count_nonzero(Z.ravel() < z_perineum + 25.0))
        n_thighs = int(np.count_nonzero(Z.ravel() < z_thighs + 40.0))
        out[:n_perineum] = sdf.smax(trunk, np.float32(z_perineum) - Z[:n_perineum], 25.0)
        low = slice(0, n_thighs)
        out[low] = sdf.smin(out[low], np.maximum(legs, Z[low] - np.float32(z_thighs)), 40.0)
        return out

    lo = grid.origin
    hi = grid.origin + grid.spacing * (np.array(grid.shape[::-1]) - 1)
    return sdf.Field(fn, lo, hi)


def _body(canvas, p, s):
    h = p["habitus"] * s
    layered_body(canvas, _body_shape(p, s, canvas.grid), 2.0, p["fat_mm"])
    # pelvic organs: bladder (urine ~10 HU), rectum with a little gas, intermuscular fat planes,
    # bowel with gas above the pelvic brim
    canvas.fill(sdf.ellipsoid((0, -45 * h, -5), np.array([38, 28, 30]) * h), 10.0)
    canvas.fill(sdf.ellipsoid((5, 45 * h, 5), np.array([16, 14, 30]) * h), HU["soft"])
    canvas.fill(sdf.ellipsoid((5, 43 * h, 18), np.array([8, 6, 10]) * h), HU["air"] + 100)
    for side in (-1, 1):
        for c, r in (((side * 120, 60, 0), (10, 40, 60)), ((side * 70, -70, -40), (6, 30, 70))):
            canvas.fill(sdf.ellipsoid(np.array(c) * h, np.array(r) * h, sdf.rotation(rz=side * 30)), HU["fat"])
    for c, r in (((-55, -30, 100), (18, 12, 10)), ((40, -45, 115), (14, 10, 9)), ((-20, -60, 80), (12, 8, 8))):
        canvas.fill(sdf.ellipsoid(np.array(c) * s, np.array(r) * s), HU["air"] + 150)


def _calibration(canvas, p, back_y):
    """A Mindways-style pad (water-equivalent resin) with five K2HPO4 rods along z under the
    patient (posterior, larger y).  Writes rod centres into ``p["calibration"]``."""
    cal = p["calibration"]
    b0, b1 = cal["intercept_hu"], cal["slope_hu_per_mg_cm3"]
    y0 = back_y + 4.0
    g = canvas.grid
    zlo, zhi = g.origin[2] - 10, g.origin[2] + g.spacing[2] * g.shape[0] + 10
    pad = sdf.superellipsoid((0.0, y0 + 15.0, (zlo + zhi) / 2), (150.0, 15.0, (zhi - zlo) / 2), e_xy=8.0, e_z=8.0)
    canvas.fill(pad, b0)
    centres = []
    for i, c in enumerate(ROD_CONCENTRATIONS):
        x = -100.0 + 50.0 * i
        centres.append([x, y0 + 15.0])
        rod = sdf.capsule((x, y0 + 15.0, zlo - 20), (x, y0 + 15.0, zhi + 20), ROD_RADIUS_MM)
        canvas.fill(rod, b0 + b1 * c)
    cal.update({"concentrations_mg_cm3": list(ROD_CONCENTRATIONS), "rod_centers_xy_mm": centres,
                "rod_radius_mm": ROD_RADIUS_MM,
                "note": "rods run along z; real concentrations come from each phantom's certificate"})


#: The sacroiliac carve asks for this much less than the drawn joint width: deep inside the
#: overlapping wing and sacrum the distances are first-order estimates, and the carved joint
#: comes out about 1 mm wider than asked (measured on the label map, tests/test_phantom_hip.py).
_SI_WIDENING = 1.0


def _sacroiliac_joints(hip_bones, sacral, gap):
    """Carve the sacroiliac joints (``gap`` mm) between the sacrum's ``(region, d)`` and the hip
    bones', working inside the sacrum's region only (the hip bones' distances are updated in
    place there); returns the sacrum's carved ``(region, d)``."""
    reg_s = sacral[0]
    crops, places = [], []
    for reg, d in hip_bones:
        sub = sdf.intersect_regions(reg, reg_s)
        places.append(None if sub is None else (d, sdf.relative(sub, reg)))
        crops.append((sub, None if sub is None else d[sdf.relative(sub, reg)]))
    *carved, sacral = carve_joints([*crops, sacral], gap)
    for place, (_, dc) in zip(places, carved):
        if place is not None:
            place[0][place[1]] = dc
    return sacral


def _paint_pelvis(canvas, p, heads, s, trab):
    """Hip bones (label 3), sacrum (4), coccyx and lumbar vertebrae (unlabelled), with the
    symphysis and sacroiliac gaps; the cups lined with cartilage."""
    grid = canvas.grid
    bones = []
    for side, key, H in ((1, "left", heads[0]), (-1, "right", heads[1])):
        a, f = p[f"acetabulum_{key}"], p[f"femur_{key}"]
        r_cup = f["head_diameter_mm"] / 2 + a["joint_space_mm"]
        canvas.fill(sdf.sphere(H, r_cup), HU["cartilage"])  # articular cartilage across the joint
        a["cup_radius_mm"] = r_cup
        a["opening_axis"] = acetabular_axis(a, side).tolist()
        bones.append(hip_bone(side, H, r_cup, a, p["symphysis_gap_mm"], s).sample(grid))
    sac, coccyx = sacrum(s)
    bones.append(_sacroiliac_joints(bones, sac.sample(grid), p["sacroiliac_gap_mm"] - _SI_WIDENING))
    for (region, d), label in zip(bones, (3, 3, 4)):
        canvas.bone(region, d, label, p["cortical_hu"], trab * 0.9, 1.2)
    for shape in (coccyx, lumbar_vertebrae(s)):
        region, d = shape.sample(grid)
        canvas.bone(region, d, 0, p["cortical_hu"], trab, 1.0)


def hip(seed: int, spacing: float = 1.25, calibration_phantom: bool = True, noise: bool = True) -> Subject:
    """Generate a hip QCT (HU) with left/right proximal femur, pelvis and sacrum labels.

    Parameters
    ----------
    seed : int
        Same seed (and options), same subject bit for bit.
    spacing : float
        Isotropic voxel size in mm (default 1.25: about 300 x 260 x 210 voxels, within the 3 s
        budget on two cores; QCT protocols use 0.7-1 mm, ``spacing=1.0`` works too; at least 0.6).
    calibration_phantom : bool
        Put a K2HPO4 calibration phantom under the patient (see module doc); its concentrations,
        rod centres and the calibration line are in ``params["calibration"]``.
    noise : bool
        Add CT noise.

    Returns
    -------
    Subject
        ``ct`` (HU, float32) and ``labels`` (:data:`LABELS`), arrays ``(z, y, x)``, LPS mm;
        ``params`` holds every drawn quantity (see the module table), the head centres
        (``params["femur_left"]["head_center_mm"]``), the cup radii and opening axes.

    >>> s = hip(0, spacing=3.0)
    >>> s.label_names[1], s.label_names[4], round(s.params["calibration"]["concentrations_mg_cm3"][4], 1)
    ('femur_left', 'sacrum', 375.8)
    """
    spacing = check_inputs("hip", seed, spacing, 0.6)
    ss = np.random.SeedSequence(int(seed))
    rng, rng_tex = (np.random.default_rng(c) for c in ss.spawn(2))
    p = _draws(rng, seed)
    s, h = p["scale"], p["habitus"] * p["scale"]
    half = p["head_separation_mm"] / 2
    heads = [np.array([half, 0.0, 0.0]), np.array([-half, 0.0, 0.0])]
    back = 15 * h + 105 * h + p["fat_mm"]
    ylo = -(105 * h + p["fat_mm"]) + 15 * h - 8
    yhi = back + (40.0 if calibration_phantom else 8.0)
    half_x = min(max(165 * h, 175 * s) + p["fat_mm"] + 10, 190.0)
    grid = sdf.Grid.around((-half_x, ylo, Z_RANGE[0] * s), (half_x, yhi, Z_RANGE[1] * s), spacing)
    canvas = Canvas(grid, rng_tex)
    _body(canvas, p, s)
    if calibration_phantom:
        _calibration(canvas, p, back)
    cal = p["calibration"]
    trab = 100.0 + 150.0 * p["density"]
    p["trabecular_hu"] = trab
    p["trabecular_bmd_mg_cm3"] = (trab - cal["intercept_hu"]) / cal["slope_hu_per_mg_cm3"]

    _paint_pelvis(canvas, p, heads, s, trab)
    for label, side, key, H in ((1, 1, "femur_left", heads[0]), (2, -1, "femur_right", heads[1])):
        f = p[key]
        shape, (J, d_s) = femur(H, f, side, s)
        region, d = shape.sample(grid)
        shell = femur_cortex(region, grid, H, f, side, s)
        trab_field = trab * femur_trabecular_factor(region, grid, H, f, side)
        # yellow marrow (about -50 HU) replaces trabecular bone down the shaft's medullary canal
        along = shell_profile(region, grid, J, d_s, 0.0, 1.0, 20 * s, 40 * s)
        marrow = np.clip((along * f["shaft_cortex_mm"] - 2.0) / (f["shaft_cortex_mm"] - 2.0), 0, 1)
        canvas.bone(region, d, label, p["cortical_hu"], trab_field * (1 - marrow) - 50.0 * marrow, shell)
        f["head_center_mm"] = H.tolist()
        f["neck_shaft_junction_mm"] = J.tolist()
        f["landmarks_mm"] = {k: v.tolist() for k, v in femur_landmarks(H, f, side).items()}
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.6)
    return make_subject("hip", hu, canvas.labels, grid, LABELS, p)
