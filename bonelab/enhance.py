"""Bone enhancement and bone subtraction from a radiograph and its bone image (chapter 4).

Given a radiograph and the bone-only radiograph a network extracted from it
(:func:`bonelab.segment.extract_bones`, after Xiang, Yu & Cheng, "X-ray bone extraction and
enhancement based on deep learning"), :func:`enhance` adds the bones again with a weight and
:func:`soft_tissue` takes them away.

The physics, and what it assumes
--------------------------------
A bonelab radiograph (:func:`bonelab.drr.physics.to_radiograph`) is a display window of the log
intensity: ``x = ((p - low) / (high - low)) ** gamma``, clipped to [0, 1], with
``p = -ln(I / I0)``, the line integral of the attenuation coefficient along the ray, then the
film's image processing.  The bone image a bonelab network is trained to extract
(:class:`bonelab.simulate.targets.BoneRadiographTarget`) is what the bones add to that film as
displayed: the clean film minus the clean film of the same body with its bones emptied,
through the same window, contrast curve and processing.  So, pixel by pixel and in display
units, whatever the display was::

    image = soft tissue + bones

Then ``soft_tissue = image - bones`` is the radiograph with the bones taken out (the
"bone-suppressed" image) and ``image + weight * bones`` the radiograph with the bones' share
of the display ``1 + weight`` times as large.  For a linear display (``gamma = 1``, the window
starting at zero attenuation) the bones' share is their line integral through the window, and
``image + weight * bones`` is the film on which bone attenuates ``1 + weight`` times as
strongly.  Where the assumptions do not hold:

* The training target is noise- and scatter-free; the film is not, so ``image - bones`` keeps
  the film's noise, and scatter makes the film's bone contrast smaller than the clean one's.
* A network's bones are an estimate: where it overestimates them, ``image - bones`` is negative
  and is clipped to 0.
* ``gamma=`` linearises both inputs first (``x ** (1 / gamma)``) and re-applies the curve to
  the result: for bone images that are a bone-only film through a known contrast curve
  (``to_radiograph(..., gamma=g)`` of a bone-only CT), not for a network's bones, which are
  already in the film's display units (leave ``gamma=1``).

Display scaling (a pure function of the inputs and ``weight``, the same for every image, so that
images enhanced with one weight can be compared): the enhanced image is divided by
``1 + weight`` (the largest value ``image + weight * bones`` can take with both in [0, 1]) and
clipped to [0, 1].  Air stays 0, the line-integral scale stays linear (it is the display of
``p_soft + (1 + weight) p_bone`` with a window ``1 + weight`` times wider), and the bone-to-soft
tissue contrast grows with the weight.

Arrays: (H, W) or a batch (N, 1, H, W), rows down, float in [0, 1], bone bright; numpy or torch
(the result is of the input's kind: numpy float32, or a float32 tensor on the input's device).

>>> import numpy as np
>>> image = np.array([[0.1, 0.6], [0.3, 0.9]], np.float32)   # soft tissue 0.1, 0.3; bone 0.5, 0.6
>>> bones = np.array([[0.0, 0.5], [0.0, 0.6]], np.float32)
>>> print(soft_tissue(image, bones).round(4))
[[0.1 0.1]
 [0.3 0.3]]
>>> print(enhance(image, bones, weight=1.0).round(4))   # (image + bones) / 2
[[0.05 0.55]
 [0.15 0.75]]
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from bonelab.errors import InvalidArgumentError, InvalidValuesError

_TOLERANCE = 1e-4  # how far outside [0, 1] an input may stray (interpolation round-off) before it is refused


def _is_tensor(a) -> bool:
    return type(a).__module__.startswith("torch")


def _checked(image, bones, gamma: float):
    """``(image, bones)`` as float32 arrays or tensors in [0, 1], linearised (``** (1 / gamma)``),
    after checking their shapes, values and ``gamma``."""
    if not (isinstance(gamma, Real) and math.isfinite(gamma) and gamma > 0):
        raise InvalidArgumentError(f"gamma must be a positive number (the display's contrast curve, 1 for a "
                                   f"linear display); got {gamma!r}.")
    tensor = _is_tensor(image) or _is_tensor(bones)
    out = []
    for name, a in (("image", image), ("bones", bones)):
        if tensor:
            import torch

            a = torch.as_tensor(a, dtype=torch.float32)
            values = a.detach().cpu().numpy()
        else:
            a = values = np.asarray(a, dtype=np.float32)
        if not (a.ndim == 2 or (a.ndim == 4 and a.shape[1] == 1)):
            raise InvalidArgumentError(f"{name} must be one radiograph (H, W) or a batch (N, 1, H, W); got shape "
                                       f"{tuple(a.shape)}.")
        if not np.isfinite(values).all():
            raise InvalidValuesError(f"{name} holds NaN or infinite values; replace them first.")
        if values.size and (values.min() < -_TOLERANCE or values.max() > 1 + _TOLERANCE):
            raise InvalidValuesError(
                f"{name} holds values in [{values.min():.4g}, {values.max():.4g}]; enhance and soft_tissue take "
                "display images in [0, 1] (normalise with bonelab.segment.normalize, or clip a network's output).")
        out.append(a.clamp(0, 1) if tensor else np.clip(a, 0, 1))
    x, b = out
    if tuple(x.shape) != tuple(b.shape):
        raise InvalidArgumentError(f"image {tuple(x.shape)} and bones {tuple(b.shape)} differ in shape; the bone "
                                   "image must line up with the radiograph pixel for pixel (resize it first).")
    if tensor:
        b = b.to(x.device)
    return (x, b) if gamma == 1 else (x ** (1 / gamma), b ** (1 / gamma))


def _check_weight(weight) -> None:
    if not (isinstance(weight, Real) and math.isfinite(weight) and weight >= -1):
        raise InvalidArgumentError(f"weight must be a number >= -1 (0: unchanged, 1: bone twice as strong, -1: "
                                   f"bone removed); got {weight!r}.")


def _display(a, gamma: float):
    a = a.clamp(0, 1) if _is_tensor(a) else np.clip(a, 0, 1).astype(np.float32)
    return a if gamma == 1 else a ** gamma


def enhance(image, bones, weight: float = 1.0, *, gamma: float = 1.0):
    """The radiograph with its bones ``1 + weight`` times as attenuating, for display.

    ``clip((image + weight * bones) / (1 + max(weight, 0)), 0, 1)`` in the linearised domain (see
    the module docstring for the physics, the assumptions and the display scaling).

    Parameters
    ----------
    image : (H, W) or (N, 1, H, W) float in [0, 1], bone bright (numpy or torch)
        The radiograph, as the bone network saw it.
    bones : same shape, float in [0, 1]
        Its bone-only image in the same display units (e.g. ``extract_bones(...).bones``).
    weight : float >= -1
        How much bone to add: 0 returns ``image``, 1 doubles the bone's attenuation; negative
        values take bone away, down to -1, which is :func:`soft_tissue`.
    gamma : float > 0
        The display's contrast curve (``x = linear ** gamma``; 1 for a linear display, the
        default and what :func:`bonelab.drr.physics.to_radiograph` does unless told otherwise).

    Returns
    -------
    The enhanced radiograph, the shape of ``image``, float32 in [0, 1] (numpy, or a tensor when
    an input is one).

    Raises
    ------
    InvalidArgumentError
        Shapes that are not (H, W) / (N, 1, H, W) or differ; a weight below -1; a bad gamma.
    InvalidValuesError
        NaN, infinite, or values outside [0, 1].

    >>> import numpy as np
    >>> image = np.array([[0.2, 0.8]]); bones = np.array([[0.0, 0.6]])
    >>> print(enhance(image, bones, weight=0), enhance(image, bones, weight=3).round(4))  # image; (image + 3 bones) / 4
    [[0.2 0.8]] [[0.05 0.65]]
    """
    _check_weight(weight)
    x, b = _checked(image, bones, gamma)
    return _display((x + weight * b) / (1 + max(float(weight), 0.0)), gamma)


def soft_tissue(image, bones, *, gamma: float = 1.0):
    """The radiograph with its bones taken out: ``clip(image - bones, 0, 1)`` in the linearised
    domain, i.e. ``enhance(image, bones, weight=-1)`` (see the module docstring).

    Parameters and errors as :func:`enhance`; returns float32 in [0, 1], the shape of ``image``.

    >>> import numpy as np
    >>> print(soft_tissue(np.array([[0.5, 0.9]]), np.array([[0.0, 0.6]])).round(4))
    [[0.5 0.3]]
    >>> print(soft_tissue(np.array([[0.25]]), np.array([[0.09]]), gamma=2).round(4))  # (0.5 - 0.3) ** 2
    [[0.04]]
    """
    x, b = _checked(image, bones, gamma)
    return _display(x - b, gamma)
