"""X-ray physics for DRRs: attenuation, tube spectra, materials, detector, noise, scatter, display.

The renderer (:mod:`bonelab.drr.render`) computes line integrals through the CT; this module
turns them into what a detector records.  Two paths:

* **Monochromatic**: ``mu = hu_to_mu(hu, energy_keV)`` (1/mm), line integral ``L = sum mu dl``
  (dimensionless, ``dl`` in mm), ``I/I0 = monochromatic_intensity(L) = exp(-L)``.
* **Polychromatic** (DeepDRR-style {cite}`deepdrr`): ``decompose`` splits each voxel into the
  partial densities (g/cm3) of ``material_names``; the renderer integrates each over the ray
  (g/cm3 * mm) and divides by 10, giving *density paths* (mass thicknesses) in g/cm2;
  ``polychromatic_intensity`` sums Beer-Lambert over the energy bins of a spekpy tube
  ``spectrum`` {cite}`spekpy`, weighted by a detector response.

Units everywhere: energies keV, linear attenuation 1/mm, mass attenuation cm2/g, densities
g/cm3, lengths mm, density paths g/cm2 (the renderer converts its g/cm3 * mm integrals with one
division by 10; :func:`polychromatic_intensity` takes g/cm2).  Attenuation data come from xraydb
{cite}`xraydb` (Elam tables; they agree with NIST XCOM {cite}`nist_xcom` to better than 0.5%
from 20 to 150 keV, checked in the tests); tissue compositions from ICRU Report 44
{cite}`icru44` (also tabulated in ICRU 46 {cite}`icru46` and NIST's X-ray mass attenuation
tables {cite}`hubbell_seltzer`).

Array functions accept numpy arrays or torch tensors and return the same kind; the torch paths are
differentiable.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import xraydb

from bonelab.errors import InvalidArgumentError, InvalidValuesError

# Energies at which the Elam tables in xraydb are reliable (keV).
_E_MIN_KEV, _E_MAX_KEV = 1.0, 800.0
# Elements per bin-chunk in polychromatic_intensity: bounds its temporary memory (~16 MB float32).
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# Materials
# --------------------------------------------------------------------------------------------
class Material(NamedTuple):
    """A material: composition (chemical formula, or ``{element: mass fraction}``), density
    (g/cm3) and where both come from."""

    composition: str | dict
    density: float
    source: str


MATERIALS: dict[str, Material] = {
    "air": Material(
        {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
        1.20479e-3,
        "Air, dry (near sea level), 20 C: NIST X-ray mass attenuation tables, Table 2",
    ),
    "water": Material("H2O", 1.0, "Water, liquid"),
    "soft_tissue": Material(
        {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003,
         "Cl": 0.002, "K": 0.003},
        1.06,
        "Tissue, soft (ICRU-44): ICRU Report 44 [icru44]; NIST tables, Table 2",
    ),
    "adipose": Material(
        {"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001},
        0.95,
        "Adipose tissue (ICRU-44): ICRU Report 44 [icru44]; ICRU Report 46 [icru46]",
    ),
    "bone": Material(
        {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103,
         "S": 0.003, "Ca": 0.225},
        1.92,
        "Bone, cortical (ICRU-44): ICRU Report 44 [icru44]; ICRU Report 46 [icru46]",
    ),
    "metal": Material(
        "Ti", 4.506,
        "Titanium (commercially pure, implants; Ti-6Al-4V alloy is 4.43 g/cm3): CRC Handbook",
    ),
    "csi": Material("CsI", 4.51, "Cesium iodide (detector scintillator): NIST tables, Table 2"),
    "aluminium": Material("Al", 2.699, "Aluminium (filters, HVL): NIST tables, Table 1"),
}
"""Materials by name: ``(composition, density g/cm3, source)``."""

material_names = ("air", "soft_tissue", "bone", "metal")
"""The materials of :func:`decompose` and the default channels of :func:`polychromatic_intensity`."""


def _energies(energies_keV) -> np.ndarray:
    """Energies as a float64 array (any shape), checked against the tables' range."""
    e = np.asarray(energies_keV, dtype=float)
    if not np.all(np.isfinite(e)) or e.size == 0 or e.min() < _E_MIN_KEV or e.max() > _E_MAX_KEV:
        raise InvalidArgumentError(
            f"energies must be finite and within {_E_MIN_KEV:g}-{_E_MAX_KEV:g} keV "
            f"(the range of xraydb's tables); got {energies_keV!r}. Pass energies in keV, not eV."
        )
    return e


@functools.lru_cache(maxsize=256)
def _mass_attenuation_cached(material: str, energies: tuple) -> np.ndarray:
    comp = MATERIALS[material].composition
    e_ev = np.asarray(energies) * 1000.0
    if isinstance(comp, str):
        # xraydb parses the formula and applies the mixture rule itself.
        out = xraydb.material_mu(comp, e_ev, density=1.0)
    else:
        # Mixture rule (Bragg additivity) with mass fractions: mu/rho = sum_i w_i (mu/rho)_i.
        out = sum(w * xraydb.mu_elam(el, e_ev) for el, w in comp.items())
    out = np.atleast_1d(np.asarray(out, dtype=float))
    out.setflags(write=False)
    return out


def mass_attenuation(material: str, energies_keV) -> np.ndarray | float:
    """Total mass attenuation coefficient mu/rho (cm2/g, coherent scattering included) of a
    material in :data:`MATERIALS` at ``energies_keV`` (keV), from xraydb's Elam tables.

    >>> round(float(mass_attenuation("water", 60.0)), 4)   # NIST: 0.2059 cm2/g
    0.2059
    >>> mass_attenuation("bone", [40, 80]).shape
    (2,)
    """
    if material not in MATERIALS:
        raise InvalidArgumentError(
            f"unknown material {material!r}; choose one of {sorted(MATERIALS)} "
            "(or add an entry to bonelab.drr.physics.MATERIALS)."
        )
    e = _energies(energies_keV)
    out = _mass_attenuation_cached(material, tuple(e.ravel().tolist())).reshape(e.shape)
    return float(out) if out.ndim == 0 else out.copy()


