"""Tests of bonelab.drr.physics against reference data and independent computations.

Reference numbers:
* Water: NIST X-ray mass attenuation coefficients (Hubbell & Seltzer, NIST SRD 126), Table 4,
  "Water, Liquid", https://physics.nist.gov/PhysRefData/XrayMassCoef/ComTab/water.html
  (mu/rho = 0.2683, 0.2059, 0.1837, 0.1707 cm2/g at 40, 60, 80, 100 keV).
* Soft tissue: same tables, "Tissue, Soft (ICRU-44)",
  https://physics.nist.gov/PhysRefData/XrayMassCoef/ComTab/tissue.html
  (0.2264, 0.2048, 0.1823, 0.1693 cm2/g at 50, 60, 80, 100 keV).
* Minimum first HVL at 80 kVp: 2.3 mm Al (US 21 CFR 1020.30 table, IEC 60601-1-3 gives the same
  order); a tube with 2.5 mm Al total filtration typically measures 2.5-3.5 mm Al.
"""

import numpy as np
import pytest
import torch
import xraydb

from bonelab.drr import physics as P
from bonelab.drr import processing as proc
from bonelab.errors import InvalidArgumentError, InvalidValuesError


# ----------------------------------------------------------------------------- attenuation data
@pytest.mark.parametrize("energy, nist", [(40, 0.2683), (60, 0.2059), (80, 0.1837), (100, 0.1707)])
def test_mu_water_matches_nist(energy, nist):
    # mu (1/mm) = mu/rho (cm2/g) * 1 g/cm3 / 10
    assert P.mu_water(energy) == pytest.approx(nist / 10.0, rel=0.01)


@pytest.mark.parametrize("energy, nist", [(50, 0.2264), (60, 0.2048), (80, 0.1823), (100, 0.1693)])
def test_soft_tissue_matches_nist(energy, nist):
    assert P.mass_attenuation("soft_tissue", energy) == pytest.approx(nist, rel=0.01)


def test_materials_agree_with_spekpy_nist_tables():
    """Compositions (ICRU-44, as shipped with spekpy from EGSnrc/PEGS4) and mu/rho (spekpy's
    NIST XCOM tables, an independent data set from xraydb's Elam tables) must agree."""
    import json
    from pathlib import Path

    import spekpy
    from spekpy.SpekTools import load_mu_data

    matl_dir = Path(spekpy.__file__).parent / "data" / "matl_def"
    mu_nist = load_mu_data("nist")[0]
    energies = np.array([20.0, 30, 40, 50, 60, 80, 100, 150])
    pairs = {"bone": "Bone, Cortical (ICRU)", "adipose": "Adipose Tissue (ICRU)",
             "air": "Air Dry (Near Sea Level)", "water": "Water, Liquid"}
    for ours, theirs in pairs.items():
        ref, rho = mu_nist.get_mu_over_rho_composition(theirs, energies)
        np.testing.assert_allclose(P.mass_attenuation(ours, energies), ref, rtol=5e-3, err_msg=ours)
        assert P.MATERIALS[ours].density == pytest.approx(rho, rel=1e-3)
        comp = P.MATERIALS[ours].composition
        if isinstance(comp, dict):
            spec = json.loads((matl_dir / f"{theirs}.comp").read_text())["composition"]["elements"]
            ref_fracs = {xraydb.atomic_symbol(z): w for z, w in spec}
            assert set(comp) == set(ref_fracs), ours
            for el, w in comp.items():
                assert w == pytest.approx(ref_fracs[el], abs=2e-6), (ours, el)
    for name, material in P.MATERIALS.items():
        if isinstance(material.composition, dict):
            assert sum(material.composition.values()) == pytest.approx(1.0, abs=1e-6), name


def test_hu_to_mu_reference_points_numpy():
    e = 70.0
    mu = P.hu_to_mu(np.array([-1000.0, 0.0, -2048.0], dtype=np.float32), energy_keV=e)
    assert mu.dtype == np.float32
    assert mu[0] == pytest.approx(P.mu_air(e), rel=1e-4)
    assert mu[1] == pytest.approx(P.mu_water(e), rel=1e-6)
    assert mu[2] == 0.0  # out-of-field padding is clamped, never negative
    # Linear in HU: +1000 HU adds (mu_water - mu_air).
    mu1000 = P.hu_to_mu(np.array([1000.0]), energy_keV=e)[0]
    assert mu1000 == pytest.approx(2 * P.mu_water(e) - P.mu_air(e), rel=1e-9)


