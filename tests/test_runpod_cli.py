"""``rpremote endpoints`` and ``rpremote down`` on target runpod, rehearsed against a real
``rpremote serve``: the CLI runs as a subprocess with ``RPREMOTE_TARGET=runpod`` and both
RunPod base URLs pointing at the emulator, whose control plane holds two endpoints shaped like
rpremote's and two that are not (one named like rpremote's but without the marker). What the
CLI did is read back with ``GET /v2/serverless``, never taken from its own output.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from conftest import start_emulator
from rpremote.client.control import ControlPlane

KEY = "rpk-CLI-CANARY-0123456789abcdef"  # the emulator's key: must show up in no output
OURS = ("rpremote-ada-24-0123abcd", "rpremote-ada-24-4567cdef")
FOREIGN = ("rpremote-ada-24-ffffffff", "my-endpoint")  # no RPREMOTE_MANAGED marker


def body(name: str, marker: bool) -> dict:
    return {"name": name, "type": "QUEUE", "image": "rpremote/worker:py3.11",
            "env": {"RPREMOTE_MANAGED": "0.1.0"} if marker else {"FOO": "bar"},
            "gpu": {"pools": ["ADA_24"]}, "workers": {"min": 0, "max": 1},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}, "timeout": 600000}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("runpod-cli") / "state", "--api-key", KEY)
    yield emu
    emu.stop()


@pytest.fixture
def cp(emu):
    with ControlPlane(emu.url, KEY) as plane:
        yield plane


@pytest.fixture
def account(cp):
    """The four endpoints, made fresh for each test; every endpoint is removed after it."""
    made = {name: cp.endpoints.create(body(name, marker=True))["id"] for name in OURS}
    made.update({name: cp.endpoints.create(body(name, marker=False))["id"] for name in FOREIGN})
    yield made
    for ep in cp.endpoints.list():
        cp.endpoints.delete(ep["id"])


@pytest.fixture
def env(emu, tmp_path):
    """The rehearsal: target runpod, the emulator's key, both base URLs at the emulator."""
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("RPREMOTE_", "RUNPOD_"))}
    out.update(HOME=str(home), RPREMOTE_HOME=str(tmp_path / "rpremote-home"),
               RPREMOTE_TARGET="runpod", RUNPOD_API_KEY=KEY,
               RPREMOTE_RUNPOD_API=emu.url, RPREMOTE_RUNPOD_QUEUE=emu.url)
    return out


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rpremote", *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert KEY not in proc.stdout + proc.stderr
    return proc


def names(cp) -> set[str]:
    return {ep["name"] for ep in cp.endpoints.list()}


def test_endpoints_lists_ours_only_and_counts_the_others(env, account):
    out = cli(env, "endpoints")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "2 endpoints made by rpremote" in lines[0]
    head = lines[1].split()
    assert head[:4] == ["ENDPOINT", "NAME", "GPU", "WORKERS"]
    rows = {line.split()[1]: line.split() for line in lines[2:4]}
    assert set(rows) == set(OURS)
    row = rows[OURS[0]]
    assert row[0] == account[OURS[0]]
    # GPU, workers min-max, running idle init throttled unhealthy, queued, in progress,
    # idle timeout (REST default 10 s), image, flex $/h of ADA_24 (0.00031 $/s)
    assert row[2:] == ["ADA_24", "0-1", "0", "0", "0", "0", "0", "0", "0", "10", "s",
                       "rpremote/worker:py3.11", "$1.12"]
    assert "2 other endpoints in the account were not made by rpremote" in out.stdout
    for name in FOREIGN:
        assert name not in out.stdout

    out = cli(env, "endpoints", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["notOurs"] == 2 and data["problems"] == []
    assert {r["name"] for r in data["endpoints"]} == set(OURS)
    first = next(r for r in data["endpoints"] if r["name"] == OURS[0])
    assert first["workers"] == {"running": 0, "idle": 0, "initializing": 0, "throttled": 0,
                                "unhealthy": 0}
    assert first["queue"] == {"inQueue": 0, "inProgress": 0}
    assert first["usdPerHourPerWorker"] == pytest.approx(0.00031 * 3600)
    assert first["workersMin"] == 0 and first["workersMax"] == 1


def test_down_without_yes_and_no_terminal_refuses(env, account, cp):
    out = cli(env, "down")
    assert out.returncode == 1
    assert "pass --yes" in out.stderr
    assert set(OURS) <= set(out.stdout.split())  # it showed what it would delete
    assert names(cp) == set(OURS + FOREIGN)


def test_down_refuses_an_endpoint_that_is_not_ours(env, account, cp):
    for foreign in (FOREIGN[0], account[FOREIGN[1]]):  # by name, and by id
        out = cli(env, "down", foreign, "--yes")
        assert out.returncode == 1
        assert "not made by rpremote" in out.stderr and "nothing was deleted" in out.stderr
    out = cli(env, "down", "--yes", OURS[0], FOREIGN[1])  # one refusal stops the whole command
    assert out.returncode == 1
    assert names(cp) == set(OURS + FOREIGN)


def test_down_deletes_one_then_the_rest_and_never_the_others(env, account, cp):
    out = cli(env, "down", "--yes", OURS[0])
    assert out.returncode == 0, out.stderr
    assert f"deleted {account[OURS[0]]} ({OURS[0]})" in out.stdout
    assert "deleted 1 of 1 endpoint" in out.stdout
    assert names(cp) == {OURS[1], *FOREIGN}

    out = cli(env, "down", "--yes", OURS[0])  # again: nothing left by that name
    assert out.returncode == 0, out.stderr
    assert "already deleted?" in out.stdout

    out = cli(env, "down", "--yes")
    assert out.returncode == 0, out.stderr
    assert f"deleted {account[OURS[1]]} ({OURS[1]})" in out.stdout
    assert "deleted 1 of 1 endpoint" in out.stdout
    assert "2 endpoints not made by rpremote: left alone" in out.stdout
    assert names(cp) == set(FOREIGN)

    out = cli(env, "endpoints")
    assert out.returncode == 0, out.stderr
    assert "no endpoints made by rpremote" in out.stdout
    assert "2 other endpoints" in out.stdout

    out = cli(env, "down", "--yes")
    assert out.returncode == 0, out.stderr
    assert "nothing to delete" in out.stdout
    assert names(cp) == set(FOREIGN)


def test_down_asks_on_a_terminal(env, account, cp):
    """With stdin a terminal it asks; "n" deletes nothing, "y" deletes."""
    for answer, left in (("n", set(OURS + FOREIGN)), ("y", set(FOREIGN))):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "rpremote", "down"], env=env,
                                stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        os.close(secondary)
        try:
            os.write(primary, f"{answer}\n".encode())  # read by input() once it asks
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            os.close(primary)
        assert "[y/N]" in stdout
        assert proc.returncode == (1 if answer == "n" else 0), stderr
        assert names(cp) == left


