"""``bonelab simulate PROTOCOL ...``: the command line of :func:`bonelab.simulate.simulate`.

    bonelab simulate wrist --subjects 60 --out DIR                      # virtual wrists, masks
    bonelab simulate chest --subjects 20 --target bone-radiograph --out DIR
    bonelab simulate lumbar --target instances --out DIR --shard 0/4    # a quarter of the jobs
    bonelab simulate chest --ct a.nii.gz b.nii.gz --labels a_seg.nii.gz b_seg.nii.gz --out DIR

Every argument is checked before any work starts or any file is written.
"""

from __future__ import annotations

import argparse
import os
import time

from bonelab.errors import InvalidArgumentError


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bonelab simulate``."""
    from bonelab.simulate import PROTOCOLS, SPLITS, TARGETS

    parser.add_argument("protocol", choices=sorted(PROTOCOLS), help="anatomy protocol (views, hanging, physics)")
    parser.add_argument("--out", required=True, metavar="DIR", help="data set folder (resumed if it exists)")
    parser.add_argument("--subjects", type=int, default=20, help="number of virtual subjects (20)")
    parser.add_argument("--ct", nargs="+", metavar="CT", help="your own CTs (files or DICOM folders) instead of phantoms")
    parser.add_argument("--labels", nargs="+", metavar="LABELS", help="one label map per --ct (e.g. TotalSegmentator)")
    parser.add_argument("--label-names", metavar="FILE", help="label names for --labels: .json {value: name} or .csv")
    parser.add_argument("--target", default="masks", choices=sorted(TARGETS), help="what to store next to each image")
    parser.add_argument("--bone", default="labels", metavar="LABELS|LOW,HIGH",
                        help="bone-radiograph: bone by the labels (default) or by an HU window, e.g. 400,800")
    parser.add_argument("--views", nargs="+", help="views of the protocol (default: all)")
    parser.add_argument("--per-view", type=int, default=1, help="samples per subject and view (1)")
    parser.add_argument("--size", type=int, help="detector pixels, square (default: the protocol's)")
    parser.add_argument("--spacing", type=float, metavar="MM", help="phantom voxel size (default: the protocol's)")
    parser.add_argument("--physics", default="random", choices=("random", "fixed", "shifted"), help="physics ranges")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard", metavar="K/N", help="render only jobs K, K+N, ... (several machines)")


def _subjects(args):
    from bonelab.simulate import SubjectFiles

    if not args.ct and not args.labels:
        return args.subjects
    if not args.ct or not args.labels or len(args.ct) != len(args.labels):
        raise InvalidArgumentError("--ct and --labels must be given together, one label map per CT; got "
                                   f"{len(args.ct or [])} CT(s) and {len(args.labels or [])} label map(s).")
    missing = [p for p in (*args.ct, *args.labels) if not os.path.exists(p)]
    if missing:
        raise InvalidArgumentError(f"{missing[0]} does not exist; check the --ct/--labels paths.")
    return [SubjectFiles(c, lab, args.label_names) for c, lab in zip(args.ct, args.labels)]


def _bone(text: str):
    if text == "labels":
        return "labels"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgumentError(f"--bone must be 'labels' or LOW,HIGH in HU (e.g. 400,800); got {text!r}.") from None
    return (lo, hi)


def run_simulate(args) -> int:
    """Run ``bonelab simulate`` from parsed arguments; prints samples per second."""
    from bonelab.simulate import dataset_info, simulate

    start = time.perf_counter()
    out = simulate(args.out, args.protocol, subjects=_subjects(args), target=args.target, bone=_bone(args.bone),
                   views=args.views, per_view=args.per_view, size=args.size, spacing=args.spacing,
                   physics=args.physics, seed=args.seed, splits=tuple(args.splits), workers=args.workers,
                   shard=args.shard)
    seconds = time.perf_counter() - start
    info = dataset_info(out)
    n = info["n_samples"] if args.shard is None else len(range(*_shard_range(args.shard, info["n_samples"])))
    print(f"{n} samples in {seconds:.1f} s ({n / seconds:.2f} samples/s) -> {out}")
    print("consolidated" if info["consolidated"] else "not consolidated yet (other shards pending)")
    return 0


def _shard_range(shard: str, n: int) -> tuple:
    from bonelab.simulate import parse_shard

    k, m = parse_shard(shard)
    return (k, n, m)