def linear_attenuation(material: str, energies_keV, density: float | None = None):
    """Linear attenuation coefficient mu (1/mm) of a material at its :data:`MATERIALS` density
    (or ``density`` in g/cm3).

    >>> round(float(linear_attenuation("water", 60.0)), 5)
    0.02059
    """
    mass_mu = mass_attenuation(material, energies_keV)
    rho = MATERIALS[material].density if density is None else float(density)
    return mass_mu * rho / 10.0


def mu_water(energy_keV) -> np.ndarray | float:
    """Linear attenuation coefficient of liquid water (1 g/cm3) in 1/mm at ``energy_keV``.

    >>> round(mu_water(60.0), 5)   # NIST XCOM: 0.2059 cm2/g -> 0.02059 /mm
    0.02059
    """
    return linear_attenuation("water", energy_keV)


def mu_air(energy_keV) -> np.ndarray | float:
    """Linear attenuation coefficient of dry air near sea level (1.205e-3 g/cm3) in 1/mm.

    >>> f"{mu_air(60.0):.3e}"
    '2.259e-05'
    """
    return linear_attenuation("air", energy_keV)


# --------------------------------------------------------------------------------------------
# HU -> attenuation
# --------------------------------------------------------------------------------------------
def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _check_finite(x, name: str, fix: str) -> None:
    ok = bool(x.isfinite().all()) if _is_tensor(x) else bool(np.all(np.isfinite(x)))
    if not ok:
        raise InvalidValuesError(f"{name} holds NaN or infinite values; {fix}")


def hu_to_mu(hu, energy_keV: float = 60.0):
    """Linear attenuation (1/mm) from Hounsfield units at one energy (keV):
    ``mu = mu_water + HU/1000 * (mu_water - mu_air)``, the definition of HU inverted, clamped at
    0 below air (out-of-field padding such as -2048 or -3024 HU becomes 0, not negative).

    Takes a numpy array (returns float32 unless float64 came in) or a torch tensor (returns a
    tensor of the same dtype and device, differentiable).  A monochromatic model: the CT's own
    effective energy is not this one, so bone contrast is approximate (use the polychromatic path
    for physics).

    >>> import numpy as np
    >>> mu = hu_to_mu(np.array([-1000.0, 0.0, 1000.0]), energy_keV=60.0)
    >>> np.round(mu, 5).tolist()
    [2e-05, 0.02059, 0.04115]
    """
    e = float(_energies(energy_keV))
    mw, ma = float(mu_water(e)), float(mu_air(e))
    scale = (mw - ma) / 1000.0
    _check_finite(hu, "hu", "fill missing voxels with -1000 (air) before converting.")
    if _is_tensor(hu):
        return (mw + hu * scale).clamp(min=0.0)
    hu = np.asarray(hu)
    dtype = np.float64 if hu.dtype == np.float64 else np.float32
    return np.maximum(mw + hu.astype(dtype) * scale, 0).astype(dtype, copy=False)


def monochromatic_intensity(line_integral_mu):
    """Beer-Lambert: transmitted fraction ``I/I0 = exp(-L)`` for line integrals ``L = sum mu dl``
    (mu in 1/mm, dl in mm, so L is dimensionless).  numpy or torch.

    >>> round(float(monochromatic_intensity(np.log(2.0))), 6)
    0.5
    """
    _check_finite(line_integral_mu, "line_integral_mu", "check the CT and the renderer for NaNs.")
    if _is_tensor(line_integral_mu):
        return (-line_integral_mu).exp()
    return np.exp(-np.asarray(line_integral_mu))


# --------------------------------------------------------------------------------------------
# Material decomposition: HU -> partial densities (g/cm3) of air, soft tissue, bone, metal
# --------------------------------------------------------------------------------------------
# Total density follows Schneider et al.'s HU-density calibration (Schneider, Bortfeld &
# Schlegel 2000, Phys. Med. Biol. 45:459, doi:10.1088/0031-9155/45/2/314; the table that DeepDRR
# also fits: (-1000, 0.00121) (-98, 0.93) (14, 1.03) (23, 1.031) (101, 1.0762) (1600, 1.9642)
# (3000, 2.8)).  Schneider's soft-tissue and bone segments meet with a 0.044 g/cm3 jump at
# 100/101 HU; joining (23, 1.031) straight to (101, 1.0762) keeps the curve continuous.
# The split into materials is volume mixing, so each partial density is piecewise linear and
# they add up to the calibrated total:
#   * air -> soft tissue over -1000..-800 HU (DeepDRR's air threshold is -800 HU): lung
#     parenchyma above -800 HU is tissue, with the calibrated (low) density;
#   * soft tissue -> cortical bone over +101..+1500 HU: trabecular bone is a mixture (DeepDRR
#     switches to bone at +350 HU in one step; Schneider models skeletal tissue between ~100 and
#     ~1600 HU as marrow/cortical-bone mixtures); pure cortical bone from +1500 HU;
#   * bone -> metal over +2500..+3000 HU: implants saturate the CT's 12-bit range (3071), so
#     their true density is unknown; they are taken as solid titanium (4.506 g/cm3).
def _rho(hu):
    """Schneider's calibrated total density (g/cm3) at ``hu``, continuous at 100 HU."""
    return float(np.interp(hu, [-1000, -98, 14, 23, 101, 1600, 3000],
                           [0.00121, 0.93, 1.03, 1.031, 1.0762, 1.9642, 2.8]))


