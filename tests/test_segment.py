"""bonelab.segment: reading radiographs, normalisation, the inversion check, sizes."""

import numpy as np
import pytest
import torch

from bonelab.errors import InvalidArgumentError, MissingFileError
from bonelab.models import ModelSpec, register_architecture, save_spec
from bonelab.segment import (
    XrayImage,
    exposed_field,
    looks_inverted,
    normalize,
    read_xray,
    segment_xray,
)


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
    from bonelab.segment import _pad_to_aspect, _resize

    return _resize(_pad_to_aspect(normalize(img), 1.0)[0], (32, 32), 1)


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
    as_is = net.seen.clone()
    segment_xray(XrayImage(img.max() - img, polarity="bone-bright"), net, size=32)  # the file's word wins
    np.testing.assert_array_equal(net.seen.numpy(), as_is.numpy())
    segment_xray(XrayImage(img, polarity="bone-dark"), net, size=32)
    np.testing.assert_allclose(net.seen.numpy(), as_is.numpy(), atol=1e-6)


def dicom(path, pixels, photometric, **tags):
    """Write a 16-bit DX DICOM of ``pixels`` with ``photometric`` and further ``tags``."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

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
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_png_and_dicom_inputs(tmp_path):
    from PIL import Image

    img = radiograph()
    u16 = np.round(normalize(img, (0, 100)) * 60000).astype(np.uint16)
    Image.fromarray(u16).save(tmp_path / "wrist16.png")
    Image.fromarray((u16 // 256).astype(np.uint8)).convert("RGB").save(tmp_path / "wrist_rgb.png")

    dicom(tmp_path / "m2.dcm", u16, "MONOCHROME2", ImagerPixelSpacing=[0.5, 0.5])
    dicom(tmp_path / "m1.dcm", (65535 - u16).astype(np.uint16), "MONOCHROME1",  # stored bone-dark
          ImagerPixelSpacing=[0.5, 0.5])
    m1 = read_xray(tmp_path / "m1.dcm")
    assert m1.pixel_mm == (0.5, 0.5) and m1.spacing_source.startswith("ImagerPixelSpacing")
    assert (m1.polarity, m1.photometric, m1.inverted_on_read) == ("bone-bright", "MONOCHROME1", True)
    np.testing.assert_allclose(normalize(m1.array), normalize(u16.astype(float)), atol=1e-6)
    png = read_xray(tmp_path / "wrist16.png")
    assert (png.polarity, png.photometric, png.pixel_mm) == (None, None, None)
    truth = bone_truth()
    for name in ("wrist16.png", "wrist_rgb.png", "m2.dcm", "m1.dcm"):
        masks = segment_xray(tmp_path / name, Spy(), size=32, invert=False)  # no check: the reader must
        assert masks.shape == (1, 60, 90), name                               # get the polarity right
        assert 2 * (masks[0] & truth).sum() / (masks[0].sum() + truth.sum()) > 0.9, name


def test_known_pixel_spacing_uses_sliding_windows():
    net = Spy()
    spec = ModelSpec("spy", input_size=(32, 32), input_spacing_mm=(1.0, 1.0))
    img = radiograph(120, 150)
    masks = segment_xray(img, net, spec=spec, pixel_mm=0.5)  # resampled to 60 x 75 px, windows of 32
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


def test_a_network_is_not_asked_for_attributes(tmp_path):
    """Without size= or a spec, a bare network is refused, whatever attributes it carries."""
    net = Spy()
    net.bonelab_spec = {"size": 32}
    with pytest.raises(InvalidArgumentError, match="spec="):
        segment_xray(radiograph(), net)
    with pytest.raises(InvalidArgumentError, match="pixel_mm"):
        segment_xray(radiograph(), Spy(), size=32, pixel_mm=0.0)
    with pytest.raises(InvalidArgumentError, match="run folder"):
        segment_xray(radiograph(), object(), size=32)


@register_architecture("test_segment_threshold")
def threshold_net(scale=40.0):
    """A buildable stand-in: logits = scale * (x - 0.5), in one channel."""
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(scale)
        net.bias.fill_(-scale / 2)
    return net


def test_run_folder_gives_network_size_and_spacing(tmp_path):
    from bonelab.train import CHECKPOINT_FORMAT

    spec = ModelSpec("test_segment_threshold", label_names=("bone",), input_size=(24, 40),
                     input_spacing_mm=(1.0, 1.0))
    save_spec(tmp_path, spec)
    torch.save({"format": CHECKPOINT_FORMAT, "model": threshold_net().state_dict()}, tmp_path / "best.pt")
    img, truth = radiograph(), bone_truth()
    for kwargs in ({}, {"pixel_mm": 0.5}):  # padded to 24:40 and resized; resampled + windows
        masks = segment_xray(img, tmp_path, device="cpu", **kwargs)
        assert masks.shape == (1, 60, 90)
        assert 2 * (masks[0] & truth).sum() / (masks[0].sum() + truth.sum()) > 0.9, kwargs
    net = Spy()
    segment_xray(img, net, spec=spec)
    assert tuple(net.seen.shape[-2:]) == (24, 40)
    segment_xray(img, net, spec=spec, size=16)  # size= overrides the spec
    assert tuple(net.seen.shape[-2:]) == (16, 16)


def with_shutters(img, value, width=(9, 15)):
    """``img`` inside constant collimator bands of ``value`` (a shutter leaves no noise)."""
    return np.pad(img, ((width[0], width[0]), (width[1], width[1])), constant_values=value)


@pytest.mark.parametrize("shutter", [None, 1.0, 0.0, 0.6])
def test_inversion_check_sets_shutter_bands_aside(shutter):
    img = normalize(radiograph())
    film = img if shutter is None else normalize(with_shutters(img, shutter))
    assert not looks_inverted(film) and looks_inverted(1 - film), shutter
    if shutter is not None:
        rows, cols = exposed_field(film)
        assert 9 <= rows.start <= 11 and 15 <= cols.start <= 17 and film.shape[1] - cols.stop in range(15, 18)
    # The plain border test this replaces: a bright shutter made a bone-bright film look inverted.
    framed = normalize(with_shutters(radiograph(), 1.0))
    h, w = framed.shape
    edge = np.ones((h, w), bool)
    edge[7:h - 7, 9:w - 9] = False
    assert np.median(framed[edge]) > np.median(framed[h // 4:-h // 4, w // 4:-w // 4])


def test_mid_grey_shutter_with_a_penumbra_is_set_aside():
    img = normalize(radiograph(80, 120))
    framed = with_shutters(img, 1.0, (0, 30))
    ramp = np.linspace(1.0, 0.1, 8)  # a blurred shutter edge, inside the field
    framed[:, 30:38] = np.maximum(framed[:, 30:38], ramp)
    framed[:, -38:-30] = np.maximum(framed[:, -38:-30], ramp[::-1])
    rows, cols = exposed_field(framed)
    assert cols.start >= 38 and framed.shape[1] - cols.stop >= 38 and rows == slice(0, 80)
    assert not looks_inverted(framed) and looks_inverted(1 - framed)


def test_reader_turns_monochrome1_around_as_pydicom_says():
    """SimpleITK 2.x (GDCM) returns (2**BitsStored - 1) - stored for MONOCHROME1: verified here,
    since read_xray's polarity rests on it (it checks each file, and inverts itself otherwise)."""
    pydicom = pytest.importorskip("pydicom")
    import SimpleITK as sitk

    path = real_radiograph("RG3_UNCI.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.int64)
    read = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).squeeze().astype(np.int64)
    assert pydicom.dcmread(path).BitsStored == 10
    np.testing.assert_array_equal(read, 1023 - stored)


