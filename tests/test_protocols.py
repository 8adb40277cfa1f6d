"""Protocols: films hung the clinical way (checked on rendered phantoms), and every target of every anatomy."""

import numpy as np
import pytest

from bonelab import phantoms
from bonelab import simulate as sim
from bonelab.errors import InvalidArgumentError


def _col(mask2d) -> float:
    """Column of the centre of mass of a 2D path/mask image."""
    w = np.asarray(mask2d, float)
    return float((w.sum(0) * np.arange(w.shape[1])).sum() / w.sum())


def _row(mask2d) -> float:
    w = np.asarray(mask2d, float)
    return float((w.sum(1) * np.arange(w.shape[0])).sum() / w.sum())


def _split_by_y(labels, value):
    """A label Volume with the front (-y, anterior/palmar) part of ``value`` as 1 and the back part as 2."""
    arr = np.asarray(labels.array)
    k, j, i = np.nonzero(arr == value)
    out = np.zeros(arr.shape, np.uint8)
    mid = np.median(j)
    out[k[j < mid], j[j < mid], i[j < mid]] = 1
    out[k[j > mid], j[j > mid], i[j > mid]] = 2
    return labels.with_array(out, label_names={1: "front", 2: "back"})


@pytest.fixture(scope="module")
def wrist():
    return phantoms.wrist(0, spacing=1.5)


def test_right_wrist_pa_hangs_fingers_up_thumb_left(wrist):
    p = sim.protocol("wrist")
    radius, ulna, capitate = sim.hung_projection(p, "pa", wrist.labels, [9, 10, 7])
    assert _col(radius) < _col(ulna)        # radius (thumb side) on the viewer's left
    assert _row(capitate) < _row(radius)    # distal (fingers) up


def test_right_wrist_lateral_is_seen_from_the_tube(wrist):
    """Lateral: beam radial -> ulnar, seen from the tube with the fingers up: the dorsum on the right."""
    front, back = sim.hung_projection(sim.protocol("wrist"), "lateral", _split_by_y(wrist.labels, 9), [1, 2])
    assert _col(back) > _col(front)


def test_mirrored_subject_mirrors_the_film(wrist):
    """A left wrist (the mirror image) is radiographed with mirrored angles: its films are the mirror
    images of the right wrist's (here the right wrist mirrored by hand through the array)."""
    p = sim.protocol("wrist")
    left = wrist.labels.with_array(np.ascontiguousarray(wrist.labels.array[:, :, ::-1]))
    for view in ("pa", "oblique", "lateral"):
        right_img = sim.hung_projection(p, view, wrist.labels, [9])[0]
        left_img = sim.hung_projection(p, view, left, [9], mirrored=True)[0]
        np.testing.assert_allclose(left_img, right_img[:, ::-1], atol=0.6)


def test_chest_pa_shows_the_heart_on_the_image_right():
    """Chest PA, hung as facing the patient: the heart (patient's left) on the viewer's right."""
    from bonelab import data

    ct, labels = data.example_ct(spacing=4.0)
    names = {v: n for v, n in labels.label_names.items()}
    heart = [v for v, n in names.items() if n == "heart"]
    liver = [v for v, n in names.items() if n == "liver"]
    paths = sim.hung_projection(sim.protocol("chest"), "pa", labels, heart + liver, size=64)
    assert _col(paths[0]) > _col(paths[1])      # heart right of the liver (patient's right)
    assert _row(paths[0]) < _row(paths[1])      # head up


def test_ap_localizer_shows_the_heart_on_the_image_right():
    """The AP CT localizer (tube above the supine patient), hung as facing the patient: the heart
    (patient's left) on the viewer's right, head up, as on the chest PA film."""
    from bonelab import data

    ct, labels = data.example_ct(spacing=4.0)
    names = {v: n for v, n in labels.label_names.items()}
    heart = [v for v, n in names.items() if n == "heart"]
    liver = [v for v, n in names.items() if n == "liver"]
    p = sim.protocol("localizer")
    assert p.views["localizer-ap"].kind == "localizer"
    paths = sim.hung_projection(p, "localizer-ap", labels, heart + liver, size=64)
    assert _col(paths[0]) > _col(paths[1])      # heart right of the liver (patient's right)
    assert _row(paths[0]) < _row(paths[1])      # head up
    assert sim.film_directions(p, "localizer-ap") == sim.film_directions(p, "pa") == \
        {"left": "R", "right": "L", "top": "H", "bottom": "F"}


