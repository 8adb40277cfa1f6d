"""A procedural hip (QCT-style): both proximal femurs, the pelvis around the acetabula, soft
tissue, and an optional QCT calibration phantom under the patient.

Frame: LPS (x left, y posterior, z superior), patient supine, origin midway between the femoral
head centres; arrays ``(z, y, x)``.

Anatomy and distributions (mm, degrees, HU, mg/cm3):

==========================  ==========================================  =============================
quantity                    value                                       source / note
==========================  ==========================================  =============================
femoral head diameter       N(46, 2.5), in [40, 50]                     adult range 40-50 mm
neck diameter               N(32, 1.3), in [30, 35]                     supero-inferior, at the waist
neck length (head centre    N(52, 3)                                    femoral offset ~40 mm
to shaft axis)
neck-shaft angle            N(127, 4), in [120, 135]                    normal adult range (Noble et
                                                                        al. 1988, Clin Orthop 235:148)
anteversion                 N(10, 4), in [0, 20]                        ~10 deg in adults (ibid.)
shaft diameter, cortex      N(28, 1.5); cortex 0.8 (head, neck,         diaphyseal cortex 5-7 mm
                            trochanters) rising to N(5.5, 0.6)
inter-head distance         N(175, 8) x scale                           pelvic width
trabecular HU               100 + 150 * density, density U(0, 1)        healthy to osteoporotic
cortical HU                 U(1300, 1800)
subcutaneous fat            U(10, 45)                                   body habitus
calibration rods (K2HPO4)   -51.8, -53.4, 58.9, 157.0, 375.8 mg/cm3     Mindways Model 3 CT style;
                                                                        real values come from each
                                                                        phantom's certificate
calibration line            HU = b0 + b1 * c, b0 ~ N(0, 4) HU,          simulated scanner/kVp
                            b1 ~ U(1.15, 1.35) HU per mg/cm3            (single-material model)
==========================  ==========================================  =============================

The rods are built with exactly that calibration line, so ``params["calibration"]`` holds the
truth a chapter can recover by regression, and ``params["trabecular_bmd_mg_cm3"]`` the femoral
trabecular density implied by the same line.

Labels: 1 femur_left, 2 femur_right, 3 pelvis.  The lower sacrum and the calibration phantom
are unlabelled.
"""

from __future__ import annotations

import numpy as np

from bonelab.phantoms import sdf
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import HU, Canvas, layered_body, shell_profile

LABELS = {1: "femur_left", 2: "femur_right", 3: "pelvis"}
#: Mindways Model 3 CT style K2HPO4 concentrations (mg/cm3) of rods A-E.
ROD_CONCENTRATIONS = (-51.8, -53.4, 58.9, 157.0, 375.8)
ROD_RADIUS_MM = 6.0


def _draws(rng, seed):
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    s = clipped(1.0, 0.05, 0.88, 1.12)
    p = {"seed": int(seed), "scale": s,
         "head_separation_mm": clipped(175, 8, 155, 195) * s,
         "density": float(rng.uniform(0, 1)),
         "cortical_hu": float(rng.uniform(1300, 1800)),
         "fat_mm": float(rng.uniform(10, 45)),
         "habitus": clipped(1.0, 0.07, 0.85, 1.15),
         "noise_hu": float(rng.uniform(10, 22)),
         "calibration": {"intercept_hu": clipped(0.0, 4.0, -10, 10),
                         "slope_hu_per_mg_cm3": float(rng.uniform(1.15, 1.35))}}
    for side in ("left", "right"):
        p[f"femur_{side}"] = {
            "head_diameter_mm": clipped(46 * s, 2.5, 40.5, 49.5),
            "neck_diameter_mm": clipped(32 * s, 1.3, 30.3, 34.7),
            "neck_length_mm": clipped(52 * s, 3, 44, 60),
            "neck_shaft_angle_deg": clipped(127, 4, 120.5, 134.5),
            "anteversion_deg": clipped(10, 4, 0, 20),
            "shaft_diameter_mm": clipped(28 * s, 1.5, 24, 32),
            "shaft_cortex_mm": clipped(5.5, 0.6, 4.0, 7.0),
        }
    return p