def test_dicom_spacing_zero_or_missing_is_unknown(tmp_path):
    pixels = np.round(normalize(radiograph()) * 4000).astype(np.uint16)
    cases = {"zero": {"PixelSpacing": [0, 0]}, "negative": {"ImagerPixelSpacing": [-0.2, 0.2]},
             "missing": {}, "cassette": {"CassetteSize": "24CMX30CM"}}
    for name, tags in cases.items():
        path = dicom(tmp_path / f"{name}.dcm", pixels, "MONOCHROME2", **tags)
        with pytest.warns(UserWarning, match=f"{name}.dcm.*spacing is unknown") as record:
            image = read_xray(path)
        assert image.pixel_mm is None and image.spacing_source is None, name
    assert "about 3.33 mm" in str(record[0].message)  # 300 mm over 90 pixels: a hint, not a value
    path = dicom(tmp_path / "both.dcm", pixels, "MONOCHROME2", PixelSpacing=[0, 0], ImagerPixelSpacing=[0.1, 0.15])
    assert read_xray(path).pixel_mm == (0.1, 0.15)


def test_for_processing_and_inverse_presentation(tmp_path):
    pixels = np.round(normalize(radiograph()) * 4000).astype(np.uint16)
    raw = read_xray(dicom(tmp_path / "raw.dcm", pixels, "MONOCHROME2", ImagerPixelSpacing=[0.2, 0.2],
                          PresentationIntentType="FOR PROCESSING"))
    assert raw.polarity is None  # raw detector values: looks_inverted decides
    inverse = read_xray(dicom(tmp_path / "inv.dcm", pixels, "MONOCHROME2", ImagerPixelSpacing=[0.2, 0.2],
                              PresentationLUTShape="INVERSE"))
    assert inverse.polarity == "bone-bright" and inverse.inverted_on_read
    np.testing.assert_allclose(normalize(inverse.array), 1 - normalize(pixels.astype(float)), atol=1e-6)


