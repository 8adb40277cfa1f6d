"""Torch data sets and collate functions for :func:`bonelab.train.train`.

Two sample formats, one per kind of task in :mod:`bonelab.train`:

* **image -> target** (:class:`bonelab.train.SupervisedTask`: segmentation, regression, 3D
  patches): a dict ``{"image": (C, H, W) or (C, D, H, W), "label": (L, H, W) or (L, D, H, W)}``,
  stacked into batches by torch's ``default_collate``.  :class:`DictDataset` builds one from two
  arrays (numpy memmaps included, so a data set on disk is read lazily).
* **detection / instances** (:class:`bonelab.train.DetectionTask`, torchvision's convention): a pair
  ``(image (C, H, W), target)`` or a dict ``{"image": ..., "target": ...}``, where ``target`` holds
  ``"boxes"`` ``(K, 4)`` float ``(x0, y0, x1, y1)`` in pixels, ``"labels"`` ``(K,)`` int64 class ids
  (0 is background) and ``"masks"`` ``(K, H, W)`` uint8, for K objects (K varies between samples).
  :func:`detection_collate` keeps a batch as lists.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from bonelab.errors import InvalidArgumentError


class DictDataset(Dataset):
    """Samples ``{"image": images[i], "label": labels[i]}`` as float32 tensors (the image -> target format).

    Parameters
    ----------
    images : array-like (N, C, H, W) or (N, C, D, H, W)
        Numpy arrays (memmaps too: read one sample at a time) or tensors.
    labels : array-like (N, L, H, W) or (N, L, D, H, W)
    transform : callable or None
        Applied to each sample dict (e.g. a ``monai.transforms.Compose`` of dict transforms).

    Examples
    --------
    >>> import numpy as np
    >>> ds = DictDataset(np.zeros((4, 1, 8, 8)), np.ones((4, 2, 8, 8), bool))
    >>> len(ds), ds[0]["image"].shape, ds[0]["label"].dtype
    (4, torch.Size([1, 8, 8]), torch.float32)
    """

    def __init__(self, images, labels, transform: Callable | None = None):
        if len(images) != len(labels):
            raise InvalidArgumentError(f"{len(images)} images but {len(labels)} labels; they must pair up.")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        sample = {
            "image": torch.as_tensor(np.array(self.images[index], dtype=np.float32)),
            "label": torch.as_tensor(np.array(self.labels[index], dtype=np.float32)),
        }
        return self.transform(sample) if self.transform is not None else sample


def _shapes(n: int, size: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 1, size, size) float32 and masks (n, 2, size, size) bool of the toy shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, 2, size, size), bool)
    for i in range(n):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        labels[i, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < (rng.uniform(0.12, 0.25) * size) ** 2
        y0, x0 = rng.integers(0, size // 2, 2)
        side = rng.integers(size // 5, size // 2)
        labels[i, 1, y0 : y0 + side, x0 : x0 + side] = True
    images = 0.5 * labels[:, :1] + 0.8 * labels[:, 1:] + rng.normal(0, noise, (n, 1, size, size))
    return images.astype(np.float32), labels


def shapes_dataset(n: int, size: int = 32, seed: int = 0, noise: float = 0.05) -> DictDataset:
    """A toy two-label data set for trying the loop: a disc and a square that may overlap.

    The image adds the two shapes' "attenuations" (0.5 and 0.8) plus Gaussian noise, like bones
    overlapping in a radiograph; the labels are the two binary masks (overlap kept).

    Returns
    -------
    DictDataset of ``n`` samples: image (1, size, size), label (2, size, size).

    Examples
    --------
    >>> ds = shapes_dataset(3, size=16)
    >>> ds[0]["image"].shape, ds[0]["label"].shape
    (torch.Size([1, 16, 16]), torch.Size([2, 16, 16]))
    """
    return DictDataset(*_shapes(n, size, seed, noise))


def _first(occupied: torch.Tensor) -> torch.Tensor:
    """Index of the first True along axis 1 of (K, n)."""
    return occupied.float().argmax(1)


def _end(occupied: torch.Tensor) -> torch.Tensor:
    """One past the index of the last True along axis 1 of (K, n)."""
    return occupied.shape[1] - occupied.flip(1).float().argmax(1)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Bounding boxes ``(K, 4)`` float32 ``(x0, y0, x1, y1)`` in pixels of masks ``(K, H, W)``.

    ``x1``/``y1`` are one past the last pixel (torchvision's convention: a one-pixel mask at
    column 3 spans x 3 to 4).  Written here (torchvision's ``masks_to_boxes`` gives the last pixel,
    and torchvision is not a dependency).  Empty masks raise InvalidArgumentError.

    >>> m = torch.zeros(1, 4, 6, dtype=torch.uint8); m[0, 1:3, 2:5] = 1
    >>> boxes_from_masks(m)
    tensor([[2., 1., 5., 3.]])
    """
    rows, cols = masks.bool().any(2), masks.bool().any(1)  # (K, H) and (K, W): which rows/columns hold pixels
    if not bool(rows.any(1).all()):
        raise InvalidArgumentError("boxes_from_masks: some masks are empty; drop objects without pixels first.")
    return torch.stack([_first(cols), _first(rows), _end(cols), _end(rows)], 1).float()


class ShapesInstances(Dataset):
    """The toy shapes of :func:`shapes_dataset` as instances: ``(image, target)`` pairs for detection.

    Each sample has one disc (class 1) and one square (class 2) in ``target`` (``"boxes"``,
    ``"labels"``, ``"masks"``; see the module docstring), for trying :class:`bonelab.train.DetectionTask`.

    >>> image, target = ShapesInstances(2, size=16)[0]
    >>> image.shape, target["boxes"].shape, target["labels"].tolist(), target["masks"].shape
    (torch.Size([1, 16, 16]), torch.Size([2, 4]), [1, 2], torch.Size([2, 16, 16]))
    """

    def __init__(self, n: int, size: int = 32, seed: int = 0, noise: float = 0.05):
        self.images, self.masks = _shapes(n, size, seed, noise)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        masks = torch.as_tensor(self.masks[index], dtype=torch.uint8)
        target = {"boxes": boxes_from_masks(masks), "labels": torch.tensor([1, 2]), "masks": masks}
        return torch.as_tensor(self.images[index]), target


def detection_collate(samples: list) -> tuple[list, list]:
    """Collate detection samples into ``(images, targets)``: two lists, one entry per sample.

    Samples are ``(image, target)`` pairs or dicts with ``"image"`` and ``"target"`` (the format of
    this module's docstring); images may differ in size and targets in their number of objects,
    so nothing is stacked (torchvision detection models take lists).

    >>> images, targets = detection_collate(list(ShapesInstances(3, size=16)))
    >>> len(images), len(targets), targets[0]["boxes"].shape
    (3, 3, torch.Size([2, 4]))
    """
    pairs = [(s["image"], s["target"]) if isinstance(s, dict) and "target" in s else s for s in samples]
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        found = type(samples[0]).__name__ if samples else "nothing"
        raise InvalidArgumentError(
            f"detection samples must be (image, target) pairs or dicts with 'image' and 'target', got {found}; "
            "see bonelab.datasets (ShapesInstances is an example).")
    images, targets = zip(*pairs)
    return list(images), list(targets)
