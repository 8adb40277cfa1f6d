"""The randomised acquisition chain of one simulated sample: draw the physics, then turn the
renderer's material path integrals into a display radiograph (and, for the bone-radiograph
target, the clean films with and without the bones through the same chain, without noise or
scatter: :func:`bone_contribution`).

Parameters (ranges per protocol, :attr:`bonelab.simulate.Protocol.physics`):

=====================  ===================================================================
parameter              physics (bonelab.drr.physics)
=====================  ===================================================================
kvp                    tube voltage (2 kV steps), spectrum modelled by spekpy
filtration_mm_al       total filtration (mm Al), applied with xraydb's aluminium attenuation
photons (log-uniform)  photons per pixel in air: dose and quantum noise
electronic_sigma       detector read noise (photons)
scatter_to_primary     scatter field (add_scatter); with a grid the ranges are lower
scatter_sigma_mm       width of the scatter kernel
blur_px                focal spot + detector blur (Gaussian sigma in pixels)
gamma                  display contrast curve
window_low_pct,        display window (percentiles of -ln I/I0), to_radiograph
window_high_pct
postprocess            probability that the film carries a randomly drawn chain of the
                       image processing real systems apply (dynamic range compression,
                       unsharp masking, a detector response curve:
                       :func:`bonelab.drr.processing.draw_postprocess`); no real film is a raw
                       linear DRR
=====================  ===================================================================

With an anti-scatter grid (``grid=True`` in the protocol) the scatter ranges are those in
front of the grid; :class:`bonelab.drr.physics.AntiScatterGrid` (10:1, Tp 0.7, Ts 0.12) removes most of it,
and the photons in air are raised by the grid's Bucky factor, as an automatic exposure control
does.  Each sample's dose is recorded as the tube load (mAs) that gives its photons per pixel
and the incident air kerma at the isocentre (uGy, :func:`dose`).  The photon ranges are domain
randomisation ranges for the simulated pixel sizes (0.5-2 mm), not clinical settings: at the
wrist they correspond to hundreds of times less dose than a clinical film (about 2 mAs and 100 uGy
at 100 cm), i.e. noisier images; the recorded mAs and kerma make that visible.
"""

from __future__ import annotations

import math

import numpy as np

from bonelab.errors import InvalidArgumentError

_LOG_UNIFORM = {"photons"}
PARAMETERS = ("kvp", "filtration_mm_al", "photons", "electronic_sigma", "scatter_to_primary", "scatter_sigma_mm",
              "blur_px", "gamma", "window_low_pct", "window_high_pct", "postprocess")


def _uniform(rng, lo, hi, log=False) -> float:
    if log:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_physics(ranges: dict, rng: np.random.Generator) -> dict:
    """One setting of every physics parameter drawn from ``ranges``; kVp in 2 kV steps (as
    consoles offer a few settings), which lets a run model few spectra (spekpy takes 0.3-2 s per
    spectrum, more than rendering a sample).

    >>> from bonelab.simulate import protocol
    >>> p = draw_physics(protocol("wrist").physics["random"], np.random.default_rng(0))
    >>> 50 <= p["kvp"] <= 70 and 1e3 <= p["photons"] <= 3e4
    True
    """
    from bonelab.drr.processing import draw_postprocess

    p = {k: _uniform(rng, *ranges[k], log=k in _LOG_UNIFORM) for k in PARAMETERS}
    p["kvp"] = float(2 * round(p["kvp"] / 2))
    p["postprocess"] = draw_postprocess(rng) if rng.random() < p["postprocess"] else {}
    return p


