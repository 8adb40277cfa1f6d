"""Chapter tasks: one module per task, found through :data:`TASKS`.

A task module ties a chapter's pieces together: the protocol and targets its data sets use, the
network (a :class:`bonelab.models.ModelSpec`), the loss and the per-batch interface of
:func:`bonelab.train.train`, evaluation, and its ``bonelab train NAME`` command line.  Each
module defines:

==================  =========================================================================
name                what
==================  =========================================================================
``NAME``            the task's name (``bonelab train NAME``)
``DESCRIPTION``     one line for ``bonelab train --help``
``PROTOCOL``        the :mod:`bonelab.simulate` protocol of its data sets
``TARGETS``         the targets it can train on (checked by :func:`check_dataset`)
``add_arguments``   ``add_arguments(parser)``: its ``bonelab train NAME`` options
``run``             ``run(args) -> int``: train (and evaluate) from parsed arguments
``train``           ``train(data, out, **settings)``: the Python entry point
==================  =========================================================================

Adding a chapter task is adding a module here and one line to :data:`TASKS`.

>>> sorted(TASKS)
['bones', 'femur', 'lumbar', 'wrist']
>>> task("wrist").PROTOCOL
'wrist'
"""

from __future__ import annotations

import importlib

from bonelab.errors import InvalidArgumentError

TASKS = {"wrist": "bonelab.tasks.wrist", "bones": "bonelab.tasks.bones", "lumbar": "bonelab.tasks.lumbar",
         "femur": "bonelab.tasks.femur"}
"""Task name -> module path (imported on first use: the modules pull in torch and MONAI)."""


def task(name: str):
    """The task module called ``name``."""
    if name not in TASKS:
        raise InvalidArgumentError(f"task {name!r} is unknown; use one of {sorted(TASKS)}.")
    return importlib.import_module(TASKS[name])


def check_dataset(data, task_module) -> dict:
    """The ``dataset.json`` of ``data``, after checking that ``task_module`` can train on its
    target; raises :class:`~bonelab.errors.InvalidArgumentError` naming the target and the fix."""
    from bonelab.simulate import dataset_info

    info = dataset_info(data)
    name = info["target"]["name"]
    if name not in task_module.TARGETS:
        raise InvalidArgumentError(
            f"{data} holds the target {name!r}; task {task_module.NAME!r} trains on {list(task_module.TARGETS)}. "
            f"Simulate with --target {task_module.TARGETS[0]} (protocol {task_module.PROTOCOL!r}).")
    return info


def predict_batches(model, images, forward, *, batch_size: int = 32, device=None):
    """``forward(model, x)`` over ``images`` (N, C, H, W) in batches of ``batch_size`` on
    ``device`` (default :func:`bonelab.config.device`), without gradients, the model in eval
    mode: the outputs concatenated as float32 numpy (N, ...).  The loop every task's ``predict``
    shares; ``forward`` says what the task's output is (probabilities, a clamped image)."""
    import numpy as np
    import torch

    from bonelab import config

    dev = config.device(device)
    model = model.to(dev).eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(np.array(images[i:i + batch_size], dtype=np.float32), device=dev)
            outs.append(forward(model, x).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

