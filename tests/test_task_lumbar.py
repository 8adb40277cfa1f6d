"""The lumbar task of chapter 5: targets, level naming, metrics, both model families, detect_vertebrae."""

import numpy as np
import pytest
import torch

from bonelab import InvalidArgumentError
from bonelab import simulate as sim
from bonelab.tasks import lumbar


def _bar(shape, rows, cols):
    m = np.zeros(shape, bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


# --- level naming ----------------------------------------------------------------------------
def test_order_levels_counts_up_from_the_sacrum_and_leaves_an_extra_top_vertebra_unnamed():
    shape = (80, 10)
    rows = [(0, 4), (10, 14), (20, 24), (30, 34), (40, 44), (50, 54)]  # T12, L1..L5 from the top
    masks = np.stack([_bar(shape, r, (0, 10)) for r in rows] + [_bar(shape, (60, 75), (0, 10))])
    labels = np.array([1] * 6 + [2])
    scores = np.array([0.9, 0.8, 0.95, 0.7, 0.9, 0.85, 0.9])
    levels, kept = lumbar.order_levels(masks, labels, scores)
    assert levels.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert len(kept) == 6


def test_order_levels_drops_duplicates_low_scores_and_detections_below_the_sacrum():
    shape = (80, 10)
    masks = np.stack([_bar(shape, (10, 14), (0, 10)), _bar(shape, (10, 14), (0, 9)),   # a duplicate
                      _bar(shape, (20, 24), (0, 10)), _bar(shape, (30, 34), (0, 10)),   # a low score
                      _bar(shape, (76, 80), (0, 10)), _bar(shape, (60, 70), (0, 10))])  # below the sacrum, sacrum
    labels = np.array([1, 1, 1, 1, 1, 2])
    scores = np.array([0.9, 0.8, 0.9, 0.3, 0.9, 0.9])
    levels, _ = lumbar.order_levels(masks, labels, scores, score_threshold=0.5)
    assert levels.tolist() == [4, 0, 5, 0, 0, 6]


def test_order_levels_without_a_sacrum_counts_from_the_lowest_vertebra():
    masks = np.stack([_bar((40, 5), (r, r + 4), (0, 5)) for r in (0, 10, 20)])
    levels, _ = lumbar.order_levels(masks, np.ones(3, int), np.ones(3))
    assert levels.tolist() == [3, 4, 5]


def test_instance_levels_keeps_the_best_detection_per_level_and_maps_the_most_probable():
    m = np.zeros((3, 1, 6, 6), np.float32)
    m[0, 0, :3] = 1.0    # L2, score 0.6
    m[1, 0, 2:5] = 0.7   # L2 again, score 0.9: wins the level
    m[2, 0, 4:] = 0.95   # L3, score 0.7, overlaps the L2 on row 4, more probable there
    m[2, 0, 5, 0] = 0.4  # below the mask threshold: background
    pred = {"masks": torch.from_numpy(m), "labels": torch.tensor([2, 2, 3]), "scores": torch.tensor([0.6, 0.9, 0.7])}
    levels, cmap, scores = lumbar.instance_levels(pred, "level")
    assert levels[1].sum() == 18 and levels[2].sum() == 11 and not levels[[0, 3, 4, 5]].any()
    assert cmap[:, 0].tolist() == [0, 0, 2, 2, 3, 0] and cmap[:, 1].tolist() == [0, 0, 2, 2, 3, 3]
    assert np.isclose(scores[1], 0.9) and np.isclose(scores[2], 0.7) and np.isnan(scores[0])


def test_instance_levels_needs_the_image_size_when_nothing_is_found():
    empty = {"masks": torch.zeros(0, 1, 5, 7), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    levels, cmap, _ = lumbar.instance_levels(empty, "vertebra", image_size=(5, 7))
    assert levels.shape == (6, 5, 7) and not levels.any() and cmap.shape == (5, 7)
    with pytest.raises(InvalidArgumentError, match="image_size"):
        lumbar.instance_levels(empty, "vertebra")
    with pytest.raises(InvalidArgumentError, match="labelling"):
        lumbar.instance_levels(empty, "levels", image_size=(5, 7))


# --- metrics ---------------------------------------------------------------------------------
def test_fcn_table_against_a_hand_computed_confusion_matrix():
    # truth: 6 background, 4 L1; prediction: background right, L1 half right
    cm = np.zeros((7, 7), np.int64)
    cm[0, 0], cm[1, 1], cm[1, 0] = 6, 2, 2
    row = lumbar.fcn_table({"m": cm[None]}).loc[("m", "all")]
    assert row["pixel accuracy"] == pytest.approx(0.8)
    assert row["mean accuracy"] == pytest.approx((1.0 + 0.5) / 2)          # classes present in the truth
    assert row["mean IoU"] == pytest.approx((6 / 8 + 2 / 4) / 2)
    assert row["f.w. IoU"] == pytest.approx(0.6 * 6 / 8 + 0.4 * 2 / 4)


def test_one_pixel_scores_of_a_square_against_a_hand_count():
    from types import SimpleNamespace

    levels = np.zeros((1, 6, 8, 8), bool)
    levels[0, 2, 2:6, 2:6] = True  # L3, a 4 x 4 square in 64 pixels
    table = lumbar.one_pixel_scores(SimpleNamespace(levels=levels, maps=np.stack([lumbar.level_map(levels[0])])))
    # eroded (cross): 2 x 2 left, IoU 4/16; background 48 of 60 predicted.  Dilated: 16 + 4 x 4 = 32 pixels,
    # IoU 16/32; background 32 of 48.  Mean over the two classes present.
    assert table.loc["truth eroded by 1 px", "mean IoU"] == pytest.approx((4 / 16 + 48 / 60) / 2)
    assert table.loc["truth dilated by 1 px", "mean IoU"] == pytest.approx((16 / 32 + 32 / 48) / 2)
    assert table.loc["truth dilated by 1 px", "mean accuracy"] == pytest.approx((1 + 32 / 48) / 2)


def test_compare_bootstrap_is_zero_for_equal_models_and_positive_for_a_better_one():
    good, bad = np.zeros((4, 7, 7)), np.zeros((4, 7, 7))
    good[:, 0, 0] = good[:, 1, 1] = 10
    bad[:, 0, 0], bad[:, 1, 1], bad[:, 1, 0] = 10, 5, 5
    subjects = np.array(["a", "a", "b", "c"])
    assert lumbar.compare_bootstrap(good, good, subjects, n_resamples=50) == (0.0, 0.0, 0.0)
    d, lo, hi = lumbar.compare_bootstrap(good, bad, subjects, "mean IoU", n_resamples=50)
    assert d == pytest.approx(1.0 - (10 / 15 + 5 / 10) / 2) and lo > 0 and hi >= d


# --- BUU-LSPINE corners ----------------------------------------------------------------------
def test_corner_masks_fill_the_quadrilateral_whatever_the_corner_order():
    rect = np.array([[[2, 3], [11, 3], [11, 8], [2, 8]]])
    crossed = rect[:, [0, 2, 1, 3]]
    a, b = lumbar.corner_masks(rect, (12, 16)), lumbar.corner_masks(crossed, (12, 16))
    assert a.shape == (1, 12, 16) and a.sum() == 10 * 6
    assert (a == b).all() and a[0, 3:9, 2:12].all()
    with pytest.raises(InvalidArgumentError, match=r"\(N, 4, 2\)"):
        lumbar.corner_masks(np.zeros((2, 3, 2)), (12, 16))


# --- the light Mask R-CNN --------------------------------------------------------------------
def test_maskrcnn2d_avoids_torchvision_pitfalls_without_pretrained_weights():
    from torchvision.ops import FrozenBatchNorm2d

    from bonelab.models import maskrcnn2d

    net = maskrcnn2d(num_classes=7, size=96)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert net.transform.min_size == (96,) and net.transform.max_size == 96
    assert net.transform.image_mean == [0.0] and net.transform.image_std == [1.0]
    maps = net.backbone(torch.zeros(1, 1, 96, 96))
    assert list(maps) == ["0", "1", "2", "pool"]
    assert net.rpn.anchor_generator.num_anchors_per_location() == [3] * len(maps)
    assert set(net.roi_heads.box_roi_pool.featmap_names) <= set(maps)
    net.eval()
    out = net([torch.rand(1, 96, 96)])[0]
    assert out["masks"].shape[-2:] == (96, 96)
    with pytest.raises(InvalidArgumentError, match="4 widths"):
        maskrcnn2d(num_classes=7, size=96, widths=(8, 16))


def test_maskrcnn2d_samples_rois_once_per_bin_in_training_and_twice_in_eval():
    from bonelab.models import maskrcnn2d

    net = maskrcnn2d(num_classes=3, size=64)
    pools = (net.roi_heads.box_roi_pool, net.roi_heads.mask_roi_pool)
    assert [p.sampling_ratio for p in pools] == [1, 1]
    net.eval()
    assert [p.sampling_ratio for p in pools] == [2, 2]
    net.train()
    assert [p.sampling_ratio for p in pools] == [1, 1]


def test_paste_masks_puts_a_mask_target_back_where_it_came_from():
    """Round trip against the truth: a vertebra-sized ellipse becomes the 28 x 28 target that
    torchvision trains the mask head on (roi_align, aligned=False, over the exclusive box that
    boxes_from_masks makes); paste_masks must put it back within a fraction of a pixel, and closer
    than torchvision's whole-pixel paste does."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes

    from bonelab.datasets import boxes_from_masks
    from bonelab.metrics import mask_iou
    from bonelab.models import paste_masks

    yy, xx = np.mgrid[:64, :64]
    truth = torch.from_numpy(((yy - 30.3) / 9.5) ** 2 + ((xx - 27.6) / 13.2) ** 2 <= 1)[None]
    boxes = boxes_from_masks(truth)
    target = project_masks_on_boxes(truth.float(), boxes, torch.zeros(1, dtype=torch.long), 28)[:, None]
    ours = paste_masks(target, boxes, (64, 64))[:, 0] > 0.5
    theirs = paste_masks_in_image(target, boxes, (64, 64))[:, 0] > 0.5
    assert float(mask_iou(ours, truth)) > 0.97
    assert float(mask_iou(ours, truth)) > float(mask_iou(theirs, truth)) + 0.02
    assert paste_masks(target[:0], boxes[:0], (64, 64)).shape == (0, 1, 64, 64)


# --- data, training, prediction, detect_vertebrae --------------------------------------------
@pytest.fixture(scope="module")
def lumbar_data(tmp_path_factory):
    return sim.simulate(tmp_path_factory.mktemp("lumbar5"), "lumbar", target="instances", views=("lateral",),
                        spacing=3.0, subjects=3, size=64, physics="fixed", fractions=(1, 1, 1), workers=1,
                        progress=False)


def test_level_split_gives_both_targets_from_the_stored_masks(lumbar_data):
    sem = lumbar.LevelSplit(lumbar_data, "train")
    ins = lumbar.LevelSplit(lumbar_data, "train", "instance", "vertebra")
    s = sem[0]
    assert s["image"].shape == (1, 64, 64) and s["label"].shape == (1, 64, 64)
    assert set(np.unique(s["label"].numpy()).tolist()) <= set(range(7))
    assert (sem.maps[0] == lumbar.level_map(sem.levels[0])).all()
    image, target = ins[0]
    assert set(target["labels"].tolist()) <= {1, 2} and len(target["labels"]) == sem.levels[0].any(axis=(1, 2)).sum()
    cond = lumbar.conditions(lumbar_data, "train", sem)
    assert list(cond.columns) == ["subject", "view", "implants", "degeneration"] and len(cond) == len(sem)


def test_level_split_moves_film_and_masks_together(lumbar_data):
    from monai.transforms import Affined

    shift = Affined(keys=("image", "levels"), translate_params=(0, -3), mode="nearest", padding_mode="zeros")
    plain, moved = lumbar.LevelSplit(lumbar_data, "train"), lumbar.LevelSplit(lumbar_data, "train", transform=shift)
    a, b = plain[0], moved[0]
    assert type(b["image"]) is torch.Tensor  # not MONAI's MetaTensor: it collates like the plain split
    assert torch.equal(b["image"][..., 3:], a["image"][..., :-3]) and (b["image"][..., :3] == 0).all()
    assert torch.equal(b["label"][..., 3:], a["label"][..., :-3])
    _, target = lumbar.LevelSplit(lumbar_data, "train", "instance", transform=shift)[0]
    _, plain_target = lumbar.LevelSplit(lumbar_data, "train", "instance")[0]
    assert torch.allclose(target["boxes"][:, [0, 2]], plain_target["boxes"][:, [0, 2]] + 3)


def test_augmentation_is_seeded_and_invents_no_level(lumbar_data):
    from monai.data.utils import set_rnd

    split = lumbar.LevelSplit(lumbar_data, "train", transform=lumbar.augmentation(64))
    draws = []
    for seed in (0, 0, 1):
        set_rnd(split, seed=seed)
        draws.append(split[0]["label"])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    present = set(np.unique(split.maps[0]).tolist())
    assert set(np.unique(draws[2].numpy()).tolist()) <= present


def test_level_split_refuses_a_data_set_of_another_task(tmp_path):
    other = sim.simulate(tmp_path / "wrist", "wrist", subjects=2, size=32, spacing=2.0, fractions=(1, 1, 0),
                         workers=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="target"):
        lumbar.LevelSplit(other, "train")


def test_train_augments_the_training_films_only_and_picks_the_precision_per_family(lumbar_data, tmp_path,
                                                                                    monkeypatch):
    seen = {}
    monkeypatch.setattr("bonelab.train.train", lambda model, train_ds, val_ds, **kw: seen.update(kw, ds=(train_ds, val_ds)))
    for fast in (True, False):
        monkeypatch.setattr("bonelab.config.cpu_bfloat16_is_fast", lambda fast=fast: fast)
        for model in lumbar.MODELS:
            lumbar.train(lumbar_data, tmp_path / "run", model=model, epochs=1, device="cpu", progress=False)
            train_ds, val_ds = seen["ds"]
            assert train_ds.transform is not None and val_ds.transform is None
            # the U-Net: the loop's default (float32 on a CPU, even one with bfloat16 units);
            # the Mask R-CNN: bfloat16 exactly where the CPU has fast bfloat16
            assert seen["amp"] is (None if model == "semantic" else fast)
    lumbar.train(lumbar_data, tmp_path / "run", epochs=1, device="cpu", progress=False, augment=False)
    assert seen["ds"][0].transform is None


@pytest.mark.parametrize("model,labelling", [("semantic", "level"), ("instance", "level"), ("instance", "vertebra")])
def test_train_predict_score_and_detect_vertebrae(lumbar_data, tmp_path, model, labelling):
    import bonelab

    run = tmp_path / "run"
    _, result = lumbar.train(lumbar_data, run, model=model, labelling=labelling, epochs=1, batch_size=2,
                             progress=False, widths=(4, 8, 16, 32), channels=(4, 8, 16))
    assert result.epochs == 1 and (run / "best.pt").exists()
    test = lumbar.LevelSplit(lumbar_data, "test")
    levels, maps = lumbar.predict_levels(run, test.images)
    assert levels.shape == test.levels.shape and maps.shape == test.maps.shape and maps.max() <= 6
    rows, matrices = lumbar.score(levels, maps, test, sim.metadata(lumbar_data, "test"))
    assert matrices.shape == (len(test), 7, 7) and matrices.sum() == test.maps.size
    assert {"subject", "level", "dice", "iou", "recognised", "present"} <= set(rows.columns)
    film = np.pad(test.images[0, 0], ((10, 0), (0, 30)))  # not the network's size or aspect
    found = bonelab.detect_vertebrae(film, run)
    assert found.class_map.shape == film.shape and found.masks.shape[1:] == film.shape
    assert len(found.levels) == len(found.masks) == len(found.boxes) == len(found.scores)
    assert set(found.levels) <= set(lumbar.LEVELS) and found.model == model


def test_detect_vertebrae_refuses_a_run_of_another_task(tmp_path):
    import bonelab
    from bonelab.models import ModelSpec, save_spec

    save_spec(tmp_path, ModelSpec("unet2d", {"out_channels": 10}, task="wrist", input_size=(64, 64)))
    with pytest.raises(InvalidArgumentError, match="not 'lumbar'"):
        bonelab.detect_vertebrae(np.random.default_rng(0).random((64, 64)), tmp_path)


def test_segment_xray_gives_one_mask_per_class_for_a_softmax_network():
    from bonelab.models import ModelSpec
    from bonelab.segment import segment_xray

    class Halves(torch.nn.Module):  # background left, class 1 right
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[2:])
            out[:, 0, :, : x.shape[-1] // 2] = 5
            out[:, 1, :, x.shape[-1] // 2:] = 5
            return out

    spec = ModelSpec("unet2d", task="lumbar", label_names=("a", "b"), input_size=(32, 32),
                     extra={"activation": "softmax"})
    film = np.add.outer(np.linspace(0, 1, 32), np.linspace(0, 1, 32))
    masks = segment_xray(film, Halves(), spec=spec)
    assert masks.shape == (2, 32, 32) and masks[0][:, 20:].all() and not masks[0][:, :12].any()
    assert not masks[1].any()


def test_detect_vertebrae_command_writes_the_table_and_masks(lumbar_data, tmp_path):
    from PIL import Image

    from bonelab.cli import main

    run = tmp_path / "run"
    lumbar.train(lumbar_data, run, model="semantic", epochs=1, batch_size=2, progress=False, channels=(4, 8, 16))
    film = tmp_path / "film.png"
    Image.fromarray((lumbar.LevelSplit(lumbar_data, "test").images[0, 0] * 65535).astype(np.uint16)).save(film)
    out = tmp_path / "out"
    assert main(["detect-vertebrae", str(film), "--model", str(run), "--out", str(out)]) == 0
    table = (out / "vertebrae.csv").read_text().splitlines()
    masks = np.load(out / "masks.npy")
    assert table[0] == "level,score,x1,y1,x2,y2" and len(table) - 1 == len(masks)
    assert masks.shape[1:] == (64, 64) and np.load(out / "class_map.npy").shape == (64, 64)
    assert main(["detect-vertebrae", str(tmp_path / "missing.png"), "--model", str(run), "--out", str(out)]) == 1
