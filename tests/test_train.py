"""bonelab.train: the training loop, checkpoints, resume, DDP (tiny nets on 16x16 toy data)."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bonelab.train as bt
from bonelab.errors import InvalidArgumentError, InvalidValuesError, MissingFileError, UnreadableFileError
from bonelab.metrics import batch_dice
from bonelab.models import unet2d

REPO = Path(__file__).resolve().parents[1]


def tiny_net(seed=0, dropout=0.0):
    bt.seed_everything(seed)
    return unet2d(out_channels=2, channels=(4, 8), num_res_units=0, dropout=dropout)


def run(out_dir, epochs=2, net=None, transform=None, **kwargs):
    options = {"loss": bt.segmentation_loss(), "out_dir": out_dir, "epochs": epochs, "batch_size": 4,
               "lr": 1e-2, "seed": 3, "metric_fn": batch_dice, "progress": False, "device": "cpu", "tensorboard": False}
    options.update(kwargs)
    train_ds = bt.shapes_dataset(12, 16)
    train_ds.transform = transform
    return bt.train(net if net is not None else tiny_net(), train_ds, bt.shapes_dataset(6, 16, seed=1),
                    **options)


def augmentation():
    """A MONAI random transform: its own random generator must be seeded by train()."""
    from monai.transforms import RandGaussianNoised

    return RandGaussianNoised(keys="image", prob=1.0, std=0.2)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_writes_checkpoints_and_metrics(tmp_path):
    result = run(tmp_path, epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "metrics.csv"]
    rows = read_csv(result.metrics_csv)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert list(rows[0]) == list(bt.CSV_COLUMNS)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # cosine decays to 0
    # both checkpoints load without unpickling code
    last = torch.load(result.last_checkpoint, weights_only=True)
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert last["epoch"] == 3 and last["config"]["seed"] == 3
    metrics = [float(r["val_metric"]) for r in rows]
    assert best["epoch"] == result.best_epoch == int(np.argmax(metrics)) + 1
    assert best["metric"] == pytest.approx(max(metrics)) == pytest.approx(result.best_metric)
    assert next(int(r["improved"]) for r in rows) == 1
    # the model ends with the last epoch's weights
    for key, value in tiny_net(9).state_dict().items():
        assert last["model"][key].shape == value.shape


def test_same_seed_same_run_and_load_model(tmp_path):
    a, b = run(tmp_path / "a", epochs=1), run(tmp_path / "b", epochs=1)
    assert a.history[0]["val_metric"] == b.history[0]["val_metric"]
    net = bt.load_weights(tiny_net(5), a.best_checkpoint, device="cpu")
    reference = torch.load(b.best_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items())
    assert not net.training


def test_interrupted_run_resumes_bit_identical(tmp_path):
    # dropout makes the run depend on the global random state, which resume must restore too, and
    # the MONAI augmentation on the random state of the transform
    full = run(tmp_path / "full", epochs=3, net=tiny_net(dropout=0.3), transform=augmentation())
    calls = {"n": 0}

    def crash_in_epoch_2(logits, label):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 validates in 2 batches (6 samples, batch 4)
            raise KeyboardInterrupt
        return batch_dice(logits, label)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", epochs=3, net=tiny_net(dropout=0.3), transform=augmentation(),
            metric_fn=crash_in_epoch_2)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "cut").glob("*.tmp"))
    # a fresh, differently initialised network: everything must come from last.pt
    resumed = run(tmp_path / "cut", epochs=3, net=tiny_net(seed=42, dropout=0.3), transform=augmentation())
    a = torch.load(full.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(),
                                                  b["optimizer"]["state"][0].values()))
    keys = ("epoch", "lr", "train_loss", "val_loss", "val_metric", "improved")
    rows_full, rows_cut = read_csv(full.metrics_csv), read_csv(resumed.metrics_csv)
    assert [[r[k] for k in keys] for r in rows_full] == [[r[k] for k in keys] for r in rows_cut]


def test_data_loader_workers_draw_different_reproducible_augmentations():
    zeros = bt.DictDataset(np.zeros((4, 1, 8, 8), np.float32), np.zeros((4, 1, 8, 8)), transform=augmentation())

    def noise(seed):
        loader = torch.utils.data.DataLoader(zeros, batch_size=1, num_workers=2, worker_init_fn=bt._seed_worker,
                                             generator=torch.Generator().manual_seed(seed))
        return [batch["image"] for batch in loader]

    first, again, other = noise(0), noise(0), noise(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # worker 0 and worker 1 do not repeat each other
    assert not torch.equal(first[0], other[0])


def test_resume_checks_settings_and_stops_when_done(tmp_path):
    first = run(tmp_path, epochs=1)
    again = run(tmp_path, epochs=1)  # already finished: nothing to do
    assert again.history == first.history
    with pytest.raises(InvalidArgumentError, match="lr=0.01"):
        run(tmp_path, epochs=1, lr=1e-3)
    fresh = run(tmp_path, epochs=1, lr=1e-3, resume=False)
    assert fresh.history[0]["val_loss"] != first.history[0]["val_loss"]


def test_default_metric_is_negative_validation_loss_and_float_metrics_work(tmp_path):
    result = run(tmp_path / "loss", epochs=1, metric_fn=None)
    assert result.history[0]["val_metric"] == -result.history[0]["val_loss"]
    result = run(tmp_path / "float", epochs=1, metric_fn=lambda logits, label: 0.25)
    assert result.history[0]["val_metric"] == pytest.approx(0.25)
    # an undefined (NaN) first score is replaced as best by the first defined one
    scores = iter([math.nan] * 2 + [0.5] * 2)
    result = run(tmp_path / "nan", epochs=2, metric_fn=lambda logits, label: next(scores))
    assert [r["improved"] for r in result.history] == [1, 1] and result.best_epoch == 2


def test_onecycle_and_bfloat16_amp_on_cpu(tmp_path):
    result = run(tmp_path, epochs=1, schedule="onecycle", amp=True)
    assert np.isfinite(result.history[0]["train_loss"])
    assert torch.load(result.last_checkpoint, weights_only=True)["config"]["schedule"] == "onecycle"


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(InvalidArgumentError, match="schedule"):
        run(tmp_path, schedule="step")
    with pytest.raises(InvalidArgumentError, match="val_ds is empty"):
        bt.train(tiny_net(), bt.shapes_dataset(4, 16), bt.shapes_dataset(0, 16), loss=bt.segmentation_loss(),
                 out_dir=tmp_path, epochs=1)
    tuples = torch.utils.data.TensorDataset(torch.zeros(4, 1, 16, 16), torch.zeros(4, 2, 16, 16))
    with pytest.raises(InvalidArgumentError, match="'image'"):
        bt.train(tiny_net(), tuples, tuples, loss=bt.segmentation_loss(), out_dir=tmp_path, epochs=1,
                 progress=False, device="cpu")
    with pytest.raises(MissingFileError):
        bt.load_weights(tiny_net(), tmp_path / "nothing.pt")
    torch.save(tiny_net(), tmp_path / "pickled.pt")  # a whole pickled module, not weights
    with pytest.raises(UnreadableFileError, match="weights_only"):
        bt.load_weights(tiny_net(), tmp_path / "pickled.pt")


def test_tensorboard_logs_when_installed(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidArgumentError, match="pip install tensorboard"):
            run(tmp_path, epochs=1, tensorboard=True)
    else:
        run(tmp_path, epochs=1, tensorboard=True)
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_distributed_two_process_cpu_run(tmp_path):
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # keep the caller's
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, BONELAB_QUICK="1")
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(REPO / "tests" / "_ddp_worker.py"), str(tmp_path)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "last.pt", "metrics.csv", "model.json", "weights_rank0.pt", "weights_rank1.pt"]
    rank0, rank1 = (torch.load(tmp_path / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(rank0["weights"], rank1["weights"])  # different seeds, one model
    assert rank0["val_metric"] == rank1["val_metric"]  # metrics averaged over both shards
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["train_loss"]) == pytest.approx(float(rows[-1]["train_dice"]) + float(rows[-1]["train_bce"]))
    assert float(rows[-1]["val_metric"]) == pytest.approx(rank0["val_metric"])
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["config"]["world_size"] == 2
    saved = torch.cat([v.flatten() for k, v in last["model"].items()])
    assert torch.equal(saved, rank0["weights"])  # the checkpoint holds the trained weights


@pytest.mark.gpu
def test_cuda_run_with_amp(tmp_path):
    result = run(tmp_path, epochs=2, device="cuda")
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the GradScaler ran (AMP on by default on CUDA)
    net = bt.load_weights(tiny_net(), result.best_checkpoint, device="cpu")
    assert next(net.parameters()).device.type == "cpu"


# --------------------------------------------------------------------------------------------
# The task interface: named loss terms, regression, 3D patches, detection, specs
# --------------------------------------------------------------------------------------------


def dice_bce_terms(logits, label):
    """DiceBCELoss with its two parts as named terms."""
    from monai.losses import DiceLoss

    dice = DiceLoss(sigmoid=True, batch=True)(logits, label)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, label)
    return {"loss": dice + bce, "dice": dice, "bce": bce}


class ScalarRecorder:
    """Stands in for TensorBoard's SummaryWriter (tensorboard is not installed everywhere)."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        pass


