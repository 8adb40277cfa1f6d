"""Apply a trained bone segmentation network to a reader's own radiograph.

:func:`segment_xray` takes a PNG, TIFF or DICOM file (or an array) and returns one mask per bone
at the size of the input, doing what a real image needs first:

1. **Reading**: SimpleITK reads all three formats; colour images become grey (mean of the colour
   channels); DICOM ``MONOCHROME1`` images (bright = little signal) are turned into the usual
   polarity by SimpleITK's DICOM reader (GDCM) already.
2. **Intensity normalisation**: the 0.5th-99.5th percentiles map to 0 and 1, as the simulated
   training images were displayed (:func:`bonelab.drr.physics.to_radiograph`).
3. **Inversion check**: the networks were trained on bone-bright images.  In such an image the
   border (direct exposure around the limb) is darker than the middle; an image whose border is
   brighter than its middle is taken as inverted (a negative, or raw detector values) and
   flipped.  Collimator shutters that leave bright bands at the border can fool this test: pass
   ``invert=False`` (or True) to decide yourself.
4. **Resizing**: the image is padded to a square (with its border value) and resized to the
   network's input size; the probabilities are resized back and the padding cut off, so the
   masks line up with the input pixel for pixel.  When the pixel spacing is known (``pixel_mm``,
   or a DICOM's ImagerPixelSpacing/PixelSpacing) and the network's training spacing is known
   (``model.bonelab_spec``, set by :func:`bonelab.pipeline.load_segmentation_model`), the image
   is instead resampled to the training spacing and segmented with MONAI's sliding-window
   inference, so bones keep the size in pixels the network learned.

>>> import numpy as np, torch
>>> net = torch.nn.Conv2d(1, 2, 1)                 # a stand-in "network": 2 output channels
>>> masks = segment_xray(np.random.default_rng(0).random((50, 70)), net, size=32)
>>> masks.shape, masks.dtype
((2, 50, 70), dtype('bool'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonelab.errors import InvalidArgumentError, InvalidValuesError, MissingFileError, UnreadableFileError

SUFFIXES = (".png", ".tif", ".tiff", ".dcm", ".dicom", ".jpg", ".jpeg")


@dataclass
class XrayImage:
    """A 2D radiograph as read: ``array`` (H, W) float64 (rows down) and the pixel spacing
    ``pixel_mm`` (row, column) in mm when the file states it (DICOM), else None."""

    array: np.ndarray
    pixel_mm: tuple | None = None


def read_xray(path) -> XrayImage:
    """Read a PNG, TIFF, JPEG or DICOM radiograph into an :class:`XrayImage` (grey, float64).

    DICOM: SimpleITK turns ``MONOCHROME1`` into the usual polarity while reading; the spacing
    comes from ImagerPixelSpacing (0018,1164) or PixelSpacing (0028,0030).
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
    spacing = None
    for key in ("0018|1164", "0028|0030"):
        if reader.HasMetaDataKey(key):
            try:
                spacing = tuple(float(v) for v in reader.GetMetaData(key).split("\\")[:2])
                break
            except ValueError:
                pass
    return XrayImage(arr, spacing)


