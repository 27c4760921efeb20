"""Shared fixtures: a real `rpremote serve` process on 127.0.0.1, stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

HANDLERS = Path(__file__).parent / "handlers"
FAST = [
    "--take-hold", "2", "--stop-hold", "2", "--stream-hold", "1",
    "--ping-interval", "1000", "--lost-after", "6", "--stop-grace", "3",
]


def handler_cmd(name: str) -> str:
    return f"{sys.executable} {HANDLERS / name}"


@dataclass
class Emulator:
    proc: subprocess.Popen
    state: Path
    url: str
    key: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"},
            timeout=kw.pop("timeout", 60), **kw,
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_emulator(state: Path, *args: str, fast: bool = True, env: dict | None = None) -> Emulator:
    state.mkdir(parents=True, exist_ok=True)
    server_json = state / "server.json"
    if server_json.exists():
        server_json.unlink()
    log = state / f"serve-{time.time_ns()}.log"
    cmd = [sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state", str(state),
           *(FAST if fast else []), *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    deadline = time.time() + 30
    while not server_json.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"emulator did not start:\n{log.read_text()}")
        time.sleep(0.05)
    info = json.loads(server_json.read_text())
    key = args[args.index("--api-key") + 1] if "--api-key" in args else (state / "api_key").read_text().strip()
    emu = Emulator(proc, state, info["url"], key, log)
    with emu.client() as c:  # wait until it answers
        while True:
            try:
                c.get("/rpremote/v1/info").raise_for_status()
                break
            except httpx.TransportError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
    return emu


@pytest.fixture
def emulator_factory(tmp_path):
    started: list[Emulator] = []

    def factory(*args: str, state: Path | None = None, **kw) -> Emulator:
        emu = start_emulator(state or tmp_path / "state", *args, **kw)
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        emu.stop()


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_status(client: httpx.Client, ep: str, job_id: str, states, timeout: float = 30) -> dict:
    states = {states} if isinstance(states, str) else set(states)
    last = {}

    def check():
        nonlocal last
        last = client.get(f"/v2/{ep}/status/{job_id}").json()
        return last if last.get("status") in states else None

    try:
        return wait_for(check, timeout, what=f"job {job_id} in {states}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last status: {last}") from None


def gone(pid: int, reap: bool = True) -> bool:
    """No such process, or a zombie: dead, not yet reaped (an emulator this process started
    is its child, and ``kill(pid, 0)`` still finds it until it is reaped, here if ``reap``)."""
    try:
        if reap:
            os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: whoever adopted it reaps it
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:].startswith(b"Z")


def stop_pid(pid: int, timeout: float = 20) -> None:
    """Stop a server we started, by its PID: SIGTERM, then SIGKILL after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if gone(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    gone(pid)  # reaped, when it was ours


def stop_autostarted(home: Path) -> None:
    """Stop the emulator rpremote started on its own under ``home`` (found by its state file)."""
    state = home / "emulator" / "server.json"
    if state.exists():
        stop_pid(json.loads(state.read_text())["pid"])


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """An RPREMOTE_HOME of this test's own, not made yet (rpremote makes it); the emulator
    rpremote starts under it is stopped by its PID at the end."""
    from rpremote import config
    from rpremote.client import targets

    home = tmp_path / "home"
    monkeypatch.setenv("RPREMOTE_HOME", str(home))
    targets.forget()
    config.reset()
    try:
        yield home
    finally:
        targets.forget()
        config.reset()
        stop_autostarted(home)


@pytest.fixture(scope="session")
def rpremote_home(tmp_path_factory):
    """An RPREMOTE_HOME of our own for the session; its auto-started emulator is stopped at the end."""
    from rpremote import config
    from rpremote.client import targets

    home = tmp_path_factory.mktemp("rpremote-home")
    old = os.environ.get("RPREMOTE_HOME")
    os.environ["RPREMOTE_HOME"] = str(home)
    targets.forget()
    config.reset()
    yield home
    targets.forget()
    stop_autostarted(home)
    if old is None:
        os.environ.pop("RPREMOTE_HOME", None)
    else:
        os.environ["RPREMOTE_HOME"] = old


class RecordingReporter:
    """Records what a job reports, with arrival times, instead of printing it."""

    def __init__(self):
        self.logs: list[tuple[float, str, str]] = []
        self.statuses: list[tuple[str, str | None]] = []
        self.finished_with: str | None = None

    def status(self, job, status, worker):
        self.statuses.append((status, worker))

    def log(self, job, stream, text):
        self.logs.append((time.monotonic(), stream, text))

    def finished(self, job, status):
        self.finished_with = status

    def text(self, stream: str | None = None) -> str:
        return "".join(t for _, s, t in self.logs if stream in (None, s))


def iopub_of(kc, code: str, timeout: float = 120):
    """Run ``code`` in a kernel; yield each ``(msg_type, content)`` it publishes, until idle."""
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return
        yield kind, content


# -- A real S3 server on 127.0.0.1: moto in server mode, stopped by its PID --------------------

S3_KEYS = {"AWS_ACCESS_KEY_ID": "rpremote-test-key", "AWS_SECRET_ACCESS_KEY": "rpremote-test-secret",
           "AWS_REGION": "us-east-1"}


@dataclass
class S3Server:
    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self) -> dict[str, str]:
        """What points boto3 (and so rpremote's S3 store) at this server."""
        return {**S3_KEYS, "AWS_ENDPOINT_URL_S3": self.url}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=S3_KEYS["AWS_REGION"],
                            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"])

    def requests(self) -> list[tuple[str, str]]:
        """``(method, url)`` of each request the server received since ``record()``; the
        recording stops here (what comes next, big uploads, is not written down)."""
        httpx.post(f"{self.url}/moto-api/recorder/stop-recording", timeout=30).raise_for_status()
        r = httpx.get(f"{self.url}/moto-api/recorder/download-recording", timeout=60)
        r.raise_for_status()
        return [(req["method"], req["url"]) for req in map(json.loads, r.text.splitlines())]

    def record(self) -> None:
        """Start (again) recording what the server receives (moto's recorder keeps bodies,
        base64'd in a file: record around small exchanges, not around big uploads)."""
        httpx.post(f"{self.url}/moto-api/recorder/reset-recording", timeout=30).raise_for_status()
        httpx.post(f"{self.url}/moto-api/recorder/start-recording", timeout=30).raise_for_status()


