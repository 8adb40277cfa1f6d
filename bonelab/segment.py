"""Apply a trained network to a reader's own radiograph or CT: bone segmentation, bone extraction,
vertebra detection, and the proximal femur in a hip CT.

:func:`segment_xray` (chapter 3) takes a PNG, TIFF, JPEG or DICOM file (or an array) and returns
one mask per bone at the size of the input; :func:`extract_bones` (chapter 4) returns the
bone-only radiograph a "bones" network extracts from it, with the bone-enhanced and the
bone-subtracted radiographs (:mod:`bonelab.enhance`).  Both do what a real image needs first
(steps 1-3: ``_prepare``) and apply the network the same way (step 4: ``_apply``); only the
output's activation differs (sigmoid probabilities for masks, the linear output clamped to
[0, 1] for bones):

1. **Reading** (:func:`read_xray`): SimpleITK reads all four formats; colour images become grey
   (mean of the colour channels).  A DICOM says how it is displayed: ``MONOCHROME1`` (bright =
   little signal) is turned around on reading (SimpleITK's GDCM reader does it; read_xray checks
   with pydicom that it did), and a radiograph for presentation then comes out bone-bright, so
   its polarity is known.  The pixel spacing comes from ImagerPixelSpacing or PixelSpacing; a
   zero, negative or missing one is unknown (a warning says so).
2. **Intensity normalisation**: the 0.5th-99.5th percentiles map to 0 and 1, as the simulated
   training images were displayed (:func:`bonelab.drr.physics.to_radiograph`).
3. **Polarity**: the networks were trained on bone-bright images.  Where the file does not say
   (PNG, TIFF, JPEG), :func:`looks_inverted` guesses from the image: the collimator's uniform
   shutter bands are set aside, and the corners of the exposed field (direct exposure or thin
   tissue) are compared with the field's mean.  ``invert=True``/``False`` decides instead.
4. **Resizing**: the image is padded to the network's aspect ratio (with its border value) and
   resized to the network's input size; the output is resized back and the padding cut off,
   so masks and bones line up with the input pixel for pixel.  When the pixel spacing is known
   (``pixel_mm``, or the DICOM's) and the network's training spacing is known (the run's
   :class:`~bonelab.models.ModelSpec`), the image is instead resampled to the training spacing
   and segmented with MONAI's sliding-window inference, so bones keep the size in pixels the
   network learned.

:func:`detect_vertebrae` (chapter 5) names L1-L5 and the sacrum of a lateral lumbar film;
:func:`segment_ct` (chapter 6) returns the proximal femur of a hip CT as a label map on the CT's
own grid (its docstring lists its steps).

>>> import numpy as np, torch
>>> net = torch.nn.Conv2d(1, 2, 1)                 # a stand-in "network": 2 output channels
>>> masks = segment_xray(np.random.default_rng(0).random((50, 70)), net, size=32)
>>> masks.shape, masks.dtype
((2, 50, 70), dtype('bool'))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonelab.errors import (
    InvalidArgumentError,
    InvalidValuesError,
    MissingFileError,
    UnreadableFileError,
)
from bonelab.files import check_finite

SUFFIXES = (".png", ".tif", ".tiff", ".dcm", ".dicom", ".jpg", ".jpeg")
"""The real radiographs that the ``pydicom-data`` package ships (NEMA WG04 test images):
computed radiography of a chest PA (1955 x 1841) and of a distal tibia and ankle (1760 x 1760)."""

# Shutter bands: edge rows/columns constant to within one 8-bit grey level (1/256 of the
# normalised range).  Collimated areas receive no photons, so they carry no quantum noise, unlike
# direct exposure; at most this fraction of each side is taken as shutter.
_SHUTTER_STD = 1 / 256
_SHUTTER_MAX_FRACTION = 0.45
_PENUMBRA_MARGIN = 0.02  # of the side, set aside beyond a shutter's edge


@dataclass
class XrayImage:
    """A 2D radiograph as read.

    Attributes
    ----------
    array : (H, W) float64, rows down, as the file is displayed (bright = white on screen)
    pixel_mm : pixel spacing (row, column) in mm, or None when the file does not state a usable one
    polarity : ``"bone-bright"`` or ``"bone-dark"`` where the file says how it is displayed (a
        DICOM for presentation), None when unknown (PNG, TIFF, JPEG: :func:`looks_inverted` guesses)
    photometric : the DICOM Photometric Interpretation (0028,0004), e.g. ``"MONOCHROME1"``; None
        for other formats
    inverted_on_read : True when the stored values were turned around on reading (MONOCHROME1,
        or a Presentation LUT Shape INVERSE), so that ``array`` is as displayed
    spacing_source : the tag ``pixel_mm`` came from (e.g. ``"ImagerPixelSpacing (0018,1164)"``)
    orientation : the DICOM Patient Orientation (0020,0020): the patient directions along a row
        (left to right) and down a column, e.g. ``("L", "F")`` for a PA chest hung as if facing
        the patient; None when the file does not say
    colour : True when the file stored colour channels that really differ (a photograph, a
        coloured screenshot; :func:`has_colour`); ``array`` is then their mean.  A grey image
        stored as RGB is not colour.
    """

    array: np.ndarray
    pixel_mm: tuple | None = None
    polarity: str | None = None
    photometric: str | None = None
    inverted_on_read: bool = False
    spacing_source: str | None = None
    orientation: tuple | None = None
    colour: bool = False


def has_colour(rgb) -> bool:
    """True when an RGB(A) image ``rgb`` (..., H, W, 3 or 4; alpha ignored) has real colour: more
    than 1 % of its pixels have channels that differ by more than 2 % of the image's range.  A grey
    image stored as RGB (equal channels, or JPEG chroma round-off of a grey level or two) and a
    small coloured annotation on a grey film are not colour.

    >>> grey = np.repeat(np.random.default_rng(0).random((8, 8, 1)), 3, axis=-1)
    >>> has_colour(grey), has_colour(grey * [1.0, 0.5, 0.2])
    (False, True)
    """
    a = np.asarray(rgb, dtype=np.float64)[..., :3]
    spread = a.max(axis=-1) - a.min(axis=-1)
    return bool(np.mean(spread > 0.02 * max(np.ptp(a), 1e-12)) > 0.01)


def _tag(reader, key: str) -> str | None:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None


def _reader_inverted(path: Path, array: np.ndarray) -> bool:
    """Whether SimpleITK turned a MONOCHROME1 file around: compare with pydicom's stored values.
    SimpleITK 2.x (GDCM) does (see tests/test_segment.py); a file pydicom cannot decode (a
    compressed transfer syntax without a decoder installed) is taken to follow that rule."""
    import pydicom

    try:
        stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    except Exception:  # noqa: BLE001  pydicom raises many kinds for undecodable pixel data
        return True
    stored = np.squeeze(stored)
    if stored.shape != array.shape or np.ptp(stored) == 0:
        return True
    return bool(np.corrcoef(stored[::7, ::7].ravel(), array[::7, ::7].ravel())[0, 1] < 0)


def _dicom_display(path: Path, reader, array: np.ndarray):
    """``(array as displayed, polarity, photometric, inverted_on_read)`` of a DICOM radiograph."""
    photometric = _tag(reader, "0028|0004")
    inverted = False
    if photometric == "MONOCHROME1":
        inverted = _reader_inverted(path, array)
        if not inverted:
            array, inverted = array.max() + array.min() - array, True
    if _tag(reader, "2050|0020") == "INVERSE":  # Presentation LUT Shape: display the other way round
        array, inverted = array.max() + array.min() - array, not inverted
    # Radiographs for presentation are displayed bone-bright; raw "FOR PROCESSING" values are not.
    shown = photometric in ("MONOCHROME1", "MONOCHROME2") and _tag(reader, "0008|0068") != "FOR PROCESSING"
    return array, ("bone-bright" if shown else None), photometric, inverted


def _dicom_spacing(path: Path, reader, shape):
    """``(pixel_mm, source)`` from the DICOM's spacing tags; ``(None, None)`` with a warning when
    none holds two positive finite numbers."""
    found = []
    for key, name in (("0018|1164", "ImagerPixelSpacing (0018,1164)"), ("0028|0030", "PixelSpacing (0028,0030)")):
        text = _tag(reader, key)
        if text is None:
            continue
        try:
            values = tuple(float(v) for v in text.split("\\")[:2])
        except ValueError:
            values = ()
        if len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values):
            return values, name
        found.append(f"{name} = {text!r}")
    what = "; ".join(found) if found else "no ImagerPixelSpacing or PixelSpacing"
    warnings.warn(f"{path}: {what}, so the pixel spacing is unknown (pixel_mm=None; the image is then "
                  f"resized to the network's input). Pass pixel_mm= to segment_xray or extract_bones if you "
                  f"know it"
                  f"{_cassette_hint(reader, shape)}.", stacklevel=3)
    return None, None


def _cassette_hint(reader, shape) -> str:
    """A computed-radiography plate is read whole: its Cassette Size (0018,1403), e.g.
    ``35CMX35CM``, over the matrix suggests the spacing (only a hint: the read area is not
    exactly the nominal size)."""
    text = _tag(reader, "0018|1403") or ""
    try:
        size_mm = max(float(v.strip().upper().removesuffix("CM")) * 10 for v in text.upper().split("X"))
    except ValueError:
        return ""
    return f" (its Cassette Size {text} over {max(shape)} pixels suggests about {size_mm / max(shape):.2f} mm)"


def read_xray(path) -> XrayImage:
    """Read a PNG, TIFF, JPEG or DICOM radiograph into an :class:`XrayImage` (grey, float64,
    (H, W), rows down), as the file is displayed.

    DICOM: the Photometric Interpretation (0028,0004) is recorded; ``MONOCHROME1`` values are
    turned around (SimpleITK does it on reading; checked against pydicom's stored values, and done
    here if it did not), as is a Presentation LUT Shape INVERSE; a radiograph for presentation is
    then ``polarity="bone-bright"``; its Patient Orientation is kept.  The spacing (row, column, mm) comes from ImagerPixelSpacing
    (0018,1164), else PixelSpacing (0028,0030); a zero, negative, non-finite or missing one gives
    ``pixel_mm=None`` and a warning naming the file and what it holds.  PNG, TIFF and JPEG state
    neither polarity nor spacing: both None, without a warning.  Colour files become grey (the mean
    of R, G and B); ``colour`` records whether they had real colour (:func:`has_colour`).

    >>> from bonelab import data
    >>> read_xray(data.real_radiograph("ankle")).polarity
    'bone-bright'
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"radiograph {path} does not exist; check the path.")
    if path.is_dir():
        raise InvalidArgumentError(f"{path} is a folder; give one radiograph file ({', '.join(SUFFIXES)}).")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise UnreadableFileError(f"cannot read {path} as an image (PNG, TIFF, JPEG, DICOM): {exc}") from exc
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    colour = False
    if image.GetNumberOfComponentsPerPixel() > 1:  # RGB(A) -> grey, alpha dropped
        colour = image.GetNumberOfComponentsPerPixel() >= 3 and has_colour(arr)
        arr = arr[..., :3].mean(axis=-1)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InvalidValuesError(f"{path} holds an image of shape {arr.shape}; a radiograph is one 2D image.")
    if _tag(reader, "0028|0004") is None:  # not a DICOM
        return XrayImage(arr, colour=colour)
    arr, polarity, photometric, inverted = _dicom_display(path, reader, arr)
    spacing, source = _dicom_spacing(path, reader, arr.shape)
    orientation = tuple(_tag(reader, "0020|0020").split("\\")) if _tag(reader, "0020|0020") else None
    return XrayImage(arr, spacing, polarity, photometric, inverted, source, orientation, colour)


