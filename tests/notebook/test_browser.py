"""The notebooks in a real browser: JupyterLab on a free port, Debian's Chromium driven by Playwright.

Each notebook is opened, run with Run All, used through its rendered widgets, and photographed
into .ci/artifacts/notebooks/ (CI keeps that folder). `just test` installs Chromium first
(.ci/chromium.sh); without it, or without Playwright, this module skips, saying which is missing.
Nothing downloads a browser: Playwright launches the system's through `executable_path`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_notebooks_run import ROOT, fixture_runs, notebook_env

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH: run .ci/chromium.sh (root installs Debian's)", allow_module_level=True)
if os.environ.get("OLMO2SPEC_BROWSER_TEST") != "1":
    # not yet seen passing end to end (see the report of issue 12): opt in until it has
    pytest.skip("the real-browser test runs with OLMO2SPEC_BROWSER_TEST=1", allow_module_level=True)

ARTIFACTS = ROOT / ".ci" / "artifacts" / "notebooks"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
TOKEN = "olmo2spec-browser-test"
# generous: on a healthy machine each wait takes seconds, on a 2-core one shared with training runs minutes
START_S = 300
WAIT_MS = 240_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab serving a copy of notebooks/ (so that its autosave never touches the repository)."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    (work / "specs").symlink_to(ROOT / "specs")  # mixes.ipynb opens ../specs/13b.toml
    env = notebook_env(fixture_runs(work / "checkpoints"))
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={work / 'notebooks'}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(work / "lab.log", "wb")  # noqa: SIM115  # closed after the server stops
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(work / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(WAIT_MS)  # menus and widgets render slowly on a loaded machine
            yield page
        finally:
            browser.close()


def run_all(page: Any, base: str, name: str) -> None:
    """Open notebook `name`, wait for its kernel, and run every cell (the menu's Run All Cells)."""
    page.goto(f"{base}/lab/tree/{name}?token={TOKEN}")
    page.locator(".jp-Notebook").wait_for(timeout=WAIT_MS)
    # a keypress or command sent before the kernel is idle can be lost (seen-here: JupyterLab)
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=WAIT_MS)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"), full_page=True)


def test_the_run_viewer_shows_the_chosen_runs_curves(page: Any, lab: str) -> None:
    from olmo2spec.plan.plan import from_json

    steps = from_json((ROOT / "generated" / "tiny" / "plan.json").read_text()).stage("pretrain").steps
    run_all(page, lab, "runs.ipynb")
    picker = page.locator(".widget-dropdown select").first
    picker.wait_for(timeout=WAIT_MS)
    page.get_by_text("anneal-seed42: step 20", exact=False).wait_for(timeout=WAIT_MS)  # the first run, by name
    picker.select_option("pretrain")
    page.get_by_text(f"pretrain: step 60/{steps:,}", exact=False).wait_for(timeout=WAIT_MS)
    page.locator(".js-plotly-plot").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("spikes (7 sigmas", exact=False).wait_for(timeout=WAIT_MS)
    screenshot(page, "runs.ipynb")


def test_the_mix_explorer_shows_the_compilers_table_after_an_edit_in_the_page(page: Any, lab: str) -> None:
    from olmo2spec.notebook.mixes import MixExplorer

    explorer = MixExplorer(ROOT / "specs" / "13b.toml")  # what the notebook opens, computed here in-process
    source, row = next(iter(explorer.rows.items()))
    before, share = _row_text(explorer, source), row.box.value + 1.0
    row.box.value = share
    after = _row_text(explorer, source)
    assert after != before

    run_all(page, lab, "mixes.ipynb")
    box = page.locator(".widget-text", has=page.locator("label", has_text=source)).locator("input").first
    box.wait_for(timeout=WAIT_MS)
    table_row = page.locator("table tr", has=page.locator("td", has_text=source)).first
    _wait_for_text(table_row, before)
    box.fill(f"{share:g}")
    box.press("Enter")
    _wait_for_text(table_row, after)
    screenshot(page, "mixes.ipynb")


def _row_text(explorer: Any, source: str) -> str:
    frame = explorer.shown
    cells = next(r for r in frame.iter_rows() if r[0] == source)
    return " ".join("" if v is None else str(v) for v in cells)


def _wait_for_text(locator: Any, words: str) -> None:
    """Until the element's text, whitespace aside, is `words`."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        text = " ".join(locator.inner_text(timeout=WAIT_MS).split())
        if text == words:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the page shows {text!r}, the compiler {words!r}")
        time.sleep(0.2)
