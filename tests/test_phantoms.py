"""Virtual anatomy: anatomical ranges over 20 seeds, label sanity, HU peaks, determinism,
carpal overlap in projection, implants and the QCT calibration line.

Subjects are generated at coarse spacings (the anatomy is in mm, so measurements hold at any
spacing) to keep the file fast; speed itself is measured by benchmarks/phantoms_speed.py.
"""

import numpy as np
import pytest
from scipy import ndimage

from bonelab.errors import InvalidArgumentError
from bonelab.phantoms import chest, cohort, hip, lumbar_spine, projected_overlap, split_subjects, subject_seed, wrist
from bonelab.phantoms.hip import femur_axes
from bonelab.phantoms.spine import RANGES

SEEDS = range(20)
COARSE = {"wrist": 0.8, "lumbar_spine": 2.0, "hip": 2.5, "chest": 4.0}
GEN = {"wrist": wrist, "lumbar_spine": lumbar_spine, "hip": hip, "chest": chest}


@pytest.fixture(scope="module")
def wrists():
    return [wrist(s, spacing=COARSE["wrist"]) for s in SEEDS]


@pytest.fixture(scope="module")
def spines():
    return [lumbar_spine(s, spacing=COARSE["lumbar_spine"]) for s in SEEDS]


@pytest.fixture(scope="module")
def hips():
    return [hip(s, spacing=COARSE["hip"]) for s in SEEDS]


def volumes_cm3(subject):
    counts = np.bincount(subject.labels.array.ravel(), minlength=max(subject.label_names) + 1)
    vox = np.prod(subject.ct.spacing) / 1000.0
    return {name: counts[k] * vox for k, name in subject.label_names.items() if k}


def world_points(subject, mask):
    """LPS mm coordinates (N, 3) of the voxels in ``mask`` (z, y, x)."""
    k, j, i = np.nonzero(mask)
    return subject.ct.index_to_world(np.column_stack([i, j, k]))


# --- wrist ----------------------------------------------------------------------------------------
#: plausible adult carpal volumes (cm3), wide enough for the 0.85-1.15 size scale
CARPAL_RANGES = {"capitate": (2.0, 5.8), "hamate": (1.6, 4.6), "scaphoid": (1.2, 4.2),
                 "trapezium": (1.0, 3.4), "lunate": (1.0, 3.2), "trapezoid": (0.6, 2.4),
                 "triquetrum": (0.6, 2.2), "pisiform": (0.25, 1.1)}
SIZE_ORDER = ["capitate", "hamate", "scaphoid", "trapezium", "lunate", "trapezoid", "triquetrum", "pisiform"]


def test_wrist_carpal_volumes_in_range_for_every_seed(wrists):
    for s in wrists:
        vol = volumes_cm3(s)
        for name, (lo, hi) in CARPAL_RANGES.items():
            assert lo <= vol[name] <= hi, (s.params["seed"], name, vol[name])
        assert vol["radius"] > 8.0 and vol["ulna"] > 2.0


def test_wrist_size_order_holds_on_average(wrists):
    mean = {n: np.mean([volumes_cm3(s)[n] for s in wrists]) for n in SIZE_ORDER}
    values = [mean[n] for n in SIZE_ORDER]
    assert values == sorted(values, reverse=True), mean


def test_carpals_are_packed_with_joint_gaps(wrists):
    """No two bones touch (a joint space of >= 1 voxel) yet every carpal has a neighbour
    within 2.5 mm: tightly packed rows, not scattered pebbles."""
    for s in wrists[:8]:
        lab = s.labels.array
        grow = int(np.ceil(2.5 / COARSE["wrist"]))
        for k in range(1, 9):
            mask = lab == k
            touching = ndimage.binary_dilation(mask) & (lab > 0) & ~mask
            assert not touching.any(), (s.params["seed"], k)
            near = ndimage.binary_dilation(mask, iterations=grow) & (lab > 0) & ~mask
            assert near.any(), (s.params["seed"], k)


