"""Live job views in a notebook (ipywidgets 8): one compact view per call, ``%%runpod`` cell or map.

``%load_ext rpremote`` calls ``install``, which gives ``report.set_default_factory`` a factory
making these views (the core never imports this module). Without the extension, without
ipywidgets, or in a terminal IPython, a notebook gets the terminal reporter's plain lines.

A view shows the function or cell name, the target and GPU, the status (queued / starting /
running on worker W / done / failed / cancelled) with the elapsed time, ticking while the job
lives, the delay and execution times, the estimated cost (execution time × the GPU's flex
price; on the local target, what RunPod would charge; none for CPU), a Cancel button and a
collapsed log area. A map has one view: a progress bar, done / failed / running counts,
items/s, and one Cancel button for all its jobs.

Where a job's output goes, the rule:

- While the cell that started the job is still running, the output goes to that cell's own
  stdout / stderr, prefixed ``[remote:NAME]`` as in a terminal. Blocking calls, maps and
  ``%%runpod`` cells print live, and saved notebooks and nbval see the output.
- Output that arrives after that cell ended (a spawned job followed later, an ``--async``
  cell, a job followed from a thread) goes to the view's log area, never to whichever cell
  runs then. The area keeps the last ``LOG_KEEP_CHARS`` (64 KiB) and says how much it
  dropped; ``job.logs`` keeps more.

A spawned job's view stays live without anyone following the job: the view's ticker asks the
platform for the status when nothing was heard for ``REFRESH_AFTER_S``. A blocking call's view
appears only once the call has run for ``SHOW_AFTER_S`` (the terminal likewise shows no status
line for a quick call), so a loop of quick calls does not fill the notebook with views.

The Cancel button during a blocking call: while a cell blocks, ipykernel's main thread runs
no comm handler, so a click would wait behind the running ``execute_request`` (the cell then
ends by itself, and the click comes too late). ipykernel 7 reads the shell channel in a thread
of its own and, for each incoming comm message, asks the comm where to route it
(``_reply_subshell_for``) before queueing it. The Cancel button's comm answers that question
as before but, when the message is a click, first starts the cancel on a thread of its own:
the click takes effect at once, whatever the main thread is doing, and whichever shell or
subshell the frontend addressed (JupyterLab ≥ 4.4 may send comms over a subshell, but
ipykernel 7.4 routes a comm's messages back to the shell it last published from, the main
one here, so that alone would not help). The hook is private to ipykernel; where it is
missing the button still works through ``on_click`` whenever the main thread is free (an
idle kernel, a cell awaiting), and the kernel's interrupt cancels a blocking call's job.
Cancelling is idempotent, so a click seen by both paths cancels once.
"""

from __future__ import annotations

import contextvars
import html
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from .. import displays
from .. import platform as rp
from ..report import ReportContext, TerminalReporter, _retry_phrase, set_default_factory

LOG_KEEP_CHARS = 64 * 1024
SHOW_AFTER_S = 1.0  # a blocking call's view appears once it has run this long
TICK_S = 0.5  # how often live views are brought up to date (elapsed time, logs)
REFRESH_AFTER_S = 1.0  # a job nobody follows: ask its status when nothing was heard this long
MAP_REDRAW_S = 0.2  # a map redraws at most this often on its own updates (the ticker does the rest)

_END_WORDS = {
    rp.COMPLETED: ("done", "done"), rp.FAILED: ("failed", "failed"),
    rp.CANCELLED: ("cancelled", "cancelled"), rp.TIMED_OUT: ("timed-out", "timed out"),
    "EXPIRED": ("expired", "expired"), "STOPPED": ("stopped", "stopped"),
    "UNKNOWN": ("unknown", "outcome unknown"),  # its emulator stopped under it
}


# -- installing ---------------------------------------------------------------------------------


class _Cells:
    """Which cell runs now, from IPython's ``pre_run_cell`` / ``post_run_cell`` events: a fresh
    token per cell run, None between cells."""

    def __init__(self) -> None:
        self.current: object | None = None

    def pre(self, info: Any = None) -> None:
        self.current = object()

    def post(self, result: Any = None) -> None:
        self.current = None


_cells = _Cells()
_hooked: Any = None  # the shell whose cell events we follow


