"""Hatch build hook: a wheel always carries an up-to-date JupyterLab sidebar.

For a regular wheel it runs ``scripts/build-labextension`` (which rebuilds
``rpremote/labextension`` from ``jupyter_ext/`` only when the sources changed); the wheel's
``shared-data`` then installs it to ``share/jupyter/labextensions/rpremote``. Editable
installs are left alone: ``scripts/setup`` builds the sidebar and refreshes the editable
install's copy. Building from an sdist that already holds the built sidebar works without
Node. ``RPREMOTE_SKIP_LABEXTENSION=1`` skips the build (a wheel without the sidebar, or with
the build already there).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class LabextensionHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        if os.environ.get("RPREMOTE_SKIP_LABEXTENSION", "").lower() in {"1", "true", "yes"}:
            return
        root = Path(self.root)
        built = root / "rpremote" / "labextension" / "package.json"
        script = root / "scripts" / "build-labextension"
        if not (root / "jupyter_ext" / "package.json").exists() or not script.exists():
            if not built.exists():
                raise RuntimeError("rpremote/labextension is missing and jupyter_ext/ is not here to build it")
            return
        done = subprocess.run(["bash", str(script)], cwd=root)
        if done.returncode != 0:
            if built.exists():
                self.app.display_warning(
                    "rpremote: the JupyterLab sidebar could not be rebuilt (see above);"
                    " the wheel carries the existing rpremote/labextension"
                )
                return
            raise RuntimeError(
                "rpremote: the JupyterLab sidebar (jupyter_ext/) could not be built, see above."
                " Run scripts/setup first, or set RPREMOTE_SKIP_LABEXTENSION=1 for a wheel without it."
            )
