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
from bonelab.errors import InvalidArgumentError, MissingFileError, UnreadableFileError
from bonelab.metrics import batch_dice
from bonelab.models import unet2d

REPO = Path(__file__).resolve().parents[1]


def tiny_net(seed=0, dropout=0.0):
    bt.seed_everything(seed)
    return unet2d(out_channels=2, channels=(4, 8), num_res_units=0, dropout=dropout)


def run(out_dir, epochs=2, net=None, transform=None, **kwargs):
    options = dict(loss=bt.segmentation_loss(), out_dir=out_dir, epochs=epochs, batch_size=4, lr=1e-2,
                   seed=3, metric_fn=batch_dice, progress=False, device="cpu", tensorboard=False)
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


def test_shapes_dataset_has_overlapping_labels_and_matching_image():
    ds = bt.shapes_dataset(20, size=16, seed=0, noise=0.0)
    labels = torch.stack([ds[i]["label"] for i in range(20)])
    images = torch.stack([ds[i]["image"] for i in range(20)])
    assert labels.shape == (20, 2, 16, 16) and images.shape == (20, 1, 16, 16)
    assert (labels[:, 0] * labels[:, 1]).sum() > 0  # discs and squares overlap somewhere
    expected = 0.5 * labels[:, :1] + 0.8 * labels[:, 1:]
    assert torch.allclose(images, expected)


def test_dict_dataset_rejects_unpaired_arrays():
    with pytest.raises(InvalidArgumentError, match="pair up"):
        bt.DictDataset(np.zeros((3, 1, 4, 4)), np.zeros((2, 1, 4, 4)))


def test_segmentation_loss_prefers_the_right_answer():
    label = torch.zeros(2, 3, 8, 8)
    label[:, 0, :4] = 1
    label[1, 1, 2:5, 2:5] = 1  # label 1 absent from image 0
    label[:, 2, :, :2] = 1
    right, wrong = torch.where(label > 0, 8.0, -8.0), torch.where(label > 0, -8.0, 8.0)
    for kind in ("dice_ce", "dice_focal"):
        loss = bt.segmentation_loss(kind)
        assert float(loss(right, label)) < 0.01 < 1.0 < float(loss(wrong, label))
    # overlapping labels (a pixel in two bones) are representable: softmax cross-entropy is not
    overlap = torch.zeros(1, 2, 4, 4)
    overlap[0, :, :2] = 1
    assert float(bt.segmentation_loss()(torch.where(overlap > 0, 9.0, -9.0), overlap)) < 1e-3
    # the cross-entropy term is the mean binary cross-entropy: logits 0 give ln 2 per pixel
    dice_bce = bt.DiceBCELoss(lambda_dice=0.0)
    assert float(dice_bce(torch.zeros(2, 3, 4, 4), label[:, :, :4, :4])) == pytest.approx(np.log(2))
    # per-image Dice: the empty channel of image 0 costs about 1/6 of the loss even when right
    per_image = bt.segmentation_loss(batch_dice=False)
    assert float(per_image(right, label)) > 0.15
    classes = torch.zeros(2, 1, 8, 8)
    classes[:, 0, :4] = 2
    classes[:, 0, 4:6] = 1
    onehot = torch.nn.functional.one_hot(classes[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    loss = bt.segmentation_loss(multi_label=False)
    assert float(loss(onehot * 16, classes)) < 0.01 < float(loss(onehot * -16, classes))
    with pytest.raises(InvalidArgumentError):
        bt.segmentation_loss("l2")


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
    assert [int(r["improved"]) for r in rows][0] == 1
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
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "last.pt", "metrics.csv", "weights_rank0.pt", "weights_rank1.pt"]
    rank0, rank1 = (torch.load(tmp_path / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(rank0["weights"], rank1["weights"])  # different seeds, one model
    assert rank0["val_metric"] == rank1["val_metric"]  # metrics averaged over both shards
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
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
