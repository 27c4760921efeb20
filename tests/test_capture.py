"""rpremote.capture: the user's code travels by value, installed code by reference, and what
cannot be pickled is named with its path.

The decisive by-value checks unpickle and call in a fresh interpreter where the defining
modules do not exist, as on a worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cloudpickle
import pytest

import rpremote
import rpremote.capture
from rpremote.capture import by_value_modules, dumps, is_installed_module, loads
from rpremote.errors import UnpicklableError


def run_fresh(tmp_path: Path, data: bytes, expr: str, absent: tuple[str, ...] = ()) -> str:
    """Unpickle ``data`` as ``obj`` in a new interpreter and return ``repr(eval(expr))``.

    The interpreter runs elsewhere, without PYTHONPATH, and first checks that the modules in
    ``absent`` cannot be imported there.
    """
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    code = textwrap.dedent(f"""
        import importlib.util, sys, cloudpickle
        for name in {absent!r}:
            assert importlib.util.find_spec(name) is None, name + " is importable"
        obj = cloudpickle.loads(open(sys.argv[1], "rb").read())
        print(repr({expr}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code, str(payload)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# ---------------------------------------------------------------- notebook / __main__ code

NOTEBOOK_CELL = """
SCALE = 3

def helper(x):
    return x * SCALE

class Acc:
    def __init__(self):
        self.total = 0
    def add(self, v):
        self.total += helper(v)
        return self

def make_adder(n):
    def add(x):
        return Acc().add(x).total + n
    return add
"""


def test_notebook_function_with_helper_class_and_closure_runs_elsewhere(tmp_path):
    ns = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CELL, "<cell>", "exec"), ns)
    fn = ns["make_adder"](10)
    assert fn.__module__ == "__main__"
    assert by_value_modules(fn) == []  # cloudpickle ships __main__ by value on its own

    assert run_fresh(tmp_path, dumps(fn), "obj(2)") == "16"
    acc = ns["Acc"]().add(5)
    assert run_fresh(tmp_path, dumps(acc), "(type(obj).__name__, obj.total, obj.add(1).total)") \
        == "('Acc', 15, 18)"


# ---------------------------------------------------------------- the user's own modules

