"""Remote tracebacks read like local ones, whatever cloudpickle does with code objects.

cloudpickle 3.1.3 names every code object it ships by value ``<dynamic-code>``; the worker
usually lacks the user's files anyway. The executor describes frames as data, the client
draws them with its own source (``rpremote/tracebacks.py``), and rpremote's own frames are
cut out of the local part (``rpremote/frames.py``). End to end under both cloudpickle 3.1.2
(``.venv/compat``, installed by scripts/setup) and the locked one.
"""

from __future__ import annotations

import json
import re
import linecache
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import cloudpickle
import pytest

from rpremote import tracebacks
from rpremote.capture import dumps, loads

from conftest import stop_autostarted

ROOT = Path(__file__).resolve().parent.parent
COMPAT_312 = ROOT / ".venv" / "compat" / "cloudpickle-3.1.2"


def _chained():
    def parse(text):
        return {"a": 1}[text] + 1

    def load(text):
        try:
            parse(text)
        except KeyError as e:
            raise ValueError(f"cannot load {text!r}") from e

    try:
        load("q")
    except ValueError:
        return 1 / 0


def _raised(fn):
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("did not raise")


def test_described_and_drawn_traceback_is_the_local_one():
    err = _raised(_chained)
    described = json.loads(json.dumps(tracebacks.describe(err)))  # it travels as JSON
    assert tracebacks.render(described) == "".join(traceback.format_exception(err))
    assert "~~~~~~~~^^^^^^" in tracebacks.render(described)  # positions survive


def test_lines_the_worker_lacks_come_from_the_client(tmp_path):
    source = "def boom(x):\n    return 10 // x\n"
    filename = str(tmp_path / "only_on_the_client.py")
    ns: dict = {}
    exec(compile(source, filename, "exec"), ns)
    err = _raised(lambda: ns["boom"](0))
    tb = err.__traceback__
    while tb.tb_frame.f_code.co_name != "boom":  # from boom's frame on, as the executor does
        tb = tb.tb_next
    described = tracebacks.describe(err, tb)
    assert described["frames"][0][6] is None  # the "worker" has no such file
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        text = tracebacks.render(described)
    finally:
        linecache.cache.pop(filename, None)
    assert text == ('Traceback (most recent call last):\n'
                    f'  File "{filename}", line 2, in boom\n'
                    '    return 10 // x\n'
                    '           ~~~^^~~\n'
                    'ZeroDivisionError: integer division or modulo by zero\n')


def test_exception_groups_are_drawn_by_the_worker():
    err = _raised(lambda: (_ for _ in ()).throw(ExceptionGroup("two", [ValueError(1), KeyError(2)])))
    assert tracebacks.render(tracebacks.describe(err)) == "".join(traceback.format_exception(err))


def test_a_function_keeps_its_file_name_through_pickling(tmp_path):
    """In this process (the locked cloudpickle) and in one running cloudpickle 3.1.2."""
    script = tmp_path / "make.py"
    script.write_text("def f():\n    def g():\n        return 1\n    return g\n")
    ns = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), ns)
    g = loads(dumps(ns["f"]()))
    assert g.__code__.co_filename == str(script)
    f = loads(dumps(ns["f"]))
    assert f.__code__.co_filename == str(script)
    assert f().__code__.co_filename == str(script)  # nested code objects too


def _script(tmp_path: Path) -> Path:
    """A user's script, a local module it imports, and code whose source only the client has."""
    (tmp_path / "stats_helpers.py").write_text(textwrap.dedent('''\
        def mean(xs):
            return sum(xs) / len(xs)
        '''))
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent('''\
        import json, linecache, sys, traceback
        import cloudpickle
        from rpremote import remote
        from stats_helpers import mean

        class BadInput(ValueError):
            pass

        @remote(workers=(0, 1), idle_timeout=30)
        def train(steps):
            if steps <= 0:
                raise BadInput(f"steps must be positive, got {steps}")
            return mean([])

        @remote(workers=(0, 1), idle_timeout=30)
        def versions():
            import cloudpickle
            return cloudpickle.__version__

        # As a notebook does: source kept in the client's linecache only (no file anywhere).
        CELL = "def cell_fn(x):\\n    return {'k': 1}[x]\\n"
        linecache.cache["/nowhere/cell_7.py"] = (len(CELL), None, CELL.splitlines(True),
                                                 "/nowhere/cell_7.py")
        exec(compile(CELL, "/nowhere/cell_7.py", "exec"), globals())
        cell_remote = remote(workers=(0, 1), idle_timeout=30)(cell_fn)

        def remote_and_local(fn, *args):
            """(the remote failure's text, the same failure raised here from fn's frame on)."""
            try:
                fn(*args)
            except Exception as e:
                remote = e.__cause__.traceback
                local_tb = "".join(traceback.format_exception(e))
            try:
                fn.fn(*args)
            except Exception as e:
                tb = e.__traceback__.tb_next  # from fn's own frame on
                local = "".join(traceback.format_exception(type(e), e, tb))
            return remote, local, local_tb

        out = {"client": cloudpickle.__version__, "worker": versions()}
        for name, call in [("script", (train, 0)), ("module", (train, 3)),
                           ("client_only", (cell_remote, "z"))]:
            out[name] = remote_and_local(*call)
        print(json.dumps(out))
        '''))
    return script


