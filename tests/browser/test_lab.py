"""The notebooks as a learner opens them: a real JupyterLab, driven in headless Chromium.

Run by ``./run_tests.sh --browser`` (which installs Debian's chromium and the pinned playwright
when missing, and makes sure the `smoke` artifacts of notebooks 01-04 exist). JupyterLab serves a
temporary copy of notebooks/ on a free loopback port; the test opens notebooks 01, 04 and 08,
runs every cell from the Run menu, saves, and reads the saved notebook back through the server's
REST API: no cell may hold an error output. In 04 the architecture figure must show; in 08 it
then moves the decoding explorer's controls
(question, step) and checks that the rendered table follows. Screenshots go to
``results/smoke/browser/``. The server and its kernels are stopped in every case.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gemkr.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(os.environ.get("GEMKR_BROWSER") != "1",
                                reason="browser test: run ./run_tests.sh --browser")

CHROMIUM = os.environ.get("GEMKR_CHROMIUM", "/usr/bin/chromium")
SHOTS = REPO_ROOT / "results" / "smoke" / "browser"
RUN_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (loopback only)
        return json.loads(r.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    nbdir = root / "notebooks"
    shutil.copytree(REPO_ROOT / "notebooks", nbdir)
    runtime = root / "runtime"
    port, token = _free_port(), "gemkr-browser-test"
    env = {k: v for k, v in os.environ.items() if k not in ("GEMKR_BATCH", "TQDM_DISABLE")}
    env.update(JUPYTER_RUNTIME_DIR=str(runtime), MPLBACKEND="module://matplotlib_inline."
               "backend_inline")
    log = open(root / "lab.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={nbdir}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--LabApp.app_settings_dir={REPO_ROOT / 'tools' / 'jupyterlab'}",  # as run_lab.sh
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=nbdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((root / "lab.log").read_text()) from None
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not start in 60 s")
        yield {"base": base, "token": token, "dir": nbdir}
    finally:
        try:  # the kernels first (they run in their own sessions), then the server
            for k in _get(f"{base}/api/kernels?token={token}"):
                req = urllib.request.Request(f"{base}/api/kernels/{k['id']}?token={token}",
                                             method="DELETE")
                urllib.request.urlopen(req, timeout=10)  # noqa: S310
        except OSError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        subprocess.run(["pkill", "-9", "-f", str(runtime)], check=False)  # stray kernels
        log.close()


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: ./run_tests.sh --browser installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _open_and_run_all(page, lab, name: str) -> None:
    page.goto(f"{lab['base']}/lab/tree/{name}?token={lab['token']}")
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Cell", timeout=120_000)  # its tab
    page.wait_for_timeout(2000)
    assert not page.get_by_text("Select Kernel").is_visible(), \
        "the kit's kernel starts by itself (tools/jupyterlab/overrides.json)"
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']:visible",
                           timeout=120_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    start = time.time()
    while time.time() - start < RUN_TIMEOUT_S:  # every prompt numbered, kernel idle
        page.wait_for_timeout(1000)
        busy = page.locator(".jp-NotebookPanel:visible .jp-InputPrompt", has_text="[*]").count()
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']:visible").count()
        if not busy and idle:
            break
    else:
        pytest.fail(f"{name}: cells still running after {RUN_TIMEOUT_S} s")
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)


def _saved_errors(lab, name: str) -> list[str]:
    model = _get(f"{lab['base']}/api/contents/{name}?content=1&token={lab['token']}")
    cells = model["content"]["cells"]
    unrun = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and c["source"].strip()
             and c.get("execution_count") is None]
    assert not unrun, f"{name}: cells {unrun} did not run"
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(cells)
            if c["cell_type"] == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def test_notebook_01_runs_in_jupyterlab(lab, page):
    _open_and_run_all(page, lab, "01_data_prep.ipynb")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "01_data_prep.png"))
    assert _saved_errors(lab, "01_data_prep.ipynb") == []
    assert page.locator(".jp-RenderedImage img").count() > 0, "figures show"


def test_notebook_04_shows_its_architecture(lab, page):
    _open_and_run_all(page, lab, "04_training.ipynb")
    assert _saved_errors(lab, "04_training.ipynb") == []
    caption = page.get_by_text("GeMKR as this profile builds it", exact=False).first
    caption.scroll_into_view_if_needed()
    assert caption.is_visible(), "the architecture figure's caption shows"
    # the figure is the image right above its caption, in the same output area
    area = page.locator(".jp-OutputArea").filter(has_text="GeMKR as this profile builds it")
    assert area.locator(".jp-RenderedImage img").count() == 1, "the architecture figure shows"
    area.locator(".jp-RenderedImage img").scroll_into_view_if_needed()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "04_architecture.png"))


def _explorer_text(page) -> str:
    return page.locator(".widget-output").first.inner_text()


def test_notebook_08_and_its_decoding_explorer(lab, page):
    _open_and_run_all(page, lab, "08_case_studies.ipynb")
    assert _saved_errors(lab, "08_case_studies.ipynb") == []
    explorer = page.locator(".widget-vbox").filter(has=page.locator(".widget-dropdown")).first
    explorer.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('.widget-output') && "
                           "document.querySelector('.widget-output').innerText.includes('step')",
                           timeout=120_000)
    first = _explorer_text(page)
    rows = page.locator(".widget-output table tbody tr")
    n_rows = rows.count()
    assert n_rows >= 1 and "input:" in first
    # the step slider: one step back shows one row fewer
    handle = explorer.locator(".widget-slider .noUi-handle, .widget-slider input").first
    handle.focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.querySelectorAll('.widget-output table tbody tr').length "
                           f"== {n_rows - 1}", timeout=60_000)
    # another question: the input line and the trace change
    options = explorer.locator(".widget-dropdown select option")
    explorer.locator(".widget-dropdown select").select_option(index=min(1, options.count() - 1))
    # the output is replaced: wait for the new input line and its table, and read the text in
    # the same check (a second read could land between two renders)
    refilled = page.wait_for_function(
        "(prev) => { const t = document.querySelector('.widget-output').innerText;"
        " return t !== prev && t.includes('input:') &&"
        " document.querySelectorAll('.widget-output table tbody tr').length > 0 ? t : null; }",
        arg=_explorer_text(page), timeout=120_000).json_value()
    assert refilled.splitlines()[0] != first.splitlines()[0]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "08_case_studies.png"), full_page=True)
