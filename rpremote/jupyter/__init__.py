"""The Jupyter Server extension behind the JupyterLab sidebar: REST handlers under ``/rpremote/api``.

Enabled by ``jupyter-config/jupyter_server_config.d/rpremote.json`` (installed with the wheel
into ``etc/jupyter/jupyter_server_config.d``), or by hand: ``jupyter server extension enable
rpremote.jupyter``. Nothing here is imported by ``import rpremote``: a kernel never pulls in
tornado or jupyter_server.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "rpremote.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    serverapp.log.info("rpremote: the sidebar's REST API is at %s",
                       serverapp.web_app.settings.get("base_url", "/") + "rpremote/api")


# The older name jupyter_server still looks for.
load_jupyter_server_extension = _load_jupyter_server_extension
