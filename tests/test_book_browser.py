"""The built book in a real browser (headless Chromium, offline): every page loads without console
errors, broken images, tracebacks or dead links (``tests/book_site.py``), and each of those faults,
planted in a copy of the site, is caught.

``make test-browser`` (part of ``make test``) builds the quick-mode book into ``_build/quick`` and
runs this file with ``BONELAB_BOOK_HTML`` pointing at it; without that variable these tests are
skipped (plain ``pytest`` does not build the book).
"""

import os
import re
import shutil
from pathlib import Path

import pytest

SITE = os.environ.get("BONELAB_BOOK_HTML")
pytestmark = pytest.mark.skipif(not SITE, reason="set BONELAB_BOOK_HTML to a built book (make test-browser does)")


@pytest.fixture(scope="module")
def site() -> Path:
    path = Path(SITE)
    assert (path / "index.html").exists(), f"no built book in {path}; run `make book-quick`"
    return path


@pytest.fixture(scope="module")
def driver():
    from book_site import chromium

    d = chromium()
    yield d
    d.quit()


def test_every_page_reads_cleanly_offline(site):
    from book_site import check_site

    problems = check_site(site, screenshots=site.parent / "screenshots")
    assert not problems, "\n".join(problems)
    shots = list((site.parent / "screenshots").glob("*.png"))
    assert len(shots) >= 8


def _planted(site: Path, tmp_path: Path, page: str, old: str, new: str) -> Path:
    """A copy of the site with ``old`` replaced by ``new`` once in ``page``."""
    copy = tmp_path / "html"
    shutil.copytree(site, copy, symlinks=True)
    f = copy / f"{page}.html"
    html = f.read_text(encoding="utf-8")
    assert old in html, f"nothing to plant the fault on in {page}"
    f.write_text(html.replace(old, new, 1), encoding="utf-8")
    return copy


def _problems(driver, site: Path, copy: Path, page: str) -> list[str]:
    from book_site import check_page, executed_notebook

    return check_page(driver, copy, page, n_chapters=6, executed=executed_notebook(site, page))


_OUTPUT = '<div class="cell_output docutils container">'  # where a planted fault goes before a cell's output


def test_a_broken_image_is_caught(site, tmp_path, driver):
    import re

    page = "book/02_xray_physics_drr"
    html = (site / f"{page}.html").read_text(encoding="utf-8")
    src = re.search(r'src="(\.\./_images/[^"]+\.png)"', html).group(1)
    copy = _planted(site, tmp_path, page, f'src="{src}"', 'src="../_images/missing.png"')
    assert any("image did not load" in p and "missing.png" in p for p in _problems(driver, site, copy, page))


def test_a_traceback_in_an_output_is_caught(site, tmp_path, driver):
    page = "book/01_loading_ct"
    fault = ('<div class="cell_output docutils container"><div class="output traceback highlight-ipythontb '
             'notranslate"><pre>Traceback (most recent call last):\nValueError: planted</pre></div></div>')
    copy = _planted(site, tmp_path, page, _OUTPUT, fault + _OUTPUT)
    assert any("traceback in an output" in p for p in _problems(driver, site, copy, page))


def test_a_dead_link_is_caught(site, tmp_path, driver):
    page = "book/intro"
    link = '<a class="reference internal" href="01_loading_ct.html"'  # the table of contents
    copy = _planted(site, tmp_path, page, link, '<a class="reference internal" href="no_such_chapter.html"')
    assert any("dead link" in p and "no_such_chapter.html" in p for p in _problems(driver, site, copy, page))


def test_a_page_that_scrolls_sideways_is_caught(site, tmp_path, driver):
    page = "book/01_loading_ct"
    wide = '<p><span style="white-space: nowrap">' + "an unbreakable line " * 200 + "</span></p>"
    copy = _planted(site, tmp_path, page, _OUTPUT, wide + _OUTPUT)
    assert any("scrolls sideways" in p and "an unbreakable line" in p for p in _problems(driver, site, copy, page))


def _public_names():
    """(module, name) of every public function and class that a bonelab module defines."""
    import importlib
    import inspect
    import pkgutil

    import bonelab

    for info in pkgutil.walk_packages(bonelab.__path__, "bonelab."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                    and obj.__module__ == info.name:
                yield info.name, name


def test_api_reference_documents_every_public_name(site):
    html = (site / "book" / "api.html").read_text(encoding="utf-8")
    missing = [f"{m}.{n}" for m, n in _public_names() if f'id="{m}.{n}"' not in html]
    assert not missing, f"not in the API reference: {missing}"


def test_chapters_link_their_first_mentions_to_the_api_reference(site):
    api = (site / "book" / "api.html").read_text(encoding="utf-8")
    for page in sorted((site / "book").glob("0*.html")):
        html = page.read_text(encoding="utf-8")
        anchors = re.findall(r'<a class="[^"]*api-link[^"]*" href="api\.html#([^"]+)"', html)
        assert len(anchors) >= 3, f"{page.name}: {len(anchors)} links to the API reference"
        assert len(anchors) == len(set(anchors)), f"{page.name}: a name is linked more than once"
        missing = [a for a in anchors if f'id="{a}"' not in api]
        assert not missing, f"{page.name}: links to API entries that do not exist: {missing}"
