"""Labelled CT -> simulated radiograph data sets on disk (images + projected multi-label masks).

For every subject (virtual wrists from :mod:`bonelab.phantoms` by default, or any list of
:class:`~bonelab.phantoms.Subject` a reader brings) :func:`simulate` renders a set of views, each
with random jitter of the pose and the acquisition, and writes the radiograph together with the
masks of every labelled bone projected onto the detector.  Masks are stacked binary channels
``(L, H, W)``: a pixel may belong to two bones at once (the carpals overlap in every view), which
is exactly what makes hand annotation of X-rays hard and projection of CT labels attractive.

Views (angle about the forearm's long axis, from the PA position; jitter added per sample):

=========  ======  ============================================================================
view       angle   clinical meaning
=========  ======  ============================================================================
pa         0       posteroanterior: palm on the detector, beam dorsal -> palmar
oblique    45      semi-pronated oblique: radial side raised 45 degrees
lateral    90      lateral: ulnar side on the detector, beam radial -> ulnar
=========  ======  ============================================================================

Images are hung as clinical wrist films are: fingers up, forearm down (the rendered detector
image turned by 180 degrees).  A left wrist is the mirror image of a right one, so training should
flip images left-right at random.

Geometry jitter (per sample, uniform in the ranges of :data:`GEOMETRY_JITTER`):

=====================  ===============  =======================================================
parameter              range            meaning
=====================  ===============  =======================================================
angle_deg              +-8              rotation about the forearm axis (positioning)
tilt_deg               +-8              cranio-caudal tube angulation
roll_deg               +-12             in-plane rotation of the detector (film placement)
sdd_mm                 1000 - 1150      source-to-detector distance
odd_mm                 30 - 80          object (isocentre)-to-detector distance: magnification
                                        ``sdd / (sdd - odd)`` = 1.03 - 1.09
fov_scale              0.9 - 1.1        field of view (zoom), times ``fov_mm`` (default 75 mm)
shift_mm               +-5              detector shift along u and v (mm at the isocentre)
=====================  ===============  =======================================================

Physics (domain randomisation; per sample, uniform unless said; :data:`PHYSICS` holds named
ranges, ``"random"`` is the training default, ``"fixed"`` one typical setting, ``"shifted"``
settings outside the training range for robustness tests):

=====================  ============  =========  =========  ===================================
parameter              random        fixed      shifted    physics (bonelab.drr.physics)
=====================  ============  =========  =========  ===================================
kvp                    50 - 70       60         86 - 100   tube voltage (2 kV steps), spekpy
filtration_mm_al       2 - 4         2.5        5 - 7      total filtration (mm Al)
photons (log-uniform)  1e3 - 3e4     1e4        2e2 - 5e2  photons per pixel in air: dose/noise
electronic_sigma       0 - 5         2          8 - 12     detector read noise (photons)
scatter_to_primary     0.05 - 0.4    0.2        0.6 - 0.9  scatter field (add_scatter)
scatter_sigma_mm       10 - 40       25         20 - 40    width of the scatter kernel
blur_px                0.3 - 1.2     0.6        1.6 - 2.2  focal spot + detector blur (Gaussian
                                                           sigma in pixels)
gamma                  0.7 - 1.4     1.0        1.7 - 2.2  display contrast curve
window_low_pct         0 - 3         0.5        0 - 3      display window (percentiles of
window_high_pct        97 - 100      99.5       97 - 100   -ln I/I0), to_radiograph
=====================  ============  =========  =========  ===================================

Data set format (folder ``DIR``)::

    DIR/samples/{subject}_{view}_{k:03d}.npz   one file per sample: image (1, H, W) float32 in
                                               [0, 1] (bone bright), label (L, H, W) uint8, meta
    DIR/{split}_images.npy                     (N, 1, H, W) float32, per split (after consolidation)
    DIR/{split}_labels.npy                     (N, L, H, W) uint8
    DIR/metadata.csv                           one row per sample: split, subject, view, angles,
                                               geometry, physics, file (same order as the arrays)
    DIR/dataset.json                           label names, H, W, pixel spacing, seed, settings

Sample files are written to a temporary name and renamed, so an interrupted run leaves only
whole samples; running again skips them (resume).  ``shard=(k, n)`` renders jobs ``k, k+n, ...``
of the job list, so ``n`` machines can each build a part into the same folder; the last one to
finish (or ``consolidate``) writes the arrays.  :func:`load_split` reads a split lazily.

>>> import tempfile
>>> out = simulate(tempfile.mkdtemp(), subjects=2, views=("pa",), per_view=1, size=32,
...                spacing=2.0, fractions=(1, 1, 0), workers=1, progress=False)
>>> load_split(out, "train")[0]["label"].shape
torch.Size([10, 32, 32])
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bonelab.errors import InvalidArgumentError, MissingFileError

FORMAT_VERSION = 1
VIEW_ANGLES = {"pa": 0.0, "oblique": 45.0, "lateral": 90.0}
SPLITS = ("train", "val", "test")

GEOMETRY_JITTER = {
    "angle_deg": (-8.0, 8.0), "tilt_deg": (-8.0, 8.0), "roll_deg": (-12.0, 12.0),
    "sdd_mm": (1000.0, 1150.0), "odd_mm": (30.0, 80.0), "fov_scale": (0.9, 1.1),
    "shift_u_mm": (-5.0, 5.0), "shift_v_mm": (-5.0, 5.0),
}
"""Geometry jitter ranges (uniform), see the module docstring."""

PHYSICS = {
    "random": {
        "kvp": (50, 70), "filtration_mm_al": (2.0, 4.0), "photons": (1e3, 3e4),
        "electronic_sigma": (0.0, 5.0), "scatter_to_primary": (0.05, 0.4), "scatter_sigma_mm": (10.0, 40.0),
        "blur_px": (0.3, 1.2), "gamma": (0.7, 1.4), "window_low_pct": (0.0, 3.0),
        "window_high_pct": (97.0, 100.0),
    },
    "fixed": {
        "kvp": (60, 60), "filtration_mm_al": (2.5, 2.5), "photons": (1e4, 1e4),
        "electronic_sigma": (2.0, 2.0), "scatter_to_primary": (0.2, 0.2), "scatter_sigma_mm": (25.0, 25.0),
        "blur_px": (0.6, 0.6), "gamma": (1.0, 1.0), "window_low_pct": (0.5, 0.5),
        "window_high_pct": (99.5, 99.5),
    },
    "shifted": {
        "kvp": (86, 100), "filtration_mm_al": (5.0, 7.0), "photons": (2e2, 5e2),
        "electronic_sigma": (8.0, 12.0), "scatter_to_primary": (0.6, 0.9), "scatter_sigma_mm": (20.0, 40.0),
        "blur_px": (1.6, 2.2), "gamma": (1.7, 2.2), "window_low_pct": (0.0, 3.0),
        "window_high_pct": (97.0, 100.0),
    },
}
"""Named physics ranges ``{name: {parameter: (low, high)}}`` (see the module docstring)."""

_LOG_UNIFORM = {"photons"}


# --------------------------------------------------------------------------------------------
# Drawing the parameters of one sample
# --------------------------------------------------------------------------------------------
def _physics_ranges(physics) -> dict:
    if isinstance(physics, str):
        if physics not in PHYSICS:
            raise InvalidArgumentError(f"physics {physics!r} is unknown; use one of {sorted(PHYSICS)} or a dict.")
        return PHYSICS[physics]
    missing = set(PHYSICS["random"]) - set(physics)
    if missing:
        raise InvalidArgumentError(f"physics ranges lack {sorted(missing)}; start from dict(PHYSICS['random']).")
    return dict(physics)


def _uniform(rng, lo, hi, log=False) -> float:
    if log:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_physics(ranges: dict, rng: np.random.Generator) -> dict:
    """One setting of every physics parameter drawn from ``ranges``; kVp in 2 kV steps (as
    consoles offer a few settings), which lets a run model few spectra (spekpy takes 0.3-2 s per
    spectrum, more than rendering a sample).

    >>> p = draw_physics(PHYSICS["random"], np.random.default_rng(0))
    >>> 50 <= p["kvp"] <= 70 and 1e3 <= p["photons"] <= 3e4
    True
    """
    p = {k: _uniform(rng, *ranges[k], log=k in _LOG_UNIFORM) for k in PHYSICS["random"]}
    p["kvp"] = float(2 * round(p["kvp"] / 2))
    return p


def draw_geometry(view: str, rng: np.random.Generator, jitter: dict = GEOMETRY_JITTER) -> dict:
    """Pose and acquisition geometry of one sample of ``view`` (angles in degrees, mm).

    >>> g = draw_geometry("lateral", np.random.default_rng(0))
    >>> 82 <= g["angle_deg"] <= 98
    True
    """
    if view not in VIEW_ANGLES:
        raise InvalidArgumentError(f"view {view!r} is unknown; use one of {list(VIEW_ANGLES)}.")
    g = {k: _uniform(rng, *jitter[k]) for k in GEOMETRY_JITTER}
    g["angle_deg"] += VIEW_ANGLES[view]
    return g


# --------------------------------------------------------------------------------------------
# Rendering one sample
# --------------------------------------------------------------------------------------------
def label_center(labels, label_values=None) -> np.ndarray:
    """Centroid (x, y, z) mm LPS of the voxels holding ``label_values`` (default: any label > 0);
    the isocentre the views turn about."""
    arr = np.asarray(labels.array)
    inside = arr > 0 if label_values is None else np.isin(arr, list(label_values))
    if not inside.any():
        raise InvalidArgumentError("the label map is empty: nothing to centre the views on.")
    kji = np.argwhere(inside).mean(axis=0)
    return labels.index_to_world(kji[::-1])


def make_geometry(params: dict, isocenter, *, size: int = 96, fov_mm: float = 75.0):
    """The :class:`bonelab.drr.Geometry` of drawn ``params`` (see :func:`draw_geometry`):
    a C-arm view ``angle_deg`` from PA (source dorsal) with ``tilt_deg``, the detector turned by
    ``roll_deg`` in its plane and shifted by ``shift_u_mm``/``shift_v_mm``, a square detector of
    ``size`` pixels covering ``fov_mm * fov_scale`` at the isocentre.

    >>> g = make_geometry(draw_geometry("pa", np.random.default_rng(0)), (0, 0, 0), size=64)
    >>> g.size
    (64, 64)
    """
    from bonelab.drr import carm

    sdd = params["sdd_mm"]
    sid = sdd - params["odd_mm"]
    mag = sdd / sid
    pixel = params["fov_scale"] * fov_mm * mag / size
    # carm(0) is PA: the source behind the patient (the dorsal side of the wrist in the anatomical
    # position), as in a PA wrist film; 90 is the lateral with the detector on the radial side.
    g = carm(None, params["angle_deg"], params["tilt_deg"], isocenter=isocenter, sid=sid, sdd=sdd,
             size=size, pixel=pixel)
    r = math.radians(params["roll_deg"])
    u = math.cos(r) * g.u + math.sin(r) * g.v
    v = -math.sin(r) * g.u + math.cos(r) * g.v
    shift = mag * (params["shift_u_mm"] * u + params["shift_v_mm"] * v)
    return replace(g, u=u, v=v, detector_center=g.detector_center + shift)


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
    :func:`filtered_spectrum`."""
    from bonelab.drr import physics as ph

    f0 = float(ranges["filtration_mm_al"][0])
    return {float(k): ph.spectrum(float(k), filtration_mm_al=f0, bin_keV=2.0) for k in sorted(set(kvps))}


