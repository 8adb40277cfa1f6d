"""bonelab.simulate: data set files, metadata, subject split, resume, shards, determinism, format checks."""

import json

import numpy as np
import pytest

from bonelab import simulate as sim
from bonelab.errors import DataError, InvalidArgumentError, MissingFileError
from bonelab.simulate import jobs

TINY = dict(subjects=3, views=("pa", "oblique", "lateral"), per_view=1, size=32, spacing=2.0,
            physics="fixed", fractions=(1, 1, 1), workers=1, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return sim.simulate(tmp_path_factory.mktemp("wrist"), "wrist", **TINY)


def _count_renders(monkeypatch):
    calls = []
    real = jobs.render_sample

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "render_sample", counting)
    return calls


def test_files_metadata_and_arrays(tiny):
    info = json.loads((tiny / "dataset.json").read_text())
    assert info["consolidated"] and info["H"] == info["W"] == 32 and len(info["label_names"]) == 10
    assert info["version"] == sim.FORMAT_VERSION and info["target"]["name"] == "masks"
    assert len(list((tiny / "samples").glob("*.npz"))) == 9  # 3 subjects x 3 views
    rows = sim.read_metadata(tiny)
    assert len(rows) == 9 and {r["view"] for r in rows} == {"pa", "oblique", "lateral"}
    for split in ("train", "val", "test"):
        ds = sim.load_split(tiny, split)
        images, targets = np.load(tiny / f"{split}_images.npy"), np.load(tiny / f"{split}_targets.npy")
        assert images.shape == (3, 1, 32, 32) and images.dtype == np.float32
        assert targets.shape == (3, 10, 32, 32) and targets.dtype == np.uint8
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert len(ds) == 3 and ds[0]["label"].shape == (10, 32, 32)
        assert info["arrays"][f"{split}_targets.npy"]["bytes"] == (tiny / f"{split}_targets.npy").stat().st_size
    # metadata rows follow the array order: the file of row i holds sample i of its split
    train_rows = sim.read_metadata(tiny, "train")
    with np.load(tiny / train_rows[1]["file"]) as z:
        np.testing.assert_array_equal(z["target"], np.load(tiny / "train_targets.npy")[1])
    # fixed physics: every row has the same kVp and photons; the dose is recorded (no grid at the wrist)
    assert {r["kvp"] for r in rows} == {60.0} and {r["photons"] for r in rows} == {1e4}
    assert all(r["mas"] > 0 and r["air_kerma_uGy"] > 0 and r["grid"] == 0 for r in rows)


def test_no_subject_in_two_splits(tiny):
    table = sim.metadata(tiny)
    subjects = table.groupby("split")["subject"].apply(set)
    assert all(len(s) for s in subjects)
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])


def test_bone_is_bright_where_the_masks_are(tiny):
    """Image and masks share one orientation: projected bone is brighter than soft tissue/air."""
    images, labels = np.load(tiny / "train_images.npy"), np.load(tiny / "train_targets.npy")
    for img, lab in zip(images[:, 0], labels):
        bone = lab.any(axis=0)
        assert bone.sum() > 20
        assert img[bone].mean() > img[~bone].mean() + 0.1


def test_lateral_hides_more_than_pa(tiny):
    table = sim.metadata(tiny)
    targets = {s: np.load(tiny / f"{s}_targets.npy") for s in ("train", "val", "test")}
    hidden = {"pa": [], "lateral": []}
    for split, part in table.groupby("split"):
        for i, view in enumerate(part["view"]):
            if view in hidden:
                hidden[view].append(np.nanmean(sim.hidden_fraction(targets[split][i][:8])))  # carpals
    assert np.mean(hidden["lateral"]) > np.mean(hidden["pa"])


