"""bonelab.datasets: toy data sets, instance targets and the detection collate."""

import numpy as np
import pytest
import torch

import bonelab.datasets as bd
import bonelab.train as bt
from bonelab.errors import InvalidArgumentError


def test_old_names_stay_importable_from_train():
    assert bt.DictDataset is bd.DictDataset and bt.shapes_dataset is bd.shapes_dataset


def test_shapes_dataset_has_overlapping_labels_and_matching_image():
    ds = bd.shapes_dataset(20, size=16, seed=0, noise=0.0)
    labels = torch.stack([ds[i]["label"] for i in range(20)])
    images = torch.stack([ds[i]["image"] for i in range(20)])
    assert labels.shape == (20, 2, 16, 16) and images.shape == (20, 1, 16, 16)
    assert (labels[:, 0] * labels[:, 1]).sum() > 0  # discs and squares overlap somewhere
    expected = 0.5 * labels[:, :1] + 0.8 * labels[:, 1:]
    assert torch.allclose(images, expected)


def test_dict_dataset_rejects_unpaired_arrays():
    with pytest.raises(InvalidArgumentError, match="pair up"):
        bd.DictDataset(np.zeros((3, 1, 4, 4)), np.zeros((2, 1, 4, 4)))


def test_dict_dataset_serves_3d_patches():
    ds = bd.DictDataset(np.ones((2, 1, 4, 6, 8), np.int16), np.zeros((2, 3, 4, 6, 8), bool))
    assert ds[1]["image"].shape == (1, 4, 6, 8) and ds[1]["image"].dtype == torch.float32
    assert ds[1]["label"].shape == (3, 4, 6, 8)


def test_boxes_from_masks_follow_torchvision_convention():
    masks = torch.zeros(3, 10, 12, dtype=torch.uint8)
    masks[0, 2:5, 3:9] = 1
    masks[1, 9, 11] = 1  # one pixel in the last row and column
    masks[2, 0:10, 0:1] = 1
    masks[2, 4, 6] = 1  # a second component widens the box
    expected = torch.tensor([[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 7, 10]], dtype=torch.float32)
    assert torch.equal(bd.boxes_from_masks(masks), expected)
    with pytest.raises(InvalidArgumentError, match="empty"):
        bd.boxes_from_masks(torch.zeros(1, 4, 4, dtype=torch.uint8))


def test_shapes_instances_match_the_segmentation_toy():
    seg, inst = bd.shapes_dataset(4, 16, seed=2), bd.ShapesInstances(4, 16, seed=2)
    for i in range(4):
        image, target = inst[i]
        assert torch.equal(image, seg[i]["image"])
        assert torch.equal(target["masks"].float(), seg[i]["label"])
        assert target["labels"].dtype == torch.int64 and target["masks"].dtype == torch.uint8
        ys, xs = np.nonzero(target["masks"][1].numpy())  # the square
        assert target["boxes"][1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_detection_collate_keeps_variable_objects_as_lists():
    image = torch.zeros(1, 8, 8)
    one = {"boxes": torch.tensor([[0.0, 0, 2, 2]]), "labels": torch.tensor([1])}
    three = {"boxes": torch.zeros(3, 4), "labels": torch.tensor([1, 2, 1])}
    images, targets = bd.detection_collate([(image, one), {"image": image[:, :, :6], "target": three}])
    assert [i.shape[-1] for i in images] == [8, 6]  # images of different sizes are not stacked
    assert [len(t["labels"]) for t in targets] == [1, 3] and targets[1] is three
    with pytest.raises(InvalidArgumentError, match="'target'"):
        bd.detection_collate([{"image": image, "label": image}])
