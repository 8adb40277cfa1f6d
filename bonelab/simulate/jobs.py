"""Jobs of a simulation run: the sample list, shards, subjects, and the worker that renders.

A job is one sample: (subject, split, view, repeat k, seed).  :func:`plan` lists every job of a
data set; ``shard=(k, n)`` keeps jobs k, k+n, ... so n machines can share one folder; a worker
generates (or reads) one subject and renders its pending jobs, writing one sample file each
(atomically: an interrupted run leaves only whole samples, and a second run skips them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonelab.errors import InvalidArgumentError
from bonelab.simulate.protocols import display_flips, draw_geometry, draw_subject_options, make_geometry, protocol

SPLITS = ("train", "val", "test")


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


def plan(n_subjects: int, *, views, all_views=None, per_view: int = 1, seed: int = 0,
         fractions=(0.7, 0.15, 0.15), splits=SPLITS) -> list[Job]:
    """Every sample of a data set, in order: subjects are split first (by subject, with
    :func:`bonelab.phantoms.split_subjects`), then each subject of a kept split gets ``per_view``
    samples of each of ``views``.  Sample seeds depend only on (seed, subject, the view's index
    in ``all_views`` (the protocol's view order; default ``views``), k).

    >>> jobs = plan(4, views=("pa", "lateral"), per_view=2, fractions=(1, 1, 0))
    >>> len(jobs), sorted({j.split for j in jobs})
    (16, ['train', 'val'])
    """
    from bonelab.phantoms import split_subjects

    all_views = list(views if all_views is None else all_views)
    for v in views:
        if v not in all_views:
            raise InvalidArgumentError(f"view {v!r} is unknown; use any of {all_views}.")
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
        for vi, v in enumerate(all_views):
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


def shard_jobs(jobs: list, shard) -> list:
    """The jobs of ``shard`` (all of them for None)."""
    if shard is None:
        return jobs
    k, n = parse_shard(shard)
    return jobs[k::n]


def job_rngs(job: Job):
    """Independent generators for a job's geometry and physics (so either can be redrawn alone)."""
    a, b = np.random.SeedSequence(job.seed).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


# --------------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubjectFiles:
    """A reader's labelled CT on disk: a CT (file or DICOM folder), a label map on its grid (e.g.
    a TotalSegmentator multi-label output) and optionally the label names (a ``.json`` file
    ``{"value": "name"}`` or a ``.csv`` with columns ``value,name``; NIfTI label maps carry no
    names); read in the worker that renders it."""

    ct: str
    labels: str
    names: str | None = None

    def label_names(self) -> dict | None:
        """``{value: name}`` from the names file (None without one)."""
        from bonelab.errors import UnreadableFileError

        if self.names is None:
            return None
        path = Path(self.names)
        try:
            if path.suffix.lower() == ".json":
                return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
            import pandas as pd

            table = pd.read_csv(path)
            return {int(v): str(n) for v, n in zip(table.iloc[:, 0], table.iloc[:, 1])}
        except (OSError, ValueError, IndexError) as error:
            raise UnreadableFileError(f"cannot read label names from {path} ({error}); give a .json "
                                      '{"1": "name", ...} or a .csv with columns value,name.') from None

    def read_labels(self, like=None):
        from bonelab import io

        return io.read_labels(self.labels, like=like, resample=like is not None, label_names=self.label_names())

    def load(self):
        from bonelab import io
        from bonelab.phantoms import Subject

        ct = io.read_ct(self.ct, verbose=False)
        labels = self.read_labels(like=ct)
        return Subject(ct, labels, dict(labels.label_names), {}, kind="files")


def subject_options(p, seed: int, index: int) -> dict:
    """The generator options (side, posture, ...) of generated subject ``index``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 7919]))
    return draw_subject_options(p, rng)


def generate_subject(p, index: int, seed: int, spacing: float):
    """Phantom ``index`` of the protocol's cohort drawn with ``seed``, with the protocol's
    per-subject options (e.g. a wrist's side and posture) drawn from a stream of their own."""
    from bonelab.phantoms import GENERATORS, subject_seed
    from bonelab.phantoms.subject import extend_z

    options = subject_options(p, seed, index)
    subject = GENERATORS[p.phantom](subject_seed(seed, index), spacing=spacing, **options)
    subject.params.setdefault("options", options)
    return extend_z(subject, p.extend_z_mm)


def label_center(labels, label_values=None) -> np.ndarray:
    """Centroid (x, y, z) mm LPS of the voxels holding ``label_values`` (default: any label > 0);
    the isocentre the views turn about."""
    arr = np.asarray(labels.array)
    inside = arr > 0 if label_values is None else np.isin(arr, list(label_values))
    if not inside.any():
        raise InvalidArgumentError("the label map is empty: nothing to centre the views on.")
    kji = np.argwhere(inside).mean(axis=0)
    return labels.index_to_world(kji[::-1])


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def render_sample(renderer, subject, geometry, physics: dict, settings: dict, target, state, *, seed: int,
                  spectrum):
    """Image (1, H, W) float32 in [0, 1] and the target array of one geometry (a hung film's:
    :func:`bonelab.simulate.make_geometry` with ``flips``)."""
    from bonelab.drr import project_labels
    from bonelab.simulate.physics import radiograph
    from bonelab.simulate.targets import RenderedView

    ints = renderer.integrals(geometry)[0].numpy()
    image, window = radiograph(ints, physics, pixel_mm=geometry.pixel[0], seed=seed, spectrum=spectrum,
                               grid=settings["grid"])
    paths, _ = project_labels(subject.labels, geometry, label_values=settings["label_values"])
    view = RenderedView(paths.numpy(), physics, window, spectrum, geometry, state, material_paths=ints)
    out = target.compute(view, settings["class_ids"], settings["on_top"])
    return image[None], out


def render_subject(task) -> list[dict]:
    """Worker: generate (or read) one subject and render its pending jobs; returns their metadata."""
    from bonelab.drr import Renderer
    from bonelab.files import save_npz
    from bonelab.simulate.physics import dose, draw_physics, filtered_spectrum
    from bonelab.simulate.targets import target_from_settings

    out, jobs, settings, source = task
    p = protocol(settings["protocol"])
    if source is None:
        subject = generate_subject(p, jobs[0].subject, settings["seed"], settings["spacing"])
    else:
        subject = source.load() if isinstance(source, SubjectFiles) else source
    target = target_from_settings(settings["target"])
    mirrored = p.is_mirrored(subject)
    renderer = Renderer(subject.ct, kvp=60.0, device="cpu")
    state = target.prepare(subject, settings["label_values"])
    iso = label_center(subject.labels, settings["center_values"])
    rows, flips = [], {}
    for job in jobs:
        geo_rng, phys_rng = job_rngs(job)
        geo = draw_geometry(p, job.view, geo_rng, mirrored)
        phys = draw_physics(settings["physics"], phys_rng)
        if job.view not in flips:
            flips[job.view] = display_flips(p, job.view, mirrored)
        g = make_geometry(geo, iso, size=settings["size"], flips=flips[job.view], kind=p.views[job.view].kind)
        spec = filtered_spectrum(settings["spectra"][phys["kvp"]], phys["filtration_mm_al"])
        image, target_array = render_sample(renderer, subject, g, phys, settings, target, state,
                                            seed=job.seed % 2**32, spectrum=spec)
        row = {"split": job.split, "subject": job.subject_id, "view": job.view, "k": job.k, "seed": job.seed,
               "side": subject.params.get("side", ""), **{k: round(v, 4) for k, v in geo.items()},
               "pixel_mm": round(g.pixel[0], 5), "pixel_mm_at_isocenter": round(geo["fov_mm"] / settings["size"], 5),
               "magnification": round(geo["sdd_mm"] / (geo["sdd_mm"] - geo["odd_mm"]), 4),
               **{k: round(v, 4) for k, v in phys.items() if k != "postprocess"},
               **{k: round(v, 4) for k, v in dose(spec, phys, sdd_mm=geo["sdd_mm"], sid_mm=geo["sdd_mm"] - geo["odd_mm"],
                                                   pixel_mm=g.pixel[0]).items()},
               "grid": int(settings["grid"]), "postprocess": json.dumps(phys["postprocess"]), "file": job.file}
        save_npz(Path(out) / job.file, image=image, target=target_array, meta=json.dumps(row))
        rows.append(row)
    return rows


def pending_tasks(out: Path, jobs: list[Job], settings: dict, source) -> list:
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


def run_tasks(tasks, workers: int, progress: bool, n_samples: int) -> None:
    """Render ``tasks`` in ``workers`` processes (in this one for a single worker), with a bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_samples, desc="simulate", unit="sample", disable=not progress)
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            bar.update(len(render_subject(t)))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_one_thread) as pool:
            for rows in pool.imap_unordered(render_subject, tasks):
                bar.update(len(rows))
    bar.close()