def test_resume_skips_finished_samples(tiny, monkeypatch):
    calls = _count_renders(monkeypatch)
    before = np.load(tiny / "val_images.npy").copy()
    sim.simulate(tiny, "wrist", **TINY)
    assert calls == []  # everything was on disk
    victim = sim.read_metadata(tiny, "val")[2]["file"]
    (tiny / victim).unlink()
    sim.simulate(tiny, "wrist", **TINY)
    assert len(calls) == 1  # only the missing sample is rendered again
    np.testing.assert_array_equal(np.load(tiny / "val_images.npy"), before)


def test_shards_partition_the_jobs_exactly():
    all_jobs = sim.plan(7, views=("pa", "lateral"), per_view=2, fractions=(0.6, 0.2, 0.2))
    parts = [sim.shard_jobs(all_jobs, f"{k}/3") for k in range(3)]
    files = [j.file for p in parts for j in p]
    assert sorted(files) == sorted(j.file for j in all_jobs) and len(set(files)) == len(all_jobs)
    with pytest.raises(InvalidArgumentError):
        sim.parse_shard("3/3")


def test_sharded_build_equals_one_build_and_same_seed_same_data(tiny, tmp_path):
    out = tmp_path / "sharded"
    sim.simulate(out, "wrist", shard="0/2", **TINY)
    assert not sim.dataset_info(out)["consolidated"]
    with pytest.raises(MissingFileError):
        sim.consolidate(out)
    sim.simulate(out, "wrist", shard="1/2", **TINY)
    assert sim.dataset_info(out)["consolidated"]
    for name in ("train_images", "train_targets", "test_images", "test_targets"):
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), np.load(tiny / f"{name}.npy"))
    other = sim.simulate(tmp_path / "seed1", "wrist", **{**TINY, "views": ("pa",)}, seed=1)
    assert not np.array_equal(np.load(other / "train_images.npy")[0], np.load(tiny / "train_images.npy")[0])


def test_two_workers_give_the_same_samples(tiny, tmp_path):
    out = sim.simulate(tmp_path / "parallel", "wrist", **{**TINY, "workers": 2})
    np.testing.assert_array_equal(np.load(out / "test_images.npy"), np.load(tiny / "test_images.npy"))


def test_physics_draws_stay_in_range_and_filtration_hardens():
    rng = np.random.default_rng(0)
    ranges = sim.protocol("wrist").physics["random"]
    processed = 0
    for _ in range(200):
        p = sim.draw_physics(ranges, rng)
        for key, (lo, hi) in ranges.items():
            if key != "postprocess":
                assert lo - 1 <= p[key] <= hi + 1, key
        assert p["kvp"] % 2 == 0
        processed += bool(p["postprocess"])
    assert 70 < processed < 130  # half the films carry image processing
    assert sim.draw_physics(sim.protocol("wrist").physics["fixed"], rng)["postprocess"] == {}
    base = sim.base_spectra([60], ranges)[60.0]
    harder = sim.filtered_spectrum(base, 4.0)
    assert harder.mean_energy > base.mean_energy and harder.total_fluence < base.total_fluence
    with pytest.raises(InvalidArgumentError):
        sim.filtered_spectrum(base, 1.0)


def test_positioning_covers_what_radiographers_produce():
    """Wrist: field of view 60-120 mm, in-plane rotation +-20 degrees or more, the carpus anywhere in the
    central two thirds of the field (issue: the image-free baseline must not be able to learn the position)."""
    p, rng = sim.protocol("wrist"), np.random.default_rng(1)
    draws = [sim.draw_geometry(p, "pa", rng) for _ in range(400)]
    fov = np.array([d["fov_mm"] for d in draws])
    roll = np.array([d["roll_deg"] for d in draws])
    shift = np.array([d["shift_u_mm"] / d["fov_mm"] for d in draws])
    assert fov.min() < 65 and fov.max() > 115 and roll.min() < -20 and roll.max() > 20
    assert shift.min() < -0.3 and shift.max() > 0.3 and np.abs(shift).max() <= 1 / 3