def test_lateral_localizer_shows_the_spine_on_the_right():
    s = phantoms.chest(0, spacing=4.0)
    p = sim.protocol("localizer")
    front, back = sim.hung_projection(p, "localizer-lateral", _split_by_y(s.labels, 2), [1, 2])  # vertebrae
    assert _col(back) > _col(front)
    clavicle, vertebra = sim.hung_projection(p, "localizer-lateral", s.labels, [4, 2])
    assert _row(clavicle) < _row(vertebra)
    assert sim.film_directions(p, "localizer-lateral") == sim.film_directions(p, "lateral")


def test_localizer_views_use_a_ct_gantry_without_tilt_or_roll():
    from bonelab.drr import SlotScan
    from bonelab.drr.geometry import LOCALIZER_SDD_MM, LOCALIZER_SID_MM

    p = sim.protocol("localizer")
    rng = np.random.default_rng(0)
    for _ in range(20):
        geo = sim.draw_geometry(p, "localizer-ap", rng)
        assert geo["tilt_deg"] == geo["roll_deg"] == 0.0 and abs(geo["angle_deg"] - 180) <= 4
        assert (geo["sdd_mm"], geo["sdd_mm"] - geo["odd_mm"]) == (LOCALIZER_SDD_MM, LOCALIZER_SID_MM)
        assert 380 <= geo["fov_mm"] <= 450
    film = sim.draw_geometry(p, "pa", rng)
    assert 1750 <= film["sdd_mm"] <= 1850 and film["tilt_deg"] != 0
    iso = np.array([3.0, -20.0, 40.0])
    geo = {**geo, "shift_u_mm": 12.0, "shift_v_mm": -7.0}
    g = sim.make_geometry(geo, iso, size=64, flips=sim.display_flips(p, "localizer-ap"), kind="localizer")
    assert isinstance(g, SlotScan) and g.size == (64, 64)
    assert g.pixel[1] == pytest.approx(geo["fov_mm"] / 64)  # table increment: the fan pitch at the isocentre
    assert g.pixel[0] / g.pixel[1] == pytest.approx(LOCALIZER_SDD_MM / LOCALIZER_SID_MM)
    offset = (g.project([iso])[0] - 31.5) * g.pixel[1]  # mm at the isocentre
    np.testing.assert_allclose(offset, [-12.0, 7.0], atol=1e-6)  # as a radiograph's shift
    film_g = sim.make_geometry({**film, "roll_deg": 0.0, "shift_u_mm": 12.0, "shift_v_mm": -7.0}, iso, size=64)
    np.testing.assert_allclose((film_g.project([iso])[0] - 31.5) * film["fov_mm"] / 64, [-12.0, 7.0], atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="no tilt or roll"):
        sim.make_geometry({**geo, "roll_deg": 3.0}, iso, size=64, kind="localizer")
    with pytest.raises(InvalidArgumentError, match="kind 'ct' is unknown"):
        sim.View(180.0, kind="ct")
    with pytest.raises(InvalidArgumentError, match="cannot be tilted"):
        sim.View(180.0, tilt_deg=5.0, kind="localizer")


def test_lumbar_lateral_shows_the_spinous_processes_on_the_right():
    s = phantoms.lumbar_spine(0, spacing=2.0)
    p = sim.protocol("lumbar")
    front, back = sim.hung_projection(p, "lateral", _split_by_y(s.labels, 3), [1, 2])  # L3 body vs posterior
    assert _col(back) > _col(front)
    l1, l5 = sim.hung_projection(p, "lateral", s.labels, [1, 5])
    assert _row(l1) < _row(l5)


