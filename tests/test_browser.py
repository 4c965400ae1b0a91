"""The study as a student meets it: JupyterLab from this environment, driven in a real browser.

JupyterLab is started from the project's environment on a loopback port and driven by Playwright in headless
Chromium (Debian's ``chromium`` package: Playwright's own browser download needs the internet). Two notebooks
run as a student runs them, from the Run menu: notebook 01 (with tiny parameters: the tiny synthetic dataset,
one epoch, a few objects) must finish with no error output and with its figures shown; notebook 08's viewer must
draw its picture and follow its frame slider. Each copy is written, parameters changed, into a temporary folder
that JupyterLab serves; nothing is written into the repository.

Skips with a reason where playwright is not installed (``pip install -e '.[dev]'``) or no Chromium is found
(``apt-get install -y chromium``; another executable: ``SSMTL_CHROMIUM=/path/to/chrome``). With
``SSMTL_SCREENSHOTS=docs`` the screenshots go to ``docs/`` (README shows them), otherwise next to the test's files.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ssmtl_core import study_task

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ssmtl-browser-test"
#: Chromium on this machine's closed network: no sandbox (root), no GPU, and none of its background connections
#: (QUIC, component updates, sync), which the network refuses and which would only slow it down.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY = {"DATA_ROOT": "data", "SYNTH_SIZE": "tiny", "CACHE_DIR": "cache", "RUNS_DIR": "runs", "DEVICE": "cpu",
        "PRECISION": "fp32", "EPOCHS": 1, "MAX_OBJECTS": 64}

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    candidates = [os.environ.get("SSMTL_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                  shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_copy(name: str, folder: Path, values: dict, cut_after: str | None = None) -> Path:
    """A copy of ``notebooks/<name>.ipynb`` with the parameters in ``values`` changed (paths made absolute under
    ``folder``) and, with ``cut_after``, only the cells up to the first one containing that text."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = []
    for line in "".join(cell["source"]).splitlines():
        key = line.split("=")[0].strip()
        if key in values:
            value = values[key]
            if key.endswith(("_DIR", "_ROOT")):
                value = str(folder / value)
            line = f"{key} = {value!r}  # changed by tests/test_browser.py"
        lines.append(line)
    cell["source"] = "\n".join(lines)
    if cut_after is not None:
        last = next(i for i, c in enumerate(nb["cells"]) if cut_after in "".join(c["source"]))
        nb["cells"] = nb["cells"][:last + 1]
    path = folder / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The folder JupyterLab serves, and its URL: JupyterLab from this environment on a loopback port, with its
    settings (no news, no update check) and workspaces in the folder, never in the user's home."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    if _chromium() is None:
        pytest.skip("no Chromium found: apt-get install -y chromium (or set SSMTL_CHROMIUM)")
    folder = tmp_path_factory.mktemp("lab")
    settings = folder / ".lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                            "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(folder / ".lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(folder / ".lab-workspaces"), PYTHONWARNINGS="ignore::UserWarning")
    port = _free_port()
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.open_browser=False",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}",
               f"--ServerApp.root_dir={folder}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(folder / "jupyterlab.log", "w")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start: see {folder / 'jupyterlab.log'}")
            time.sleep(0.5)
        yield folder, url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(served, tmp_path_factory):
    """A page of headless Chromium (a fresh profile in a temporary folder), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=_chromium(), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 860})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


#: The notebook in front (other notebooks opened before stay in the page, hidden).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
_PROMPTS = f"Array.from(document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent)"
_STATUS = f"document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator')?.getAttribute('data-status')"


def _run_all(page, url: str, notebook: Path, folder: Path, timeout: float = 300) -> dict:
    """Open ``notebook`` in JupyterLab, run every cell from the Run menu, wait until the kernel is idle with no
    cell queued, save, and return the saved notebook (its outputs as the browser received them)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    relative = notebook.relative_to(folder).as_posix()
    page.goto(f"{url}/lab/tree/{relative}?reset&token={TOKEN}")  # reset: this notebook alone in the workspace
    page.locator(f"{PANEL} .jp-Notebook-ExecutionIndicator").wait_for(timeout=90_000)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)  # the kernel is up
    for _ in range(3):  # a click while the page still wires its commands can go unheard: click again
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(f"{_PROMPTS}.some(p => p.includes('*'))", timeout=10_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    else:
        pytest.fail(f"Run All Cells did not start {relative}")
    page.wait_for_function(f"!{_PROMPTS}.some(p => p.includes('*')) && {_STATUS} === 'idle'",
                           timeout=timeout * 1000, polling=500)
    page.locator(f"{PANEL} .jp-Notebook").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        saved = json.loads(notebook.read_text())
        if any(c.get("execution_count") for c in saved["cells"] if c["cell_type"] == "code"):
            return saved
        time.sleep(0.5)
    pytest.fail(f"{relative} was not saved after running; prompts: {page.evaluate(_PROMPTS)}")


def _errors(saved: dict) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in saved["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", []) if o["output_type"] == "error"]


