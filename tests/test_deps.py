"""Dependencies, system dependencies and version parity.

Detection is unit-tested in this process; installing is tested on real `runpod`-SDK workers
behind the session's local emulator. Nothing reaches PyPI: the packages are tiny wheels built
here, found through PIP_NO_INDEX / PIP_FIND_LINKS given to the workers with ``env=``.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import threading
import time
import types
import zipfile
from pathlib import Path

import cloudpickle
import httpx
import numpy as np
import pytest

from rpremote import config, parity, platform as rp, remote
from rpremote.capture import PickleNotes, dumps
from rpremote.capture import requirements as reqs
from rpremote.errors import ConfigError, DependencyInstallError, VersionMismatch
from rpremote.executor import installer
from rpremote.versions import (
    check_dependencies, parse_requirement, same_series, satisfies,
)

pytestmark = pytest.mark.usefixtures("rpremote_home")


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of package ``name`` whose ``__version__`` is ``version``."""
    pkg = name.replace("-", "_")
    info = f"{pkg}-{version}.dist-info"
    files = {
        f"{pkg}/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                          "Tag: py3-none-any\n"),
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    wheel = directory / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    make_wheel(directory, "rpdeptest-a", "1.0")
    make_wheel(directory, "rpdeptest-b", "2.0")
    return directory


def worker_env(wheels: Path, deps: Path, **extra: str) -> dict[str, str]:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "RPREMOTE_DEPS_DIR": str(deps),
            "RPREMOTE_INSTALLER": "pip", **extra}


# -- functions that travel by value (this test module is not an installed package) ----------

def use_a():
    import rpdeptest_a
    return rpdeptest_a.__version__, rpdeptest_a.__file__, os.getpid()


def httpx_version():
    import httpx
    return httpx.__version__


def identity(x):
    return type(x).__name__