def install(ipython: Any = None) -> bool:
    """Make every remote call, cell and map of this kernel report through a live view.

    Returns False, leaving the terminal lines, when ipywidgets is missing or the shell is not
    a kernel (a terminal IPython cannot show widgets).
    """
    global _hooked
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    if ipython is None:
        from IPython import get_ipython

        ipython = get_ipython()
    if ipython is None or getattr(ipython, "kernel", None) is None:
        return False
    if _hooked is not ipython:
        ipython.events.register("pre_run_cell", _cells.pre)
        ipython.events.register("post_run_cell", _cells.post)
        _hooked = ipython
        if _cells.current is None:
            _cells.pre()  # the cell loading the extension is running: it ends with post_run_cell
    set_default_factory(_make_reporter)
    return True


def uninstall() -> None:
    """Back to the terminal lines."""
    global _hooked
    set_default_factory(None)
    if _hooked is not None:
        for event, fn in (("pre_run_cell", _cells.pre), ("post_run_cell", _cells.post)):
            try:
                _hooked.events.unregister(event, fn)
            except ValueError:
                pass
        _hooked = None


def show_every_view(always: bool) -> None:
    """``%runpod config views=always``: a view for every call, quick ones too (a notebook whose
    outputs must not depend on how fast its calls were, e.g. under nbval); ``views=slow``
    (the default): a blocking call's view only once it has run ``SHOW_AFTER_S``."""
    global SHOW_AFTER_S
    SHOW_AFTER_S = 0.0 if always else 1.0


def _make_reporter(context: ReportContext) -> "_View | None":
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return MapView(context) if context.kind == "map" else JobView(context)


# -- pieces ------------------------------------------------------------------------------------


class LogBuffer:
    """The last ``keep`` characters of a job's output, and how many were dropped before them."""

    def __init__(self, keep: int = LOG_KEEP_CHARS):
        self.keep = keep
        self._parts: deque[str] = deque()
        self._chars = 0
        self.dropped = 0
        self.version = 0  # bumped on every change, so a view knows when to redraw

    def append(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self._chars += len(text)
        self.version += 1
        while self._chars > self.keep:
            excess = self._chars - self.keep
            first = self._parts[0]
            if len(first) <= excess:
                self._parts.popleft()
                cut = len(first)
            else:
                self._parts[0] = first[excess:]
                cut = excess
            self._chars -= cut
            self.dropped += cut

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __len__(self) -> int:
        return self._chars


class _Ticker:
    """One daemon thread bringing every live view up to date; it ends when none is left."""

    def __init__(self) -> None:
        self._views: set[_View] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, view: "_View") -> None:
        with self._lock:
            self._views.add(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rpremote-views",
                                                daemon=True)
                self._thread.start()

    def discard(self, view: "_View") -> None:
        with self._lock:
            self._views.discard(view)

    def _run(self) -> None:
        while True:
            time.sleep(TICK_S)
            with self._lock:
                views = list(self._views)
                if not views:
                    self._thread = None
                    return
            for view in views:
                try:
                    view.tick()
                except Exception as e:  # a view must never take the others down
                    self.discard(view)
                    print(f"rpremote: a job view stopped updating ({type(e).__name__}: {e})",
                          file=sys.__stderr__)


_ticker = _Ticker()


TAP_SHELL_CHANNEL = True  # tests turn it off to try the plain on_click path


def _is_click(data: Any) -> bool:
    return (isinstance(data, dict) and data.get("method") == "custom"
            and isinstance(data.get("content"), dict) and data["content"].get("event") == "click")


def _on_click(button: Any, handler: Callable[[], None]) -> bool:
    """Run ``handler`` when ``button`` is clicked, also while a cell blocks the kernel's main
    thread (see the module docstring); True when the shell-channel tap is in place."""
    button.on_click(lambda _button: handler())
    comm = getattr(button, "comm", None)
    route = getattr(comm, "_reply_subshell_for", None)
    if not TAP_SHELL_CHANNEL or not callable(route):
        return False

    def tap(data: Any, default: Any) -> Any:  # runs in ipykernel's shell-channel thread
        if _is_click(data):
            threading.Thread(target=handler, name="rpremote-cancel", daemon=True).start()
        return route(data, default)

    comm._reply_subshell_for = tap
    return True


_box: Any = None


