"""bonelab.simulate: data set files, metadata, subject split, resume, shards, determinism."""

import json

import numpy as np
import pytest

from bonelab import simulate as sim
from bonelab.errors import InvalidArgumentError, MissingFileError

TINY = dict(subjects=3, views=("pa", "oblique", "lateral"), per_view=1, size=32, fov_mm=90.0, spacing=2.0,
            physics="fixed", fractions=(1, 1, 1), workers=1, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return sim.simulate(tmp_path_factory.mktemp("wrist"), **TINY)


def _count_renders(monkeypatch):
    calls = []
    real = sim.render_sample

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sim, "render_sample", counting)
    return calls


def test_files_metadata_and_arrays(tiny):
    info = json.loads((tiny / "dataset.json").read_text())
    assert info["consolidated"] and info["H"] == info["W"] == 32 and len(info["label_names"]) == 10
    assert len(list((tiny / "samples").glob("*.npz"))) == 9  # 3 subjects x 3 views
    rows = sim.read_metadata(tiny)
    assert len(rows) == 9 and {r["view"] for r in rows} == {"pa", "oblique", "lateral"}
    for split in ("train", "val", "test"):
        ds = sim.load_split(tiny, split)
        images, labels = np.load(tiny / f"{split}_images.npy"), np.load(tiny / f"{split}_labels.npy")
        assert images.shape == (3, 1, 32, 32) and images.dtype == np.float32
        assert labels.shape == (3, 10, 32, 32) and labels.dtype == np.uint8
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert len(ds) == 3 and ds[0]["label"].shape == (10, 32, 32)
    # metadata rows follow the array order: the file of row i holds sample i of its split
    train_rows = sim.read_metadata(tiny, "train")
    with np.load(tiny / train_rows[1]["file"]) as z:
        np.testing.assert_array_equal(z["label"], np.load(tiny / "train_labels.npy")[1])
    # fixed physics: every row has the same kVp and photons
    assert {r["kvp"] for r in rows} == {60.0} and {r["photons"] for r in rows} == {1e4}


def test_no_subject_in_two_splits(tiny):
    rows = sim.read_metadata(tiny)
    subjects = {s: {r["subject"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert all(subjects.values())
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])


def test_bone_is_bright_where_the_masks_are(tiny):
    """Image and masks share one orientation: projected bone is brighter than soft tissue/air."""
    images, labels = np.load(tiny / "train_images.npy"), np.load(tiny / "train_labels.npy")
    for img, lab in zip(images[:, 0], labels):
        bone = lab.any(axis=0)
        assert bone.sum() > 20
        assert img[bone].mean() > img[~bone].mean() + 0.1


def test_lateral_hides_more_than_pa(tiny):
    rows = sim.read_metadata(tiny)
    labels = {s: np.load(tiny / f"{s}_labels.npy") for s in ("train", "val", "test")}
    idx = {s: 0 for s in labels}
    hidden = {"pa": [], "lateral": []}
    for r in rows:
        lab = labels[r["split"]][idx[r["split"]]]
        idx[r["split"]] += 1
        if r["view"] in hidden:
            hidden[r["view"]].append(np.nanmean(sim.hidden_fraction(lab[:8])))  # carpals
    assert np.mean(hidden["lateral"]) > np.mean(hidden["pa"])


def test_resume_skips_finished_samples(tiny, tmp_path, monkeypatch):
    calls = _count_renders(monkeypatch)
    before = np.load(tiny / "val_images.npy").copy()
    sim.simulate(tiny, **TINY)
    assert calls == []  # everything was on disk
    victim = sim.read_metadata(tiny, "val")[2]["file"]
    (tiny / victim).unlink()
    sim.simulate(tiny, **TINY)
    assert len(calls) == 1  # only the missing sample is rendered again
    np.testing.assert_array_equal(np.load(tiny / "val_images.npy"), before)


def test_shards_partition_the_jobs_exactly():
    jobs = sim.plan(7, per_view=2, fractions=(0.6, 0.2, 0.2))
    parts = [sim._shard(jobs, f"{k}/3") for k in range(3)]
    files = [j.file for p in parts for j in p]
    assert sorted(files) == sorted(j.file for j in jobs) and len(set(files)) == len(jobs)
    with pytest.raises(InvalidArgumentError):
        sim.parse_shard("3/3")


def test_sharded_build_equals_one_build_and_same_seed_same_data(tiny, tmp_path, monkeypatch):
    out = tmp_path / "sharded"
    sim.simulate(out, shard="0/2", **TINY)
    assert not sim.dataset_info(out)["consolidated"]
    with pytest.raises(MissingFileError):
        sim.consolidate(out)
    sim.simulate(out, shard="1/2", **TINY)
    assert sim.dataset_info(out)["consolidated"]
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), np.load(tiny / f"{name}.npy"))
    other = sim.simulate(tmp_path / "seed1", **{**TINY, "views": ("pa",)}, seed=1)
    assert not np.array_equal(np.load(other / "train_images.npy")[0], np.load(tiny / "train_images.npy")[0])