DECOMPOSITION_KNOTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "air": ((-1000.0, -800.0), (_rho(-1000), 0.0)),
    "soft_tissue": ((-1000.0, -800.0, -98.0, 14.0, 23.0, 101.0, 1500.0),
                    (0.0, _rho(-800), 0.93, 1.03, 1.031, 1.0762, 0.0)),
    "bone": ((101.0, 1500.0, 1600.0, 2500.0, 3000.0),
             (0.0, _rho(1500), 1.9642, _rho(2500), 0.0)),
    "metal": ((2500.0, 3000.0), (0.0, MATERIALS["metal"].density)),
}
"""Per material, ``(HU knots, partial density g/cm3 at the knots)``; linear between knots and
constant beyond the ends (below -1000 HU: air; above 3000 HU: titanium)."""

hu_grid = np.arange(-1024.0, 3072.0, 1.0)
"""HU at which a renderer may tabulate :func:`decompose_lut` (every integer from -1024 to 3071:
all knots fall on it, so linear interpolation in this table is exact).  Clamp HU to its range."""


def decompose_lut(hu_grid=hu_grid) -> np.ndarray:
    """Partial density (g/cm3) of each of :data:`material_names` at each HU value: shape
    ``(len(material_names), len(hu_grid))``, float32.  See :data:`DECOMPOSITION_KNOTS` for the
    breakpoints and their sources (Schneider et al. 2000 HU-density calibration; DeepDRR's
    thresholds {cite}`deepdrr`; ICRU 44 cortical bone {cite}`icru44`).

    >>> lut = decompose_lut([-1000, 0, 1500, 3071])
    >>> np.round(lut.astype(float), 3).tolist()   # rows: air, soft tissue, bone, metal
    [[0.001, 0.0, 0.0, 0.0], [0.0, 1.018, 0.0, 0.0], [0.0, 0.0, 1.905, 0.0], [0.0, 0.0, 0.0, 4.506]]
    """
    h = np.asarray(hu_grid, dtype=float)
    _check_finite(h, "hu_grid", "pass finite HU values.")
    return np.stack([np.interp(h, *DECOMPOSITION_KNOTS[m]) for m in material_names]).astype(np.float32)


def decompose(hu_volume) -> np.ndarray:
    """Split a CT (HU, numpy ``(z, y, x)`` or a :class:`~bonelab.volume.Volume`) into partial
    densities: float32 array ``(len(material_names), z, y, x)`` in g/cm3 (see :func:`decompose_lut`).

    >>> decompose(np.zeros((1, 1, 2)) + [[[-1000, 1000]]]).shape
    (4, 1, 1, 2)
    """
    hu = np.asarray(getattr(hu_volume, "array", hu_volume), dtype=np.float32)
    _check_finite(hu, "hu_volume", "fill missing voxels with -1000 (air) before decomposing.")
    out = np.empty((len(material_names),) + hu.shape, dtype=np.float32)
    for i, m in enumerate(material_names):
        out[i] = np.interp(hu, *DECOMPOSITION_KNOTS[m])
    return out


# --------------------------------------------------------------------------------------------
# Tube spectra (spekpy)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _muen_air_table():
    # xraydb has no mass energy-absorption coefficients; spekpy ships NIST's mu_en/rho for air.
    from spekpy.SpekTools import load_mu_data

    return load_mu_data("nist")[1]


def _air_kerma_weights(energies_keV, fluence) -> np.ndarray:
    """Per-bin air-kerma contribution: fluence * E * (mu_en/rho)_air(E) (arbitrary units)."""
    return fluence * energies_keV * _muen_air_table().get_muen_over_rho_air(energies_keV)


