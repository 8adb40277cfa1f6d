"""Chest and lumbar spine phantoms measured against their reference bands, on the generated
volumes (label maps and HU), over a few seeds.

The bands are those of the module tables in :mod:`bonelab.phantoms.chest` and
:mod:`bonelab.phantoms.spine`; where a drawn parameter exists the measurement is also compared
with it, so a test fails both when the anatomy leaves its band and when the painting does not
follow the drawing.
"""

import numpy as np
import pytest
from scipy import ndimage

from bonelab.phantoms import chest, lumbar_spine
from bonelab.phantoms.chest import cardiothoracic_ratio, heart_mask, lung_mask

CHEST_SEEDS = (0, 1, 2)
SPINE_SEEDS = (0, 1, 2)
#: Zindrick et al. 1987 mean pedicle width and height (mm) per level, band +-3 mm
PEDICLE_WIDTH = dict(zip(("L1", "L2", "L3", "L4", "L5"), (8.7, 8.9, 10.3, 12.9, 18.0)))
PEDICLE_HEIGHT = dict(zip(("L1", "L2", "L3", "L4", "L5"), (15.4, 15.0, 14.9, 14.8, 14.0)))


@pytest.fixture(scope="module")
def chests():
    return [chest(s, noise=False) for s in CHEST_SEEDS]


@pytest.fixture(scope="module")
def spines():
    return [lumbar_spine(s, noise=False) for s in SPINE_SEEDS]


def world_points(subject, mask):
    """LPS mm coordinates (N, 3) of the voxels in ``mask`` (z, y, x)."""
    k, j, i = np.nonzero(mask)
    return subject.ct.index_to_world(np.column_stack([i, j, k]))


def z_index(subject, point):
    return round(float(subject.ct.world_to_index(point)[2]))


# --- chest ---------------------------------------------------------------------------------------
def test_mid_thoracic_axial_slice_cuts_10_to_14_rib_sections(chests):
    for s in chests:
        k = z_index(s, s.params["vertebrae"]["T7"]["center_mm"])
        n = ndimage.label(s.labels.array[k] == 1)[1]
        assert 10 <= n <= 14, (s.params["seed"], n)


def test_cardiothoracic_ratio_on_the_pa_projection_is_in_the_healthy_band(chests):
    for s in chests:
        heart = heart_mask(s).array.astype(bool)
        r = cardiothoracic_ratio(heart, lung_mask(s.ct), s.ct.spacing[0])
        assert 0.42 <= r["ctr"] <= 0.50, (s.params["seed"], r)
        assert abs(r["ctr"] - s.params["ctr"]) < 0.02
        assert 230 <= r["thoracic_mm"] <= 300
        # what was painted there is blood and myocardium, not lung
        assert 25 < np.median(s.ct.array[heart]) < 60


def test_heart_silhouette_right_atrial_border_and_apex_down_and_left(chests):
    for s in chests:
        heart = heart_mask(s).array.astype(bool).any(axis=1)  # PA silhouette (z, x)
        cols = np.nonzero(heart.any(axis=0))[0]
        x = s.ct.index_to_world(np.column_stack([cols, np.zeros_like(cols), np.zeros_like(cols)]))[:, 0]
        width = x.max() - x.min()
        mrd = -x.min()  # right heart border, right of the midline (x = 0 is the spine axis)
        assert 0.2 <= mrd / width <= 0.45, (s.params["seed"], mrd, width)
        left_col, right_col = cols.max(), cols.min()
        z_left = np.nonzero(heart[:, left_col])[0].mean()
        z_right = np.nonzero(heart[:, right_col])[0].mean()
        assert z_left < z_right, "the apex (left border's extreme) lies below the right atrial border"


def test_sternum_has_manubrium_body_and_xiphoid(chests):
    for s in chests:
        st = s.labels.array == 3
        comp, n = ndimage.label(st)
        assert n == 3, (s.params["seed"], n)
        parts = sorted(range(1, 4), key=lambda c: -np.nonzero(comp == c)[0].mean())  # top first
        sp = s.ct.spacing[0]
        widths, lengths = [], []
        for c in parts:
            m = comp == c
            zs = np.nonzero(m.any(axis=(1, 2)))[0]
            widths.append(max(np.ptp(np.nonzero(m[k].any(axis=0))[0]) + 1 for k in zs) * sp)
            lengths.append((np.ptp(zs) + 1) * s.ct.spacing[2])
        (wm, wb, wx), (lm, lb, lx) = widths, lengths
        assert 44 <= wm <= 62 and 24 <= wb <= 38 and wx <= 20, (s.params["seed"], widths)
        assert 38 <= lm <= 62 and 80 <= lb <= 125 and 20 <= lx <= 45, (s.params["seed"], lengths)
        body = comp == parts[1]
        k = int(np.median(np.nonzero(body.any(axis=(1, 2)))[0]))
        thickness = (np.ptp(np.nonzero(body[k].any(axis=1))[0]) + 1) * sp
        assert 7 <= thickness <= 14, thickness  # the body is a flat plate, not a rod