def radiograph(material_paths, physics: dict, *, pixel_mm: float, seed: int = 0, spectrum=None) -> np.ndarray:
    """A display radiograph (H, W) in [0, 1], bone bright, from material path integrals.

    ``material_paths`` (M, H, W) are the renderer's per-material density integrals in g/cm3 * mm
    (:meth:`bonelab.drr.Renderer.integrals` of a polychromatic renderer); the chain is the one of
    :func:`bonelab.drr.render` with the randomised settings in ``physics``: polychromatic
    Beer-Lambert for ``kvp``/``filtration_mm_al``, scatter, Gaussian blur (focal spot and
    detector), quantum + electronic noise, then the display window and contrast curve.
    The blur is added here (scipy) because the renderer has none.  ``spectrum``: the tube
    spectrum to use (default: modelled by spekpy for ``kvp`` and ``filtration_mm_al``).
    """
    from scipy.ndimage import gaussian_filter

    from bonelab.drr import physics as ph

    spec = spectrum or ph.spectrum(physics["kvp"], filtration_mm_al=physics["filtration_mm_al"], bin_keV=2.0)
    paths = np.asarray(material_paths, dtype=np.float32) / 10.0  # g/cm3 * mm -> g/cm2
    intensity = ph.polychromatic_intensity(paths, spec)
    intensity = ph.add_scatter(intensity, scatter_to_primary=physics["scatter_to_primary"],
                               kernel_sigma_mm=physics["scatter_sigma_mm"], pixel_mm=pixel_mm)
    intensity = gaussian_filter(intensity, physics["blur_px"], mode="nearest")
    intensity = ph.add_noise(intensity, photons_per_pixel=physics["photons"],
                             electronic_sigma=physics["electronic_sigma"], seed=seed)
    image = ph.to_radiograph(np.clip(intensity, 1e-6, None),
                             percentiles=(physics["window_low_pct"], physics["window_high_pct"]),
                             gamma=physics["gamma"])
    return image.astype(np.float32)