def test_carpals_overlap_more_in_lateral_than_pa(wrists):
    pa = np.array([projected_overlap(s.labels, "PA") for s in wrists])
    lat = np.array([projected_overlap(s.labels, "lateral") for s in wrists])
    # measured over these 20 neutral wrists: PA 0.090-0.136 (mean 0.109), lateral 0.683-0.780
    assert np.all((pa > 0.05) & (pa < 0.22)), pa
    assert np.all((lat > 0.6) & (lat < 0.88)), lat
    assert np.all(lat > pa + 0.3)


# --- every kind: labels, body, histogram, determinism ---------------------------------------------------
@pytest.mark.parametrize("kind", list(GEN))
def test_labelled_voxels_are_bone_inside_the_body(kind):
    spacing = min(COARSE[kind], 2.5)
    s = GEN[kind](3, spacing=spacing, noise=False)
    ct, lab = s.ct.array, s.labels.array
    assert lab.dtype == np.uint8 and ct.dtype == np.float32 and s.labels.same_grid(s.ct)
    assert set(np.unique(lab)) <= set(s.label_names)
    bone = lab > 0
    if kind == "lumbar_spine":
        bone &= lab != 7
    # no air or fat in a bone label (fatty marrow of the femoral canal is about -50 HU)
    assert np.mean(ct[bone] > -100) > 0.99
    for k in np.unique(lab[bone]):
        mask = lab == k
        surface = mask & ~ndimage.binary_erosion(mask)
        assert ct[surface].mean() > 300, (kind, s.label_names[int(k)])  # a cortical shell
        assert ct[mask].mean() > 150, (kind, s.label_names[int(k)])
    # the airway opens the lungs to the outside in 3D, so fill the holes slice by slice
    body = np.stack([ndimage.binary_fill_holes(sl) for sl in ct > -300])
    grow = max(1, int(round(2.0 / spacing)))
    inner = ndimage.binary_erosion(body, iterations=grow, border_value=1)  # cut by the FOV: inside
    assert np.all(inner[lab > 0])