class TouchOnUnpickle:
    """Creates ``path`` when unpickled: shows whether the worker unpickled the arguments."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def uses_global_module(x):
    return np.asarray(x).sum()


def imports_inside(url):
    import json as _json  # stdlib: never a dependency
    import httpx
    import rpremote  # the executor's own: never a dependency

    def nested():
        import yaml
        return yaml

    return httpx.URL(url), _json, rpremote, nested


# -- detection and pinning (unit) -------------------------------------------------------------


def _detected(obj) -> dict[str, str]:
    notes = PickleNotes()
    dumps(obj, notes=notes)
    return reqs.detect(notes)


def test_imports_inside_the_function_and_nested_are_pinned():
    found = _detected(imports_inside)
    assert found == {"httpx": f"httpx=={md.version('httpx')}",
                     "pyyaml": f"PyYAML=={md.version('PyYAML')}"}


def test_global_module_and_objects_of_installed_packages_are_pinned():
    assert _detected(uses_global_module) == {"numpy": f"numpy=={np.__version__}"}
    # an argument's class goes by reference: its package is needed too
    assert _detected(((httpx.URL("http://a"),), {})) == {"httpx": f"httpx=={httpx.__version__}"}


def test_by_value_local_module_brings_its_third_party_imports(tmp_path, monkeypatch):
    (tmp_path / "rpdeps_helpers.py").write_text(
        "import yaml\nimport json\n\ndef load(text):\n    return yaml.safe_load(text)\n\n"
        "def unused():\n    import httpx\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import rpdeps_helpers

    load = rpdeps_helpers.load

    def uses_function(text):
        return load(text)

    def uses_module(text):
        return rpdeps_helpers.load(text)

    try:
        by_function, by_module = _detected(uses_function), _detected(uses_module)
    finally:
        sys.modules.pop("rpdeps_helpers", None)
    # What ships decides: a function of the module carries only the globals it uses (yaml);
    # the module object itself ships whole, unused() and its import of httpx included.
    assert by_function == {"pyyaml": f"PyYAML=={md.version('PyYAML')}"}
    assert by_module == {**by_function, "httpx": f"httpx=={httpx.__version__}"}


def test_stdlib_rpremote_and_worker_base_packages_are_left_out():
    import json as stdlib_json

    def fn():
        import cloudpickle, rpremote, runpod  # noqa: F401
        return stdlib_json.dumps(os.getcwd()), remote, sys.version

    assert _detected(fn) == {}


def test_explicit_dependencies_add_and_override(rpremote_home):
    f = remote(dependencies=["numpy>=1", "rpdeptest-a==1.0"])(uses_global_module)
    request, _ = f._request(([1, 2],), {})
    assert request["requirements"] == ["numpy>=1", "rpdeptest-a==1.0"]
    assert request["client"]["cloudpickle"] == cloudpickle.__version__
    g = remote(uses_global_module)
    assert g._request(([1],), {})[0]["requirements"] == [f"numpy=={np.__version__}"]


def test_detection_can_be_turned_off():
    f = remote(dependencies=None)(uses_global_module)
    assert f._request(([1],), {})[0]["requirements"] == []
    g = remote(auto_dependencies=False, dependencies=["rpdeptest-a"])(uses_global_module)
    assert g._request(([1],), {})[0]["requirements"] == ["rpdeptest-a"]


@pytest.mark.parametrize("deps, match", [
    ("numpy", "wrap it in a list"),
    ({"numpy"}, "list of requirement strings"),
    ([""], "non-empty"),
    ([3], "non-empty"),
    (["numpy @ https://x/numpy.whl"], "direct URLs"),
    (["numpy; python_version > '3'"], "markers"),
    (["==1.0"], "is not a requirement"),
    (["--index-url=http://evil"], "pip options are not accepted"),
    (["numpy", "NumPy>=1"], "twice"),
])
def test_bad_dependencies_fail_at_decoration(deps, match):
    with pytest.raises(ConfigError, match=match):
        remote(dependencies=deps)


@pytest.mark.parametrize("system, match", [
    ("ffmpeg", "wrap it in a list"), (["FFmpeg"], "Debian package name"),
    (["ffmpeg=7.0"], "Debian package name"), (["-o", "x"], "Debian package name"), (3, "list"),
])
def test_bad_system_dependencies_fail_at_decoration(system, match):
    with pytest.raises(ConfigError, match=match):
        remote(system_dependencies=system)
    with pytest.raises(ConfigError, match="True or False"):
        remote(auto_dependencies="yes")


def test_requirements_and_versions():
    assert [str(r) for r in check_dependencies(["  torch==2.5.1 ", "httpx[http2] >=0.27, <1"])] == [
        "torch==2.5.1", "httpx[http2]>=0.27,<1"]
    pin = parse_requirement("numpy==2.4.6")
    assert satisfies("2.4.1", pin) and satisfies("2.4.9", pin) and not satisfies("2.3.0", pin)
    assert satisfies("0.28.1", parse_requirement("httpx>=0.27,<1"))
    assert not satisfies("1.0", parse_requirement("httpx>=0.27,<1"))
    assert satisfies("2.4.6", parse_requirement("numpy")) and satisfies("1.4.2", parse_requirement("x~=1.4"))
    assert same_series("2.1.0", "2.9") and not same_series("1.26", "2.0")
    assert not same_series("0.27.0", "0.28.1") and same_series("0.28.0", "0.28.1")


# -- parity (unit) ------------------------------------------------------------------------------


def test_parity_cloudpickle_and_packages(monkeypatch):
    ours = cloudpickle.__version__
    with pytest.raises(VersionMismatch) as info:
        parity.check_worker({"cloudpickle": "2.2.1"}, "3.11", ours)
    assert "2.2.1" in str(info.value) and ours in str(info.value)
    assert "cloudpickle==" in str(info.value)

    parity.check_worker({"cloudpickle": ours, "packages": {
        "numpy": {"version": np.__version__, "modules": ["numpy"]}}}, "3.11", ours)
    with pytest.raises(VersionMismatch) as info:  # installed, not imported: an install fixes it
        parity.check_worker({"packages": {"rpdeptest-gone": {"version": "1.0"},
                                          "PyYAML": {"version": "99.1", "modules": ["rpdeptest_unloaded"]}}},
                            "3.11", ours)
    text = str(info.value)
    assert "the client has 99.1" in text and md.version("PyYAML") in text
    assert "dependencies=['PyYAML==99.1']" in text

    fake = types.ModuleType("rpdeptest_loaded")
    fake.__version__ = "1.2.0"
    monkeypatch.setitem(sys.modules, "rpdeptest_loaded", fake)
    with pytest.raises(VersionMismatch, match="already imported in this worker process"):
        parity.check_worker({"packages": {"rpdeptest-loaded": {
            "version": "2.0", "modules": ["rpdeptest_loaded"]}}}, "3.11", ours)


def test_client_fails_fast_against_the_worker_image():
    image_cp = rp.WORKER_IMAGE_CLOUDPICKLE + ".0"
    parity.check_image(rp.WORKER_IMAGE_PYTHONS[0], {"cloudpickle": image_cp})
    with pytest.raises(VersionMismatch, match=r"Python 3\.9") as info:
        parity.check_image("3.9", {"cloudpickle": image_cp})
    with pytest.raises(VersionMismatch) as info:
        parity.check_image("3.11", {"cloudpickle": "2.2.1"})
    assert "2.2.1" in str(info.value) and rp.worker_image("3.11") in str(info.value)


# -- system packages on a RunPod-like worker: apt-get with its cache (unit, fake apt) ----------


def test_apt_install_streams_output_and_fails_with_apts_text(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "apt-get").write_text(
        f"#!/bin/sh\necho \"$@\" >> {calls}\n"
        "case \"$*\" in *nosuchpkg*) echo 'E: Unable to locate package nosuchpkg'; exit 100;; esac\n"
        "echo 'Setting up fakepkg (1.0) ...'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("RPREMOTE_LOCAL_WORKER", raising=False)
    monkeypatch.setenv("RPREMOTE_DEPS_DIR", str(tmp_path / "deps"))
    monkeypatch.setattr(installer, "APT_LISTS", tmp_path / "lists")  # empty: update first
    lines: list[str] = []
    installer.ensure_system_packages(["fakepkg"], lines.append)
    log = "".join(lines)
    assert "Setting up fakepkg" in log and "installing system packages fakepkg" in log
    update, install = calls.read_text().splitlines()
    assert update.startswith("update")
    assert install.startswith("install -y -q --no-install-recommends -o dir::cache::archives=")
    assert str(tmp_path / "deps" / "apt-archives") in install and install.endswith("fakepkg")
    with pytest.raises(DependencyInstallError, match="Unable to locate package nosuchpkg"):
        installer.ensure_system_packages(["nosuchpkg"], lines.append)


# -- on real workers ----------------------------------------------------------------------------


def test_install_then_cached_install_on_another_worker_process(wheelhouse, tmp_path, capsys):
    deps = tmp_path / "deps"
    env = worker_env(wheelhouse, deps)
    first = remote(workers=(0, 1), idle_timeout=5, env=env, dependencies=["rpdeptest-a==1.0"])(use_a)
    job = first.spawn()
    version, file, pid = job.result(timeout=120)
    assert version == "1.0" and file.startswith(str(deps))
    assert "installing rpdeptest-a==1.0 with pip" in job.logs
    assert "Successfully installed rpdeptest-a-1.0" in job.logs  # pip's own output, streamed
    installed_s = job.execution_time

    # Another endpoint (its env differs) is another worker process; same cache directory.
    second = remote(workers=(0, 1), idle_timeout=5, env={**env, "RPDEPTEST_SECOND": "1"},
                    dependencies=["rpdeptest-a==1.0"])(use_a)
    job2 = second.spawn()
    version2, file2, pid2 = job2.result(timeout=120)
    assert pid2 != pid and (version2, file2) == (version, file)
    assert "using cached install of rpdeptest-a==1.0" in job2.logs
    assert "installing" not in job2.logs and "Successfully installed" not in job2.logs
    job3 = second.spawn()  # same worker again: nothing to do, nothing said
    assert job3.result(timeout=60)[2] == pid2 and "rpremote:" not in job3.logs
    with capsys.disabled():
        print(f"\n[deps] first call with install: {installed_s * 1000:.0f} ms of execution; "
              f"cached install on a new worker: {job2.execution_time * 1000:.0f} ms; "
              f"warm: {job3.execution_time * 1000:.0f} ms")


def test_two_workers_racing_install_once(wheelhouse, tmp_path):
    env = worker_env(wheelhouse, tmp_path / "deps", RPDEPTEST_RACE="1")
    f = remote(workers=(2, 2), idle_timeout=5, env=env, dependencies=["rpdeptest-b==2.0"])(
        _use_b_slowly)
    jobs = [f.spawn(), f.spawn()]
    results = [j.result(timeout=120) for j in jobs]
    assert [r[0] for r in results] == ["2.0", "2.0"]
    assert results[0][1] != results[1][1], "the two jobs ran on one worker: no race to test"
    logs = [j.logs for j in jobs]
    assert sum("Successfully installed rpdeptest-b-2.0" in text for text in logs) == 1
    loser = next(text for text in logs if "Successfully installed" not in text)
    assert "using cached install of rpdeptest-b==2.0" in loser


def _use_b_slowly():
    import rpdeptest_b
    time.sleep(1.0)  # hold the worker, so that the other job is taken by the other worker
    return rpdeptest_b.__version__, os.getpid()


def test_install_failure_fails_the_job_with_pips_text(wheelhouse, tmp_path):
    env = worker_env(wheelhouse, tmp_path / "deps")
    f = remote(workers=(0, 1), idle_timeout=5, env=env,
               dependencies=["rpdeptest-missing==9.9"])(use_a)
    started = time.monotonic()
    with pytest.raises(DependencyInstallError) as info:
        f.spawn().result(timeout=120)
    text = str(info.value)
    assert "No matching distribution found for rpdeptest-missing==9.9" in text
    assert "pip could not install rpdeptest-missing==9.9" in text
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "deps").glob("*/.complete"))  # nothing half-done left usable


def test_a_package_the_worker_has_at_a_compatible_version_is_not_installed(wheelhouse, tmp_path):
    major, minor = httpx.__version__.split(".")[:2]
    env = worker_env(wheelhouse, tmp_path / "deps")
    # httpx==X.Y.999 does not exist (and PIP_NO_INDEX): pip would fail if it ran
    f = remote(workers=(0, 1), idle_timeout=5, env=env,
               dependencies=[f"httpx=={major}.{minor}.999"])(httpx_version)
    job = f.spawn()
    assert job.result(timeout=60) == httpx.__version__
    assert "rpremote:" not in job.logs  # nothing installed, nothing to say
    assert "installing" not in job.logs
    assert not (tmp_path / "deps").exists()


def test_cloudpickle_mismatch_is_refused_before_unpickling(tmp_path, monkeypatch):
    f = remote(workers=(0, 1), idle_timeout=60)(identity)
    marker = tmp_path / "unpickled"
    monkeypatch.setattr(cloudpickle, "__version__", "2.0.0")
    with pytest.raises(VersionMismatch) as info:
        f(TouchOnUnpickle(str(marker)))
    monkeypatch.undo()
    text = str(info.value)
    assert "cloudpickle 2.0.0" in text and f"cloudpickle {cloudpickle.__version__}" in text
    assert not marker.exists(), "the worker unpickled the arguments of a refused request"
    assert f(TouchOnUnpickle(str(marker))) == "TextIOWrapper" and marker.exists()


def test_by_reference_package_major_mismatch_is_refused(monkeypatch):
    f = remote(workers=(0, 1), idle_timeout=60, auto_dependencies=False)(identity)
    real = reqs.installed_version
    monkeypatch.setattr(reqs, "installed_version",
                        lambda dist: "99.0.1" if dist == "httpx" else real(dist))
    with pytest.raises(VersionMismatch) as info:
        f(httpx.URL("http://example.invalid/"))
    text = str(info.value)
    assert "httpx: the client has 99.0.1, this worker has " + httpx.__version__ in text
    monkeypatch.undo()
    assert f(httpx.URL("http://example.invalid/")) == "URL"


def test_system_dependency_present_on_the_local_target_passes_with_a_log_line():
    f = remote(workers=(0, 1), idle_timeout=60, system_dependencies=["coreutils"])(identity)
    job = f.spawn(1)
    assert job.result(timeout=60) == "int"
    assert "local worker: system packages are checked, not installed" in job.logs
    assert "present: coreutils" in job.logs


def test_missing_system_dependency_on_the_local_target_fails_clearly():
    f = remote(workers=(0, 1), idle_timeout=60,
               system_dependencies=["rpremote-no-such-package"])(identity)
    with pytest.raises(DependencyInstallError) as info:
        f(1)
    text = str(info.value)
    assert "rpremote-no-such-package is not installed on this machine" in text
    assert "sudo apt-get install -y rpremote-no-such-package" in text
