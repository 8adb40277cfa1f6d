"""Labelled CT -> simulated radiograph data sets on disk, for any anatomy and any target.

For every subject (virtual subjects from :mod:`bonelab.phantoms`, or a reader's own labelled
CTs) :func:`simulate` renders the views of an anatomy's :class:`Protocol` (how that anatomy is
radiographed and how its films are hung, :mod:`bonelab.simulate.protocols`), each sample with
random positioning and randomised physics (:mod:`bonelab.simulate.physics`: domain
randomisation), and stores the radiograph next to a target (:mod:`bonelab.simulate.targets`):
multi-label masks, a bone-only radiograph, instances for detection models, or a class map.
The format (:mod:`bonelab.simulate.dataset`) records the target's name and dtype, and the size
and checksum of every array, checked on load.

Modules: ``protocols`` (views, hanging, geometry draws), ``physics`` (the acquisition chain of
one sample), ``targets`` (target plug-ins), ``jobs`` (sample list, shards, workers),
``dataset`` (files, consolidation, loading), ``command`` (``bonelab simulate``).

Sample files are written to a temporary name and renamed, so an interrupted run leaves only
whole samples; running again skips them (resume).  ``shard=(k, n)`` renders jobs ``k, k+n, ...``
of the job list, so ``n`` machines can each build a part into the same folder; the last one to
finish (or :func:`consolidate`) writes the arrays.  :func:`load_split` reads a split lazily.

>>> import tempfile
>>> out = simulate(tempfile.mkdtemp(), "wrist", subjects=2, views=("pa",), size=32, spacing=2.0,
...                fractions=(1, 1, 0), workers=1, progress=False)
>>> load_split(out, "train")[0]["label"].shape
torch.Size([10, 32, 32])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonelab.errors import InvalidArgumentError
from bonelab.metrics import hidden_fraction
from bonelab.simulate.dataset import (
    FORMAT_VERSION,
    SimulatedSplit,
    consolidate,
    dataset_info,
    load_split,
    metadata,
    read_metadata,
)
from bonelab.simulate.jobs import (
    SPLITS,
    Job,
    SubjectFiles,
    generate_subject,
    label_center,
    parse_shard,
    plan,
    render_sample,
    shard_jobs,
)
from bonelab.simulate.physics import base_spectra, draw_physics, filtered_spectrum, radiograph
from bonelab.simulate.protocols import (
    PROTOCOLS,
    Protocol,
    View,
    display_flips,
    draw_geometry,
    film_directions,
    hung_projection,
    make_geometry,
    nominal_geometry,
    preview,
    protocol,
    register_protocol,
    view_geometry,
)
from bonelab.simulate.targets import TARGETS, Target, make_target

__all__ = [
    "FORMAT_VERSION", "PROTOCOLS", "SPLITS", "TARGETS", "Job", "Protocol", "SimulatedSplit", "SubjectFiles",
    "Target", "View", "base_spectra", "consolidate", "dataset_info", "display_flips", "draw_geometry",
    "draw_physics", "film_directions", "filtered_spectrum", "generate_subject", "hidden_fraction", "hung_projection", "label_center", "load_split", "make_geometry",
    "make_target", "metadata", "nominal_geometry", "parse_shard", "plan", "preview", "protocol", "radiograph",
    "read_metadata", "register_protocol", "render_sample", "shard_jobs", "simulate", "view_geometry",
]


def simulate(out, protocol_name="wrist", *, subjects=20, target="masks", views=None, per_view: int = 1,
             size: int | None = None, spacing: float | None = None, physics="random", seed: int = 0,
             fractions=(0.7, 0.15, 0.15), splits=SPLITS, min_mm: float = 0.5, bone="labels", workers: int = 2,
             shard=None, consolidate_when_done: bool = True, progress: bool = True) -> Path:
    """Render a data set of radiographs and targets into folder ``out``.

    Parameters
    ----------
    out : path of the data set folder (created; an existing one with the same settings is resumed)
    protocol_name : a name in :data:`PROTOCOLS` (``"wrist"``, ``"chest"``, ``"lumbar"``, ``"hip"``,
        ``"localizer"``)
        or a :class:`Protocol`
    subjects : int (a cohort of the protocol's phantoms drawn with ``seed``), or a list of
        :class:`bonelab.phantoms.Subject` / :class:`SubjectFiles` (your own labelled CTs; the
        first one's label names must hold every label used)
    target : ``"masks"``, ``"bone-radiograph"``, ``"instances"``, ``"class-map"`` (or a :class:`Target`)
    views : any of the protocol's views (default: all)
    per_view : samples (independent jitter and physics) per subject and view
    size : detector pixels, square (default: the protocol's)
    spacing : voxel size (mm) of generated phantoms (default: the protocol's)
    physics : ``"random"``, ``"fixed"``, ``"shifted"`` (the protocol's ranges) or a dict of ranges
    seed : subjects, split and every sample's jitter, physics and noise derive from it
    fractions, splits : subject split (train, val, test) and which splits to render
    min_mm : a structure covers a pixel where the ray crosses at least this much of it (mm)
    bone : for the bone-radiograph target: ``"labels"`` (the protocol's structures) or an HU window
    workers : processes (one subject per task)
    shard : ``"k/n"`` or (k, n): render only jobs k, k+n, ... (for several machines)
    consolidate_when_done : write the split arrays once every job of the data set is on disk

    Returns
    -------
    Path of the data set folder.

    Every argument is checked before any file is written.
    """
    from bonelab.files import write_json
    from bonelab.simulate.jobs import pending_tasks, run_tasks

    p = protocol(protocol_name)
    views = tuple(p.views) if views is None else tuple(views)
    size = p.size if size is None else size
    spacing = p.spacing_mm if spacing is None else spacing
    _check_numbers(size=size, spacing=spacing, per_view=per_view, workers=workers)
    the_target = make_target(target, min_mm=min_mm, **({"bone": bone} if target == "bone-radiograph" else {}))
    ranges = p.physics_ranges(physics)
    source = None if isinstance(subjects, (int, np.integer)) else list(subjects)
    n = int(subjects) if source is None else len(source)
    if n < 1:
        raise InvalidArgumentError(f"subjects must be >= 1 (or a non-empty list); got {subjects!r}.")
    if source is None and p.phantom is None:
        raise InvalidArgumentError(f"protocol {p.name!r} has no phantom; give your own subjects (a list).")
    jobs = plan(n, views=views, all_views=list(p.views), per_view=per_view, seed=seed, fractions=fractions,
                splits=splits)
    mine = shard_jobs(jobs, shard)
    structures = p.select(_label_names(p, source))
    if not structures:
        raise InvalidArgumentError(f"no label of the subjects matches protocol {p.name!r}'s structures "
                                   f"({p.structures}); check the label names.")
    names = list(structures.values())
    center = list(p.select(structures, p.center)) or list(structures)
    info = {
        "version": FORMAT_VERSION, "protocol": p.name, "views": list(views), "all_views": list(p.views),
        "per_view": per_view, "seed": int(seed), "fractions": list(fractions), "splits": list(splits),
        "n_subjects": n, "source": "phantoms" if source is None else "subjects", "H": int(size), "W": int(size),
        "label_names": names, "label_values": list(structures), "center_values": center,
        "target": {**the_target.settings(), "channels": the_target.channels(len(names)),
                   "class_names": p.class_names(names), "class_ids": p.class_ids(names), "on_top": list(p.on_top)},
        "physics": ranges, "spacing_mm": float(spacing), "fov_mm": list(p.fov_mm), "sdd_mm": list(p.sdd_mm),
        "odd_mm": list(p.odd_mm), "jitter": p.jitter, "grid": p.grid, "subject_options": p.subject_options,
        "pixel_spacing_mm_at_isocenter": float(np.mean(p.fov_mm)) / int(size), "n_samples": len(jobs),
        "consolidated": False,
    }
    out = Path(out)
    _check_folder(out, info)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    write_json(out / "dataset.json", info)
    settings = {"protocol": p.name, "seed": int(seed), "spacing": float(spacing), "size": int(size), "grid": p.grid,
                "physics": ranges, "label_values": list(structures), "center_values": center,
                "target": the_target.settings(),
                "class_ids": info["target"]["class_ids"],
                "on_top": [info["target"]["class_names"].index(c) + 1 for c in p.on_top if c in info["target"]["class_names"]]}
    tasks = pending_tasks(out, mine, settings, source)
    # Spectra are modelled once here, for the kVps the pending jobs draw, and sent to the workers.
    from bonelab.simulate.jobs import job_rngs

    kvps = [draw_physics(ranges, job_rngs(j)[1])["kvp"] for t in tasks for j in t[1]]
    settings["spectra"] = base_spectra(kvps, ranges)
    run_tasks(tasks, workers, progress, sum(len(t[1]) for t in tasks))
    if consolidate_when_done and all((out / j.file).exists() for j in jobs):
        consolidate(out, jobs)
    return out


def _check_numbers(**values) -> None:
    rules = {"size": (8, "detector pixels"), "spacing": (0.1, "mm"), "per_view": (1, "samples"), "workers": (1, "processes")}
    for name, value in values.items():
        low, unit = rules[name]
        try:
            ok = float(value) >= low
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidArgumentError(f"{name} must be a number >= {low} ({unit}); got {value!r}.")


_SETTINGS_KEYS = ("version", "protocol", "views", "per_view", "seed", "fractions", "splits", "n_subjects", "H",
                  "W", "label_names", "target", "physics", "spacing_mm")


def _check_folder(out: Path, info: dict) -> None:
    """An existing folder is resumed only when it holds a data set with the same settings."""
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{out} is a file; give a folder for the data set.")
    if not (out / "dataset.json").exists():
        return
    old = dataset_info(out)
    changed = [k for k in _SETTINGS_KEYS if _json_normal(old.get(k)) != _json_normal(info[k])]
    if changed:
        raise InvalidArgumentError(f"{out} holds a data set with other settings ({', '.join(changed)}); "
                                   "use a new folder, or the same settings to resume it.")


def _json_normal(value):
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    import json

    return json.loads(json.dumps(value))


def _label_names(p: Protocol, source) -> dict:
    """Label names of the subjects: the first given subject's, or a small phantom's."""
    if source is None:
        import importlib

        from bonelab.phantoms import GENERATORS

        return dict(importlib.import_module(GENERATORS[p.phantom].__module__).LABELS)
    first = source[0]
    if isinstance(first, SubjectFiles):
        return dict(first.read_labels().label_names)
    return dict(first.label_names)