def test_own_subjects(tmp_path):
    """Any list of labelled CTs (here two phantoms made by hand) can be simulated."""
    from bonelab import phantoms

    mine = [phantoms.wrist(s, spacing=2.0) for s in (11, 12)]
    out = sim.simulate(tmp_path, "wrist", subjects=mine, views=("lateral",), size=32, physics="fixed",
                       fractions=(1, 1, 0), workers=1, progress=False)
    labels = np.load(out / "train_targets.npy")
    assert labels.shape == (1, 10, 32, 32) and labels[0, 8].any()  # the radius is in view


def test_own_ct_files(tmp_path):
    """A reader's CT and label map on disk (as TotalSegmentator writes them) go through SubjectFiles."""
    from bonelab import io, phantoms

    s = phantoms.lumbar_spine(3, spacing=3.0)
    io.write(s.ct, tmp_path / "ct.nii.gz")
    io.write(s.labels, tmp_path / "seg.nii.gz")
    (tmp_path / "names.json").write_text(json.dumps({str(k): v for k, v in s.label_names.items()}))
    source = [sim.SubjectFiles(str(tmp_path / "ct.nii.gz"), str(tmp_path / "seg.nii.gz"), str(tmp_path / "names.json"))]
    out = sim.simulate(tmp_path / "d", "lumbar", subjects=source, views=("lateral",), size=32, physics="fixed",
                       fractions=(1, 0, 0), splits=("train",), workers=1, progress=False)
    assert sim.dataset_info(out)["label_names"][:5] == ["L1", "L2", "L3", "L4", "L5"]
    assert np.load(out / "train_targets.npy")[0, 2].any()


# --------------------------------------------------------------------------------------------
# Format: versions, sizes, checksums
# --------------------------------------------------------------------------------------------
def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_or_altered_arrays_are_refused(tiny, tmp_path):
    out = _copy(tiny, tmp_path / "d")
    path = out / "train_targets.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        sim.load_split(out, "train")
    altered = bytearray(data)
    altered[-1] ^= 1
    path.write_bytes(bytes(altered))
    with pytest.raises(DataError, match="SHA-256"):
        sim.load_split(out, "train")