def test_hu_to_mu_torch_same_type_and_differentiable():
    hu = torch.tensor([-500.0, 0.0, 800.0], dtype=torch.float64, requires_grad=True)
    mu = P.hu_to_mu(hu, energy_keV=60.0)
    assert isinstance(mu, torch.Tensor) and mu.dtype == torch.float64
    np.testing.assert_allclose(mu.detach().numpy(), P.hu_to_mu(hu.detach().numpy(), 60.0), rtol=1e-12)
    mu.sum().backward()
    expected = (P.mu_water(60.0) - P.mu_air(60.0)) / 1000.0
    np.testing.assert_allclose(hu.grad.numpy(), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- spectra
def test_spectrum_mean_energy_rises_with_kvp_and_filtration():
    means_kvp = [P.spectrum(kv, 2.5).mean_energy for kv in (60, 80, 120)]
    means_filt = [P.spectrum(80, f).mean_energy for f in (1.0, 2.5, 5.0)]
    assert means_kvp[0] < means_kvp[1] < means_kvp[2]
    assert means_filt[0] < means_filt[1] < means_filt[2]
    assert P.spectrum(80, 2.5, extra_filtration={"Cu": 0.1}).mean_energy > means_filt[1]
    # Mean energy of a filtered tungsten spectrum: roughly 40-60% of kVp.
    assert 0.4 * 80 < means_kvp[1] < 0.6 * 80


def test_spectrum_hvl_plausible_and_agrees_with_spekpy():
    import spekpy

    s = P.spectrum(80, 2.5)
    assert 2.3 <= s.hvl_mm_al <= 3.5  # regulatory minimum 2.3 mm Al at 80 kVp
    ref = spekpy.Spek(kvp=80, th=12, dk=1.0)
    ref.filter("Al", 2.5)
    # Ours uses xraydb's Al attenuation, spekpy its own NIST tables.
    assert s.hvl_mm_al == pytest.approx(ref.get_hvl1(), rel=0.03)
    assert P.spectrum(80, 4.0).hvl_mm_al > s.hvl_mm_al
    # Fluence per bin in photons / cm2 / mAs at 1 m: the total matches spekpy's (trimmed bins < 1e-4).
    assert s.total_fluence == pytest.approx(ref.get_flu(), rel=1e-4)
    assert s.energies_keV.max() < 80 and s.weights.sum() == pytest.approx(1.0)


def test_spectrum_is_cached_and_frozen():
    s = P.spectrum(70, 2.5)
    assert P.spectrum(70, 2.5) is s
    with pytest.raises(ValueError):
        s.fluence[0] = 1.0


def test_spectrum_disk_cache_returns_spekpys_result_without_spekpy(tmp_path, monkeypatch):
    monkeypatch.setenv("BONELAB_DATA", str(tmp_path))
    args = (66.0, 3.0, 2.0, 12.0, ())
    path = P.spectrum_cache_file(*args)
    assert tmp_path in path.parents and "spekpy-" in path.parent.name and not path.exists()
    P._spectrum_cached.cache_clear()
    first = P.spectrum(66, 3.0, bin_keV=2.0)
    assert path.exists()

    def no_spekpy(*a):
        raise AssertionError("spekpy called although the spectrum is on disk")

    monkeypatch.setattr(P, "_spekpy_spectrum", no_spekpy)
    P._spectrum_cached.cache_clear()
    again = P.spectrum(66, 3.0, bin_keV=2.0)
    assert again is not first
    np.testing.assert_array_equal(again.fluence, first.fluence)
    np.testing.assert_array_equal(again.energies_keV, first.energies_keV)
    assert P.spectrum_cache_file(66.0, 3.5, 2.0, 12.0, ()) != path  # another filtration, another file
    monkeypatch.undo()
    path.write_bytes(b"not an npz")  # a damaged file is modelled again, not an error
    P._spectrum_cached.cache_clear()
    np.testing.assert_array_equal(P.spectrum(66, 3.0, bin_keV=2.0).fluence, first.fluence)
    P._spectrum_cached.cache_clear()


@pytest.mark.parametrize("kwargs", [
    {"kvp": -80}, {"kvp": 0}, {"kvp": float("nan")}, {"kvp": 80, "filtration_mm_al": -1},
    {"kvp": 80, "bin_keV": 40}, {"kvp": 80, "extra_filtration": {"Unobtainium": 1.0}},
    {"kvp": 80, "extra_filtration": {"Cu": -0.1}},
])
def test_spectrum_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidArgumentError):
        P.spectrum(**kwargs)


