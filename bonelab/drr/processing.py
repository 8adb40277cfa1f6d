"""The image processing real radiographs carry, on the display image (bone bright, [0, 1]).

Digital radiography systems process every image before it is shown: a multi-scale dynamic range
compression, edge enhancement (unsharp masking) and a gradation curve, in that order (e.g.
Agfa's MUSICA, Fuji's DRC and frequency processing; Prokop, Neitzel & Schaefer-Prokop 2003,
Eur. J. Radiol. 44:101, "Principles of image processing in digital chest radiography").  The
functions here are single-scale versions of each, so that a simulator can draw a different chain
per sample (:func:`draw_postprocess`, :func:`postprocess`; used by :mod:`bonelab.simulate`).
numpy only.  The physics that makes the image is in :mod:`bonelab.drr.physics`.
"""

from __future__ import annotations

import numpy as np

from bonelab.drr.physics import _check_finite
from bonelab.errors import InvalidArgumentError


def _sigma_px(sigma_mm: float, pixel_mm, name: str) -> tuple:
    px = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,))
    if not (np.isfinite(sigma_mm) and sigma_mm > 0 and np.all(np.isfinite(px)) and np.all(px > 0)):
        raise InvalidArgumentError(f"{name}: sigma_mm and pixel_mm must be positive mm; got {sigma_mm!r}, {pixel_mm!r}.")
    return tuple(float(sigma_mm) / px)


