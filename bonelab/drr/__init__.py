"""X-ray simulation from CT: geometry, ray casting (DRRs), label projection and physics.

>>> from bonelab.drr import pa, render
>>> # img = render(ct, pa(ct, size=512), output="radiograph", kvp=120)

Conventions (LPS mm, image rows/columns, views) are documented in :mod:`bonelab.drr.geometry`;
the physics (HU -> mu, spectra, materials, noise) lives in :mod:`bonelab.drr.physics`.
"""

from bonelab.drr.geometry import Geometry, SlotScan, ap, carm, lateral, localizer, oblique, pa, view
from bonelab.drr.render import Renderer, label_masks, march, project_labels, render, siddon

__all__ = [
    "Geometry",
    "Renderer",
    "SlotScan",
    "ap",
    "carm",
    "label_masks",
    "lateral",
    "localizer",
    "march",
    "oblique",
    "pa",
    "project_labels",
    "render",
    "siddon",
    "view",
]