def test_spectrum_rejects_energies_outside_range():
    with pytest.raises(InvalidArgumentError):  # photons above the tube voltage
        P.Spectrum(np.array([30.0, 90.0]), np.array([1.0, 1.0]), kvp=80)
    with pytest.raises(InvalidArgumentError):  # energies given in eV by mistake
        P.Spectrum(np.array([30e3, 60e3]), np.array([1.0, 1.0]), kvp=80e3)
    with pytest.raises(InvalidArgumentError):
        P.mass_attenuation("water", 60e3)
    with pytest.raises(InvalidValuesError):
        P.Spectrum(np.array([30.0, 60.0]), np.array([1.0, np.nan]), kvp=80)
    with pytest.raises(InvalidArgumentError):
        P.mass_attenuation("kryptonite", 60.0)


# ----------------------------------------------------------------------------- polychromatic
def _independent_slab(spectrum, thickness_mm, weight_by_energy=True, csi_mm=0.6):
    """Spectrum-weighted Beer-Lambert sum through water, straight from xraydb."""
    e_ev = spectrum.energies_keV * 1000.0
    mu_cm = xraydb.material_mu("H2O", e_ev, density=1.0)
    eta = 1.0 - np.exp(-xraydb.material_mu("CsI", e_ev, density=4.51) * csi_mm / 10.0)
    w = spectrum.fluence * eta * (spectrum.energies_keV if weight_by_energy else 1.0)
    t_cm = np.asarray(thickness_mm)[:, None] / 10.0
    return (w * np.exp(-mu_cm * t_cm)).sum(1) / w.sum()


@pytest.mark.parametrize("kvp", [60, 120])
def test_polychromatic_water_slab_matches_independent_sum(kvp):
    s = P.spectrum(kvp, 2.5)
    t = np.array([0.0, 10.0, 100.0, 300.0])
    paths = (1.0 * t / 10.0)[None]  # g/cm2 of water
    for detector, by_energy in (("energy_integrating", True), ("photon_counting", False)):
        got = P.polychromatic_intensity(paths, s, materials=("water",), detector=detector)
        np.testing.assert_allclose(got, _independent_slab(s, t, by_energy), rtol=1e-9)
    assert got[0] == pytest.approx(1.0)


def test_polychromatic_single_bin_is_beer_lambert_and_channels_add():
    mono = P.Spectrum(np.array([60.0]), np.array([1.0]), kvp=60)
    t_mm = np.array([5.0, 50.0, 200.0])
    got = P.polychromatic_intensity((t_mm / 10.0)[None], mono, materials=("water",))
    np.testing.assert_allclose(got, np.exp(-P.mu_water(60.0) * t_mm), rtol=1e-9)
    np.testing.assert_allclose(P.monochromatic_intensity(P.mu_water(60.0) * t_mm), got, rtol=1e-9)
    # Four decomposition channels: the empty ones change nothing.
    s = P.spectrum(80)
    four = np.zeros((4, 2, 3))
    four[1] = 5.0
    one = P.polychromatic_intensity(four[1:2], s, materials=("soft_tissue",))
    np.testing.assert_allclose(P.polychromatic_intensity(four, s), one, rtol=1e-9)
    assert P.polychromatic_intensity(four, s).shape == (2, 3)


