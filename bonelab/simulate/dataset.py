"""The on-disk format of a simulated data set, and reading it back.

Folder ``DIR``::

    DIR/dataset.json                  format version, protocol, target (name, dtype, classes), label
                                      names, sizes, physics ranges, seed, and after consolidation
                                      the byte size and SHA-256 of every array (checked on load)
    DIR/samples/{subject}_{view}_{k:03d}.npz   one file per sample: image (1, H, W) float32 in
                                      [0, 1] (bone bright), target (C, H, W), meta (JSON row)
    DIR/{split}_images.npy            (N, 1, H, W) float32, per split (after consolidation)
    DIR/{split}_targets.npy           (N, C, H, W) in the target's dtype
    DIR/metadata.csv                  one row per sample (same order as the arrays): split,
                                      subject, view, angles, geometry, physics, file

Format history: version 1 (before 2026-12) held only multi-label masks, in
``{split}_labels.npy``, with no checksums; it still loads (as the ``masks`` target).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bonelab.errors import DataError, InvalidArgumentError, MissingFileError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def dataset_info(out) -> dict:
    """The ``dataset.json`` of a data set folder, checked for a format version this bonelab reads."""
    from bonelab.files import read_json

    path = Path(out) / "dataset.json"
    info = read_json(path, what="bonelab data set folder",
                     make="simulate one with bonelab.simulate.simulate or `bonelab simulate`")
    version = info.get("version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise DataError(f"{path} has format version {version!r}; this bonelab reads versions {READABLE_VERSIONS}. "
                        + ("Upgrade bonelab to read it." if newer else "Simulate the data set again with this bonelab."))
    if version == 1:  # multi-label masks, the only target of version 1
        info = {**info, "target": {"name": "masks", "dtype": "uint8", "key": "label", "min_mm": info.get("min_mm", 0.5)},
                "protocol": info.get("kind", "wrist")}
    return info


def array_paths(out, split: str, info: dict) -> tuple[Path, Path]:
    """The image and target array files of ``split``."""
    out = Path(out)
    second = "labels" if info["version"] == 1 else "targets"
    return out / f"{split}_images.npy", out / f"{split}_{second}.npy"


def describe_array(path: Path) -> dict:
    """What ``dataset.json`` records of an array file: bytes, SHA-256, shape, dtype."""
    from bonelab.data import sha256

    header = np.load(path, mmap_mode="r")
    return {"bytes": path.stat().st_size, "sha256": sha256(path), "shape": list(header.shape),
            "dtype": str(header.dtype)}


def open_array(path: Path, info: dict) -> np.ndarray:
    """A read-only memmap of a data-set array, after checking its size (and SHA-256, when
    ``dataset.json`` records it) against what consolidation wrote."""
    from bonelab.data import sha256

    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; simulate that split (and consolidate) first.")
    expected = info.get("arrays", {}).get(path.name)
    if expected is not None:
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DataError(f"{path} holds {size} bytes but dataset.json records {expected['bytes']}: the file "
                            "is truncated or was replaced. Delete it and run simulate (or consolidate) again.")
        if sha256(path) != expected["sha256"]:
            raise DataError(f"{path} does not match the SHA-256 in dataset.json: its contents were altered. "
                            "Delete it and run simulate (or consolidate) again.")
    try:
        return np.load(path, mmap_mode="r")
    except ValueError as error:  # e.g. "mmap length is greater than file size" for a truncated file
        raise DataError(f"{path} cannot be read as an array ({error}); it is probably truncated. "
                        "Delete it and run simulate (or consolidate) again.") from None


def consolidate(out, jobs=None) -> Path:
    """Gather the sample files of ``out`` into per-split arrays and ``metadata.csv``, and record
    the arrays' sizes and checksums in ``dataset.json``.

    Reads the job list from ``dataset.json`` when ``jobs`` is None; raises
    :class:`MissingFileError` naming the first missing sample (render it: run simulate again).
    """
    import pandas as pd

    from bonelab.files import atomic_path, write_json
    from bonelab.simulate.jobs import SPLITS, plan

    out = Path(out)
    info = dataset_info(out)
    if jobs is None:
        jobs = plan(info["n_subjects"], views=info["views"], all_views=info["all_views"], per_view=info["per_view"],
                    seed=info["seed"], fractions=info["fractions"], splits=info["splits"])
    missing = [j.file for j in jobs if not (out / j.file).exists()]
    if missing:
        raise MissingFileError(f"{len(missing)} samples of {out} are missing (first: {missing[0]}); "
                               "run simulate again with the same settings to render them.")
    rows, arrays = [], {}
    channels, h, w = info["target"]["channels"], info["H"], info["W"]
    for split in SPLITS:
        js = [j for j in jobs if j.split == split]
        if not js:
            continue
        paths = array_paths(out, split, info)
        shapes = ((len(js), 1, h, w), (len(js), channels, h, w))
        with atomic_path(paths[0]) as tmp_images, atomic_path(paths[1]) as tmp_targets:
            images = np.lib.format.open_memmap(tmp_images, "w+", np.float32, shapes[0])
            targets = np.lib.format.open_memmap(tmp_targets, "w+", np.dtype(info["target"]["dtype"]), shapes[1])
            for i, j in enumerate(js):
                with np.load(out / j.file) as z:
                    images[i], targets[i] = z["image"], z["target"]
                    rows.append(json.loads(str(z["meta"])))
            images.flush(), targets.flush()
            del images, targets
        arrays.update({p.name: describe_array(p) for p in paths})
    with atomic_path(out / "metadata.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_json(out / "dataset.json", {**info, "consolidated": True, "arrays": arrays})
    return out


def metadata(out, split: str | None = None):
    """``metadata.csv`` as a pandas DataFrame (one row per sample, in array order), optionally of
    one split."""
    import pandas as pd

    path = Path(out) / "metadata.csv"
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; run bonelab.simulate.simulate (or consolidate) first.")
    table = pd.read_csv(path, dtype={"subject": str, "side": str}, keep_default_na=False)
    if split is not None:
        table = table[table["split"] == split].reset_index(drop=True)
    return table


def read_metadata(out, split: str | None = None) -> list[dict]:
    """The rows of :func:`metadata` as a list of dicts."""
    return metadata(out, split).to_dict("records")


class SimulatedSplit:
    """One split of a data set as a torch-style Dataset (read lazily from numpy memmaps).

    A sample is ``{"image": (1, H, W) float32 tensor, KEY: target}`` where KEY and the target
    come from the data set's target (:mod:`bonelab.simulate.targets`): ``label`` (L, H, W) for
    masks and (1, H, W) for a class map (float32 tensors), ``target`` (1, H, W) for the bone
    radiograph, and a torchvision detection dict for instances.  ``transform`` (e.g. MONAI dict
    transforms) is applied to the sample dict.  ``images`` and ``targets`` are the memmaps.
    """

    def __init__(self, out, split: str, transform=None):
        from bonelab.simulate.targets import target_from_settings

        self.info = dataset_info(out)
        paths = array_paths(out, split, self.info)
        self.images, self.targets = (open_array(p, self.info) for p in paths)
        if len(self.images) != len(self.targets):
            raise DataError(f"{paths[0]} and {paths[1]} hold different numbers of samples; simulate again.")
        self.target = target_from_settings(self.info["target"])
        self.key = self.info["target"].get("key", "label")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        import torch

        sample = {"image": torch.from_numpy(np.array(self.images[i], dtype=np.float32)),
                  self.key: self.target.sample(self.targets[i], self.info)}
        return self.transform(sample) if self.transform is not None else sample


def load_split(out, split: str, transform=None) -> SimulatedSplit:
    """A :class:`SimulatedSplit` of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
    from bonelab.simulate.jobs import SPLITS

    if split not in SPLITS:
        raise InvalidArgumentError(f"split {split!r} is unknown; use one of {SPLITS}.")
    return SimulatedSplit(out, split, transform)