def femur_axes(head, f, side):
    """Neck direction (towards the head), shaft direction (distal) and the neck-shaft junction for
    a femur with head centre ``head`` and parameters ``f``; ``side`` = +1 left, -1 right."""
    delta = np.radians(7.0)  # shaft adduction
    d_s = np.array([-side * np.sin(delta), 0.0, -np.cos(delta)])
    gamma = np.radians(180.0 - f["neck_shaft_angle_deg"]) - delta
    beta = np.radians(f["anteversion_deg"])
    v = np.array([-side * np.sin(gamma) * np.cos(beta), -np.sin(gamma) * np.sin(beta), np.cos(gamma)])
    return v, d_s, head - v * f["neck_length_mm"]


def femur(head, f, side, s) -> tuple[sdf.Shape, tuple]:
    """A proximal femur: head, neck, greater and lesser trochanter, shaft.  Returns the shape and
    ``(junction, shaft direction)`` for the cortical thickness profile."""
    v, d_s, J = femur_axes(head, f, side)
    rh, rn, rs = f["head_diameter_mm"] / 2, f["neck_diameter_mm"] / 2, f["shaft_diameter_mm"] / 2
    lateral = np.array([side, 0.0, 0.0])
    posterior = np.array([0.0, 1.0, 0.0])
    waist = head - v * (rh + 4)
    parts = [
        sdf.sphere(head, rh),
        sdf.capsule(head - v * rh * 0.5, waist, rn * 1.05, rn),
        sdf.capsule(waist, J - d_s * 4, rn, rn * 1.45),
        sdf.capsule(J - d_s * 12 * s, J + d_s * 60 * s, rs * 1.5, rs * 1.05),
        sdf.capsule(J + d_s * 60 * s, J + d_s * 260 * s, rs * 1.05, rs),
        sdf.ellipsoid(J + lateral * 20 * s - d_s * 14 * s + posterior * 4 * s, np.array([13, 17, 24]) * s),
        sdf.ellipsoid(J + d_s * 42 * s - lateral * 13 * s + posterior * 12 * s, np.array([8, 8, 12]) * s),
    ]
    shape = sdf.union(*parts[:1], sdf.union(*parts[1:], k=10.0 * s), k=2.0 * s)
    return shape, (J, d_s)


def pelvis(heads, rh, s) -> sdf.Shape:
    """Both hip bones around the acetabula (ilium body, ischium, pubic rami), the sockets cut
    with a 4 mm joint space around femoral heads of radius ``rh``."""
    parts, sockets = [], []
    for side, H, r in zip((1, -1), heads, rh):
        lat = np.array([side, 0.0, 0.0])
        up, ant = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
        block = sdf.ellipsoid(H - lat * 12 * s + up * 6 * s, np.array([22, 30, 33]) * s)
        # the iliac wing faces antero-medially: its broad axis runs from postero-medial (sacrum)
        # to antero-lateral (anterior superior iliac spine)
        ilium = sdf.ellipsoid(H - lat * 4 * s + up * 58 * s, np.array([11, 52, 55]) * s,
                              sdf.rotation(ry=side * 25, rz=side * 40))
        symph = np.array([side * 10.0 * s, -48 * s, -28 * s])
        tuber = H - lat * 8 * s - up * 55 * s + ant * -22 * s
        parts += [block, ilium,
                  sdf.capsule(H - lat * 18 * s + ant * 14 * s - up * 6 * s, symph + up * 10 * s, 10 * s, 8 * s),
                  sdf.ellipsoid(symph, np.array([8, 11, 20]) * s),
                  sdf.capsule(symph - up * 12 * s, tuber - up * 2 * s + ant * 10 * s, 7 * s, 8 * s),
                  sdf.capsule(H - lat * 12 * s - up * 10 * s + ant * -10 * s, tuber, 14 * s, 12 * s),
                  sdf.ellipsoid(tuber, np.array([13, 16, 14]) * s)]
        sockets.append(sdf.sphere(H, r + 4.0))
    return sdf.subtract(sdf.union(*parts, k=8.0 * s), *sockets, k=1.5)


