"""Start the emulator: bind the port, open the store, run uvicorn, leave a state file behind.

The state file (``server.json`` in the state directory, mode 0600) says where a running
emulator is: its URL, pid and the file holding its key. It is removed on a clean exit.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from .. import __version__
from ..paths import data_dir
from ..private import UMASK, NotPrivateError, private_dir, write_private
from .config import EmulatorTimings, EndpointSpec
from .keys import resolve_api_key
from .supervisor import start_worker_template
from .worker_template import close_pools

if TYPE_CHECKING:
    from .engine import Engine
    from .pod_runner import PodSettings
    from .pod_self import PodGuard

# uvicorn, the app, the engine and the store are imported in serve(), after a spare executor
# worker has been started: its imports (supervisor.py, worker_template.py) then run beside
# the server's own, and the first worker of a fresh emulator finds them done.

STATE_FILE = "server.json"


class ServeError(Exception):
    """The emulator cannot start; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use (another `rpremote serve`?); "
                "stop it or pick another port with --port (--port 0 picks a free one)"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


PORT_MAP_SETTING = "RPREMOTE_PORT_MAP"


def emulated_port(host: str, port: int) -> tuple[str, int]:
    """Where to listen: ``(host, port)``, unless the emulator runs this server as a Pod's
    process (``RPREMOTE_PORT_MAP``, ``{"8000": 41234}``): then the Pod's port is the host
    port the emulator's proxy forwards to, on loopback (Pods there share one machine)."""
    try:
        mapped = json.loads(os.environ.get(PORT_MAP_SETTING) or "{}").get(str(port))
    except (ValueError, AttributeError):
        mapped = None
    return ("127.0.0.1", int(mapped)) if mapped else (host, port)


