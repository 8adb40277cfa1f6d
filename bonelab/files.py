"""Writing files safely and checking arrays: the one home of both ideas in bonelab.

Every file a long job writes (data-set arrays, sample files, checkpoints, run specs, figures) goes
through :func:`atomic_path`: the content is written to a temporary name in the same folder and
renamed onto the final name only when complete, so an interrupted run leaves either the old file
or the new one, never half of one (a rename within a folder is atomic on POSIX and Windows).

:func:`check_finite` is the one check for NaN and infinite values in user arrays, with a message
that names the input and the fix.

>>> import tempfile, pathlib
>>> p = write_json(pathlib.Path(tempfile.mkdtemp()) / "a" / "info.json", {"n": 1})
>>> p.read_text().strip().startswith("{")
True
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bonelab.errors import InvalidValuesError


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffixes, so writers that choose the format by the
    suffix work) to write to; renamed onto ``path`` when the block ends without an error, removed
    otherwise.  The parent folder is created.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{''.join(path.suffixes)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=1) + "\n")


def save_npz(path, **arrays) -> Path:
    """``numpy.savez`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return Path(path)


def check_finite(array, source: str, fix: str = "replace them, e.g. np.nan_to_num(a, nan=0.0)") -> None:
    """Raise :class:`~bonelab.errors.InvalidValuesError` when the float ``array`` holds NaN or
    infinite values; the message names ``source`` (what the array is) and ``fix``.

    >>> check_finite(np.ones(3), "weights")
    >>> check_finite(np.array([1.0, np.nan]), "weights")
    Traceback (most recent call last):
    ...
    bonelab.errors.InvalidValuesError: weights: 1 NaN and 0 infinite value(s) out of 2; replace them, e.g. np.nan_to_num(a, nan=0.0).
    """
    a = np.asarray(array)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise InvalidValuesError(f"{source}: {n_nan} NaN and {n_inf} infinite value(s) out of {a.size}; {fix}.")


def read_json(path, *, what: str, make: str):
    """The JSON content of ``path``, the ``what`` of a folder (e.g. "bonelab run folder"):
    :class:`~bonelab.errors.MissingFileError` when it does not exist and
    :class:`~bonelab.errors.DataError` when it is not valid JSON, both saying how to ``make`` one.
    """
    import json

    from bonelab.errors import DataError, MissingFileError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; {path.parent} is not a {what} ({make}).")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise DataError(f"{path} is not valid JSON ({error}); {make} again.") from None