def dose(spectrum, physics: dict, *, sdd_mm: float, sid_mm: float, pixel_mm: float) -> dict:
    """The tube load (mAs) that gives ``physics["photons"]`` per detector pixel in air, and the
    incident air kerma it delivers at the isocentre (uGy; free in air, no backscatter: the
    entrance surface lies a few cm nearer the source, so the entrance kerma is somewhat higher).

    >>> from bonelab.drr import physics as ph
    >>> d = dose(ph.spectrum(60, 2.5), {"photons": 1e4}, sdd_mm=1000, sid_mm=950, pixel_mm=0.5)
    >>> d["mas"] > 0 and d["air_kerma_uGy"] > 0
    True
    """
    from bonelab.drr import physics as ph

    mas = physics["photons"] / ph.photons_from_mas(spectrum, 1.0, sdd_mm=sdd_mm, pixel_mm=pixel_mm)
    return {"mas": float(mas), "air_kerma_uGy": float(ph.entrance_air_kerma(spectrum, mas, distance_mm=sid_mm))}


def filtered_spectrum(base, filtration_mm_al: float):
    """``base`` (a :class:`bonelab.drr.physics.Spectrum`) behind more aluminium, up to a total of
    ``filtration_mm_al`` mm: Beer-Lambert on every bin with xraydb's aluminium attenuation.
    spekpy does the same for its filters but re-models the whole tube each time (0.3-2 s); this
    takes microseconds, so filtration can vary continuously.

    >>> from bonelab.drr import physics
    >>> s = filtered_spectrum(physics.spectrum(60, 2.0, bin_keV=2.0), 4.0)
    >>> s.filtration_mm_al, s.mean_energy > physics.spectrum(60, 2.0, bin_keV=2.0).mean_energy
    (4.0, True)
    """
    from bonelab.drr import physics as ph

    extra = float(filtration_mm_al) - base.filtration_mm_al
    if extra < 0:
        raise InvalidArgumentError(f"filtration {filtration_mm_al} mm Al is below the base spectrum's "
                                   f"{base.filtration_mm_al} mm; model the base with less filtration.")
    mu = ph.linear_attenuation("aluminium", base.energies_keV)
    return ph.Spectrum(base.energies_keV, base.fluence * np.exp(-mu * extra), base.kvp, float(filtration_mm_al),
                       base.anode_angle_deg, base.extra_filtration)


def base_spectra(kvps, ranges: dict) -> dict:
    """``{kvp: spectrum}`` at the lowest filtration of ``ranges`` (2 keV bins), for
    :func:`filtered_spectrum`.  spekpy models each one once per machine:
    :func:`bonelab.drr.physics.spectrum` keeps them in memory and on disk
    (:func:`bonelab.drr.physics.spectrum_cache_file`)."""
    from bonelab.drr import physics as ph

    f0 = float(ranges["filtration_mm_al"][0])
    return {float(k): ph.spectrum(float(k), filtration_mm_al=f0, bin_keV=2.0) for k in sorted(set(kvps))}