def _screenshot(page, tmp_path: Path, name: str, element=None) -> Path:
    """A small PNG (a 64-colour palette keeps it well under 500 KB) in SSMTL_SCREENSHOTS, else in tmp_path."""
    from PIL import Image

    folder = Path(os.environ["SSMTL_SCREENSHOTS"]) if os.environ.get("SSMTL_SCREENSHOTS") else tmp_path
    path = (folder if folder.is_absolute() else ROOT / folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = tmp_path / f"raw-{name}"
    (element or page).screenshot(path=str(raw))
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def test_notebook_01_runs_in_jupyterlab(served, page, tmp_path):
    folder, url = served
    notebook = _write_copy("01_arrow_of_time", folder, {**TINY, "OUT_DIR": "out/01"})
    saved = _run_all(page, url, notebook, folder)
    assert not _errors(saved), _errors(saved)
    code = [c for c in saved["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code), f"every cell ran: {[c['execution_count'] for c in code]}"
    assert (folder / "out" / "01" / "metrics.json").is_file()
    figures = page.locator(f"{PANEL} .jp-OutputArea-output img")
    assert figures.count() >= 3, "the sample strip, the loss history and the score histogram are shown"
    histogram = figures.nth(2)  # the score histogram of normal and abnormal test objects
    histogram.scroll_into_view_if_needed()
    assert histogram.evaluate("img => img.complete && img.naturalWidth > 100")
    assert _screenshot(page, tmp_path, "notebook_01.png").stat().st_size < 500_000


def test_viewer_in_jupyterlab(served, page, tmp_path):
    """Notebook 08 up to its viewer, on a run trained as notebook 05 trains it: the picture is drawn, and moving
    the frame slider draws another (a round trip through the kernel)."""
    folder, url = served
    namespace = {"PROFILE": "synthetic", **TINY, "OUT_DIR": str(folder / "out" / "05"), "ARCH": "shallow_narrow"}
    namespace.update({k: str(folder / v) for k, v in TINY.items() if k.endswith(("_DIR", "_ROOT"))})
    nb = study_task.setup("05_train_architecture", namespace)
    study_task.train_run(nb, nb.run_dir("shallow_narrow"), study_task.prepare_data(nb))
    notebook = _write_copy("08_anomaly_gallery", folder, {**TINY, "OUT_DIR": "out/08", "REPORTS_DIR": "reports",
                                                          "ARCHS": "shallow_narrow"},
                           cut_after="viewer.explore(explored)")
    saved = _run_all(page, url, notebook, folder)
    assert not _errors(saved), _errors(saved)
    image = page.locator("img.widget-image")
    image.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelector('img.widget-image').naturalWidth > 200", timeout=30_000)
    widget = page.locator(f"{PANEL} .jp-OutputArea-output .widget-vbox").last
    widget.scroll_into_view_if_needed()
    first = image.get_attribute("src")
    at_start = page.locator(".widget-slider .widget-readout").first.inner_text().strip() == "0"
    page.locator(".widget-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight" if at_start else "ArrowLeft")
    page.wait_for_function(f"document.querySelector('img.widget-image').src !== {first!r}", timeout=30_000)
    page.keyboard.press("ArrowLeft" if at_start else "ArrowRight")  # back to the peak frame for the picture
    time.sleep(1.0)
    assert _screenshot(page, tmp_path, "viewer.png", element=widget).stat().st_size < 500_000
