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
    assert {"info", "drr"} <= set(COMMANDS)
    help_, add, run = COMMANDS["drr"]
    assert callable(add) and callable(run) and help_