@dataclass(frozen=True, eq=False)
class Spectrum:
    """An X-ray tube spectrum in energy bins.

    Attributes
    ----------
    energies_keV : (N,) bin centres, keV, increasing
    fluence : (N,) photons per cm2 per mAs at 1 m from the focal spot, in each bin (spekpy's
        differential fluence times the bin width); any positive scale works where only the
        shape matters (``weights`` are normalised)
    kvp : tube voltage, kV
    filtration_mm_al : total aluminium filtration, mm
    anode_angle_deg : tungsten anode angle, degrees
    extra_filtration : ((material, mm), ...) beyond the aluminium

    >>> s = spectrum(80, 2.5)
    >>> 40 < s.mean_energy < 50, 2.3 < s.hvl_mm_al < 3.5
    (True, True)
    """

    energies_keV: np.ndarray
    fluence: np.ndarray
    kvp: float
    filtration_mm_al: float = 0.0
    anode_angle_deg: float = 12.0
    extra_filtration: tuple = ()

    def __post_init__(self):
        e = np.array(self.energies_keV, dtype=float)  # copies: the arrays are frozen below
        f = np.array(self.fluence, dtype=float)
        if not (np.isfinite(self.kvp) and self.kvp > 0):
            raise InvalidArgumentError(f"kvp must be a positive number of kV; got {self.kvp!r}.")
        if e.ndim != 1 or f.shape != e.shape or e.size == 0:
            raise InvalidArgumentError(
                f"energies_keV and fluence must be 1D of equal length; got {e.shape} and {f.shape}.")
        if not np.all(np.isfinite(f)) or f.min() < 0 or f.sum() <= 0:
            raise InvalidValuesError("fluence must be finite, non-negative and not all zero.")
        _energies(e)
        if np.any(np.diff(e) <= 0) or e.max() > self.kvp:
            raise InvalidArgumentError(
                f"energies_keV must increase and stay at or below kvp={self.kvp:g} keV (a tube "
                f"cannot emit photons above its voltage); got {e.min():g}..{e.max():g} keV.")
        for name, arr in (("energies_keV", e), ("fluence", f)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def weights(self) -> np.ndarray:
        """Fluence normalised to sum 1 (photon-number weights per bin)."""
        return self.fluence / self.fluence.sum()

    @property
    def total_fluence(self) -> float:
        """Photons per cm2 per mAs at 1 m, all bins."""
        return float(self.fluence.sum())

    @property
    def mean_energy(self) -> float:
        """Fluence-weighted mean photon energy, keV."""
        return float(np.sum(self.weights * self.energies_keV))

    @functools.cached_property
    def hvl_mm_al(self) -> float:
        """First half-value layer in mm of aluminium: the Al thickness that halves the air kerma,
        with Al attenuation from xraydb and air mu_en/rho from NIST (via spekpy's tables)."""
        from scipy.optimize import brentq

        k = _air_kerma_weights(self.energies_keV, self.fluence)
        k = k / k.sum()
        mu_al = linear_attenuation("aluminium", self.energies_keV)

        def transmitted(t_mm):
            return float(np.sum(k * np.exp(-mu_al * t_mm))) - 0.5

        return float(brentq(transmitted, 0.0, 200.0, xtol=1e-6))


@functools.lru_cache(maxsize=64)
def _spectrum_cached(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra) -> Spectrum:
    """The spectrum from memory, else from the disk cache, else modelled by spekpy (and saved)."""
    k, fluence = _spekpy_spectrum_on_disk(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra)
    # Bins below 1e-6 of the peak (the lowest energies, absorbed by the filter) carry a negligible
    # share of the photons; dropping them makes polychromatic rendering cheaper.
    keep = fluence >= 1e-6 * fluence.max()
    return Spectrum(k[keep], fluence[keep], float(kvp), float(filtration_mm_al), float(anode_angle_deg), extra)


def spectrum_cache_file(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra=()):
    """Where :func:`spectrum` keeps spekpy's result for these settings:
    ``data_dir()/spectra/spekpy-<version>/<key>.npz``.  spekpy takes 0.3-2 s per spectrum (more
    than rendering a radiograph) and every process (each chapter, each simulation worker) would
    model the same few spectra again; the folder carries spekpy's version, so an upgrade that
    changes its model never reads old results."""
    import hashlib
    import json
    from importlib.metadata import version

    from bonelab.config import data_dir

    settings = [float(kvp), float(filtration_mm_al), float(bin_keV), float(anode_angle_deg),
                [[str(m), float(t)] for m, t in extra]]
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:16]
    return data_dir() / "spectra" / f"spekpy-{version('spekpy')}" / f"{key}.npz"


def _spekpy_spectrum_on_disk(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra):
    """(bin centres keV, photons / cm2 / mAs at 1 m per bin), read from the cache file or modelled
    and written there (atomically: a concurrent worker reads a whole file or none)."""
    import os

    path = spectrum_cache_file(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra)
    try:
        with np.load(path) as f:
            return f["energies_keV"], f["fluence"]
    except (OSError, KeyError, ValueError):  # absent or unreadable: model it again
        pass
    k, fluence = _spekpy_spectrum(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, energies_keV=k, fluence=fluence)
    os.replace(tmp, path)
    return k, fluence


def _spekpy_spectrum(kvp, filtration_mm_al, bin_keV, anode_angle_deg, extra):
    import spekpy

    try:
        spek = spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=bin_keV)
        spek.multi_filter([("Al", filtration_mm_al), *extra])
        k, phi = spek.get_spectrum()  # bin centres (keV), photons / cm2 / keV / mAs at 1 m
    except Exception as err:  # spekpy raises bare Exceptions
        raise InvalidArgumentError(
            f"spekpy could not model kvp={kvp}, filtration {filtration_mm_al} mm Al, bin "
            f"{bin_keV} keV, anode {anode_angle_deg} deg, extra filters {extra}: {err}. Filters "
            "take spekpy material names ('Cu', 'Al', 'Water, Liquid', ...) and thicknesses in mm."
        ) from err
    return np.asarray(k, dtype=float), np.asarray(phi, dtype=float) * bin_keV


def spectrum(kvp: float, filtration_mm_al: float = 2.5, *, bin_keV: float = 1.0,
             anode_angle_deg: float = 12.0, extra_filtration=None) -> Spectrum:
    """Tungsten-anode tube spectrum from spekpy {cite}`spekpy`, cached per argument set (in
    memory, and on disk: :func:`spectrum_cache_file`).

    Parameters
    ----------
    kvp : tube voltage in kV (spekpy's tungsten model covers diagnostic and orthovoltage tubes)
    filtration_mm_al : total aluminium filtration, mm (2.5 mm Al is the usual regulatory minimum)
    bin_keV : energy bin width, keV
    anode_angle_deg : anode (target) angle, degrees
    extra_filtration : ``{"Cu": 0.1}`` or ``[("Cu", 0.1)]``: further filters, spekpy material
        names and mm

    Notes
    -----
    Bins holding less than 1e-6 of the peak bin's fluence (the lowest energies, stopped by the
    filter) are dropped.  Polychromatic rendering costs one exponential per bin and pixel: at
    80 kVp, 1 keV bins give 69 bins; ``bin_keV=2`` halves the cost and changes I/I0 by ~0.3%.

    >>> s80, s120 = spectrum(80), spectrum(120)
    >>> s80.mean_energy < s120.mean_energy
    True
    >>> s80 is spectrum(80)   # cached
    True
    """
    values = {"kvp": kvp, "filtration_mm_al": filtration_mm_al, "bin_keV": bin_keV,
              "anode_angle_deg": anode_angle_deg}
    for name, v in values.items():
        ok = isinstance(v, (int, float, np.number)) and np.isfinite(v)
        if not ok or v < 0 or (v == 0 and name != "filtration_mm_al"):
            raise InvalidArgumentError(f"{name} must be a positive number; got {v!r}.")
    if bin_keV > kvp / 4:
        raise InvalidArgumentError(f"bin_keV={bin_keV} is too coarse for kvp={kvp}; use <= kvp/4.")
    items = extra_filtration.items() if isinstance(extra_filtration, dict) else extra_filtration or ()
    extra = tuple((str(m), float(t)) for m, t in items)
    if any(t < 0 or not np.isfinite(t) for _, t in extra):
        raise InvalidArgumentError(f"extra_filtration thicknesses must be >= 0 mm; got {extra}.")
    return _spectrum_cached(float(kvp), float(filtration_mm_al), float(bin_keV),
                            float(anode_angle_deg), extra)