def _server_class():
    """uvicorn's Server, but a shutdown signal first answers the held long-polls."""
    import uvicorn

    class _Server(uvicorn.Server):
        engine: Engine
        idle_shutdown_s: float | None = None
        pod_guard: "PodGuard | None" = None

        async def on_tick(self, counter: int) -> bool:
            if self.pod_guard is not None and counter % 10 == 0 and not self.should_exit:
                why = self.pod_guard.due()  # on the loop: it may fail jobs through the engine
                if why:  # the stop request blocks: off the event loop
                    await asyncio.get_running_loop().run_in_executor(None, self.pod_guard.stop, why)
            if self.idle_shutdown_s and counter % 10 == 0 and not self.should_exit:
                if self.engine.idle_for() > self.idle_shutdown_s:
                    logging.getLogger("rpremote").info(
                        "no requests for %g s and no jobs: shutting down", self.idle_shutdown_s)
                    self.engine.begin_close()
                    self.should_exit = True
            return await super().on_tick(counter)

        def handle_exit(self, sig, frame) -> None:
            loop = getattr(self, "_loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(self.engine.begin_close)
            super().handle_exit(sig, frame)

        async def serve(self, sockets=None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets=sockets)

    return _Server


def serve(
    host: str,
    port: int,
    state_dir: Path,
    api_key: str | None,
    endpoints: list[EndpointSpec],
    timings: EmulatorTimings,
    explicit_host: bool = False,
    idle_shutdown_s: float | None = None,
    out=sys.stdout,
    resume_queue: bool = True,
    images: dict[str, str] | None = None,
    idle_stop_s: float | None = None,
    max_hours: float | None = None,
    pods: "PodSettings | None" = None,
) -> int:
    if not is_loopback(host):
        if not explicit_host:
            raise ServeError(f"refusing to listen on non-loopback {host} without --host")
        if not (api_key or os.environ.get("RPREMOTE_API_KEY")):
            raise ServeError(
                f"refusing to listen on {host}, reachable from other machines, without a key you "
                "chose: pass --api-key or set RPREMOTE_API_KEY"
            )
    # State at rest is private (rpremote/private.py): what this process and the workers it
    # starts write (the job store and SQLite's -wal/-shm, logs, caches) is 0600/0700.
    os.umask(UMASK)
    state_dir = state_dir.expanduser().resolve()
    try:
        private_dir(state_dir, top=data_dir().expanduser().resolve())
    except NotPrivateError as e:
        raise ServeError(str(e)) from None
    # A spare executor worker starts its imports now, beside ours (supervisor.py).
    start_worker_template(state_dir, timings)
    import uvicorn

    from .app import create_app
    from .engine import Engine
    from .images import ImageMap
    from .pod_self import PodGuard
    from .store import Store

    key, key_source = resolve_api_key(api_key, state_dir)
    host, port = emulated_port(host, port)
    sock = bind_socket(host, port)
    port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}"
    worker_base = url if is_loopback(host) else f"http://127.0.0.1:{port}"

    store = Store(state_dir / "emulator.sqlite3")
    try:
        engine = Engine(store, timings, state_dir, worker_base,
                        worker_token=secrets.token_urlsafe(24), resume_queue=resume_queue)
    except NotPrivateError as e:  # the offload store's directory (/dev/shm/rpremote-<uid>)
        sock.close()
        store.close()
        raise ServeError(str(e)) from None
    for spec in endpoints:
        engine.put_endpoint(spec)

    state_path = state_dir / STATE_FILE
    write_private(state_path, json.dumps({
        "url": url, "pid": os.getpid(), "version": __version__,
        "key_file": str(state_dir / "api_key") if key_source.endswith(("(stored)", "(generated)")) else None,
        "started_at": time.time(), "idle_shutdown_s": idle_shutdown_s,
    }))

    def remove_state_file() -> None:
        try:
            if json.loads(state_path.read_text()).get("pid") == os.getpid():
                state_path.unlink()
        except (OSError, ValueError):
            pass

    print(f"rpremote emulator {__version__} listening on {url}", file=out)
    print(f"  RunPod API base: {url}/v2   (RUNPOD_ENDPOINT_BASE_URL for the runpod client)", file=out)
    print(f"  control plane: {url}/v2/serverless | pods | templates | network-volumes | "
          f"catalog (RUNPOD_API_BASE_URL={url} for REST v2)", file=out)
    print(f"  Pod proxy: {url}/pod-proxy/{{podId}}-{{port}}/ "
          f"(https://{{podId}}-{{port}}.proxy.runpod.net/ on RunPod)", file=out)
    for gpu_type, free in sorted((pods.capacity if pods else {}).items()):
        print(f"  Pod capacity: {free} GPU(s) of {gpu_type}", file=out)
    print(f"  API key: {key_source}", file=out)
    print(f"  state: {state_dir}", file=out)
    if idle_shutdown_s:
        print(f"  shuts down after {idle_shutdown_s:g} s without requests or jobs", file=out)
    if idle_stop_s or max_hours:
        print(f"  stops this Pod ({os.environ.get('RUNPOD_POD_ID') or 'no RUNPOD_POD_ID!'}) "
              + " or ".join(x for x in (
                  f"after {idle_stop_s:g} s without requests or jobs" if idle_stop_s else "",
                  f"{max_hours:g} h after it started, busy or not" if max_hours else "") if x),
              file=out)
    image_map = ImageMap(images)
    # (the app brings the control plane's endpoints up to date with this run's images)
    app = create_app(engine, key, on_shutdown=remove_state_file, images=image_map, pods=pods)
    for name, command in sorted(image_map.commands.items()):
        print(f"  image {name}: `{command}`", file=out)
    for ep in engine.endpoints.values():
        s = ep.spec
        who = f"`{s.workerCmd}`" if s.workerCmd else "external workers only"
        if s.startError:
            who = "workers that cannot start (see GET /v2/serverless/{id}/workers)"
        print(f"  endpoint {s.id}: {s.workersMin}-{s.workersMax} workers of {who}, "
              f"{s.scalerType} {s.scalerValue:g}, idle timeout {s.idleTimeout} s", file=out)
    out.flush()

    logging.basicConfig(level=logging.INFO, format="[rpremote] %(message)s")
    from .one_write import protocol_class

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3,
        http=protocol_class(),  # each answer in one write
    )
    server = _server_class()(config)
    server.engine = engine
    server.idle_shutdown_s = idle_shutdown_s
    if idle_stop_s or max_hours:
        server.pod_guard = PodGuard(idle_stop_s, max_hours, engine.idle_for,
                                    engine.fail_unfinished)
    try:
        server.run(sockets=[sock])
    finally:
        close_pools(state_dir)
        remove_state_file()
        store.close()
    return 0
