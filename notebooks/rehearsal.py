"""A RunPod rehearsal for the notebooks that use ``target="runpod"`` (``06-runpod.ipynb``).

One ``rpremote serve`` on 127.0.0.1 (a free port, a state directory of its own) plays RunPod's
control plane and job API; this process's ``os.environ`` points rpremote at it (key, both base
URLs, rpremote's ready worker image, a fresh ``RPREMOTE_HOME``), so a kernel started meanwhile
inherits it and the notebook's cells run unchanged. On exit the server is stopped by its PID,
the directory removed and ``os.environ`` put back exactly as it was.

``notebooks/conftest.py`` uses it under ``pytest --nbval``. To re-execute the notebook in place
(fresh outputs for nbval to compare against)::

    .venv/bin/python notebooks/rehearsal.py notebooks/06-runpod.ipynb
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from rpremote import platform as rp

# The notebooks that run against the rehearsal instead of the local target.
NOTEBOOKS = ("06-runpod.ipynb",)
# Settings that would send the rehearsal elsewhere (a real store, the user's own image).
CLEARED = ("RPREMOTE_STORE", "RPREMOTE_BOOTSTRAP_FROM", "RPREMOTE_API_KEY")
START_TIMEOUT_S = 30


class Rehearsal:
    """One running ``rpremote serve``: its process, URL and key."""

    def __init__(self, proc: subprocess.Popen, url: str, key: str, root: Path):
        self.proc, self.url, self.key, self.root = proc, url, key, root

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self) -> dict[str, str]:
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        return {
            "RPREMOTE_TARGET": "runpod", "RUNPOD_API_KEY": self.key,
            "RPREMOTE_RUNPOD_API": self.url, "RPREMOTE_RUNPOD_QUEUE": self.url,
            "RPREMOTE_IMAGE": rp.worker_image(python),
            "RPREMOTE_HOME": str(self.root / "home"),
        }

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(root: Path) -> Rehearsal:
    """``rpremote serve --api-key ... --port 0`` with its state under ``root``; returns once
    it answers."""
    state = root / "emulator"
    state.mkdir(parents=True)
    (root / "home").mkdir()
    key = "rpk-rehearsal-" + secrets.token_hex(16)
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state", str(state),
         "--api-key", key],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k not in CLEARED})
    log.close()
    rehearsal = None
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        server_json = state / "server.json"
        while rehearsal is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rpremote serve did not start:\n"
                                   + (root / "serve.log").read_text()[-3000:])
            if server_json.exists():
                try:
                    url = json.loads(server_json.read_text())["url"]
                    httpx.get(f"{url}/rpremote/v1/info", timeout=5,
                              headers={"Authorization": f"Bearer {key}"}).raise_for_status()
                    rehearsal = Rehearsal(proc, url, key, root)
                except (ValueError, KeyError, httpx.HTTPError):
                    pass
            time.sleep(0.05)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return rehearsal


def stop_local_emulator(home: Path) -> None:
    """A local emulator the kernel may have started under ``home`` (none should): by PID."""
    server = home / "emulator" / "server.json"
    try:
        os.kill(json.loads(server.read_text())["pid"], signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass


@contextmanager
def rehearsal() -> Iterator[Rehearsal]:
    """Run ``rpremote serve`` and point ``os.environ`` at it for as long as this lasts."""
    root = Path(tempfile.mkdtemp(prefix="rpremote-rehearsal-"))
    saved = dict(os.environ)
    server = None
    try:
        server = start(root)
        for name in CLEARED:
            os.environ.pop(name, None)
        os.environ.update(server.env())
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if server is not None:
            server.stop()
        stop_local_emulator(root / "home")
        shutil.rmtree(root, ignore_errors=True)


def refresh(path: str) -> None:
    """Re-execute a notebook in place against a rehearsal (what nbval compares against)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with rehearsal():
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    nbformat.write(nb, path)


if __name__ == "__main__":
    for arg in sys.argv[1:] or [str(Path(__file__).parent / n) for n in NOTEBOOKS]:
        print(f"[rehearsal] {arg}", file=sys.stderr)
        refresh(arg)