def test_beam_hardening_effective_mu_falls_with_thickness():
    s = P.spectrum(80, 2.5)
    t = np.array([1.0, 10.0, 50.0, 100.0, 200.0, 300.0])
    mu = P.effective_mu(s, "water", t)
    assert np.all(np.diff(mu) < 0)
    assert mu[0] > 1.1 * mu[-1]  # hardening is a >10% effect over 30 cm of water at 80 kVp
    e = s.energies_keV
    assert P.mu_water(e.max()) < mu[-1] < mu[0] < P.mu_water(e.min())
    bone = P.effective_mu(s, "bone", [2.0, 20.0])
    assert bone[0] > bone[1]


def test_polychromatic_torch_matches_numpy_and_gradients_flow():
    s = P.spectrum(80)
    rng = np.random.default_rng(0)
    paths = rng.uniform(0.0, 3.0, size=(4, 3, 5)) * np.array([0.001, 5.0, 1.0, 0.05])[:, None, None]
    x = torch.tensor(paths, dtype=torch.float64, requires_grad=True)
    y = P.polychromatic_intensity(x, s)
    assert isinstance(y, torch.Tensor) and y.shape == (3, 5)
    np.testing.assert_allclose(y.detach().numpy(), P.polychromatic_intensity(paths, s), rtol=1e-12)
    y.sum().backward()
    assert torch.all(x.grad < 0)  # more material, less light
    small = torch.tensor(paths[:, :1, :2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: P.polychromatic_intensity(p, s), (small,))
    y32 = P.polychromatic_intensity(torch.tensor(paths, dtype=torch.float32), s)
    assert y32.dtype == torch.float32


def test_polychromatic_rejects_bad_input():
    s = P.spectrum(80)
    good = np.ones((4, 2, 2))
    bad = good.copy()
    bad[2, 0, 1] = np.nan
    with pytest.raises(InvalidValuesError):
        P.polychromatic_intensity(bad, s)
    with pytest.raises(InvalidValuesError):
        P.polychromatic_intensity(torch.tensor(bad), s)
    with pytest.raises(InvalidArgumentError):
        P.polychromatic_intensity(good[:3], s)  # 3 channels, 4 materials
    with pytest.raises(InvalidArgumentError):
        P.polychromatic_intensity(good, s, detector="film")
    with pytest.raises(InvalidArgumentError):
        P.polychromatic_intensity(good, s, detector_response=np.ones(3))
    with pytest.raises(InvalidArgumentError):
        P.effective_mu(s, "water", [0.0, 10.0])


# ----------------------------------------------------------------------------- decomposition
def test_decompose_lut_partitions_hu():
    names = P.material_names
    assert names == ("air", "soft_tissue", "bone", "metal")
    lut = P.decompose_lut(np.array([-1000.0, 0.0, 500.0, 1500.0, 3071.0]))
    assert lut.shape == (4, 5) and lut.dtype == np.float32
    air, water, trabecular, cortical, metal = lut.T
    assert air[0] == pytest.approx(1.21e-3, rel=0.01) and air[1:].sum() == 0
    assert water[1] == pytest.approx(1.0, abs=0.03) and water[[0, 2, 3]].sum() == 0
    assert trabecular[1] > 0.3 and trabecular[2] > 0.3  # trabecular bone is a mixture
    assert cortical[2] >= 1.85 and cortical[1] == 0 and cortical[3] == 0
    assert metal[3] == pytest.approx(P.MATERIALS["metal"].density) and metal[:3].sum() == 0


def test_decompose_lut_follows_schneider_and_is_continuous():
    full = P.decompose_lut(P.hu_grid)
    total = full.sum(0)
    hu = P.hu_grid
    # Schneider et al. (2000) calibration points reproduced by the total density.
    for h, rho in [(-1000, 0.00121), (-98, 0.93), (14, 1.03), (101, 1.0762), (1600, 1.9642)]:
        assert total[hu == h][0] == pytest.approx(rho, rel=1e-5)
    assert np.all(np.diff(total) >= -1e-6)  # denser with HU
    assert np.abs(np.diff(full, axis=1)).max() < 0.01  # no jumps: smooth transitions
    assert np.all(full >= 0)


def test_decompose_volume_uses_the_lut():
    from bonelab.volume import Volume

    hu = np.random.default_rng(1).uniform(-1100, 3100, size=(3, 4, 5)).astype(np.float32)
    dens = P.decompose(Volume(hu))
    assert dens.shape == (4, 3, 4, 5) and dens.dtype == np.float32
    idx = (2, 3, 1)
    np.testing.assert_allclose(dens[(slice(None),) + idx], P.decompose_lut([hu[idx]])[:, 0], rtol=1e-6)
    hu[0, 0, 0] = np.nan
    with pytest.raises(InvalidValuesError):
        P.decompose(hu)
    with pytest.raises(InvalidValuesError):
        P.hu_to_mu(hu)


# ----------------------------------------------------------------------------- noise, scatter, display
def test_poisson_noise_statistics_and_seed():
    i0, n0 = 0.3, 2000.0
    img = np.full((200, 200), i0)
    noisy = P.add_noise(img, photons_per_pixel=n0, seed=7)
    var = i0 / n0
    se_mean = np.sqrt(var / img.size)
    assert abs(noisy.mean() - i0) < 4 * se_mean
    assert noisy.var() == pytest.approx(var, rel=0.05)  # sampling error of the variance ~1%
    np.testing.assert_array_equal(noisy, P.add_noise(img, photons_per_pixel=n0, seed=7))
    assert not np.array_equal(noisy, P.add_noise(img, photons_per_pixel=n0, seed=8))
    sigma_e = 20.0
    both = P.add_noise(img, photons_per_pixel=n0, electronic_sigma=sigma_e, seed=7)
    assert both.var() == pytest.approx(var + (sigma_e / n0) ** 2, rel=0.05)


def test_noise_torch_and_from_mas():
    img = torch.full((100, 100), 0.5, dtype=torch.float32)
    a = P.add_noise(img, photons_per_pixel=500.0, seed=3)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float32
    assert torch.equal(a, P.add_noise(img, photons_per_pixel=500.0, seed=3))
    assert float(a.var()) == pytest.approx(0.5 / 500.0, rel=0.1)
    s = P.spectrum(80)
    n = P.photons_from_mas(s, 2.0, sdd_mm=1500.0, pixel_mm=(0.2, 0.1))
    assert n == pytest.approx(s.total_fluence * 2.0 * (1000 / 1500) ** 2 * 0.02 * 0.01)
    from_mas = P.add_noise(np.full((50, 50), 0.5), mas=2.0, spectrum=s, sdd_mm=1500.0,
                           pixel_mm=(0.2, 0.1), seed=0)
    np.testing.assert_array_equal(from_mas, P.add_noise(np.full((50, 50), 0.5), photons_per_pixel=n, seed=0))
    with pytest.raises(InvalidArgumentError):
        P.add_noise(img, mas=2.0)  # no spectrum / pixel size
    with pytest.raises(InvalidValuesError):
        P.add_noise(np.array([[np.nan]]), photons_per_pixel=100)


def test_scatter_approximation():
    flat = np.full((40, 40), 0.2)
    out = P.add_scatter(flat, scatter_to_primary=0.5, kernel_sigma_mm=10.0, pixel_mm=1.0)
    np.testing.assert_allclose(out, 0.3)
    np.testing.assert_allclose(P.add_scatter(flat, scatter_to_primary=0.0), flat)
    img = np.full((80, 80), 0.5)
    img[30:50, 30:50] = 0.02  # a dense object
    out = P.add_scatter(img, scatter_to_primary=0.5, kernel_sigma_mm=20.0, pixel_mm=1.0)
    spr = (out - img) / img
    assert spr[40, 40] > 5 * spr[0, 0]  # scatter-to-primary ratio rises behind dense objects


def test_to_radiograph_bone_bright_and_windowed():
    intensity = np.array([[1.0, 0.5], [0.1, 0.01]])
    img = P.to_radiograph(intensity, percentiles=(0, 100))
    assert img.min() == 0.0 and img.max() == 1.0
    assert img[1, 1] > img[1, 0] > img[0, 1] > img[0, 0]  # more attenuation, brighter
    fixed = P.to_radiograph(intensity, window=(0.0, np.log(10.0)))
    np.testing.assert_allclose(fixed, [[0.0, np.log(2) / np.log(10)], [1.0, 1.0]], rtol=1e-6)
    batch = np.stack([intensity, intensity ** 2])
    t = P.to_radiograph(torch.tensor(batch), percentiles=(0, 100))
    np.testing.assert_allclose(t.numpy(), P.to_radiograph(batch, percentiles=(0, 100)), atol=1e-6)
    with pytest.raises(InvalidArgumentError):
        P.to_radiograph(intensity, gamma=0)


# ----------------------------------------------------------------------------- dose
@pytest.mark.parametrize("kvp, al, cu, distance_mm", [(55, 2.5, 0.0, 950.0), (80, 2.5, 0.0, 1000.0),
                                                      (120, 2.5, 0.1, 1550.0), (150, 1.0, 0.1, 1800.0)])
def test_entrance_air_kerma_matches_spekpy(kvp, al, cu, distance_mm):
    """spekpy's own air kerma (its integration, units and distance in cm) for the same spectrum.
    spekpy's default takes air's mu_en/rho from PENELOPE, ours from NIST (as the HVL does), which
    is 1.5-2.5 % higher here: with spekpy's mu_en swapped for NIST's the two agree to 1e-4, and
    as they come, within 3 % (measured 1.9-2.6 %)."""
    import spekpy

    extra = {"Cu": cu} if cu else None
    spek = spekpy.Spek(kvp=kvp, th=12, dk=1)
    spek.multi_filter([("Al", al)] + ([("Cu", cu)] if cu else []))
    reference = spek.get_kerma(z=distance_mm / 10.0) * 2.0  # uGy per mAs at z cm, times 2 mAs
    ours = P.entrance_air_kerma(P.spectrum(kvp, al, extra_filtration=extra), 2.0, distance_mm=distance_mm)
    assert ours == pytest.approx(reference, rel=0.03)
    k, phi = spek.get_spectrum()
    nist_over_penelope = (np.sum(phi * k * P._muen_air_table().get_muen_over_rho_air(k))
                          / np.sum(phi * k * spek.muen_air_data.get_muen_over_rho_air(k)))
    assert ours == pytest.approx(reference * nist_over_penelope, rel=1e-4)


def test_chest_pa_entrance_kerma_in_the_reference_band():
    """PA chest, 120 kVp (2.5 mm Al + 0.1 mm Cu), 2.5 mAs, 1800 mm SID, focus-to-skin 1550 mm: the
    entrance surface dose (kerma times a backscatter factor of 1.35) is of the order of the UK
    reference dose of 0.15 mGy and below the European 0.3 mGy (EUR 16260)."""
    chest = P.spectrum(120, 2.5, extra_filtration={"Cu": 0.1})
    kerma = P.entrance_air_kerma(chest, 2.5, distance_mm=1550.0)
    assert 60.0 < kerma < 160.0
    assert 0.08 < kerma * 1.35 / 1000 < 0.3  # mGy
    # inverse square and mAs: twice the mAs at twice the distance is half the kerma
    assert P.entrance_air_kerma(chest, 5.0, distance_mm=3100.0) == pytest.approx(kerma / 2)


def test_mas_for_entrance_kerma_inverts_and_validates():
    s = P.spectrum(70)
    for mas in (0.5, 3.2, 40.0):
        kerma = P.entrance_air_kerma(s, mas, distance_mm=1000.0)
        assert P.mas_for_entrance_kerma(s, kerma, distance_mm=1000.0) == pytest.approx(mas, rel=1e-12)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidArgumentError, match="mas"):
            P.entrance_air_kerma(s, bad, distance_mm=1000.0)
        with pytest.raises(InvalidArgumentError, match="kerma_uGy"):
            P.mas_for_entrance_kerma(s, bad, distance_mm=1000.0)
    with pytest.raises(InvalidArgumentError, match="distance_mm"):
        P.entrance_air_kerma(s, 1.0, distance_mm=0.0)


