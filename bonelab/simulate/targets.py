"""What a simulated sample is trained to predict: target plug-ins.

Each target computes, for one rendered view, the array stored next to the image, and turns a
stored array back into what a training sample holds.  Its ``name`` and ``dtype`` are recorded
in ``dataset.json``.

===============  ========  ===========  =====================================================
name             stored    sample key   what it is
===============  ========  ===========  =====================================================
masks            uint8     ``label``    (L, H, W) stacked binary masks, one per structure; a
                 (L,H,W)                pixel is in a structure where the ray crosses at least
                                        ``min_mm`` of it.  Channels overlap (multi-label).
bone-radiograph  float32   ``target``   (1, H, W) what the bones add to the film as it is
                 (1,H,W)                displayed: the clean film (same spectrum, blur,
                                        display window, contrast curve and image processing,
                                        no noise or scatter) minus the clean film of the CT
                                        with its bone voxels set to air
                                        (:func:`bonelab.simulate.physics.bone_contribution`);
                                        for a linear display, the film of the bone-only CT.
                                        Bone chosen by the target structures' labels
                                        (``bone="labels"``) or by an HU window
                                        (``bone=(low, high)``).
instances        uint8     ``target``   per-structure masks stored as (L, H, W); a sample holds
                 (L,H,W)                a torchvision detection target: ``boxes`` (N, 4) float
                                        (x1, y1, x2, y2, pixels), ``labels`` (N,) int64 class
                                        ids (1-based), ``masks`` (N, H, W) uint8, for the N
                                        structures present in the view.
class-map        uint8     ``label``    (1, H, W) one class index per pixel (0 background).
                 (1,H,W)                Overlaps are resolved by one rule: a class listed in
                                        the protocol's ``on_top`` (e.g. implants) wins where
                                        present; elsewhere the class of the structure with the
                                        longest path through that pixel (the one that
                                        attenuates it most) wins.
===============  ========  ===========  =====================================================

>>> sorted(TARGETS)
['bone-radiograph', 'class-map', 'instances', 'masks']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonelab.errors import InvalidArgumentError

AIR_HU = -1000.0


@dataclass
class RenderedView:
    """What the simulator knows about one rendered view when it asks a target for its array:
    ``paths`` (L, H, W) mm of each target structure crossed by each ray, the drawn ``physics``,
    the display ``window`` of the image, the ``spectrum``, the ``geometry``, the per-subject
    ``state`` of the target (from :meth:`Target.prepare`) and the image's own per-material
    density integrals ``material_paths`` (M, H, W) g/cm3 * mm (:meth:`bonelab.drr.Renderer.integrals`)."""

    paths: np.ndarray
    physics: dict
    window: tuple
    spectrum: object
    geometry: object
    state: object = None
    material_paths: np.ndarray | None = None


class Target:
    """Base class of the target plug-ins (see the module docstring)."""

    name = ""
    dtype = "uint8"
    key = "label"

    def __init__(self, min_mm: float = 0.5):
        if not min_mm >= 0:
            raise InvalidArgumentError(f"min_mm must be a path length >= 0 mm; got {min_mm}.")
        self.min_mm = float(min_mm)

    def settings(self) -> dict:
        """What ``dataset.json`` records of this target."""
        return {"name": self.name, "dtype": self.dtype, "key": self.key, "min_mm": self.min_mm}

    def channels(self, n_structures: int) -> int:
        return n_structures

    def prepare(self, subject, structure_values: list):
        """Per-subject work (e.g. a second renderer); returns the state given to :meth:`compute`."""
        return None

    def compute(self, view: RenderedView, class_ids: list, on_top: list) -> np.ndarray:
        raise NotImplementedError

    def masks(self, paths) -> np.ndarray:
        """(L, H, W) bool: rays crossing at least ``min_mm`` of each structure."""
        p = np.asarray(paths)
        return p >= self.min_mm if self.min_mm > 0 else p > 0

    def sample(self, stored: np.ndarray, info: dict):
        """What a training sample holds for the stored array (a float32 tensor by default)."""
        import torch

        return torch.from_numpy(np.array(stored, dtype=np.float32))


class MaskTarget(Target):
    name = "masks"

    def compute(self, view, class_ids, on_top):
        return self.masks(view.paths).astype(np.uint8)


class InstanceTarget(Target):
    name = "instances"
    key = "target"

    def compute(self, view, class_ids, on_top):
        return self.masks(view.paths).astype(np.uint8)

    def sample(self, stored, info):
        return instances_from_masks(stored, info["target"]["class_ids"])


class ClassMapTarget(Target):
    name = "class-map"

    def channels(self, n_structures):
        return 1

    def compute(self, view, class_ids, on_top):
        return class_map(view.paths, class_ids, on_top, self.min_mm)[None]


class BoneRadiographTarget(Target):
    name = "bone-radiograph"
    dtype = "float32"
    key = "target"

    def __init__(self, bone="labels", min_mm: float = 0.5):
        super().__init__(min_mm)
        if not (bone == "labels" or (len(bone) == 2 and float(bone[0]) < float(bone[1]))):
            raise InvalidArgumentError(f"bone must be 'labels' or an HU window (low, high) with low < high; got {bone!r}.")
        self.bone = "labels" if bone == "labels" else (float(bone[0]), float(bone[1]))

    def settings(self):
        return {**super().settings(), "bone": self.bone if self.bone == "labels" else list(self.bone)}

    def channels(self, n_structures):
        return 1

    def prepare(self, subject, structure_values):
        from bonelab.drr import Renderer

        return Renderer(without_bone_ct(subject.ct, subject.labels, self.bone, structure_values), kvp=60.0,
                        device="cpu")

    def compute(self, view, class_ids, on_top):
        from bonelab.simulate.physics import bone_contribution

        without = view.state.integrals(view.geometry)[0].numpy()
        return bone_contribution(view.material_paths, without, view.physics, view.window, spectrum=view.spectrum,
                                 pixel_mm=view.geometry.pixel[0])[None]


TARGETS = {t.name: t for t in (MaskTarget, BoneRadiographTarget, InstanceTarget, ClassMapTarget)}
"""Target classes by name."""


def make_target(target="masks", **options) -> Target:
    """A target plug-in by name (a :class:`Target` passes through); ``options`` go to its
    constructor (``min_mm``; ``bone`` for the bone radiograph).

    >>> make_target("bone-radiograph", bone=(400, 800)).settings()["bone"]
    [400.0, 800.0]
    """
    if isinstance(target, Target):
        return target
    if target not in TARGETS:
        raise InvalidArgumentError(f"target {target!r} is unknown; use one of {sorted(TARGETS)}.")
    return TARGETS[target](**options)


def target_from_settings(settings: dict) -> Target:
    """The target plug-in recorded as ``settings`` (:meth:`Target.settings`, as ``dataset.json``
    holds it): the same name and constructor options (``min_mm``; ``bone`` for the bone radiograph).

    >>> target_from_settings(make_target("bone-radiograph", bone=(400, 800)).settings()).bone
    (400.0, 800.0)
    """
    options = {"min_mm": settings.get("min_mm", 0.5)}
    if settings["name"] == "bone-radiograph":
        options["bone"] = settings.get("bone", "labels")
    return make_target(settings["name"], **options)


# --------------------------------------------------------------------------------------------
# The computations behind the targets
# --------------------------------------------------------------------------------------------
def bone_voxels(ct, labels, bone, structure_values) -> np.ndarray:
    """Where the bone is in a CT (a :class:`bonelab.Volume`, HU): a bool array on the CT's grid,
    the voxels of ``structure_values`` in ``labels`` (``bone="labels"``) or the voxels whose HU lie
    in the window ``bone=(low, high)``."""
    if bone == "labels":
        return np.isin(np.asarray(labels.array), list(structure_values))
    hu = np.asarray(ct.array)
    return (hu >= bone[0]) & (hu <= bone[1])


def bone_only_ct(ct, labels, bone, structure_values):
    """A copy of the CT (HU) with every non-bone voxel set to air (bone: :func:`bone_voxels`).

    >>> from bonelab import Volume
    >>> ct = Volume(np.array([[[0.0, 500.0, 1500.0]]], np.float32))
    >>> bone_only_ct(ct, None, (400, 800), []).array.tolist()
    [[[-1000.0, 500.0, -1000.0]]]
    """
    return ct.with_array(np.where(bone_voxels(ct, labels, bone, structure_values), ct.array, AIR_HU).astype(np.float32))


def without_bone_ct(ct, labels, bone, structure_values):
    """A copy of the CT (HU) with its bone voxels (:func:`bone_voxels`) set to air: the body
    the bone-radiograph target subtracts from the whole one.

    >>> from bonelab import Volume
    >>> ct = Volume(np.array([[[0.0, 500.0, 1500.0]]], np.float32))
    >>> without_bone_ct(ct, None, (400, 800), []).array.tolist()
    [[[0.0, -1000.0, 1500.0]]]
    """
    return ct.with_array(np.where(bone_voxels(ct, labels, bone, structure_values), AIR_HU, ct.array).astype(np.float32))


def class_map(paths, class_ids, on_top=(), min_mm: float = 0.5) -> np.ndarray:
    """(H, W) uint8 class index per pixel from per-structure ``paths`` (L, H, W) mm: 0 where no
    structure is crossed by ``min_mm``; a class in ``on_top`` wins where present; elsewhere the
    class of the structure with the longest path.

    >>> p = np.zeros((3, 1, 3)); p[0, 0, :2] = 5; p[1, 0, 1:] = 9; p[2, 0, 0] = 1
    >>> class_map(p, [1, 1, 2], on_top=[2]).tolist()       # structure 2 (class 2) is on top
    [[2, 1, 1]]
    """
    p = np.asarray(paths, dtype=np.float32)
    ids = np.asarray(class_ids, dtype=np.uint8)
    inside = p >= min_mm if min_mm > 0 else p > 0
    out = np.where(inside.any(axis=0), ids[np.argmax(np.where(inside, p, -1.0), axis=0)], 0).astype(np.uint8)
    for c in on_top:
        here = (inside & (ids == c)[:, None, None]).any(axis=0)
        out[here] = c
    return out


def instances_from_masks(masks, class_ids) -> dict:
    """A torchvision detection target from per-structure masks (L, H, W): the structures present
    become instances with their bounding ``boxes`` (N, 4) float32 ``(x1, y1, x2, y2)`` in pixels
    (x2, y2 exclusive, as torchvision's ``masks_to_boxes`` plus one), ``labels`` (N,) int64 class
    ids and ``masks`` (N, H, W) uint8.

    >>> m = np.zeros((2, 4, 5), np.uint8); m[1, 1:3, 2:4] = 1
    >>> t = instances_from_masks(m, [1, 2])
    >>> t["boxes"].tolist(), t["labels"].tolist(), tuple(t["masks"].shape)
    ([[2.0, 1.0, 4.0, 3.0]], [2], (1, 4, 5))
    """
    import torch

    from bonelab.datasets import boxes_from_masks

    m = np.asarray(masks) > 0
    present = np.flatnonzero(m.reshape(len(m), -1).any(axis=1))
    kept = torch.from_numpy(m[present].astype(np.uint8))
    return {"boxes": boxes_from_masks(kept), "labels": torch.as_tensor(np.asarray(class_ids, np.int64)[present]),
            "masks": kept}