def test_a_missing_or_refused_key_is_one_clear_line(env, account, cp):
    no_key = {k: v for k, v in env.items() if k != "RUNPOD_API_KEY"}
    wrong = {**env, "RUNPOD_API_KEY": "rpk-WRONG-fedcba9876543210"}
    for command in (("endpoints",), ("down", "--yes")):
        out = cli(no_key, *command)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "RUNPOD_API_KEY" in out.stderr
        out = cli(wrong, *command)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "401" in out.stderr
        assert "rpk-WRONG" not in out.stderr
    assert names(cp) == set(OURS + FOREIGN)


def test_down_on_the_local_target_removes_only_rpremote_named_endpoints(tmp_path, env):
    home = tmp_path / "local-home"
    emu = start_emulator(home / "emulator",
                         "--endpoint", "rpremote-cpu-0123abcd", "--worker-cmd", "true",
                         "--workers-min", "0",
                         "--endpoint", "my-own", "--worker-cmd", "true", "--workers-min", "0")
    try:
        local = {**env, "RPREMOTE_TARGET": "local", "RPREMOTE_HOME": str(home)}
        out = cli(local, "down", "--yes")
        assert out.returncode == 0, out.stderr
        assert "deleted rpremote-cpu-0123abcd" in out.stdout
        assert "1 endpoint not made by rpremote: left alone" in out.stdout
        with emu.client() as c:
            left = [ep["id"] for ep in c.get("/rpremote/v1/endpoints").json()]
        assert left == ["my-own"]
    finally:
        emu.stop()
    out = cli(local, "down")  # no emulator running: nothing to do, none started
    assert out.returncode == 0 and "not running" in out.stdout


def test_an_unreachable_control_plane_is_one_clear_line(env, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = cli({**env, "RPREMOTE_RUNPOD_API": f"http://127.0.0.1:{port}"}, "endpoints")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "cannot reach" in out.stderr


def test_the_price_is_the_dearest_pool_times_the_gpu_count():
    from rpremote.cli.runpod_endpoints import compute, usd_per_hour

    two = {"gpu": {"pools": ["AMPERE_24", "ADA_24"], "count": 2}}
    assert usd_per_hour(two) == pytest.approx(0.00031 * 2 * 3600)
    assert compute(two) == "2 x AMPERE_24|ADA_24"
    assert usd_per_hour({"gpu": {"pools": ["ADA_32_PRO"]}}) is None  # price not documented
    assert usd_per_hour({"gpu": {"pools": ["NOT_A_POOL"]}}) is None
    cpu = {"cpu": [{"id": "cpu3c", "vcpuCount": 2}]}
    assert usd_per_hour(cpu) is None and compute(cpu) == "CPU cpu3c x2"