# --------------------------------------------------------------------------------------------
# Detector and polychromatic Beer-Lambert
# --------------------------------------------------------------------------------------------
def detector_efficiency(energies_keV, *, thickness_mm: float = 0.6, material: str = "csi"):
    """Fraction of photons absorbed in the detector's scintillator, ``1 - exp(-mu(E) t)``; the
    default is a 0.6 mm CsI layer (typical of flat-panel radiography detectors).

    >>> bool(detector_efficiency(40.0) > detector_efficiency(100.0))
    True
    """
    return 1.0 - np.exp(-linear_attenuation(material, energies_keV) * thickness_mm)


def detector_weights(spectrum: Spectrum, detector: str = "energy_integrating",
                     detector_response=None) -> np.ndarray:
    """Normalised per-bin weights of the recorded signal (sum 1): ``fluence * eta(E)`` for a
    photon-counting detector, ``fluence * E * eta(E)`` for an energy-integrating one, where
    ``eta`` is ``detector_response`` ((N,) absorption efficiency per bin) or
    :func:`detector_efficiency` (0.6 mm CsI).
    """
    if detector not in ("energy_integrating", "photon_counting"):
        raise InvalidArgumentError(
            f"detector must be 'energy_integrating' or 'photon_counting'; got {detector!r}.")
    e = spectrum.energies_keV
    if detector_response is None:
        eta = detector_efficiency(e)
    else:
        eta = np.asarray(detector_response, dtype=float)
        if eta.shape != e.shape or not np.all(np.isfinite(eta)) or eta.min() < 0:
            raise InvalidArgumentError(
                f"detector_response must be {e.shape[0]} finite non-negative values, one per "
                f"spectrum bin; got shape {eta.shape}.")
    w = spectrum.fluence * eta * (e if detector == "energy_integrating" else 1.0)
    if w.sum() <= 0:
        raise InvalidArgumentError("detector_response is zero at every energy of the spectrum.")
    return w / w.sum()


def attenuation_table(energies_keV, materials=material_names) -> np.ndarray:
    """Mass attenuation coefficients ``(N, M)``: mu/rho (cm2/g) of each material at each energy,
    so that ``table @ density_paths`` (g/cm2) is the dimensionless Beer-Lambert exponent."""
    return np.stack([mass_attenuation(m, energies_keV) for m in materials], axis=1)


def polychromatic_intensity(density_paths, spectrum: Spectrum, *, materials=material_names,
                            detector: str = "energy_integrating", detector_response=None):
    """Polychromatic Beer-Lambert: the detector signal behind the object relative to the signal
    without it,

        I/I0 = sum_E w(E) exp(-sum_m (mu/rho)_m(E) P_m) / sum_E w(E)

    Parameters
    ----------
    density_paths : (M, ...) numpy array or torch tensor; ``P_m``, the line integral along each ray
        of material m's partial density: a mass thickness **in g/cm2**.  A renderer that
        integrates g/cm3 over mm divides by 10 first.  M = ``len(materials)``.
    spectrum : :class:`Spectrum`
    materials : names in :data:`MATERIALS`, one per channel (default :data:`material_names`)
    detector : ``"energy_integrating"`` (weights fluence * E * eta, flat panels) or
        ``"photon_counting"`` (fluence * eta)
    detector_response : optional (N,) absorption efficiency per bin replacing 0.6 mm CsI

    Returns
    -------
    I/I0 with shape ``density_paths.shape[1:]``, same kind/dtype/device as the input;
    differentiable in torch.  Work is chunked over bins, so temporaries stay at tens of MB
    (under autograd the exponentials of every bin are kept for backward: N x pixels values).

    >>> s = spectrum(80)
    >>> water_10cm = np.array([0.0, 10.0, 0.0, 0.0])   # 10 cm of soft tissue at 1 g/cm3
    >>> 0.0 < float(polychromatic_intensity(water_10cm, s)) < 0.2
    True
    """
    if len(density_paths) != len(materials):
        raise InvalidArgumentError(
            f"density_paths has {len(density_paths)} channels but materials names "
            f"{len(materials)} ({materials}); the first axis is the material.")
    if not _is_tensor(density_paths):
        density_paths = np.asarray(density_paths)
    _check_finite(density_paths, "density_paths", "check the CT (NaN voxels) and the renderer.")
    w = detector_weights(spectrum, detector, detector_response)
    a = attenuation_table(spectrum.energies_keV, materials)
    shape = density_paths.shape[1:]
    flat = density_paths.reshape(len(materials), -1)
    if _is_tensor(density_paths):
        import torch

        a = torch.as_tensor(a, dtype=density_paths.dtype, device=density_paths.device)
        w = torch.as_tensor(w, dtype=density_paths.dtype, device=density_paths.device)
        exp = torch.exp
    else:
        flat = np.asarray(flat, dtype=np.result_type(flat.dtype, np.float32))
        a, w, exp = a.astype(flat.dtype), w.astype(flat.dtype), np.exp
    step = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[1]))
    out = 0.0
    for i in range(0, len(w), step):
        out = out + w[i:i + step] @ exp(-(a[i:i + step] @ flat))
    return out.reshape(shape)


