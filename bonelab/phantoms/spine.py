"""A procedural lumbar spine (L1-L5, sacrum, discs, abdomen), optional degeneration and implants.

Frame: LPS (x left, y posterior, z superior), patient supine; arrays ``(z, y, x)``.  An AP
radiograph projects along y, a lateral one along x.  Each vertebra is built in a local frame
(x lateral, y posterior, z cranial along the spine's axis) by :func:`vertebra`, which the chest
generator reuses for thoracic levels.

Anatomy and distributions (mm, degrees, HU).  "Measured" marks the quantities that
``tests/test_phantom_chest_spine.py`` (and ``tests/test_phantoms.py``) measure on the generated
volumes over several seeds:

=========================  =====================================  =================================
quantity                   value                                  source / note
=========================  =====================================  =================================
body height L1..L5         24, 25.5, 26.5, 26.5, 25.5 (in 20-30)  Panjabi et al. 1992, Spine 17:299
body depth L1..L5          31, 32, 33, 34, 34 (in 30-35)          (lumbar morphometry); ranges of
body width L1..L5          42, 44, 46, 48, 49 (in 40-50)          the issue (measured)
disc height L1/2..L5/S1    9, 10, 11, 11.5, 10.5                  healthy adult discs (measured)
pedicle width L1..L5       8.7, 8.9, 10.3, 12.9, 18.0 x N(1,      Zindrick et al. 1987, Spine
                           0.1); band +-3 mm (measured at the     12:160 (transverse width); the
                           isthmus across the pedicle axis)       T11-L5 range 7.2-17.8 of
pedicle height L1..L5      15.4, 15.0, 14.9, 14.8, 14.0 x N(1,    PMC2200778 agrees
                           0.06); band +-3 mm (measured)
pedicle transverse angle   10.9, 12.0, 14.4, 17.7, 29.8 x N(1,    Zindrick et al. 1987
                           0.12), medial convergence
spinal canal               interpedicular 22-26, depth 16-18
posterior body wall to     40-65 (measured): canal 16-18 +        composed from the rows above
spinous process tip        lamina ~5 + spinous process 22-30      and Panjabi et al. 1992
facet joints               articular processes ~35 deg off the    joint space 1.5 mm (measured:
                           sagittal plane, overlapping 15 mm      neighbours never touch yet meet
                           in height                              within 3 mm behind the canal)
transverse process length  18, 24, 28, 24, 20                     L3 longest
size scale                 N(1, 0.04) x N(1, 0.02) per dimension  clipped to the ranges above
sacral slope               N(40, 6), in [28, 52]                  Roussouly et al. 2005
lumbar lordosis L1-S1      N(50, 9), in [32, 68]                  mostly in the lower discs
trabecular HU (L1)         90 + 140 * density, density U(0, 1)    healthy to osteoporotic QCT range
cortical HU                U(1250, 1750)
subcutaneous fat           U(8, 35)                               body habitus
degeneration="random"      disc height x U(0.35, 0.8) at 1-2      disc narrowing (measured),
                           levels; rim osteophytes U(2, 5) mm     anterolateral spurs toward the
                           at L3-L5; endplate sclerosis           disc (measured), a dense band
                           +U(250, 500) HU over 3-5 mm under      under the endplates of narrowed
                           the endplates of narrowed discs;       discs (measured), anterior
                           20 % a wedge fracture (anterior        wedge fractures (Genant grades
                           height x U(0.6, 0.85))                 1-2)
implants                   pedicle screws: diameter 80 % of the   pivot at the isthmus (measured:
                           pedicle width up to 6.5, pedicle       >= 95 % of each shank inside its
                           angle up to 15 deg (L1-L4) / 20 deg    vertebra, tip in the anterior
                           (L5), tip at 75 % of the body depth;   half, cortex ahead intact);
                           tulip heads, rods 5.5 over 2-3         metal at the 3071 HU ceiling;
                           levels                                 "random": 30 % of seeds
=========================  =====================================  =================================

What remains schematic: T12 carries no ribs; the posterior elements are blended ellipsoids and
capsules (no pars interarticularis as a separate narrowing, no mammillary or accessory
processes, no ligamentum flavum); the facet surfaces are planar bisectors rather than congruent curved
joints with cartilage; discs are homogeneous (no nucleus, annulus or vacuum phenomenon); the
sacrum has no superior articular processes or foramina; osteophytes are smooth spurs; the screws
have no thread and their heads no set screws; metal is painted at the HU ceiling without beam
hardening or streak artefacts.

Labels: 1-5 L1-L5, 6 sacrum, 7 implant (screws and rods; they override bone where they pass
through a pedicle).  Discs, T12 (L1's size, above a T12/L1 disc of 8 mm, without ribs: there so
that a lateral film's field, which reaches above L1, ends in a vertebra as real ones do), iliac
bone and organs are unlabelled.
"""

from __future__ import annotations

