"""The wheel carries the JupyterLab sidebar: `pip install rpremote[jupyter]` is all a user does.

Builds the wheel of this checkout (its hook rebuilds the sidebar when jupyter_ext/ changed),
checks what is in it, installs it into a new venv and asks JupyterLab there whether the
extension is installed and enabled. The new venv borrows this one's packages (jupyterlab and
the rest) through a .pth line instead of downloading them again: rpremote itself, its
labextension and its server-extension config come from the wheel alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
DATA = "rpremote-0.1.0.data/data/"
LABEXT = "share/jupyter/labextensions/rpremote/"
CONFIG = ROOT / "jupyter-config" / "jupyter_server_config.d" / "rpremote.json"


def _run(*cmd: str, **kw) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (ROOT / "rpremote" / "labextension" / "package.json").exists():
        pytest.fail("rpremote/labextension is not built: run scripts/setup")
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--build-constraint", str(LOCK),
         str(ROOT), "-w", str(out))
    (whl,) = out.glob("rpremote-*.whl")
    return whl


def test_wheel_holds_the_labextension_and_the_server_config(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    labext = [n[len(DATA):] for n in names if n.startswith(DATA + LABEXT)]
    assert LABEXT + "package.json" in labext
    assert LABEXT + "install.json" in labext
    assert LABEXT + "static/style.js" in labext
    assert any(re.fullmatch(re.escape(LABEXT) + r"static/remoteEntry\.[0-9a-f]+\.js", n) for n in labext)
    assert DATA + "etc/jupyter/jupyter_server_config.d/rpremote.json" in names
    # Shipped once, as data; not a second time inside the package.
    assert not [n for n in names if n.startswith("rpremote/labextension/")]
    assert "rpremote/jupyter/__init__.py" in names


def test_installed_wheel_is_enabled_in_jupyterlab(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    # This venv's packages, after the new venv's own (where rpremote from the wheel goes).
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel))
    assert (venv / LABEXT / "package.json").exists()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    run = dict(env=env, cwd=tmp_path)  # not this checkout's directory: rpremote must come from the wheel
    where = _run(str(python), "-c", "import rpremote; print(rpremote.__file__)", **run)
    assert where.strip().startswith(str(venv)), where
    # `jupyter labextension list`, by module: the borrowed packages bring no scripts here.
    listing = _run(str(python), "-m", "jupyterlab.labextensions", "list", **run)
    line = next((ln for ln in listing.splitlines() if ln.strip().startswith("rpremote ")), None)
    assert line is not None, listing
    assert "enabled" in line and "OK" in line and "(python, rpremote)" in line, listing
    assert str(venv / "share" / "jupyter" / "labextensions") in listing, listing
    servers = _run(str(python), "-m", "jupyter_server.extension.serverextension", "list", **run)
    servers = re.sub(r"\x1b\[[0-9;]*m", "", servers)
    enabled = json.loads(CONFIG.read_text())["ServerApp"]["jpserver_extensions"]
    assert enabled and all(enabled.values())
    for module in enabled:
        assert re.search(rf"^\s*{re.escape(module)}\s+enabled\s*$", servers, re.M), servers
        assert re.search(rf"^\s*{re.escape(module)}\s+OK\s*$", servers, re.M), servers
