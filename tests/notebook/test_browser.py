"""The notebooks in a real browser: JupyterLab on a free port, Debian's Chromium driven by Playwright.

Every notebook is opened and run with Run All; the mix explorer and the run viewer are then used
through their rendered widgets, and each notebook is photographed into
`${OLMO2SPEC_ARTIFACTS:-.ci/artifacts}/screenshots/` (CI keeps that folder). `just test` finds or
installs Chromium first (.ci/chromium.sh) and passes its path as OLMO2SPEC_CHROMIUM; without a
Chromium or Playwright this module skips, saying which is missing, unless OLMO2SPEC_BROWSER_REQUIRED=1
(CI) makes that a failure. Nothing downloads a browser: Playwright launches the system's through
`executable_path`.
"""

from __future__ import annotations

import json
import os
import re
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
from test_notebooks_run import NOTEBOOKS, ROOT, fixture_runs, notebook_env

pytestmark = pytest.mark.browser


def _missing(why: str) -> None:
    if os.environ.get("OLMO2SPEC_BROWSER_REQUIRED") == "1":
        pytest.fail(f"the browser test must run here (OLMO2SPEC_BROWSER_REQUIRED=1), but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


try:
    from playwright import sync_api
except ImportError:
    _missing("the browser test needs the playwright package (a dev dependency: `just install-dev`)")
CHROMIUM = os.environ.get("OLMO2SPEC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    _missing("no chromium: OLMO2SPEC_CHROMIUM is empty and none is on PATH (`bash .ci/chromium.sh` installs "
             "Debian's as root)")

SCREENSHOTS = Path(os.environ.get("OLMO2SPEC_ARTIFACTS") or ROOT / ".ci" / "artifacts") / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
TOKEN = "olmo2spec-browser-test"
# User settings of the test's own JupyterLab: no news or update toast over the screenshots, the
# notebook's kernel started without asking, and every cell attached to the page (JupyterLab's
# default windowing leaves cells below the fold unrendered, so their widgets cannot be found).
SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
}
INTERACTIVE = {"mixes.ipynb", "runs.ipynb"}
"""Notebooks that a test below uses through their widgets (and photographs); the others are run and photographed."""
# Generous: each wait takes seconds on a quiet machine, and minutes on 2 cores shared with training runs.
START_S = 180
WAIT_MS = 180_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api(base: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab serving a copy of notebooks/ (its autosave never touches the repository), with its own
    settings and workspaces (none of the user's), kernels pointed at small fixtures."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    (work / "specs").symlink_to(ROOT / "specs")  # mixes.ipynb opens ../specs/13b.toml
    for plugin, values in SETTINGS.items():
        path = work / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = notebook_env(fixture_runs(work / "checkpoints"))
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={work / 'notebooks'}", f"--LabApp.user_settings_dir={work / 'settings'}",
           f"--LabApp.workspaces_dir={work / 'workspaces'}", "--LabApp.news_url=None",
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: the kernel's state, read by the waits
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(work / "lab.log", "wb")  # noqa: SIM115  # closed after the server stops
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                _api(base, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(work / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, lab: str) -> Iterator[Any]:
    """A fresh tab; afterwards its kernels are shut down, so that the next notebook has the cores."""
    tab = browser.new_page(viewport={"width": 1500, "height": 2300})  # tall: the screenshot holds the outputs
    tab.set_default_timeout(WAIT_MS)
    try:
        yield tab
    finally:
        tab.close()
        for session in _api(lab, "/api/sessions"):
            _api(lab, f"/api/sessions/{session['id']}", method="DELETE")


KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === "connected" && kernel.status === "idle";
}"""
ALL_RAN = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(cell => cell.model.type === "code");
  return kernel.status === "idle" && cells.every(cell => cell.model.executionCount !== null);
}"""


def run_all(page: Any, base: str, name: str) -> None:
    """Open notebook `name` in a workspace of its own, wait for its kernel, Run All Cells from the menu, and wait
    until every code cell has run and its widgets are drawn; no cell may write an error."""
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?token={TOKEN}")
    page.locator(".jp-Notebook").wait_for()
    # a command sent before the kernel is connected and idle is lost, or starts a second kernel
    page.wait_for_function(KERNEL_IDLE, timeout=WAIT_MS)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    page.wait_for_function(ALL_RAN, timeout=WAIT_MS, polling=250)
    page.locator(".jp-OutputArea-output .jupyter-widgets").first.wait_for()
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, f"{name} wrote errors:\n" + "\n".join(errors.all_inner_texts())
    assert page.get_by_text("Error displaying widget").count() == 0, f"{name}: a widget failed to render"


def screenshot(page: Any, name: str) -> Path:
    """The page down to the notebook's last output (the tall viewport below it is empty)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{Path(name).stem}.png"
    viewport = page.viewport_size
    last = page.locator(".jp-Notebook .jp-Cell").last.bounding_box()
    height = min(viewport["height"], int(last["y"] + last["height"]) + 24) if last else viewport["height"]
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": viewport["width"], "height": height})
    return path


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS if p.name not in INTERACTIVE])
def test_every_other_notebook_runs_in_the_browser_and_is_photographed(page: Any, lab: str, name: str) -> None:
    run_all(page, lab, name)
    assert screenshot(page, name).stat().st_size > 0


def test_the_run_viewer_shows_the_chosen_runs_curves(page: Any, lab: str) -> None:
    from olmo2spec.plan.plan import from_json

    steps = from_json((ROOT / "generated" / "tiny" / "plan.json").read_text()).stage("pretrain").steps
    run_all(page, lab, "runs.ipynb")
    page.get_by_text("anneal-seed42: step 20", exact=False).wait_for()  # the first run, by name
    page.locator(".widget-dropdown select").first.select_option("pretrain")
    page.get_by_text(f"pretrain: step 60/{steps:,}", exact=False).wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text("spikes (7 sigmas", exact=False).wait_for()
    screenshot(page, "runs.ipynb")


SOURCE = "dolmino-pes2o"
"""The source edited in the page: 16.7% of it in specs/13b.toml; more only grows the mix, which stays valid."""


def test_the_mix_explorer_shows_the_compilers_table_after_edits_in_the_page(page: Any, lab: str) -> None:
    from olmo2spec.notebook.mixes import MixExplorer

    explorer = MixExplorer(ROOT / "specs" / "13b.toml")  # what the notebook opens, computed here in-process
    run_all(page, lab, "mixes.ipynb")
    widget_row = page.locator(".olmo2spec-mix-row").filter(
        has=page.locator("label", has_text=re.compile(f"^{re.escape(SOURCE)}$")))
    box, handle = widget_row.locator(".olmo2spec-mix-share input"), widget_row.locator(".noUi-handle")
    _wait_for_row(page, _row_text(explorer, SOURCE))

    # typed into the number box: the page's row becomes the compiler's
    before = _row_text(explorer, SOURCE)
    explorer.rows[SOURCE].box.value = 30.0
    typed = _row_text(explorer, SOURCE)
    assert typed != before
    box.fill("30")
    box.press("Enter")
    _wait_for_row(page, typed)

    # dragged along the slider, to about 3/4 of its track: the box follows, and the row is the compiler's for it
    track = widget_row.locator(".noUi-base").bounding_box()
    start = handle.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.75 * track["width"], start["y"] + start["height"] / 2, steps=10)
    page.mouse.up()
    page.wait_for_function("([box, old]) => box.value !== old", arg=[box.element_handle(), "30"], timeout=WAIT_MS)
    dragged = float(box.input_value())
    assert 50 < dragged < 100, dragged  # 3/4 of 0-100, give or take the handle's width
    explorer.rows[SOURCE].box.value = dragged
    _wait_for_row(page, _row_text(explorer, SOURCE))
    screenshot(page, "mixes.ipynb")


def _row_text(explorer: Any, source: str) -> str:
    """The source's row of the table the explorer shows, its cells joined by one space."""
    cells = next(r for r in explorer.shown.iter_rows() if r[0] == source)
    return " ".join("" if v is None else str(v) for v in cells)


ROW_TEXT = """(source) => {
  const row = [...document.querySelectorAll(".olmo2spec-mix-table tbody tr")]
    .find(tr => tr.cells[0] && tr.cells[0].textContent.trim() === source);
  return row ? [...row.cells].map(td => td.textContent.trim()).join(" ") : null;
}"""


def _wait_for_row(page: Any, expected: str) -> None:
    """Until the rendered table's row of SOURCE reads `expected` (the kernel re-plans, then the page redraws)."""
    try:
        page.wait_for_function(f"(expected) => ({ROW_TEXT})({json.dumps(SOURCE)}) === expected", arg=expected,
                               timeout=WAIT_MS, polling=200)
    except sync_api.TimeoutError:
        shown = page.evaluate(ROW_TEXT, SOURCE)
        raise AssertionError(f"the page shows {shown!r}, the compiler {expected!r}") from None