def test_two_workers_give_the_same_samples(tiny, tmp_path):
    out = sim.simulate(tmp_path / "parallel", **{**TINY, "workers": 2})
    np.testing.assert_array_equal(np.load(out / "test_images.npy"), np.load(tiny / "test_images.npy"))


def test_physics_draws_stay_in_range_and_filtration_hardens():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sim.draw_physics(sim.PHYSICS["random"], rng)
        for key, (lo, hi) in sim.PHYSICS["random"].items():
            assert lo - 1 <= p[key] <= hi + 1, key
        assert p["kvp"] % 2 == 0
    base = sim.base_spectra([60], sim.PHYSICS["random"])[60.0]
    harder = sim.filtered_spectrum(base, 4.0)
    assert harder.mean_energy > base.mean_energy and harder.total_fluence < base.total_fluence
    with pytest.raises(InvalidArgumentError):
        sim.filtered_spectrum(base, 1.0)


def test_hidden_fraction_counts_shared_pixels():
    m = np.zeros((3, 4, 4), bool)
    m[0, :2] = True  # 8 pixels, 4 shared with channel 1
    m[1, 1:3] = True  # 8 pixels, 4 shared with channel 0
    np.testing.assert_allclose(sim.hidden_fraction(m)[:2], [0.5, 0.5])
    assert np.isnan(sim.hidden_fraction(m)[2])


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(InvalidArgumentError, match="view"):
        sim.plan(3, views=("ap",))
    with pytest.raises(InvalidArgumentError, match="physics"):
        sim.simulate(tmp_path, subjects=2, physics="nope", progress=False)
    with pytest.raises(MissingFileError):
        sim.load_split(tmp_path, "train")


def test_command_line_simulate_and_train(tmp_path, capsys):
    import argparse

    from bonelab import pipeline

    parser = argparse.ArgumentParser()
    sim.add_simulate_arguments(parser)
    args = parser.parse_args(["wrist", "--subjects", "7", "--out", str(tmp_path / "d"), "--size", "32",
                              "--spacing", "2", "--physics", "fixed", "--workers", "1", "--views", "pa"])
    assert sim.run_simulate(args) == 0
    assert "samples/s" in capsys.readouterr().out
    assert sim.dataset_info(tmp_path / "d")["consolidated"]
    parser = argparse.ArgumentParser()
    pipeline.add_train_arguments(parser)
    args = parser.parse_args(["wrist", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--epochs", "1",
                              "--channels", "4", "8", "--res-units", "0", "--batch-size", "2"])
    assert pipeline.run_train(args) == 0
    out = capsys.readouterr().out
    assert "best validation Dice" in out and "scaphoid" in out  # the per-view test table
    net = pipeline.load_segmentation_model(tmp_path / "run")
    assert net.bonelab_spec["size"] == 32 and len(net.bonelab_spec["label_names"]) == 10


def test_own_subjects(tmp_path):
    """Any list of labelled CTs (here two phantoms made by hand) can be simulated."""
    from bonelab import phantoms

    mine = [phantoms.wrist(s, spacing=2.0) for s in (11, 12)]
    out = sim.simulate(tmp_path, subjects=mine, views=("lateral",), size=32, physics="fixed", fractions=(1, 1, 0),
                       workers=1, progress=False)
    labels = np.load(out / "train_labels.npy")
    assert labels.shape == (1, 10, 32, 32) and labels[0, 8].any()  # the radius is in view