def test_named_loss_terms_go_to_csv_and_tensorboard(tmp_path, monkeypatch):
    recorder = ScalarRecorder()
    monkeypatch.setattr(bt, "_tensorboard_writer", lambda setting, out_dir: recorder)
    result = run(tmp_path, epochs=2, loss=dice_bce_terms)
    rows = read_csv(result.metrics_csv)
    assert list(rows[0]) == [*bt.CSV_COLUMNS, "train_bce", "train_dice", "val_bce", "val_dice"]
    for row in rows:  # the total is the sum of its terms, in training and in validation
        for split in ("train", "val"):
            assert float(row[f"{split}_loss"]) == pytest.approx(
                float(row[f"{split}_dice"]) + float(row[f"{split}_bce"]), rel=1e-6)
    tags = {tag for tag, _, _ in recorder.scalars}
    assert tags == {"lr", "train_loss", "val_loss", "val_metric", "train_bce", "train_dice", "val_bce", "val_dice"}
    assert sorted({step for _, _, step in recorder.scalars}) == [1, 2]
    logged = {(tag, step): value for tag, value, step in recorder.scalars}
    assert logged[("val_dice", 2)] == pytest.approx(float(rows[1]["val_dice"]))


def test_supervised_task_prepares_keys_and_dtypes():
    task = bt.SupervisedTask(torch.nn.functional.cross_entropy, input_key="ct", target_key="classes",
                             target_dtype=torch.long)
    batch = task.prepare_batch({"ct": torch.zeros(2, 1, 4, 4, dtype=torch.int16), "classes": torch.ones(2, 4, 4),
                                "subject": ["a", "b"]}, torch.device("cpu"))
    assert batch["ct"].dtype == torch.float32 and batch["classes"].dtype == torch.long
    assert batch["subject"] == ["a", "b"] and task.batch_size(batch) == 2
    net = torch.nn.Conv2d(1, 3, 1)
    terms, scores = task.validation_step(net, batch)
    assert scores is None and terms["loss"] == pytest.approx(float(task.training_loss(net, batch).detach()))
    assert task.metric_name == "neg_val_loss"
    assert bt.SupervisedTask(torch.nn.functional.mse_loss, batch_dice).metric_name == "batch_dice"



