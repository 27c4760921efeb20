"""Worker processes of one endpoint: start them with the SDK's environment, stop them, reap them.

The supervisor only manages processes. When to start or stop one is the scaler's decision
(``scaler.py``); what a worker is doing is the engine's record (``engine.Worker``). A worker of
the default executor command starts from a spare that did its imports ahead of time where
that is the same as starting the command (``worker_template.py``).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..private import UMASK, private_dir, private_file
from .config import EmulatorTimings, EndpointSpec
from . import worker_template

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_worker_id() -> str:
    """A worker id in RunPod's shape: 14 lowercase letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


def worker_urls(base_url: str, endpoint: str, gpu: str) -> dict[str, str]:
    """The four URL templates a `runpod` worker reads at import (worker protocol §1.3).

    They keep a query string (the SDK appends ``&...`` blindly) and ``/job-take/`` (the batch
    and stop URLs are derived from it by string replacement).
    """
    root = f"{base_url}/v2/{endpoint}"
    query = f"?gpu={quote(gpu)}"
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{root}/job-take/$ID{query}",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{root}/job-done/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{root}/job-stream/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_PING": f"{root}/ping/$RUNPOD_POD_ID{query}",
    }


@dataclass
class WorkerProcess:
    worker_id: str
    proc: subprocess.Popen
    log_path: Path
    started_at: float = field(default_factory=time.time)
    retiring_since: float | None = None
    container: Path | None = None  # its container disk (official images), removed when reaped

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    def __init__(
        self,
        spec: EndpointSpec,
        base_url: str,
        worker_token: str,
        state_dir: Path,
        timings: EmulatorTimings,
        blob_dir: Path | None = None,
    ):
        self.spec = spec
        self.base_url = base_url
        self.worker_token = worker_token
        self.timings = timings
        self.state_dir = state_dir
        self.blob_dir = blob_dir or state_dir / "blobs"
        self.home = state_dir / "worker-home"
        self.log_dir = state_dir / "logs" / spec.id
        self.containers = containers_root(state_dir)
        self.procs: dict[str, WorkerProcess] = {}
        self.templates = self._template_pool()

    def worker_env(self, worker_id: str) -> dict[str, str]:
        if self.spec.pythonEnv:
            env = self._clean_env()
        else:
            env = self._emulator_env()
        env.pop("RPREMOTE_VOLUME_MOUNT", None)  # a volume is the endpoint's, never inherited
        env.update(self.spec.env)
        if self.spec.volumeMount:
            env["RPREMOTE_VOLUME_MOUNT"] = self.spec.volumeMount
        env.update(worker_urls(self.base_url, self.spec.id, self.spec.gpu))
        if os.environ.get("RUNPOD_POD_ID"):
            # This server runs in a RunPod Pod (target pod): its workers' RUNPOD_POD_ID is
            # their worker id (the SDK's), so the Pod's own id goes under another name.
            env["RPREMOTE_POD_ID"] = os.environ["RUNPOD_POD_ID"]
        env.update(
            RUNPOD_AI_API_KEY=self.worker_token,
            RUNPOD_POD_ID=worker_id,
            RUNPOD_POD_HOSTNAME=f"{worker_id}-local",
            RUNPOD_ENDPOINT_ID=self.spec.id,
            RUNPOD_PING_INTERVAL=str(max(1000, self.timings.ping_interval_ms)),
            RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
            RUNPOD_SKIP_GPU_CHECK="true",
            RUNPOD_LOG_LEVEL=env.get("RPREMOTE_WORKER_LOG_LEVEL",
                                     os.environ.get("RPREMOTE_WORKER_LOG_LEVEL", "WARN")),
            # A clean HOME: the SDK prefers ~/.runpod/config.toml's key over ours. For an
            # official image: the worker's own container disk.
            HOME=str(self.container_dir(worker_id) if self.spec.pythonEnv else self.home),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _template_pool(self) -> "worker_template.TemplatePool | None":
        """The spares of this emulator's executor workers, when this endpoint's may use them."""
        if self.spec.pythonEnv or not self.spec.workerCmd:
            return None
        if not worker_template.is_executor_command(shlex.split(self.spec.workerCmd)):
            return None
        return start_worker_template(self.state_dir, self.timings)

    def _emulator_env(self) -> dict[str, str]:
        """A worker of a mapped image: the emulator's environment, interpreter and store."""
        return emulator_worker_env(self.base_url, self.blob_dir)

    def _clean_env(self) -> dict[str, str]:
        """A worker of an official image: a fresh container of it. Its `python` and `pip` are
        the image's clean environment's; nothing of the emulator's Python setup, rpremote
        settings or offload store comes along (on RunPod there is none: the endpoint's env
        names the store). What reaches the network (proxies, certificates, PIP_* index
        settings) is kept, and pip's cache is the emulator user's: it stands for the package
        registry's bandwidth, not for container state."""
        assert self.spec.pythonEnv
        own_bins = _emulator_bins()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RUNPOD_", "RPREMOTE_", "XDG_")) and k not in _PYTHON_VARS}
        if "PIP_CACHE_DIR" not in env and "PIP_NO_CACHE_DIR" not in env:
            env["PIP_CACHE_DIR"] = str(user_pip_cache())
        system_path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
                       if p and _norm(p) not in own_bins]
        env["PATH"] = os.pathsep.join([str(Path(self.spec.pythonEnv) / "bin"), *system_path])
        env["VIRTUAL_ENV"] = self.spec.pythonEnv
        return env

    def container_dir(self, worker_id: str) -> Path:
        """A worker's container disk (its HOME): made fresh, removed when the worker goes."""
        return self.containers / worker_id

    def spawn(self) -> WorkerProcess:
        assert self.spec.workerCmd
        worker_id = new_worker_id()
        private_dir(self.home, top=self.state_dir)
        private_dir(self.log_dir, top=self.state_dir)
        if self.spec.volumeMount:
            private_dir(self.spec.volumeMount, top=self.state_dir)
        log_path = self.log_dir / f"{worker_id}.log"
        command = shlex.split(self.spec.workerCmd)
        cwd = self.spec.cwd or None
        container = None
        if self.spec.pythonEnv:
            container = self.container_dir(worker_id)
            _remove(container)
            private_dir(container, top=self.state_dir)
            private_dir(Path(self.spec.pythonEnv).parent, top=self.state_dir)
            # The worker's process makes the clean environment first when it is missing (once;
            # the server does not wait for it), then becomes the start command.
            command = [sys.executable, "-m", "rpremote.local.images", "ensure",
                       self.spec.pythonEnv, "--", *command]
            # A container starts in a directory of its own, never the emulator's (whose files,
            # a checkout of rpremote say, `python -c` would import).
            cwd = self.spec.cwd or str(container)
        env = self.worker_env(worker_id)
        spare = None
        if self.templates is not None and (cwd is None or _same_dir(cwd, os.getcwd())):
            spare = self.templates.take(env, self.timings.worker_term_grace_s)
        if spare is not None:
            try:
                spare.assign(log_path, command, env, cwd)
            except OSError:
                spare = None
            else:
                wp = WorkerProcess(worker_id, spare.proc, log_path)
                self.procs[worker_id] = wp
                return wp
        cmd = [
            sys.executable, "-m", "rpremote.local.reaper",
            str(self.timings.worker_term_grace_s), "--", *command,
        ]
        with open(private_file(log_path), "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the emulator's terminal is the emulator's
                umask=UMASK,  # what the worker writes (caches, its home) is private
            )
        wp = WorkerProcess(worker_id, proc, log_path, container=container)
        self.procs[worker_id] = wp
        return wp

    def retire(self, worker_id: str) -> None:
        """Ask a worker to stop (SIGTERM to its reaper, which escalates after the grace)."""
        wp = self.procs.get(worker_id)
        if wp is None or wp.retiring_since is not None:
            return
        wp.retiring_since = time.time()
        _signal(wp.proc, signal.SIGTERM)

    def reap(self) -> list[tuple[WorkerProcess, int]]:
        """Workers whose process has exited since the last call, with the exit code."""
        gone = []
        now = time.time()
        if self.templates is not None:
            self.templates.ensure()  # a spare for the next worker, once this one has started
        for wid, wp in list(self.procs.items()):
            code = wp.proc.poll()
            if code is None:
                # A reaper that ignores SIGTERM for too long is killed outright.
                if wp.retiring_since and now - wp.retiring_since > 3 * self.timings.worker_term_grace_s:
                    _signal(wp.proc, signal.SIGKILL)
                continue
            del self.procs[wid]
            if wp.container is not None:  # may be big (what it installed): not on the loop
                threading.Thread(target=_remove, args=(wp.container,), daemon=True).start()
            gone.append((wp, code))
        return gone

    def stop_all(self, timeout: float) -> None:
        """Stop every worker (and the spare: the emulator is closing)."""
        if self.templates is not None:
            self.templates.close()
        for wid in list(self.procs):
            self.retire(wid)
        deadline = time.time() + timeout
        for wp in list(self.procs.values()):
            try:
                wp.proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal(wp.proc, signal.SIGKILL)
                wp.proc.wait()
            if wp.container is not None:
                _remove(wp.container)
        self.procs.clear()


