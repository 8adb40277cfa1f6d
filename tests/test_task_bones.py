"""The bone-extraction task (chapter 4): training run folders, predictions, scores against the targets."""

import numpy as np
import pytest

from bonelab import simulate as sim
from bonelab.errors import InvalidArgumentError
from bonelab.tasks import bones


@pytest.fixture(scope="module")
def chest_bones(tmp_path_factory):
    return sim.simulate(tmp_path_factory.mktemp("bones"), "localizer", subjects=3, size=128, spacing=6.0,
                        target="bone-radiograph", fractions=(1, 1, 1), workers=1, progress=False)


@pytest.fixture(scope="module")
def trained(chest_bones, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    bones.train(chest_bones, run, epochs=1, channels=(4, 8, 16), batch_size=4, progress=False, device="cpu")
    return run


def test_run_folder_names_the_task_and_rebuilds_a_one_channel_network(trained):
    from bonelab.models import read_spec

    spec = read_spec(trained)
    assert spec.task == "bones" and spec.settings["out_channels"] == 1 and spec.input_size == (128, 128)
    assert spec.extra["loss"] == "l1+ms-ssim"
    pred = bones.predict(bones.load_model(trained), np.random.default_rng(0).random((2, 1, 128, 128)), device="cpu")
    assert pred.shape == (2, 1, 128, 128) and pred.min() >= 0 and pred.max() <= 1


def test_perfect_prediction_scores_zero_error_and_unit_similarity(chest_bones):
    targets = np.asarray(sim.load_split(chest_bones, "test").targets, np.float32)
    rows = bones.score(targets, chest_bones, "test")
    assert set(rows["view"]) == set(sim.protocol("localizer").views)
    np.testing.assert_allclose(rows[["rmse", "rmse_255"]].to_numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(rows[["ssim", "ms_ssim", "ssim_255", "ms_ssim_255"]].to_numpy(), 1.0, atol=1e-4)


def test_scores_on_both_scales_agree_and_the_table_averages_them(chest_bones):
    rng = np.random.default_rng(1)
    targets = np.asarray(sim.load_split(chest_bones, "test").targets, np.float32)
    noisy = np.clip(targets + 0.05 * rng.standard_normal(targets.shape), 0, 1).astype(np.float32)
    rows = bones.score(noisy, chest_bones, "test")
    np.testing.assert_allclose(rows["rmse_255"], 255 * rows["rmse"], rtol=1e-4)
    np.testing.assert_allclose(rows["psnr_255"], rows["psnr"], rtol=1e-4)
    rmse = np.sqrt(((noisy - targets) ** 2).reshape(len(targets), -1).mean(axis=1))
    np.testing.assert_allclose(rows["rmse"], rmse, rtol=1e-4)
    table = bones.quality_table(rows, scale="1")
    assert table.loc["all", "RMSE"] == pytest.approx(rows["rmse"].mean())
    view = rows["view"].iloc[0]
    assert table.loc[view, "SSIM"] == pytest.approx(rows.loc[rows["view"] == view, "ssim"].mean())


def test_floors_are_worse_than_the_truth_and_zeros_score_no_structure(chest_bones):
    floors = bones.floor_scores(chest_bones, "test")
    assert sorted(floors) == ["input as bones", "no bone"]
    rows = floors["input as bones"]
    assert (rows["rmse"] > 0.005).all() and (rows["ssim"] < 0.999).all()
    targets = np.asarray(sim.load_split(chest_bones, "test").targets, np.float64)
    rms = np.sqrt((targets ** 2).reshape(len(targets), -1).mean(axis=1))
    np.testing.assert_allclose(floors["no bone"]["rmse"], rms, rtol=1e-4)   # zeros: RMSE is the target's RMS


def test_task_refuses_a_data_set_of_masks(tmp_path):
    masks = sim.simulate(tmp_path / "masks", "wrist", subjects=2, views=("pa",), size=32, spacing=2.0,
                         fractions=(1, 1, 0), workers=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="target 'masks'.*bone-radiograph"):
        bones.train(masks, tmp_path / "run", epochs=1, progress=False)


def test_augmentation_moves_input_and_target_together():
    """``affine``: the same random rotation, scaling and shift of input and target (so the
    target still lines up with its film); ``flip``: the same mirror image."""
    import torch

    image = torch.zeros(1, 64, 64)
    image[0, 10:30, 20:24] = 1.0
    sample = {"image": image.clone(), "target": 0.5 * image.clone()}
    affine = bones.augmentation(affine=True, side_px=64).set_random_state(seed=0)
    moved = [affine(dict(sample)) for _ in range(10)]
    changed = [m for m in moved if not torch.allclose(torch.as_tensor(m["image"]), image)]
    assert 5 <= len(changed) <= 10      # 80 % of the samples are moved
    for m in changed:
        np.testing.assert_allclose(np.asarray(m["target"]), 0.5 * np.asarray(m["image"]), atol=1e-6)
    flipped = bones.augmentation(flip=True).set_random_state(seed=0)
    outs = [flipped(dict(sample)) for _ in range(6)]
    assert any(not torch.allclose(torch.as_tensor(o["image"]), image) for o in outs)
    for out in outs:
        np.testing.assert_allclose(np.asarray(out["target"]), 0.5 * np.asarray(out["image"]), atol=1e-6)


def test_flip_average_is_the_mean_of_the_image_and_its_mirror_image():
    import torch

    class LeftHeavy(torch.nn.Module):   # not mirror-symmetric: weights grow to the right
        def forward(self, x):
            return x * torch.linspace(0.0, 1.0, x.shape[-1])

    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    plain = bones.predict(LeftHeavy(), x, device="cpu")
    both = bones.predict(LeftHeavy(), x, flip_average=True, device="cpu")
    np.testing.assert_allclose(plain, x * np.linspace(0, 1, 8), atol=1e-6)
    np.testing.assert_allclose(both, 0.5 * x, atol=1e-6)   # (w + reversed w) / 2 = 1/2 everywhere