def test_supervised_task_validates_through_its_inferer_and_trains_on_the_batch():
    calls = []

    def inferer(inputs, model):  # stands in for sliding windows: records what validation applies
        calls.append(tuple(inputs.shape))
        return model(inputs) + 1.0

    task = bt.SupervisedTask(torch.nn.functional.mse_loss, inferer=inferer)
    batch = task.prepare_batch({"image": torch.zeros(2, 1, 4, 4), "label": torch.ones(2, 1, 4, 4)},
                               torch.device("cpu"))
    net = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    assert float(task.training_loss(net, batch)) == pytest.approx(1.0) and calls == []  # model(x) = 0
    terms, _ = task.validation_step(net, batch)
    assert terms["loss"] == pytest.approx(0.0) and calls == [(2, 1, 4, 4)]  # inferer: 0 + 1 = the target
    with pytest.raises(InvalidArgumentError, match="inferer"):
        bt.SupervisedTask(torch.nn.functional.mse_loss, inferer="windows")

def test_image_regression_with_ms_ssim_l1_under_bfloat16_amp(tmp_path):
    from bonelab.datasets import DictDataset, shapes_dataset
    from bonelab.losses import MSSSIML1Loss

    def denoising(n, seed):  # noisy toy image -> the same image without noise
        noisy, clean = shapes_dataset(n, 32, seed=seed, noise=0.1), shapes_dataset(n, 32, seed=seed, noise=0.0)
        return DictDataset(np.stack([noisy[i]["image"] for i in range(n)]),
                           np.stack([clean[i]["image"] for i in range(n)]))

    bt.seed_everything(0)
    net = unet2d(out_channels=1, channels=(4, 8), num_res_units=0)
    result = bt.train(net, denoising(12, 0), denoising(6, 1), task=bt.SupervisedTask(MSSSIML1Loss()),
                      out_dir=tmp_path, epochs=3, batch_size=4, lr=1e-2, progress=False, device="cpu",
                      tensorboard=False, amp=True)
    rows = read_csv(result.metrics_csv)
    assert list(rows[0])[len(bt.CSV_COLUMNS):] == ["train_l1", "train_ms_ssim", "val_l1", "val_ms_ssim"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_l1"]) < float(rows[0]["val_l1"])
    assert result.metric_name == "neg_val_loss"
    assert [r["val_metric"] for r in result.history] == [-r["val_loss"] for r in result.history]


def test_3d_patches_train_through_the_same_loop(tmp_path):
    from bonelab.datasets import DictDataset

    rng = np.random.default_rng(0)
    patches = rng.normal(size=(10, 1, 8, 8, 8)).astype(np.float32)
    data = DictDataset(patches, 2 * patches)  # learn to double the values: one 3x3x3 convolution can

    def neg_mse(output, target):
        return -((output - target) ** 2).flatten(1).mean(1)

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    result = bt.train(net, data, data, loss=torch.nn.functional.mse_loss, metric_fn=neg_mse, out_dir=tmp_path,
                      epochs=3, batch_size=5, lr=5e-2, progress=True, device="cpu", tensorboard=False,
                      schedule="constant")
    metrics = [r["val_metric"] for r in result.history]
    assert metrics[-1] > metrics[0] and result.metric_name == "neg_mse"
    assert result.best_metric == pytest.approx(max(metrics))
    # the validation metric is the mean of the per-sample scores of the last weights
    with torch.no_grad():
        x = torch.as_tensor(patches)
        assert metrics[-1] == pytest.approx(float(neg_mse(net(x), 2 * x).mean()), rel=1e-5)


def test_spec_is_written_and_rebuilds_the_trained_network(tmp_path):
    from bonelab.models import ModelSpec, load_model, read_spec

    spec = ModelSpec("unet2d", {"out_channels": 2, "channels": [4, 8], "num_res_units": 0},
                     label_names=("disc", "square"), input_size=(16, 16))
    net = tiny_net()
    result = run(tmp_path / "run", epochs=2, net=net, spec=spec)
    assert read_spec(result.out_dir) == spec
    x = bt.shapes_dataset(3, 16, seed=7).images
    x = torch.as_tensor(np.asarray(x))
    rebuilt = load_model(result.out_dir, checkpoint="last.pt", device="cpu")
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net.eval()(x))  # the model ends with last.pt's weights
        best = bt.load_weights(tiny_net(1), result.best_checkpoint, device="cpu")
        assert torch.equal(load_model(result.out_dir, device="cpu")(x), best(x))
    without = run(tmp_path / "plain", epochs=1)
    with pytest.raises(MissingFileError, match="model.json"):
        load_model(without.out_dir)
    # a spec that cannot hold the model's weights is refused before any work or file
    wrong = ModelSpec("unet2d", {"out_channels": 3, "channels": [4, 8], "num_res_units": 0})
    with pytest.raises(InvalidArgumentError, match="do not match"):
        run(tmp_path / "wrong", spec=wrong)
    assert not (tmp_path / "wrong").exists()
    with pytest.raises(InvalidArgumentError, match="ModelSpec"):
        run(tmp_path / "wrong", spec={"architecture": "unet2d"})


