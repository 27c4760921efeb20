"""The sidebar with a RunPod key, rehearsed: JupyterLab's RunPod API is `rpremote serve`'s
control plane (RPREMOTE_RUNPOD_API), where rpremote's endpoint and Pod (and someone else's)
are made. The panel lists only rpremote's; Delete, Stop and Terminate take a second click and
then do it. Screenshot: tests/browser/artifacts/runpod-light.png.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

if os.environ.get("RPREMOTE_BROWSER_TESTS") != "1":
    pytest.skip("the browser tier is its own pytest run: RPREMOTE_BROWSER_TESTS=1 pytest tests/browser"
                " (scripts/test runs it)", allow_module_level=True)

from browser_lab import ARTIFACTS, browser, keep_page_on_failure, page, start_lab  # noqa: E402,F401
from conftest import start_emulator  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(180)

SIDEBAR = "#rpremote-sidebar"
KEY = "rpk-BROWSER-REHEARSAL-0123456789abcdef"
POD_APP = Path(__file__).resolve().parents[1] / "handlers" / "pod_http.py"
POD_IMAGE = "rpremote-tests/pod-http:1.0"
OURS = {"RPREMOTE_MANAGED": "0.1.0"}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("control-plane") / "state", "--api-key", KEY,
                         "--image", f"{POD_IMAGE}={sys.executable} {POD_APP}")
    try:
        with emu.client() as c:
            def make(path, body):
                r = c.post(path, json=body)
                r.raise_for_status()
                return r.json()["id"]

            endpoint = {"type": "QUEUE", "image": "rpremote/worker:py3.11", "gpu": {"pools": ["ADA_24"]},
                        "workers": {"min": 0, "max": 1}, "timeout": 600000,
                        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}}
            ids = {
                "endpoint": make("/v2/serverless", {**endpoint, "name": "rpremote-ada-24-0123abcd", "env": OURS}),
                "foreign_endpoint": make("/v2/serverless", {**endpoint, "name": "my-endpoint", "env": {}}),
                "pod": make("/v2/pods", {"name": "rpremote-pod", "image": POD_IMAGE, "ports": ["8000/http"],
                                         "gpu": {"id": "NVIDIA GeForce RTX 4090"}, "env": OURS}),
                "foreign_pod": make("/v2/pods", {"name": "my-pod", "image": POD_IMAGE, "ports": ["8000/http"],
                                                 "gpu": {"id": "NVIDIA GeForce RTX 4090"}, "env": {}}),
            }
        emu.ids = ids
        yield emu
    finally:
        made = getattr(emu, "ids", {})
        with emu.client() as c:
            for key in ("pod", "foreign_pod"):  # their processes end with them
                if key in made:
                    c.delete(f"/v2/pods/{made[key]}")
        emu.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, rehearsal):
    env = {"RUNPOD_API_KEY": KEY, "RPREMOTE_RUNPOD_API": rehearsal.url, "RPREMOTE_RUNPOD_QUEUE": rehearsal.url,
           "RPREMOTE_POD_PROXY": rehearsal.url + "/pod-proxy/{pod_id}-{port}"}
    with start_lab(tmp_path_factory.mktemp("lab-runpod"), env) as server:
        yield server


def click_twice(button):
    """Destructive buttons ask first: the first click arms (label ends with '?'), the second acts."""
    button.click()
    expect(button).to_have_text(re.compile(r"\?$"))
    button.click()


def test_runpod_endpoints_and_pods(page, rehearsal):
    ids = rehearsal.ids
    endpoints = page.locator(f'{SIDEBAR} [data-section="endpoints"]')
    pods = page.locator(f'{SIDEBAR} [data-section="pods"]')
    ours = endpoints.locator(f'[data-target="runpod"][data-endpoint-id="{ids["endpoint"]}"]')
    expect(ours).to_be_visible(timeout=15_000)
    expect(ours).to_contain_text("ADA_24")
    expect(endpoints.locator(f'[data-endpoint-id="{ids["foreign_endpoint"]}"]')).to_have_count(0)
    pod = pods.locator(f'[data-pod-id="{ids["pod"]}"]')
    expect(pod).to_have_attribute("data-status", "RUNNING", timeout=60_000)
    expect(pod).to_contain_text("RTX 4090")
    expect(pods.locator(f'[data-pod-id="{ids["foreign_pod"]}"]')).to_have_count(0)
    expect(page.locator(f'{SIDEBAR} [data-cost="burn"]')).not_to_have_text("$0.00/h", timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "runpod-light.png"))

    # A first click only asks; it does nothing until clicked again.
    stop = pod.locator('[data-action="stop"]')
    stop.click()
    expect(stop).to_have_text("Stop?")
    expect(stop).to_have_text("Stop", timeout=6_000)  # disarmed after a few seconds
    assert pod.get_attribute("data-status") == "RUNNING"

    click_twice(stop)
    expect(pod).to_have_attribute("data-status", "EXITED", timeout=20_000)
    expect(stop).to_be_hidden()  # a stopped Pod can only be terminated
    expect(page.locator(f'{SIDEBAR} [data-cost="burn"]')).to_have_text("$0.00/h", timeout=10_000)
    click_twice(pod.locator('[data-action="terminate"]'))
    expect(pod).to_have_count(0, timeout=20_000)
    expect(pods).to_contain_text("No rpremote Pods.")

    click_twice(ours.locator('[data-action="delete"]'))
    expect(ours).to_have_count(0, timeout=20_000)
    expect(endpoints).to_contain_text("no rpremote endpoints")
    with rehearsal.client() as c:
        assert c.get(f"/v2/serverless/{ids['foreign_endpoint']}").status_code == 200
        assert c.get(f"/v2/pods/{ids['foreign_pod']}").status_code == 200