def _body(canvas, p, s):
    h = p["habitus"] * s
    fat = p["fat_mm"]
    # at least 25 mm of soft tissue lateral to the greater trochanters, whatever the habitus
    trunk = sdf.superellipsoid((0, 15 * h, 60), (max(165 * h, 175 * s) + fat, 105 * h + fat, 120), e_xy=2.4, e_z=4.0)
    thighs = [sdf.capsule((side * 95 * h, 10 * h, -20), (side * 105 * h, 15 * h, -320), 78 * h + fat)
              for side in (-1, 1)]
    layered_body(canvas, sdf.union(trunk, *thighs, k=40.0), 2.0, fat)
    # pelvic organs: bladder (urine ~10 HU), rectum with a little gas, intermuscular fat planes
    canvas.fill(sdf.ellipsoid((0, -45 * h, -5), np.array([38, 28, 30]) * h), 10.0)
    canvas.fill(sdf.ellipsoid((5, 45 * h, 5), np.array([16, 14, 30]) * h), HU["soft"])
    canvas.fill(sdf.ellipsoid((5, 43 * h, 18), np.array([8, 6, 10]) * h), HU["air"] + 100)
    for side in (-1, 1):
        for c, r in (((side * 120, 60, 0), (10, 40, 60)), ((side * 70, -70, -40), (6, 30, 70))):
            canvas.fill(sdf.ellipsoid(np.array(c) * h, np.array(r) * h, sdf.rotation(rz=side * 30)), HU["fat"])


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


def hip(seed: int, spacing: float = 1.25, calibration_phantom: bool = True, noise: bool = True) -> Subject:
    """Generate a hip QCT (HU) with left/right proximal femur and pelvis labels.

    Parameters
    ----------
    seed : int
        Same seed (and options), same subject bit for bit.
    spacing : float
        Isotropic voxel size in mm (default 1.25: about 300 x 250 x 135 voxels, within the 3 s
        budget on two cores; QCT protocols use 0.7-1 mm, ``spacing=1.0`` works too; at least 0.6).
    calibration_phantom : bool
        Put a K2HPO4 calibration phantom under the patient (see module doc); its concentrations,
        rod centres and the calibration line are in ``params["calibration"]``.
    noise : bool
        Add CT noise.

    >>> s = hip(0, spacing=3.0)
    >>> s.label_names[1], round(s.params["calibration"]["concentrations_mg_cm3"][4], 1)
    ('femur_left', 375.8)
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
    grid = sdf.Grid.around((-half_x, ylo, -105 * s), (half_x, yhi, 65 * s), spacing)
    canvas = Canvas(grid, rng_tex)
    _body(canvas, p, s)
    if calibration_phantom:
        _calibration(canvas, p, back)
    cal = p["calibration"]
    trab = 100.0 + 150.0 * p["density"]
    p["trabecular_hu"] = trab
    p["trabecular_bmd_mg_cm3"] = (trab - cal["intercept_hu"]) / cal["slope_hu_per_mg_cm3"]

    rh = [p["femur_left"]["head_diameter_mm"] / 2, p["femur_right"]["head_diameter_mm"] / 2]
    region, d = pelvis(heads, rh, s).sample(grid)
    canvas.bone(region, d, 3, p["cortical_hu"], trab * 0.9, 1.2)
    sacrum = sdf.capsule((0, 75 * s, 75 * s), (0, 85 * s, -15 * s), 22 * s, 8 * s)
    region, d = sacrum.sample(grid)
    canvas.bone(region, d, 0, p["cortical_hu"], trab, 1.0)
    for label, side, key, H in ((1, 1, "femur_left", heads[0]), (2, -1, "femur_right", heads[1])):
        f = p[key]
        shape, (J, d_s) = femur(H, f, side, s)
        region, d = shape.sample(grid)
        shell = shell_profile(region, grid, J, d_s, 0.8, f["shaft_cortex_mm"], 55 * s, 35 * s)
        # yellow marrow (about -50 HU) replaces trabecular bone down the shaft's medullary canal
        marrow = np.clip((shell - 2.0) / (f["shaft_cortex_mm"] - 2.0), 0, 1)
        canvas.bone(region, d, label, p["cortical_hu"], trab * (1 - marrow) - 50.0 * marrow, shell)
        f["head_center_mm"] = H.tolist()
        f["neck_shaft_junction_mm"] = J.tolist()
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.6)
    return make_subject("hip", hu, canvas.labels, grid, LABELS, p)