class ImageList(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


def test_samples_the_task_cannot_use_are_named(tmp_path):
    image, label = torch.zeros(1, 16, 16), torch.zeros(2, 16, 16)
    renamed = ImageList([{"img": image, "label": label}] * 4)
    with pytest.raises(InvalidArgumentError, match="'image'.*got keys \\['img', 'label'\\].*input_key"):
        bt.train(tiny_net(), renamed, renamed, loss=bt.segmentation_loss(), out_dir=tmp_path, epochs=1,
                 progress=False, device="cpu", tensorboard=False)
    strings = ImageList([{"image": "wrist.png", "label": label}] * 4)
    with pytest.raises(InvalidArgumentError, match="sample\\['image'\\] collated to a list"):
        bt.train(tiny_net(), strings, strings, loss=bt.segmentation_loss(), out_dir=tmp_path, epochs=1,
                 progress=False, device="cpu", tensorboard=False)


def test_loss_without_total_and_wrong_task_arguments_are_named(tmp_path):
    with pytest.raises(InvalidArgumentError, match="returned \\['bce', 'dice'\\].*under 'loss'"):
        run(tmp_path, loss=lambda logits, label: {k: v for k, v in dice_bce_terms(logits, label).items()
                                                 if k != "loss"})
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        run(tmp_path, loss=None)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        run(tmp_path, task=bt.SupervisedTask(bt.segmentation_loss()))
    with pytest.raises(InvalidArgumentError, match="metric_fn= goes with loss="):
        run(tmp_path, loss=None, task=bt.SupervisedTask(bt.segmentation_loss()))
    with pytest.raises(InvalidArgumentError, match="TrainingTask"):
        run(tmp_path, loss=None, metric_fn=None, task=bt.segmentation_loss())


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    loss, calls = bt.segmentation_loss(), {"n": 0}

    def nan_at_fifth_training_step(logits, label):
        value = loss(logits, label)
        if torch.is_grad_enabled():  # training steps only (validation runs without gradients)
            calls["n"] += 1
            if calls["n"] == 5:  # 3 steps per epoch (12 samples, batch 4): epoch 2, step 2
                return value * math.nan
        return value

    with pytest.raises(InvalidValuesError, match="epoch 2, step 2"):
        run(tmp_path, epochs=3, loss=nan_at_fifth_training_step)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())
    assert len(read_csv(tmp_path / "metrics.csv")) == 1