@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Two plain modules and a package in a project folder that is not installed."""
    src = tmp_path / "project"
    (src / "userpkg_xyz").mkdir(parents=True)
    (src / "userhelpers_xyz_b.py").write_text(textwrap.dedent("""
        OFFSET = 100

        def offset(x):
            return x + OFFSET

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def norm1(self):
                return abs(self.x) + abs(self.y)
    """))
    (src / "userhelpers_xyz.py").write_text(textwrap.dedent("""
        import json
        import userhelpers_xyz_b
        from userhelpers_xyz_b import Point

        FACTOR = 7

        def _double(x):
            return 2 * x

        def compute(x):
            return userhelpers_xyz_b.offset(_double(x) * FACTOR)

        def measure(p):
            return Point(p.x, p.y).norm1()

        def to_json(x):
            return json.dumps({"x": compute(x)})
    """))
    (src / "userpkg_xyz" / "__init__.py").write_text("")
    (src / "userpkg_xyz" / "sub.py").write_text("BASE = 5\n\ndef plus_base(x):\n    return x + BASE\n")
    names = ["userhelpers_xyz", "userhelpers_xyz_b", "userpkg_xyz", "userpkg_xyz.sub"]
    monkeypatch.syspath_prepend(str(src))
    yield src
    for name in names:
        sys.modules.pop(name, None)


def test_user_module_function_travels_by_value(tmp_path, user_modules):
    import userhelpers_xyz

    assert sorted(by_value_modules(userhelpers_xyz.compute)) == ["userhelpers_xyz", "userhelpers_xyz_b"]
    before = cloudpickle.list_registry_pickle_by_value()
    data = dumps(userhelpers_xyz.compute)
    assert cloudpickle.list_registry_pickle_by_value() == before  # process-wide state restored
    assert "userhelpers_xyz" not in before

    absent = ("userhelpers_xyz", "userhelpers_xyz_b")
    assert run_fresh(tmp_path, data, "obj(1)", absent) == "114"
    # Installed modules it uses (json) stay by reference; the user's go by value.
    assert by_value_modules(userhelpers_xyz.to_json) == ["userhelpers_xyz", "userhelpers_xyz_b"]
    assert run_fresh(tmp_path, dumps(userhelpers_xyz.to_json), "obj(1)", absent) == "'{\"x\": 114}'"


def test_user_class_instances_in_arguments_travel_by_value(tmp_path, user_modules):
    import userhelpers_xyz
    import userhelpers_xyz_b

    call = (userhelpers_xyz.measure, (userhelpers_xyz_b.Point(3, -4),))
    assert "userhelpers_xyz_b" in by_value_modules(call[1])
    assert run_fresh(tmp_path, dumps(call), "obj[0](*obj[1])", ("userhelpers_xyz_b",)) == "7"


def test_submodule_of_user_package_travels_by_value(tmp_path, user_modules):
    from userpkg_xyz import sub

    assert by_value_modules(sub.plus_base) == ["userpkg_xyz.sub"]
    assert run_fresh(tmp_path, dumps(sub.plus_base), "obj(1)", ("userpkg_xyz",)) == "6"


def test_module_registered_by_the_caller_stays_registered(user_modules):
    import userhelpers_xyz_b

    cloudpickle.register_pickle_by_value(userhelpers_xyz_b)
    try:
        dumps(userhelpers_xyz_b.offset)
        assert "userhelpers_xyz_b" in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(userhelpers_xyz_b)


# ---------------------------------------------------------------- installed code by reference

def test_installed_functions_go_by_reference():
    httpx = pytest.importorskip("httpx")
    for fn, module in ((json.dumps, b"json"), (httpx.get, b"httpx")):
        data = dumps(fn)
        assert len(data) < 100 and module in data
        assert by_value_modules(fn) == []
        assert loads(data) is fn


def test_is_installed_module(user_modules):
    httpx = pytest.importorskip("httpx")
    import userhelpers_xyz
    import userpkg_xyz.sub

    assert is_installed_module(json) and is_installed_module(httpx) and is_installed_module(sys)
    assert is_installed_module(rpremote) and is_installed_module(rpremote.capture)
    assert not is_installed_module(userhelpers_xyz)
    assert not is_installed_module(userpkg_xyz.sub)


def test_cycles_and_deep_data_do_not_break_the_walk():
    cyclic: list = [1]
    cyclic.append(cyclic)
    assert by_value_modules(cyclic) == []
    assert loads(dumps(cyclic))[1][0] == 1

    deep: list = []
    cur = deep
    for _ in range(100_000):
        cur.append([])
        cur = cur[0]
    with pytest.raises(UnpicklableError) as info:
        dumps(deep, label="args")
    assert info.value.path.startswith("args[0][0]") and "recursion" in info.value.reason


# ---------------------------------------------------------------- what cannot be pickled

class Box:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


_SHARED_LOCK = threading.Lock()


def uses_global_lock():
    with _SHARED_LOCK:
        return 1


def make_closure():
    lock = threading.Lock()

    def inner():
        with lock:
            return 1
    return inner


def test_socket_deep_in_arguments_is_named_with_its_path():
    before = cloudpickle.list_registry_pickle_by_value()
    with socket.socket() as sock:
        obj = Box(name="db", conn=Box(host="h", _sock=sock))
        with pytest.raises(UnpicklableError) as info:
            dumps((obj,), label="args")
    err = info.value
    assert isinstance(err, TypeError)
    assert (err.path, err.type_name) == ("args[0].conn._sock", "socket.socket")
    assert "args[0].conn._sock" in str(err) and "socket.socket" in str(err)
    assert "cannot pickle" in err.reason and err.__cause__ is not None
    assert cloudpickle.list_registry_pickle_by_value() == before


def test_lock_in_keyword_arguments():
    with pytest.raises(UnpicklableError) as info:
        dumps({"n": 1, "lock": threading.Lock()}, label="kwargs")
    assert (info.value.path, info.value.type_name) == ("kwargs['lock']", "_thread.lock")


def test_lock_used_by_function_as_global_or_closure():
    with pytest.raises(UnpicklableError) as info:
        dumps(uses_global_lock, label="fn")
    assert info.value.path == "fn.globals._SHARED_LOCK"

    with pytest.raises(UnpicklableError) as info:
        dumps(make_closure(), label="fn")
    assert info.value.path == "fn.closure.lock"
    assert info.value.type_name == "_thread.lock"


def test_generator_is_reported_itself():
    with pytest.raises(TypeError) as info:
        dumps((x for x in range(3)), label="result")
    err = info.value
    assert isinstance(err, UnpicklableError)
    assert (err.path, err.type_name) == ("result", "generator")
    assert str(err).startswith("cannot pickle result: generator")


def test_round_trip_of_plain_data():
    value = {"a": [1, 2.5, "x"], "b": (None, b"\x00"), "c": {3}}
    assert loads(dumps(value)) == value