def render_sample(renderer, labels, label_values, geometry, physics: dict, *, seed: int = 0,
                  min_mm: float = 0.5, spectrum=None):
    """Image (1, H, W) float32 and masks (L, H, W) uint8 of one geometry, hung fingers-up
    (turned by 180 degrees).  ``renderer`` is a polychromatic :class:`bonelab.drr.Renderer`
    (any ``kvp``: only its material integrals are used); a mask pixel is in a bone where the ray
    crosses at least ``min_mm`` of it."""
    from bonelab.drr import label_masks, project_labels

    ints = renderer.integrals(geometry)[0].numpy()
    image = radiograph(ints, physics, pixel_mm=geometry.pixel[0], seed=seed, spectrum=spectrum)
    paths, _ = project_labels(labels, geometry, label_values=label_values)
    masks = label_masks(paths, min_mm=min_mm).numpy().astype(np.uint8)
    return np.ascontiguousarray(image[None, ::-1, ::-1]), np.ascontiguousarray(masks[:, ::-1, ::-1])


# --------------------------------------------------------------------------------------------
# Jobs, workers, files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One sample to render: subject index, its split, view, repeat ``k`` and the sample seed."""

    subject: int
    split: str
    view: str
    k: int
    seed: int

    @property
    def subject_id(self) -> str:
        return f"s{self.subject:04d}"

    @property
    def file(self) -> str:
        return f"samples/{self.subject_id}_{self.view}_{self.k:03d}.npz"