def normalize(image, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Map the given percentiles of ``image`` to 0 and 1 (clipped), float32.

    >>> normalize(np.arange(101.0), (0, 100))[[0, 50, 100]].tolist()
    [0.0, 0.5, 1.0]
    """
    a = np.asarray(image, dtype=np.float64)
    check_finite(a, "the radiograph", "replace them before segmenting")
    lo, hi = np.percentile(a, percentiles)
    if hi <= lo:
        raise InvalidValuesError("the radiograph is constant (no contrast); check that the right file was read.")
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def _constant_run(stds: np.ndarray) -> int:
    """Number of edge lines (from index 0 inward) constant to within :data:`_SHUTTER_STD`."""
    limit = int(_SHUTTER_MAX_FRACTION * len(stds))
    noisy = np.flatnonzero(stds[:limit] >= _SHUTTER_STD)
    return int(noisy[0]) if noisy.size else limit


def _shutter_width(stds: np.ndarray, means: np.ndarray, field_level: float) -> int:
    """Edge lines covered by a shutter band: its constant lines, then the penumbra (lines whose
    mean is nearer the band's value than the field's level), then a margin."""
    k, limit = _constant_run(stds), int(_SHUTTER_MAX_FRACTION * len(stds))
    if k == 0:
        return 0
    band = means[:k].mean()
    while k < limit and abs(means[k] - band) < 0.5 * abs(band - field_level):
        k += 1
    return min(limit, k + int(_PENUMBRA_MARGIN * len(stds)))


def exposed_field(image) -> tuple[slice, slice]:
    """The part of a normalised radiograph ``image`` (H, W) inside the collimator's shutters:
    ``(row slice, column slice)`` without the uniform bands along the edges (shutters leave
    constant bright or dark bands: no photons, no quantum noise) and their penumbra.

    >>> img = np.random.default_rng(0).random((40, 50)); img[:, :10] = 1.0   # a shutter on the left
    >>> exposed_field(img)
    (slice(0, 40, None), slice(11, 50, None))
    """
    a = np.asarray(image, dtype=np.float64)
    lines = {"rows": (a.std(axis=1), a.mean(axis=1)), "cols": (a.std(axis=0), a.mean(axis=0))}
    (rs, _), (cs, _) = lines["rows"], lines["cols"]
    inside = a[_constant_run(rs):len(rs) - _constant_run(rs[::-1]), _constant_run(cs):len(cs) - _constant_run(cs[::-1])]
    level = float(np.median(inside if inside.size else a))
    out = []
    for stds, means in lines.values():
        start = _shutter_width(stds, means, level)
        stop = len(stds) - _shutter_width(stds[::-1], means[::-1], level)
        out.append(slice(start, max(stop, start + 1)))
    return tuple(out)


def looks_inverted(image, corner: float = 0.1) -> bool:
    """True when a normalised radiograph ``image`` (H, W) is probably bone-dark (a negative, or
    raw detector values).

    The collimator's shutter bands are set aside first (:func:`exposed_field`: bright in a
    bone-bright film, so a plain border test would call it inverted).  In the exposed field, the
    corners (``corner`` of each side) hold direct exposure or the thinnest tissue, darker than the
    field's mean in a bone-bright image: the image looks inverted when the mean of the four corner
    medians is above the field's mean.  It assumes the anatomy is centred, as radiographers frame
    it; where dense anatomy fills the corners, decide with ``segment_xray(..., invert=...)``.

    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(0.05, 0.02, (60, 60)); img[15:45, 15:45] += 0.9   # bright limb, dark air
    >>> shuttered = np.pad(img, 12, constant_values=1.0)                  # bright shutter bands
    >>> looks_inverted(img), looks_inverted(1 - img), looks_inverted(shuttered), looks_inverted(1 - shuttered)
    (False, True, False, True)
    """
    a = np.asarray(image, dtype=np.float64)
    field = a[exposed_field(a)]
    h, w = field.shape
    ch, cw = max(1, round(corner * h)), max(1, round(corner * w))
    corners = (field[:ch, :cw], field[:ch, -cw:], field[-ch:, :cw], field[-ch:, -cw:])
    return bool(np.mean([np.median(c) for c in corners]) > field.mean())


def _resize(a: np.ndarray, shape, order: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(a, shape, order=order, mode="edge", anti_aliasing=order > 0 and
                  (shape[-1] < a.shape[-1] or shape[-2] < a.shape[-2]), preserve_range=True)


def _pad_to_aspect(a: np.ndarray, aspect: float):
    """Pad ``a`` (H, W) with its edge values, centred, to width / height = ``aspect``; returns the
    padded array and the (top, left) offset of ``a`` in it."""
    h, w = a.shape
    ph, pw = max(h, round(w / aspect)), max(w, round(h * aspect))
    top, left = (ph - h) // 2, (pw - w) // 2
    return np.pad(a, ((top, ph - h - top), (left, pw - w - left)), mode="edge"), (top, left)


def _pair(value, name: str):
    """``value`` (a number or a pair) as a (row, column) tuple of positive finite floats."""
    pair = tuple(float(v) for v in np.broadcast_to(np.asarray(value, dtype=float), (2,)))
    if not all(np.isfinite(v) and v > 0 for v in pair):
        raise InvalidArgumentError(f"{name} must be a positive number or (row, column) pair; got {value!r}.")
    return pair


def _network(model, spec, device):
    """``(network, spec)`` from a module or a run folder (read with :func:`bonelab.models.load_model`
    and :func:`bonelab.models.read_spec`)."""
    if isinstance(model, (str, Path)):
        from bonelab.models import load_model, read_spec

        return load_model(model, device=device), spec if spec is not None else read_spec(model)
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module or a run folder path; got {type(model).__name__}.")
    return (model.to(device) if device is not None else model), spec


MIN_SIDE = 32
"""Smallest side, pixels, of a radiograph that :func:`extract_bones` accepts.  Smaller images are
thumbnails or icons, not radiographs: blown up to a network's input (256 px or more) they hold
less than an eighth of the detail the network learned from, and the inversion check
(:func:`looks_inverted`) would judge corners of two or three pixels."""


def _colour_error(name: str, who: str) -> InvalidValuesError:
    return InvalidValuesError(f"{name} is a colour picture (its R, G and B channels differ); {who} needs a grey "
                              "radiograph: pass the X-ray itself, not a photo or a coloured screenshot of it.")


def _grey(a: np.ndarray, who: str) -> np.ndarray:
    """``a`` as one grey image: an RGB(A) array (H, W, 3|4) or (3|4, H, W) whose channels agree
    becomes their mean; one with real colour (:func:`has_colour`) is refused."""
    if a.ndim == 3 and a.shape[-1] in (3, 4) and min(a.shape[:2]) > 4:
        rgb = a
    elif a.ndim == 3 and a.shape[0] in (3, 4) and min(a.shape[1:]) > 4:
        rgb = np.moveaxis(a, 0, -1)
    else:
        return a
    if has_colour(rgb):
        raise _colour_error(f"the image array {a.shape}", who)
    return rgb[..., :3].mean(axis=-1)


def _read(image, pixel_mm, who: str, strict: bool):
    """``(array (H, W) float64 as displayed, pixel_mm, polarity)`` of a path, :class:`XrayImage`,
    array or tensor.  ``strict`` (extract_bones) also refuses colour pictures and images with a
    side under :data:`MIN_SIDE`, and accepts grey images stored as RGB(A) arrays."""
    name = "the image"
    if isinstance(image, (str, Path)):
        name = str(image)
        image = read_xray(image)
    polarity = None
    if isinstance(image, XrayImage):
        if strict and image.colour:
            raise _colour_error(name, who)
        pixel_mm = pixel_mm if pixel_mm is not None else image.pixel_mm
        image, polarity = image.array, image.polarity
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image, dtype=np.float64)
    if strict:
        a = _grey(a, who)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise InvalidValuesError(f"{who} needs one 2D image (H, W); got shape {np.shape(image)}.")
    if strict and min(a.shape) < MIN_SIDE:
        raise InvalidValuesError(f"{name} is {a.shape[0]} x {a.shape[1]} pixels; {who} needs at least {MIN_SIDE} "
                                 "pixels on each side (a radiograph, not a thumbnail): pass the full-size image.")
    return a, pixel_mm, polarity


@dataclass
class _Prepared:
    """A radiograph made ready for a network (:func:`_prepare`)."""

    net: torch.nn.Module
    x: np.ndarray  # (H, W) float32 in [0, 1]: normalised, bone bright, mirrored if asked
    size: tuple  # the network's input (H, W), pixels
    pixel_mm: tuple | None  # the input's spacing (row, column), mm
    train_mm: tuple | None  # the network's training spacing, mm
    inverted: bool  # whether the normalised image was turned around (bone-dark input)
    spec: object = None  # the network's ModelSpec, when known

    @property
    def sliding(self) -> bool:
        """Resample to the training spacing and use sliding windows (both spacings known)."""
        return self.pixel_mm is not None and bool(self.train_mm)


def _prepare(image, model, *, spec, size, pixel_mm, invert, mirror: bool, device, who: str,
             strict: bool = False) -> _Prepared:
    """Steps 1-3 of the module docstring, shared by :func:`segment_xray` and :func:`extract_bones`:
    read, check, normalise, set the polarity; and the network, its input size and spacings."""
    a, pixel_mm, polarity = _read(image, pixel_mm, who, strict)
    if invert not in ("auto", True, False):
        raise InvalidArgumentError(f"invert must be 'auto', True or False; got {invert!r}.")
    net, spec = _network(model, spec, device)
    size = size if size is not None else getattr(spec, "input_size", None)
    if size is None:
        raise InvalidArgumentError("give size= (the network's input size in pixels), spec= (a ModelSpec with "
                                   "input_size), or the run folder as model.")
    size = tuple(int(v) for v in _pair(size, "size"))
    train_mm = getattr(spec, "input_spacing_mm", None)
    train_mm = None if not train_mm else _pair(train_mm, "the spec's input_spacing_mm")
    pixel_mm = None if pixel_mm is None else _pair(pixel_mm, "pixel_mm")
    x = normalize(a)
    if mirror:
        x = x[:, ::-1]
    if invert == "auto":
        invert = polarity == "bone-dark" if polarity is not None else looks_inverted(x)
    if invert:
        x = 1.0 - x
    return _Prepared(net, np.ascontiguousarray(x, dtype=np.float32), size, pixel_mm, train_mm, bool(invert), spec)


def _model_device(model, device) -> torch.device:
    """``device`` if given, else where ``model``'s parameters (or buffers) live (cpu without any)."""
    if device is not None:
        return torch.device(device)
    tensors = [*model.parameters(), *model.buffers()]
    return tensors[0].device if tensors else torch.device("cpu")


