"""bonelab.segment: reading radiographs, normalisation, the inversion check, sizes."""

import numpy as np
import pytest
import torch

from bonelab.errors import InvalidArgumentError, MissingFileError
from bonelab.segment import looks_inverted, normalize, read_xray, segment_xray


class Spy(torch.nn.Module):
    """A stand-in network: logits = 40 * (x - 0.5) in one channel (a mask of the bright pixels);
    it remembers the last input it saw."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.scale * (x - 0.5)


def radiograph(h=60, w=90):
    """Bone-bright toy radiograph: dark air, grey soft tissue, a bright 'bone' rectangle."""
    img = np.full((h, w), 0.05)
    img[10:50, 20:75] = 0.4  # soft tissue
    img[20:40, 35:60] = 0.9  # bone
    return img + np.random.default_rng(0).normal(0, 0.01, (h, w))


def bone_truth(h=60, w=90):
    m = np.zeros((h, w), bool)
    m[20:40, 35:60] = True
    return m


def test_masks_line_up_with_the_input_at_its_size():
    net = Spy()
    masks = segment_xray(radiograph(), net, size=32)
    assert masks.shape == (1, 60, 90) and masks.dtype == bool
    truth = bone_truth()
    dice = 2 * (masks[0] & truth).sum() / (masks[0].sum() + truth.sum())
    assert dice > 0.9


def test_mirror_flips_the_image_and_the_masks_back():
    img = radiograph()
    img[45:50, 5:15] = 1.0  # an asymmetric bright spot
    net = Spy()
    plain = segment_xray(img, net, size=32)
    mirrored = segment_xray(img, net, size=32, mirror=True)
    assert np.mean(plain != mirrored) < 0.01  # a translation-equivariant net: same masks
    np.testing.assert_allclose(net.seen.numpy()[0, 0], normalize_square(img[:, ::-1]), atol=0.05)


def normalize_square(img):
    """What segment_xray feeds a 32-pixel network for a 60 x 90 image (padded, resized)."""
    from bonelab.segment import _pad_square, _resize

    return _resize(_pad_square(normalize(img))[0], (32, 32), 1)


def test_inverted_image_is_inverted_back():
    net = Spy()
    img = radiograph()
    assert not looks_inverted(normalize(img)) and looks_inverted(normalize(img.max() - img))
    segment_xray(img, net, size=32)
    upright = net.seen.clone()
    masks = segment_xray(img.max() - img, net, size=32)
    np.testing.assert_allclose(net.seen.numpy(), upright.numpy(), atol=0.02)
    truth = bone_truth()
    assert 2 * (masks[0] & truth).sum() / (masks[0].sum() + truth.sum()) > 0.9
    segment_xray(img.max() - img, net, size=32, invert=False)  # the reader overrides the check
    assert float(net.seen.mean()) > float(upright.mean()) + 0.2


def test_png_and_dicom_inputs(tmp_path):
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    img = radiograph()
    u16 = np.round(normalize(img, (0, 100)) * 60000).astype(np.uint16)
    Image.fromarray(u16).save(tmp_path / "wrist16.png")
    Image.fromarray((u16 // 256).astype(np.uint8)).convert("RGB").save(tmp_path / "wrist_rgb.png")

    def dicom(path, pixels, photometric):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "DX", 1, photometric
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.ImagerPixelSpacing = [0.5, 0.5]
        ds.PixelData = pixels.tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)

    dicom(tmp_path / "m2.dcm", u16, "MONOCHROME2")
    dicom(tmp_path / "m1.dcm", (65535 - u16).astype(np.uint16), "MONOCHROME1")  # stored bone-dark
    assert read_xray(tmp_path / "m1.dcm").pixel_mm == (0.5, 0.5)
    truth = bone_truth()
    for name in ("wrist16.png", "wrist_rgb.png", "m2.dcm", "m1.dcm"):
        masks = segment_xray(tmp_path / name, Spy(), size=32, invert=False)  # no check: the reader must
        assert masks.shape == (1, 60, 90), name                               # get the polarity right
        assert 2 * (masks[0] & truth).sum() / (masks[0].sum() + truth.sum()) > 0.9, name


def test_known_pixel_spacing_uses_sliding_windows():
    net = Spy()
    net.bonelab_spec = {"size": 32, "pixel_spacing_mm_at_isocenter": 1.0}
    img = radiograph(120, 150)
    masks = segment_xray(img, net, pixel_mm=0.5)  # resampled to 60 x 75 px, windows of 32
    assert masks.shape == (1, 120, 150)
    assert net.seen.shape[-2:] == (32, 32)
    big = np.zeros((120, 150), bool)
    big[20:40, 35:60] = True
    assert masks[0][big].mean() > 0.9 and masks[0][60:, :].mean() < 0.05


def test_bad_inputs(tmp_path):
    with pytest.raises(MissingFileError):
        segment_xray(tmp_path / "none.png", Spy(), size=32)
    with pytest.raises(InvalidArgumentError, match="size"):
        segment_xray(radiograph(), Spy())
    with pytest.raises(InvalidArgumentError, match="invert"):
        segment_xray(radiograph(), Spy(), size=32, invert="maybe")
    with pytest.raises(ValueError, match="constant"):
        segment_xray(np.ones((20, 20)), Spy(), size=32)