def _box_class() -> Any:
    """A VBox whose plain-text form (saved notebooks, nbval) is one stable line, not a dump
    of its children's changing values."""
    global _box
    if _box is None:
        import ipywidgets as w

        class ViewBox(w.VBox):
            text = "rpremote view"

            def __repr__(self) -> str:
                return self.text

        _box = ViewBox
    return _box


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _usd(cost: float) -> str:
    return "< $0.0001" if cost < 0.0001 else f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


# -- views -------------------------------------------------------------------------------------


class _View:
    """What a job view and a map view share: the origin cell, output routing, widgets, cancel."""

    def __init__(self, context: ReportContext):
        self.context = context
        self.origin = _cells.current  # the cell this call was made in (None: outside a cell)
        self._display_context = contextvars.copy_context()  # display() lands in that cell
        self._lock = threading.RLock()
        self._terminal = TerminalReporter(quiet=True)  # foreground output, as in a terminal
        self.logs = LogBuffer()
        self.price = context.resources.flex_usd_per_s if context.resources is not None else None
        self.widgets: dict[str, Any] | None = None
        self.tapped = False  # the Cancel button works during a blocking call
        self.ended = False
        self.cancel_requested = False
        self._drawn_logs = 0  # the log buffer's version on screen

    # -- where output goes

    def foreground(self) -> bool:
        """True while the cell that started this is still running (see the module docstring)."""
        return self.origin is not None and _cells.current is self.origin

    def _first_news(self, job: Any) -> None:
        """With ``views=always``, the view goes up before the job's first output, so a cell's
        outputs come in one order however fast the job was."""

    def log(self, job: Any, stream: str, text: str) -> None:
        self._heard()
        self._first_news(job)
        if self.foreground():
            self._terminal.log(job, stream, text)
        else:
            with self._lock:
                self.logs.append(text)

    def display(self, job: Any, data: dict, metadata: dict, **how: Any) -> None:
        """A worker's display(): into the cell, in order with its prints, while the cell runs;
        afterwards its text form goes to the log area (the view holds no rich outputs)."""
        self._heard()
        self._first_news(job)
        if self.foreground():
            self._terminal.display(job, data, metadata, **how)
        else:
            with self._lock:
                self.logs.append(displays.describe(data, metadata) + "\n")

    def _end_output(self, job: Any, status: str) -> None:
        """A line the job left unfinished: to the cell if it still runs, else to the log area."""
        if self.foreground():
            self._terminal.finished(job, status)
            return
        with self._terminal._lock:
            rest = [key for key in self._terminal._partial if key[0] == id(job)]
            texts = [self._terminal._partial.pop(key) for key in rest]
        with self._lock:
            for text in texts:
                self.logs.append(text + "\n")

    def _note(self, line: str) -> None:
        """An rpremote remark (a retry): stderr in the foreground, else the log area."""
        if self.foreground():
            print(line, file=sys.stderr, flush=True)
        else:
            with self._lock:
                self.logs.append(line + "\n")

    def _heard(self) -> None:
        pass

    # -- widgets

    def show(self) -> None:
        """Build the widgets and display them in the cell that started this (once)."""
        import ipywidgets as w
        from IPython.display import display

        with self._lock:
            if self.widgets is not None:
                return
            def named(name: str) -> dict[str, Any]:
                return {"_dom_classes": [f"rpremote-{name}"]}

            title = w.HTML(self._title_html(), **named("title"))
            status = w.HTML(self._status_html(), **named("status"))
            button = w.Button(description="Cancel", icon="stop", button_style="danger",
                              tooltip="Cancel the remote work", disabled=self.ended,
                              layout=w.Layout(width="auto"), **named("cancel"))
            log = w.HTML("", **named("log"))
            area = w.Accordion(children=[log], titles=("log",), selected_index=None,
                               layout=w.Layout(display="none"), **named("log-area"))
            rows: list[Any] = [w.HBox([title, status, button],
                                      layout=w.Layout(align_items="center", gap="0.8em"))]
            progress = self._progress_widget(w)
            if progress is not None:
                rows.append(progress)
            rows.append(area)
            box = _box_class()(rows, _dom_classes=["rpremote-view",
                                                   f"rpremote-{self.context.kind}"])
            box.text = f"rpremote {self.context.kind} view: {self._plain_title()}"
            self.widgets = dict(box=box, title=title, status=status, cancel=button, log=log,
                                area=area, progress=progress)
            self.tapped = _on_click(button, self.request_cancel)
            self._redraw()
        self._display_context.copy().run(display, box)

    def _progress_widget(self, w: Any) -> Any:
        return None

    def _plain_title(self) -> str:
        raise NotImplementedError

    def _redraw(self) -> None:
        """Bring the widgets up to date (under the lock); only what changed is sent."""
        ws = self.widgets
        if ws is None:
            return
        status = self._status_html()
        if ws["status"].value != status:
            ws["status"].value = status
        button = ws["cancel"]
        disabled = self.ended or self.cancel_requested
        if button.disabled != disabled:
            button.disabled = disabled
        word = "Cancelling…" if self.cancel_requested and not self.ended else "Cancel"
        if button.description != word:
            button.description = word
        if self.logs.version != self._drawn_logs:
            self._drawn_logs = self.logs.version
            body = html.escape(self.logs.text)
            ws["log"].value = ("<pre style='max-height:24em;overflow:auto;margin:0;"
                               f"white-space:pre-wrap'>{body}</pre>")
            title = f"log ({len(self.logs) / 1024:.1f} KiB"
            title += (f"; {self.logs.dropped / 1024:.1f} KiB before it dropped)"
                      if self.logs.dropped else ")")
            ws["area"].titles = (title,)
            if len(self.logs) and ws["area"].layout.display == "none":
                ws["area"].layout.display = None
        self._redraw_more(ws)

    def _redraw_more(self, ws: dict[str, Any]) -> None:
        pass

    def _title_html(self) -> str:
        raise NotImplementedError

    def _status_html(self) -> str:
        raise NotImplementedError

    def _where(self) -> str:
        res = self.context.resources
        parts = [p for p in (self.context.target, res.describe() if res is not None else None) if p]
        return " · ".join(parts)

    def _cost(self, seconds: float | None, estimate: bool) -> str | None:
        if self.price is None or seconds is None:
            return None
        cost = _usd(seconds * self.price)
        text = f"≈ {cost}" if estimate and not cost.startswith("<") else cost
        return text + (" on RunPod" if self.context.target == "local" else "")

    # -- cancel

    def request_cancel(self) -> None:
        """The Cancel button: idempotent, and never blocks the thread that saw the click."""
        with self._lock:
            if self.cancel_requested or self.ended:
                return
            self.cancel_requested = True
            self._redraw()
        threading.Thread(target=self._cancel, name="rpremote-cancel", daemon=True).start()

    def _cancel(self) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError


