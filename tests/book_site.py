"""Open a built book page by page in headless Chromium and list what a reader would see wrong.

Used by ``tests/test_book_browser.py`` (``make test-browser``) on the quick-mode book and, with
faults planted in a copy, to show that each check can fail.  The browser runs with every host
name unresolvable, so the pages are checked as an offline reader sees them: anything fetched from
a CDN fails and shows up as a console error.

Checks per page: it loads; the console holds no errors; every image has loaded with a non-zero
size; formulas are typeset and embedded widgets drawn; no cell output holds a traceback; a
chapter shows at least as many figures as its executed notebook holds image outputs; no output
shows a temporary path (``/tmp/...``); every internal link (table of contents, cross-references,
citations) points to a file that exists and, with a ``#fragment``, to an id on that page; every
"chapter N" in the text names a chapter of the book; the page does not scroll sideways (no
element wider than the window, such as an unwrapped API signature).  A screenshot of each page's
first screen is written to ``screenshots``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_pages(root: Path = ROOT) -> list[str]:
    """Document names of the book's pages in table-of-contents order (``book/intro``, ...)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or ():
            if "file" in e:
                pages.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("parts", ()):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", ()):
        walk(part.get("chapters"))
    return [str(Path(p).with_suffix("")) for p in pages]


def chromium(*, reachable: tuple[str, ...] = ()):
    """Headless Chromium through chromedriver (Debian's ``chromium`` and ``chromium-driver``),
    offline: every host name fails to resolve, except those in ``reachable`` (a local server's
    ``127.0.0.1``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--host-resolver-rules=MAP * ~NOTFOUND" + "".join(f", EXCLUDE {host}" for host in reachable),
                "--disable-background-networking", "--disable-component-update", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(60)
    return driver


_IMAGES_JS = """
const imgs = Array.from(document.images);
imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
return imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0))
           .map(i => i.getAttribute('src'));
"""


_WIDER_THAN_WINDOW_JS = """
const W = document.documentElement.clientWidth;
if (document.documentElement.scrollWidth <= W + 1) return [];
const wide = Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > W + 1 && e.children.length < 3)
  .slice(0, 3).map(e => [e.tagName.toLowerCase() + '.' + e.className, (e.textContent || '').trim().slice(0, 80)]);
