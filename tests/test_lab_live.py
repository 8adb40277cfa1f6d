"""Chapter 1 as a live notebook, the way a reader studies it: JupyterLab (``make lab``) started on
localhost, chapter 1 opened in headless Chromium, its first cells run, and the slice viewer
checked to draw a picture and to draw a new one when its slider moves.

Run by ``make test-browser`` (part of ``make test``) with ``BONELAB_LIVE_LAB=1``; skipped
otherwise, and where JupyterLab, selenium or Chromium are missing.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("BONELAB_LIVE_LAB") != "1",
                                reason="set BONELAB_LIVE_LAB=1 (make test-browser does)")
CHAPTER = "book/01_loading_ct.ipynb"
VIEWER_CELL = "viz.slice_viewer("  # the cell of chapter 1 that opens the slice viewer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1, in quick mode, serving a copy of chapter 1 (so that
    JupyterLab's autosave never writes outputs into the repository); (url, token)."""
    pytest.importorskip("jupyterlab")
    home = tmp_path_factory.mktemp("lab")
    (home / "root" / "book").mkdir(parents=True)
    shutil.copy(ROOT / CHAPTER, home / "root" / CHAPTER)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "BONELAB_QUICK": "1", "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as for a reader
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home / 'root'}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if json.load(r).get("started"):
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + (home / "lab.log").read_text()[-2000:])
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def driver():
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        pytest.skip("Chromium and chromedriver are needed (make system-deps installs them)")
    from book_site import chromium

    d = chromium(reachable=("127.0.0.1",))
    d.set_script_timeout(600)
    yield d
    d.quit()


# Run every cell up to and including the slice viewer's through JupyterLab's own commands, as
# "Run All Above Selected Cell" and "Run Selected Cell" do; return the viewer cell's index and
# any error outputs on the way.
_RUN_TO_VIEWER = """
const done = arguments[arguments.length - 1];
(async () => {
  const app = window.jupyterapp;
  await app.started; await app.restored;
  let panel = null;
  for (let i = 0; i < 600 && !(panel && panel.content && panel.sessionContext); i++) {
    panel = app.shell.currentWidget; await new Promise(r => setTimeout(r, 100));
  }
  await panel.context.ready; await panel.sessionContext.ready;
  const cells = panel.content.widgets;
  const idx = cells.findIndex(c => c.model.type === "code" && c.model.sharedModel.getSource().includes(arguments[0]));
  if (idx < 0) { done({error: "no slice viewer cell"}); return; }
  panel.content.activeCellIndex = idx;
  await app.commands.execute("notebook:run-all-above");
  await app.commands.execute("notebook:run-cell");
  const errors = [];
  cells.slice(0, idx + 1).forEach((c, k) => {
    if (c.model.type !== "code") return;
    for (let j = 0; j < c.model.outputs.length; j++) {
      const o = c.model.outputs.get(j).toJSON();
      if (o.output_type === "error") errors.push(`cell ${k}: ${o.ename}: ${o.evalue}`);
    }
  });
  done({index: idx, errors: errors});
})().catch(e => done({error: String(e)}));
"""

_VIEWER_IMAGE = """
const cell = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]];
const img = cell.node.querySelector(".jp-OutputArea img.widget-image, .jp-OutputArea .jupyter-widgets img");
return img && img.complete && img.naturalWidth > 0 ? [img.src, img.naturalWidth, img.naturalHeight] : null;
"""


def _wait(fn, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    return None


def test_chapter_1_slice_viewer_is_live_in_jupyterlab(lab, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    driver.get(f"{url}/lab/tree/{CHAPTER}?token={token}&reset")
    assert _wait(lambda: driver.execute_script("return !!window.jupyterapp"), 120), "JupyterLab did not load"
    ran = driver.execute_async_script(_RUN_TO_VIEWER, VIEWER_CELL)
    assert "error" not in ran, ran.get("error")
    assert ran["errors"] == [], f"cells of chapter 1 failed live: {ran['errors']}"
    first = _wait(lambda: driver.execute_script(_VIEWER_IMAGE, ran["index"]), 120)
    assert first, "the slice viewer drew no picture"
    src, width, height = first
    assert width > 200 and height > 200  # a figure, not an icon
    cell = driver.execute_script("return window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]].node",
                                 ran["index"])
    readout = cell.find_element(By.CSS_SELECTOR, ".widget-slider .widget-readout")
    before = readout.text
    handle = cell.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT * 5)
    assert _wait(lambda: readout.text != before, 30), "the slice slider did not move"
    redrawn = _wait(lambda: (lambda now: now if now and now[0] != src else None)(
        driver.execute_script(_VIEWER_IMAGE, ran["index"])), 60)
    assert redrawn, f"the picture did not change when the slice moved from {before} to {readout.text}"
    driver.save_screenshot(str(ROOT / "_build" / "lab_chapter1_viewer.png"))