def radiograph(material_paths, physics: dict, *, pixel_mm: float, seed: int = 0, spectrum=None, grid: bool = False):
    """A display radiograph (H, W) in [0, 1], bone bright, from material path integrals, and the
    display window used.

    ``material_paths`` (M, H, W) are the renderer's per-material density integrals in g/cm3 * mm
    (:meth:`bonelab.drr.Renderer.integrals` of a polychromatic renderer); the chain is the one of
    :func:`bonelab.drr.render` with the randomised settings in ``physics``: polychromatic
    Beer-Lambert for ``kvp``/``filtration_mm_al``, scatter (behind an anti-scatter grid with
    ``grid``), Gaussian blur (focal spot and detector), quantum + electronic noise, the display
    window and contrast curve, then the drawn image processing (``physics["postprocess"]``).
    The blur is added here (scipy) because the renderer has none.  ``spectrum``: the tube
    spectrum to use (default: modelled by spekpy for ``kvp`` and ``filtration_mm_al``).

    Returns ``(image, window)``: ``window = (low, high)`` in units of ``-ln I/I0``, so that
    another image of the same acquisition (:func:`clean_radiograph`) can be displayed alike.
    """
    from scipy.ndimage import gaussian_filter

    from bonelab.drr import physics as ph
    from bonelab.drr.processing import postprocess

    spec = spectrum or ph.spectrum(physics["kvp"], filtration_mm_al=physics["filtration_mm_al"], bin_keV=2.0)
    intensity = ph.polychromatic_intensity(np.asarray(material_paths, np.float32) / 10.0, spec)  # -> g/cm2
    the_grid = ph.AntiScatterGrid() if grid else None
    spr = physics["scatter_to_primary"]
    intensity = ph.add_scatter(intensity, scatter_to_primary=spr, kernel_sigma_mm=physics["scatter_sigma_mm"],
                               pixel_mm=pixel_mm, grid=the_grid)
    intensity = gaussian_filter(intensity, physics["blur_px"], mode="nearest")
    photons = physics["photons"] * (the_grid.bucky_factor(spr) if grid else 1.0)
    intensity = ph.add_noise(intensity, photons_per_pixel=photons, electronic_sigma=physics["electronic_sigma"],
                             seed=seed)
    p = -np.log(np.clip(intensity, 1e-6, None))
    window = tuple(float(w) for w in np.percentile(p, (physics["window_low_pct"], physics["window_high_pct"])))
    image = ph.to_radiograph(np.clip(intensity, 1e-6, None), window=_open(window), gamma=physics["gamma"])
    image = postprocess(image, physics.get("postprocess"), pixel_mm=pixel_mm)
    return np.clip(image, 0.0, 1.0).astype(np.float32), window


def clean_radiograph(material_paths, physics: dict, window, *, spectrum=None, pixel_mm=None) -> np.ndarray:
    """The noise- and scatter-free image of ``material_paths`` through the same spectrum, blur,
    display ``window`` (from :func:`radiograph`) and contrast curve: (H, W) float32 in [0, 1];
    with ``pixel_mm`` also through the film's drawn image processing (``physics["postprocess"]``),
    as :func:`radiograph` does."""
    from scipy.ndimage import gaussian_filter

    from bonelab.drr import physics as ph
    from bonelab.drr.processing import postprocess

    spec = spectrum or ph.spectrum(physics["kvp"], filtration_mm_al=physics["filtration_mm_al"], bin_keV=2.0)
    intensity = ph.polychromatic_intensity(np.asarray(material_paths, np.float32) / 10.0, spec)
    intensity = gaussian_filter(intensity, physics["blur_px"], mode="nearest")
    image = ph.to_radiograph(np.clip(intensity, 1e-6, None), window=_open(window), gamma=physics["gamma"])
    if pixel_mm is not None:
        image = postprocess(image, physics.get("postprocess"), pixel_mm=pixel_mm)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def bone_contribution(material_paths, without_bone_paths, physics: dict, window, *, spectrum=None,
                      pixel_mm) -> np.ndarray:
    """What the bones add to the film as it is displayed: the clean film of ``material_paths``
    (the whole body) minus the clean film of ``without_bone_paths`` (the same body with its bone
    voxels emptied), both through the same spectrum, blur, display window, contrast curve and
    image processing (:func:`clean_radiograph`); (H, W) float32, clipped to [0, 1] (0 where the
    bones darken the displayed film: the halo that unsharp masking draws beside an edge).

    For a linear display (gamma 1, the window starting at zero attenuation, no processing) this
    is the bone-only film (the bone's line integral through the window), up to beam hardening;
    for any other display it is that film as this display shows it, so that ``film - bones`` is
    the film without its bones whatever its contrast curve and processing were.
    """
    with_bone = clean_radiograph(material_paths, physics, window, spectrum=spectrum, pixel_mm=pixel_mm)
    without = clean_radiograph(without_bone_paths, physics, window, spectrum=spectrum, pixel_mm=pixel_mm)
    return np.clip(with_bone - without, 0.0, 1.0)


def _open(window) -> tuple:
    """A window with high > low (a constant image gets a tiny width instead of an error)."""
    lo, hi = window
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)
