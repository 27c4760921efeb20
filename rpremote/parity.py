"""Version parity: can this worker read what this client pickled?

cloudpickle's format changes between minor versions, and an object pickled by reference
(``numpy.ndarray``, ``torch.nn.Linear``) is rebuilt from the worker's own package, which
needs the same major version (major.minor for 0.x) to mean the same thing. The client sends
its versions (``capture.requirements.client_environment``); the worker checks them after
installing dependencies and before unpickling anything (``check_worker``), and the client
checks them against a known worker image before sending (``check_image``). Both raise
``VersionMismatch`` naming both sides and the fix. Stdlib only: used by the worker.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import types
from typing import Any

from . import platform as rp
from .errors import VersionMismatch
from .versions import release, same_minor, same_series


def _series(version: str, minor: bool = False) -> str:
    parts = release(version) or ()
    parts = parts + (0,) * (2 - len(parts))
    if minor or parts[0] == 0:
        return f"{parts[0]}.{parts[1]}"
    return f"{parts[0]}"


def cloudpickle_message(client: str, worker: str, python: str, where: str = "this worker") -> str:
    return (
        f"the client pickles with cloudpickle {client} but {where} has cloudpickle {worker}; "
        f"a pickle is read reliably only by the same major.minor. Fix: on the client, "
        f"pip install 'cloudpickle=={_series(worker, True)}.*', or run workers with cloudpickle "
        f"{_series(client, True)} (on RunPod the worker image {rp.worker_image(python)} has "
        f"cloudpickle {rp.WORKER_IMAGE_CLOUDPICKLE})"
    )


def check_image(python: str, client_env: dict[str, Any]) -> None:
    """Before sending to RunPod: the worker image's Python and cloudpickle (``platform``)."""
    if python not in rp.WORKER_IMAGE_PYTHONS:
        raise VersionMismatch(
            f"the client runs Python {python} but rpremote's worker images exist for Python "
            f"{', '.join(rp.WORKER_IMAGE_PYTHONS)}; functions travel by value and need the same "
            f"minor version: use a client with one of those")
    theirs = str(client_env.get("cloudpickle") or "")
    if theirs and not same_minor(theirs, rp.WORKER_IMAGE_CLOUDPICKLE):
        raise VersionMismatch(cloudpickle_message(
            theirs, rp.WORKER_IMAGE_CLOUDPICKLE, python,
            where=f"the worker image {rp.worker_image(python)}"))


_loaded_versions: dict[tuple[str, str], str | None] = {}


def _loaded_version(dist: str, module: types.ModuleType) -> str | None:
    """The version of ``dist`` that ``module`` (imported already) was loaded from."""
    file = getattr(module, "__file__", None) or ""
    key = (dist, file)
    if key in _loaded_versions:
        return _loaded_versions[key]
    version = None
    if file:
        where = os.path.dirname(file)
        if os.path.basename(file).startswith("__init__."):
            where = os.path.dirname(where)  # a package: its dist-info sits next to its directory
        version = next((d.version for d in md.distributions(name=dist, path=[where])), None)
    if version is None and isinstance(getattr(module, "__version__", None), str):
        version = module.__version__
    _loaded_versions[key] = version
    return version


def worker_version(dist: str, modules: list[str]) -> tuple[str | None, bool]:
    """``(version, already imported)`` of ``dist`` as this process would use it."""
    for name in modules:
        module = sys.modules.get(name)
        if module is not None:
            version = _loaded_version(dist, module)
            if version is not None:
                return version, True
    try:
        return md.version(dist), False
    except md.PackageNotFoundError:
        return None, False


def check_worker(client_env: Any, python: str, cloudpickle_version: str) -> None:
    """On the worker, before unpickling: refuse what would not unpickle to the same thing."""
    if not isinstance(client_env, dict):
        return
    theirs = client_env.get("cloudpickle")
    if isinstance(theirs, str) and not same_minor(theirs, cloudpickle_version):
        raise VersionMismatch(cloudpickle_message(theirs, cloudpickle_version, python))
    packages = client_env.get("packages")
    problems = []
    for dist, info in (packages.items() if isinstance(packages, dict) else ()):
        if not isinstance(info, dict) or not isinstance(info.get("version"), str):
            continue
        modules = [m for m in info.get("modules") or () if isinstance(m, str)] or [dist]
        want = info["version"]
        have, loaded = worker_version(dist, modules)
        if have is None or same_series(want, have):
            continue  # missing: unpickling says which module, and auto-detection installs it
        if loaded:
            fix = (f"{dist} {have} is already imported in this worker process, which an install "
                   f"cannot change: use {dist}=={have} on the client (pip install "
                   f"'{dist}=={have}'), or a worker image with {dist} {_series(want)}")
        else:
            fix = (f"pass dependencies=['{dist}=={want}'] so the worker installs it before the "
                   f"call, or use {dist} {_series(have)}.x on the client")
        problems.append(f"{dist}: the client has {want}, this worker has {have}. Objects of "
                        f"{dist} travel by reference and need the same major version (major.minor "
                        f"for 0.x). Fix: {fix}")
    if problems:
        raise VersionMismatch("; ".join(problems))
