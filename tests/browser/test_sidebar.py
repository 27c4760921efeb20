"""The RunPod sidebar in a real browser, against real jobs.

A kernel of the Lab under test (started through the Jupyter sessions API for a notebook path,
driven with jupyter_client) spawns `@rpremote.remote` functions on the local emulator; the
sidebar has to show them as they go: a new job within 2 s while it is queued or running, its
log lines in the detail view while it runs, Cancel that stops the function, a failure's error,
the emulator's endpoint. Screenshots of the panel (light and dark theme) are saved in
tests/browser/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

if os.environ.get("RPREMOTE_BROWSER_TESTS") != "1":
    pytest.skip("the browser tier is its own pytest run: RPREMOTE_BROWSER_TESTS=1 pytest tests/browser"
                " (scripts/test runs it)", allow_module_level=True)

from browser_lab import ARTIFACTS, browser, keep_page_on_failure, lab, page  # noqa: E402,F401
from conftest import stop_autostarted  # noqa: E402
from jupyter_client import BlockingKernelClient  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(240)

NOTEBOOK = "sidebar-test.ipynb"
SIDEBAR = "#rpremote-sidebar"

DEFINE = """
import time, rpremote

@rpremote.remote(workers=(0, 3), idle_timeout=60)
def ticker(n, mark):
    # Prints a line every 0.2 s and appends to `mark`, a file this test watches: when the
    # job is cancelled, the file stops growing.
    for i in range(n):
        print(f"tick {i}", flush=True)
        with open(mark, "a") as f:
            f.write(f"{i}\\n")
        time.sleep(0.2)
    return n

@rpremote.remote(workers=(0, 3), idle_timeout=60)
def broken(x):
    raise ValueError(f"sidebar test failure {x}")

