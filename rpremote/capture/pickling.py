"""Pickle what a ``@remote`` call sends: the user's code by value, installed code by reference.

cloudpickle already ships ``__main__`` (scripts, notebook cells) by value, but a function from
the user's own ``helpers.py`` is pickled as "import helpers" and fails on the worker, which has
no such file. So before pickling we walk what will travel, collect the modules that are not
installed packages, register them with cloudpickle for the duration of one ``dumps`` and
unregister them afterwards: cloudpickle's registry is process-wide and other code may rely on it.

When pickling fails we descend to the deepest part that still fails and name it with its path
(``args[0].conn._sock: socket.socket``), because cloudpickle's own message
("cannot pickle 'socket' object") does not say where in the user's data the socket sits.
"""

from __future__ import annotations

import collections
import dis
import functools
import os
import site
import sys
import sysconfig
import threading
import types
from collections.abc import Iterator
from typing import Any

import cloudpickle

from ..errors import UnpicklableError

__all__ = ["dumps", "loads", "by_value_modules", "is_installed_module"]

PROTOCOL = 5
# Bounds for the walk and the failure search: deep or cyclic data must not recurse without end,
# and huge data must not make every call slow (what lies beyond is pickled as cloudpickle sees fit).
_MAX_DEPTH = 50
_MAX_NODES = 100_000
# Leaves that hold no code and cannot fail: skipped without work.
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray, range)
_GLOBAL_OPS = frozenset(dis.opmap[name] for name in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"))
# cloudpickle mutates a process-wide registry; one dumps at a time may change it.
_REGISTRY_LOCK = threading.RLock()


def dumps(obj: Any, *, label: str = "value") -> bytes:
    """Pickle ``obj`` (protocol 5) with the user's own modules by value.

    Raises UnpicklableError, whose path starts with ``label``, when something cannot be pickled.
    """
    modules = _find_modules(obj)
    with _REGISTRY_LOCK:
        already = cloudpickle.list_registry_pickle_by_value()
        added = [module for name, module in modules.items() if name not in already]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            try:
                return cloudpickle.dumps(obj, protocol=PROTOCOL)
            except Exception as err:
                # Searched while the modules are still registered, so parts pickle as they did.
                path, culprit, cause = _locate(obj, label, err)
                reason = str(cause) or type(cause).__name__
                raise UnpicklableError(path, _type_name(culprit), reason) from cause
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def loads(data: bytes) -> Any:
    """Unpickle what ``dumps`` produced (here for symmetry; cloudpickle does the work)."""
    return cloudpickle.loads(data)


def by_value_modules(obj: Any) -> list[str]:
    """Names of the modules ``dumps(obj)`` registers to be pickled by value.

    These are the non-installed modules (not ``__main__``, which cloudpickle handles itself)
    whose functions, classes or module objects ``obj`` reaches.
    """
    return list(_find_modules(obj))


def is_installed_module(module: types.ModuleType) -> bool:
    """Whether the worker can be expected to import ``module`` itself (so it goes by reference).

    True for builtins, frozen modules and modules without a file (nothing on disk to ship), for
    the standard library, for anything under site-packages/dist-packages, and for rpremote
    itself (the worker runs it, even when it is an editable checkout here). ``__main__`` is never
    installed: it is the user's script or notebook.
    """
    name = module.__name__
    if name == "__main__":
        return False
    if name == "rpremote" or name.startswith("rpremote."):
        return True
    if name in sys.builtin_module_names:
        return True
    file = getattr(module, "__file__", None)
    # A namespace package has no __file__ but does have directories on disk.
    locations = [file] if file else list(getattr(module, "__path__", None) or [])
    if not locations:
        return True
    return all(_is_installed_path(str(location)) for location in locations)


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    """Directories whose contents are the interpreter's or installed packages'."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # some embedded/virtualenv builds lack these
        pass
    return tuple(os.path.realpath(root) for root in roots if root)


@functools.lru_cache(maxsize=4096)
def _is_installed_path(path: str) -> bool:
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(real == root or real.startswith(root + os.sep) for root in _installed_roots())


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle pickles this function or class as "import module; getattr".

    That is so when it is reachable by its qualified name from an installed module; its code and
    globals then do not travel, so the walk need not look inside.
    """
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None or not is_installed_module(module):
        return False
    target: Any = module
    for part in obj.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is obj


def _global_names(code: types.CodeType) -> dict[str, None]:
    """Global names the code uses, nested functions included: exactly what cloudpickle ships."""
    names = {ins.argval: None for ins in dis.get_instructions(code) if ins.opcode in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return names


def _function_globals(fn: types.FunctionType) -> dict[str, Any]:
    return {name: fn.__globals__[name] for name in _global_names(fn.__code__) if name in fn.__globals__}


def _function_closure(fn: types.FunctionType) -> dict[str, Any]:
    values = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            values[name] = cell.cell_contents
        except ValueError:  # empty cell: the variable is not assigned yet
            pass
    return values


def _attributes(obj: Any) -> dict[str, Any]:
    """Instance attributes from ``__dict__`` and ``__slots__`` (what default pickling sends)."""
    attrs: dict[str, Any] = {}
    own = getattr(obj, "__dict__", None)
    if isinstance(own, dict):
        attrs.update(own)
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{cls.__name__.lstrip('_')}{name}"  # private names are mangled
            try:
                attrs[name] = getattr(obj, name)
            except AttributeError:  # slot never set
                pass
    return attrs


class _ModuleFinder:
    """Walks what will be pickled by value and collects the non-installed modules it uses."""

    def __init__(self) -> None:
        self.found: dict[str, types.ModuleType] = {}
        self.seen: set[int] = set()
        self.budget = _MAX_NODES

    def note(self, module_name: Any) -> None:
        module = sys.modules.get(module_name) if isinstance(module_name, str) else None
        if module is not None and module_name != "__main__" and not is_installed_module(module):
            self.found.setdefault(module_name, module)

    def visit(self, obj: Any, depth: int = 0) -> None:
        self.budget -= 1
        if isinstance(obj, _SCALARS) or depth > _MAX_DEPTH or self.budget < 0 or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        try:
            for child in self.children(obj):
                if self.budget < 0:
                    break
                self.visit(child, depth + 1)
        except Exception:
            pass  # odd objects (proxies, broken __getattr__): pickling will judge them

    def children(self, obj: Any) -> Iterator[Any]:
        if isinstance(obj, types.ModuleType):
            # A module object used as a global travels whole when it is the user's.
            if obj.__name__ == "__main__" or is_installed_module(obj):
                return
            if sys.modules.get(obj.__name__) is obj:
                self.note(obj.__name__)
            yield from (v for k, v in vars(obj).items() if k != "__builtins__")
        elif isinstance(obj, type):
            if _by_reference(obj):
                return
            self.note(obj.__module__)
            yield type(obj)
            yield from obj.__bases__
            for value in vars(obj).values():
                if isinstance(value, (staticmethod, classmethod)):
                    yield value.__func__
                elif isinstance(value, property):
                    yield from (value.fget, value.fset, value.fdel)
                else:
                    yield value
        elif isinstance(obj, types.FunctionType):
            if _by_reference(obj):
                return
            self.note(obj.__module__)
            yield from _function_globals(obj).values()
            yield from _function_closure(obj).values()
            yield from obj.__defaults__ or ()
            yield from (obj.__kwdefaults__ or {}).values()
            yield from vars(obj).values()  # e.g. __wrapped__ set by functools.wraps
            yield from obj.__annotations__.values()
        elif isinstance(obj, types.MethodType):
            yield obj.__func__
            yield obj.__self__
        elif isinstance(obj, functools.partial):
            yield obj.func
            yield from obj.args
            yield from obj.keywords.values()
        else:
            yield type(obj)  # a user class (or subclass of list, dict...) travels with its instances
            if isinstance(obj, dict):
                yield from obj.keys()
                yield from obj.values()
            elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
                yield from obj
            elif not _by_reference(type(obj)):
                yield from _attributes(obj).values()


def _find_modules(obj: Any) -> dict[str, types.ModuleType]:
    finder = _ModuleFinder()
    finder.visit(obj)
    return finder.found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parts(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The parts pickling ``obj`` pickles, each with its path, for naming what fails.

    Containers leave out scalars before building paths: they cannot fail, and may be millions.
    """
    if isinstance(obj, dict):
        yield from ((f"{path}[{_short(k)}]", v) for k, v in obj.items() if not isinstance(v, _SCALARS))
        yield from ((f"{path}<key {_short(k)}>", k) for k in obj if not isinstance(k, _SCALARS))
    elif isinstance(obj, (list, tuple, collections.deque)):
        yield from ((f"{path}[{i}]", v) for i, v in enumerate(obj) if not isinstance(v, _SCALARS))
    elif isinstance(obj, (set, frozenset)):
        yield from ((f"{path}{{{_short(v)}}}", v) for v in obj if not isinstance(v, _SCALARS))
    elif isinstance(obj, types.FunctionType):
        yield from ((f"{path}.globals.{k}", v) for k, v in _function_globals(obj).items())
        yield from ((f"{path}.closure.{k}", v) for k, v in _function_closure(obj).items())
        yield from ((f"{path}.defaults[{i}]", v) for i, v in enumerate(obj.__defaults__ or ()))
        yield from ((f"{path}.kwdefaults[{k!r}]", v) for k, v in (obj.__kwdefaults__ or {}).items())
        yield from ((f"{path}.{k}", v) for k, v in vars(obj).items())
    elif isinstance(obj, types.MethodType):
        yield f"{path}.__self__", obj.__self__
        yield f"{path}.__func__", obj.__func__
    elif isinstance(obj, functools.partial):
        yield f"{path}.func", obj.func
        yield from ((f"{path}.args[{i}]", v) for i, v in enumerate(obj.args))
        yield from ((f"{path}.keywords[{k!r}]", v) for k, v in obj.keywords.items())
    elif isinstance(obj, type):
        skip = ("__dict__", "__weakref__")  # descriptors cloudpickle leaves out
        yield from ((f"{path}.{k}", v) for k, v in vars(obj).items() if k not in skip)
    elif isinstance(obj, types.ModuleType):
        yield from ((f"{path}.{k}", v) for k, v in vars(obj).items() if k != "__builtins__")
    else:
        yield from ((f"{path}.{k}", v) for k, v in _attributes(obj).items())


def _locate(obj: Any, path: str, err: Exception) -> tuple[str, Any, Exception]:
    """Go into the first part that fails, until none of the parts fails (or depth runs out)."""
    for _ in range(_MAX_DEPTH):
        failing = None
        try:
            for part_path, part in _parts(obj, path):
                if isinstance(part, _SCALARS):
                    continue
                try:
                    cloudpickle.dumps(part, protocol=PROTOCOL)
                except Exception as part_err:
                    failing = part_path, part, part_err
                    break
        except Exception:
            pass  # cannot look further inside: what failed so far is the answer
        if failing is None:
            break
        path, obj, err = failing
    return path, obj, err


def _type_name(obj: Any) -> str:
    """``socket.socket``, ``_thread.lock``; just ``generator`` for builtins."""
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
