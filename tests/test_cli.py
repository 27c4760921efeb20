"""`rpremote serve` as a user meets it: output, key handling, refusals."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

from conftest import start_emulator


def serve(*args, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "rpremote", "serve", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_banner_names_url_and_key_source_but_never_the_key(emulator_factory):
    emu = emulator_factory("--endpoint", "e1", "--endpoint", "e2")
    out = emu.output()
    assert f"listening on {emu.url}" in out
    assert f"{emu.url}/v2" in out
    assert "api_key (generated)" in out
    assert emu.key not in out
    mode = stat.S_IMODE(os.stat(emu.state / "api_key").st_mode)
    assert mode == 0o600
    with emu.client() as c:
        assert sorted(c.get("/rpremote/v1/info").json()["endpoints"]) == ["e1", "e2"]


def test_key_is_reused_from_the_state_dir_and_can_be_given(emulator_factory, tmp_path):
    emu = emulator_factory(state=tmp_path / "s")
    first = emu.key
    emu.stop()
    emu = emulator_factory(state=tmp_path / "s")
    assert emu.key == first and "(stored)" in emu.output()
    emu.stop()
    emu = emulator_factory("--api-key", "my-chosen-key", state=tmp_path / "t")
    with emu.client() as c:
        c.headers["Authorization"] = "Bearer my-chosen-key"
        assert c.get("/rpremote/v1/info").status_code == 200


def test_second_serve_on_a_taken_port_fails(emulator_factory, tmp_path):
    emu = emulator_factory()
    port = emu.url.rsplit(":", 1)[1]
    r = serve("--port", port, "--state", str(tmp_path / "other"))
    assert r.returncode != 0
    assert f"port {port}" in r.stderr and "already in use" in r.stderr


def test_non_loopback_needs_explicit_host_and_a_chosen_key(tmp_path):
    r = serve("--host", "0.0.0.0", "--port", "0", "--state", str(tmp_path))
    assert r.returncode == 2
    assert "--api-key" in r.stderr and "RPREMOTE_API_KEY" in r.stderr


def test_bad_endpoint_settings_are_refused_before_starting(tmp_path):
    r = serve("--state", str(tmp_path), "--endpoint", "Bad_Name")
    assert r.returncode == 2 and "lowercase" in r.stderr
    r = serve("--state", str(tmp_path), "--endpoint", "ok", "--workers-min", "3", "--workers-max", "1")
    assert r.returncode == 2 and "workersMin <= workersMax" in r.stderr


def test_endpoints_can_be_managed_at_runtime(emulator_factory):
    emu = emulator_factory()
    with emu.client() as c:
        r = c.post("/rpremote/v1/endpoints", json={"id": "dyn", "workersMax": 0})
        assert r.status_code == 200 and r.json()["workersMax"] == 0
        r = c.post("/rpremote/v1/endpoints", json={"id": "dyn", "idleTimeout": 0})
        assert r.status_code == 400 and "idleTimeout" in r.json()["error"]
        job = c.post("/v2/dyn/run", json={"input": {}}).json()
        assert c.delete("/rpremote/v1/endpoints/dyn").status_code == 200
        assert c.get(f"/v2/dyn/status/{job['id']}").status_code == 404


def test_state_is_resumed_including_endpoints(emulator_factory, tmp_path):
    emu = emulator_factory(state=tmp_path / "r")
    with emu.client() as c:
        c.put("/rpremote/v1/endpoints/kept", json={"workersMax": 0})
        job = c.post("/v2/kept/run", json={"input": {"a": 1}}).json()
    emu.stop()
    emu = emulator_factory(state=tmp_path / "r")
    with emu.client() as c:
        assert c.get(f"/v2/kept/status/{job['id']}").json()["status"] == "IN_QUEUE"


def test_idle_shutdown_waits_for_jobs_then_exits_and_clears_its_state_file(emulator_factory):
    from conftest import handler_cmd, wait_for, wait_status

    emu = emulator_factory("--idle-shutdown", "2", "--endpoint", "docs",
                           "--worker-cmd", handler_cmd("docs_handlers.py"))
    assert "shuts down after 2 s without requests or jobs" in emu.output()
    with emu.client() as c:
        job = c.post("/v2/docs/run", json={"input": {"mode": "sleep", "seconds": 5}}).json()
    # No client request for 5 s, but a job is queued or running: the server must stay.
    time.sleep(4)
    assert emu.proc.poll() is None
    with emu.client() as c:
        wait_status(c, "docs", job["id"], "COMPLETED", timeout=30)
    wait_for(lambda: emu.proc.poll() is not None, timeout=20, what="idle self-shutdown")
    assert emu.proc.returncode == 0
    assert not (emu.state / "server.json").exists()


# -- server options anywhere (issue 13, point 5) ----------------------------------------------


def test_server_options_are_taken_before_between_and_after_endpoint_groups():
    from rpremote.cli.serve import _split_endpoints

    head, groups = _split_endpoints([
        "--port", "0",
        "--endpoint", "e", "--worker-cmd", "python h.py", "--state", "/tmp/s", "--env", "A=1",
        "--endpoint=f", "--api-key=k", "--gpu", "X", "--no-resume-queue",
        "--idle-timeout", "5", "--take-hold", "2",
    ])
    assert head == ["--port", "0", "--state", "/tmp/s", "--api-key=k", "--no-resume-queue",
                    "--take-hold", "2"]
    assert groups == [["e", "--worker-cmd", "python h.py", "--env", "A=1"],
                      ["f", "--gpu", "X", "--idle-timeout", "5"]]
    # A value stays with its option, whatever it looks like; --endpoint needs its NAME.
    assert _split_endpoints(["--endpoint", "e", "--cwd", "--state"]) == (
        [], [["e", "--cwd", "--state"]])
    assert _split_endpoints(["--endpoint", "--state", "d"]) == (["--state", "d"], [[]])


def test_server_and_endpoint_options_do_not_overlap_and_an_overlap_would_go_to_the_endpoint(
        monkeypatch):
    from rpremote.cli import serve as serve_cli

    server = set(serve_cli._takes_value(serve_cli._serve_parser()))
    endpoint = set(serve_cli._takes_value(serve_cli._endpoint_parser()))
    assert not server & endpoint
    original = serve_cli._endpoint_parser

    def with_host():
        p = original()
        p.add_argument("--host")
        return p

    monkeypatch.setattr(serve_cli, "_endpoint_parser", with_host)
    assert serve_cli._split_endpoints(["--host", "a", "--endpoint", "e", "--host", "b"]) == (
        ["--host", "a"], [["e", "--host", "b"]])


def test_misplaced_and_unknown_options_name_themselves(tmp_path):
    r = serve("--workers-max", "3", "--endpoint", "e", "--state", str(tmp_path))
    assert r.returncode == 2
    assert "--workers-max is an endpoint option: give it after --endpoint NAME" in r.stderr
    r = serve("--endpoint", "e", "--state", str(tmp_path), "--bogus", "1")
    assert r.returncode == 2 and "unrecognized arguments: --bogus 1" in r.stderr
    r = serve("--bogus", "--endpoint", "e")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    r = serve("--endpoint", "--state", str(tmp_path))
    assert r.returncode == 2 and "--endpoint needs a NAME" in r.stderr
    r = serve("--help")
    assert "before, between or after the endpoints" in " ".join(r.stdout.split())
    assert "--worker-cmd" in r.stdout.split("endpoint options")[-1]


def test_serve_with_server_options_after_an_endpoint_answers(tmp_path):
    import json
    import signal

    import httpx

    from conftest import FAST, handler_cmd, wait_for

    state = tmp_path / "after"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rpremote", "serve",
             "--endpoint", "e", "--worker-cmd", handler_cmd("docs_handlers.py"),
             "--workers-max", "1",
             "--state", str(state), "--port", "0", *FAST,
             "--endpoint", "f", "--workers-max", "0", "--api-key=chosen-key"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        server_json = state / "server.json"
        wait_for(lambda: server_json.exists() or proc.poll() is not None, timeout=30,
                 what="the server to start")
        assert proc.poll() is None, log.read_text()
        url = json.loads(server_json.read_text())["url"]
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer chosen-key"},
                          timeout=30) as c:
            wait_for(lambda: c.get("/rpremote/v1/info").status_code == 200, timeout=30,
                     what="the server to answer")
            assert c.get("/v2/e/health").status_code == 200
            assert c.get("/v2/f/health").status_code == 200
            job = c.post("/v2/e/runsync", json={"input": {"mode": "echo", "x": 1}},
                         params={"wait": 60000}).json()
            assert job["status"] == "COMPLETED" and job["output"]["echo"]["x"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
