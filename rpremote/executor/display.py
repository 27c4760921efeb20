"""Rich outputs on the worker: ``display(...)`` and matplotlib figures become display events.

A worker runs jobs in threads, so, as for stdout (``streams``), each job thread registers a
sink and a display goes to the sink of the thread that makes it (threads the job starts go to
the only running job, when there is exactly one). Outside a job, everything behaves as it
would without rpremote.

What is hooked, once per process (``install``), without importing anything heavy:

- ``display`` becomes a builtin, as in IPython, so a cell or a function written in a notebook
  that calls ``display(x)`` bare runs on a worker without IPython.
- ``IPython.display.display`` / ``publish_display_data`` (and ``update_display``, display
  handles, ``display_html`` and kin, which call them) are patched when IPython is imported, so
  code that imports them works as in a notebook. Objects are formatted by IPython's formatter
  when IPython is importable, else by their ``_repr_mimebundle_`` / ``_repr_html_`` / ... and
  ``repr``.
- matplotlib, when imported, gets the ``rpremote.executor.mpl_backend`` backend (Agg drawing):
  ``plt.show()`` and ``fig.show()`` send the open figures as ``image/png`` and close them.
  ``flush_figures`` (called at the end of a ``%%runpod`` cell) sends what is still open, as the
  notebook's inline backend does. A plain function's figures are sent only when it shows them.
  pyplot's figure list is one per process: on a worker running several jobs at once, a
  ``plt.show()`` shows every job's open figures.

Stdlib only at import.
"""

from __future__ import annotations

import base64
import builtins
import importlib.abc
import io
import sys
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .streams import ThreadSinks

# sink(data, metadata, display_id, update)
Sink = Callable[[dict[str, Any], dict[str, Any], "str | None", bool], None]

MPL_BACKEND = "module://rpremote.executor.mpl_backend"

_sinks: ThreadSinks[Sink] = ThreadSinks()
_lock = threading.Lock()
_installed = False
_originals: dict[str, Any] = {}  # IPython's own display and publish_display_data
_formatter: Any = None  # IPython's DisplayFormatter, or False when IPython is not importable

_REPR_METHODS = (
    ("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"), ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"), ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"), ("application/javascript", "_repr_javascript_"),
    ("application/pdf", "_repr_pdf_"),
)


def _sink() -> Sink | None:
    return _sinks.current()


@contextmanager
def captured(sink: Sink) -> Iterator[None]:
    """Send this thread's displays to ``sink`` inside the block."""
    install()
    with _sinks.registered(sink):
        yield


# -- display ----------------------------------------------------------------------------------


class DisplayHandle:
    """What ``display(..., display_id=...)`` returns when IPython is not there to make one."""

    def __init__(self, display_id: str):
        self.display_id = display_id

    def __repr__(self) -> str:
        return f"<DisplayHandle display_id={self.display_id}>"

    def display(self, obj: Any, **kwargs: Any) -> None:
        display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj: Any, **kwargs: Any) -> None:
        display(obj, display_id=self.display_id, update=True, **kwargs)


def display(*objs: Any, include: Any = None, exclude: Any = None, metadata: dict | None = None,
            transient: dict | None = None, display_id: Any = None, raw: bool = False,
            clear: bool = False, **kwargs: Any) -> Any:
    """IPython's ``display``, sending to the job's caller (outside a job: IPython's, or print)."""
    sink = _sink()
    if sink is None:
        original = _originals.get("display")
        if original is not None:
            return original(*objs, include=include, exclude=exclude, metadata=metadata,
                            transient=transient, display_id=display_id, raw=raw, clear=clear,
                            **kwargs)
        print(*objs)
        return None
    if display_id is True:
        display_id = uuid.uuid4().hex
    display_id = display_id or (transient or {}).get("display_id")
    update = bool(kwargs.get("update"))
    if not objs and display_id:
        objs, raw = ({},), True  # an empty output to be updated later
    for obj in objs:
        if raw:
            data, md = dict(obj), {}
        else:
            data, md = mime_bundle(obj, include, exclude)
        if not data:
            continue  # e.g. _ipython_display_ displayed something itself
        if metadata:
            md = {**md, **metadata}
        sink(jsonable(data), md, display_id, update)
    if display_id:
        return _handle(display_id)
    return None


def publish_display_data(data: dict[str, Any], metadata: dict | None = None, source: Any = None,
                         *, transient: dict | None = None, **kwargs: Any) -> None:
    """IPython's ``publish_display_data``, sending to the job's caller."""
    sink = _sink()
    if sink is None:
        original = _originals.get("publish_display_data")
        if original is not None:
            return original(data, metadata, source, transient=transient, **kwargs)
        print(data.get("text/plain", data))
        return None
    sink(jsonable(dict(data)), dict(metadata or {}), (transient or {}).get("display_id"),
         bool(kwargs.get("update")))
    return None


def _handle(display_id: str) -> Any:
    functions = sys.modules.get("IPython.core.display_functions")
    cls = getattr(functions, "DisplayHandle", None) or DisplayHandle
    return cls(display_id)


