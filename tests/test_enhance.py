"""bonelab.enhance (bone enhancement and subtraction in the line-integral domain) and
bonelab.extract_bones (a bone-extraction network applied to a reader's radiograph)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

import bonelab
from bonelab.drr.physics import to_radiograph
from bonelab.enhance import enhance, soft_tissue
from bonelab.errors import InvalidArgumentError, InvalidValuesError
from bonelab.models import ModelSpec, save_spec
from bonelab.segment import MIN_SIDE, BoneExtraction, extract_bones


def line_integrals(h=48, w=64):
    """Attenuation line integrals (dimensionless, mu * length) of a soft-tissue slab with a bone
    inside, as a ray caster gives them: ``(p_soft, p_bone)``."""
    y, x = np.mgrid[:h, :w]
    soft = np.where((x > 8) & (x < w - 8), 1.2 + 0.3 * np.sin(y / 7.0), 0.0)
    bone = np.where((abs(x - w / 2) < 6) & (y > 5) & (y < h - 5), 0.8 + 0.01 * y, 0.0)
    return soft, bone


def display(p, gamma=1.0, high=3.0):
    """The bonelab display of line integral ``p``: a window (0, high) of -ln(I/I0), to a gamma."""
    return to_radiograph(np.exp(-p), window=(0.0, high), gamma=gamma)


def test_image_is_soft_tissue_plus_bones_in_the_linear_display():
    soft, bone = line_integrals()
    image, bones = display(soft + bone), display(bone)
    np.testing.assert_allclose(soft_tissue(image, bones), display(soft), atol=1e-6)
    for weight in (0.5, 1.0, 3.0):  # the display of soft + (1 + w) bone, window (1 + w) times wider
        expected = display(soft + (1 + weight) * bone, high=3.0 * (1 + weight))
        np.testing.assert_allclose(enhance(image, bones, weight), expected, atol=1e-6)
    np.testing.assert_allclose(enhance(image, bones, 0.0), image, atol=1e-7)
    np.testing.assert_allclose(enhance(image, bones, -1.0), soft_tissue(image, bones), atol=1e-7)
    out = enhance(image, bones, 1.0)
    assert out.dtype == np.float32 and out.shape == image.shape and 0 <= out.min() and out.max() <= 1


def test_bone_contrast_grows_with_the_weight_and_air_stays_black():
    soft, bone = line_integrals()
    image, bones = display(soft + bone), display(bone)
    in_bone, in_soft = (24, 32), (24, 12)
    ratios = [enhance(image, bones, w)[in_bone] / enhance(image, bones, w)[in_soft] for w in (0, 0.5, 1, 2, 4)]
    assert np.all(np.diff(ratios) > 0)
    assert enhance(image, bones, 2.0)[0, 0] == 0  # air


def test_a_display_gamma_is_undone_and_reapplied():
    soft, bone = line_integrals()
    gamma = 1.7
    image, bones = display(soft + bone, gamma), display(bone, gamma)
    np.testing.assert_allclose(soft_tissue(image, bones, gamma=gamma), display(soft, gamma), atol=1e-5)
    # ignoring the curve gets it wrong: the sum holds for the linear display only
    assert np.abs(soft_tissue(image, bones) - display(soft, gamma)).max() > 0.05


def test_batches_and_tensors():
    soft, bone = line_integrals()
    image = np.stack([display(soft + bone), display(soft + 0.5 * bone)])[:, None]
    bones = np.stack([display(bone), display(0.5 * bone)])[:, None]
    batch = soft_tissue(image, bones)
    assert batch.shape == (2, 1, 48, 64)
    np.testing.assert_allclose(batch[0, 0], batch[1, 0], atol=1e-6)  # the same soft tissue
    t = enhance(torch.from_numpy(image), torch.from_numpy(bones), 1.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), enhance(image, bones, 1.0), atol=1e-7)


def test_enhance_input_checks():
    a = np.full((8, 8), 0.5)
    with pytest.raises(InvalidArgumentError, match="differ in shape"):
        enhance(a, np.zeros((8, 9)))
    with pytest.raises(InvalidArgumentError, match=r"\(N, 1, H, W\)"):
        soft_tissue(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(InvalidValuesError, match=r"\[0, 1\]"):
        enhance(a * 255, a)
    with pytest.raises(InvalidValuesError, match="NaN"):
        soft_tissue(a, np.full((8, 8), np.nan))
    with pytest.raises(InvalidArgumentError, match="weight"):
        enhance(a, a, weight=-2)
    with pytest.raises(InvalidArgumentError, match="gamma"):
        enhance(a, a, gamma=0)


# ---------------------------------------------------------------------------------- extract_bones
def film(h=80, w=100):
    """A smooth bone-bright toy radiograph: dark air, a soft-tissue slab, a brighter bone."""
    img = np.full((h, w), 0.05)
    img[10:70, 15:85] = 0.4
    img[20:60, 40:60] = 0.9
    return ndimage.gaussian_filter(img, 2.0)


def bones_run(folder, task="bones", out_channels=1, size=(64, 64)):
    """A tiny untrained U-Net run folder as bonelab.train writes it (model.json + best.pt)."""
    from bonelab.train import CHECKPOINT_FORMAT

    spec = ModelSpec("unet2d", {"out_channels": out_channels, "channels": [4, 8], "num_res_units": 0}, task=task,
                     label_names=("bone",), input_size=size, input_spacing_mm=(1.0, 1.0))
    folder.mkdir(parents=True, exist_ok=True)
    save_spec(folder, spec)
    torch.manual_seed(0)
    torch.save({"format": CHECKPOINT_FORMAT, "model": spec.build().state_dict()}, folder / "best.pt")
    return folder


def test_identity_network_gives_the_image_as_bones_and_no_soft_tissue():
    img = film()
    for kwargs in ({"size": 48}, {"spec": ModelSpec("x", input_size=(32, 32), input_spacing_mm=(1.0, 1.0)),
                                  "pixel_mm": 0.5}):  # padded and resized; resampled + sliding windows
        out = extract_bones(img, torch.nn.Identity(), **kwargs)
        assert isinstance(out, BoneExtraction) and out.sliding == ("pixel_mm" in kwargs)
        for name in ("image", "bones", "enhanced", "soft_tissue"):
            a = getattr(out, name)
            assert a.shape == img.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1, name
        np.testing.assert_allclose(out.image, bonelab.segment.normalize(img), atol=1e-6)
        err = np.abs(out.bones - out.image)
        assert err.mean() < 0.01 and err.max() < 0.1, kwargs  # resizing error only
        assert out.soft_tissue.mean() < 0.01 and out.soft_tissue.max() < 0.1
        np.testing.assert_allclose(out.enhanced, (out.image + out.bones) / 2, atol=1e-6)  # weight 1


def test_bone_dark_input_is_turned_around():
    img = film()
    out = extract_bones(img.max() - img, torch.nn.Identity(), size=48)
    assert out.inverted
    np.testing.assert_allclose(out.image, bonelab.segment.normalize(img), atol=1e-6)
    assert not extract_bones(img.max() - img, torch.nn.Identity(), size=48, invert=False).inverted


def test_run_folder_and_grey_rgb(tmp_path):
    run = bones_run(tmp_path / "run")
    rgb = np.repeat(film()[..., None], 4, axis=-1)  # grey stored as RGBA
    out = bonelab.extract_bones(rgb, run, weight=2.0, device="cpu")
    assert out.bones.shape == (80, 100) and np.isfinite(out.bones).all() and out.weight == 2.0
    np.testing.assert_allclose(out.enhanced, enhance(out.image, out.bones, 2.0), atol=1e-7)


def test_bad_inputs(tmp_path):
    from PIL import Image

    img = film()
    colour = np.stack([img, img * 0.5, 1 - img], axis=-1)
    with pytest.raises(InvalidValuesError, match="colour"):
        extract_bones(colour, torch.nn.Identity(), size=32)
    Image.fromarray(np.round(colour * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(InvalidValuesError, match="photo.png is a colour picture"):
        extract_bones(tmp_path / "photo.png", torch.nn.Identity(), size=32)
    grey = np.round(np.repeat(img[..., None], 3, axis=-1) / img.max() * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert extract_bones(tmp_path / "grey.png", torch.nn.Identity(), size=32).bones.shape == (80, 100)
    with pytest.raises(InvalidValuesError, match=f"20 x 40 pixels.*at least {MIN_SIDE}"):
        extract_bones(img[:20, :40], torch.nn.Identity(), size=32)
    with pytest.raises(InvalidArgumentError, match="task 'wrist', not 'bones'"):
        extract_bones(img, bones_run(tmp_path / "wrist", task="wrist"))
    with pytest.raises(InvalidArgumentError, match="task 'wrist'"):
        extract_bones(img, torch.nn.Identity(), spec=ModelSpec("unet2d", task="wrist", input_size=(32, 32)))
    with pytest.raises(InvalidArgumentError, match="returns 2 channels"):
        extract_bones(img, torch.nn.Conv2d(1, 2, 1), size=32)
    with pytest.raises(InvalidArgumentError, match="returns 3 channels"):
        extract_bones(img, bones_run(tmp_path / "three", out_channels=3), device="cpu")
    with pytest.raises(InvalidArgumentError, match="weight"):
        extract_bones(img, torch.nn.Identity(), size=32, weight=-3)
    with pytest.raises(InvalidArgumentError, match="size"):
        extract_bones(img, torch.nn.Identity())


def test_real_chest_radiograph_through_an_untrained_run(tmp_path):
    from bonelab import data

    run = bones_run(tmp_path / "run")
    with pytest.warns(UserWarning, match="spacing is unknown"):
        out = bonelab.extract_bones(data.real_radiograph("chest"), run, device="cpu")
    assert not out.inverted and out.pixel_mm is None and not out.sliding  # MONOCHROME1, read bone-bright
    for name in ("image", "bones", "enhanced", "soft_tissue"):
        a = getattr(out, name)
        assert a.shape == (1955, 1841) and a.dtype == np.float32, name
        assert np.isfinite(a).all() and 0 <= a.min() and a.max() <= 1, name