print(ticker(2, {warm!r}))   # starts the emulator and a worker: later jobs start at once
"""


class Kernel:
    """A kernel of the Lab under test, for a notebook path (so jobs know their source)."""

    def __init__(self, lab):
        # A real (empty) notebook at that path, so the sidebar's link to it opens it.
        (lab.root / NOTEBOOK).write_text(json.dumps({
            "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        with lab.api() as c:
            r = c.post("/api/sessions", json={"path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook",
                                               "kernel": {"name": "python3"}})
            r.raise_for_status()
            kernel_id = r.json()["kernel"]["id"]
        connection = lab.runtime / f"kernel-{kernel_id}.json"
        deadline = time.time() + 30
        while not connection.exists():
            assert time.time() < deadline, f"no connection file {connection}"
            time.sleep(0.1)
        self.client = BlockingKernelClient(connection_file=str(connection))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> str:
        """Runs `code`; returns its stdout, raises on an error."""
        msg_id = self.client.execute(code)
        out: list[str] = []
        deadline = time.time() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(1, deadline - time.time()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError(f"kernel error: {content['ename']}: {content['evalue']}\n"
                                     + "\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)

    def close(self) -> None:
        self.client.stop_channels()


@pytest.fixture(scope="module")
def kernel(lab):
    k = Kernel(lab)
    warm = lab.root / "warm.txt"
    k.run(DEFINE.replace("{warm!r}", repr(str(warm))), timeout=180)
    try:
        yield k
    finally:
        k.close()


def row(page, job_id: str):
    return page.locator(f'{SIDEBAR} [data-section="jobs"] [data-job-id="{job_id}"]')


def shoot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def set_theme(page, theme: str) -> None:
    page.evaluate("t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", theme, timeout=20_000)
    page.wait_for_timeout(500)  # the theme's CSS applied


def test_sidebar_has_its_sections(page):
    for name in ("jobs", "endpoints", "pods", "cost"):
        expect(page.locator(f'{SIDEBAR} [data-section="{name}"]')).to_be_visible()
    # Never a blank panel: each section says something once the first poll is in.
    expect(page.locator(f'{SIDEBAR} [data-section="cost"] [data-cost="today"]')).to_have_text(
        "$0.00", timeout=10_000)


def test_running_job_live_logs_and_cancel(page, kernel, lab):
    mark = lab.root / "ticks.txt"
    job_id = kernel.run(f"job = ticker.spawn(600, {str(mark)!r}); print(job.id)").strip()
    spawned = time.monotonic()

    # The job shows within 2 s, queued or running.
    r = row(page, job_id)
    expect(r).to_be_visible(timeout=2_000)
    assert r.get_attribute("data-status") in {"IN_QUEUE", "IN_PROGRESS"}
    assert time.monotonic() - spawned < 2.5
    height = r.bounding_box()["height"]
    expect(r).to_have_attribute("data-status", "IN_PROGRESS", timeout=20_000)
    expect(r.locator('[data-action="cancel"]')).to_be_visible()
    assert r.bounding_box()["height"] == height  # no layout jump as the row updates
    shoot(page, "sidebar-light")

    # The detail view shows its log lines while it runs.
    r.locator(".rp-job-name").click()
    detail = page.locator(f'{SIDEBAR} .rp-detail[data-job-id="{job_id}"]')
    expect(detail).to_be_visible()
    logs = detail.locator('[data-role="logs"]')
    expect(logs).to_contain_text("tick 2", timeout=15_000)
    first = logs.inner_text()
    expect(logs).not_to_have_text(first, timeout=5_000)  # it grows, live
    expect(detail).to_have_attribute("data-status", "IN_PROGRESS")
    source = detail.locator('[data-role="source"]')
    expect(source).to_have_text(re.compile(rf"^{re.escape(NOTEBOOK)}(, cell \d+)?$"))
    shoot(page, "detail-light")

    # Cancel: CANCELLED, and the function stops (its file stops growing).
    detail.locator('[data-action="cancel"]').click()
    expect(detail).to_have_attribute("data-status", "CANCELLED", timeout=15_000)
    time.sleep(1.5)  # a worker already stopping may write its last line
    size = mark.stat().st_size
    time.sleep(2.0)
    assert mark.stat().st_size == size, "the cancelled function kept running"

    # The link to where the job came from opens that notebook.
    source.click()
    expect(page.locator(".jp-MainAreaWidget .jp-mod-current, .lm-TabBar-tab.jp-mod-current")
           .filter(has_text=NOTEBOOK).first).to_be_visible(timeout=15_000)

    detail.locator('[data-action="back"]').click()
    expect(row(page, job_id)).to_have_attribute("data-status", "CANCELLED", timeout=5_000)
    expect(r.locator('[data-action="cancel"]')).to_be_hidden()
    assert r.bounding_box()["height"] == height  # the hidden Cancel keeps its place


def test_failed_job_shows_its_error(page, kernel):
    job_id = kernel.run("bad = broken.spawn(7); print(bad.id)").strip()
    r = row(page, job_id)
    expect(r).to_be_visible(timeout=2_000)
    # Nobody waits for this job's result: the sidebar, asking for its logs, follows it.
    r.locator(".rp-job-name").click()
    detail = page.locator(f'{SIDEBAR} .rp-detail[data-job-id="{job_id}"]')
    error = detail.locator('[data-role="error"]')
    expect(error).to_be_visible(timeout=30_000)
    expect(detail.locator('[data-role="status"]')).to_have_attribute("data-state", "failed")
    expect(error.locator(".rp-error-line")).to_contain_text("sidebar test failure 7")
    detail.locator("summary").click()
    expect(detail.locator('[data-role="traceback"]')).to_contain_text("broken")
    shoot(page, "failed-light")
    detail.locator('[data-action="back"]').click()
    expect(r).to_have_attribute("data-state", "failed", timeout=5_000)


def test_endpoints_show_the_local_emulator(page, kernel, lab):
    section = page.locator(f'{SIDEBAR} [data-section="endpoints"]')
    expect(section.locator('[data-part="local"]')).to_contain_text("running at http://127.0.0.1:", timeout=10_000)
    server = json.loads((lab.home / "emulator" / "server.json").read_text())
    expect(section.locator('[data-part="local"]')).to_contain_text(server["url"])
    endpoint = page.locator(f'{SIDEBAR} [data-section="jobs"] [data-job-id]').first
    expect(section.locator('[data-target="local"][data-endpoint-id]')).not_to_have_count(0, timeout=10_000)
    assert endpoint.count() == 1
    expect(section.locator('[data-target="local"] [data-action="delete"]').first).to_be_visible()


def test_screenshots_dark_theme(page):
    set_theme(page, "JupyterLab Dark")
    try:
        expect(page.locator(f'{SIDEBAR} [data-section="jobs"] [data-job-id]').first).to_be_visible()
        shoot(page, "sidebar-dark")
        page.locator(f'{SIDEBAR} [data-section="jobs"] [data-state="failed"] .rp-job-name').first.click()
        expect(page.locator(f'{SIDEBAR} [data-role="error"]')).to_be_visible(timeout=10_000)
        shoot(page, "failed-dark")
        page.locator(f'{SIDEBAR} [data-action="back"]').click()
    finally:
        set_theme(page, "JupyterLab Light")


def test_keyboard_and_filters(page, kernel):
    jobs = page.locator(f'{SIDEBAR} [data-section="jobs"]')
    rows = jobs.locator("[data-job-id]")
    expect(rows).to_have_count(3)  # the warm-up, the cancelled and the failed job
    # Keyboard: a job's name is a button; Enter opens its detail, Enter on Back returns to it.
    name = jobs.locator('[data-status="CANCELLED"] .rp-job-name')
    name.focus()
    page.keyboard.press("Enter")
    back = page.locator(f'{SIDEBAR} .rp-detail [data-action="back"]')
    expect(back).to_be_focused()
    page.keyboard.press("Enter")
    expect(name).to_be_focused()
    # Filters: by status, and by source (this notebook).
    jobs.locator('[data-filter="status"]').select_option("FAILED")
    expect(rows).to_have_count(1, timeout=3_000)
    expect(rows.first).to_have_attribute("data-state", "failed")
    jobs.locator('[data-filter="status"]').select_option("")
    expect(rows).to_have_count(3, timeout=3_000)
    source = jobs.locator('[data-filter="source"] option').filter(has_text=NOTEBOOK)
    expect(source).to_have_count(1)
    jobs.locator('[data-filter="source"]').select_option(source.get_attribute("value"))
    jobs.locator('[data-filter="status"]').select_option("CANCELLED")
    expect(rows).to_have_count(1, timeout=3_000)
    jobs.locator('[data-filter="status"]').select_option("")
    jobs.locator('[data-filter="source"]').select_option("")
    expect(rows).to_have_count(3, timeout=3_000)


def test_cancel_from_the_list(page, kernel, lab):
    mark = lab.root / "ticks-2.txt"
    job_id = kernel.run(f"job2 = ticker.spawn(600, {str(mark)!r}); print(job2.id)").strip()
    r = row(page, job_id)
    expect(r).to_have_attribute("data-status", "IN_PROGRESS", timeout=20_000)
    r.locator('[data-action="cancel"]').click()
    expect(r).to_have_attribute("data-status", "CANCELLED", timeout=15_000)
    expect(page.locator(f"{SIDEBAR} .rp-detail")).to_have_count(0)  # the list stays


def test_a_stopped_emulator_is_said_in_words(page, lab):
    stop_autostarted(lab.home)
    local = page.locator(f'{SIDEBAR} [data-section="endpoints"] [data-part="local"]')
    expect(local).to_contain_text("not running", timeout=10_000)
    # The rest of the panel stays: the journal still lists the jobs.
    expect(page.locator(f'{SIDEBAR} [data-section="jobs"] [data-job-id]')).to_have_count(4)
    shoot(page, "emulator-stopped-light")