def plan(n_subjects: int, *, views=tuple(VIEW_ANGLES), per_view: int = 1, seed: int = 0,
         fractions=(0.7, 0.15, 0.15), splits=SPLITS) -> list[Job]:
    """Every sample of a data set, in order: subjects are split first (by subject, with
    :func:`bonelab.phantoms.split_subjects`), then each subject of a kept split gets ``per_view``
    samples of each view.  Sample seeds depend only on (seed, subject, view, k).

    >>> jobs = plan(4, views=("pa", "lateral"), per_view=2, fractions=(1, 1, 0))
    >>> len(jobs), sorted({j.split for j in jobs})
    (16, ['train', 'val'])
    """
    from bonelab.phantoms import split_subjects

    for v in views:
        if v not in VIEW_ANGLES:
            raise InvalidArgumentError(f"view {v!r} is unknown; use any of {list(VIEW_ANGLES)}.")
    if per_view < 1:
        raise InvalidArgumentError(f"per_view must be >= 1; got {per_view}.")
    bad = set(splits) - set(SPLITS)
    if bad:
        raise InvalidArgumentError(f"splits {sorted(bad)} are unknown; use a subset of {SPLITS}.")
    parts = split_subjects(n_subjects, fractions, seed=seed)
    split_of = {i: s for s, idx in parts.items() for i in idx}
    jobs = []
    for i in range(n_subjects):
        if split_of[i] not in splits:
            continue
        for vi, v in enumerate(VIEW_ANGLES):
            if v not in views:
                continue
            for k in range(per_view):
                s = int(np.random.SeedSequence([int(seed), i, vi, k]).generate_state(1)[0])
                jobs.append(Job(i, split_of[i], v, k, s))
    return jobs