# --- detection: a stand-in for torchvision's Mask R-CNN (torchvision is not installed) -------


class FakeMaskRCNN(torch.nn.Module):
    """Follows torchvision's detection calling convention for data with one object per class:
    train mode ``model(images, targets)`` -> loss dict, eval mode ``model(images)`` -> one dict of
    boxes, labels, scores and masks (P, 1, H, W) per image.  Per-class masks come from two small
    convolutions."""

    def __init__(self, n_classes=2):
        super().__init__()
        self.n_classes = n_classes
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, n_classes, 3, padding=1))

    def forward(self, images, targets=None):
        logits = self.net(torch.stack(images))
        if self.training:
            if targets is None:
                raise ValueError("In training mode, targets should be passed")
            truth = torch.stack([torch.stack([t["masks"][t["labels"] == k + 1].amax(0) for k in range(self.n_classes)])
                                 for t in targets]).float()
            return {"loss_mask": torch.nn.functional.binary_cross_entropy_with_logits(logits, truth),
                    "loss_box_reg": 0.1 * logits.mean() ** 2}
        probs = torch.sigmoid(logits)
        labels = torch.arange(1, self.n_classes + 1)
        return [{"boxes": torch.zeros(self.n_classes, 4), "labels": labels, "scores": p.flatten(1).amax(1),
                 "masks": p[:, None]} for p in probs]