import numpy as np

from bonelab.errors import InvalidArgumentError
from bonelab.phantoms import sdf
from bonelab.phantoms.subject import Subject, check_inputs, make_subject
from bonelab.phantoms.tissue import HU, Canvas, carve_joints, layered_body

LABELS = {1: "L1", 2: "L2", 3: "L3", 4: "L4", 5: "L5", 6: "sacrum", 7: "implant"}
LEVELS = ["L1", "L2", "L3", "L4", "L5"]
T12_DISC_MM = 8.0
"""Height of the T12/L1 disc (mm, times the subject's mean size scale)."""
MEAN = {  # per level L1..L5, mm (angles in degrees)
    "height": [24.0, 25.5, 26.5, 26.5, 25.5],
    "depth": [31.0, 32.0, 33.0, 34.0, 34.0],
    "width": [42.0, 44.0, 46.0, 48.0, 49.0],
    "pedicle": [4.35, 4.45, 5.15, 6.45, 9.0],  # half the transverse pedicle width
    "pedicle_h": [15.4, 15.0, 14.9, 14.8, 14.0],  # sagittal pedicle height
    "pedicle_deg": [10.9, 12.0, 14.4, 17.7, 29.8],  # transverse angle (medial convergence)
    "transverse": [18.0, 24.0, 28.0, 24.0, 20.0],
    "spinous": [28.0, 30.0, 30.0, 28.0, 22.0],
    "canal_w": [11.0, 11.0, 11.5, 12.0, 13.0],
    "canal_d": [8.0, 8.0, 8.0, 8.5, 9.0],
}
#: relative SD of each dimension within a subject (after the whole-spine scale); 2 % otherwise
SCATTER = {"pedicle": 0.1, "pedicle_h": 0.06, "pedicle_deg": 0.12}
RANGES = {"height": (20.0, 30.0), "depth": (30.0, 35.0), "width": (40.0, 50.0)}
DISCS = [9.0, 10.0, 11.0, 11.5, 10.5]  # L1/2 .. L5/S1
#: largest medial convergence of a pedicle screw (degrees) at L1-L4 and at L5: surgeons aim
#: 10-15 degrees at L4 and up to about 20 at L5, less than the anatomical L5 pedicle angle;
#: the screw pivots about the pedicle's isthmus, so it stays inside the wider L5 pedicle
SCREW_DEG = (15.0, 20.0)
FACET_GAP_MM = 1.5


def _body_distance(W, D, H, waist=0.04, wedge=0.0):
    """Local distance of a vertebral body: a superellipsoid with flat endplates, a waist and an
    optional anterior wedge (``wedge`` = fraction of anterior height lost)."""
    def fn(x, y, z):
        s = 1.0 - waist * (1.0 - np.clip((z / (H / 2)) ** 2, 0, 1))
        if wedge:
            # anterior height shrinks linearly with -y; z is stretched to compensate
            f = 1.0 - wedge * np.clip(0.5 - y / D, 0.0, 1.0)
            z = (z + H / 2) / f - H / 2  # the upper endplate comes down anteriorly
        return sdf.superellipsoid_distance(x / s, y / s, z, (W / 2, D / 2, H / 2), 2.3, 8.0)
    return fn