def test_lumbar_and_hip_ap_patient_left_on_image_right():
    s = phantoms.hip(0, spacing=3.0, calibration_phantom=False, noise=False)
    femur_left, femur_right = sim.hung_projection(sim.protocol("hip"), "ap", s.labels, [1, 2])
    assert _col(femur_left) > _col(femur_right)
    sp = phantoms.lumbar_spine(0, spacing=2.0)
    left_half = sp.labels.with_array((np.asarray(sp.labels.array) == 3) * (1 + (np.arange(sp.labels.shape[2]) >
                                     sp.labels.shape[2] // 2)[None, None, :]).astype(np.uint8))
    right, left = sim.hung_projection(sim.protocol("lumbar"), "ap", left_half, [1, 2])  # x grows to the left
    assert _col(left) > _col(right)


def test_display_rule_needs_a_visible_up_direction():
    p = sim.Protocol("bad", None, {"top": sim.View(0.0, tilt_deg=90.0)}, up=(0, 0, 1), structures=".*", center=".*")
    with pytest.raises(InvalidArgumentError, match="up"):
        sim.display_flips(p, "top")
    with pytest.raises(InvalidArgumentError, match="viewer"):
        sim.View(0.0, viewer="ceiling")


def test_every_protocol_describes_itself():
    for name, p in sim.PROTOCOLS.items():
        physics, geometry = p.tables()
        assert set(physics.columns) == {"random", "fixed", "shifted"} and len(geometry) > 5, name
        assert all(v.viewer in sim.protocols.VIEWERS for v in p.views.values())


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------
SMALL = dict(subjects=2, size=48, physics="fixed", fractions=(1, 1, 0), workers=1, progress=False)


def test_chest_bone_radiograph_target(tmp_path):
    out = sim.simulate(tmp_path / "chest", "chest", target="bone-radiograph", views=("pa",), spacing=4.0, **SMALL)
    info = sim.dataset_info(out)
    assert info["target"]["name"] == "bone-radiograph" and info["target"]["dtype"] == "float32"
    ds = sim.load_split(out, "train")
    image, bone = ds[0]["image"][0].numpy(), ds[0]["target"][0].numpy()
    assert bone.dtype == np.float32 and bone.shape == image.shape
    # the bone-only image is the input without the soft tissue: darker, zero where no ray meets a
    # bone, bright where it does (same seed: the masks data set has the same geometry and physics)
    assert bone.mean() < image.mean()
    masks = sim.simulate(tmp_path / "chest-masks", "chest", target="masks", min_mm=0.0, views=("pa",), spacing=4.0,
                         **SMALL)
    crossed = sim.load_split(masks, "train")[0]["label"].numpy().any(axis=0)
    assert 0.05 < crossed.mean() < 0.95
    from scipy.ndimage import binary_dilation

    far = ~binary_dilation(crossed, iterations=3)  # beyond the reach of the blur (sigma 0.6 px)
    assert far.any() and np.abs(bone[far]).max() < 1e-3 and bone[crossed].mean() > 0.05
    hu = sim.simulate(tmp_path / "chest-hu", "chest", target="bone-radiograph", bone=(400, 800), views=("pa",),
                      spacing=4.0, **SMALL)
    assert sim.dataset_info(hu)["target"]["bone"] == [400.0, 800.0]
    assert set(sim.metadata(out)["grid"]) == {1}  # chest films are taken with a grid
    assert not np.allclose(sim.load_split(hu, "train")[0]["target"], bone)


def test_localizer_protocol_renders_a_bone_radiograph_data_set(tmp_path):
    """CT localizers and chest films of three chest phantoms, end to end: finite images in [0, 1],
    and a bone-only target at its floor (no attenuation but the air's) wherever no ray meets a
    bone label."""
    common = dict(subjects=3, size=64, spacing=4.0, physics="fixed", fractions=(1, 0, 0), workers=1, progress=False)
    out = sim.simulate(tmp_path / "loc", "localizer", target="bone-radiograph", **common)
    info = sim.dataset_info(out)
    assert info["views"] == ["localizer-ap", "localizer-lateral", "pa", "lateral"] and info["n_samples"] == 12
    meta = sim.metadata(out)
    loc = meta["view"].str.startswith("localizer")
    assert set(meta.loc[loc, "sdd_mm"]) == {1040.0} and set(meta.loc[loc, "roll_deg"]) == {0.0}
    assert (meta.loc[~loc, "sdd_mm"] >= 1750).all() and meta["kvp"].between(100, 130).all()
    ds = sim.load_split(out, "train")
    assert len(ds) == 12
    for sample in ds:
        image, bone = sample["image"].numpy(), sample["target"].numpy()
        assert image.shape == bone.shape == (1, 64, 64) and np.isfinite(image).all() and np.isfinite(bone).all()
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.05 and bone.max() > bone.min()
    masks = sim.simulate(tmp_path / "loc-masks", "localizer", target="masks", min_mm=0.0,
                         views=("localizer-ap", "localizer-lateral"), **common)  # same seeds: same geometry
    mask_ds = sim.load_split(masks, "train")
    from scipy.ndimage import binary_dilation

    by_file = {row["file"]: i for i, row in sim.metadata(out, "train").reset_index(drop=True).iterrows()}
    for j, row in sim.metadata(masks, "train").reset_index(drop=True).iterrows():
        bone = ds[by_file[row["file"]]]["target"].numpy()
        crossed = mask_ds[j]["label"].numpy().any(axis=0)
        assert 0.05 < crossed.mean() < 0.95, row["view"]
        far = ~binary_dilation(crossed, iterations=5)  # beyond the blur (sigma <= 1.2 px)
        # not the outermost pixels: in a localizer's edge column the renderer can meet bone (a
        # humerus at the CT's side) that the label projection misses
        far[:2], far[-2:], far[:, :2], far[:, -2:] = False, False, False, False
        # where no bone is crossed the film with and without the bones is the same film: the
        # target (what the bones add) is 0 there, within a few percent of the bone contrast
        contrast = bone[0][crossed].mean()
        assert far.any() and contrast > 0.02 and bone[0][far].max() < 0.05 * contrast, row["view"]


@pytest.fixture(scope="module")
def lumbar_instances(tmp_path_factory):
    return sim.simulate(tmp_path_factory.mktemp("lumbar"), "lumbar", target="instances", views=("lateral",),
                        spacing=3.0, **SMALL)


def test_lumbar_instances_are_torchvision_detection_targets(lumbar_instances):
    info = sim.dataset_info(lumbar_instances)
    assert info["target"]["class_names"] == ["vertebra", "sacrum", "implant"]
    sample = sim.load_split(lumbar_instances, "train")[0]
    t = sample["target"]
    n = len(t["labels"])
    assert n >= 5 and t["boxes"].shape == (n, 4) and t["masks"].shape == (n, 48, 48)
    assert t["labels"].dtype.is_floating_point is False and set(t["labels"].tolist()) <= {1, 2, 3}
    assert (t["boxes"][:, 2] > t["boxes"][:, 0]).all() and (t["boxes"][:, 3] > t["boxes"][:, 1]).all()
    for box, mask in zip(t["boxes"].int().tolist(), t["masks"]):
        x1, y1, x2, y2 = box
        assert mask[y1:y2, x1:x2].sum() == mask.sum()  # the box holds the whole mask


def test_lumbar_instances_train_a_torchvision_mask_rcnn(lumbar_instances):
    torchvision = pytest.importorskip("torchvision")
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4, min_size=48, max_size=48,
                                  image_mean=[0.5], image_std=[0.25])
    model.backbone.body.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # grey radiographs
    ds = sim.load_split(lumbar_instances, "train")
    samples = [ds[i] for i in range(len(ds))]
    model.train()
    losses = model([s["image"] for s in samples], [s["target"] for s in samples])
    assert {"loss_classifier", "loss_mask", "loss_box_reg"} <= set(losses)
    assert torch.isfinite(sum(losses.values()))
    assert torchvision.__version__


def test_lumbar_class_map_feeds_a_monai_unet(tmp_path):
    import torch
    from monai.losses import DiceCELoss
    from torch.utils.data import DataLoader

    from bonelab.models import unet2d

    out = sim.simulate(tmp_path / "lumbar-cm", "lumbar", target="class-map", views=("lateral", "ap"), spacing=3.0,
                       **SMALL)
    batch = next(iter(DataLoader(sim.load_split(out, "train"), batch_size=2)))
    assert batch["image"].shape == (2, 1, 48, 48) and batch["label"].shape == (2, 1, 48, 48)
    classes = set(torch.unique(batch["label"]).tolist())
    assert {0.0, 1.0} <= classes <= {0.0, 1.0, 2.0, 3.0}
    net = unet2d(out_channels=4, channels=(4, 8, 16), num_res_units=0)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)(net(batch["image"]), batch["label"])
    assert torch.isfinite(loss)


def test_class_map_resolves_overlaps_by_the_documented_rule():
    paths = np.zeros((3, 1, 4), np.float32)
    paths[0, 0, :3] = 10.0   # a vertebra, long path
    paths[1, 0, 1:] = 4.0    # another vertebra, shorter
    paths[2, 0, 2] = 0.6     # an implant: thin, but on top
    out = sim.targets.class_map(paths, [1, 1, 3], on_top=[3], min_mm=0.5)
    assert out.tolist() == [[1, 1, 3, 1]]
    paths[1, 0, 1] = 20.0
    assert sim.targets.class_map(paths, [1, 2, 3], on_top=[3])[0, 1] == 2  # longest path wins


def test_task_refuses_a_target_it_cannot_train_on(lumbar_instances, tmp_path):
    from bonelab.tasks import wrist

    with pytest.raises(InvalidArgumentError, match="target 'instances'"):
        wrist.train(lumbar_instances, tmp_path / "run", epochs=1, progress=False)


def test_generated_left_wrists_are_hung_thumb_right(tmp_path):
    """The wrist protocol draws left and right wrists; a left PA film shows the radius on the viewer's right."""
    from bonelab.simulate import jobs

    p = sim.protocol("wrist")
    options = [jobs.subject_options(p, 0, i) for i in range(40)]
    sides = {o["side"] for o in options}
    assert sides == {"left", "right"}
    assert min(o["deviation_deg"] for o in options) < -10 and max(o["flexion_deg"] for o in options) > 15
    i = next(i for i, o in enumerate(options) if o["side"] == "left")
    s = jobs.generate_subject(p, i, 0, spacing=1.5)
    assert s.params["side"] == "left"
    radius, ulna = sim.hung_projection(p, "pa", s.labels, [9, 10], mirrored=True)
    assert _col(radius) > _col(ulna)


def test_wrist_train_trains_in_bfloat16_where_the_cpu_has_matrix_units(tmp_path, monkeypatch):
    from bonelab.tasks import wrist

    data = sim.simulate(tmp_path / "wrist", "wrist", subjects=2, size=32, spacing=2.0, fractions=(1, 1, 0),
                        workers=1, progress=False)
    seen = {}
    monkeypatch.setattr("bonelab.train.train", lambda model, train_ds, val_ds, **kw: seen.update(kw))
    for fast in (True, False):
        monkeypatch.setattr("bonelab.config.cpu_bfloat16_is_fast", lambda fast=fast: fast)
        wrist.train(data, tmp_path / "run", epochs=1, device="cpu", progress=False)
        assert seen["amp"] is fast
    wrist.train(data, tmp_path / "run", epochs=1, device="cpu", amp=False, progress=False)
    assert seen["amp"] is False


def test_flip_average_mirrors_the_prediction_back_before_averaging():
    """A 'network' that marks the image's left half: averaged with its mirror image, every pixel is 0.5."""
    import torch

    from bonelab.tasks import wrist

    class LeftHalf(torch.nn.Module):
        def forward(self, x):
            logits = torch.full_like(x, -20.0)
            logits[..., : x.shape[-1] // 2] = 20.0
            return logits

    images = np.zeros((3, 1, 4, 6), np.float32)
    plain = wrist.predict(LeftHalf(), images, device="cpu")
    assert plain[..., :3].min() > 0.99 and plain[..., 3:].max() < 0.01
    averaged = wrist.predict(LeftHalf(), images, flip_average=True, device="cpu")
    np.testing.assert_allclose(averaged, 0.5, atol=1e-6)
