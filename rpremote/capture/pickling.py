"""Pickle what a ``@remote`` call sends: the user's code by value, installed code by reference.

cloudpickle already ships ``__main__`` (scripts, notebook cells) by value, but a function from
the user's own ``helpers.py`` is pickled as "import helpers" and fails on the worker, which has
no such file. So while pickling we note (in cloudpickle's own ``reducer_override``) every
function, class or module of a non-installed module that would go by reference, register those
modules by value and pickle again; they are unregistered afterwards, since cloudpickle's
registry is process-wide and other code may rely on it. Plain data never reaches Python code.

When pickling fails we descend to the deepest part that still fails and name it with its path
(``args[0].conn._sock: socket.socket``), because cloudpickle's own message
("cannot pickle 'socket' object") does not say where in the user's data the socket sits.
"""

from __future__ import annotations

import collections
import dis
import io
import functools
import os
import pickle
import site
import sys
import sysconfig
import threading
import types
from collections.abc import Iterator
from typing import Any

import cloudpickle
from cloudpickle.cloudpickle import _should_pickle_by_reference

from ..errors import UnpicklableError
from .tensors import reduce_tensor

__all__ = ["Pickled", "PickleNotes", "dumps", "dumps_oob", "dumps_result", "loads", "by_value_modules",
           "is_installed_module"]

PROTOCOL = 5
# Bounds for the walk and the failure search: deep or cyclic data must not recurse without end,
# and huge data must not make every call slow (what lies beyond is pickled as cloudpickle sees fit).
_MAX_DEPTH = 50
_MAX_ROUNDS = 20  # registering a module by value can reveal modules it uses, and so on
# Leaves that hold no code and cannot fail: skipped without work.
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray, range)
_GLOBAL_OPS = frozenset(dis.opmap[name] for name in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"))
# cloudpickle mutates a process-wide registry; one dumps at a time may change it.
_REGISTRY_LOCK = threading.RLock()
# Buffers smaller than this stay inside the pickle: a separate piece costs more than it saves.
OUT_OF_BAND_MIN_BYTES = 64 * 1024

# Packages every worker runs; never shipped by value, wherever they are installed here.
_ON_EVERY_WORKER = frozenset({"rpremote", "cloudpickle"})

Pickled = tuple[bytes, list[memoryview]]  # the pickle and its out-of-band buffers


class _Buffers(list):
    """A pickle-5 ``buffer_callback``: big buffers out of band (kept here), small ones inside."""

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < OUT_OF_BAND_MIN_BYTES:
            return True
        self.append(raw)
        return False


class PickleNotes:
    """What a pickling shipped, for dependency detection and version parity (``requirements``):
    top-level names of installed modules pickled by reference, and code objects sent by value."""

    def __init__(self) -> None:
        self.by_reference: set[str] = set()
        self.code: list[types.CodeType] = []


def dumps(obj: Any, *, label: str = "value", notes: PickleNotes | None = None) -> bytes:
    """Pickle ``obj`` (protocol 5) with the user's own modules by value, all in one stream.

    Raises UnpicklableError, whose path starts with ``label``, when something cannot be pickled.
    ``notes``, when given, collects what the pickle refers to (see ``PickleNotes``).
    """
    data, _, _ = _pickle_by_value(obj, label, oob=False, notes=notes)
    return data


def dumps_oob(obj: Any, *, label: str = "value", notes: PickleNotes | None = None) -> Pickled:
    """``dumps``, with big buffers (numpy arrays, tensors) out of band: never copied here."""
    data, buffers, _ = _pickle_by_value(obj, label, oob=True, notes=notes)
    return data, buffers


def _pickle_by_value(obj: Any, label: str, oob: bool,
                     notes: PickleNotes | None = None) -> tuple[bytes, list[memoryview], list[str]]:
    """Pickle, noting functions/classes/modules that would go by reference from the user's own
    modules; register those modules by value and pickle again until nothing new turns up.

    The noting happens inside cloudpickle's own ``reducer_override``, so it sees exactly what
    cloudpickle pickles, at C speed for plain data (ints, lists, dicts never reach Python).
    """
    with _REGISTRY_LOCK:
        already = set(cloudpickle.list_registry_pickle_by_value())
        added: list[types.ModuleType] = []
        try:
            for _ in range(_MAX_ROUNDS):
                found: dict[str, types.ModuleType] = {}
                buffers = _Buffers() if oob else None
                try:
                    data = _DetectingPickler.dump_bytes(obj, found, buffers, notes)
                except Exception as err:
                    # Searched while the modules are still registered, so parts pickle as they did.
                    path, culprit, cause = _locate(obj, label, err)
                    reason = str(cause) or type(cause).__name__
                    raise UnpicklableError(path, _type_name(culprit), reason) from cause
                new = [m for name, m in found.items() if name not in already]
                if not new:
                    return data, list(buffers or ()), [m.__name__ for m in added]
                for module in new:
                    cloudpickle.register_pickle_by_value(module)
                    already.add(module.__name__)
                    added.append(module)
            return data, list(buffers or ()), [m.__name__ for m in added]
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


class _DetectingPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, noting the user's modules that it would pickle by reference."""

    def __init__(self, file: io.BytesIO, found: dict[str, types.ModuleType],
                 buffers: _Buffers | None = None, notes: PickleNotes | None = None):
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffers)
        self.found = found
        self.notes = notes

    @classmethod
    def dump_bytes(cls, obj: Any, found: dict[str, types.ModuleType],
                   buffers: _Buffers | None = None, notes: PickleNotes | None = None) -> bytes:
        buf = io.BytesIO()
        cls(buf, found, buffers, notes).dump(obj)
        return buf.getvalue()

    def reducer_override(self, obj: Any) -> Any:
        reduced = reduce_tensor(obj)
        if reduced is not NotImplemented:
            if self.notes is not None:
                self.notes.by_reference.add("torch")  # rebuilt with torch on the other side
            return reduced
        module = _module_by_reference(obj)
        if module is not None:
            if not is_installed_module(module):
                self.found.setdefault(module.__name__, module)
            elif self.notes is not None:
                self.notes.by_reference.add(module.__name__.partition(".")[0])
        elif type(obj) is types.CodeType:
            if self.notes is not None:
                self.notes.code.append(obj)
            return _reduce_code(obj)
        return super().reducer_override(obj)