def elliptic_rod(P: sdf.Placement, a, b, r_x: float, r_z: float) -> sdf.Shape:
    """An elliptic cylinder from local point ``a`` to ``b`` (mm, in the frame of ``P``) with
    semi-axes ``r_x`` (across it, in the local x-y plane) and ``r_z`` (local z), and
    ellipsoidal end caps: a pedicle.  :func:`sdf.capsule` has round sections only.

    >>> P = sdf.Placement()
    >>> rod = elliptic_rod(P, (0, 0, 0), (0, 20, 0), 4.0, 7.0)
    >>> g = sdf.Grid((1, 1, 1), origin=(0, 10, 5)); round(float(rod.sample(g, g.full)[1][0, 0, 0]), 1)
    -2.0
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    axis = b - a
    half = float(np.linalg.norm(axis)) / 2
    # local frame of the rod: z' along the axis, y' the vertebra's cranial axis, x' across
    ez = axis / (2 * half)
    ey = np.array([0.0, 0.0, 1.0]) - ez[2] * ez
    ey /= np.linalg.norm(ey)
    rot = P.rot(np.column_stack([np.cross(ey, ez), ey, ez]))

    def fn(x, y, z):
        zc = z - np.clip(z, -half, half)
        return sdf.superellipsoid_distance(x, y, zc, (r_x, r_z, min(r_x, r_z)))

    return sdf.Local(fn, (r_x, r_z, half + min(r_x, r_z)), P.point((a + b) / 2), rot)


def pedicle_axis(dims: dict, side: int):
    """Isthmus centre (local mm) and unit direction (local, pointing anteriorly into the body)
    of the pedicle of a vertebra with ``dims`` on ``side`` (+1 left): its medial wall is the
    lateral wall of the canal, its axis converges medially by ``pedicle_deg``.

    >>> c, u = pedicle_axis({"canal_w": 11, "pedicle": 4.5, "depth": 32, "canal_d": 8, "height": 25,
    ...                      "pedicle_deg": 0.0}, 1)
    >>> c.tolist(), [abs(float(v)) for v in u]
    ([15.5, 24.0, 3.75], [0.0, 1.0, 0.0])
    """
    a = np.radians(dims.get("pedicle_deg", 8.0))
    centre = np.array([side * (dims["canal_w"] + dims["pedicle"]), dims["depth"] / 2 + dims["canal_d"],
                       0.15 * dims["height"]])
    return centre, np.array([-side * np.sin(a), -np.cos(a), 0.0])


def vertebra(P: sdf.Placement, dims: dict, thoracic: bool = False, wedge: float = 0.0,
             osteophyte_mm: float = 0.0) -> sdf.Shape:
    """One vertebra placed by ``P`` (local origin = body centre; x lateral, y posterior, z
    cranial).  ``dims`` holds width, depth, height, pedicle (half width), transverse, spinous,
    canal_w, canal_d (mm) and optionally pedicle_h (mm) and pedicle_deg (degrees).

    Posterior elements: elliptic pedicles along :func:`pedicle_axis`, laminae meeting at the
    spinous process (a plate, sloping down 17 degrees; steeper for thoracic levels),
    transverse processes, and superior/inferior articular processes placed so that those of
    neighbouring vertebrae overlap: :func:`tissue.carve_joints` then cuts the facet joints.
    ``osteophyte_mm`` adds spurs along the anterior and lateral rims of both endplates,
    pointing outward and toward the disc."""
    W, D, H = dims["width"], dims["depth"], dims["height"]
    rp, tl, sl = dims["pedicle"], dims["transverse"], dims["spinous"]
    ph = dims.get("pedicle_h", 2.8 * rp)
    cw, cd = dims["canal_w"], dims["canal_d"]
    R = P.rot()
    body = sdf.Local(_body_distance(W, D, H, wedge=wedge), (W / 2 + 1, D / 2 + 1, H / 2 + 1), P.point((0, 0, 0)), R)
    parts = [body]
    back = D / 2 + 2 * cd  # posterior edge of the canal
    for side in (-1, 1):
        c, u = pedicle_axis(dims, side)
        parts.append(elliptic_rod(P, c - u * (cd + 2), c + u * (cd + 4), rp, ph / 2))
        px, pz = c[0] - u[0] * cd, c[2]  # the pedicle's posterior end
        lam_a, lam_b = np.array([px, back, pz * 0.5]), np.array([0.0, back + 6.0, -0.1 * H])
        mid, axis = (lam_a + lam_b) / 2, lam_b - lam_a
        lam_rot = R @ sdf.frame((axis[0], axis[1], 0.0), (0, 0, 1))  # local z along the lamina
        lam_half = (0.36 * H, 3.2, np.linalg.norm(axis) / 2 + 3)
        parts.append(sdf.ellipsoid(P.point(mid), lam_half, lam_rot))
        # articular processes: the superior one (up, lateral, a little anterior) of this
        # vertebra meets the inferior one (down, medial, posterior) of the one above
        facet = R @ sdf.rotation(rz=-side * 35)  # facet planes ~35 degrees off sagittal
        parts.append(sdf.ellipsoid(P.point((px + side * 3.0, back - 1.5, 0.5 * H + 3)), (4.5, 6.5, 0.36 * H), facet))
        parts.append(sdf.ellipsoid(P.point((px - side * 2.0, back + 2.0, -0.5 * H - 3)), (4.5, 6.5, 0.36 * H), facet))
        tp_tip = (side * (px + tl), back - 2 + (10 if thoracic else 0), pz + (3 if thoracic else 0))
        parts.append(sdf.capsule(P.point((px, back - 3, pz)), P.point(tp_tip), 4.0, 2.8))
    drop = 0.9 if thoracic else 0.3  # downward slope of the spinous process
    sp_a = np.array([0.0, back + 5.0, -0.1 * H])
    sp_b = sp_a + sl * np.array([0.0, np.cos(np.arctan(drop)), -np.sin(np.arctan(drop))])
    sp_dir = R @ (sp_b - sp_a)
    parts.append(sdf.superellipsoid(P.point((sp_a + sp_b) / 2), (3.0, 0.3 * H, sl / 2 + 2),
                                    sdf.frame(sp_dir, R[:, 0]), 2.0, 2.2))
    if osteophyte_mm > 0:
        for ang in (-70, -35, 0, 35, 70):  # anterior and lateral rims of both endplates
            a = np.radians(ang)
            radial = np.array([np.sin(a), -np.cos(a), 0.0])
            for zc in (-1, 1):
                rim = np.array([W / 2 * np.sin(a), -D / 2 * np.cos(a), zc * H / 2 * 0.96])
                tip = rim + osteophyte_mm * (0.8 * radial + 0.6 * np.array([0.0, 0.0, zc]))
                parts.append(sdf.capsule(P.point(rim - 2 * radial), P.point(tip), 0.45 * osteophyte_mm + 1.0, 0.8))
    canal = sdf.superellipsoid(P.point((0, D / 2 + cd, 0)), (cw, cd, H), R, 2.0, 6.0)
    return sdf.subtract(sdf.union(*parts, k=2.5), canal, k=1.0)


def _draw(rng, seed):
    def clipped(mean, sd, lo, hi):
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    g = clipped(1.0, 0.04, 0.9, 1.1)
    dims = []
    for i in range(5):
        d = {}
        for key, means in MEAN.items():
            sd = SCATTER.get(key, 0.02)
            v = means[i] * (1.0 if key == "pedicle_deg" else g) * clipped(1.0, sd, 1 - 2.5 * sd, 1 + 2.5 * sd)
            lo, hi = RANGES.get(key, (-np.inf, np.inf))
            d[key] = float(np.clip(v, lo + 0.3, hi - 0.3))
        dims.append(d)
    p = {
        "seed": int(seed), "scale": g, "dims": dict(zip(LEVELS, dims)),
        "disc_mm": [h * g * clipped(1, 0.06, 0.85, 1.15) for h in DISCS],
        "sacral_slope_deg": clipped(40, 6, 28, 52),
        "lordosis_deg": clipped(50, 9, 32, 68),
        "density": float(rng.uniform(0, 1)),
        "cortical_hu": float(rng.uniform(1250, 1750)),
        "fat_mm": float(rng.uniform(8, 35)),
        "habitus": clipped(1.0, 0.08, 0.82, 1.2),
        "noise_hu": float(rng.uniform(10, 25)),
        "gas": [(float(rng.uniform(-110, 90)), float(rng.uniform(-95, -30)), float(rng.uniform(-0.1, 1.0)),
                 float(rng.uniform(6, 22))) for _ in range(int(rng.integers(6, 16)))],
    }
    return p


def _degeneration(rng, degeneration):
    """Normalise the ``degeneration`` option into {"disc_height": {index: factor}, "osteophytes_mm",
    "sclerosis_hu", "wedge": {level: fraction}}."""
    keys = {"disc_height", "osteophytes_mm", "sclerosis_hu", "wedge"}
    if degeneration is None:
        return {"disc_height": {}, "osteophytes_mm": 0.0, "sclerosis_hu": 0.0, "wedge": {}}
    if degeneration == "random":
        n = int(rng.integers(1, 3))
        discs = rng.choice([2, 3, 4], size=n, replace=False)
        wedge = {}
        if rng.uniform() < 0.2:
            wedge[str(rng.choice(["L1", "L2", "L3"]))] = float(1 - rng.uniform(0.6, 0.85))
        return {"disc_height": {int(i): float(rng.uniform(0.35, 0.8)) for i in discs},
                "osteophytes_mm": float(rng.uniform(2, 5)), "sclerosis_hu": float(rng.uniform(250, 500)),
                "wedge": wedge}
    if isinstance(degeneration, dict):
        bad = set(degeneration) - keys
        if bad:
            raise InvalidArgumentError(
                f"degeneration keys {sorted(bad)} are unknown; use disc_height ({{disc index 0-4: factor}}), "
                "osteophytes_mm (mm), sclerosis_hu (HU added under the endplates of narrowed discs) and "
                "wedge ({level: fraction lost})."
            )
        return {"disc_height": {int(k): float(v) for k, v in degeneration.get("disc_height", {}).items()},
                "osteophytes_mm": float(degeneration.get("osteophytes_mm", 0.0)),
                "sclerosis_hu": float(degeneration.get("sclerosis_hu", 0.0)),
                "wedge": {str(k): float(v) for k, v in degeneration.get("wedge", {}).items()}}
    raise InvalidArgumentError(
        f"degeneration={degeneration!r} is not understood; use None, 'random' or a dict "
        "(e.g. {'disc_height': {4: 0.5}, 'osteophytes_mm': 3, 'sclerosis_hu': 400, 'wedge': {'L1': 0.3}})."
    )


def _u(phi):
    """Cranial unit vector of a segment tilted ``phi`` degrees (positive faces anterior)."""
    a = np.radians(phi)
    return np.array([0.0, -np.sin(a), np.cos(a)])


def _rot(phi):
    a = np.radians(phi)
    return np.column_stack([[1.0, 0, 0], [0, np.cos(a), np.sin(a)], _u(phi)])


def spine_chain(p) -> dict:
    """Centres and tilts of S1 and L5..L1 from the drawn sacral slope, lordosis and sizes."""
    weights = np.array([0.3, 0.24, 0.18, 0.14, 0.14])  # L5/S1 .. L1/2 share of the lordosis
    phi = p["sacral_slope_deg"]
    top = np.zeros(3)  # S1 superior endplate centre
    out = {"S1_top": top.copy(), "S1_tilt": phi}
    deg = p["degeneration"]
    for j, level in enumerate(reversed(LEVELS)):  # L5 first
        i = 4 - j
        dims = p["dims"][level]
        dphi = p["lordosis_deg"] * weights[j]
        disc = p["disc_mm"][i] * deg["disc_height"].get(i, 1.0)
        mid = phi - dphi / 2
        out[f"disc{i}"] = (top + _u(mid) * disc / 2, mid, disc)
        phi -= dphi
        bottom = top + _u(mid) * disc
        centre = bottom + _u(phi) * dims["height"] / 2
        out[level] = (centre, phi)
        top = centre + _u(phi) * dims["height"] / 2
    # T12 (unlabelled, L1's size) above the T12/L1 disc, so that a lateral film's field, which
    # reaches above L1, shows the thoracolumbar junction rather than the end of the box
    disc = T12_DISC_MM * float(np.mean(p["scale"]))
    out["disc_t12"] = (top + _u(phi) * disc / 2, phi, disc)
    out["T12"] = (top + _u(phi) * (disc + p["dims"]["L1"]["height"] / 2), phi)
    return out


def _sacral_frame(top, phi, s):
    """S1 body centre, the S1 frame and the frame of the lower sacrum, which turns down less
    steeply than S1 when the sacral slope is high."""
    R1 = _rot(phi)
    return top - R1[:, 2] * 14 * s, R1, _rot(0.5 * phi + 12)


def _sacral_apex(top, phi, s):
    """Posterior surface point (mm) of the sacral apex, to keep it under the skin."""
    c1, _, R = _sacral_frame(top, phi, s)
    return c1 - R[:, 2] * 72 * s + R[:, 1] * 24 * s


def _sacrum(top, phi, s):
    c1, R, R2 = _sacral_frame(top, phi, s)
    parts = [sdf.superellipsoid(c1, np.array([25, 17, 14]) * s, R, 2.3, 5.0)]
    widths, depths = [22, 17, 13, 9, 6], [14, 11, 9, 7, 5]
    u, b = R2[:, 2], R2[:, 1]
    for k in range(1, 4):  # S2-S4 (the coccyx is left out)
        ck = c1 - u * 20 * k * s + b * 1.4 * k * k * s
        parts.append(sdf.ellipsoid(ck, np.array([widths[k] * 2.0, depths[k], 11]) * s, R2))
    # seen from the front the sacrum is an inverted triangle: alae at the top, apex below S4
    wings = [c1 + np.array([side * 48.0, 0, 0]) * s + b * 8 * s - u * 6 * s for side in (-1, 1)]
    parts.append(sdf.triangle_plate(wings[0], wings[1], c1 - u * 72 * s + b * 12 * s, 24 * s, rounding=4 * s))
    canal = sdf.capsule(c1 + b * 22 * s + u * 10 * s, c1 + b * 30 * s - u * 70 * s, 8 * s, 4 * s)
    return sdf.subtract(sdf.union(*parts, k=8.0 * s), canal, k=1.0)


def _ilia(top, s):
    """Iliac wings (unlabelled bone), for AP views: curved plates lateral to L5-S1."""
    parts = []
    for side in (-1, 1):
        crest = [top + np.array([side * a, b, c]) * s for a, b, c in
                 [(45, 20, 5), (80, 5, 25), (105, -20, 30), (115, -50, 20), (110, -70, 0)]]
        parts.append(sdf.tube(crest, [6 * s, 5 * s, 5 * s, 5 * s, 6 * s]))
        normal = np.array([side * 0.8, 0.45, 0.0])
        wing = sdf.Local(lambda x, y, z: sdf.superellipsoid_distance(x, y, z, (62 * s, 3.5 * s, 48 * s), 2.0, 2.0),
                         (62 * s, 3.5 * s, 48 * s), top + np.array([side * 78, -15, -15]) * s,
                         sdf.frame((0, 0.25, 1), np.cross(normal, (0, 0, 1)) * side))
        parts.append(wing)
        parts.append(sdf.capsule(top + np.array([side * 45, 15, -10]) * s, top + np.array([side * 75, -25, -75]) * s,
                                 14 * s, 18 * s))
    return sdf.union(*parts, k=6.0)


def _abdomen(canvas, p, back, s, z_bottom, buttock_y):
    """Abdominal wall and cavity: an elliptic cylinder whose back lies 30 mm of paraspinal
    muscle plus the fat layer behind the spinous processes (``back``, y mm); the buttocks
    (centred at ``buttock_y``) bulge behind the sacrum over the lowest 80 mm."""
    h = p["habitus"] * s
    a, b = 150.0 * h + p["fat_mm"], 100.0 * h + p["fat_mm"]
    centre_y = back + 30.0 * s + p["fat_mm"] - b
    buttocks = sdf.ellipsoid((0.0, buttock_y, z_bottom - 40.0), (a * 0.9, 60.0 * h + p["fat_mm"], 120.0))

    def fn(X, Y, Z):  # an elliptic cylinder along z (first-order distance)
        u, v = X / a, (Y - centre_y) / b
        r = np.sqrt(u * u + v * v) + 1e-6
        return (r - 1.0) / (np.sqrt((u / a) ** 2 + (v / b) ** 2) / r + 1e-6)

    out = sdf.Field(fn, (-a, centre_y - b, -1e3), (a, centre_y + b, 1e3))
    layered_body(canvas, sdf.union(out, buttocks, k=20.0), 2.0, p["fat_mm"], inner_value=HU["soft"])
    return out


def lumbar_spine(seed: int, spacing: float = 1.0, implants=False, degeneration=None,
                 noise: bool = True) -> Subject:
    """Generate a lumbar spine CT (HU) with L1-L5, sacrum and implant labels.

    Parameters
    ----------
    seed : int
        Same seed (and options), same subject bit for bit.  The anatomy does not depend on the
        options: ``implants=True`` adds screws to the same spine.
    spacing : float
        Isotropic voxel size in mm (default 1.0: about 260 x 280 x 245 voxels; at least 0.6).
    implants : bool or "random"
        Pedicle screws (through the pedicles into the anterior half of the bodies) and rods at
        metal HU over 2-3 levels, label 7; described in ``params["implants"]``.  "random" gives 30 % of
        seeds implants (for a cohort that mixes both, as clinical lumbar X-ray sets do).
    degeneration : None, "random" or dict
        Disc narrowing, osteophytes, endplate sclerosis, wedge fracture (see module doc): keys
        disc_height ({disc index 0-4: factor}), osteophytes_mm, sclerosis_hu, wedge ({level: fraction}).
    noise : bool
        Add CT noise.

    Examples
    --------
    >>> s = lumbar_spine(0, spacing=3.0)
    >>> [s.label_names[i] for i in (1, 6, 7)]
    ['L1', 'sacrum', 'implant']
    """
    spacing = check_inputs("lumbar_spine", seed, spacing, 0.6)
    ss = np.random.SeedSequence(int(seed))
    rng_anat, rng_deg, rng_imp, rng_tex = (np.random.default_rng(c) for c in ss.spawn(4))
    p = _draw(rng_anat, seed)
    p["degeneration"] = _degeneration(rng_deg, degeneration)
    s = p["scale"]
    chain = spine_chain(p)
    l3 = p["dims"]["L3"]
    # a targeted field of view, 260 mm wide and at most 280 mm deep (the anterior abdominal wall of
    # large subjects is cropped, as in a spine reconstruction), from above L1 to the lower sacrum
    z_top = chain["T12"][0][2] + 10 * s
    z_bot = chain["S1_top"][2] - 70 * s
    shift = np.array([0.0, -chain["L3"][0][1], -(z_top + z_bot) / 2])
    spinous = l3["depth"] / 2 + 2 * l3["canal_d"] + 5 + l3["spinous"]  # tip of L3's spinous process
    back = spinous + 30 * s + p["fat_mm"]
    apex_y = _sacral_apex(chain["S1_top"], chain["S1_tilt"], s)[1] + shift[1]
    h = p["habitus"] * s
    buttock_y = max(spinous - 20 * h, apex_y + 25 * s - 60 * h)
    y_back = max(back + 40 * h, buttock_y + 60 * h + p["fat_mm"]) + 5
    y_front = max(back - 200 * p["habitus"] * s - 2 * p["fat_mm"] - 5, y_back - 280.0)
    grid = sdf.Grid.around((-130.0, y_front, -(z_top - z_bot) / 2), (130.0, y_back, (z_top - z_bot) / 2), spacing)
    canvas = Canvas(grid, rng_tex)
    move = sdf.Placement(shift=shift)
    _abdomen(canvas, p, spinous, s, -(z_top - z_bot) / 2, buttock_y)
    _organs(canvas, p, chain, move, s)

    trab = 90.0 + 140.0 * p["density"]
    p["trabecular_hu"] = {lv: trab * (1 + 0.03 * i) for i, lv in enumerate(LEVELS)}
    deg = p["degeneration"]
    discs = [(chain[f"disc{i}"], p["dims"][LEVELS[min(i + 1, 4)]]) for i in range(5)]
    for (c, phi, h), dims in discs + [(chain["disc_t12"], p["dims"]["L1"])]:  # discs first: bone paints over their edges
        disc = sdf.superellipsoid(move.point(c), (dims["width"] / 2 + 1, dims["depth"] / 2 + 1, h / 2 + 3),
                                  _rot(phi), 2.3, 3.0)
        canvas.fill(disc, HU["disc"])
    p["vertebrae"], samples, frames = {}, [], []
    for i, level in enumerate(LEVELS):
        c, phi = chain[level]
        P = sdf.Placement(_rot(phi), shift=move.point(c))
        dims = p["dims"][level]
        p["vertebrae"][level] = {"center_mm": P.point((0, 0, 0)).tolist(), "tilt_deg": float(phi),
                                 "pedicles": {name: {"isthmus_mm": P.point(ctr).tolist(), "axis": (P.R @ u).tolist()}
                                              for name, (ctr, u) in (("right", pedicle_axis(dims, -1)),
                                                                     ("left", pedicle_axis(dims, 1)))}}
        shape = vertebra(P, dims, wedge=deg["wedge"].get(level, 0.0),
                         osteophyte_mm=deg["osteophytes_mm"] if i >= 2 else 0.0)
        samples.append(shape.sample(grid))
        frames.append(P)
    top = move.point(chain["S1_top"])
    samples.append(_sacrum(top, chain["S1_tilt"], s).sample(grid))
    t12 = sdf.Placement(_rot(chain["T12"][1]), shift=move.point(chain["T12"][0]))
    samples.append(vertebra(t12, p["dims"]["L1"]).sample(grid))
    # facet joints: the articular processes of neighbouring vertebrae overlap; carving leaves a
    # joint space between them (bodies are farther apart than the gap: discs are untouched)
    samples = carve_joints(samples, FACET_GAP_MM)
    narrowed = set(deg["disc_height"])
    for i, level in enumerate(LEVELS):
        region, d = samples[i]
        trab_hu = p["trabecular_hu"][level] + _sclerosis(grid, region, frames[i], p["dims"][level],
                                                         i - 1 in narrowed, i in narrowed, deg["sclerosis_hu"])
        canvas.bone(region, d, i + 1, p["cortical_hu"], trab_hu, 1.0)
    region, d = samples[5]
    canvas.bone(region, d, 6, p["cortical_hu"], trab * 1.1 + _sacral_sclerosis(grid, region, top, chain["S1_tilt"],
                                                                              4 in narrowed, deg["sclerosis_hu"]), 1.0)
    region, d = samples[6]
    canvas.bone(region, d, 0, p["cortical_hu"], trab * 0.97, 1.0)  # T12: bone without a label
    region, d = _ilia(top, s).sample(grid)
    canvas.bone(region, d, 0, p["cortical_hu"], trab * 1.1, 1.5)
    if implants not in (True, False, "random"):
        raise InvalidArgumentError(f"implants must be True, False or 'random'; got {implants!r}.")
    if implants == "random":
        implants = bool(rng_imp.uniform() < 0.3)
    if implants:
        p["implants"] = _implants(canvas, p, chain, move, rng_imp)
    hu = canvas.finish(p["noise_hu"] if noise else 0.0, psf_mm=0.6)
    return make_subject("lumbar_spine", hu, canvas.labels, grid, LABELS, p)


def _organs(canvas, p, chain, move, s):
    """Psoas and paraspinal muscles, kidneys, aorta, bowel gas (unlabelled soft tissue)."""
    l1, l5 = move.point(chain["L1"][0]), move.point(chain["L5"][0])
    # retroperitoneal fat around the spine, psoas and kidneys, mixed with bowel further forward
    mid = (l1 + l5) / 2
    canvas.fill(sdf.ellipsoid(mid + np.array([0, -25, 0]) * s, np.array([120, 60, 200]) * s), HU["fat"] + 50)
    canvas.fill(sdf.ellipsoid(mid + np.array([0, 5, 0]) * s, np.array([95, 35, 200]) * s), HU["fat"])
    for side in (-1, 1):
        psoas = sdf.capsule(l1 + np.array([side * 22, -2, 10]) * s, l5 + np.array([side * 38, -8, -30]) * s,
                            8 * s, 22 * s)
        canvas.fill(psoas, HU["muscle"] + 10)
        erector = sdf.capsule(l1 + np.array([side * 40, 55, 30]) * s, l5 + np.array([side * 38, 50, -20]) * s,
                              26 * s, 24 * s)
        canvas.fill(erector, HU["muscle"] + 10)
        kidney = sdf.ellipsoid(l1 + np.array([side * 70, 15, -20 + 10 * side]) * s, np.array([28, 22, 55]) * s,
                               sdf.rotation(ry=-15 * side))
        canvas.fill(sdf.ellipsoid(kidney.center, np.array([34, 28, 62]) * s, kidney.rot), HU["fat"])
        canvas.fill(kidney, 30.0)
    canvas.fill(sdf.capsule(l1 + np.array([12, -30, 60]) * s, l5 + np.array([8, -28, 0]) * s, 11 * s), HU["blood"])
    for x, y, zf, r in p["gas"]:
        c = l1 + (l5 - l1) * zf + np.array([x, y, 0.0]) * s
        canvas.fill(sdf.ellipsoid(c, np.array([r, 0.6 * r, 1.4 * r]) * s, sdf.rotation(rz=r * 20, rx=r * 7)),
                    HU["air"] + 50)


def _sclerosis(grid, region, P, dims, upper: bool, lower: bool, hu: float, thick: float = 5.0):
    """Extra HU of subchondral sclerosis: a band under the upper and/or lower endplate of the
    body placed by ``P`` (0 elsewhere): ``hu`` over the first ``thick - 2`` mm, fading to 0 at
    ``thick`` mm."""
    if not (upper or lower) or hu <= 0 or region is None:
        return 0.0
    X, Y, Z = grid.coords(region)
    c, R = P.point((0, 0, 0)), P.R
    ly = R[0, 1] * (X - c[0]) + R[1, 1] * (Y - c[1]) + R[2, 1] * (Z - c[2])
    lz = R[0, 2] * (X - c[0]) + R[1, 2] * (Y - c[1]) + R[2, 2] * (Z - c[2])
    H, D = dims["height"], dims["depth"]
    band = np.zeros(np.broadcast_shapes(ly.shape, lz.shape), np.float32)
    if upper:
        band += np.clip((thick - (H / 2 - lz)) / 2, 0, 1)
    if lower:
        band += np.clip((thick - (lz + H / 2)) / 2, 0, 1)
    return (np.float32(hu) * band * (ly < D / 2)).astype(np.float32)


def _sacral_sclerosis(grid, region, top, phi, narrowed: bool, hu: float):
    """Sclerosis under the S1 endplate (``top``, tilted ``phi`` degrees) when L5/S1 is narrowed."""
    if not narrowed or hu <= 0:
        return 0.0
    R = _rot(phi)
    dims = {"height": 28.0, "depth": 200.0}  # only the band under the upper endplate is used
    return _sclerosis(grid, region, sdf.Placement(R, shift=top - R[:, 2] * 14.0), dims, True, False, hu)


def _implants(canvas, p, chain, move, rng):
    """Pedicle screws and rods over 2-3 adjacent levels, painted at metal HU (clipped to 3071)
    with label 7.  Each screw pivots about its pedicle's isthmus, converges medially by the
    pedicle angle up to :data:`SCREW_DEG`, runs parallel to the endplates and ends at 75 % of
    the body depth (anterior half, 25 % short of the anterior cortex); its diameter is 80 % of
    the pedicle width up to 6.5 mm; a tulip head sits 7 mm behind the entry point and the rods
    (5.5 mm) pass through the heads.  Returns their description for ``params``."""
    n = int(rng.integers(2, 4))
    first = int(rng.integers(0, 5 - n + 1))
    heads = {-1: [], 1: []}
    screws = []
    for i in range(first, first + n):
        level = LEVELS[i]
        c, phi = chain[level]
        P = sdf.Placement(_rot(phi), shift=move.point(c))
        d = p["dims"][level]
        limit = SCREW_DEG[1] if level == "L5" else SCREW_DEG[0]
        radius = min(3.25, 0.8 * d["pedicle"])
        for side in (-1, 1):
            centre, _ = pedicle_axis(d, side)
            deg = float(min(d["pedicle_deg"], limit) + rng.normal(0.0, 1.0))
            a = np.radians(deg)
            u = np.array([-side * np.sin(a), -np.cos(a), 0.0])
            tip = centre + u * (d["canal_d"] + 0.75 * d["depth"]) / np.cos(a)
            entry = centre - u * (d["canal_d"] + 5.0)
            head = entry - u * 7.0
            heads[side].append(P.point(head))
            screws.append({"level": level, "side": "left" if side > 0 else "right",
                           "entry_mm": P.point(entry).tolist(), "tip_mm": P.point(tip).tolist(),
                           "diameter_mm": 2 * radius, "length_mm": float(np.linalg.norm(tip - entry)),
                           "convergence_deg": deg})
            neck = tip - u * 8.0
            for shape in (sdf.capsule(P.point(head), P.point(neck), radius),
                          sdf.capsule(P.point(neck), P.point(tip), radius, 0.65 * radius),
                          sdf.capsule(P.point(head - u * 4.0), P.point(head + u * 3.0), 5.5)):
                _metal(canvas, shape)
    for side in (-1, 1):
        pts = np.array(heads[side])
        ext = (pts[-1] - pts[0]) / np.linalg.norm(pts[-1] - pts[0]) * 8
        _metal(canvas, sdf.tube(np.vstack([pts[0] - ext, pts, pts[-1] + ext]), 2.75))
    return {"levels": LEVELS[first:first + n], "screws": screws}


def _metal(canvas, shape):
    region, d = shape.sample(canvas.grid)
    if region is None:
        return
    canvas.fill(None, HU["metal"], region, d)
    canvas.labels[region][d < 0] = 7
