"""The ``bonelab`` command.

::

    bonelab info CT
    bonelab drr CT [--labels LABELS] [--view pa|ap|lateral-left|lateral-right|oblique|carm]
                   [--angle DEG [DEG ...]] [--tilt DEG] [--sid MM] [--sdd MM] [--size N | --size W H]
                   [--pixel MM] [--kvp KV | --energy KEV] [--output line-integral|intensity|radiograph]
                   [--device cpu|cuda] --out FILE
    bonelab extract-bones IMAGE --model RUN --out DIR [--weight W] [--invert auto|yes|no]
                   [--pixel-mm MM] [--device cpu|cuda]
    bonelab detect-vertebrae IMAGE --model RUN --out DIR [--score S] [--invert auto|yes|no]
    bonelab segment-ct CT --model RUN --out LABELS.nii.gz [--side left|right] [--threshold P]
    bonelab bmd CT --labels LABELS --rods RODS.json [--label N] [--peel-mm MM]

Subcommands live in :data:`COMMANDS` as ``name -> (help, add_arguments, run)``; a later chapter
adds one (``simulate``, ``train``) by adding an entry.  Errors that bonelab anticipates (a
missing file, a bad geometry, ...) end the command with a one-line message and exit status 1,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bonelab.errors import BonelabError, InvalidArgumentError, InvalidValuesError
from bonelab.files import atomic_path, write_json
from bonelab.volume import default_label_names

IMAGE_SUFFIXES = (".png", ".npy", ".nii.gz", ".nii", ".tif", ".tiff")


# --- bonelab info ------------------------------------------------------------------------------
def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("ct", help="CT file (NIfTI, NRRD, MetaImage) or DICOM folder")


def _orientation(direction) -> str:
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(np.ravel(direction)))


def _run_info(args) -> int:
    from bonelab import io

    ct = io.read_ct(args.ct, verbose=False)
    s = io.hu_summary(ct)
    print(f"file        {args.ct}")
    print(f"size        {ct.size[0]} x {ct.size[1]} x {ct.size[2]} voxels (x, y, z); array (z, y, x) = {ct.shape}")
    print(f"spacing     {', '.join(f'{v:.4g}' for v in ct.spacing)} mm (x, y, z)")
    print(f"extent      {', '.join(f'{v:.1f}' for v in ct.size_mm)} mm (x, y, z)")
    print(f"origin      {', '.join(f'{v:.2f}' for v in ct.origin)} mm (LPS)")
    print(f"orientation {_orientation(ct.direction)} (index axes i, j, k point to these patient directions)")
    print(f"HU          min {s['min']:.0f}, p1 {s['p1']:.0f}, median {s['p50']:.0f}, p99 {s['p99']:.0f}, "
          f"max {s['max']:.0f}, mean {s['mean']:.1f} +- {s['std']:.1f}")
    fractions = ", ".join(f"{k[len('fraction_'):]} {100 * v:.1f}%" for k, v in s.items() if k.startswith("fraction_"))
    print(f"HU classes  {fractions}")
    return 0


# --- bonelab drr -------------------------------------------------------------------------------
def _add_drr(p: argparse.ArgumentParser) -> None:
    p.add_argument("ct", help="CT file (NIfTI, NRRD, MetaImage) or DICOM folder, in HU")
    p.add_argument("--labels", help="label map on the CT's grid: also write per-label masks")
    p.add_argument("--resample-labels", action="store_true",
                   help="resample --labels onto the CT grid (nearest neighbour) instead of refusing another grid")
    p.add_argument("--view", default="pa", choices=["pa", "ap", "lateral-left", "lateral-right", "oblique", "carm"],
                   help="clinical view (default pa; see bonelab.drr.geometry for the conventions)")
    p.add_argument("--angle", type=float, nargs="+", default=[0.0], metavar="DEG",
                   help="rotation about the patient's long axis (pa/oblique/carm); several values render a batch")
    p.add_argument("--tilt", type=float, default=0.0, metavar="DEG", help="cranial (+) / caudal (-) tilt")
    p.add_argument("--sid", type=float, default=820.0, metavar="MM", help="source-to-isocentre distance (820)")
    p.add_argument("--sdd", type=float, default=1020.0, metavar="MM", help="source-to-detector distance (1020)")
    p.add_argument("--size", type=int, nargs="+", default=[256], metavar="N",
                   help="detector size in pixels: N (square) or W H (default 256)")
    p.add_argument("--pixel", type=float, metavar="MM", help="pixel pitch (default: the detector covers the CT)")
    p.add_argument("--kvp", type=float, metavar="KV", help="polychromatic render at this tube voltage")
    p.add_argument("--energy", type=float, default=60.0, metavar="KEV", help="monochromatic energy (default 60)")
    p.add_argument("--output", default="radiograph", choices=["line-integral", "intensity", "radiograph"],
                   help="what to write (default radiograph)")
    p.add_argument("--step", type=float, metavar="MM", help="ray-march step (default: finest voxel spacing)")
    p.add_argument("--min-mm", type=float, default=1.0, metavar="MM",
                   help="label mask threshold: path length through the structure (default 1 mm)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device (default: cuda if available)")
    p.add_argument("--out", required=True, metavar="FILE", help=f"output image: {', '.join(IMAGE_SUFFIXES)}")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in IMAGE_SUFFIXES:
        if name.endswith(s):
            return s
    raise InvalidArgumentError(f"--out {path}: unknown image type; use one of {', '.join(IMAGE_SUFFIXES)}.")


def _geometries(args, ct):
    from bonelab.drr import geometry

    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    if len(args.size) > 2:
        raise InvalidArgumentError(f"--size takes N or W H; got {args.size}.")
    common = dict(sid=args.sid, sdd=args.sdd, size=size, pixel=args.pixel)
    if args.view in ("ap", "lateral-left", "lateral-right"):
        if any(args.angle) or args.tilt:
            raise InvalidArgumentError(f"--angle/--tilt apply to pa, oblique and carm views, not {args.view}.")
        return [geometry.view(args.view, ct, **common)]
    angles = [45.0] if args.view == "oblique" and args.angle == [0.0] else args.angle
    return [geometry.carm(ct, a, args.tilt, **common) for a in angles]


def _run_drr(args) -> int:
    from bonelab import io
    from bonelab.drr import Renderer, label_masks, project_labels

    out = Path(args.out)
    suffix = _suffix(out)
    ct = io.read_ct(args.ct, verbose=False)
    labels = io.read_labels(args.labels, like=ct, resample=args.resample_labels) if args.labels else None
    geoms = _geometries(args, ct)
    for i, g in enumerate(geoms):
        head = f"geometry {i + 1}/{len(geoms)}" if len(geoms) > 1 else "geometry"
        print(f"{head} ({args.view}, angle {_angle_of(args, i)} deg, tilt {args.tilt} deg):")
        print("  " + g.describe().replace("\n", "\n  "))
    renderer = Renderer(ct, energy_keV=args.energy, kvp=args.kvp, device=args.device)
    images = renderer(geoms, output=args.output.replace("-", "_"), step_mm=args.step, progress=True)
    images = images.cpu().numpy()
    written = _write(images if len(geoms) > 1 else images[0], out, suffix, geoms[0], scale=args.output != "radiograph")
    if labels is not None:
        paths, values = project_labels(labels, geoms)
        masks = label_masks(paths, min_mm=args.min_mm).numpy().astype(np.uint8)  # (B, L, H, W)
        names = default_label_names(values, labels.label_names)
        stem = _stem(out, suffix) + "_labels"
        written += _write(masks if len(geoms) > 1 else masks[0], out.with_name(stem + suffix), suffix, geoms[0],
                          scale=False)
        side = out.with_name(stem + ".json")
        write_json(side, {"channels": [{"channel": c, "value": v, "name": names[v]} for c, v in enumerate(values)],
                          "min_mm": args.min_mm})
        written.append(side)
        print(f"{len(values)} label channels (path >= {args.min_mm} mm)")
    for path in written:
        print(f"wrote {path}")
    return 0


def _angle_of(args, i) -> float:
    """The C-arm angle of geometry i as the command line asked for it (for printing)."""
    if args.view == "oblique" and args.angle == [0.0]:
        return 45.0
    return args.angle[i] if args.view in ("pa", "oblique", "carm") else 0.0


# --- bonelab extract-bones ---------------------------------------------------------------------
_INVERT = {"auto": "auto", "yes": True, "no": False}


def _add_extract_bones(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="radiograph: PNG, TIFF, JPEG or DICOM")
    p.add_argument("--model", required=True, metavar="RUN", help="run folder of a 'bones' network (model.json, best.pt)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for bones.png, enhanced.png, soft_tissue.png (16-bit) and bones.npy")
    p.add_argument("--weight", type=float, default=1.0, metavar="W",
                   help="enhancement weight: bone attenuates 1 + W times as strongly (default 1)")
    p.add_argument("--invert", default="auto", choices=list(_INVERT),
                   help="turn the image around first: auto (the file's polarity, else a check), yes or no")
    p.add_argument("--pixel-mm", type=float, metavar="MM",
                   help="the image's pixel spacing (default: the file's); with the network's it resamples")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device (default: cuda if available)")


def _run_extract_bones(args) -> int:
    from bonelab.segment import extract_bones

    result = extract_bones(args.image, args.model, invert=_INVERT[args.invert], pixel_mm=args.pixel_mm,
                           weight=args.weight, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("bones", "enhanced", "soft_tissue"):  # in [0, 1]: written as 0..65535, unscaled
        written += _write(getattr(result, name), out / f"{name}.png", ".png", None, scale=False)
    written += _write(result.bones, out / "bones.npy", ".npy", None, scale=False)
    h, w = result.bones.shape
    how = "sliding windows at the training spacing" if result.sliding else "resized to the network's input"
    print(f"bones of {args.image}: {h} x {w} px, {how}{', inverted first' if result.inverted else ''}; "
          f"enhancement weight {result.weight:g}")
    for path in written:
        print(f"wrote {path}")
    return 0


# --- bonelab detect-vertebrae ------------------------------------------------------------------
def _add_detect_vertebrae(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="lateral lumbar radiograph: PNG, TIFF, JPEG or DICOM")
    p.add_argument("--model", required=True, metavar="RUN",
                   help="run folder of a 'lumbar' network: instance (Mask R-CNN) or semantic (U-Net)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for vertebrae.csv (level, score, box), masks.npy (K, H, W) and class_map.npy")
    p.add_argument("--score", type=float, default=0.5, help="lowest detection score kept (default 0.5)")
    p.add_argument("--invert", default="auto", choices=list(_INVERT),
                   help="turn the image around first: auto (the file's polarity, else a check), yes or no")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device (default: cuda if available)")


def _run_detect_vertebrae(args) -> int:
    from bonelab.segment import detect_vertebrae

    found = detect_vertebrae(args.image, args.model, score_threshold=args.score, invert=_INVERT[args.invert],
                             device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["level,score,x1,y1,x2,y2"] + [f"{lv},{sc:.4f}," + ",".join(f"{v:g}" for v in box)
                                         for lv, sc, box in zip(found.levels, found.scores, found.boxes)]
    table = out / "vertebrae.csv"
    _atomic(table, lambda tmp: tmp.write_text("\n".join(rows) + "\n"))
    written = [table] + _write(found.masks, out / "masks.npy", ".npy", None, scale=False)
    written += _write(found.class_map, out / "class_map.npy", ".npy", None, scale=False)
    print(f"{args.image}: {len(found.levels)} found by the {found.model} network: {', '.join(found.levels) or 'none'}")
    for path in written:
        print(f"wrote {path}")
    return 0


# --- bonelab segment-ct / bmd ------------------------------------------------------------------
def _add_segment_ct(p: argparse.ArgumentParser) -> None:
    p.add_argument("ct", help="hip CT: NIfTI, NRRD, MetaImage or DICOM folder (HU)")
    p.add_argument("--model", required=True, metavar="RUN", help="run folder of a 'femur' network (chapter 6)")
    p.add_argument("--out", required=True, metavar="LABELS", help="label map to write (.nii.gz, .nrrd, .mha)")
    p.add_argument("--side", choices=["left", "right"], help="which femur (default: the side the network learnt)")
    p.add_argument("--threshold", type=float, help="probability threshold (default: the run's tuned one, else 0.5)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device (default: cuda if available)")


def _run_segment_ct(args) -> int:
    from bonelab.io import write
    from bonelab.segment import segment_ct

    labels = segment_ct(args.ct, args.model, side=args.side, threshold=args.threshold, device=args.device)
    write(labels, args.out)
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    name = labels.label_names[1]
    print(f"{args.ct}: {name} {int(labels.array.sum()) * voxel_ml:.1f} mL; wrote {args.out}")
    return 0


def _add_bmd(p: argparse.ArgumentParser) -> None:
    p.add_argument("ct", help="QCT scan with its calibration phantom: NIfTI, NRRD, MetaImage or DICOM folder")
    p.add_argument("--labels", required=True, help="label map on the CT's grid (e.g. from bonelab segment-ct)")
    p.add_argument("--rods", required=True, metavar="JSON",
                   help="calibration rods: {\"rod_centers_xy_mm\": [[x, y], ...], \"rod_radius_mm\": r, "
                        "\"concentrations_mg_cm3\": [...]} (LPS mm; concentrations from the certificate)")
    p.add_argument("--label", type=int, default=1, help="label value of the bone (default 1)")
    p.add_argument("--peel-mm", type=float, default=3.0, help="cortex peeled off for trabecular BMD (default 3 mm)")


def _run_bmd(args) -> int:
    from bonelab import io, qct
    from bonelab.files import read_json
    from bonelab.volume import Volume

    ct = io.read_ct(args.ct, verbose=False)
    labels = io.read_labels(args.labels, like=ct)
    mask = Volume((labels.array == args.label).astype(np.uint8), labels.spacing, labels.origin, labels.direction)
    if not mask.array.any():
        raise InvalidArgumentError(f"{args.labels} has no voxel of label {args.label}; pick another with --label.")
    cal = qct.calibrate(ct, read_json(args.rods, what="rods file", make="write the rods' centres and concentrations"))
    bmd = qct.hu_to_bmd_mg_cm3(ct, cal)
    print(f"calibration  HU = {cal.intercept_hu:.2f} + {cal.slope_hu_per_mg_cm3:.4f} x mg/cm3 "
          f"(R2 {cal.r2:.5f}, {cal.n_rods} rods)")
    print(f"vBMD integral   {qct.vbmd_mg_cm3(bmd, mask):.1f} mg/cm3")
    print(f"vBMD trabecular {qct.vbmd_mg_cm3(bmd, mask, peel_mm=args.peel_mm):.1f} mg/cm3 "
          f"(deeper than {args.peel_mm:g} mm)")
    print(f"aBMD (CTXA-like, AP projection) {qct.areal_bmd_g_cm2(bmd, mask):.3f} g/cm2")
    _print_femur_regions(bmd, mask, args.peel_mm)
    return 0


def _print_femur_regions(bmd, mask, peel_mm: float) -> None:
    """The neck's, trochanter's and total region's vBMD, from axes measured on a femur mask; a
    note instead where the mask is no proximal femur (a vertebra, a femur cut above the shaft)."""
    from bonelab import qct

    try:
        axes = qct.measure_femur_axes(mask)
    except InvalidValuesError as e:
        print(f"femur regions: not measured ({e})")
        return
    print(f"femur axes (measured on the mask): head {2 * axes['head_radius_mm']:.1f} mm across, neck "
          f"{2 * axes['neck_radius_mm']:.1f} mm, neck-shaft angle {qct.neck_shaft_angle_deg(axes):.0f} deg")
    regions = qct.femur_regions(mask, **axes)
    print(f"{'region':<12}{'vBMD integral':>15}{'vBMD trabecular':>17}  mg/cm3")
    for name in ("neck", "trochanter", "total"):
        values = []
        for peel in (None, peel_mm):
            try:
                values.append(f"{qct.vbmd_mg_cm3(bmd, mask, regions[name], peel_mm=peel):.1f}")
            except InvalidValuesError:  # no voxel left in the region (a thin neck peeled away)
                values.append("n/a")
        print(f"{name:<12}{values[0]:>15}{values[1]:>17}")


# --- writing images ----------------------------------------------------------------------------
def _stem(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)]


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name in the same folder, then rename (no half-written files)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _write(arr: np.ndarray, path: Path, suffix: str, geom, *, scale: bool) -> list:
    """Write (H, W) or (N, H, W) [or (B, L, H, W) masks] to ``path``; PNG gets one file per 2D
    image (``_000`` suffixes), the other formats hold the whole stack."""
    if suffix == ".npy":
        _atomic(path, lambda tmp: np.save(tmp, arr))
        return [path]
    if suffix in (".nii.gz", ".nii"):
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(arr.reshape(-1, *arr.shape[-2:]) if arr.ndim > 2 else arr)
        img.SetSpacing(tuple(geom.pixel) + ((1.0,) if arr.ndim > 2 else ()))
        _atomic(path, lambda tmp: sitk.WriteImage(img, str(tmp)))
        return [path]
    if suffix in (".tif", ".tiff"):
        import tifffile

        _atomic(path, lambda tmp: tifffile.imwrite(tmp, arr.astype(np.float32) if scale else arr))
        return [path]
    from PIL import Image  # .png: 16-bit greyscale, each image scaled to its own min..max

    flat = arr.reshape(-1, *arr.shape[-2:])
    paths = [path] if len(flat) == 1 else [path.with_name(f"{_stem(path, suffix)}_{i:03d}{suffix}")
                                           for i in range(len(flat))]
    for p, a in zip(paths, flat):
        a = a.astype(np.float64)
        if scale or a.max() > 1:
            a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
        img = Image.fromarray(np.round(a * 65535).astype(np.uint16))
        _atomic(p, lambda tmp, img=img: img.save(tmp, format="PNG"))
    return paths


# --- the command -------------------------------------------------------------------------------
def _lazy(module: str, name: str):
    """``module.name``, imported when called (building the parser, running the command), not
    when ``bonelab.cli`` is imported: the pipeline modules pull in torch and MONAI."""

    def call(*args):
        import importlib

        return getattr(importlib.import_module(module), name)(*args)

    return call


COMMANDS = {
    "info": ("print a CT's size, spacing, orientation and HU summary", _add_info, _run_info),
    "drr": ("render a digitally reconstructed radiograph (and label masks) from a CT", _add_drr, _run_drr),
    "simulate": ("simulate a radiograph dataset (images + projected bone masks) from labelled CT",
                 _lazy("bonelab.simulate.command", "add_simulate_arguments"), _lazy("bonelab.simulate.command", "run_simulate")),
    "extract-bones": ("extract the bones of a radiograph with a trained 'bones' network; enhance and subtract them",
                      _add_extract_bones, _run_extract_bones),
    "detect-vertebrae": ("find and name L1-L5 and the sacrum in a lateral lumbar radiograph with a 'lumbar' network",
                         _add_detect_vertebrae, _run_detect_vertebrae),
    "segment-ct": ("segment the proximal femur in a hip CT with a 'femur' network", _add_segment_ct, _run_segment_ct),
    "bmd": ("calibrate a QCT scan on its phantom rods and report the BMD of a labelled bone", _add_bmd, _run_bmd),
    "train": ("train a bone segmentation network on a simulated dataset",
              _lazy("bonelab.tasks.command", "add_train_arguments"), _lazy("bonelab.tasks.command", "run_train")),
}
"""Subcommand name -> (one-line help, add_arguments(parser), run(args) -> exit status)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``bonelab`` argument parser: one subcommand per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="bonelab", description="Deep-learning bone imaging from CT to X-ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``bonelab`` console script; returns the exit status.

    >>> main(["info", "/no/such/ct.nii.gz"])
    1
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (BonelabError, OSError) as exc:  # anticipated failures: one line, no traceback
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"bonelab {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