def parse_shard(text) -> tuple[int, int]:
    """``"k/n"`` (or a (k, n) pair) -> (k, n) with 0 <= k < n.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        k, n = (int(x) for x in (text.split("/") if isinstance(text, str) else text))
    except (ValueError, TypeError):
        raise InvalidArgumentError(f"shard must look like k/n (e.g. 0/4); got {text!r}.") from None
    if not 0 <= k < n:
        raise InvalidArgumentError(f"shard k/n needs 0 <= k < n; got {k}/{n}.")
    return k, n


def _subject(kind: str, index: int, seed: int, spacing: float):
    """Phantom ``index`` of the cohort of ``kind`` drawn with ``seed`` (see phantoms.cohort)."""
    from bonelab.phantoms import GENERATORS, subject_seed

    return GENERATORS[kind](subject_seed(seed, index), spacing=spacing)


def _write_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _job_rng(job: Job):
    """Independent generators for a job's geometry and physics (so either can be redrawn alone)."""
    a, b = np.random.SeedSequence(job.seed).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def _render_subject(task) -> list[dict]:
    """Worker: generate (or take) one subject and render its pending jobs; returns their metadata."""
    from bonelab.drr import Renderer

    out, jobs, settings, subject = task
    if subject is None:
        subject = _subject(settings["kind"], jobs[0].subject, settings["seed"], settings["spacing"])
    subj = subject
    renderer = Renderer(subj.ct, kvp=60.0, device="cpu")
    values = [int(v) for v in settings["label_values"]]
    iso = label_center(subj.labels, settings["center_labels"])
    rows = []
    for job in jobs:
        geo_rng, phys_rng = _job_rng(job)
        geo = draw_geometry(job.view, geo_rng)
        phys = draw_physics(settings["physics"], phys_rng)
        g = make_geometry(geo, iso, size=settings["size"], fov_mm=settings["fov_mm"])
        spec = filtered_spectrum(settings["spectra"][phys["kvp"]], phys["filtration_mm_al"])
        image, label = render_sample(renderer, subj.labels, values, g, phys, seed=job.seed % 2**32,
                                     min_mm=settings["min_mm"], spectrum=spec)
        row = {"split": job.split, "subject": job.subject_id, "view": job.view, "k": job.k, "seed": job.seed,
               **{k: round(v, 4) for k, v in geo.items()}, "pixel_mm": round(g.pixel[0], 5),
               "magnification": round(geo["sdd_mm"] / (geo["sdd_mm"] - geo["odd_mm"]), 4),
               **{k: round(v, 4) for k, v in phys.items()}, "file": job.file}
        _write_npz(Path(out) / job.file, image=image, label=label, meta=json.dumps(row))
        rows.append(row)
    return rows


