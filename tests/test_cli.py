"""The `bonelab` command: info and drr on a small synthetic CT, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from bonelab.cli import COMMANDS, main


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    """A 40x36x32 CT: air around a water cylinder holding a bone rod; labels on the same grid."""
    folder = tmp_path_factory.mktemp("cli")
    z, y, x = np.mgrid[:32, :36, :40]
    hu = np.full((32, 36, 40), -1000.0, np.float32)
    body = (x - 20) ** 2 + (y - 18) ** 2 < 14**2
    rod = (x - 14) ** 2 + (y - 18) ** 2 < 3**2
    hu[body] = 0.0
    hu[rod] = 1200.0
    lab = np.zeros(hu.shape, np.uint8)
    lab[rod] = 1
    lab[body & (x > 24)] = 2
    spacing = (1.5, 1.5, 2.0)
    paths = {}
    for name, arr in (("ct", hu), ("labels", lab)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(img, str(paths[name]))
    other = sitk.GetImageFromArray(lab[:, :, :20].copy())
    paths["other"] = folder / "other.nii.gz"
    sitk.WriteImage(other, str(paths["other"]))
    return paths


def test_info_prints_geometry_and_hu(ct_files, capsys):
    assert main(["info", str(ct_files["ct"])]) == 0
    out = capsys.readouterr().out
    assert "40 x 36 x 32 voxels" in out
    assert "1.5, 1.5, 2 mm" in out
    assert "orientation LPS" in out
    assert "min -1000" in out and "max 1200" in out


@pytest.mark.parametrize("suffix", [".npy", ".png", ".nii.gz", ".tif"])
def test_drr_writes_each_format_and_prints_the_geometry(ct_files, tmp_path, capsys, suffix):
    out = tmp_path / f"drr{suffix}"
    code = main(["drr", str(ct_files["ct"]), "--size", "24", "20", "--output", "line-integral", "--out", str(out)])
    assert code == 0 and out.exists()
    printed = capsys.readouterr().out
    assert "detector 24 x 20 px" in printed and "SDD 1020.0 mm" in printed and f"wrote {out}" in printed
    if suffix == ".npy":
        img = np.load(out)
        assert img.shape == (20, 24)
        # 42 mm of water (0.0206/mm at 60 keV) = 0.87; through the 9 mm bone rod up to ~1.1
        assert 0.8 < img.max() < 1.2
        assert img[10, 6] > img[10, 18]  # the bone rod (patient's right, x=14) sits left of centre


def test_drr_batch_lateral_labels_and_poly(ct_files, tmp_path, capsys):
    out = tmp_path / "views.npy"
    assert main(["drr", str(ct_files["ct"]), "--labels", str(ct_files["labels"]), "--view", "carm",
                 "--angle", "0", "90", "--kvp", "80", "--size", "16", "--out", str(out)]) == 0
    img = np.load(out)
    assert img.shape == (2, 16, 16) and 0 <= img.min() and img.max() <= 1
    masks = np.load(tmp_path / "views_labels.npy")
    assert masks.shape == (2, 2, 16, 16) and masks.dtype == np.uint8 and masks[0, 0].sum() > 0
    side = json.loads((tmp_path / "views_labels.json").read_text())
    assert [c["value"] for c in side["channels"]] == [1, 2]
    printed = capsys.readouterr().out
    assert "geometry 2/2" in printed and "2 label channels" in printed


@pytest.mark.parametrize("argv, message", [
    (["info", "missing.nii.gz"], "missing.nii.gz"),
    (["drr", "{ct}", "--out", "x.jpg"], "unknown image type"),
    (["drr", "{ct}", "--sid", "5", "--out", "{tmp}/a.npy"], "inside the CT volume"),
    (["drr", "{ct}", "--size", "0", "--out", "{tmp}/a.npy"], "positive"),
    (["drr", "{ct}", "--labels", "{other}", "--out", "{tmp}/a.npy"], "grid"),
    (["drr", "{ct}", "--view", "ap", "--angle", "30", "--out", "{tmp}/a.npy"], "--angle"),
])
def test_bad_input_exits_non_zero_with_one_line(ct_files, tmp_path, argv, message):
    argv = [a.format(ct=ct_files["ct"], other=ct_files["other"], tmp=tmp_path) for a in argv]
    r = subprocess.run([sys.executable, "-m", "bonelab.cli", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and message in lines[0], r.stderr


def test_subcommands_are_a_registry():
    assert {"info", "drr", "extract-bones"} <= set(COMMANDS)
    help_, add, run = COMMANDS["drr"]
    assert callable(add) and callable(run) and help_


# --- bonelab extract-bones ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def bones_files(tmp_path_factory):
    """A 16-bit grey PNG radiograph, a colour photo, and tiny untrained run folders (bones, wrist)."""
    import torch
    from PIL import Image

    from bonelab.models import ModelSpec, save_spec
    from bonelab.train import CHECKPOINT_FORMAT

    folder = tmp_path_factory.mktemp("bones")
    img = np.full((60, 80), 0.05)
    img[8:52, 10:70] = 0.4
    img[16:44, 30:50] = 0.9
    img += np.random.default_rng(0).normal(0, 0.01, img.shape)
    Image.fromarray(np.round(np.clip(img, 0, 1) * 60000).astype(np.uint16)).save(folder / "film.png")
    photo = np.stack([img, 0.5 * img, 1 - img], axis=-1)
    Image.fromarray(np.round(np.clip(photo, 0, 1) * 255).astype(np.uint8)).save(folder / "photo.png")
    paths = {"film": folder / "film.png", "photo": folder / "photo.png"}
    for task in ("bones", "wrist"):
        spec = ModelSpec("unet2d", {"out_channels": 1, "channels": [4, 8], "num_res_units": 0}, task=task,
                         input_size=(32, 32), input_spacing_mm=(1.0, 1.0))
        run = folder / f"run_{task}"
        run.mkdir()
        save_spec(run, spec)
        torch.manual_seed(0)
        torch.save({"format": CHECKPOINT_FORMAT, "model": spec.build().state_dict()}, run / "best.pt")
        paths[task] = run
    return paths


def test_extract_bones_writes_16_bit_pngs_and_the_array(bones_files, tmp_path, capsys):
    from PIL import Image

    from bonelab.segment import extract_bones

    out = tmp_path / "out"
    assert main(["extract-bones", str(bones_files["film"]), "--model", str(bones_files["bones"]), "--out", str(out),
                 "--weight", "2", "--invert", "no", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "60 x 80 px" in printed and "weight 2" in printed
    expected = extract_bones(bones_files["film"], bones_files["bones"], invert=False, weight=2.0, device="cpu")
    for name in ("bones", "enhanced", "soft_tissue"):
        path = out / f"{name}.png"
        assert f"wrote {path}" in printed
        with Image.open(path) as png:
            assert png.mode.startswith("I;16") and png.size == (80, 60), name
            pixels = np.asarray(png)
        np.testing.assert_allclose(pixels / 65535, getattr(expected, name), atol=1 / 65535, err_msg=name)
    np.testing.assert_array_equal(np.load(out / "bones.npy"), expected.bones)
    assert f"wrote {out / 'bones.npy'}" in printed


@pytest.mark.parametrize("argv, message", [
    (["{photo}", "--model", "{bones}"], "colour picture"),
    (["{film}", "--model", "{wrist}"], "task 'wrist', not 'bones'"),
    (["{film}", "--model", "{tmp}/no_run"], "model.json"),
    (["{film}", "--model", "{bones}", "--weight", "-5"], "weight"),
])
def test_extract_bones_bad_input_exits_non_zero_with_one_line(bones_files, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path, **bones_files) for a in argv]
    r = subprocess.run([sys.executable, "-m", "bonelab.cli", "extract-bones", *argv, "--out", str(tmp_path / "o"),
                        "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and message in lines[0], r.stderr
    assert not (tmp_path / "o").exists()  # nothing written