def inherited_env() -> dict[str, str]:
    """What a worker of a mapped image inherits: the emulator's environment, its interpreter
    first on PATH."""
    # RPREMOTE_STORE too: the store a worker uses is the one its endpoint's spec names
    # (the client puts it there), never one the emulator happened to inherit from the
    # process that started it -- that process's store may not be this endpoint's.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNPOD_") and k != "RPREMOTE_STORE"}
    # `python` in a worker command means the emulator's own interpreter (its venv).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def emulator_worker_env(base_url: str, blob_dir: Path) -> dict[str, str]:
    """The environment of a worker of a mapped image before its endpoint's settings."""
    env = inherited_env()
    # The emulator's offload store: its directory when the worker can open it, else HTTP
    # with the worker's own key (rpremote.blobs.store_from_env).
    env["RPREMOTE_BLOB_DIR"] = str(blob_dir)
    env["RPREMOTE_BLOB_URL"] = f"{base_url}/rpremote/v1/blobs"
    return env


def start_worker_template(state_dir: Path, timings: EmulatorTimings
                          ) -> "worker_template.TemplatePool | None":
    """This emulator's pool of spare executor workers, its first spare started now (the
    emulator calls it first thing, so that its first worker finds the imports done). The
    spare's environment is what every executor worker's shares; the ``RPREMOTE_*`` and
    ``RUNPOD_*`` settings of each (URLs, ids, store) are handed over with the worker."""
    env = inherited_env()
    env.pop("RPREMOTE_VOLUME_MOUNT", None)
    env.update(HOME=str(private_dir(state_dir / "worker-home", top=state_dir)), PYTHONUNBUFFERED="1")
    return worker_template.pool_for(state_dir, env, timings.worker_term_grace_s, UMASK)