def mime_bundle(obj: Any, include: Any = None, exclude: Any = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` as a notebook would show ``obj``: IPython's formatter when IPython
    is importable (with figures as PNG, as the inline backend registers), else the object's
    ``_repr_*_`` methods and ``repr``."""
    formatter = _ipython_formatter()
    if formatter:
        data, md = formatter.format(obj, include=include, exclude=exclude)
        return dict(data), dict(md)
    return _plain_bundle(obj, include, exclude)


def _ipython_formatter() -> Any:
    global _formatter
    if _formatter is None:
        try:
            from IPython.core.formatters import DisplayFormatter
        except ImportError:
            _formatter = False
        else:
            formatter = DisplayFormatter()
            formatter.formatters["image/png"].for_type_by_name(
                "matplotlib.figure", "Figure", figure_png)
            _formatter = formatter
    return _formatter


def _plain_bundle(obj: Any, include: Any, exclude: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    data: dict[str, Any] = {}
    md: dict[str, Any] = {}
    if not isinstance(obj, type):  # a class's _repr_html_ is a function, not its repr
        bundle = _call_repr(obj, "_repr_mimebundle_", include=include, exclude=exclude)
        if isinstance(bundle, tuple) and len(bundle) == 2:
            bundle, extra = bundle
            md.update(extra or {})
        if isinstance(bundle, dict):
            data.update(bundle)
        for mime, attr in _REPR_METHODS:
            if mime in data:
                continue
            value = _call_repr(obj, attr)
            if isinstance(value, tuple) and len(value) == 2:
                value, md[mime] = value
            if value is not None:
                data[mime] = value
        if "image/png" not in data and _is_figure(obj):
            png = figure_png(obj)
            if png is not None:
                data["image/png"] = png
    data.setdefault("text/plain", repr(obj))
    if include:
        data = {k: v for k, v in data.items() if k in include}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    return data, md


def _call_repr(obj: Any, attr: str, **kwargs: Any) -> Any:
    method = getattr(obj, attr, None)
    if not callable(method):
        return None
    try:
        return method(**kwargs)
    except Exception as e:  # as IPython does: say so, show the rest
        print(f"display: {type(obj).__name__}.{attr}() raised {type(e).__name__}: {e}",
              file=sys.stderr)
        return None


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Binary values (PNG, JPEG, PDF) as base64 text, as Jupyter's messages carry them."""
    return {mime: base64.b64encode(v).decode("ascii") if isinstance(v, (bytes, bytearray))
            else v for mime, v in data.items()}


# -- matplotlib -------------------------------------------------------------------------------


def _is_figure(obj: Any) -> bool:
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def figure_png(fig: Any) -> bytes | None:
    """A figure as PNG, as the inline backend draws it (nothing for an empty figure)."""
    if not fig.axes and not fig.lines:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=fig.dpi,
                facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor())
    return buf.getvalue()


def show_figure(fig: Any) -> None:
    """``fig.show()`` on a worker: send it to the job's caller."""
    if _sink() is not None:
        display(fig)


def flush_figures(skip: Any = None) -> None:
    """Send every open pyplot figure (except ``skip``) to the job's caller, then close them.

    Outside a job nothing is sent or closed. ``skip`` is a figure that is shown another way
    (the cell's value): it is closed, not sent.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or _sink() is None:
        return
    from matplotlib._pylab_helpers import Gcf

    managers = Gcf.get_all_fig_managers()
    try:
        for manager in managers:
            if manager.canvas.figure is not skip:
                try:
                    display(manager.canvas.figure)
                except Exception as e:  # one figure that cannot be drawn: say so, go on
                    print(f"rpremote: figure {manager.num} could not be shown: "
                          f"{type(e).__name__}: {e}", file=sys.stderr)
    finally:
        for manager in managers:
            pyplot.close(manager.canvas.figure)


# -- hooks ------------------------------------------------------------------------------------


def install() -> None:
    """The builtin ``display``, and hooks that patch IPython and matplotlib when they are
    imported (now, if they already are). Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    if not hasattr(builtins, "display"):
        builtins.display = display  # type: ignore[attr-defined]
    sys.meta_path.insert(0, _AfterImport({
        "IPython.core.display_functions": _patch_ipython,
        "matplotlib": _use_backend,
    }))
    if "IPython.core.display_functions" in sys.modules:
        _patch_ipython(sys.modules["IPython.core.display_functions"])
    if "matplotlib" in sys.modules:
        _use_backend(sys.modules["matplotlib"])


def _patch_ipython(functions: Any) -> None:
    if functions.display is display:
        return
    _originals["display"] = functions.display
    _originals["publish_display_data"] = functions.publish_display_data
    for name in ("IPython.core.display_functions", "IPython.core.display", "IPython.display"):
        module = sys.modules.get(name)
        if module is None:
            continue
        if getattr(module, "display", None) is _originals["display"]:
            module.display = display
        if getattr(module, "publish_display_data", None) is _originals["publish_display_data"]:
            module.publish_display_data = publish_display_data


def _use_backend(matplotlib: Any) -> None:
    """Agg drawing, and show() sends figures: whatever MPLBACKEND the worker inherited (a
    kernel sets the inline backend's, a desktop session may pick a GUI one that would block)."""
    try:
        matplotlib.use(MPL_BACKEND)
    except Exception as e:  # e.g. a matplotlib too old for this backend module
        print(f"rpremote: figures will not be sent back (matplotlib backend: {e})",
              file=sys.__stderr__)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``hooks[name](module)`` right after module ``name`` is first imported."""

    def __init__(self, hooks: dict[str, Callable[[Any], None]]):
        self.hooks = hooks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ThenLoader(spec.loader, hook)
        return spec


class _ThenLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, then: Callable[[Any], None]):
        self.loader = loader
        self.then = then

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # The module sees its own loader (resources, reload), never this wrapper.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            self.then(module)
        except Exception as e:
            print(f"rpremote: could not hook {module.__name__} for rich outputs: {e}",
                  file=sys.__stderr__)
