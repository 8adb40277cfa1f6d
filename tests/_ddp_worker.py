"""Worker of tests/test_train.py::test_distributed_two_process_cpu_run.

Launched twice by ``python -m torch.distributed.run --nproc_per_node=2 --standalone`` with the run
folder as its argument, as a reader's script would be: it does not touch torch.distributed itself,
so :func:`bonelab.train.train` must join the process group from torchrun's environment (gloo on
CPU) and leave it again.  Each rank builds its network from a *different* seed (DDP must broadcast
rank 0's weights), rank 1 is forbidden to write through bonelab's file writers (checkpoints, the
metrics table, the model spec), the loss returns named terms (reduced over both ranks), and after
training each rank saves its final weights as ``weights_rank{RANK}.pt`` for the test to compare.
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import bonelab.files
import bonelab.train as bt
from bonelab.metrics import batch_dice
from bonelab.models import ModelSpec, unet2d

SETTINGS = {"out_channels": 2, "channels": [4, 8], "num_res_units": 0}


def _forbidden(*args, **kwargs):
    raise RuntimeError("a rank other than 0 tried to write a file (checkpoint, metrics table or model spec)")


def dice_bce_terms(logits, label):
    """bonelab's Dice + BCE loss with both parts as named terms."""
    dice_bce = bt.DiceBCELoss()
    dice, bce = dice_bce.dice(logits, label), dice_bce.bce(logits, label)
    return {"loss": dice + bce, "dice": dice, "bce": bce}


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    if rank != 0:
        bonelab.files.atomic_path = _forbidden  # every bonelab file writer goes through it
        bt.atomic_path = _forbidden
    bt.seed_everything(100 + rank)
    net = unet2d(**SETTINGS)
    result = bt.train(net, bt.shapes_dataset(12, 16), bt.shapes_dataset(6, 16, seed=1),
                      loss=dice_bce_terms, out_dir=out_dir, epochs=2, batch_size=3, metric_fn=batch_dice,
                      spec=ModelSpec("unet2d", SETTINGS), progress=False, device="cpu", tensorboard=False)
    assert not dist.is_initialized(), "train() must close the process group it opened"
    assert result.epochs == 2
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.save({"weights": flat, "val_metric": result.history[-1]["val_metric"]},
               out_dir / f"weights_rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