def containers_root(state_dir: Path) -> Path:
    """Where the container disks of official images' workers are (one per live worker)."""
    return state_dir / "containers"


def clear_containers(state_dir: Path) -> None:
    """Remove container disks left by an emulator that stopped without removing them (in a
    thread: they may be big; new workers have new ids, so nothing of theirs is touched)."""
    root = containers_root(state_dir)
    try:
        left = [root / name for name in os.listdir(root)]
    except OSError:
        return
    if left:
        threading.Thread(target=lambda: [_remove(p) for p in left], daemon=True).start()


def user_pip_cache() -> Path:
    """pip's cache of the emulator's user (where pip itself would put it on Linux)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "pip" if xdg else Path(os.path.expanduser("~")) / ".cache" / "pip"


# What makes a Python run somebody else's setup: never in an official image's worker.
_PYTHON_VARS = frozenset({"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
                          "PYTHONSAFEPATH", "VIRTUAL_ENV", "VIRTUAL_ENV_PROMPT", "CONDA_PREFIX",
                          "__PYVENV_LAUNCHER__"})


def _norm(path: str) -> str:
    return os.path.normpath(os.path.realpath(path))


def _emulator_bins() -> set[str]:
    """The emulator's own environment's bin directories (its venv's), left out of PATH."""
    bins = set()
    if sys.prefix != sys.base_prefix:
        bins.add(_norm(str(Path(sys.prefix) / "bin")))
        bins.add(_norm(str(Path(sys.executable).parent)))
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if os.environ.get(var):
            bins.add(_norm(str(Path(os.environ[var]) / "bin")))
    return bins


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def describe_exit(code: int) -> str:
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            return f"exit code {code}"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"exit code {code}"
    return f"exit code {code}"
