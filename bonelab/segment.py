"""Apply a trained bone segmentation network to a reader's own radiograph.

:func:`segment_xray` takes a PNG, TIFF, JPEG or DICOM file (or an array) and returns one mask
per bone at the size of the input, doing what a real image needs first:

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
   resized to the network's input size; the probabilities are resized back and the padding cut
   off, so the masks line up with the input pixel for pixel.  When the pixel spacing is known
   (``pixel_mm``, or the DICOM's) and the network's training spacing is known (the run's
   :class:`~bonelab.models.ModelSpec`), the image is instead resampled to the training spacing
   and segmented with MONAI's sliding-window inference, so bones keep the size in pixels the
   network learned.

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
    """

    array: np.ndarray
    pixel_mm: tuple | None = None
    polarity: str | None = None
    photometric: str | None = None
    inverted_on_read: bool = False
    spacing_source: str | None = None
    orientation: tuple | None = None


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
                  f"resized to the network's input). Pass pixel_mm= to segment_xray if you know it"
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
    neither polarity nor spacing: both None, without a warning.

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
    if image.GetNumberOfComponentsPerPixel() > 1:  # RGB(A) -> grey, alpha dropped
        arr = arr[..., :3].mean(axis=-1)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InvalidValuesError(f"{path} holds an image of shape {arr.shape}; segment_xray needs one 2D radiograph.")
    if _tag(reader, "0028|0004") is None:  # not a DICOM
        return XrayImage(arr)
    arr, polarity, photometric, inverted = _dicom_display(path, reader, arr)
    spacing, source = _dicom_spacing(path, reader, arr.shape)
    orientation = tuple(_tag(reader, "0020|0020").split("\\")) if _tag(reader, "0020|0020") else None
    return XrayImage(arr, spacing, polarity, photometric, inverted, source, orientation)


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


@torch.no_grad()
def _probabilities(model, x: np.ndarray, size, device, sliding: bool) -> np.ndarray:
    dev = next(iter(model.parameters())).device if device is None else torch.device(device)
    t = torch.as_tensor(x[None, None], dtype=torch.float32, device=dev)
    if sliding:
        from monai.inferers import sliding_window_inference

        logits = sliding_window_inference(t, size, sw_batch_size=4, predictor=model, overlap=0.25,
                                          mode="gaussian", padding_mode="replicate")
    else:
        logits = model(t)
    return torch.sigmoid(logits.float())[0].cpu().numpy()


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
    numpy arrays line up with the input image pixel for pixel.
    """
    if isinstance(image, (str, Path)):
        image = read_xray(image)
    polarity = None
    if isinstance(image, XrayImage):
        pixel_mm = pixel_mm if pixel_mm is not None else image.pixel_mm
        image, polarity = image.array, image.polarity
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.squeeze(np.asarray(image, dtype=np.float64))
    if a.ndim != 2:
        raise InvalidValuesError(f"segment_xray needs one 2D image (H, W); got shape {np.shape(image)}.")
    if invert not in ("auto", True, False):
        raise InvalidArgumentError(f"invert must be 'auto', True or False; got {invert!r}.")
    net, spec = _network(model, spec, device)
    size = size if size is not None else getattr(spec, "input_size", None)
    if size is None:
        raise InvalidArgumentError("give size= (the network's input size in pixels), spec= (a ModelSpec with "
                                   "input_size), or the run folder as model.")
    size = tuple(int(v) for v in _pair(size, "size"))
    train_mm = getattr(spec, "input_spacing_mm", None)
    pixel_mm = None if pixel_mm is None else _pair(pixel_mm, "pixel_mm")
    x = normalize(a)
    if mirror:
        x = x[:, ::-1]
    if invert == "auto":
        invert = polarity == "bone-dark" if polarity is not None else looks_inverted(x)
    if invert:
        x = 1.0 - x
    net.eval()
    h, w = x.shape
    if pixel_mm is not None and train_mm:
        scale = np.divide(pixel_mm, _pair(train_mm, "the spec's input_spacing_mm"))
        shape = (max(size[0], round(h * scale[0])), max(size[1], round(w * scale[1])))
        prob = _probabilities(net, _resize(x, shape, 1).astype(np.float32), size, device, sliding=True)
        prob = _resize(prob, (len(prob), h, w), 1)
    else:
        padded, (top, left) = _pad_to_aspect(x, size[1] / size[0])
        prob = _probabilities(net, _resize(padded, size, 1).astype(np.float32), size, device, False)
        prob = _resize(prob, (len(prob),) + padded.shape, 1)[:, top:top + h, left:left + w]
    prob = np.ascontiguousarray(prob[:, :, ::-1] if mirror else prob, dtype=np.float32)
    masks = prob > threshold
    return (masks, prob) if return_probabilities else masks