def normalize(image, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Map the given percentiles of ``image`` to 0 and 1 (clipped), float32.

    >>> normalize(np.arange(101.0), (0, 100))[[0, 50, 100]].tolist()
    [0.0, 0.5, 1.0]
    """
    a = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InvalidValuesError("the radiograph holds NaN or infinite values; replace them before segmenting.")
    lo, hi = np.percentile(a, percentiles)
    if hi <= lo:
        raise InvalidValuesError("the radiograph is constant (no contrast); check that the right file was read.")
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def looks_inverted(image, border: float = 0.08) -> bool:
    """True when the border band (outer ``border`` fraction of each side) of a normalised
    radiograph is brighter than its middle, i.e. the image is probably bone-dark (inverted).

    >>> img = np.zeros((40, 40)); img[10:30, 10:30] = 1.0      # bright limb on dark air
    >>> looks_inverted(img), looks_inverted(1 - img)
    (False, True)
    """
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape
    bh, bw = max(1, int(round(border * h))), max(1, int(round(border * w)))
    edge = np.ones_like(a, bool)
    edge[bh:h - bh, bw:w - bw] = False
    middle = a[h // 4:h - h // 4, w // 4:w - w // 4]
    return bool(np.median(a[edge]) > np.median(middle))


def _resize(a: np.ndarray, shape, order: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(a, shape, order=order, mode="edge", anti_aliasing=order > 0 and
                  (shape[-1] < a.shape[-1] or shape[-2] < a.shape[-2]), preserve_range=True)


def _pad_square(a: np.ndarray):
    h, w = a.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    return np.pad(a, ((top, n - h - top), (left, n - w - left)), mode="edge"), (top, left)


def _model_size(model, size):
    spec = getattr(model, "bonelab_spec", {}) or {}
    size = size or spec.get("size")
    if not size:
        raise InvalidArgumentError("give size= (the network's input size in pixels), or load the model with "
                                   "bonelab.pipeline.load_segmentation_model, which records it.")
    return int(size), spec.get("pixel_spacing_mm_at_isocenter")


@torch.no_grad()
def _probabilities(model, x: np.ndarray, size: int, device, sliding: bool) -> np.ndarray:
    dev = next(iter(model.parameters())).device if device is None else torch.device(device)
    t = torch.as_tensor(x[None, None], dtype=torch.float32, device=dev)
    if sliding:
        from monai.inferers import sliding_window_inference

        logits = sliding_window_inference(t, (size, size), sw_batch_size=4, predictor=model, overlap=0.25,
                                          mode="gaussian", padding_mode="replicate")
    else:
        logits = model(t)
    return torch.sigmoid(logits.float())[0].cpu().numpy()


def segment_xray(image, model: torch.nn.Module, *, size: int | None = None, pixel_mm=None, threshold: float = 0.5,
                 invert="auto", mirror: bool = False, device=None, return_probabilities: bool = False):
    """Segment the bones of one radiograph with a trained multi-label network.

    Parameters
    ----------
    image : path (PNG, TIFF, JPEG, DICOM), :class:`XrayImage`, or array (H, W) / (1, H, W)
    model : network mapping (N, 1, S, S) in [0, 1] to logits (N, L, S, S) (e.g. from
        :func:`bonelab.pipeline.load_segmentation_model`); moved to ``device`` if given
    size : the network's input size S (default: ``model.bonelab_spec["size"]``)
    pixel_mm : the input's pixel spacing (mm); with the network's training spacing it switches
        to resampling + sliding-window inference (see the module docstring)
    threshold : probability above which a pixel belongs to a bone
    invert : "auto" (:func:`looks_inverted`), True or False
    mirror : flip the image left-right for the network and the masks back: for a left wrist
        given to a network trained on right wrists only (as the chapter's is)
    return_probabilities : also return the probabilities (L, H, W) float32

    Returns
    -------
    masks (L, H, W) bool at the input's size (and probabilities if asked); the attribute-free
    numpy arrays line up with the input image pixel for pixel.
    """
    if isinstance(image, (str, Path)):
        image = read_xray(image)
    if isinstance(image, XrayImage):
        pixel_mm = pixel_mm if pixel_mm is not None else image.pixel_mm
        image = image.array
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.squeeze(np.asarray(image, dtype=np.float64))
    if a.ndim != 2:
        raise InvalidValuesError(f"segment_xray needs one 2D image (H, W); got shape {np.shape(image)}.")
    if invert not in ("auto", True, False):
        raise InvalidArgumentError(f"invert must be 'auto', True or False; got {invert!r}.")
    x = normalize(a)
    if mirror:
        x = x[:, ::-1]
    if invert is True or (invert == "auto" and looks_inverted(x)):
        x = 1.0 - x
    size, train_mm = _model_size(model, size)
    if device is not None:
        model = model.to(device)
    model.eval()
    h, w = x.shape
    if pixel_mm is not None and train_mm:
        scale = float(np.mean(np.broadcast_to(np.asarray(pixel_mm, float), (2,)))) / train_mm
        shape = (max(size, round(h * scale)), max(size, round(w * scale)))
        prob = _probabilities(model, _resize(x, shape, 1).astype(np.float32), size, device, sliding=True)
        prob = _resize(prob, (len(prob), h, w), 1)
    else:
        square, (top, left) = _pad_square(x)
        prob = _probabilities(model, _resize(square, (size, size), 1).astype(np.float32), size, device, False)
        n = square.shape[0]
        prob = _resize(prob, (len(prob), n, n), 1)[:, top:top + h, left:left + w]
    prob = np.ascontiguousarray(prob[:, :, ::-1] if mirror else prob, dtype=np.float32)
    masks = prob > threshold
    return (masks, prob) if return_probabilities else masks