def effective_mu(spectrum: Spectrum, material: str, thickness_mm, *,
                 detector: str = "energy_integrating"):
    """Effective linear attenuation ``-ln(I/I0) / t`` (1/mm) of a slab of ``material`` (at its
    :data:`MATERIALS` density) ``thickness_mm`` thick (> 0, scalar or array).  It falls with
    thickness: the beam hardens as soft photons are removed first.

    >>> s = spectrum(80)
    >>> mu = effective_mu(s, "water", [10.0, 100.0, 300.0])
    >>> bool(mu[0] > mu[1] > mu[2])
    True
    """
    t = np.asarray(thickness_mm, dtype=float)
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise InvalidArgumentError(f"thickness_mm must be positive mm; got {thickness_mm!r}.")
    paths = MATERIALS[material].density * t[None] / 10.0  # g/cm3 * mm -> g/cm2
    i = polychromatic_intensity(paths.astype(float), spectrum, materials=(material,), detector=detector)
    return -np.log(i) / t


def effective_energy(mu, material: str = "water") -> np.ndarray | float:
    """The monoenergetic energy (keV) at which ``material`` attenuates as ``mu`` (1/mm, e.g. an
    :func:`effective_mu`): the effective energy of a polychromatic beam behind that slab.  Found
    on a 0.1 keV grid from 15 to 150 keV, where the attenuation of water and soft tissue falls
    monotonically with energy.

    >>> round(float(effective_energy(mu_water(60.0))), 1)
    60.0
    """
    grid = np.linspace(15.0, 150.0, 1351)
    table = linear_attenuation(material, grid)
    if np.any(np.diff(table) >= 0):
        raise InvalidArgumentError(f"the attenuation of {material!r} is not monotonic in 15-150 keV (an edge); "
                                   "effective_energy needs a material without K-edges there, e.g. water.")
    out = np.interp(np.asarray(mu, dtype=float), table[::-1], grid[::-1])
    return float(out) if np.ndim(mu) == 0 else out


# --------------------------------------------------------------------------------------------
# Noise and scatter
# --------------------------------------------------------------------------------------------
def photons_from_mas(spectrum: Spectrum, mas: float, *, sdd_mm: float, pixel_mm) -> float:
    """Photons reaching one detector pixel with nothing in the beam: spectrum fluence per mAs at
    1 m, times ``mas``, inverse-square to the source-detector distance ``sdd_mm`` (mm), times the
    pixel area (``pixel_mm`` scalar or (row, column) in mm).

    >>> n = photons_from_mas(spectrum(80), 2.0, sdd_mm=1000.0, pixel_mm=0.2)
    >>> 1e3 < n < 1e6
    True
    """
    px = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,))
    if not (mas > 0 and sdd_mm > 0 and np.all(px > 0)):
        raise InvalidArgumentError(
            f"mas, sdd_mm and pixel_mm must be positive; got {mas}, {sdd_mm}, {pixel_mm}.")
    area_cm2 = float(px[0] * px[1]) / 100.0
    return spectrum.total_fluence * mas * (1000.0 / sdd_mm) ** 2 * area_cm2


# --------------------------------------------------------------------------------------------
# Dose: entrance air kerma
# --------------------------------------------------------------------------------------------
_KEV_PER_G_TO_UGY = 1.602176634e-16 * 1e3 * 1e6  # keV/g -> J/kg (Gy) -> uGy


def entrance_air_kerma(spectrum: Spectrum, mas: float, *, distance_mm: float) -> float:
    """Entrance air kerma (uGy): the air kerma free in air, without backscatter, at
    ``distance_mm`` (mm) from the focal spot, for ``mas`` (mAs) of the tube ``spectrum``.

    ``K = mas * (1000 / distance_mm)**2 * sum_E fluence(E) * E * (mu_en/rho)_air(E)``: spekpy's
    fluence per mAs at 1 m, inverse-square to the distance (no attenuation in air), NIST's
    mass energy-absorption coefficients of air (as in :attr:`Spectrum.hvl_mm_al`).  For the
    patient's entrance, ``distance_mm`` is the focus-to-skin distance, i.e. the source-to-image
    distance less the patient's thickness and the gap to the detector.  The entrance *surface*
    dose that dose surveys quote includes backscatter from the patient: multiply by a
    backscatter factor of about 1.3-1.5 (IAEA TRS-457, 2007) to compare.

    A sanity check (tested): a PA chest at 120 kVp with 2.5 mm Al and the 0.1 mm Cu that chest
    stands add, 2.5 mAs, focus-to-skin 1550 mm (1800 mm SID, 250 mm of patient and gap) gives
    about 100 uGy, i.e. an entrance surface dose of about 0.14 mGy: at the UK national reference
    dose of 0.15 mGy for a PA chest (Hart, Hillier & Shrimpton 2012, HPA-CRCE-034) and below the
    European reference of 0.3 mGy (European Commission 1996, EUR 16260).

    >>> chest = spectrum(120, 2.5, extra_filtration={"Cu": 0.1})
    >>> round(entrance_air_kerma(chest, 2.5, distance_mm=1550.0))
    103
    """
    if not (np.isfinite(mas) and mas > 0 and np.isfinite(distance_mm) and distance_mm > 0):
        raise InvalidArgumentError(f"mas and distance_mm must be positive (mAs, mm); got {mas!r} and {distance_mm!r}.")
    per_mas_at_1m = float(_air_kerma_weights(spectrum.energies_keV, spectrum.fluence).sum()) * _KEV_PER_G_TO_UGY
    return per_mas_at_1m * float(mas) * (1000.0 / float(distance_mm)) ** 2