def _tasks(out: Path, jobs: list[Job], settings: dict, source) -> list:
    """Pending jobs grouped by subject (a subject is generated once per task)."""
    by_subject: dict[int, list[Job]] = {}
    for j in jobs:
        if not (out / j.file).exists():
            by_subject.setdefault(j.subject, []).append(j)
    return [(str(out), js, settings, None if source is None else source[i]) for i, js in sorted(by_subject.items())]


def _one_thread() -> None:
    """Pool initializer: one torch/numba thread per worker process (one process per core)."""
    import torch

    torch.set_num_threads(1)


def _run_tasks(tasks, workers: int, progress: bool, n_samples: int) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=n_samples, desc="simulate", unit="sample", disable=not progress)
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            bar.update(len(_render_subject(t)))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_one_thread) as pool:
            for rows in pool.imap_unordered(_render_subject, tasks):
                bar.update(len(rows))
    bar.close()


# --------------------------------------------------------------------------------------------
# The public entry points
# --------------------------------------------------------------------------------------------
def simulate(out, *, subjects=20, views=tuple(VIEW_ANGLES), per_view: int = 1, size: int = 96,
             fov_mm: float = 75.0, spacing: float = 0.75, physics="random", seed: int = 0,
             fractions=(0.7, 0.15, 0.15), splits=SPLITS, kind: str = "wrist", center_labels=None,
             min_mm: float = 0.5, workers: int = 2, shard=None, consolidate_when_done: bool = True,
             progress: bool = True) -> Path:
    """Render a data set of radiographs with projected bone masks into folder ``out``.

    Parameters
    ----------
    out : path of the data set folder (created; an existing one is resumed)
    subjects : int (a cohort of ``kind`` phantoms drawn with ``seed``) or a list of
        :class:`bonelab.phantoms.Subject` (your own labelled CTs; same label table for all)
    views : any of ``"pa"``, ``"oblique"``, ``"lateral"``
    per_view : samples (independent jitter and physics) per subject and view
    size : detector pixels (square), ``fov_mm`` : field of view at the isocentre (mm)
    spacing : voxel size (mm) of generated phantoms
    physics : a name in :data:`PHYSICS` or a dict of ranges
    seed : subjects, split and every sample's jitter, physics and noise derive from it
    fractions, splits : subject split (train, val, test) and which splits to render
    center_labels : label values whose centroid is the isocentre (default: carpals 1-8 for the
        wrist, all labels otherwise)
    min_mm : a mask pixel is inside a bone where the ray crosses at least this much of it
    workers : processes (one subject per task)
    shard : ``"k/n"`` or (k, n): render only jobs k, k+n, ... (for several machines)
    consolidate_when_done : write the split arrays once every job of the data set is on disk

    Returns
    -------
    Path of the data set folder.
    """
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    source = None if isinstance(subjects, (int, np.integer)) else list(subjects)
    n = int(subjects) if source is None else len(source)
    if n < 1:
        raise InvalidArgumentError(f"subjects must be >= 1 (or a non-empty list); got {subjects!r}.")
    names = _label_names(kind, source)
    if center_labels is None and kind == "wrist" and source is None:
        center_labels = list(range(1, 9))
    settings = {"kind": kind, "seed": int(seed), "spacing": float(spacing), "size": int(size),
                "fov_mm": float(fov_mm), "physics": _physics_ranges(physics), "min_mm": float(min_mm),
                "label_values": sorted(names), "center_labels": center_labels}
    jobs = plan(n, views=views, per_view=per_view, seed=seed, fractions=fractions, splits=splits)
    mine = _shard(jobs, shard)
    _write_json(out / "dataset.json", {
        "version": FORMAT_VERSION, "kind": kind, "n_subjects": n, "views": list(views), "per_view": per_view,
        "seed": int(seed), "fractions": list(fractions), "splits": list(splits), "H": int(size), "W": int(size),
        "label_names": [names[v] for v in sorted(names)], "label_values": sorted(names),
        "fov_mm": float(fov_mm), "spacing_mm": float(spacing), "physics": settings["physics"],
        "geometry_jitter": GEOMETRY_JITTER, "min_mm": float(min_mm), "n_samples": len(jobs),
        "pixel_spacing_mm_at_isocenter": float(fov_mm) / int(size), "consolidated": False,
    })
    tasks = _tasks(out, mine, settings, source)
    # Spectra are modelled once here, for the kVps the pending jobs draw, and sent to the workers.
    kvps = [draw_physics(settings["physics"], _job_rng(j)[1])["kvp"] for t in tasks for j in t[1]]
    settings["spectra"] = base_spectra(kvps, settings["physics"])
    _run_tasks(tasks, workers, progress, sum(len(t[1]) for t in tasks))
    if consolidate_when_done and all((out / j.file).exists() for j in jobs):
        consolidate(out, jobs)
    return out