def sliding_windows(size):
    """MONAI's ``SlidingWindowInferer`` as bonelab applies its networks: windows of ``size``
    pixels or voxels (the training patch), four at a time, a quarter overlap, Gaussian-weighted
    blending of the raw outputs, images smaller than a window padded by replicating their edge.
    Call it as ``sliding_windows(size)(inputs, model)`` with inputs ``(N, C, *size-like)``.

    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
    >>> sliding_windows((16, 16))(torch.zeros(1, 1, 40, 24), net).shape
    torch.Size([1, 1, 40, 24])
    """
    from monai.inferers import SlidingWindowInferer

    return SlidingWindowInferer(roi_size=tuple(size), sw_batch_size=4, overlap=0.25, mode="gaussian",
                                padding_mode="replicate")


@torch.no_grad()
def _apply_network(model, x: np.ndarray, size, device, sliding: bool, activation) -> np.ndarray:
    """``activation(model(x))`` for one image ``x`` (H, W): (C, H, W); whole or in sliding windows
    of ``size`` (:func:`sliding_windows`)."""
    t = torch.as_tensor(x[None, None], dtype=torch.float32, device=_model_device(model, device))
    if sliding:
        out = sliding_windows(size)(t, model)
    else:
        out = model(t)
    return activation(out.float())[0].cpu().numpy()


