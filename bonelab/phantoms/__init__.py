"""Virtual anatomy: procedural CT phantoms (HU) with exact bone labels.

Four generators, each returning a :class:`Subject` (``ct`` and ``labels`` Volumes on the same
grid, ``label_names``, the drawn ``params``):

* :func:`wrist` - 8 carpal bones, distal radius and ulna (10 labels), metacarpal bases; right or
  left, in any deviation and flexion (the carpals move as they do);
  :func:`projected_overlap` measures how much the carpals overlap in a PA or lateral view.
* :func:`lumbar_spine` - L1-L5, sacrum, optional degeneration and pedicle screws.
* :func:`hip` - both proximal femurs, pelvis, sacrum (label 4), optional QCT calibration phantom.
* :func:`chest` - ribs, vertebrae, sternum, clavicles, scapulae, lungs, heart.

Same seed, same subject (bit for bit); :func:`cohort` yields reproducible subjects and
:func:`split_subjects` splits them by subject.  Shapes come from :mod:`bonelab.phantoms.sdf`,
HU values and painting from :mod:`bonelab.phantoms.tissue`; each generator's module docstring
holds its anatomy table with sources.

>>> from bonelab import phantoms
>>> s = phantoms.wrist(seed=1, spacing=1.0)
>>> s.ct.shape == s.labels.shape
True
"""

from bonelab.phantoms.chest import chest
from bonelab.phantoms.hip import hip
from bonelab.phantoms.spine import lumbar_spine
from bonelab.phantoms.subject import Subject, cohort, split_subjects, subject_seed
from bonelab.phantoms.wrist import projected_overlap, wrist

GENERATORS = {"wrist": wrist, "lumbar_spine": lumbar_spine, "hip": hip, "chest": chest}


def schematic_note(kind: str) -> str:
    """What the generator of ``kind`` (a key of :data:`GENERATORS`) states remains schematic: the
    paragraph of its module docstring that begins "What remains schematic" (or "stays").

    >>> schematic_note("chest").startswith("What remains schematic")
    True
    """
    import importlib
    import re

    from bonelab.errors import InvalidArgumentError

    if kind not in GENERATORS:
        raise InvalidArgumentError(f"kind {kind!r} is unknown; use one of {sorted(GENERATORS)}.")
    doc = importlib.import_module(GENERATORS[kind].__module__).__doc__ or ""
    found = re.search(r"What (remains|stays) schematic.*?(?=\n\s*\n|$)", doc, re.S)
    return " ".join(found.group(0).split()) if found else f"({kind}: the module docstring states nothing schematic)"

__all__ = ["GENERATORS", "schematic_note", "Subject", "chest", "cohort", "hip", "lumbar_spine", "projected_overlap",
           "split_subjects", "subject_seed", "wrist"]