def _shard(jobs: list, shard) -> list:
    if shard is None:
        return jobs
    k, n = parse_shard(shard)
    return jobs[k::n]


def _label_names(kind: str, source) -> dict:
    if source is not None:
        names = {int(k): v for k, v in source[0].label_names.items() if int(k) != 0}
    else:
        from bonelab.phantoms import GENERATORS

        if kind not in GENERATORS:
            raise InvalidArgumentError(f"kind {kind!r} is unknown; use one of {sorted(GENERATORS)}.")
        names = {int(k): v for k, v in GENERATORS[kind](0, spacing=4.0).label_names.items() if int(k) != 0}
    return names


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def consolidate(out, jobs: list[Job] | None = None) -> Path:
    """Gather the sample files of ``out`` into per-split arrays and ``metadata.csv``.

    Reads the job list from ``dataset.json`` when ``jobs`` is None; raises
    :class:`MissingFileError` naming the first missing sample (render it: run simulate again).
    """
    out = Path(out)
    info = json.loads((out / "dataset.json").read_text())
    if jobs is None:
        jobs = plan(info["n_subjects"], views=info["views"], per_view=info["per_view"], seed=info["seed"],
                    fractions=info["fractions"], splits=info["splits"])
    missing = [j.file for j in jobs if not (out / j.file).exists()]
    if missing:
        raise MissingFileError(f"{len(missing)} samples of {out} are missing (first: {missing[0]}); "
                               "run simulate again with the same settings to render them.")
    rows = []
    n_labels, h, w = len(info["label_values"]), info["H"], info["W"]
    for split in SPLITS:
        js = [j for j in jobs if j.split == split]
        if not js:
            continue
        images = np.lib.format.open_memmap(out / f".{split}_images.tmp.npy", "w+", np.float32, (len(js), 1, h, w))
        labels = np.lib.format.open_memmap(out / f".{split}_labels.tmp.npy", "w+", np.uint8, (len(js), n_labels, h, w))
        for i, j in enumerate(js):
            with np.load(out / j.file) as z:
                images[i], labels[i] = z["image"], z["label"]
                rows.append(json.loads(str(z["meta"])))
        images.flush(), labels.flush()
        del images, labels
        os.replace(out / f".{split}_images.tmp.npy", out / f"{split}_images.npy")
        os.replace(out / f".{split}_labels.tmp.npy", out / f"{split}_labels.npy")
    tmp = out / ".metadata.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "metadata.csv")
    _write_json(out / "dataset.json", {**info, "consolidated": True})
    return out


