"""Which third-party packages a call needs on the worker, pinned to the versions installed here.

Detection reads what pickling actually shipped (``PickleNotes``): installed modules, functions
and classes that went *by reference* (a global ``np``, ``torch.nn.Linear``, an argument's
class), and the ``import`` statements inside every function that went *by value* (the
function, nested functions, and the user's own modules' functions it pulls in). Their
top-level module names map to distributions (``sklearn`` -> ``scikit-learn``), pinned to this
environment's versions: ``numpy==2.4.6``. Left out: the standard library, the user's own
(non-installed, or editable) modules, packages installed from a URL or a local directory
(there is no index version to pin), and what every worker has (rpremote, runpod, cloudpickle).
Imports done by name at run time (``importlib.import_module("x")``) are not seen: list those
in ``dependencies=``.

The same notes give the client's side of version parity: the versions of the distributions
pickled by reference, which the worker must be able to import at a compatible version.
"""

from __future__ import annotations

import dis
import functools
import importlib.metadata as md
import sys
import types
from typing import Any, Iterable

import cloudpickle

from .. import platform as rp
from ..versions import Requirement, normalize_name
from .pickling import PickleNotes, is_installed_module

__all__ = ["PickleNotes", "detect", "requirements_for", "client_environment", "imported_names"]

_IMPORT_NAME = dis.opmap["IMPORT_NAME"]
_BASE = frozenset(normalize_name(d) for d in rp.WORKER_BASE_DISTRIBUTIONS)


@functools.lru_cache(maxsize=8192)
def imported_names(code: types.CodeType) -> frozenset[str]:
    """Top-level names of the absolute imports in ``code`` and the code nested in it."""
    names: set[str] = set()
    consts: list[Any] = []
    for ins in dis.get_instructions(code):
        if ins.opcode == _IMPORT_NAME:
            level = consts[-2] if len(consts) >= 2 else 0
            if not level and ins.argval:
                names.add(ins.argval.partition(".")[0])
        consts.append(ins.argval if ins.opname == "LOAD_CONST" else None)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= imported_names(const)
    return frozenset(names)


def _is_third_party(top: str) -> bool:
    """A top-level module name that can belong to an installed distribution."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__main__":
        return False
    if top == "rpremote":
        return False
    module = sys.modules.get(top)
    return module is None or is_installed_module(module)  # not the user's own code


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()  # ~0.2 s with a few hundred packages: asked once


def _provides(dist: md.Distribution, top: str) -> bool:
    text = dist.read_text("top_level.txt")
    if text is not None:
        return top in text.split()
    for path in dist.files or ():
        first = path.parts[0] if path.parts else ""
        if first == top or (len(path.parts) == 1 and first.split(".")[0] == top):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def distributions_of(top: str) -> tuple[str, ...]:
    """Names of the installed distributions providing top-level module ``top``.

    The distribution named like the module is tried first (numpy, torch, httpx: a lookup of a
    millisecond); only other names (``yaml`` -> PyYAML) build the full map, once per process.
    """
    try:
        dist = md.distribution(top)
    except md.PackageNotFoundError:
        dist = None
    if dist is not None and _provides(dist, top):
        return (dist.metadata["Name"],)
    return tuple(dict.fromkeys(_packages_distributions().get(top, ())))


@functools.lru_cache(maxsize=1024)
def installed_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1024)
def _from_index(dist: str) -> bool:
    """False for a distribution installed from a URL or a directory (editable or not)."""
    try:
        text = md.distribution(dist).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return False
    return not text  # pip and uv write direct_url.json only for URL and directory installs


def _pins(tops: Iterable[str]) -> dict[str, tuple[str, str, list[str]]]:
    """normalized name -> (name, version, top-level modules) for the pinnable distributions."""
    out: dict[str, tuple[str, str, list[str]]] = {}
    for top in sorted(set(tops)):
        if not _is_third_party(top):
            continue
        for dist in distributions_of(top):
            key = normalize_name(dist)
            version = installed_version(dist)
            if key in _BASE or version is None or not _from_index(dist):
                continue
            if key in out:
                out[key][2].append(top)
            else:
                out[key] = (dist, version, [top])
    return out


def detect(notes: PickleNotes) -> dict[str, str]:
    """normalized distribution name -> ``name==version`` for what the pickled call needs."""
    tops = set(notes.by_reference)
    for code in notes.code:
        tops |= imported_names(code)
    return {key: f"{name}=={version}" for key, (name, version, _) in _pins(tops).items()}


def requirements_for(notes: PickleNotes | None, explicit: Iterable[Requirement]) -> list[str]:
    """Detected pins (none when ``notes`` is None: detection is off), with ``explicit``
    requirements added or replacing a pin of the same distribution; sorted."""
    found = detect(notes) if notes is not None else {}
    for req in explicit:
        found[req.key] = str(req)
    return sorted(found.values(), key=str.lower)


def client_environment(notes: PickleNotes) -> dict[str, Any]:
    """What the worker must match: cloudpickle's version and the distributions (with their
    top-level modules) whose objects were pickled by reference."""
    packages = {name: {"version": version, "modules": sorted(tops)}
                for name, version, tops in _pins(notes.by_reference).values()}
    return {"cloudpickle": cloudpickle.__version__, "packages": packages}