# ------------------------------------------------------------- the real radiographs of pydicom-data
PYDICOM_RADIOGRAPHS = ("RG1_UNCI.dcm", "RG3_UNCI.dcm")


def real_radiograph(name):
    """The real file through the manifest (pydicom-data is a dev dependency, installed by make)."""
    from bonelab import data

    return data.real_radiograph({"RG1_UNCI.dcm": "chest", "RG3_UNCI.dcm": "ankle"}[name])


@pytest.mark.parametrize("name, shape, orientation, spacing_warning", ids=["RG1", "RG3"], argvalues=[
    ("RG1_UNCI.dcm", (1955, 1841), ("L", "F"), r"PixelSpacing \(0028,0030\) = '0.000\\\\0.000'"),
    ("RG3_UNCI.dcm", (1760, 1760), ("R", "F"), "no ImagerPixelSpacing or PixelSpacing"),
])
def test_real_radiographs_read_bone_bright(name, shape, orientation, spacing_warning):
    """Both NEMA computed radiographs are MONOCHROME1 and bright at their collimated borders;
    neither states a usable spacing (RG1 says 0 x 0, RG3 none: checked with pydicom)."""
    import pydicom

    path = real_radiograph(name)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert "ImagerPixelSpacing" not in header
    with pytest.warns(UserWarning, match=spacing_warning):
        image = read_xray(path)
    assert image.array.shape == shape and image.pixel_mm is None and image.orientation == orientation
    assert (image.photometric, image.inverted_on_read, image.polarity) == ("MONOCHROME1", True, "bone-bright")
    film = normalize(image.array)
    assert not looks_inverted(film) and looks_inverted(1 - film)
    seen = {}
    for case, (given, invert) in {"auto": (image, "auto"), "as is": (image, False),
                                  "heuristic": (XrayImage(image.array), "auto"),  # no polarity stated
                                  "stated dark": (XrayImage(-image.array, polarity="bone-dark"), "auto")}.items():
        net = Spy()
        segment_xray(given, net, size=64, invert=invert)
        seen[case] = net.seen.numpy()
    for case in ("auto", "heuristic", "stated dark"):
        np.testing.assert_allclose(seen[case], seen["as is"], atol=1e-5, err_msg=case)


def read_real(name):
    path = real_radiograph(name)
    with pytest.warns(UserWarning, match="spacing is unknown"):  # neither states a usable one
        return read_xray(path)


def test_real_chest_lungs_dark_and_ankle_shutters_bright():
    """Ground truth for 'bone-bright' from the anatomy: in RG1 (chest PA) the lung fields are darker
    than the spine between them; in RG3 the collimated bands left and right are white, and the
    direct exposure beside the leg is black."""
    chest, ankle = (normalize(read_real(name).array) for name in PYDICOM_RADIOGRAPHS)
    rows = slice(600, 1200)
    assert chest[rows, 400:700].mean() + 0.2 < chest[rows, 850:1000].mean() > chest[rows, 1150:1450].mean() + 0.2
    assert ankle[:, :300].min() > 0.99 and ankle[:, -300:].min() > 0.99
    assert np.median(ankle[800:900, 520:600]) < 0.1
    rows, cols = exposed_field(ankle)
    assert rows == slice(0, 1760) and 440 < cols.start < 520 and 1180 < cols.stop < 1300


def test_real_radiographs_through_the_manifest():
    from bonelab import data

    with pytest.raises(InvalidArgumentError, match="ankle"):
        data.real_radiograph("chest.dcm")
    for name in PYDICOM_RADIOGRAPHS:
        assert real_radiograph(name).stat().st_size > 6_000_000