def hist_peak(ct, lo, hi):
    h, e = np.histogram(ct, bins=int(hi - lo) // 5, range=(lo, hi))
    return e[np.argmax(h)] + 2.5


@pytest.mark.parametrize("kind", list(GEN))
def test_hu_histogram_peaks_where_the_table_says(kind):
    ct = GEN[kind](5, spacing=COARSE[kind]).ct.array
    assert abs(hist_peak(ct, -160, -40) - (-100)) <= 20
    assert abs(hist_peak(ct, -10, 100) - 40) <= 20
    assert abs(hist_peak(ct, -1100, -900) - (-1000)) <= 25
    if kind == "chest":
        assert abs(hist_peak(ct, -950, -700) - (-850)) <= 40
    assert ct.min() >= -1024 and ct.max() <= 3071


@pytest.mark.parametrize("kind", list(GEN))
def test_same_seed_same_subject_other_seed_differs(kind):
    a, b = GEN[kind](11, spacing=COARSE[kind]), GEN[kind](11, spacing=COARSE[kind])
    assert np.array_equal(a.ct.array, b.ct.array) and np.array_equal(a.labels.array, b.labels.array)
    assert a.params == b.params
    c = GEN[kind](12, spacing=COARSE[kind])
    assert a.params != c.params
    if a.ct.shape == c.ct.shape:
        assert not np.array_equal(a.labels.array, c.labels.array)


# --- lumbar spine --------------------------------------------------------------------------------------
def body_dimensions(subject, level):
    """Height, width and depth (mm) of a vertebral body measured on its label, in the vertebra's
    local frame (from params): extents of the central core lines of the body."""
    v = subject.params["vertebrae"][level]
    phi = np.radians(v["tilt_deg"])
    R = np.column_stack([[1.0, 0, 0], [0, np.cos(phi), np.sin(phi)], [0, -np.sin(phi), np.cos(phi)]])
    k = [i for i, n in subject.label_names.items() if n == level][0]
    local = (world_points(subject, subject.labels.array == k) - v["center_mm"]) @ R
    x, y, z = local.T
    core = 4.0
    dims = subject.params["dims"][level]
    h = np.ptp(z[(np.abs(x) < core) & (np.abs(y) < core)])
    in_body = (np.abs(x) < core) & (np.abs(z) < core) & (y < dims["depth"] / 2 + 3)
    d = np.ptp(y[in_body])
    # widest where the endplates are (the body has a waist): scan the whole core height
    w = np.ptp(x[(np.abs(y) < core) & (np.abs(z) < dims["height"] / 2 - 1.5)])
    step = subject.ct.spacing[0]  # voxel centres -> outer extent
    return h + step, w + step, d + step


def test_lumbar_bodies_within_documented_ranges(spines):
    tol = 2 * COARSE["lumbar_spine"]  # voxel discretisation at both ends, waist and rounded rims
    for s in spines:
        for level in ("L1", "L3", "L5"):
            h, w, d = body_dimensions(s, level)
            drawn = s.params["dims"][level]
            for measured, key in ((h, "height"), (w, "width"), (d, "depth")):
                lo, hi = RANGES[key]
                assert lo - tol <= measured <= hi + tol, (s.params["seed"], level, key, measured)
                assert abs(measured - drawn[key]) <= tol, (s.params["seed"], level, key, measured, drawn[key])
        vol = volumes_cm3(s)
        assert all(25 < vol[f"L{i}"] < 90 for i in range(1, 6)), vol
        assert vol["sacrum"] > 60


def test_lumbar_trabecular_density_spans_healthy_to_osteoporotic(spines):
    l1 = [s.params["trabecular_hu"]["L1"] for s in spines]
    assert 90 <= min(l1) < 130 and 190 < max(l1) <= 230


def test_implants_are_metal_and_do_not_change_the_anatomy():
    plain = lumbar_spine(4, spacing=2.0, noise=False)
    metal = lumbar_spine(4, spacing=2.0, implants=True, noise=False)
    implant = metal.labels.array == 7
    assert implant.sum() * 8.0 / 1000 > 2.0  # cm3 of screws and rods
    assert metal.ct.array.max() == 3071.0
    assert np.median(metal.ct.array[implant]) > 2500
    screws = metal.params["implants"]["screws"]
    assert len(screws) in (4, 6) and {sc["side"] for sc in screws} == {"left", "right"}
    same = ~implant
    assert np.array_equal(plain.labels.array[same], metal.labels.array[same])


def test_random_implants_mix_in_a_cohort():
    has = [("implants" in s.params) for s in cohort("lumbar_spine", 12, seed=3, spacing=6.0, implants="random")]
    assert 0 < sum(has) < len(has)
    with pytest.raises(InvalidArgumentError, match="implants"):
        lumbar_spine(0, spacing=6.0, implants="some")


def test_degeneration_options():
    healthy = volumes_cm3(lumbar_spine(6, spacing=2.0, noise=False))
    wedged = volumes_cm3(lumbar_spine(6, spacing=2.0, noise=False, degeneration={"wedge": {"L1": 0.35}}))
    assert wedged["L1"] < 0.93 * healthy["L1"]
    assert abs(wedged["L3"] - healthy["L3"]) < 0.02 * healthy["L3"]
    osteo = volumes_cm3(lumbar_spine(6, spacing=2.0, noise=False, degeneration={"osteophytes_mm": 4.0}))
    assert osteo["L4"] > healthy["L4"] + 0.5
    with pytest.raises(InvalidArgumentError, match="disc_height"):
        lumbar_spine(6, spacing=4.0, degeneration={"discs": 0.5})
    with pytest.raises(InvalidArgumentError):
        lumbar_spine(6, spacing=4.0, degeneration="severe")


# --- hip ---------------------------------------------------------------------------------------------
def extent_across(subject, label, centre, axis, half_slab=2.0):
    """Largest chord of a label through ``centre`` perpendicular to ``axis`` (mm), from the
    voxels in a thin slab across the axis."""
    pts = world_points(subject, subject.labels.array == label) - centre
    axis = np.asarray(axis) / np.linalg.norm(axis)
    along = pts @ axis
    slab = pts[np.abs(along) < half_slab]
    radial = np.linalg.norm(slab - np.outer(slab @ axis, axis), axis=1)
    return 2 * radial.max() if len(radial) else 0.0


def test_femur_dimensions_within_documented_ranges(hips):
    tol = COARSE["hip"]
    for s in hips:
        for label, key, side in ((1, "femur_left", 1), (2, "femur_right", -1)):
            f = s.params[key]
            head = np.array(f["head_center_mm"])
            v, _, _ = femur_axes(head, f, side)
            head_d = extent_across(s, label, head, v)
            assert 40 - tol <= head_d <= 50 + tol, (s.params["seed"], key, head_d)
            assert abs(head_d - f["head_diameter_mm"]) <= tol
            assert 120 <= f["neck_shaft_angle_deg"] <= 135 and 0 <= f["anteversion_deg"] <= 20
            assert 30 <= f["neck_diameter_mm"] <= 35
        vol = volumes_cm3(s)
        assert vol["pelvis"] > 150 and vol["femur_left"] > 120 and vol["femur_right"] > 120


def test_calibration_rods_follow_the_documented_line():
    s = hip(2, spacing=1.5)
    cal = s.params["calibration"]
    conc = np.array(cal["concentrations_mg_cm3"])
    measured = []
    for x, y in cal["rod_centers_xy_mm"]:
        i, j, _ = np.round(s.ct.world_to_index([x, y, 0.0])).astype(int)
        r = int(cal["rod_radius_mm"] / 2 / 1.5)
        core = s.ct.array[:, j - r:j + r + 1, i - r:i + r + 1]
        measured.append(core.mean())
    slope, intercept = np.polyfit(conc, measured, 1)
    assert abs(slope - cal["slope_hu_per_mg_cm3"]) < 0.02
    assert abs(intercept - cal["intercept_hu"]) < 3.0
    bmd = (s.params["trabecular_hu"] - intercept) / slope
    assert abs(bmd - s.params["trabecular_bmd_mg_cm3"]) < 5.0
    assert "concentrations_mg_cm3" not in hip(2, spacing=4.0, calibration_phantom=False).params["calibration"]


# --- chest ---------------------------------------------------------------------------------------------
def test_chest_has_every_bone_group_and_lungs():
    s = chest(1, spacing=3.0)
    vol = volumes_cm3(s)
    assert vol["rib"] > 150 and vol["vertebra"] > 150
    assert all(vol[n] > 15 for n in ("sternum", "clavicle", "scapula"))
    lung = s.ct.array < -700
    assert lung.sum() * 27 / 1e6 > 2.0  # litres of lung (and air), a healthy adult has 4-6


@pytest.mark.parametrize("kind", list(GEN))
def test_bad_seed_or_spacing_is_refused(kind):
    with pytest.raises(InvalidArgumentError, match="seed"):
        GEN[kind](-1)
    with pytest.raises(InvalidArgumentError, match="spacing"):
        GEN[kind](0, spacing=0.01)


# --- cohort --------------------------------------------------------------------------------------------
def test_cohort_is_reproducible_by_subject():
    a = [s.params["seed"] for s in cohort("chest", 3, seed=5, spacing=6.0)]
    b = [s.params["seed"] for s in cohort("chest", 3, seed=5, spacing=6.0)]
    assert a == b == [subject_seed(5, i) for i in range(3)] and len(set(a)) == 3
    with pytest.raises(InvalidArgumentError, match="knee"):
        next(cohort("knee", 1))


def test_split_is_by_subject_and_complete():
    parts = split_subjects(40, seed=1)
    ids = parts["train"] + parts["val"] + parts["test"]
    assert sorted(ids) == list(range(40)) and len(parts["test"]) == 6
    assert split_subjects(40, seed=1) == parts != split_subjects(40, seed=2)