def _display_image(image, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise InvalidArgumentError(f"{name} takes one display image (H, W); got shape {a.shape}.")
    a = a.astype(np.result_type(a.dtype, np.float32))
    _check_finite(a, name, "process a finite display image (to_radiograph's output).")
    return a


def unsharp_mask(image, sigma_mm: float, amount: float, pixel_mm) -> np.ndarray:
    """Edge enhancement: ``image + amount * (image - G_sigma * image)``, clipped to [0, 1], with a
    Gaussian of ``sigma_mm`` (mm at the detector; ``pixel_mm`` scalar or (row, column)) on a
    display image (H, W) in [0, 1] (scikit-image's ``unsharp_mask``).  Across an edge much sharper
    than ``sigma_mm`` the step between neighbouring pixels grows by the factor ``1 + amount``, less
    ``amount`` times the blurred image's own step (about the step times ``pixel / (2.5 sigma)``);
    areas wider than the Gaussian keep their level.

    >>> step = np.repeat([[0.3] * 20 + [0.7] * 20], 8, axis=0)
    >>> out = unsharp_mask(step, sigma_mm=5.0, amount=0.5, pixel_mm=0.5)
    >>> round(float(out[4, 20] - out[4, 19]), 3)    # 0.4 * 1.5 - 0.5 * 0.016
    0.592
    """
    from skimage.filters import unsharp_mask as skimage_unsharp

    a = _display_image(image, "unsharp_mask")
    if not (np.isfinite(amount) and amount >= 0):
        raise InvalidArgumentError(f"unsharp_mask: amount must be >= 0; got {amount!r}.")
    sigma = _sigma_px(sigma_mm, pixel_mm, "unsharp_mask")
    return skimage_unsharp(a, radius=sigma, amount=float(amount), preserve_range=True).clip(0, 1).astype(a.dtype)


def compress_dynamic_range(image, sigma_mm: float, strength: float, pixel_mm) -> np.ndarray:
    """Dynamic range compression: subtract ``strength`` times the low-pass image (a Gaussian of
    ``sigma_mm``, mm; ``pixel_mm`` scalar or (row, column)) about its mean, ``image - strength *
    (L - mean(L))``, clipped to [0, 1], on a display image (H, W) in [0, 1].  Structures wider than
    the Gaussian (lungs against mediastinum, soft tissue against air) come closer by ``1 -
    strength``; detail smaller than it keeps its contrast.  ``strength`` in [0, 1).

    >>> ramp = np.tile(np.linspace(0.2, 0.8, 200), (50, 1))
    >>> out = compress_dynamic_range(ramp, sigma_mm=5.0, strength=0.4, pixel_mm=1.0)
    >>> round(float(np.ptp(out[25, 20:180]) / np.ptp(ramp[25, 20:180])), 3)
    0.6
    """
    from scipy.ndimage import gaussian_filter

    a = _display_image(image, "compress_dynamic_range")
    if not (np.isfinite(strength) and 0 <= strength < 1):
        raise InvalidArgumentError(f"compress_dynamic_range: strength must be in [0, 1); got {strength!r}.")
    low = gaussian_filter(a.astype(np.float64), _sigma_px(sigma_mm, pixel_mm, "compress_dynamic_range"),
                          mode="nearest")
    return (a - strength * (low - low.mean())).clip(0, 1).astype(a.dtype)


RESPONSE_CURVES = ("linear", "gamma", "log", "sigmoid")
"""The gradation curves of :func:`detector_response`."""


def detector_response(image, curve: str = "linear", *, gamma: float = 1.0, k: float = 10.0,
                      center: float = 0.5) -> np.ndarray:
    """A gradation (tone) curve on a display image in [0, 1], mapping 0 to 0 and 1 to 1,
    monotonically, as the look-up table that a detector's processing or a film's characteristic
    curve puts between exposure and grey value:

    * ``"linear"``: unchanged;
    * ``"gamma"``: ``x ** gamma`` (gamma > 1 darkens the mid-tones);
    * ``"log"``: ``log(1 + k x) / log(1 + k)``, compressing the bright end (k > 0);
    * ``"sigmoid"``: a film-like S curve, the logistic ``1 / (1 + exp(-k (x - center)))`` rescaled
      to [0, 1]: contrast ``k`` around ``center``, toe and shoulder at the ends.

    >>> x = np.linspace(0, 1, 5)[None]
    >>> detector_response(x, "sigmoid", k=10.0).round(3).tolist()
    [[0.0, 0.07, 0.5, 0.93, 1.0]]
    """
    a = _display_image(image, "detector_response")
    if curve not in RESPONSE_CURVES:
        raise InvalidArgumentError(f"detector_response: curve must be one of {RESPONSE_CURVES}; got {curve!r}.")
    if not (gamma > 0 and k > 0 and 0 <= center <= 1):
        raise InvalidArgumentError(f"detector_response: gamma and k must be > 0 and center in [0, 1]; got "
                                   f"gamma {gamma!r}, k {k!r}, center {center!r}.")
    x = a.clip(0, 1).astype(np.float64)
    if curve == "linear":
        y = x
    elif curve == "gamma":
        y = x ** gamma
    elif curve == "log":
        y = np.log1p(k * x) / np.log1p(k)
    else:
        s0, s1, s = (1 / (1 + np.exp(-k * (v - center))) for v in (0.0, 1.0, x))
        y = (s - s0) / (s1 - s0)
    return y.astype(a.dtype)


POSTPROCESS_STEPS = {"compress": compress_dynamic_range, "unsharp": unsharp_mask, "response": detector_response}
"""The steps of :func:`postprocess`, in the order they are applied (as clinical systems do)."""

POSTPROCESS_RANGES = {
    "compress": {"sigma_mm": (10.0, 40.0), "strength": (0.0, 0.6)},
    "unsharp": {"sigma_mm": (0.5, 4.0), "amount": (0.0, 1.5)},
    "response": {"curve": ("linear", "gamma", "log", "sigmoid"), "gamma": (0.7, 1.5), "k": (2.0, 12.0),
                 "center": (0.35, 0.65)},
}
"""Ranges of :func:`draw_postprocess`: (low, high) drawn uniformly, or a tuple of names drawn
among.  Wide on purpose (domain randomisation), not the settings of a particular vendor."""


def postprocess(image, settings: dict | None, pixel_mm) -> np.ndarray:
    """Apply a chain of display processing to a display image (H, W) in [0, 1]: ``settings`` is a
    plain dict of steps of :data:`POSTPROCESS_STEPS` and their keyword arguments, e.g.
    ``{"compress": {"sigma_mm": 20, "strength": 0.3}, "unsharp": {"sigma_mm": 2, "amount": 0.8},
    "response": {"curve": "sigmoid", "k": 6}}``; steps run in that order whatever the dict's
    order; missing steps are skipped, so ``{}`` or None returns the image unchanged (a float copy).
    ``pixel_mm`` (scalar or (row, column), mm) sets the filters' scale.  Draw ``settings`` per
    sample with :func:`draw_postprocess`.

    >>> img = np.random.default_rng(0).random((32, 32))
    >>> bool(np.array_equal(postprocess(img, {}, pixel_mm=0.5), img))
    True
    >>> postprocess(img, draw_postprocess(seed=3), pixel_mm=0.5).shape
    (32, 32)
    """
    out = _display_image(image, "postprocess").copy()
    settings = settings or {}
    unknown = set(settings) - set(POSTPROCESS_STEPS)
    if unknown:
        raise InvalidArgumentError(f"postprocess: unknown steps {sorted(unknown)}; the steps are {list(POSTPROCESS_STEPS)}.")
    for name, step in POSTPROCESS_STEPS.items():
        if name in settings:
            kwargs = dict(settings[name])
            if name != "response":
                kwargs["pixel_mm"] = pixel_mm
            try:
                out = step(out, **kwargs)
            except TypeError as error:
                raise InvalidArgumentError(f"postprocess: bad settings for {name!r} ({settings[name]!r}): {error}.") from None
    return out


def draw_postprocess(seed: int | None = 0, ranges: dict = POSTPROCESS_RANGES) -> dict:
    """Draw one :func:`postprocess` settings dict from ``ranges`` (see :data:`POSTPROCESS_RANGES`):
    every step, each value uniform in its range or chosen among its names.  Same seed, same
    settings (``seed`` may also be a numpy Generator).

    >>> draw_postprocess(seed=1) == draw_postprocess(seed=1)
    True
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    drawn = {}
    for step, params in ranges.items():
        drawn[step] = {}
        for key, span in params.items():
            if all(isinstance(v, str) for v in span):
                drawn[step][key] = str(span[rng.integers(len(span))])
            else:
                drawn[step][key] = float(rng.uniform(*span))
    return drawn
