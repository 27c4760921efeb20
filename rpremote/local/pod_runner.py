"""The processes standing for Pods' containers: start, stop, restart after an exit, ports, disks.

A Pod here is one process (under ``reaper.py``, so nothing it starts outlives it or the
emulator), started from its image's command (``images.py``: an official image runs the Pod's
start command in the image's clean environment; a mapped image its mapping). Each Pod has:

- a container disk, ``<state>/pods/<id>/disk``: its HOME and, for an official image, its
  working directory; kept while the Pod exists (stop keeps it), removed on terminate;
- a log, ``<state>/pods/<id>/container.log``, appended across restarts (``GET
  /v2/pods/{id}/logs`` serves it with the emulator's own ``system`` lines about the Pod);
- host ports: on RunPod the container listens on its own port (``8000``) behind the proxy;
  here Pods share one machine, so each exposed port (``8000/http``, ``22/tcp``) gets a free
  port on 127.0.0.1, new at each start as RunPod's external ports are (rest-v2 §4.7), told
  to the process as ``RPREMOTE_PORT_MAP`` (JSON ``{"8000": 41234}``): a server in the Pod
  that reads it binds the mapped port on 127.0.0.1 instead (``rpremote serve --port 8000``
  does).

A process that exits on its own does not stop its Pod: RunPod restarts the container
(rest-v2 §4.9, [ISS149]); so does this, after a backoff that doubles up to
``PodSettings.restart_backoff_max_s`` and starts again from the first step once a process
ran ``BACKOFF_RESET_S``. Only the API stops a Pod.

Not the control plane's business logic (that is ``control/pods.py``): this module knows
processes and files, not the API object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, NamedTuple

from ..private import UMASK, private_dir, private_file
from .supervisor import (_PYTHON_VARS, _emulator_bins, _norm, _signal, describe_exit,
                         user_pip_cache)

log = logging.getLogger("rpremote.emulator")

PROXY_TIMEOUT_S = 100.0      # rest-v2 §4.7: Cloudflare's response timeout in front of the proxy
BACKOFF_RESET_S = 30.0       # a process that ran this long starts the backoff from the start
MONITOR_TICK_S = 0.2
SYSTEM_EVENTS_MAX = 500      # the emulator's own lines kept per Pod


@dataclass
class PodSettings:
    """What ``rpremote serve`` says about Pods (mostly for tests)."""

    # GPUs free per GPU type id (``--pod-capacity "NVIDIA GeForce RTX 4090=0"``): a Pod that
    # would need more is refused as RunPod refuses it (400, rest-v2 §4.6). Types not listed:
    # no limit.
    capacity: dict[str, int] = field(default_factory=dict)
    proxy_timeout_s: float = PROXY_TIMEOUT_S
    restart_backoff_s: float = 1.0       # first wait before restarting an exited process
    restart_backoff_max_s: float = 30.0
    term_grace_s: float = 5.0            # SIGTERM -> SIGKILL when a Pod is stopped


def parse_capacity_option(value: str) -> tuple[str, int]:
    """``GPU TYPE ID=N`` (one ``--pod-capacity``) as ``(type id, N)``."""
    name, sep, count = value.rpartition("=")
    name = name.strip()
    try:
        number = int(count)
    except ValueError:
        number = -1
    if not sep or not name or number < 0:
        raise ValueError(f"--pod-capacity {value!r}: expected 'GPU TYPE ID=N' (N >= 0 GPUs of "
                         "that type free for Pods), e.g. --pod-capacity "
                         "'NVIDIA GeForce RTX 4090=0'")
    return name, number


class PodEvent(NamedTuple):
    """A ``system`` line: ``n`` counts every line said, ``offset`` is the container log's
    size when it was said (what the process printed before it comes first)."""

    n: int
    ts: float
    offset: int
    line: str


@dataclass
class PodLaunch:
    """How to start one Pod's process (made by the control plane from the API object)."""

    pod_id: str
    command: str                          # shell words
    python_env: str | None                # an official image's clean environment
    env: dict[str, str]                   # the Pod's env and the platform's RUNPOD_* vars
    ports: list[tuple[int, str]]          # (container port, "http"|"tcp")
    volume_dir: str | None = None         # its volume (network or persistent), if any