return wide.length ? wide : [['page', document.documentElement.scrollWidth + ' px in a ' + W + ' px window']];
"""


def check_page(driver, site: Path, doc: str, *, n_chapters: int, executed: dict | None = None,
               screenshots: Path | None = None) -> list[str]:
    """Problems a reader would see on page ``doc`` of ``site`` (an empty list if none)."""
    page = site / f"{doc}.html"
    if not page.exists():
        return [f"{doc}: no page {page.name} in the built site"]
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.as_uri())
    _wait(lambda: driver.execute_script("return document.readyState") == "complete")
    time.sleep(1.0)  # scripts that run after load (MathJax, widgets)
    problems = []
    broken = []
    if not _wait(lambda: not driver.execute_script(_IMAGES_JS), seconds=10):
        broken = driver.execute_script(_IMAGES_JS)
    problems += [f"{doc}: image did not load: {src}" for src in broken]
    problems += [f"{doc}: console error: {e['message'][:300]}" for e in driver.get_log("browser")
                 if e["level"] == "SEVERE"]
    tracebacks = driver.execute_script("""
        return Array.from(document.querySelectorAll('.cell_output, .output'))
          .filter(o => o.matches('.traceback, .error') || o.querySelector('.traceback')
                       || o.textContent.includes('Traceback (most recent call last)'))
          .map(o => o.textContent.trim().slice(0, 200));""")
    problems += [f"{doc}: traceback in an output: {t!r}" for t in tracebacks]
    leaks = driver.execute_script("""
        return Array.from(document.querySelectorAll('.cell_output'))
          .map(o => (o.textContent.match(/\\/tmp\\/\\S+/) || [null])[0]).filter(x => x);""")
    problems += [f"{doc}: a temporary path in an output: {t}" for t in leaks]
    problems += _typeset_and_widgets(driver, doc)
    wide = driver.execute_script(_WIDER_THAN_WINDOW_JS)
    problems += [f"{doc}: wider than the window, scrolls sideways ({w}): {t!r}" for w, t in wide]
    if executed is not None:
        drawn = figures_in_notebook(executed)
        shown = driver.execute_script("return document.querySelectorAll('.cell_output img').length")
        if shown < drawn:
            problems.append(f"{doc}: shows {shown} figures, its executed notebook holds {drawn}")
        if re.match(r"book/\d\d_", doc) and not drawn:
            problems.append(f"{doc}: a chapter without a single figure (was matplotlib's backend "
                            "non-interactive, e.g. MPLBACKEND=Agg, while it ran?)")
    for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
        why = _dead(href, site)
        if why:
            problems.append(f"{doc}: dead link {href} ({why})")
    text = driver.execute_script("return document.querySelector('main, article, body').innerText")
    for n in sorted({int(m) for m in re.findall(r"\b[Cc]hapters? (\d+)\b", text)}):
        if not 1 <= n <= n_chapters:
            problems.append(f"{doc}: mentions chapter {n}, the book has {n_chapters}")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(screenshots / f"{doc.replace('/', '_')}.png"))
    return problems


def _typeset_and_widgets(driver, doc: str) -> list[str]:
    """Formulas typeset by MathJax (not raw LaTeX) and embedded widgets drawn by the widget
    manager: what fails first when either is fetched from a CDN and the reader is offline."""
    counts = driver.execute_script("""
        return [document.querySelectorAll('.math').length,
                document.querySelectorAll('mjx-container').length,
                document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
                document.querySelectorAll('.jupyter-widgets, .widget-container, .widget-slider').length];""")
    math, typeset, views, drawn = counts
    if not _wait(lambda: not math or driver.execute_script("return document.querySelectorAll('mjx-container').length"),
                 seconds=15):
        return [f"{doc}: {math} formulas, none typeset by MathJax (raw LaTeX)"]
    if views and not drawn:
        return [f"{doc}: {views} embedded widgets, none drawn"]
    return []


def check_site(site: Path, pages=None, *, screenshots: Path | None = None) -> list[str]:
    """Problems on every page of the built site ``site`` (``.../_build/html``)."""
    site = Path(site)
    pages = toc_pages() if pages is None else pages
    n_chapters = sum(bool(re.match(r"book/\d\d_", p)) for p in toc_pages())
    driver = chromium()
    try:
        problems = []
        for doc in pages:
            problems += check_page(driver, site, doc, n_chapters=n_chapters, executed=executed_notebook(site, doc),
                                   screenshots=screenshots)
        return problems
    finally:
        driver.quit()


def executed_notebook(site: Path, doc: str) -> dict | None:
    """The executed notebook of page ``doc`` as the build rendered it: from the build's
    jupyter-cache (myst-nb writes ``jupyter_execute/`` copies without outputs when a page comes
    from the cache), else from ``jupyter_execute/``; None for a page that is not a notebook."""
    source = ROOT / f"{doc}.ipynb"
    cache = site.parent / ".jupyter_cache"
    if source.exists() and cache.exists():
        import nbformat
        from jupyter_cache import get_cache

        try:
            _, nb = get_cache(str(cache)).merge_match_into_notebook(nbformat.read(source, as_version=4))
            return nb
        except KeyError:  # not in the cache: the page was executed without it
            pass
    copy = site.parent / "jupyter_execute" / f"{doc}.ipynb"
    return json.loads(copy.read_text(encoding="utf-8")) if copy.exists() else None


def figures_in_notebook(nb: dict) -> int:
    """Image outputs (figures) of an executed notebook."""
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", ())
               if any(k.startswith("image/") for k in o.get("data", {})))


def _dead(href: str, site: Path) -> str | None:
    """Why an internal link is dead (None when it resolves, or is external)."""
    url = urlparse(href)
    if url.scheme != "file":
        return None
    target = Path(unquote(url.path))
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return "no such file"
    if url.fragment and target.suffix == ".html":
        html = target.read_text(encoding="utf-8", errors="replace")
        if f'id="{unquote(url.fragment)}"' not in html:
            return f"no id {url.fragment!r} on that page"
    return None


def _wait(condition, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False