# ----------------------------------------------------------------------------- anti-scatter grid
def test_grid_lowers_scatter_by_ts_over_tp_and_signal_by_the_bucky_factor():
    grid = P.AntiScatterGrid(ratio=10, primary_transmission=0.7, scatter_transmission=0.1)
    flat, spr = np.full((60, 60), 0.2), 3.0
    bare = P.add_scatter(flat, scatter_to_primary=spr, kernel_sigma_mm=10.0, pixel_mm=1.0)
    behind = P.add_scatter(flat, scatter_to_primary=spr, kernel_sigma_mm=10.0, pixel_mm=1.0, grid=grid)
    primary_behind = 0.7 * flat
    measured_spr = (behind - primary_behind) / primary_behind
    np.testing.assert_allclose(measured_spr, spr * 0.1 / 0.7, rtol=1e-6)
    np.testing.assert_allclose(bare / behind, (1 + spr) / (0.7 + 0.1 * spr), rtol=1e-6)
    assert grid.bucky_factor(spr) == pytest.approx(4 / 1.0) and 3 <= P.AntiScatterGrid().bucky_factor(spr) <= 5
    # Contrast of a small detail under broad scatter rises by Tp * Bucky factor.
    img = np.full((120, 120), 0.2)
    img[58:62, 58:62] = 0.1
    contrast = {}
    for name, g in (("bare", None), ("grid", grid)):
        out = P.add_scatter(img, scatter_to_primary=spr, kernel_sigma_mm=30.0, pixel_mm=1.0, grid=g)
        contrast[name] = (out[10, 10] - out[60, 60]) / out[10, 10]
    assert contrast["grid"] / contrast["bare"] == pytest.approx(grid.contrast_improvement(spr), rel=0.01)