def _apply(p: _Prepared, device, activation) -> np.ndarray:
    """Step 4 of the module docstring: the network's output (C, H, W) float64 at the size of
    ``p.x``, through ``activation``."""
    p.net.eval()
    h, w = p.x.shape
    if p.sliding:
        scale = np.divide(p.pixel_mm, p.train_mm)
        shape = (max(p.size[0], round(h * scale[0])), max(p.size[1], round(w * scale[1])))
        out = _apply_network(p.net, _resize(p.x, shape, 1).astype(np.float32), p.size, device, True, activation)
        return _resize(out, (len(out), h, w), 1)
    padded, (top, left) = _pad_to_aspect(p.x, p.size[1] / p.size[0])
    out = _apply_network(p.net, _resize(padded, p.size, 1).astype(np.float32), p.size, device, False, activation)
    return _resize(out, (len(out),) + padded.shape, 1)[:, top:top + h, left:left + w]


def segment_xray(image, model, *, spec=None, size=None, pixel_mm=None, threshold: float = 0.5,
                 invert="auto", mirror: bool = False, device=None, return_probabilities: bool = False):
    """Segment the bones of one radiograph with a trained multi-label network.

    Parameters
    ----------
    image : path (PNG, TIFF, JPEG, DICOM), :class:`XrayImage`, or array (H, W) / (1, H, W)
    model : a run folder (str or Path: the network is rebuilt with
        :func:`bonelab.models.load_model` and its :class:`~bonelab.models.ModelSpec` read with
        :func:`bonelab.models.read_spec`), or a network mapping (N, 1, H, W) in [0, 1] to logits
        (N, L, H, W); moved to ``device`` if given
    spec : the :class:`~bonelab.models.ModelSpec` to use (default: the run's); its ``input_size``
        (H, W) is the network's input size and ``input_spacing_mm`` (row, column) its training
        pixel spacing
    size : the network's input size, pixels: S or (H, W) (overrides the spec's ``input_size``)
    pixel_mm : the input's pixel spacing, mm: a number or (row, column) (default: the file's);
        with the network's training spacing it switches to resampling + sliding-window inference
        (see the module docstring)
    threshold : probability above which a pixel belongs to a bone
    invert : "auto" (the file's polarity where it states one, else :func:`looks_inverted`), True
        or False
    mirror : flip left-right before segmenting (the masks are flipped back), e.g. a left wrist
        for a network trained on right wrists
    return_probabilities : also return the probabilities (L, H, W) float32

    Returns
    -------
    masks (L, H, W) bool at the input's size (and probabilities if asked); the attribute-free
    numpy arrays line up with the input image pixel for pixel.  A network whose spec says
    ``extra["activation"] == "softmax"`` (one class per pixel, channel 0 the background: the
    lumbar U-Net of chapter 5) gives one mask per class other than the background, from the
    argmax, and ``threshold`` is not used.
    """
    p = _prepare(image, model, spec=spec, size=size, pixel_mm=pixel_mm, invert=invert, mirror=mirror,
                 device=device, who="segment_xray")
    softmax = _is_softmax(p.spec)
    prob = _apply(p, device, _softmax if softmax else torch.sigmoid)
    prob = np.ascontiguousarray(prob[:, :, ::-1] if mirror else prob, dtype=np.float32)
    if softmax:
        masks, prob = _class_masks(prob), prob[1:]
    else:
        masks = prob > threshold
    return (masks, prob) if return_probabilities else masks