def detection_run(out_dir, epochs=4, task=None, **kwargs):
    from bonelab.datasets import ShapesInstances

    torch.manual_seed(0)
    options = {"out_dir": out_dir, "epochs": epochs, "batch_size": 4, "lr": 2e-2, "seed": 3, "progress": False,
               "device": "cpu", "tensorboard": False}
    options.update(kwargs)
    return bt.train(FakeMaskRCNN(), ShapesInstances(12, 16), ShapesInstances(6, 16, seed=1),
                    task=task or bt.DetectionTask(), **options)


def test_detection_task_trains_a_torchvision_style_model(tmp_path):
    result = detection_run(tmp_path)
    rows = read_csv(result.metrics_csv)
    assert list(rows[0]) == [*bt.CSV_COLUMNS, "train_loss_box_reg", "train_loss_mask"]
    for row in rows:
        assert float(row["train_loss"]) == pytest.approx(
            float(row["train_loss_mask"]) + float(row["train_loss_box_reg"]), rel=1e-6)
        assert row["val_loss"] == "nan"  # torchvision models compute no loss in eval mode
    metrics = [float(r["val_metric"]) for r in rows]
    assert result.metric_name == "matched_iou" and all(0 <= m <= 1 for m in metrics)
    assert metrics[-1] > metrics[0]  # it learns the masks
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == int(np.argmax(metrics)) + 1 and best["metric_name"] == "matched_iou"


def test_detection_score_against_hand_counted_ious():
    task = bt.DetectionTask()
    truth = torch.zeros(1, 4, 4, dtype=torch.uint8)
    truth[0, :2] = 1  # 8 pixels
    target = {"masks": truth, "boxes": torch.tensor([[0.0, 0, 2, 2]]), "labels": torch.tensor([1])}

    def prediction(*masks, scores):
        stack = torch.stack([m.float() for m in masks])[:, None]
        return {"masks": stack, "scores": torch.tensor(scores), "labels": torch.ones(len(masks), dtype=torch.long),
                "boxes": torch.tensor([[1.0, 1, 3, 3]] * len(masks))}

    half = torch.zeros(4, 4)
    half[1:3] = 1  # 4 of the 8 true pixels and 4 others: IoU 4/12
    outside = torch.zeros(4, 4)
    outside[3, 3] = 1
    assert task.score(prediction(truth[0], scores=[0.9]), target) == 1.0
    assert task.score(prediction(half, scores=[0.9]), target) == pytest.approx(1 / 3)
    # a confident false positive costs (scores 1/3, 1/3 and 0 over P + T = 3), an unsure one not
    assert task.score(prediction(half, outside, scores=[0.9, 0.8]), target) == pytest.approx(2 / 9)
    assert task.score(prediction(half, outside, scores=[0.9, 0.3]), target) == pytest.approx(1 / 3)
    assert task.score(prediction(half, scores=[0.1]), target) == 0.0  # nothing detected
    # boxes: (0, 0, 2, 2) against (1, 1, 3, 3) overlap in 1 of 7 units of area
    assert bt.DetectionTask(iou="box").score(prediction(half, scores=[0.9]), target) == pytest.approx(1 / 7)
    assert math.isnan(bt.matched_iou(torch.zeros(0, 0)))


