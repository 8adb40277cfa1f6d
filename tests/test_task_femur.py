"""bonelab.tasks.femur and bonelab.segment.segment_ct: QCT acquisition, the data set, the V-Net
training interface, scoring and BMD, against the phantoms' ground truth."""

import json

import numpy as np
import pytest
import torch

from bonelab import qct
from bonelab.errors import InvalidArgumentError, NotCTError
from bonelab.tasks import femur
from bonelab.volume import Volume

SMALL = {"phantom_spacing_mm": 2.0, "spacing_mm": 3.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("femur")
    femur.make_dataset(out, subjects=4, splits=(0.5, 0.25, 0.25), workers=1, progress=False, **SMALL)
    return out


def test_acquire_makes_thick_slices_of_the_drawn_spacing():
    z = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((1, 10, 10), np.float32)  # HU = z index
    ct = Volume(z, (1.0, 1.0, 1.0))
    scan = qct_scan = femur.acquire(ct, 0.5, 4.0)
    assert scan.spacing == (0.5, 0.5, 4.0) and scan.shape == (10, 20, 20)
    # a 4 mm slice averages the 4 phantom slices under it: slice 0 covers z = 0..3 (mean 1.5)
    assert qct_scan.array[0, 5, 5] == pytest.approx(1.5, abs=0.3)
    assert scan.array[5, 5, 5] == pytest.approx(21.5, abs=0.1)
    with pytest.raises(InvalidArgumentError, match="plausible"):
        femur.acquire(ct, 0.0, 2.0)


def test_occupancy_keeps_the_volume_of_a_ball():
    g = (np.indices((60, 60, 60)) - 29.5) * 0.5
    ball = (np.sqrt((g**2).sum(axis=0)) < 10.0).astype(np.uint8)  # r = 10 mm on a 0.5 mm grid
    fine = Volume(ball, (0.5,) * 3, (0.0,) * 3)
    coarse = Volume(np.zeros((15, 15, 15), np.uint8), (2.0,) * 3, (0.75,) * 3)
    occ = femur.occupancy(fine, coarse)
    assert occ.min() >= 0 and occ.max() <= 1
    true_ml = ball.sum() * 0.125 / 1000
    assert occ.sum() * 8.0 / 1000 == pytest.approx(true_ml, rel=0.03)


def test_make_dataset_writes_subjects_with_their_truth(data):
    info = femur.dataset_info(data)
    assert [s["split"] for s in info["subjects"]] == ["train", "train", "val", "test"]
    rows = femur.load_subjects(data, "test", keys=femur.EVAL_KEYS)
    r = rows[0]
    m = r["meta"]
    assert r["image"].shape == r["label"].shape == tuple(m["image_grid"]["shape"])
    assert r["truth_hu"].shape == r["truth_label"].shape
    assert 0.6 <= m["pixel_mm"] <= 1.0 and 1.0 <= m["slice_mm"] <= 3.0
    assert np.linalg.norm(np.subtract(m["head_found_mm"], m["head_true_mm"])) < 6.0
    assert m["calibration_fit"]["slope_hu_per_mg_cm3"] == pytest.approx(
        m["calibration_true"]["slope_hu_per_mg_cm3"], rel=0.02)
    # the network-grid occupancy holds the femur's volume of the truth grid
    truth_ml = r["truth_label"].sum() * np.prod(m["truth_grid"]["spacing"]) / 1000
    assert r["label"].sum() * 27.0 / 1000 == pytest.approx(truth_ml, rel=0.05)
    with pytest.raises(InvalidArgumentError, match="no 'holdout'"):
        femur.load_subjects(data, "holdout")


def test_a_perfect_prediction_scores_near_one_and_changes_no_bmd(data):
    rows = femur.load_subjects(data, "test", keys=femur.EVAL_KEYS)
    probs = [r["label"] for r in rows]  # the occupancy itself: the best a network on this grid can do
    df = femur.score(rows, probs)
    assert df["dice"].iloc[0] > 0.95 and df["specificity"].iloc[0] > 0.99
    # what little is wrong is the boundary layer: within a voxel of the truth grid of the surface
    spacing = max(rows[0]["meta"]["truth_grid"]["spacing"])
    assert np.percentile(femur.error_depths(rows[0], probs[0]), 95) <= 1.5 * spacing
    far = probs[0].copy()
    far[:4] = 1.0  # a slab of false bone at one end of the region
    assert femur.error_depths(rows[0], far).max() > 5 * spacing
    bmd = femur.bmd_rows(rows, probs)
    wide = bmd.pivot_table(index=["region", "measure"], columns="way", values="value")
    # the scan over a perfect mask reads the true density to within the slice and pixel blur
    integral = wide.loc[("total", "vBMD integral")]
    assert integral["scan_pred_mask"] == pytest.approx(integral["true"], rel=0.1)
    # regions from axes measured on the mask read what the phantom's axes read, to a few per cent
    neck = wide.loc[("neck", "vBMD integral")]
    assert neck["scan_pred_mask_axes"] == pytest.approx(neck["scan_pred_mask"], rel=0.05)
    # measured on this coarse set (2 mm phantoms): 1.4-4.8 % over the regions and measures
    assert femur.bmd_errors(bmd)["rel_axes_%"].max() < 8.0
    axes = femur.axes_errors(rows, probs).set_index("mask")
    # measured here (true mask / the occupancy resampled): head 0.09 / 0.36 mm, shaft 1.5 / 4.0 deg,
    # junction 5.2 / 7.1 mm
    assert list(axes.index) == ["true", "network"] and (axes["head centre (mm)"] < 1.5).all()
    assert (axes["shaft axis (deg)"] < 6.0).all() and (axes["junction (mm)"] < 10.0).all()


def test_l2_task_adds_the_squared_weights():
    from bonelab.losses import segmentation_loss
    from bonelab.steps import L2RegularisedTask

    net = femur.model_spec(vnet={"widths": (4, 8), "convs": (1, 1), "kernel_size": 3}).build()
    task = L2RegularisedTask(segmentation_loss(), l2=0.5)
    batch = {"image": torch.zeros(1, 1, 8, 8, 8), "label": torch.zeros(1, 1, 8, 8, 8)}
    terms = task.training_loss(net, task.prepare_batch(batch, torch.device("cpu")))
    squares = sum(m.weight.pow(2).sum() for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    assert torch.isclose(terms["l2"], squares) and torch.isclose(terms["loss"], terms["fit"] + 0.5 * squares)
    with pytest.raises(InvalidArgumentError, match="l2"):
        L2RegularisedTask(segmentation_loss(), l2=-1.0)


def _fitted_probability(loss, target, steps=1500):
    """The probabilities (sigmoid of free logits) that minimise ``loss`` against ``target``."""
    logits = torch.zeros_like(target, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss(logits, target).backward()
        opt.step()
    return torch.sigmoid(logits).detach()


def test_dice_binarises_partial_volume_targets_and_cross_entropy_keeps_them():
    # why train(loss="dice+bce+l2") exists: a surface voxel filled to 30 % or 70 %
    from monai.losses import DiceLoss

    from bonelab.losses import segmentation_loss

    target = torch.tensor([1.0] * 40 + [0.7] * 10 + [0.3] * 10 + [0.0] * 40).reshape(1, 1, 100, 1, 1)
    dice = _fitted_probability(DiceLoss(sigmoid=True, batch=True), target).flatten()
    assert dice[40:50].min() > 0.95 and dice[50:60].max() < 0.05  # 0.7 -> 1, 0.3 -> 0: a binary mask
    bce = torch.nn.BCEWithLogitsLoss()
    fraction = _fitted_probability(bce, target).flatten()
    assert torch.allclose(fraction[40:60], target.flatten()[40:60], atol=0.02)  # the fill fraction itself
    both = _fitted_probability(segmentation_loss(), target).flatten()  # the fit term of train(loss="dice+bce+l2")
    assert 0.5 < both[40:50].mean() < 0.95 and 0.05 < both[50:60].mean() < 0.5  # pulled back towards it


def test_train_rejects_an_unknown_loss(tmp_path):
    with pytest.raises(InvalidArgumentError, match="dice\\+bce\\+l2"):  # checked before the data are read
        femur.train(tmp_path / "no-data", tmp_path / "run", loss="l1", epochs=1)


def test_train_picks_bfloat16_where_the_cpu_has_matrix_units_and_validates_finer(data, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("bonelab.train.train", lambda model, train_ds, val_ds, **kw: seen.update(kw))
    small = {"epochs": 1, "device": "cpu", "vnet": {"widths": (4, 8), "convs": (1, 1), "kernel_size": 3},
             "patch": (16, 16, 16), "progress": False}
    for fast in (True, False):
        monkeypatch.setattr("bonelab.config.cpu_bfloat16_is_fast", lambda fast=fast: fast)
        femur.train(data, tmp_path / "run", **small)
        assert seen["amp"] is fast
    femur.train(data, tmp_path / "run", amp=True, **small)  # asked for: always
    assert seen["amp"] is True
    # 3 mm network voxels over 2 mm phantom voxels: validated on a grid 2 times finer
    assert seen["task"].metric_name == "dice_2x_finer" and seen["task"].inferer is not None  # windows, as predict()

def test_train_runs_and_segment_ct_returns_labels_on_the_ct_grid(data, tmp_path):
    vnet = {"widths": (4, 8), "convs": (1, 1), "kernel_size": 3}
    _, result = femur.train(data, tmp_path / "run", epochs=1, batch_size=2, repeats=1, vnet=vnet, patch=(16, 16, 16),
                            progress=False)  # the default loss, dice+bce+l2: its terms are logged apart
    assert (tmp_path / "run" / "model.json").exists() and result.history[0]["epoch"] == 1
    assert result.history[0]["train_l2"] > 0 and result.history[0]["train_fit"] > 0
    from bonelab.phantoms.hip import hip
    from bonelab.segment import segment_ct

    ct = hip(1, spacing=2.5).ct
    labels = segment_ct(ct, tmp_path / "run")
    assert labels.shape == ct.shape and labels.spacing == ct.spacing and labels.label_names == {1: "femur_left"}
    lo, hi = qct.hip_roi(ct, "left")
    inside = qct.crop_mm(labels, lo, hi).array.sum()
    assert inside == labels.array.sum()  # nothing outside the hip's region of interest
    from bonelab.phantoms.chest import chest

    with pytest.raises(NotCTError):
        segment_ct(chest(0, spacing=3.0).ct, tmp_path / "run")
    with pytest.raises(InvalidArgumentError, match="input_spacing_mm"):
        segment_ct(ct, torch.nn.Conv3d(1, 1, 1))


def test_bmd_command_reads_the_rods_and_reports(tmp_path, capsys):
    from bonelab import io
    from bonelab.cli import main
    from bonelab.phantoms.hip import hip

    s = hip(2, spacing=2.5)
    io.write(s.ct, tmp_path / "ct.nii.gz")
    femur_only = Volume((s.labels.array == 1).astype(np.uint8), s.ct.spacing, s.ct.origin)
    io.write(femur_only, tmp_path / "labels.nii.gz")
    rods = {k: s.params["calibration"][k] for k in ("rod_centers_xy_mm", "rod_radius_mm", "concentrations_mg_cm3")}
    (tmp_path / "rods.json").write_text(json.dumps(rods))
    args = ["bmd", str(tmp_path / "ct.nii.gz"), "--labels", str(tmp_path / "labels.nii.gz"), "--rods",
            str(tmp_path / "rods.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    slope = float(out.split(" x mg/cm3")[0].split("+ ")[-1])
    assert slope == pytest.approx(s.params["calibration"]["slope_hu_per_mg_cm3"], rel=0.01)
    assert "vBMD trabecular" in out and "g/cm2" in out
    # the regions come from axes measured on the mask; the phantom's own axes give nearly the same neck
    from bonelab import qct

    region_vbmd = dict(line.split()[:2] for line in out.splitlines() if line.startswith(("neck ", "trochanter ", "total ")))
    f = s.params["femur_left"]
    true_regions = qct.femur_regions(s.ct, **femur._femur_axes(s.params))
    cal = qct.calibrate(s.ct, rods)
    true_neck = qct.vbmd_mg_cm3(qct.hu_to_bmd_mg_cm3(s.ct, cal), femur_only, true_regions["neck"])
    assert float(region_vbmd["neck"]) == pytest.approx(true_neck, rel=0.05)
    head_mm = float(out.split("femur axes (measured on the mask): head ")[1].split(" mm")[0])
    assert head_mm == pytest.approx(f["head_diameter_mm"], abs=2.0)
    # the total region stops 45 mm below the neck: the shaft's thick cortex is left out of it
    assert float(region_vbmd["total"]) < float(out.split("vBMD integral")[1].split()[0])
    (tmp_path / "rods.json").write_text(json.dumps({**rods, "concentrations_mg_cm3": rods["concentrations_mg_cm3"][::-1]}))
    assert main(args) == 1
    assert "slope" in capsys.readouterr().err
    one_rod = {**rods, "rod_centers_xy_mm": rods["rod_centers_xy_mm"][:1], "concentrations_mg_cm3": [50.0]}
    (tmp_path / "rods.json").write_text(json.dumps(one_rod))
    assert main(args) == 1
    assert "at least two rods" in capsys.readouterr().err
    io.write(Volume(femur_only.array[:, ::2, ::2].copy(), (5.0, 5.0, 2.5), s.ct.origin), tmp_path / "coarse.nii.gz")
    assert main(["bmd", str(tmp_path / "ct.nii.gz"), "--labels", str(tmp_path / "coarse.nii.gz"), "--rods",
                 str(tmp_path / "rods.json")]) == 1
    assert "grid" in capsys.readouterr().err