def _is_softmax(spec) -> bool:
    """Whether a spec's network ends in a softmax over classes (background first), as the
    semantic lumbar U-Net of chapter 5 does, instead of one sigmoid per structure."""
    return getattr(spec, "extra", {}).get("activation") == "softmax"


def _softmax(output: torch.Tensor) -> torch.Tensor:
    return torch.softmax(output, dim=1)


def _class_masks(prob: np.ndarray) -> np.ndarray:
    """One mask per class but the background (C - 1, H, W) bool from class probabilities
    (C, H, W), channel 0 the background: each pixel goes to its most probable class."""
    winner = prob.argmax(axis=0)
    return np.stack([winner == k for k in range(1, len(prob))])


@dataclass
class BoneExtraction:
    """What :func:`extract_bones` returns: four radiographs (H, W) float32 in [0, 1], bone bright,
    at the input's size and lined up with it pixel for pixel, and how they were made.

    Attributes
    ----------
    image : the input as the network saw it: normalised (0.5th-99.5th percentiles to 0 and 1),
        turned bone-bright where it was not, at the input's size
    bones : the bone-only radiograph the network extracted (its linear output clamped to [0, 1])
    enhanced : ``bonelab.enhance.enhance(image, bones, weight)``
    soft_tissue : ``bonelab.enhance.soft_tissue(image, bones)``: the bones taken out
    weight : the enhancement weight used
    inverted : whether the input was turned around (it was bone-dark)
    pixel_mm : the input's pixel spacing (row, column) mm, None when unknown
    sliding : whether the image was resampled to the network's training spacing and processed in
        sliding windows (both spacings known), instead of padded and resized whole
    """

    image: np.ndarray
    bones: np.ndarray
    enhanced: np.ndarray
    soft_tissue: np.ndarray
    weight: float = 1.0
    inverted: bool = False
    pixel_mm: tuple | None = None
    sliding: bool = False