def test_detection_errors_are_named(tmp_path):
    from bonelab.datasets import ShapesInstances

    class TensorInTrainMode(FakeMaskRCNN):
        def forward(self, images, targets=None):
            return self.net(torch.stack(images))

    with pytest.raises(InvalidArgumentError, match="dict of loss tensors"):
        bt.train(TensorInTrainMode(), ShapesInstances(4, 16), ShapesInstances(2, 16), task=bt.DetectionTask(),
                 out_dir=tmp_path, epochs=1, progress=False, device="cpu", tensorboard=False)
    no_masks = ImageList([(torch.zeros(1, 16, 16), {"boxes": torch.zeros(1, 4), "labels": torch.ones(1)})] * 4)
    with pytest.raises(InvalidArgumentError, match="'masks'"):
        bt.train(FakeMaskRCNN(), no_masks, no_masks, task=bt.DetectionTask(), out_dir=tmp_path, epochs=1,
                 progress=False, device="cpu", tensorboard=False)
    segmentation_samples = bt.shapes_dataset(4, 16)
    with pytest.raises(InvalidArgumentError, match="'target'"):
        bt.train(FakeMaskRCNN(), segmentation_samples, segmentation_samples, task=bt.DetectionTask(),
                 out_dir=tmp_path, epochs=1, progress=False, device="cpu", tensorboard=False)


def test_interrupted_detection_run_resumes_bit_identical(tmp_path):
    class CrashInEpoch2(bt.DetectionTask):
        calls = 0

        def validation_step(self, model, batch):
            CrashInEpoch2.calls += 1
            if CrashInEpoch2.calls > 2:  # epoch 1 validates in 2 batches
                raise KeyboardInterrupt
            return super().validation_step(model, batch)

    full = detection_run(tmp_path / "full", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        detection_run(tmp_path / "cut", epochs=3, task=CrashInEpoch2())
    resumed = detection_run(tmp_path / "cut", epochs=3)
    a = torch.load(full.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert read_csv(full.metrics_csv)[-1]["val_metric"] == read_csv(resumed.metrics_csv)[-1]["val_metric"]


@pytest.mark.gpu
def test_cuda_float16_amp_for_regression_and_detection(tmp_path):
    from bonelab.datasets import DictDataset, shapes_dataset
    from bonelab.losses import MSSSIML1Loss

    clean = shapes_dataset(8, 32, noise=0.0)
    images = np.stack([clean[i]["image"] for i in range(8)])
    regression = bt.train(unet2d(out_channels=1, channels=(4, 8), num_res_units=0), DictDataset(images, images),
                          DictDataset(images, images), task=bt.SupervisedTask(MSSSIML1Loss()),
                          out_dir=tmp_path / "regression", epochs=2, batch_size=4, progress=False, device="cuda")
    detection = detection_run(tmp_path / "detection", epochs=2, device="cuda")
    for result in (regression, detection):
        assert all(math.isfinite(r["train_loss"]) for r in result.history)
        assert torch.load(result.last_checkpoint, weights_only=True)["scaler"]["scale"] > 0  # float16 + GradScaler


class _LayoutProbe(bt.SupervisedTask):
    """A SupervisedTask that notes at every training step whether the weight of the first
    convolution with several input channels is channels-last (with one channel both layouts agree)."""

    def __init__(self):
        super().__init__(bt.segmentation_loss(), batch_dice)
        self.layouts = set()

    def training_loss(self, model, batch):
        weight = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        self.layouts.add(weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous())
        return super().training_loss(model, batch)


@pytest.mark.parametrize("choice", [False, True])
def test_a_2d_network_trains_in_the_layout_asked_for_and_comes_back_in_the_default_one(tmp_path, choice):
    probe, net = _LayoutProbe(), tiny_net()
    bt.train(net, bt.shapes_dataset(8, 16), bt.shapes_dataset(4, 16, seed=1), task=probe, out_dir=tmp_path,
             epochs=1, batch_size=4, progress=False, device="cpu", tensorboard=False, channels_last=choice)
    assert probe.layouts == {choice}
    assert all(p.is_contiguous() for p in net.parameters())


def test_channels_last_is_refused_for_a_3d_network(tmp_path):
    data = bt.shapes_dataset(4, 16)
    with pytest.raises(InvalidArgumentError, match="all 2-D"):
        bt.train(torch.nn.Conv3d(1, 1, 3), data, data, loss=torch.nn.functional.mse_loss, out_dir=tmp_path,
                 epochs=1, progress=False, device="cpu", tensorboard=False, channels_last=True)
    assert not any(tmp_path.iterdir())  # refused before any file is written