@pytest.mark.parametrize("cloudpickle_path", ["locked", "3.1.2"])
def test_remote_frames_show_file_line_and_source_as_locally(tmp_path, cloudpickle_path):
    env = {**os.environ, "RPREMOTE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(tmp_path)}
    expected = cloudpickle.__version__
    if cloudpickle_path == "3.1.2":
        assert (COMPAT_312 / "cloudpickle").is_dir(), \
            f"{COMPAT_312} is missing: scripts/setup installs it (run ./scripts/test)"
        env["PYTHONPATH"] = os.pathsep.join([str(COMPAT_312), str(tmp_path)])
        expected = "3.1.2"
    script = _script(tmp_path)
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)
    finally:
        stop_autostarted(tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["client"] == out["worker"] == expected
    for case in ("script", "module", "client_only"):
        remote, local, local_tb = out[case]
        assert remote == local, f"{case}:\nremote:\n{remote}\nlocal:\n{local}"
        assert "<dynamic-code>" not in remote and "rpremote" not in remote.replace("user_script", "")
        # The local part of the chain: the user's line, then the error; no rpremote frames.
        assert "/rpremote/" not in local_tb, local_tb
    assert f'File "{script}", line 12, in train' in out["script"][0]
    assert 'raise BadInput(f"steps must be positive, got {steps}")' in out["script"][0]
    assert f'File "{tmp_path / "stats_helpers.py"}", line 2, in mean' in out["module"][0]
    assert "return sum(xs) / len(xs)" in out["module"][0]
    assert 'File "/nowhere/cell_7.py", line 2, in cell_fn' in out["client_only"][0]
    assert "return {'k': 1}[x]" in out["client_only"][0]


# -- In a notebook: what IPython shows for a failed, timed-out and cancelled call -----------------

@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    from jupyter_client.manager import start_new_kernel

    home = tmp_path_factory.mktemp("tb-kernel-home")
    km, kc = start_new_kernel(kernel_name="python3",
                              env={**os.environ, "RPREMOTE_HOME": str(home)})
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        stop_autostarted(home)


def _error(kc, code: str) -> str:
    """The error IPython shows for ``code``, as plain text (no colours)."""
    import re

    from conftest import iopub_of

    shown = [c for kind, c in iopub_of(kc, code, timeout=180) if kind == "error"]
    assert shown, f"no error from {code!r}"
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(shown[-1]["traceback"]))


def _no_plumbing(shown: str) -> None:
    for own in ("rpremote/api.py", "rpremote/job.py", "rpremote/mapping.py", "rpremote/client",
                "rpremote/notebook", "skipping hidden", "<dynamic-code>"):
        assert own not in shown, f"{own!r} in what the notebook shows:\n{shown}"


def test_a_notebook_shows_the_users_line_the_remote_traceback_and_the_error(kernel):
    from conftest import iopub_of

    setup = ("%load_ext rpremote\nimport time, threading\nfrom rpremote import remote\n"
             "@remote(workers=(0, 2), idle_timeout=30)\ndef divide(a, b):\n"
             "    ratio = a / b\n    return ratio\n"
             "@remote(workers=(0, 2), idle_timeout=30, timeout=5)\ndef slow(s):\n"
             "    time.sleep(s)\n")
    assert not [c for kind, c in iopub_of(kernel, setup) if kind == "error"]

    failed = _error(kernel, "x = 1\nvalue = divide(x, 0)")
    _no_plumbing(failed)
    assert "ratio = a / b" in failed and "~~^~~" in failed  # the remote line, as locally
    assert "value = divide(x, 0)" in failed and failed.rstrip().endswith(
        "ZeroDivisionError: division by zero")
    assert "The above exception was the direct cause" in failed

    timed_out = _error(kernel, "slow(40)")
    _no_plumbing(timed_out)
    assert "----> 1 slow(40)" in timed_out and "JobTimeout" in timed_out

    cancelled = _error(kernel, "job = slow.spawn(40)\n"
                               "threading.Timer(1.5, job.cancel).start()  # the Cancel button\n"
                               "job.result()")
    _no_plumbing(cancelled)
    assert "----> 3 job.result()" in cancelled and "JobCancelled" in cancelled

    cell = _error(kernel, "%%runpod\ny = 2\nz = {'a': 1}[y]")
    _no_plumbing(cell)
    assert re.search(r'File "<runpod-cell-\d+>", line 2, in <module>\n    z = \{\'a\': 1\}\[y\]',
                     cell), cell
    assert "KeyError: 2" in cell