def test_format_versions(tiny, tmp_path):
    out = _copy(tiny, tmp_path / "new")
    info = json.loads((out / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps({**info, "version": 99}))
    with pytest.raises(DataError, match="Upgrade bonelab"):
        sim.load_split(out, "train")
    (out / "dataset.json").write_text(json.dumps({**info, "version": 0}))
    with pytest.raises(DataError, match="again"):
        sim.dataset_info(out)
    # version 1 (multi-label masks in {split}_labels.npy, no checksums) still loads
    old = tmp_path / "v1"
    old.mkdir()
    np.save(old / "train_images.npy", np.load(tiny / "train_images.npy"))
    np.save(old / "train_labels.npy", np.load(tiny / "train_targets.npy"))
    (old / "dataset.json").write_text(json.dumps({"version": 1, "kind": "wrist", "label_names": info["label_names"],
                                                 "H": 32, "W": 32, "consolidated": True}))
    ds = sim.load_split(old, "train")
    assert ds[0]["label"].shape == (10, 32, 32) and sim.dataset_info(old)["target"]["name"] == "masks"
    np.save(old / "train_labels.npy", np.zeros((1, 2), np.uint8))
    data = (old / "train_labels.npy").read_bytes()
    (old / "train_labels.npy").write_bytes(data[:-1])
    with pytest.raises(DataError, match="truncated"):
        sim.load_split(old, "train")


def test_bad_arguments_are_refused_before_any_file(tmp_path):
    for kwargs, match in ((dict(size=-5), "size"), (dict(spacing=0), "spacing"), (dict(per_view=0), "per_view"),
                          (dict(physics="nope"), "physics"), (dict(target="nope"), "target"),
                          (dict(views=("ap",)), "view"), (dict(subjects=0), "subjects"), (dict(workers=0), "workers")):
        out = tmp_path / match
        with pytest.raises(InvalidArgumentError, match=match):
            sim.simulate(out, "wrist", progress=False, **kwargs)
        assert not out.exists(), kwargs
    with pytest.raises(InvalidArgumentError, match="protocol"):
        sim.simulate(tmp_path / "p", "elbow")
    with pytest.raises(MissingFileError):
        sim.load_split(tmp_path, "train")
    with pytest.raises(MissingFileError, match="not a bonelab data set"):
        sim.dataset_info(tmp_path)


def test_a_folder_of_other_settings_is_not_resumed(tiny):
    with pytest.raises(InvalidArgumentError, match="other settings"):
        sim.simulate(tiny, "wrist", **{**TINY, "size": 48})


def test_command_line_simulate_and_train(tmp_path, capsys):
    from bonelab.cli import main
    from bonelab.models import read_spec

    assert main(["simulate", "wrist", "--subjects", "7", "--out", str(tmp_path / "d"), "--size", "32", "--spacing",
                 "2", "--physics", "fixed", "--workers", "1", "--views", "pa"]) == 0
    assert "samples/s" in capsys.readouterr().out
    assert sim.dataset_info(tmp_path / "d")["consolidated"]
    assert main(["train", "wrist", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--channels", "4", "8", "--res-units", "0", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "best validation Dice" in out and "scaphoid" in out  # the per-view test table
    spec = read_spec(tmp_path / "run")
    assert spec.input_size == (32, 32) and len(spec.label_names) == 10 and spec.task == "wrist"
    assert main(["simulate", "wrist", "--out", str(tmp_path / "e"), "--size", "-5"]) == 1
    assert "size must be" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_the_bone_target_is_what_the_bones_add_to_the_displayed_film():
    """``bone_contribution``: for a linear display (gamma 1, window from zero attenuation, no
    processing) it is the bone-only film, up to beam hardening; for a contrast curve and a
    processing chain the film minus it is exactly the clean film without the bones, wherever
    the bones add to the film (where they darken it, the halo of unsharp masking, it is 0)."""
    from scipy.ndimage import gaussian_filter

    from bonelab.drr.processing import draw_postprocess
    from bonelab.simulate.physics import bone_contribution, clean_radiograph

    rng = np.random.default_rng(0)
    soft = np.zeros((4, 48, 48), np.float32)
    soft[1] = 150.0 + 100.0 * gaussian_filter(rng.random((48, 48)), 6)   # soft tissue, g/cm3 * mm
    bone = np.zeros_like(soft)
    bone[2, 10:38, 20:26] = 25.0                                          # a bone bar
    physics = dict(sim.draw_physics(sim.protocol("localizer").physics["fixed"], rng), gamma=1.0)
    window = (0.0, 6.0)
    linear = bone_contribution(soft + bone, soft, physics, window, pixel_mm=2.0)
    alone = clean_radiograph(bone, physics, window, pixel_mm=2.0)
    inside = alone > 0.5 * alone.max()
    assert alone.max() > 0.05 and np.abs(linear[:, :12]).max() < 1e-6   # far from the bar: nothing
    # behind 15-25 g/cm2 of soft tissue the beam is harder, so bone attenuates less than alone
    # (0.74 of it with this spectrum)
    assert 0.6 < linear[inside].mean() / alone[inside].mean() < 0.9
    curved = dict(physics, gamma=1.6, postprocess=draw_postprocess(seed=2))
    bones = bone_contribution(soft + bone, soft, curved, window, pixel_mm=2.0)
    film = clean_radiograph(soft + bone, curved, window, pixel_mm=2.0)
    without = clean_radiograph(soft, curved, window, pixel_mm=2.0)
    shown = bones > 0   # elsewhere the difference is negative (unsharp masking's halo) and clipped to 0
    assert shown[inside].all()
    np.testing.assert_allclose((film - bones)[shown], without[shown], atol=1e-6)
    assert np.all(film[~shown] <= without[~shown] + 1e-6)
    # the old target (the bone-only CT's film through the same curve) is not what the bones add
    assert np.abs(clean_radiograph(bone, curved, window) - bones)[inside].mean() > 0.02