def read_metadata(out, split: str | None = None) -> list[dict]:
    """Rows of ``metadata.csv`` (numbers converted), optionally of one split, in array order."""
    path = Path(out) / "metadata.csv"
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; run bonelab.simulate.simulate (or consolidate) first.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            try:
                r[k] = float(v) if k not in ("subject", "seed", "k") else (int(v) if k != "subject" else v)
            except ValueError:
                pass
    return [r for r in rows if split is None or r["split"] == split]


def load_split(out, split: str, transform=None):
    """A :class:`bonelab.train.DictDataset` of one split, read lazily (numpy memmaps).

    Samples: ``image`` (1, H, W) float32 in [0, 1], ``label`` (L, H, W) in {0, 1}.
    """
    from bonelab.train import DictDataset

    out = Path(out)
    paths = [out / f"{split}_images.npy", out / f"{split}_labels.npy"]
    for p in paths:
        if not p.exists():
            raise MissingFileError(f"{p} does not exist; simulate the {split!r} split (and consolidate) first.")
    return DictDataset(np.load(paths[0], mmap_mode="r"), np.load(paths[1], mmap_mode="r"), transform=transform)


def dataset_info(out) -> dict:
    """The ``dataset.json`` of a data set folder."""
    path = Path(out) / "dataset.json"
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; is {out} a bonelab simulate folder?")
    return json.loads(path.read_text())


def hidden_fraction(masks) -> np.ndarray:
    """For each channel of (L, H, W) masks, the fraction of its pixels also covered by another
    channel (the part of a bone seen through, or hidden behind, another); NaN for empty ones.

    >>> m = np.zeros((2, 4, 4), bool); m[0, :2] = True; m[1, 1:] = True
    >>> hidden_fraction(m).round(3).tolist()
    [0.5, 0.333]
    """
    m = np.asarray(masks) > 0
    count = m.sum(axis=0)
    area = m.sum(axis=(1, 2)).astype(float)
    shared = (m & (count >= 2)[None]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, shared / area, np.nan)


# --------------------------------------------------------------------------------------------
# Command line: bonelab simulate wrist --subjects N --out DIR
# --------------------------------------------------------------------------------------------
def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bonelab simulate``."""
    parser.add_argument("kind", choices=["wrist"], help="phantom kind (wrist)")
    parser.add_argument("--subjects", type=int, default=20, help="number of virtual subjects (20)")
    parser.add_argument("--out", required=True, metavar="DIR", help="data set folder (resumed if it exists)")
    parser.add_argument("--views", nargs="+", default=list(VIEW_ANGLES), choices=list(VIEW_ANGLES))
    parser.add_argument("--per-view", type=int, default=1, help="samples per subject and view (1)")
    parser.add_argument("--size", type=int, default=96, help="detector pixels, square (96)")
    parser.add_argument("--fov", type=float, default=75.0, metavar="MM", help="field of view at the isocentre (75)")
    parser.add_argument("--spacing", type=float, default=0.75, metavar="MM", help="phantom voxel size (0.75)")
    parser.add_argument("--physics", default="random", choices=sorted(PHYSICS), help="physics ranges (random)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard", metavar="K/N", help="render only jobs K, K+N, ... (several machines)")


def run_simulate(args) -> int:
    """Run ``bonelab simulate`` from parsed arguments; prints samples per second."""
    start = time.perf_counter()
    jobs = plan(args.subjects, views=args.views, per_view=args.per_view, seed=args.seed, splits=args.splits)
    out = simulate(args.out, subjects=args.subjects, views=tuple(args.views), per_view=args.per_view,
                   size=args.size, fov_mm=args.fov, spacing=args.spacing, physics=args.physics, seed=args.seed,
                   splits=tuple(args.splits), workers=args.workers, shard=args.shard)
    seconds = time.perf_counter() - start
    n = len(_shard(jobs, args.shard))
    print(f"{n} samples in {seconds:.1f} s ({n / seconds:.2f} samples/s) -> {out}")
    print("consolidated" if dataset_info(out)["consolidated"] else "not consolidated yet (other shards pending)")
    return 0