def _run_spec(model, spec) -> tuple:
    """``(spec, where)``: ``spec``, or the spec of run folder ``model`` when it is a path and no
    spec is given (:func:`bonelab.models.read_spec`), and where it came from, for error messages."""
    if isinstance(model, (str, Path)):
        from bonelab.models import read_spec

        return (spec if spec is not None else read_spec(model)), f"the run folder {model} (model.json)"
    return spec, "spec="


def _clamped(output: torch.Tensor) -> torch.Tensor:
    return output.clamp(0, 1)


def extract_bones(image, model, *, invert="auto", pixel_mm=None, weight: float = 1.0, spec=None, size=None,
                  device=None) -> BoneExtraction:
    """Extract the bones of one radiograph with a trained bone-extraction network (chapter 4),
    and enhance or subtract them (:mod:`bonelab.enhance`).

    The image is prepared as for :func:`segment_xray` (read, normalised, made bone-bright, padded
    and resized to the network's input, or resampled to its training spacing and processed in
    sliding windows when the pixel spacing is known; see the module docstring); the network's
    output, in the display units of its input, is clamped to [0, 1] (a linear output: no sigmoid)
    and resized back.

    Parameters
    ----------
    image : path (PNG, TIFF, JPEG, DICOM), :class:`XrayImage`, or array (H, W) / (1, H, W), rows
        down; a grey image stored as RGB(A) (H, W, 3|4) is accepted, a colour picture is not
    model : a run folder of task ``"bones"`` (str or Path; its ``model.json`` and ``best.pt``), or a
        network mapping (N, 1, H, W) in [0, 1], bone bright, to the bone image (N, 1, H, W) in the
        same units (give ``spec=`` or ``size=`` with it); moved to ``device`` if given
    invert : "auto" (the file's polarity where it states one, else :func:`looks_inverted`), True
        or False
    pixel_mm : the input's pixel spacing, mm: a number or (row, column) (default: the file's)
    weight : the enhancement weight of :func:`bonelab.enhance.enhance` (>= -1; 1 doubles the
        bone's attenuation)
    spec : the :class:`~bonelab.models.ModelSpec` (default: the run's): ``input_size`` (H, W) and
        ``input_spacing_mm``; a spec naming a task must name ``"bones"``
    size : the network's input size, pixels (overrides the spec's)
    device : torch device (default: the network's; for a run folder :func:`bonelab.config.device`)

    Returns
    -------
    :class:`BoneExtraction`: ``image``, ``bones``, ``enhanced``, ``soft_tissue``, each (H, W)
    float32 in [0, 1] at the input's size.

    Raises
    ------
    InvalidValuesError
        A colour picture (channels that differ), an image under :data:`MIN_SIDE` pixels on a side,
        a constant image, NaN or infinite pixels.
    InvalidArgumentError
        A run folder or spec of another task (the task found is named), a network whose output
        has more than one channel, a bad ``invert``, ``weight``, ``pixel_mm`` or ``size``.
    MissingFileError, UnreadableFileError
        An image or run folder that is missing or cannot be read.

    >>> import numpy as np, torch
    >>> film = np.add.outer(np.linspace(0, 1, 50), np.linspace(0, 2, 70)) ** 2   # a smooth stand-in
    >>> out = extract_bones(film, torch.nn.Identity(), size=32)   # a stand-in network: "all is bone"
    >>> out.bones.shape, out.bones.dtype, float(out.soft_tissue.max()) < 0.05
    ((50, 70), dtype('float32'), True)
    """
    from bonelab.enhance import _check_weight, enhance, soft_tissue

    _check_weight(weight)
    spec, where = _run_spec(model, spec)
    task = getattr(spec, "task", "")
    if spec is not None and (task or where != "spec=") and task != "bones":
        raise InvalidArgumentError(
            f"{where} is of task {task!r}, not 'bones': extract_bones needs a bone-extraction network (trained by "
            "the 'bones' task of chapter 4). For bone masks use segment_xray; otherwise pass a 'bones' run folder.")
    p = _prepare(image, model, spec=spec, size=size, pixel_mm=pixel_mm, invert=invert, mirror=False,
                 device=device, who="extract_bones", strict=True)
    out = _apply(p, device, _clamped)
    if len(out) != 1:
        raise InvalidArgumentError(
            f"the network returns {len(out)} channels; a bone-extraction network returns one bone image "
            "(N, 1, H, W) (ModelSpec settings out_channels=1). A segmentation network goes to segment_xray.")
    bones = np.clip(out[0], 0, 1).astype(np.float32)
    return BoneExtraction(p.x, bones, enhance(p.x, bones, weight), soft_tissue(p.x, bones), float(weight),
                          p.inverted, p.pixel_mm, p.sliding)