@pytest.mark.parametrize("kwargs", [{"primary_transmission": 0.1, "scatter_transmission": 0.2},
                                    {"scatter_transmission": 0.0}, {"primary_transmission": 1.2},
                                    {"ratio": 0}])
def test_grid_rejects_impossible_transmissions(kwargs):
    with pytest.raises(InvalidArgumentError, match="grid"):
        P.AntiScatterGrid(**kwargs)


# ----------------------------------------------------------------------------- display processing
def test_unsharp_mask_raises_edge_steps_by_one_plus_amount():
    from scipy.ndimage import gaussian_filter

    step = np.repeat([[0.3] * 60 + [0.7] * 60], 30, axis=0)
    for amount in (0.25, 0.5, 1.0):
        out = proc.unsharp_mask(step, sigma_mm=4.0, amount=amount, pixel_mm=0.4)  # sigma 10 px
        blur = gaussian_filter(step, 10.0, mode="nearest")
        expected = 0.4 * (1 + amount) - amount * (blur[15, 60] - blur[15, 59])
        assert out[15, 60] - out[15, 59] == pytest.approx(expected, rel=1e-3)
        assert out[15, 60] - out[15, 59] == pytest.approx(0.4 * (1 + amount), rel=0.05)
        assert out[15, 5] == pytest.approx(0.3, abs=1e-3)  # far from the edge: the level is kept
    np.testing.assert_allclose(proc.unsharp_mask(step, 2.0, 0.0, 0.4), step, atol=1e-7)
    anisotropic = proc.unsharp_mask(step.T, sigma_mm=4.0, amount=0.5, pixel_mm=(0.4, 8.0))  # 10 px along rows
    assert anisotropic[60, 15] - anisotropic[59, 15] == pytest.approx(out[15, 60] - out[15, 59], rel=0.3)
    with pytest.raises(InvalidArgumentError, match="amount"):
        proc.unsharp_mask(step, 2.0, -1.0, 0.4)


