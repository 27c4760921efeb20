"""pytest-jupyter's fixtures for the server-extension tests, and only for them.

Its autouse ``jp_asyncio_loop`` wraps every test it can see (and closes Playwright's loop), so
it is imported here, for this folder alone, never registered in the root conftest. (A
``pytest_plugins`` line would have to live in the root conftest: pytest refuses it in a
non-root one.)
"""

from __future__ import annotations

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F401,F403  (scoped to tests/server)


@pytest.fixture
def jp_server_config():  # no parameter: the star-import makes the name recursive
    return {"ServerApp": {"jpserver_extensions": {"rpremote.jupyter": True},
                          "allow_unauthenticated_access": False,
                          "reraise_server_extension_failures": True}}


@pytest.fixture
def no_runpod_key(monkeypatch, tmp_path):
    """No RunPod key anywhere: not in the env, not in ~/.runpod/config.toml."""
    from rpremote import config

    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setattr(config, "RUNPOD_CONFIG_FILE", tmp_path / "no-runpod" / "config.toml")
    assert config.runpod_api_key()[0] is None