def mas_for_entrance_kerma(spectrum: Spectrum, kerma_uGy: float, *, distance_mm: float) -> float:
    """The tube current-time product (mAs) that gives entrance air kerma ``kerma_uGy`` (uGy) at
    ``distance_mm`` (mm) from the focal spot: the inverse of :func:`entrance_air_kerma`.

    >>> s = spectrum(60)
    >>> round(mas_for_entrance_kerma(s, entrance_air_kerma(s, 4.0, distance_mm=950.0), distance_mm=950.0), 6)
    4.0
    """
    if not (np.isfinite(kerma_uGy) and kerma_uGy > 0):
        raise InvalidArgumentError(f"kerma_uGy must be a positive air kerma in uGy; got {kerma_uGy!r}.")
    return float(kerma_uGy) / entrance_air_kerma(spectrum, 1.0, distance_mm=distance_mm)


def add_noise(intensity, *, photons_per_pixel: float | None = None, mas: float | None = None,
              spectrum: Spectrum | None = None, sdd_mm: float = 1000.0, pixel_mm=None,
              electronic_sigma: float = 0.0, seed: int | None = 0):
    """Quantum and electronic noise on a transmitted fraction ``I/I0`` (numpy or torch, any shape).

    ``N0`` photons reach a pixel at ``I/I0 = 1``: give ``photons_per_pixel`` directly, or ``mas``
    with the ``spectrum``, ``sdd_mm`` and ``pixel_mm`` (see :func:`photons_from_mas`).  Each
    pixel counts ``Poisson(N0 * I/I0)`` photons plus Gaussian electronic noise of
    ``electronic_sigma`` (in photons, standard deviation); the result is divided by ``N0``, so it
    is again I/I0 (mean preserved, variance ``I/I0 / N0 + (electronic_sigma / N0)**2``).  Real
    energy-integrating detectors add Swank noise on top; not modelled.  Same ``seed``, same
    noise (``seed=None``: fresh randomness).  Not differentiable (sampling).

    >>> noisy = add_noise(np.full((64, 64), 0.5), photons_per_pixel=1000, seed=1)
    >>> abs(float(noisy.mean()) - 0.5) < 0.01
    True
    """
    if photons_per_pixel is None:
        if mas is None or spectrum is None or pixel_mm is None:
            raise InvalidArgumentError(
                "add_noise needs photons_per_pixel, or mas together with spectrum and pixel_mm.")
        n0 = photons_from_mas(spectrum, mas, sdd_mm=sdd_mm, pixel_mm=pixel_mm)
    else:
        n0 = float(photons_per_pixel)
    if not (np.isfinite(n0) and n0 > 0) or not electronic_sigma >= 0:
        raise InvalidArgumentError(
            f"photons per pixel must be > 0 and electronic_sigma >= 0; got {n0}, {electronic_sigma}.")
    _check_finite(intensity, "intensity", "noise needs finite I/I0 values.")
    if _is_tensor(intensity):
        import torch

        g = torch.Generator(device=intensity.device)
        g.seed() if seed is None else g.manual_seed(seed)
        lam = (intensity.detach().clamp(min=0) * n0).double()
        counts = torch.poisson(lam, generator=g)
        if electronic_sigma > 0:
            counts = counts + electronic_sigma * torch.randn(
                lam.shape, generator=g, dtype=lam.dtype, device=lam.device)
        return (counts / n0).to(intensity.dtype)
    rng = np.random.default_rng(seed)
    i = np.asarray(intensity)
    counts = rng.poisson(np.clip(i, 0, None) * n0).astype(float)
    if electronic_sigma > 0:
        counts += rng.normal(0.0, electronic_sigma, size=i.shape)
    return (counts / n0).astype(np.result_type(i.dtype, np.float32))


@dataclass(frozen=True)
class AntiScatterGrid:
    """An anti-scatter grid, described as IEC 60627 characterises one: the transmission of
    primary radiation ``primary_transmission`` (Tp) and of scattered radiation
    ``scatter_transmission`` (Ts); ``ratio`` (strip height over gap) is recorded for reference.

    Behind the grid the scatter-to-primary ratio falls from SPR to ``SPR * Ts / Tp``, the
    detector signal falls by the Bucky factor ``(1 + SPR) / (Tp + Ts * SPR)`` (the mAs an
    automatic exposure control adds), and contrast rises by ``Tp * (1 + SPR) / (Tp + Ts * SPR)``.
    The defaults are a typical 10:1 grid at diagnostic energies: Tp about 0.7, Ts about 0.1-0.15,
    Bucky factors 3-5 behind a thick part (Bushberg et al., The Essential Physics of Medical
    Imaging, 3rd ed. 2012, ch. 7).

    >>> g = AntiScatterGrid()
    >>> round(g.scatter_to_primary(3.0), 2), round(g.bucky_factor(3.0), 2)
    (0.51, 3.77)
    """

    ratio: float = 10.0
    primary_transmission: float = 0.7
    scatter_transmission: float = 0.12

    def __post_init__(self):
        tp, ts = self.primary_transmission, self.scatter_transmission
        if not (self.ratio > 0 and 0 < ts < tp <= 1):
            raise InvalidArgumentError(
                f"a grid needs ratio > 0 and 0 < scatter_transmission < primary_transmission <= 1; got "
                f"ratio {self.ratio!r}, Tp {tp!r}, Ts {ts!r}.")

    def scatter_to_primary(self, spr):
        """The scatter-to-primary ratio behind the grid for ``spr`` in front of it."""
        return spr * self.scatter_transmission / self.primary_transmission

    def bucky_factor(self, spr):
        """Total radiation in front of the grid over total behind it, for scatter-to-primary ``spr``."""
        return (1 + spr) / (self.primary_transmission + self.scatter_transmission * spr)

    def contrast_improvement(self, spr):
        """Contrast behind the grid over contrast without it (the grid's K factor) at ``spr``."""
        return self.primary_transmission * self.bucky_factor(spr)