def test_compress_dynamic_range_shrinks_low_frequencies_by_the_strength():
    x = np.arange(400)
    ramp = 0.2 + 0.6 * x / 399.0
    detail = np.zeros(400)
    detail[::25] = 0.1  # one-pixel details, far smaller than the Gaussian
    img = np.tile(ramp + detail, (40, 1))
    for strength in (0.2, 0.5):
        out = proc.compress_dynamic_range(img, sigma_mm=8.0, strength=strength, pixel_mm=1.0)
        inner = slice(50, 350)  # away from the ends, where the low-pass is not a ramp
        smooth_in = np.polyfit(x[inner], img[20, inner], 1)[0]
        smooth_out = np.polyfit(x[inner], out[20, inner], 1)[0]
        assert smooth_out / smooth_in == pytest.approx(1 - strength, rel=0.03)
        spikes = out[20, 200] - (out[20, 199] + out[20, 201]) / 2
        assert spikes == pytest.approx(0.1 * (1 - strength * 0.05), rel=0.05)  # detail keeps its contrast
        assert out.mean() == pytest.approx(img.mean(), abs=1e-3)
    np.testing.assert_allclose(proc.compress_dynamic_range(img, 8.0, 0.0, 1.0), img, atol=1e-7)
    with pytest.raises(InvalidArgumentError, match="strength"):
        proc.compress_dynamic_range(img, 8.0, 1.0, 1.0)