@dataclass
class PodProcess:
    launch: PodLaunch
    proc: subprocess.Popen | None = None
    port_map: dict[int, int] = field(default_factory=dict)   # container port -> host port
    started_at: float | None = None       # this process
    first_started_at: float | None = None # this run of the Pod (since start/restart)
    exits: int = 0                        # consecutive exits on its own, for the backoff
    next_start_at: float | None = None    # waiting to restart after an exit
    stopping: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PodRunner:
    """The live processes of Pods, by Pod id; the monitor restarts those that exit."""

    def __init__(self, state_dir: Path, settings: PodSettings | None = None):
        self.state_dir = Path(state_dir)
        self.settings = settings or PodSettings()
        self.procs: dict[str, PodProcess] = {}
        self.events: dict[str, list[PodEvent]] = {}
        self._said = 0
        self._monitor: asyncio.Task | None = None
        self.closing = False
        # Run when the emulator stops, after the processes ended (the proxy's HTTP client).
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    # -- files ----------------------------------------------------------------------------

    def pod_dir(self, pod_id: str) -> Path:
        return self.state_dir / "pods" / pod_id

    def disk_dir(self, pod_id: str) -> Path:
        """The Pod's container disk (its HOME)."""
        return self.pod_dir(pod_id) / "disk"

    def persistent_dir(self, pod_id: str) -> Path:
        """The directory standing for a Pod's persistent mount (``mounts.persistent``)."""
        return self.pod_dir(pod_id) / "volume"

    def log_path(self, pod_id: str) -> Path:
        return self.pod_dir(pod_id) / "container.log"

    def say(self, pod_id: str, line: str) -> None:
        """A ``system`` line of the Pod's log (the emulator's, about the Pod)."""
        try:
            offset = self.log_path(pod_id).stat().st_size
        except OSError:
            offset = 0
        self._said += 1
        events = self.events.setdefault(pod_id, [])
        events.append(PodEvent(self._said, time.time(), offset, line))
        del events[:-SYSTEM_EVENTS_MAX]

    # -- lifecycle ------------------------------------------------------------------------

    async def start_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """The emulator stops: every Pod process ends (their Pods stay RUNNING in the store,
        and come back when the emulator starts again)."""
        self.closing = True
        if self._monitor:
            self._monitor.cancel()
        await asyncio.gather(*(asyncio.to_thread(self._end, p) for p in self.procs.values()))
        self.procs.clear()
        for closer in self.on_close:
            await closer()

    def start(self, launch: PodLaunch) -> PodProcess:
        """Start the Pod's process now (a new run: the backoff starts from the first step)."""
        old = self.procs.get(launch.pod_id)
        if old is not None and old.alive():
            raise RuntimeError(f"pod {launch.pod_id} is already running (pid {old.pid})")
        pp = PodProcess(launch)
        self.procs[launch.pod_id] = pp
        self._spawn(pp)
        pp.first_started_at = pp.started_at
        return pp

    async def stop(self, pod_id: str) -> None:
        """End the Pod's process and wait until it is gone (SIGTERM, SIGKILL after the grace)."""
        pp = self.procs.pop(pod_id, None)
        if pp is None:
            return
        pp.stopping = True
        await asyncio.to_thread(self._end, pp)
        if pp.proc is not None:
            code = describe_exit(pp.proc.returncode)
            self.say(pod_id, f"container stopped (pid {pp.pid}, {code})")

    async def remove(self, pod_id: str) -> None:
        """Terminate: the process ends, the Pod's disk, volume and log go."""
        await self.stop(pod_id)
        self.events.pop(pod_id, None)
        await asyncio.to_thread(shutil.rmtree, self.pod_dir(pod_id), True)

    def state(self, pod_id: str) -> str:
        """``running`` (a process is up), ``restarting`` (it exited; waiting to start it
        again) or ``none``."""
        pp = self.procs.get(pod_id)
        if pp is None:
            return "none"
        return "running" if pp.alive() else "restarting"

    def host_port(self, pod_id: str, port: int) -> int | None:
        """The 127.0.0.1 port standing for the Pod's ``port`` while its process runs."""
        pp = self.procs.get(pod_id)
        if pp is None or not pp.alive():
            return None
        return pp.port_map.get(port)

    # -- processes ------------------------------------------------------------------------

    def _env(self, pp: PodProcess, disk: Path) -> dict[str, str]:
        """A fresh container's environment: nothing of the emulator's own settings (its
        RPREMOTE_*/RUNPOD_* vars, XDG dirs: a server in the Pod keeps its state on the Pod's
        disk), and for an official image nothing of its Python setup either."""
        launch = pp.launch
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RUNPOD_", "RPREMOTE_", "XDG_"))}
        # pip's cache is the emulator user's: it stands for the registry's bandwidth, not for
        # the container's state (as for official images' workers, supervisor.py)
        if "PIP_CACHE_DIR" not in env and "PIP_NO_CACHE_DIR" not in env:
            env["PIP_CACHE_DIR"] = str(user_pip_cache())
        if launch.python_env:
            own_bins = _emulator_bins()
            env = {k: v for k, v in env.items() if k not in _PYTHON_VARS}
            system_path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
                           if p and _norm(p) not in own_bins]
            env["PATH"] = os.pathsep.join([str(Path(launch.python_env) / "bin"), *system_path])
            env["VIRTUAL_ENV"] = launch.python_env
        else:  # `python` in a mapped command is the emulator's interpreter
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                           env.get("PATH", "")])
        env.update(launch.env)
        env["RPREMOTE_PORT_MAP"] = json.dumps({str(p): h for p, h in pp.port_map.items()})
        for port, kind in launch.ports:
            if kind == "tcp":  # rest-v2 §4.7, §4.9: the public port of a TCP port
                env[f"RUNPOD_TCP_PORT_{port}"] = str(pp.port_map[port])
        if launch.volume_dir:
            env["RPREMOTE_VOLUME_MOUNT"] = launch.volume_dir
        env["HOME"] = str(disk)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, pp: PodProcess) -> None:
        launch = pp.launch
        pod_id = launch.pod_id
        top = self.state_dir
        disk = self.disk_dir(pod_id)
        private_dir(disk, top=top)
        if launch.volume_dir:
            private_dir(launch.volume_dir, top=top)
        pp.port_map = {port: free_port() for port, _ in launch.ports}
        command = shlex.split(launch.command)
        cwd = None
        if launch.python_env:
            private_dir(Path(launch.python_env).parent, top=top)
            command = [sys.executable, "-m", "rpremote.local.images", "ensure",
                       launch.python_env, "--", *command]
            cwd = str(disk)  # a container starts in a directory of its own
        cmd = [sys.executable, "-m", "rpremote.local.reaper", str(self.settings.term_grace_s),
               "--", *command]
        log_path = self.log_path(pod_id)
        with open(private_file(log_path), "ab") as out:
            pp.proc = subprocess.Popen(cmd, env=self._env(pp, disk), cwd=cwd,
                                       stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       umask=UMASK)
        pp.started_at = time.time()
        pp.next_start_at = None
        ports = ", ".join(f"{p}/{k} -> 127.0.0.1:{pp.port_map[p]}" for p, k in launch.ports)
        self.say(pod_id, f"container started (pid {pp.pid}){f'; ports {ports}' if ports else ''}")

    def _end(self, pp: PodProcess) -> None:
        proc = pp.proc
        if proc is None or proc.poll() is not None:
            return
        _signal(proc, signal.SIGTERM)
        try:
            proc.wait(self.settings.term_grace_s + 2)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()

    async def _watch(self) -> None:
        while not self.closing:
            try:
                self.tick(time.time())
            except Exception:  # a bug here must not stop the Pods' restarts
                log.exception("pod monitor failed")
            await asyncio.sleep(MONITOR_TICK_S)

    def tick(self, now: float) -> None:
        """Restart the processes that exited on their own, after their backoff."""
        s = self.settings
        for pod_id, pp in list(self.procs.items()):
            if pp.stopping or pp.proc is None:
                continue
            if pp.next_start_at is None:
                code = pp.proc.poll()
                if code is None:
                    continue
                ran = now - (pp.started_at or now)
                pp.exits = 1 if ran >= BACKOFF_RESET_S else pp.exits + 1
                wait = min(s.restart_backoff_max_s, s.restart_backoff_s * 2 ** (pp.exits - 1))
                pp.next_start_at = now + wait
                pp.port_map = {}
                self.say(pod_id, f"container exited ({describe_exit(code)}) after {ran:.1f} s; "
                                 f"restarting it in {wait:g} s (a Pod's container is restarted "
                                 "until the Pod is stopped)")
            elif now >= pp.next_start_at:
                try:
                    self._spawn(pp)
                except Exception as e:  # (private_dir's refusal, a full disk...): said, retried
                    pp.next_start_at = now + s.restart_backoff_max_s
                    self.say(pod_id, f"container could not start: {e}")