def start_s3_server(log: Path, env: dict[str, str] | None = None) -> S3Server:
    """moto's S3 server on a free loopback port; ``env`` adds to its environment (e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT``: after that many requests it checks credentials)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "MOTO_ENABLE_RECORDING": "true",
                                     "MOTO_RECORDER_FILEPATH": str(log.with_suffix(".recording")),
                                     **(env or {})})
    server = S3Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.time() + 30
    while True:
        try:
            httpx.get(f"{server.url}/moto-api/", timeout=2)
            # MOTO_ENABLE_RECORDING starts the recorder on: off until a test asks (record()),
            # or every upload would be written down base64'd (200 MB tests, the bench).
            httpx.post(f"{server.url}/moto-api/recorder/stop-recording",
                       timeout=30).raise_for_status()
            return server
        except httpx.TransportError:
            if proc.poll() is not None or time.time() > deadline:
                stop_pid(proc.pid)
                raise RuntimeError(f"moto's S3 server did not start:\n{log.read_text()}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free loopback port for the session; stopped by its PID."""
    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server
    finally:
        stop_pid(server.pid)


@pytest.fixture
def reporter():
    """A ``RecordingReporter`` as this process's reporter, for the test's length."""
    from rpremote import config

    rec = RecordingReporter()
    config.configure(reporter=rec)
    yield rec
    config.reset()
