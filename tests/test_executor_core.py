"""The executor core without the runpod SDK: one request in, events out."""

from __future__ import annotations

import subprocess
import sys
import threading

from rpremote import protocol
from rpremote.capture import dumps
from rpremote.executor.core import Executor, load_secret
from rpremote.executor.events import EventBuffer
from rpremote.job import decode_result

SECRET = b"unit-test-secret"


def run(fn, *args, secret=SECRET, executor=None, **kwargs):
    request = protocol.call_request(SECRET, dumps(fn), dumps((args, kwargs)), name=fn.__name__)
    out = EventBuffer()
    (executor or Executor(secret)).run(request, out)
    assert out.finished
    events = out.drain()
    return request, events


def shout(n):
    for i in range(n):
        print(f"line {i}")
    print("oops", file=sys.stderr)
    return n * 2


def test_core_does_not_import_runpod_or_the_client():
    code = ("import sys, rpremote.executor.core, rpremote.executor.worker; "
            "bad = [m for m in ('runpod', 'httpx', 'rpremote.client', 'rpremote.local') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_events_coalesce_logs_in_order_and_end_in_a_signed_result():
    request, events = run(shout, 100)
    logs = [e for e in events if e["t"] == protocol.LOG]
    stdout = "".join(e["data"] for e in logs if e["stream"] == "stdout")
    assert stdout == "".join(f"line {i}\n" for i in range(100))
    assert len(logs) <= 3  # 201 writes became a few events
    assert events[-1]["t"] == protocol.RESULT
    assert decode_result(events[-1], SECRET, request["call"]) == 200


def slow_shout():
    import time
    print("job line")
    time.sleep(0.3)
    return 1


def test_main_thread_output_is_not_mixed_into_a_job():
    """The SDK logs from the main thread while a job runs in its own thread."""
    box = {}
    t = threading.Thread(target=lambda: box.update(events=run(slow_shout)[1]))
    t.start()
    while t.is_alive():
        print("sdk noise from the main thread")
    t.join()
    text = "".join(e.get("data", "") for e in box["events"] if e["t"] == protocol.LOG)
    assert text == "job line\n"


def test_another_protocol_version_is_refused():
    request = protocol.call_request(SECRET, dumps(shout), dumps(((1,), {})), name="shout")
    request["rpremote"] = protocol.PROTOCOL_VERSION + 1
    protocol.sign(SECRET, request)
    out = EventBuffer()
    Executor(SECRET).run(request, out)
    (result,) = out.drain()
    assert result["error"]["kind"] == protocol.REFUSED_VERSION
    assert f"protocol {protocol.PROTOCOL_VERSION + 1}" in result["error"]["message"]


def test_worker_without_a_secret_refuses_everything():
    _, events = run(shout, 1, secret=None)
    (result,) = events
    assert result["error"]["kind"] == protocol.REFUSED_SIGNATURE
    assert "no signing secret" in result["error"]["message"]


def test_function_cache_keeps_globals_warm():
    ex = Executor(SECRET)
    ns = {"__name__": "__main__"}
    exec("state = {'n': 0}\ndef bump():\n    state['n'] += 1\n    return state['n']\n", ns)
    r1, e1 = run(ns["bump"], executor=ex)
    r2, e2 = run(ns["bump"], executor=ex)
    assert decode_result(e1[-1], SECRET, r1["call"]) == 1
    assert decode_result(e2[-1], SECRET, r2["call"]) == 2


def test_secret_from_env_or_file(tmp_path):
    f = tmp_path / "s"
    f.write_text("from-file\n")
    assert load_secret({"RPREMOTE_SECRET": "direct"}) == b"direct"
    assert load_secret({"RPREMOTE_SECRET_FILE": str(f)}) == b"from-file"
    assert load_secret({"RPREMOTE_SECRET_FILE": str(tmp_path / "missing")}) is None
    assert load_secret({}) is None


def test_bounded_pending_output_drops_oldest_with_a_note():
    buf = EventBuffer(max_pending=1000)
    for _ in range(100):
        buf.log("stdout", "x" * 50 + "\n")
    events = buf.drain()
    assert "bytes of output dropped" in events[0]["data"]
    assert sum(len(e["data"]) for e in events[1:]) <= 1000


def run_map(fn, items, *, star=False):
    request = protocol.call_request(SECRET, dumps(fn), dumps(items), name=fn.__name__,
                                    kind=protocol.MAP, star=star)
    out = EventBuffer()
    Executor(SECRET).run(request, out)
    (result,) = [e for e in out.drain() if e["t"] == protocol.RESULT]
    return decode_result(result, SECRET, request["call"])


def lock_or_inverse(x):
    if x == 2:
        return threading.Lock()  # runs, but cannot travel back
    return 1 / x


def test_a_map_batch_is_values_with_failures_apart_by_index():
    values, errors = run_map(lock_or_inverse, [1, 0, 2, 4])
    assert values == [1.0, None, None, 0.25]
    assert sorted(errors) == [1, 2]
    assert errors[1]["type"] == "ZeroDivisionError"
    assert errors[2]["type"] == "ResultPicklingError" and "results[2]" in errors[2]["message"]


def test_a_star_map_batch_spreads_each_item_over_the_arguments():
    values, errors = run_map(divmod, [(7, 2), (9, 4)], star=True)
    assert (values, errors) == ([(3, 1), (2, 1)], {})


def report_steps(n):
    import rpremote
    print("start")
    rpremote.progress(0, n, "warming up")
    print("warm")
    for i in range(1, n + 1):
        rpremote.progress(i, n, f"step {i}")
    return n


def bad_progress():
    import rpremote
    rpremote.progress("half")


def test_progress_events_keep_their_place_among_logs_and_coalesce():
    request, events = run(report_steps, 10_000)
    kinds = [e["t"] for e in events]
    assert kinds == ["log", "progress", "log", "progress", "result"], kinds
    first, last = events[1], events[3]
    assert (first["done"], first["total"], first["message"]) == (0, 10_000, "warming up")
    assert (last["done"], last["total"], last["message"]) == (10_000, 10_000, "step 10000")
    assert decode_result(events[-1], SECRET, request["call"]) == 10_000


def test_progress_outside_a_job_does_nothing_and_bad_input_fails_the_job():
    import pytest
    import rpremote
    from rpremote.progress_updates import Progress

    assert rpremote.progress(1, 2, "here") is None
    request, events = run(bad_progress)
    with pytest.raises(TypeError, match="done must be a finite number"):
        decode_result(events[-1], SECRET, request["call"])
    with pytest.raises(ValueError, match="total must be a positive number"):
        rpremote.progress(1, 0)
    assert Progress.from_event({"done": "x"}) is None  # a malformed event is ignored
    long = Progress.from_event({"done": 1, "total": 4, "message": "m" * 500})
    assert long.fraction == 0.25 and len(long.message) == 200
    assert long.describe().startswith("1/4 (25%) mmm")