class JobView(_View):
    """The view of one call, spawned job or ``%%runpod`` cell (a reporter for one ``Job``)."""

    def __init__(self, context: ReportContext):
        super().__init__(context)
        self.job: Any = None
        self.status_: str | None = None
        self.worker: str | None = None
        self.ended_at: float | None = None
        self._last_news = self._created = time.monotonic()
        self._refreshing = False
        self._cancel_sent = False
        self.update: Any = None  # what the function last said with rpremote.progress()
        self._drawn_at = 0.0
        _ticker.add(self)

    # -- Reporter

    def status(self, job: Any, status: str, worker: str | None) -> None:
        self._heard()
        if status == "RETRYING":
            self._note(f"rpremote: {job.name}: {_retry_phrase(job)}")
        with self._lock:
            self.job, self.status_, self.worker = job, status, worker or self.worker
            if (self.cancel_requested and not self._cancel_sent and job.id
                    and status not in rp.TERMINAL_STATES):  # clicked before the id was known
                self._cancel_sent = True
                threading.Thread(target=job.cancel, name="rpremote-cancel", daemon=True).start()
            self._redraw()
        if self.widgets is None and self._due():
            self.show()

    def _first_news(self, job: Any) -> None:
        if self.widgets is None and SHOW_AFTER_S <= 0:
            with self._lock:
                self.job = self.job or job
            self.show()

    def progress(self, job: Any, update: Any) -> None:
        """``rpremote.progress()`` on the worker: the bar and the status line (at most every
        ``MAP_REDRAW_S``; the ticker draws the rest)."""
        self._heard()
        self._first_news(job)
        with self._lock:
            self.job, self.update = self.job or job, update
            if time.monotonic() - self._drawn_at >= MAP_REDRAW_S:
                self._redraw()

    def finished(self, job: Any, status: str) -> None:
        self._end_output(job, status)
        with self._lock:
            self.job, self.status_ = job, status
            self.ended, self.ended_at = True, time.monotonic()
            self._redraw()
        _ticker.discard(self)
        if self.widgets is None and (not self.context.blocking or SHOW_AFTER_S <= 0):
            self.show()

    def _heard(self) -> None:
        self._last_news = time.monotonic()

    # -- the ticker

    def _due(self) -> bool:
        """Whether the view should be on screen now."""
        if self.job is None:
            return False
        if not self.context.blocking or SHOW_AFTER_S <= 0:
            return True  # (a %%runpod cell blocks too: a quick cell shows its output alone)
        return (not self.ended and self.foreground()
                and time.monotonic() - self.job.submitted_at >= SHOW_AFTER_S)

    def tick(self) -> None:
        if self.job is None and time.monotonic() - self._created > 60:
            _ticker.discard(self)  # never submitted (it failed before): nothing to show
            return
        if self.widgets is None and self._due():
            self.show()
        with self._lock:
            self._redraw()
        job = self.job
        if (job is not None and job.id and not self.ended and not self.context.blocking
                and not self._refreshing and time.monotonic() - self._last_news >= REFRESH_AFTER_S):
            # Maybe nobody follows this job (spawned, not waited for): ask the platform.
            self._refreshing = True
            try:
                job.refresh()
            except Exception:
                pass
            finally:
                self._last_news = time.monotonic()
                self._refreshing = False

    def _cancel(self) -> None:
        with self._lock:
            job = self.job
            if job is None or not job.id:
                return  # sent when the id is known (``status``)
            self._cancel_sent = True
        job.cancel()

    # -- drawing

    def _state(self) -> tuple[str, str]:
        status, job = self.status_, self.job
        if status is None:
            return "submitting", "submitting"
        if status == rp.IN_QUEUE:
            return "queued", "queued"
        if status == rp.IN_PROGRESS:
            if not self.worker:
                return "starting", "starting"
            return "running", f"running on {self.worker}"
        if status == "RETRYING":
            return "retrying", "retrying"
        result = getattr(job, "_result", None)
        if status == rp.COMPLETED and isinstance(result, dict) and result.get("ok") is False:
            kind = (result.get("error") or {}).get("type") or "an exception"
            return "failed", f"failed ({kind})"
        return _END_WORDS.get(status, (status.lower(), status.lower()))

    def _plain_title(self) -> str:
        return f"{self.job.name if self.job is not None else ''} ({self._where()})"

    def _title_html(self) -> str:
        name = self.job.name if self.job is not None else ""
        return (f"<b>{html.escape(name)}</b> "
                f"<span style='opacity:0.7'>{html.escape(self._where())}</span>")

    def _status_html(self) -> str:
        key, phrase = self._state()
        job = self.job
        parts = [f"<span class='rpremote-state' data-state='{key}'>{html.escape(phrase)}</span>"]
        if self.update is not None:
            parts.append(f"<span class='rpremote-told'>{html.escape(self.update.describe())}</span>")
        if job is not None:
            now = self.ended_at or time.monotonic()
            parts.append(_seconds(max(0.0, now - job.submitted_at)))
            delay, execution = job.delay_time, job.execution_time
            estimate = execution is None
            if execution is None and delay is not None and self.status_ == rp.IN_PROGRESS:
                execution = max(0.0, now - job.submitted_at - delay)
            if delay is not None:
                parts.append(f"delay {_seconds(delay)}")
            if execution is not None:
                parts.append(f"exec {'~' if estimate else ''}{_seconds(execution)}")
            cost = self._cost(execution, estimate)
            if cost:
                parts.append(cost)
        return " · ".join(parts)

    def _progress_widget(self, w: Any) -> Any:
        """Hidden until the function reports a fraction of the way (``rpremote.progress``)."""
        return w.FloatProgress(min=0.0, max=1.0, value=0.0, bar_style="info",
                               layout=w.Layout(width="100%", display="none"),
                               _dom_classes=["rpremote-progress"])

    def _redraw_more(self, ws: dict[str, Any]) -> None:
        self._drawn_at = time.monotonic()
        title = self._title_html()
        if ws["title"].value != title:
            ws["title"].value = title
        bar, fraction = ws["progress"], self.update.fraction if self.update is not None else None
        if fraction is not None:
            if bar.value != fraction:
                bar.value = fraction
            if bar.layout.display == "none":
                bar.layout.display = None
            style = ({"done": "success", "cancelled": "warning"}.get(self._state()[0], "danger")
                     if self.ended else "info")
            if bar.bar_style != style:
                bar.bar_style = style