def test_humeral_heads_have_adult_diameters(chests):
    for s in chests:
        lab = s.labels.array == 6
        for half in (lab[:, :, : lab.shape[2] // 2], lab[:, :, lab.shape[2] // 2:]):
            zs = np.nonzero(half.any(axis=(1, 2)))[0]
            top = half[zs.max() - int(50 / s.ct.spacing[2]):]  # the upper 50 mm: the head
            ap = max((np.ptp(np.nonzero(sl.any(axis=1))[0]) + 1) for sl in top if sl.any()) * s.ct.spacing[1]
            assert 40 <= ap <= 56 * s.params["scale"] + 4, (s.params["seed"], ap)


def test_lung_vessels_are_denser_near_the_hila_and_reach_the_periphery(chests):
    for s in chests:
        lung = lung_mask(s.ct)
        envelope = ndimage.binary_closing(lung, iterations=6)  # closes vessels up to ~20 mm wide
        vessel = envelope & (s.ct.array > -500)
        pts = world_points(s, envelope)
        dist = np.min([np.linalg.norm(pts - h, axis=1) for h in s.params["hila_mm"].values()], axis=0)
        is_vessel = vessel[envelope]
        frac = [is_vessel[dist < 50].mean(), is_vessel[dist > 100].mean()]
        assert frac[0] > 1.5 * frac[1] > 0, (s.params["seed"], frac)


# --- lumbar spine --------------------------------------------------------------------------------
def local_frame(subject, level):
    v = subject.params["vertebrae"][level]
    phi = np.radians(v["tilt_deg"])
    R = np.column_stack([[1.0, 0, 0], [0, np.cos(phi), np.sin(phi)], [0, -np.sin(phi), np.cos(phi)]])
    return np.asarray(v["center_mm"]), R


def label_id(subject, name):
    return next(k for k, n in subject.label_names.items() if n == name)


def local_points(subject, level, mask=None):
    c, R = local_frame(subject, level)
    mask = subject.labels.array == label_id(subject, level) if mask is None else mask
    return (world_points(subject, mask) - c) @ R


def test_pedicle_width_and_height_per_level_follow_zindrick(spines):
    """Measured across each pedicle's axis at its isthmus (a 2 mm slab), on the label map."""
    for s in spines:
        step = s.ct.spacing[0]
        for level, mean_width in PEDICLE_WIDTH.items():
            pts = world_points(s, s.labels.array == label_id(s, level))
            for side, ped in s.params["vertebrae"][level]["pedicles"].items():
                axis = np.asarray(ped["axis"])
                rel = pts - ped["isthmus_mm"]
                along = rel @ axis
                cranial = np.asarray(local_frame(s, level)[1][:, 2])
                across = np.cross(cranial, axis)
                # the isthmus: the narrowest 2 mm slab across the axis within 4 mm of its centre
                sections = []
                for t0 in np.arange(-4.0, 4.5, 1.0):
                    near = (np.abs(along - t0) < 1.0) & (np.abs(rel @ across) < 14) & (np.abs(rel @ cranial) < 14)
                    u, v = rel[near] @ across, rel[near] @ cranial
                    # the connected run through the axis (the canal and the foramina bound it)
                    sections.append((_run_through_zero(u, step) + step, _run_through_zero(v, step) + step))
                width, height = min(sections)
                drawn = s.params["dims"][level]
                assert abs(width - mean_width) <= 3.0 + step, (s.params["seed"], level, side, width)
                assert abs(height - PEDICLE_HEIGHT[level]) <= 3.0 + step, (s.params["seed"], level, side, height)
                assert abs(width - 2 * drawn["pedicle"]) <= 2 * step, (level, side, width, drawn["pedicle"])


def _run_through_zero(values, step):
    """Extent (mm) of the contiguous run of occupied bins (of ``step`` mm) through 0."""
    bins = np.round(np.asarray(values) / step).astype(int)
    occupied = set(bins.tolist())
    lo = hi = 0
    while lo - 1 in occupied:
        lo -= 1
    while hi + 1 in occupied:
        hi += 1
    return (hi - lo) * step


def test_spinous_processes_lie_40_to_65_mm_behind_the_posterior_body_wall(spines):
    for s in spines:
        for level in ("L1", "L3", "L5"):
            x, y, z = local_points(s, level).T
            back_wall = y[(np.abs(x) < 4) & (np.abs(z) < 4) & (y < s.params["dims"][level]["depth"] / 2 + 4)].max()
            tip = y[np.abs(x) < 5].max()
            assert 40 <= tip - back_wall <= 65, (s.params["seed"], level, tip - back_wall)


def test_facet_joints_have_a_joint_space(spines):
    """Neighbouring vertebrae never touch, yet their articular processes come within 3 mm of
    each other behind the canal: facet joints with a joint space."""
    for s in spines:
        lab = s.labels.array
        for a, b in (("L2", "L3"), ("L4", "L5")):
            ma, mb = lab == label_id(s, a), lab == label_id(s, b)
            assert not (ndimage.binary_dilation(ma) & mb).any(), (s.params["seed"], a, b)
            near = ndimage.binary_dilation(ma, iterations=int(np.ceil(3.0 / s.ct.spacing[0]))) & mb
            y = local_points(s, b, near)[:, 1]
            dims = s.params["dims"][b]
            assert (y > dims["depth"] / 2 + dims["canal_d"]).sum() > 0, (s.params["seed"], a, b)


def _disc_gap(subject, upper, lower):
    """Distance (mm) between the lower endplate of ``upper`` and the upper endplate of
    ``lower`` along the upper vertebra's axis, through the body centres."""
    c, R = local_frame(subject, upper)
    ups = local_points(subject, upper)
    lows = (world_points(subject, subject.labels.array == label_id(subject, lower)) - c) @ R
    core = [p[(np.abs(p[:, 0]) < 3) & (np.abs(p[:, 1]) < 3), 2] for p in (ups, lows)]
    return core[0].min() - core[1].max() - subject.ct.spacing[0]


def test_degeneration_narrows_the_disc_adds_rim_osteophytes_and_endplate_sclerosis():
    healthy = lumbar_spine(6, noise=False)
    sick = lumbar_spine(6, noise=False, degeneration={"disc_height": {3: 0.4}, "osteophytes_mm": 4.0,
                                                       "sclerosis_hu": 400})
    g0, g1 = _disc_gap(healthy, "L4", "L5"), _disc_gap(sick, "L4", "L5")
    assert abs(g0 - healthy.params["disc_mm"][3]) <= 2.0, g0
    assert 0.25 <= g1 / g0 <= 0.55, (g0, g1)
    assert abs(_disc_gap(sick, "L2", "L3") - _disc_gap(healthy, "L2", "L3")) <= 1.0
    # osteophytes: the anterior rim of L4 reaches further forward than its body
    for subject, grow in ((healthy, 0.0), (sick, 0.6 * 4.0)):
        x, y, z = local_points(subject, "L4").T
        depth = subject.params["dims"]["L4"]["depth"]
        rim = -y[(np.abs(x) < 8) & (np.abs(z) > subject.params["dims"]["L4"]["height"] / 2 - 4)].min()
        assert rim >= depth / 2 + grow - 1.0, (grow, rim, depth / 2)
    # sclerosis: a dense band under L4's lower endplate (next to the narrowed disc), none above
    def band_contrast(subject):
        x, y, z = local_points(subject, "L4").T
        lab = subject.labels.array == label_id(subject, "L4")
        hu = subject.ct.array[lab]
        h = subject.params["dims"]["L4"]["height"]
        core = (np.abs(x) < 12) & (np.abs(y) < 10)
        band = core & (z < -h / 2 + 4) & (z > -h / 2 + 1.5)
        mid = core & (np.abs(z) < 4)
        top = core & (z > h / 2 - 4) & (z < h / 2 - 1.5)
        return hu[band].mean() - hu[mid].mean(), hu[top].mean() - hu[mid].mean()
    low, high = band_contrast(sick)
    assert low > 200 and high < 120, (low, high)
    assert band_contrast(healthy)[0] < 120


def test_pedicle_screws_run_inside_the_pedicles_into_the_anterior_body():
    for seed in (4, 7):
        plain = lumbar_spine(seed, noise=False)
        metal = lumbar_spine(seed, noise=False, implants=True)
        implant = metal.labels.array == 7
        pts_all = world_points(metal, implant)
        for screw in metal.params["implants"]["screws"]:
            entry, tip = np.asarray(screw["entry_mm"]), np.asarray(screw["tip_mm"])
            axis = (tip - entry) / np.linalg.norm(tip - entry)
            rel = pts_all - entry
            t = rel @ axis
            radial = np.linalg.norm(rel - np.outer(t, axis), axis=1)
            shank = pts_all[(t > 4) & (t < np.linalg.norm(tip - entry)) & (radial < screw["diameter_mm"] / 2)]
            idx = np.round(plain.labels.world_to_index(shank)).astype(int)
            host = plain.labels.array[idx[:, 2], idx[:, 1], idx[:, 0]]
            inside = np.mean(host == label_id(plain, screw["level"]))
            assert inside >= 0.95, (seed, screw["level"], screw["side"], inside)
            # the tip is in the anterior half of the body and the cortex beyond it is intact
            c, R = local_frame(plain, screw["level"])
            assert ((tip - c) @ R)[1] < 0
            beyond = tip + axis * np.arange(1.0, 4.0)[:, None]
            idx = np.round(plain.labels.world_to_index(beyond)).astype(int)
            assert np.all(plain.labels.array[idx[:, 2], idx[:, 1], idx[:, 0]] == label_id(plain, screw["level"]))
            # medial convergence measured on the voxels of the shank (principal axis)
            centred = shank - shank.mean(axis=0)
            direction = np.linalg.svd(centred, full_matrices=False)[2][0] @ R
            angle = np.degrees(np.arctan2(abs(direction[0]), abs(direction[1])))
            limit = 22 if screw["level"] == "L5" else 17
            assert 5 <= angle <= limit, (seed, screw["level"], angle)
        assert metal.ct.array[implant].mean() > 2500  # titanium at the scanner ceiling