def _module_by_reference(obj: Any) -> types.ModuleType | None:
    """The module cloudpickle would import on the other side to get ``obj``, if any."""
    if isinstance(obj, types.ModuleType):
        return obj if sys.modules.get(obj.__name__) is obj else None
    if isinstance(obj, types.FunctionType) or isinstance(obj, type):
        try:
            if not _should_pickle_by_reference(obj):
                return None
        except Exception:
            return None
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        return module
    return None


# cloudpickle's own way to pickle a code object, which ``_reduce_code`` wraps.
_CLOUDPICKLE_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's reduction of ``code``, rebuilt with its real file name.

    cloudpickle 3.1.3 names every code object it ships ``<dynamic-code>``; a traceback on
    the worker would then lose the user's file, and the client could not find the lines.
    Its nested code objects (``co_consts``) come through here too.
    """
    rebuild, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return _code_in_file, (rebuild, args, code.co_filename)


def _code_in_file(rebuild: Any, args: tuple[Any, ...], filename: str) -> types.CodeType:
    code = rebuild(*args)
    return code if code.co_filename == filename else code.replace(co_filename=filename)


class _ResultPickler(cloudpickle.Pickler):
    """cloudpickle with tensors as raw buffers (see ``tensors``), code keeping its file name."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = reduce_tensor(obj)
        if reduced is not NotImplemented:
            return reduced
        if type(obj) is types.CodeType:
            return _reduce_code(obj)
        return super().reducer_override(obj)


def dumps_result(obj: Any, *, label: str = "result") -> Pickled:
    """Pickle what a worker sends back, big buffers out of band; no module walk.

    The client has the user's modules, and classes that came here by value are not importable
    here, so cloudpickle already sends them by value; the walk (which costs microseconds per
    object, milliseconds for a batch of thousands) only runs to name the culprit on failure.
    """
    buffers = _Buffers()
    out = io.BytesIO()
    try:
        _ResultPickler(out, protocol=PROTOCOL, buffer_callback=buffers).dump(obj)
    except Exception:
        dumps(obj, label=label)  # raises UnpicklableError with the path
        raise
    return out.getvalue(), list(buffers)


def loads(data: Any, buffers: Any = ()) -> Any:
    """Unpickle what ``dumps``/``dumps_oob``/``dumps_result`` produced."""
    return pickle.loads(data, buffers=buffers)


def by_value_modules(obj: Any) -> list[str]:
    """Names of the modules ``dumps(obj)`` registers to be pickled by value.

    These are the non-installed modules (not ``__main__``, which cloudpickle handles itself)
    whose functions, classes or module objects pickling ``obj`` reaches.
    """
    return _pickle_by_value(obj, "value", oob=False)[2]


def is_installed_module(module: types.ModuleType) -> bool:
    """Whether the worker can be expected to import ``module`` itself (so it goes by reference).

    True for builtins, frozen modules and modules without a file (nothing on disk to ship), for
    the standard library, for anything under site-packages/dist-packages, and for rpremote
    itself and cloudpickle (every worker has them, even when they are an editable checkout or
    on ``PYTHONPATH`` here: cloudpickle's own helpers by value would recurse). ``__main__`` is never
    installed: it is the user's script or notebook.
    """
    name = module.__name__
    if name == "__main__":
        return False
    if name.partition(".")[0] in _ON_EVERY_WORKER:
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
