"""bonelab.qct: calibration, BMD and the hip region of interest, against phantoms of known density."""

import numpy as np
import pytest

from bonelab import qct
from bonelab.errors import GeometryMismatchError, InvalidArgumentError, InvalidValuesError, NotCTError
from bonelab.phantoms.hip import hip
from bonelab.volume import Volume


@pytest.fixture(scope="module")
def subject():
    return hip(3, spacing=2.0)


def test_fit_calibration_recovers_a_known_line():
    c = np.array([-51.8, 0.0, 58.9, 157.0, 375.8])
    cal = qct.fit_calibration(3.0 + 1.2 * c, c)
    assert cal.intercept_hu == pytest.approx(3.0)
    assert cal.slope_hu_per_mg_cm3 == pytest.approx(1.2)
    assert cal.r2 == pytest.approx(1.0) and cal.n_rods == 5
    assert cal.bmd_mg_cm3(3.0 + 1.2 * 100.0) == pytest.approx(100.0)


@pytest.mark.parametrize("hu, conc, error, match", [
    ([10.0], [0.0], InvalidArgumentError, "at least two rods"),
    ([10.0, 20.0], [0.0, 50.0, 100.0], InvalidArgumentError, "at least two rods"),
    ([10.0, 20.0], [50.0, 50.0], InvalidArgumentError, "one concentration"),
    ([200.0, 100.0, 0.0], [0.0, 100.0, 200.0], InvalidValuesError, "must be positive"),
    ([np.nan, 1.0], [0.0, 1.0], InvalidValuesError, "finite"),
])
def test_fit_calibration_refuses_bad_rods(hu, conc, error, match):
    with pytest.raises(error, match=match):
        qct.fit_calibration(hu, conc)


def test_calibrate_recovers_the_phantoms_line(subject):
    truth = subject.params["calibration"]
    cal = qct.calibrate(subject.ct, truth)
    # noise of 10-22 HU over thousands of rod voxels: the line is recovered to well under 1 %
    assert cal.slope_hu_per_mg_cm3 == pytest.approx(truth["slope_hu_per_mg_cm3"], rel=0.005)
    assert cal.intercept_hu == pytest.approx(truth["intercept_hu"], abs=1.5)
    bmd = qct.hu_to_bmd_mg_cm3(qct.rod_hu(subject.ct, truth["rod_centers_xy_mm"], truth["rod_radius_mm"]), cal)
    np.testing.assert_allclose(bmd, truth["concentrations_mg_cm3"], atol=2.0)
    with pytest.raises(InvalidArgumentError, match="rod_radius_mm"):
        qct.calibrate(subject.ct, {"rod_centers_xy_mm": truth["rod_centers_xy_mm"]})
    with pytest.raises(GeometryMismatchError, match="outside the CT"):
        qct.rod_hu(subject.ct, [(900.0, 900.0)], 6.0)


def test_femoral_heads_are_found_within_a_voxel_or_two(subject):
    found = qct.find_femoral_heads(subject.ct)
    for side in ("left", "right"):
        truth = np.asarray(subject.params[f"femur_{side}"]["head_center_mm"])
        assert np.linalg.norm(np.asarray(found[side]) - truth) < 4.0
        assert found[f"score_{side}"] >= qct.HEAD_SCORE_MIN
    assert found["left"][0] > found["right"][0]  # LPS: the patient's left is +x


def test_no_femoral_heads_in_a_chest_or_half_a_pelvis(subject):
    from bonelab.phantoms.chest import chest

    with pytest.raises(NotCTError, match="both hips"):
        qct.find_femoral_heads(chest(0, spacing=3.0).ct)
    half = qct.crop_mm(subject.ct, (0.0, -500.0, -500.0), (500.0, 500.0, 500.0))  # the left half only
    with pytest.raises(NotCTError, match="both hips"):
        qct.find_femoral_heads(half)


def test_hip_roi_holds_the_head_and_lies_on_its_side(subject):
    lo, hi = qct.hip_roi(subject.ct, "left")
    head = np.asarray(subject.params["femur_left"]["head_center_mm"])
    assert np.all(lo < head) and np.all(head < hi)
    assert lo[0] > 0  # the left hip's box is all on the patient's left
    roi = qct.crop_mm(subject.ct, lo, hi)
    assert roi.spacing == subject.ct.spacing and roi.shape[2] * 2.0 <= 35 + 95 + 2
    lo_r, hi_r = qct.hip_roi(subject.ct, "right")
    assert hi_r[0] < 0
    with pytest.raises(InvalidArgumentError, match="side"):
        qct.hip_roi(subject.ct, "both")


def _block(density_inside, density_shell, shell_vox=2, n=20, spacing=1.0):
    """A cube of bone of ``density_inside`` mg/cm3 with a shell of ``density_shell``, in a 30^3 grid."""
    a = np.zeros((30, 30, 30), np.float32)
    mask = np.zeros(a.shape, np.uint8)
    s = slice(5, 5 + n)
    mask[s, s, s] = 1
    a[s, s, s] = density_shell
    t = slice(5 + shell_vox, 5 + n - shell_vox)
    a[t, t, t] = density_inside
    return Volume(a, (spacing,) * 3), Volume(mask, (spacing,) * 3)