@pytest.mark.parametrize("curve, kwargs", [("linear", {}), ("gamma", {"gamma": 1.6}), ("log", {"k": 5.0}),
                                           ("sigmoid", {"k": 8.0, "center": 0.4})])
def test_detector_response_curves(curve, kwargs):
    x = np.linspace(0, 1, 101)[None]
    y = proc.detector_response(x, curve, **kwargs)
    assert y[0, 0] == pytest.approx(0, abs=1e-12) and y[0, -1] == pytest.approx(1)
    assert np.all(np.diff(y[0]) > 0)
    formula = {"linear": x, "gamma": x ** 1.6, "log": np.log(1 + 5 * x) / np.log(6)}
    if curve in formula:
        np.testing.assert_allclose(y, formula[curve], rtol=1e-12)
    else:  # the steepest point of the S curve is at its center
        assert np.argmax(np.diff(y[0])) in (39, 40)
    with pytest.raises(InvalidArgumentError, match="curve"):
        proc.detector_response(x, "film")


def test_postprocess_chain_identity_order_and_seeds():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(0.5, 0.15, (64, 64)), 0, 1).astype(np.float32)
    assert np.array_equal(proc.postprocess(img, None, pixel_mm=0.5), img)
    identity = {"response": {"curve": "linear"}, "unsharp": {"sigma_mm": 1.0, "amount": 0.0},
                "compress": {"sigma_mm": 10.0, "strength": 0.0}}
    np.testing.assert_allclose(proc.postprocess(img, identity, pixel_mm=0.5), img, atol=1e-6)
    settings = proc.draw_postprocess(seed=5)
    assert settings == proc.draw_postprocess(seed=5) and settings != proc.draw_postprocess(seed=6)
    for step, params in proc.POSTPROCESS_RANGES.items():
        for key, span in params.items():
            value = settings[step][key]
            assert value in span if isinstance(value, str) else span[0] <= value <= span[1]
    out = proc.postprocess(img, settings, pixel_mm=0.5)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    reordered = dict(reversed(list(settings.items())))
    assert np.array_equal(proc.postprocess(img, reordered, pixel_mm=0.5), out)  # fixed order of steps
    by_hand = proc.compress_dynamic_range(img, pixel_mm=0.5, **settings["compress"])
    by_hand = proc.detector_response(proc.unsharp_mask(by_hand, pixel_mm=0.5, **settings["unsharp"]), **settings["response"])
    np.testing.assert_allclose(out, by_hand, atol=1e-7)
    with pytest.raises(InvalidArgumentError, match="sharpen"):
        proc.postprocess(img, {"sharpen": {}}, pixel_mm=0.5)
    with pytest.raises(InvalidArgumentError, match="unsharp"):
        proc.postprocess(img, {"unsharp": {"radius": 2}}, pixel_mm=0.5)


@pytest.mark.gpu
def test_torch_paths_on_cuda_match_cpu():
    s = P.spectrum(80)
    paths = torch.rand(4, 32, 48, dtype=torch.float64) * torch.tensor([0.001, 20.0, 3.0, 0.1])[:, None, None]
    cpu = P.polychromatic_intensity(paths, s)
    gpu = P.polychromatic_intensity(paths.cuda(), s)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=0)
    noisy = P.add_noise(gpu, photons_per_pixel=1e4, seed=0)
    assert noisy.device.type == "cuda" and torch.equal(noisy, P.add_noise(gpu, photons_per_pixel=1e4, seed=0))
    torch.testing.assert_close(P.to_radiograph(gpu).cpu(), P.to_radiograph(cpu), rtol=1e-6, atol=1e-6)