def add_scatter(intensity, *, scatter_to_primary: float = 0.5, kernel_sigma_mm: float = 30.0,
                pixel_mm=1.0, grid: AntiScatterGrid | None = None):
    """Add an approximate scatter field to a primary transmitted fraction ``I/I0`` (numpy
    ``(..., H, W)``): ``I + SPR * G_sigma * I``, where ``G_sigma`` is a normalised Gaussian blur
    of ``kernel_sigma_mm`` (mm at the detector; ``pixel_mm`` scalar or (row, column)).  Scatter is
    broad and low-frequency, so in a uniform region the scatter-to-primary ratio is
    ``scatter_to_primary``; behind dense structures it is higher, as in real images.

    With an anti-scatter ``grid`` the detector records ``Tp * I + Ts * SPR * G_sigma * I``: the
    ratio behind the grid is ``SPR * Ts / Tp`` and the signal (still relative to the bare beam
    without a grid) falls by :meth:`AntiScatterGrid.bucky_factor`; to keep the detector dose, as an
    automatic exposure control does, raise the mAs of :func:`add_noise` by that factor.

    An approximation, not Monte Carlo: it ignores the angular and energy dependence of scatter
    and of the grid's transmission.  Real ratios: PA chest without a grid about 1 in the lungs
    and up to about 9 (90 % scatter fraction) behind the mediastinum (Niklason, Sorenson &
    Nelson 1981, Med. Phys. 8:677, doi:10.1118/1.595027), a few times less with a 12:1 grid;
    thin parts such as the wrist (3-6 cm) scatter little, about 0.1-0.3 without a grid.

    >>> out = add_scatter(np.full((32, 32), 0.2), scatter_to_primary=0.5, kernel_sigma_mm=10, pixel_mm=1)
    >>> round(float(out[16, 16]), 3)
    0.3
    >>> behind = add_scatter(np.full((32, 32), 0.2), scatter_to_primary=0.5, kernel_sigma_mm=10,
    ...                      pixel_mm=1, grid=AntiScatterGrid(primary_transmission=0.7, scatter_transmission=0.1))
    >>> round(float(behind[16, 16]), 3)   # 0.7 * 0.2 + 0.1 * 0.5 * 0.2
    0.15
    """
    from scipy.ndimage import gaussian_filter

    px = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,))
    if not (scatter_to_primary >= 0 and kernel_sigma_mm > 0 and np.all(px > 0)):
        raise InvalidArgumentError(
            "scatter_to_primary must be >= 0, kernel_sigma_mm and pixel_mm > 0; got "
            f"{scatter_to_primary}, {kernel_sigma_mm}, {pixel_mm}.")
    i = np.asarray(intensity)
    _check_finite(i, "intensity", "scatter needs finite I/I0 values.")
    sigma = (0,) * (i.ndim - 2) + tuple(kernel_sigma_mm / px)
    scatter = scatter_to_primary * gaussian_filter(i.astype(float), sigma, mode="nearest").astype(i.dtype)
    if grid is None:
        return i + scatter
    return (grid.primary_transmission * i + grid.scatter_transmission * scatter).astype(i.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------
def to_radiograph(intensity, *, window=None, percentiles=(0.5, 99.5), gamma: float = 1.0):
    """The image a radiologist looks at, in [0, 1], bone bright: ``p = -ln(I/I0)`` (the
    attenuation line integral: more attenuation, brighter, as on film and on a PACS screen), then
    a window ``(low, high)`` in units of ``p`` (default: the given percentiles of ``p`` in each
    image, over the last two axes), then ``((p - low) / (high - low)).clip(0, 1) ** gamma``.
    numpy or torch, shape ``(..., H, W)``.

    >>> img = to_radiograph(np.array([[1.0, 0.5], [0.1, 0.01]]))
    >>> float(img.min()), float(img.max()), bool(img[1, 1] > img[0, 1])
    (0.0, 1.0, True)
    """
    if not gamma > 0:
        raise InvalidArgumentError(f"gamma must be > 0; got {gamma!r}.")
    _check_finite(intensity, "intensity", "convert finite I/I0 values.")
    tensor = _is_tensor(intensity)
    if tensor:
        p = -intensity.clamp(min=1e-12).log()
    else:
        i = np.asarray(intensity)
        p = -np.log(np.clip(i.astype(np.result_type(i.dtype, np.float32)), 1e-12, None))
    if window is not None:
        lo, hi = (float(v) for v in window)
    elif tensor:
        import torch

        q = torch.tensor([percentiles[0] / 100, percentiles[1] / 100], dtype=p.dtype, device=p.device)
        lo, hi = torch.quantile(p.flatten(-2), q, dim=-1, keepdim=True).unsqueeze(-1)
    else:
        lo, hi = np.percentile(p, percentiles, axis=(-2, -1), keepdims=True)
    if window is not None and not hi > lo:
        raise InvalidArgumentError(f"window must be (low, high) with high > low; got {window!r}.")
    width = (hi - lo).clamp(min=1e-12) if tensor and window is None else np.maximum(hi - lo, 1e-12)
    scaled = (p - lo) / width
    return (scaled.clamp(0, 1) if tensor else np.clip(scaled, 0, 1)) ** gamma