def test_vbmd_integral_and_trabecular_of_a_known_block():
    bmd, mask = _block(150.0, 1000.0)
    n, inner = 20**3, 16**3
    assert qct.vbmd_mg_cm3(bmd, mask) == pytest.approx((inner * 150 + (n - inner) * 1000) / n)
    # peeling 3 mm leaves the inside of the inner block only
    assert qct.vbmd_mg_cm3(bmd, mask, peel_mm=3.0) == pytest.approx(150.0)
    region = np.zeros(bmd.shape, bool)
    region[:, :, :15] = True
    assert qct.vbmd_mg_cm3(bmd, mask, region, peel_mm=3.0) == pytest.approx(150.0)
    with pytest.raises(InvalidValuesError, match="no voxel"):
        qct.vbmd_mg_cm3(bmd, mask, np.zeros(bmd.shape, bool))
    with pytest.raises(GeometryMismatchError, match="another grid"):
        qct.vbmd_mg_cm3(bmd, Volume(mask.array[:-1], mask.spacing))


def test_areal_bmd_of_a_uniform_slab():
    # 500 mg/cm3 over 20 mm of depth (y): 500 * 2.0 cm = 1000 mg/cm2 = 1.0 g/cm2
    bmd, mask = _block(500.0, 500.0, spacing=1.0)
    assert qct.areal_bmd_g_cm2(bmd, mask, axis="y") == pytest.approx(1.0)
    with pytest.raises(InvalidArgumentError, match="axis"):
        qct.areal_bmd_g_cm2(bmd, mask, axis="ap")


def test_femur_regions_split_the_phantom_femur(subject):
    f = subject.params["femur_left"]
    from bonelab.phantoms.hip import femur_axes

    H = np.asarray(f["head_center_mm"])
    _, d_s, J = femur_axes(H, f, 1)
    regions = qct.femur_regions(subject.ct, H, J, d_s, f["head_diameter_mm"] / 2, f["neck_diameter_mm"] / 2)
    femur = subject.labels.array == 1
    k = np.rint((H - np.asarray(subject.ct.origin)) / 2.0).astype(int)[::-1]
    assert regions["head_neck"][tuple(k)] and not regions["trochanter"][tuple(k)]  # the head centre
    assert not (regions["head_neck"] & regions["trochanter"]).any()
    assert np.array_equal(regions["total"], regions["head_neck"] | regions["trochanter"])
    neck = (regions["neck"] & femur).sum() * 8.0 / 1000  # mL
    # a 10 mm slab of a neck 30-35 mm across holds 7-10 mL of bone
    assert 5.0 < neck < 12.0


def _femur_mask(s):
    return Volume((s.labels.array == 1).astype(np.uint8), s.labels.spacing, s.labels.origin)


@pytest.mark.parametrize("seed", [3, 1])
def test_femur_axes_measured_on_the_mask_match_the_phantoms_own(seed, subject):
    from bonelab.tasks.femur import _femur_axes  # the phantom's own axes, as femur_regions takes them

    s = subject if seed == 3 else hip(seed, spacing=2.0)
    f = s.params["femur_left"]
    truth = _femur_axes(s.params)
    H, J, d_s = (np.asarray(truth[k]) for k in ("head_center_mm", "neck_shaft_junction_mm", "shaft_direction"))
    mask = _femur_mask(s)
    axes = qct.measure_femur_axes(mask)
    # measured on 2 mm voxels (seeds 3, 1): head 0.1 mm and radius 0.1 mm off, shaft 2.2-2.7 deg,
    # junction 4.7-5.9 mm, neck radius +1.1-1.9 mm, neck-shaft angle -0.7 to -6.6 deg
    assert np.linalg.norm(np.subtract(axes["head_center_mm"], H)) < 1.0
    assert axes["head_radius_mm"] == pytest.approx(f["head_diameter_mm"] / 2, abs=1.0)
    assert np.degrees(np.arccos(np.dot(axes["shaft_direction"], d_s))) < 5.0
    assert np.linalg.norm(np.subtract(axes["neck_shaft_junction_mm"], J)) < 8.0
    assert axes["neck_radius_mm"] == pytest.approx(f["neck_diameter_mm"] / 2, abs=2.5)
    assert qct.neck_shaft_angle_deg(axes) == pytest.approx(f["neck_shaft_angle_deg"], abs=9.0)
    # the regions drawn from the measured axes cover the same bone as the phantom's (overlap 0.88-0.99)
    measured = qct.femur_regions(mask, **axes)
    true = qct.femur_regions(mask, **truth)
    bone = mask.array > 0
    for region, least in (("neck", 0.85), ("trochanter", 0.95), ("total", 0.97)):
        a, b = measured[region] & bone, true[region] & bone
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > least, region


def test_measure_femur_axes_refuses_what_is_no_proximal_femur(subject):
    mask = _femur_mask(subject)
    with pytest.raises(InvalidValuesError, match="empty"):
        qct.measure_femur_axes(Volume(np.zeros_like(mask.array), mask.spacing, mask.origin))
    head_z = subject.params["femur_left"]["head_center_mm"][2]
    z = mask.origin[2] + mask.spacing[2] * np.arange(mask.shape[0])
    cut = mask.array * (z >= head_z - 80.0)[:, None, None]  # cut off above the shaft's window
    with pytest.raises(InvalidValuesError, match="shaft"):
        qct.measure_femur_axes(Volume(cut.astype(np.uint8), mask.spacing, mask.origin))
    pelvis = (subject.labels.array == 3).astype(np.uint8)  # a hip bone: no round head on top
    with pytest.raises(InvalidValuesError, match="no femoral head"):
        qct.measure_femur_axes(Volume(pelvis, mask.spacing, mask.origin))