@dataclass
class VertebraDetection:
    """What :func:`detect_vertebrae` returns, at the input's size and lined up with it.

    Attributes
    ----------
    levels : the names of the vertebrae found (of ``"L1"`` ... ``"L5"``, ``"sacrum"``), cranial first
    masks : (K, H, W) bool, one per level found
    boxes : (K, 4) float (x1, y1, x2, y2) pixels of the input, x2 and y2 exclusive
    scores : (K,) confidence: the detection score (Mask R-CNN) or the mean class probability
        inside the mask (U-Net)
    class_map : (H, W) uint8: 0 background, 1-5 L1-L5, 6 sacrum
    model : ``"instance"`` or ``"semantic"``
    inverted : whether the input was turned around (it was bone-dark)
    """

    levels: list
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_map: np.ndarray
    model: str = "instance"
    inverted: bool = False


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected (26-connected in 3D) region of ``mask`` (H, W) or (D, H, W) bool:
    one vertebra or one femur is one piece of bone, so a network's stray pixels elsewhere in the
    image are not part of it."""
    from scipy import ndimage

    regions, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    if n <= 1:
        return mask
    return regions == 1 + int(np.argmax(np.bincount(regions.ravel())[1:]))


def detect_vertebrae(image, model, *, spec=None, score_threshold: float = 0.5, invert="auto", device=None
                     ) -> VertebraDetection:
    """Find and name L1-L5 and the sacrum in one lateral lumbar radiograph with a network of the
    lumbar task of chapter 5 (:mod:`bonelab.tasks.lumbar`).

    The image is prepared as for :func:`segment_xray` (read, normalised, made bone-bright, padded
    to the network's aspect and resized to its input).  An instance network (Mask R-CNN) gives
    one mask per detection; its levels are its classes (labelling ``"level"``) or are counted up
    from the sacrum (``"vertebra"``, :func:`bonelab.tasks.lumbar.order_levels`).  A semantic
    network (U-Net with a softmax) gives one class per pixel; the largest connected region of each
    level's pixels becomes its mask.  Masks are resized back to the input.

    Parameters
    ----------
    image : path (PNG, TIFF, JPEG, DICOM), :class:`XrayImage`, or array (H, W), rows down,
        cranial up (a lateral film hung as read)
    model : a run folder of task ``"lumbar"`` (str or Path), or the network itself with ``spec=``
    spec : its :class:`~bonelab.models.ModelSpec` (default: the run's)
    score_threshold : detections scoring less are dropped (instance networks)
    invert : "auto" (the file's polarity, else :func:`looks_inverted`), True or False
    device : torch device (default: the network's; for a run folder :func:`bonelab.config.device`)

    Returns
    -------
    :class:`VertebraDetection`

    Raises
    ------
    InvalidArgumentError
        A run folder or spec of another task (the task found is named), or no spec for a network.
    InvalidValuesError, MissingFileError, UnreadableFileError
        As for :func:`extract_bones`: a colour picture, a tiny or constant image, a missing file.

    >>> # found = detect_vertebrae("lateral.dcm", "runs/lumbar-instance"); found.levels
    """
    from bonelab.datasets import boxes_from_masks
    from bonelab.tasks import lumbar

    spec, where = _run_spec(model, spec)
    if spec is None or getattr(spec, "task", "") != lumbar.NAME:
        raise InvalidArgumentError(
            f"{where} is of task {getattr(spec, 'task', None)!r}, not 'lumbar': detect_vertebrae needs a network "
            "trained by the lumbar task of chapter 5 (bonelab train lumbar); pass its run folder, or the network "
            "with spec=.")
    p = _prepare(image, model, spec=spec, size=None, pixel_mm=None, invert=invert, mirror=False,
                 device=device, who="detect_vertebrae", strict=True)
    kind = spec.extra.get("model", "instance")
    if kind == "semantic":
        prob = _apply(p, device, _softmax)
        levels = np.stack([_largest_region(m) for m in _class_masks(prob)])
        scores = np.array([prob[k + 1][m].mean() if m.any() else np.nan for k, m in enumerate(levels)])
    else:
        h, w = p.x.shape
        padded, (top, left) = _pad_to_aspect(p.x, p.size[1] / p.size[0])
        x = _resize(padded, p.size, 1).astype(np.float32)
        p.net.eval()
        with torch.no_grad():
            pred = p.net([torch.as_tensor(x[None], device=_model_device(p.net, device))])[0]
        small, _, scores = lumbar.instance_levels(pred, spec.extra["labelling"], score_threshold=score_threshold,
                                                  image_size=x.shape)
        levels = _resize(small.astype(np.float32), (len(small),) + padded.shape, 1)[:, top:top + h, left:left + w] > 0.5
    cmap = lumbar.level_map(levels)
    found = [k for k in range(len(levels)) if levels[k].any()]
    boxes = boxes_from_masks(torch.from_numpy(levels[found])).numpy()
    return VertebraDetection([lumbar.LEVELS[k] for k in found], levels[found], boxes,
                             np.asarray(scores, np.float32)[found], cmap, kind, p.inverted)


# --- CT -----------------------------------------------------------------------------------------
#: HU -> CT network input: ``(HU - offset) / scale`` (water about 0, dense cortex about 1.5).
CT_HU_OFFSET, CT_HU_SCALE = 0.0, 1000.0


def ct_network_input(hu: np.ndarray, spec=None) -> np.ndarray:
    """HU -> the input scale of a CT network (``(HU - hu_offset) / hu_scale`` of its spec's
    ``extra``, by default :data:`CT_HU_OFFSET` and :data:`CT_HU_SCALE`), clipped to [-1, 2], float32."""
    extra = spec.extra if spec is not None else {}
    offset = float(extra.get("hu_offset", CT_HU_OFFSET))
    scale = float(extra.get("hu_scale", CT_HU_SCALE))
    return np.clip((np.asarray(hu, np.float32) - offset) / scale, -1.0, 2.0)


def ct_on_network_grid(roi, spacing_mm):
    """``roi`` (a CT Volume, HU) on the voxels of a 3D network: ``spacing_mm`` (x, y, z), from the
    centre of ``roi``'s first voxel over its whole extent, each voxel the mean of the CT over
    its extent (``resample_onto(..., average=True)``: no aliasing of noise and thin cortex)."""
    from bonelab.io.spatial import resample_onto

    step = np.asarray(spacing_mm, float)
    size = np.maximum(1, np.floor((np.asarray(roi.size_mm) - np.asarray(roi.spacing)) / step).astype(int) + 1)
    return resample_onto(roi, size, step, roi.origin, interpolator="linear", average=True)


def ct_probability(net, spec, image_hu: np.ndarray, device=None) -> np.ndarray:
    """Sigmoid probabilities (C, D, H, W) float32 of a 3D network for one CT region ``image_hu``
    (D, H, W) already on the network's voxels: MONAI's sliding windows of the spec's
    ``input_size`` (Gaussian-weighted, a quarter overlap)."""
    net.eval()
    size = tuple(spec.input_size) if spec is not None and spec.input_size else tuple(min(64, n) for n in image_hu.shape)
    x = ct_network_input(image_hu, spec)
    return _apply_network(net, x, size, device, True, torch.sigmoid).astype(np.float32)


def segment_ct(ct, model, *, spec=None, side=None, threshold: float | None = None, largest: bool = True, device=None):
    """Segment the proximal femur in a reader's CT with a network of the femur task (chapter 6).

    Steps: the hip is found in the image (:func:`bonelab.qct.hip_roi`, a sphere search for the
    femoral heads), the region of interest is averaged onto the network's voxels (the spec's
    ``input_spacing_mm``, :func:`ct_on_network_grid`) and segmented in sliding windows; the
    probability is resampled back onto the CT's own voxels (linear) and thresholded, and only
    the largest connected piece is kept.

    Parameters
    ----------
    ct : bonelab.Volume (HU) or a path (NIfTI, NRRD, DICOM folder: :func:`bonelab.io.read_ct`)
    model : run folder (its ``model.json`` and ``best.pt``) or a torch module (then pass ``spec``)
    side : "left" or "right"; default the side the network was trained on (spec ``extra["side"]``)
    threshold : float or None
        Probability above which a voxel is femur; None: the spec's ``extra["threshold"]`` where a
        run stores one, else 0.5 (where the network's fill fractions put the surface).
    largest : bool
        Keep only the largest 26-connected piece.

    Returns
    -------
    bonelab.Volume: uint8 label map on the CT's own grid (LPS-aligned, as :func:`bonelab.io.reorient`
    gives), 1 = ``femur_<side>``, 0 elsewhere.

    Raises
    ------
    NotCTError
        No femoral heads in the CT (not a hip CT).
    InvalidArgumentError
        A spec without the network's voxel size, or a side that is neither.
    """
    from bonelab import qct
    from bonelab.io import read_ct
    from bonelab.io.spatial import resample_onto
    from bonelab.volume import Volume

    if isinstance(ct, (str, Path)):
        ct = read_ct(ct, verbose=False)
    spec, where = _run_spec(model, spec)
    net, spec = _network(model, spec, device)
    if spec is None or not spec.input_spacing_mm:
        raise InvalidArgumentError(f"segment_ct needs the network's voxel size: the spec from {where} has no "
                                   "input_spacing_mm (train with bonelab.tasks.femur, or pass spec=).")
    side = side or spec.extra.get("side", "left")
    threshold = float(spec.extra.get("threshold", 0.5)) if threshold is None else float(threshold)
    ct = qct._lps(ct, "segment_ct")
    lo, hi = qct.hip_roi(ct, side)
    roi = qct.crop_mm(ct, lo, hi)
    net_grid = ct_on_network_grid(roi, np.asarray(spec.input_spacing_mm, float)[::-1])  # spec is (z, y, x)
    prob = ct_probability(net, spec, net_grid.array, device)[0]
    back = resample_onto(Volume(prob, net_grid.spacing, net_grid.origin), roi.size, roi.spacing, roi.origin,
                         interpolator="linear").array
    mask = back > threshold
    if largest and mask.any():
        mask = _largest_region(mask)
    labels = np.zeros(ct.shape, np.uint8)
    k0 = np.rint((np.asarray(roi.origin) - np.asarray(ct.origin)) / np.asarray(ct.spacing)).astype(int)[::-1]
    labels[k0[0]:k0[0] + roi.shape[0], k0[1]:k0[1] + roi.shape[1], k0[2]:k0[2] + roi.shape[2]] = mask
    return Volume(labels, ct.spacing, ct.origin, ct.direction, label_names={1: f"femur_{side}"})
