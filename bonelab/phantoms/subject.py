"""`Subject` (one generated CT with its labels) and reproducible cohorts of subjects."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bonelab.errors import InvalidArgumentError
from bonelab.volume import Volume


@dataclass(eq=False)
class Subject:
    """One virtual subject.

    Attributes
    ----------
    ct : Volume
        CT in HU (float32), arrays ``(z, y, x)``, geometry LPS mm.
    labels : Volume
        Integer label map (uint8) on the same grid, ``label_names`` set.
    label_names : dict
        ``{value: name}``; 0 is background (and unlabelled tissue, including unlabelled bone).
    params : dict
        The parameters drawn for this subject (sizes in mm, angles in degrees, HU values).
    kind : str
        ``"wrist"``, ``"lumbar_spine"``, ``"hip"`` or ``"chest"``.
    """

    ct: Volume
    labels: Volume
    label_names: dict
    params: dict = field(default_factory=dict)
    kind: str = ""

    def __repr__(self) -> str:
        return (f"Subject(kind={self.kind!r}, shape(z,y,x)={self.ct.shape}, "
                f"spacing={self.ct.spacing} mm, labels={len(self.label_names)})")


def check_inputs(kind: str, seed, spacing, smallest: float) -> float:
    """Validate a generator's ``seed`` (integer >= 0) and ``spacing`` (mm, at least ``smallest``
    so that the grid fits in memory); returns the spacing as a float."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"{kind}: seed must be an integer >= 0; got {seed!r}.")
    try:
        spacing = float(spacing)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{kind}: spacing must be one number in mm; got {spacing!r}.") from None
    if not np.isfinite(spacing) or spacing < smallest:
        raise InvalidArgumentError(
            f"{kind}: spacing={spacing} mm is below {smallest} mm (the volume would not fit in memory); "
            f"use a spacing of {smallest} mm or more."
        )
    return spacing


def make_subject(kind, hu, labels, grid, label_names, params) -> Subject:
    """Wrap arrays painted on a grid into a :class:`Subject` (identity direction, LPS)."""
    spacing, origin = tuple(grid.spacing), tuple(grid.origin)
    names = {0: "background", **label_names}
    ct = Volume(hu.astype(np.float32, copy=False), spacing, origin)
    lab = Volume(labels, spacing, origin, label_names=names)
    return Subject(ct, lab, names, params, kind)


def subject_seed(seed: int, index: int) -> int:
    """The seed of subject ``index`` in a cohort drawn with ``seed`` (numpy SeedSequence).

    >>> subject_seed(0, 1) == subject_seed(0, 1) != subject_seed(0, 2)
    True
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def cohort(kind: str, n: int, seed: int = 0, **kwargs):
    """Yield ``n`` subjects of ``kind`` reproducibly; subject ``i`` depends only on
    ``(seed, i)``, so a subset can be regenerated alone.  ``kwargs`` go to the generator.

    >>> from bonelab.phantoms import cohort
    >>> [s.params["seed"] for s in cohort("wrist", 2, seed=7, spacing=1.0)] == [
    ...     subject_seed(7, 0), subject_seed(7, 1)]
    True
    """
    from bonelab.phantoms import GENERATORS as generators  # imported here: they import this module

    if kind not in generators:
        raise InvalidArgumentError(f"cohort kind {kind!r} is unknown; use one of {sorted(generators)}.")
    if int(n) < 0:
        raise InvalidArgumentError(f"cohort size n must be >= 0; got {n}.")
    for i in range(int(n)):
        yield generators[kind](subject_seed(seed, i), **kwargs)


def split_subjects(n: int, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict:
    """Split subject indices ``0..n-1`` into ``{"train", "val", "test"}`` by subject (a subject's
    slices or projections never straddle two sets).  Shuffled reproducibly with ``seed``.

    >>> s = split_subjects(10, seed=0); sorted(len(v) for v in s.values())
    [1, 2, 7]
    """
    fr = np.asarray(fractions, float)
    if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
        raise InvalidArgumentError(f"fractions must be three non-negative numbers; got {fractions}.")
    order = np.random.default_rng(seed).permutation(int(n))
    cuts = np.round(np.cumsum(fr / fr.sum())[:2] * n).astype(int)
    parts = np.split(order, cuts)
    return {k: sorted(int(i) for i in p) for k, p in zip(("train", "val", "test"), parts)}


def extend_z(subject: Subject, mm: float) -> Subject:
    """``subject`` with its CT and labels continued ``mm`` beyond both z ends of its box by
    repeating the end slices (an extrusion).  For limb phantoms whose box ends a few centimetres
    from the joint: a radiograph with a wide field then shows the forearm and the metacarpals
    running on as near-straight shafts (as they are over a few centimetres) instead of the box's
    cut edge.  The repeated slices repeat their noise too (a streak texture along z in the
    extension).  Identity-direction subjects only (the phantoms).

    >>> from bonelab.phantoms import wrist
    >>> s = wrist(0, spacing=2.0)
    >>> extend_z(s, 10.0).ct.shape[0] - s.ct.shape[0]
    10
    """
    if not np.allclose(subject.ct.direction, np.eye(3)):
        raise InvalidArgumentError("extend_z needs a subject with identity direction (a generated phantom).")
    n = int(round(float(mm) / subject.ct.spacing[2]))
    if n <= 0:
        return subject
    pad = ((n, n), (0, 0), (0, 0))
    origin = (*subject.ct.origin[:2], subject.ct.origin[2] - n * subject.ct.spacing[2])
    ct = Volume(np.pad(subject.ct.array, pad, mode="edge"), subject.ct.spacing, origin)
    labels = Volume(np.pad(subject.labels.array, pad, mode="edge"), subject.ct.spacing, origin,
                    label_names=subject.labels.label_names)
    return Subject(ct, labels, subject.label_names, {**subject.params, "extended_z_mm": n * subject.ct.spacing[2]},
                   subject.kind)
