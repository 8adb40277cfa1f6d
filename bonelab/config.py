"""Run-time settings: quick mode, the data folder and the torch device.

Quick mode (``BONELAB_QUICK=1``) shrinks data and work so that every chapter runs in seconds
under the tests; ``make test`` sets it, ``make book`` does not.  Chapters and library code read
it through :func:`quick` and :func:`choose` only (never through ``CI`` or ad-hoc checks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}


def quick() -> bool:
    """True when ``BONELAB_QUICK`` is set to 1/true/yes/on.

    >>> import os; os.environ["BONELAB_QUICK"] = "1"; quick()
    True
    """
    return os.environ.get("BONELAB_QUICK", "").strip().lower() in _TRUE


def choose(full: T, quick_value: T, *, gpu: T | None = None) -> T:
    """The one way chapters size their work: ``quick_value`` in quick mode; else ``gpu`` when it
    is given and :func:`device` is a CUDA device; else ``full`` (the size a full ``make book``
    runs at on a CPU).

    A chapter passes ``gpu=`` where more work makes it better (more epochs, larger images) and a
    GPU makes that affordable; :func:`sizing` says in words which of the three was picked.

    >>> epochs = choose(full=30, quick_value=1, gpu=80)   # 1 under the tests, 30 or 80 in a build
    """
    if quick():
        return quick_value
    if gpu is not None and device().type == "cuda":
        return gpu
    return full


def sizing() -> str:
    """Which sizes :func:`choose` picks, in words, for a chapter's settings line and its results
    record: ``"quick"``, ``"full size, GPU settings"`` or ``"full size, CPU settings"``.

    >>> import os; os.environ["BONELAB_QUICK"] = "1"; sizing()
    'quick'
    """
    return choose("full size, CPU settings", "quick", gpu="full size, GPU settings")


def data_dir() -> Path:
    """Folder for downloaded and generated data: ``$BONELAB_DATA`` or the user cache folder."""
    env = os.environ.get("BONELAB_DATA")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("bonelab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(name: str) -> Path:
    """The folder where a chapter keeps the model it trained, for the reader to use afterwards:
    ``data_dir()/runs/NAME``, or ``runs/NAME-quick`` in quick mode, so that the tests (which run
    the chapters in quick mode) never overwrite the model of a full build.  Not created here.

    >>> import os; os.environ["BONELAB_QUICK"] = "1"; run_dir("wrist").name
    'wrist-quick'
    """
    if not name or "/" in name or name.startswith("."):
        from bonelab.errors import InvalidArgumentError

        raise InvalidArgumentError(f"run name must be a plain folder name such as 'wrist'; got {name!r}.")
    return data_dir() / "runs" / (f"{name}-quick" if quick() else name)


def device(device=None):
    """The torch device to use: ``device`` if given, else ``$BONELAB_DEVICE``, else cuda when
    available, else cpu.

    >>> device("cpu")
    device(type='cpu')
    """
    import torch

    if device is not None:
        return torch.device(device)
    env = os.environ.get("BONELAB_DEVICE")
    if env:
        return torch.device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_pick_device = device  # for functions whose ``device`` argument shadows this one


def cpu_bfloat16_is_fast(cpuinfo="/proc/cpuinfo") -> bool:
    """True when this CPU has matrix units for bfloat16 (Intel AMX: the ``amx_bf16`` flag in the
    file ``cpuinfo``; Linux only, False where the file cannot be read), where PyTorch's oneDNN runs
    bfloat16 convolutions faster than float32: ``python benchmarks/precision.py`` measured
    chapter 6's V-Net training 2.5x faster on this project's 2-core Xeon.  Without such units
    bfloat16 takes slower paths that this project has not measured, so
    :func:`bfloat16_where_fast` chooses bfloat16 only where this is True.

    >>> isinstance(cpu_bfloat16_is_fast(), bool)
    True
    """
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def bfloat16_where_fast(amp: bool | None, device=None) -> bool | None:
    """The ``amp`` setting of :func:`bonelab.train.train` for a task whose network was measured as
    accurate in bfloat16 as in float32: where ``amp`` is None and ``device`` (None: :func:`device`)
    is a CPU, bfloat16 autocast exactly where :func:`cpu_bfloat16_is_fast`; otherwise ``amp`` as
    given (None leaves CUDA to the loop's own default, float16).  Not every network keeps its
    accuracy: :func:`bonelab.tasks.lumbar.train` measured its U-Net worse in bfloat16 and stays
    in float32.

    >>> bfloat16_where_fast(False, "cpu"), bfloat16_where_fast(None, "cuda")
    (False, None)
    """
    if amp is None and _pick_device(device).type == "cpu":
        return cpu_bfloat16_is_fast()
    return amp


def device_description(which=None) -> str:
    """The torch device in words, as the chapters and their result records name it:
    ``"cpu (2 CPU cores)"`` or ``"cuda:0 (NVIDIA H200)"``."""
    import torch

    dev = device(which)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{os.cpu_count()} CPU cores"
    return f"{dev} ({name})"


def describe() -> str:
    """One line with the versions and the device, for the first cell of every chapter."""
    import numpy
    import SimpleITK
    import torch

    import bonelab

    return (
        f"bonelab {bonelab.__version__} | torch {torch.__version__} | numpy {numpy.__version__} | "
        f"SimpleITK {SimpleITK.Version_VersionString()} | device: {device_description()} | "
        f"quick mode: {'on' if quick() else 'off'}"
    )
