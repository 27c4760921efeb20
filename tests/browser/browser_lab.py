"""Fixtures of the browser tier: JupyterLab with rpremote's sidebar in Debian's Chromium,
driven by Playwright. The tier is its own pytest run (scripts/test runs it after the main one,
with RPREMOTE_BROWSER_TESTS=1): pytest-jupyter's event-loop fixtures and Playwright's cannot
share a process (docs/jupyter-recipe.md §3.4). A module, not a conftest.py: a second
conftest.py would take the name `conftest` from tests/conftest.py, which tests import from.

`lab` starts one JupyterLab for the module on 127.0.0.1 (a free port, a token, a fresh
RPREMOTE_HOME, its own config, runtime and settings dirs) that loads the sidebar as built in
this checkout (rpremote/labextension, put first on JUPYTER_PATH), and at the end stops it and
the emulator its kernels started, by PID. `page` is a Chromium page on that Lab with the
sidebar open. Screenshots and, on failure, the page and the server's log go to
tests/browser/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import stop_autostarted, stop_pid

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "rpremote" / "labextension"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = os.environ.get("RPREMOTE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
TOKEN = "rpremote-browser-test"
SERVER_CONFIG = ROOT / "jupyter-config" / "jupyter_server_config.d" / "rpremote.json"
SERVER_EXTENSIONS = json.loads(SERVER_CONFIG.read_text())["ServerApp"]["jpserver_extensions"]


@dataclass
class Lab:
    proc: subprocess.Popen
    url: str
    home: Path
    runtime: Path
    root: Path
    log: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"token {TOKEN}"}, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab for a module's tests (a module may define its own `lab` with `start_lab`)."""
    with start_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@contextlib.contextmanager
def start_lab(tmp: Path, env: dict[str, str] | None = None, server_extension: bool = True) -> Iterator[Lab]:
    """Starts JupyterLab in `tmp` (`env` added to its environment; rpremote's server extension
    off when not `server_extension`); stops it, and the emulator its kernels started, by PID."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; scripts/test does)")
    if not (BUILT / "package.json").exists():
        pytest.fail("rpremote/labextension is not built: run scripts/setup (or scripts/build-labextension)")
    extra = env or {}
    home, runtime, root = tmp / "rpremote-home", tmp / "runtime", tmp / "root"
    root.mkdir()
    # This checkout's build first on JUPYTER_PATH, ahead of the copy an install put in .venv.
    labext = tmp / "jupyter-path" / "labextensions"
    labext.mkdir(parents=True)
    (labext / "rpremote").symlink_to(BUILT, target_is_directory=True)
    # No "get notified about Jupyter news?" toast over the page.
    settings = tmp / "settings"
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    env = {**os.environ, "RPREMOTE_HOME": str(home), "JUPYTER_PATH": str(labext.parent),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(runtime),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "RPREMOTE_WIDGETS": "0"}
    for name in ("RPREMOTE_TARGET", "RUNPOD_API_KEY", "RPREMOTE_RUNPOD_API", "RPREMOTE_RUNPOD_QUEUE"):
        env.pop(name, None)  # the local target and no RunPod key, unless `env` says otherwise
    env.update(extra)
    log = tmp / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={root}", "--allow-root",
           # The server extension as the installed config enables it (whatever the install).
           f"--ServerApp.jpserver_extensions={ {k: server_extension for k in SERVER_EXTENSIONS}!r}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", f"--LabApp.user_settings_dir={settings}",
           "--LabApp.expose_app_in_browser=True"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    server = Lab(proc, f"http://127.0.0.1:{port}", home, runtime, root, log)
    try:
        deadline = time.time() + 60
        with server.api() as c:
            while True:
                try:
                    if c.get("/api/status").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield server
    finally:
        stop_pid(proc.pid)
        stop_autostarted(home)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / f"lab-{tmp.name}.log")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, lab):
    """JupyterLab in Chromium with the RunPod sidebar open (`#rpremote-sidebar`)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    pg.goto(f"{lab.url}/lab?token={TOKEN}")
    tab = pg.locator('.jp-SideBar [data-id="rpremote-sidebar"]')
    tab.wait_for(timeout=60_000)
    tab.click()
    pg.locator("#rpremote-sidebar").wait_for(state="visible")
    pg.locator(".jp-Launcher").first.wait_for(timeout=30_000)  # the page drawn, for screenshots
    pg.console_lines = console  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "console.log").write_text("\n".join(console) + "\n")
        context.close()


@pytest.fixture(autouse=True)
def keep_page_on_failure(request):
    """On a failure, keep what the page looked like (the call's report is in by teardown)."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed and "page" in request.fixturenames:
        pg = request.getfixturevalue("page")
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            pg.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"))
            (ARTIFACTS / f"failed-{request.node.name}.html").write_text(
                pg.locator("#rpremote-sidebar").inner_html())
        except Exception:  # noqa: BLE001 — best effort, the failure itself is reported
            pass