class MapView(_View):
    """The view of one map: progress, counts, items/s, cost, one Cancel for all its jobs."""

    def __init__(self, context: ReportContext):
        super().__init__(context)
        self.progress: Any = None
        self.end_status: str | None = None
        self.ended_elapsed: float | None = None
        self._drawn_at = 0.0

    # -- Reporter (the map's jobs; their status is not shown one by one)

    def status(self, job: Any, status: str, worker: str | None) -> None:
        if status == "RETRYING":
            self._note(f"rpremote: {job.name}: {_retry_phrase(job)}")

    def finished(self, job: Any, status: str) -> None:
        self._end_output(job, status)

    def map_update(self, progress: Any) -> None:
        first = self.progress is None
        self.progress = progress
        if first:
            _ticker.add(self)
            self.show()
            return
        now = time.monotonic()
        if now - self._drawn_at >= MAP_REDRAW_S:
            with self._lock:
                self._redraw()

    def map_finished(self, progress: Any, status: str) -> None:
        self.progress = progress
        with self._lock:
            self.ended, self.end_status = True, status
            self.ended_elapsed = progress.elapsed
            self._redraw()
        _ticker.discard(self)
        if self.widgets is None:
            self.show()

    def tick(self) -> None:
        with self._lock:
            self._redraw()

    def _cancel(self) -> None:
        if self.progress is not None:
            self.progress.cancel()

    # -- drawing

    def _progress_widget(self, w: Any) -> Any:
        return w.IntProgress(min=0, max=1, value=0, bar_style="info",
                             layout=w.Layout(width="100%"), _dom_classes=["rpremote-progress"])

    def _plain_title(self) -> str:
        return f"{self.progress.name if self.progress is not None else ''} ({self._where()})"

    def _title_html(self) -> str:
        p = self.progress
        name = p.name if p is not None else ""
        return (f"<b>map {html.escape(name)}</b> "
                f"<span style='opacity:0.7'>{html.escape(self._where())}</span>")

    def _status_html(self) -> str:
        p = self.progress
        if p is None:
            return "<span class='rpremote-state' data-state='submitting'>submitting</span>"
        key, phrase = (_END_WORDS.get(self.end_status, ("ended", "ended")) if self.ended
                       else ("running", "running"))
        counts = f"data-done='{p.done}' data-failed='{p.failed}' data-running='{p.running}'"
        parts = [f"<span class='rpremote-state' data-state='{key}' {counts}>{phrase}</span>"]
        of = f"/{p.total}" if p.total is not None else ""
        parts.append(f"{p.finished}{of} items")
        parts.append(f"{p.done} done")
        if p.failed:
            parts.append(f"{p.failed} failed")
        if p.running and not self.ended:
            parts.append(f"{p.running} running")
        rate = p.items_per_s
        if rate:
            parts.append(f"{rate:.3g} items/s")
        elapsed = self.ended_elapsed if self.ended_elapsed is not None else p.elapsed
        parts.append(_seconds(elapsed))
        cost = self._cost(p.execution_s if p.execution_s else None, estimate=True)
        if cost:
            parts.append(cost)
        return " · ".join(parts)

    def _redraw_more(self, ws: dict[str, Any]) -> None:
        self._drawn_at = time.monotonic()
        title = self._title_html()
        if ws["title"].value != title:
            ws["title"].value = title
        p, bar = self.progress, ws["progress"]
        if p is None or bar is None:
            return
        top = p.total if p.total is not None else max(1, p.finished + p.running)
        if bar.max != top:
            bar.max = top
        if bar.value != p.finished:
            bar.value = p.finished
        style = ("success" if self.ended and self.end_status == rp.COMPLETED and not p.failed
                 else "danger" if self.ended and self.end_status != rp.COMPLETED
                 else "warning" if p.failed else "info")
        if bar.bar_style != style:
            bar.bar_style = style
