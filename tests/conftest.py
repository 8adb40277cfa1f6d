"""Shared test set-up: quick mode on, a headless matplotlib, the CPU by default, and the `gpu` marker."""

import os

os.environ.setdefault("BONELAB_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Unit tests check CPU results (numba kernels, numpy outputs) even where CUDA is present; the
# gpu-marked tests name their device. `make test-gpu` sets BONELAB_DEVICE=cuda, so the chapters
# it runs under nbval (kernels inherit this environment) use the GPU.
os.environ.setdefault("BONELAB_DEVICE", "cpu")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
