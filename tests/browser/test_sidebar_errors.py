"""The sidebar when its server side is missing: JupyterLab without rpremote's server
extension (the labextension alone, as after a broken install). The panel says what is wrong
and what to do, once, in words; it is never blank. Screenshot:
tests/browser/artifacts/no-server-extension-light.png.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("RPREMOTE_BROWSER_TESTS") != "1":
    pytest.skip("the browser tier is its own pytest run: RPREMOTE_BROWSER_TESTS=1 pytest tests/browser"
                " (scripts/test runs it)", allow_module_level=True)

from browser_lab import ARTIFACTS, browser, keep_page_on_failure, page, start_lab  # noqa: E402,F401
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SIDEBAR = "#rpremote-sidebar"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with start_lab(tmp_path_factory.mktemp("lab-no-extension"), server_extension=False) as server:
        yield server


def test_without_the_server_extension_the_panel_says_so(page):
    banner = page.locator(f'{SIDEBAR} [data-role="unavailable"]')
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("server extension is not loaded")
    expect(banner).to_contain_text('pip install "rpremote[jupyter]"')
    # Said once: the sections, which could only repeat it, are out of the way.
    expect(page.locator(f'{SIDEBAR} [data-section="jobs"]')).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "no-server-extension-light.png"))
