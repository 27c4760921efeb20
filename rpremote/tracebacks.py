"""Tracebacks that cross the wire: described as data on the worker, drawn on the client.

A worker usually lacks the source of the code it ran: a function sent by value comes from a
script, module or notebook cell that exists only on the client. So the worker sends each
frame as data (file, line, position, name, and the source line when it has it), and the
client draws the traceback with its own ``traceback`` module, taking the lines the worker
lacked from its own ``linecache``. The result reads exactly as the same exception raised here
would: file, line number, source line and the ``^^^`` under the failing expression.

Shared by both sides, like ``protocol``; imports only the standard library.
"""

from __future__ import annotations

import linecache
import traceback
from typing import Any

CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
HEADER = "Traceback (most recent call last):\n"


def describe(exc: BaseException, tb: Any = None) -> dict[str, Any]:
    """``exc`` with its chain (``__cause__``/``__context__``) as JSON-able data.

    ``tb`` replaces ``exc.__traceback__`` for the outermost exception (the executor passes
    the part from the user's first frame on).
    """
    te = traceback.TracebackException(type(exc), exc, tb if tb is not None else exc.__traceback__,
                                      lookup_lines=False)
    return _node(te)


def _node(te: traceback.TracebackException) -> dict[str, Any]:
    if getattr(te, "exceptions", None) is not None:  # an ExceptionGroup: drawn here, as text
        return {"text": "".join(te.format(chain=False)), **_chain(te)}
    return {"frames": [_frame(f) for f in te.stack],
            "exception": list(te.format_exception_only()), **_chain(te)}


def _chain(te: traceback.TracebackException) -> dict[str, Any]:
    if te.__cause__ is not None:
        return {"chained": {"how": "cause", "from": _node(te.__cause__)}}
    if te.__context__ is not None and not te.__suppress_context__:
        return {"chained": {"how": "context", "from": _node(te.__context__)}}
    return {}


def _frame(f: traceback.FrameSummary) -> list[Any]:
    line = linecache.getline(f.filename, f.lineno) if f.lineno else ""
    return [f.filename, f.lineno, f.end_lineno, f.colno, f.end_colno, f.name, line or None]


def render(desc: dict[str, Any]) -> str:
    """The text ``traceback.format_exception`` would give for the described exception here."""
    chain: list[tuple[str | None, dict[str, Any]]] = []
    node: dict[str, Any] | None = desc
    how: str | None = None
    while node is not None and len(chain) < 100:
        chain.append((how, node))
        link = node.get("chained")
        how, node = (link["how"], link["from"]) if link else (None, None)
    out: list[str] = []
    for i, (_, node) in enumerate(reversed(chain)):
        if i:  # how the one drawn next relates to the one above it
            out.append(CAUSE if chain[len(chain) - i][0] == "cause" else CONTEXT)
        out.extend(_draw(node))
    return "".join(out)


def _draw(node: dict[str, Any]) -> list[str]:
    if "text" in node:
        return [node["text"]]
    frames = [_summary(*f) for f in node.get("frames", ())]
    lines = [HEADER, *traceback.StackSummary.from_list(frames).format()] if frames else []
    return lines + list(node.get("exception", ()))


def _summary(filename: str, lineno: int | None, end_lineno: int | None, colno: int | None,
             end_colno: int | None, name: str, line: str | None) -> traceback.FrameSummary:
    if line is None and lineno:
        line = linecache.getline(filename, lineno) or None  # the client has the source
    return traceback.FrameSummary(filename, lineno, name, lookup_line=False, line=line,
                                  end_lineno=end_lineno, colno=colno, end_colno=end_colno)


def text_of(error: dict[str, Any]) -> str:
    """The traceback of a failure (``protocol.error_info``), drawn here when it was described,
    else the worker's own text (an older worker, or one that could not describe it)."""
    desc = error.get("tb")
    if isinstance(desc, dict):
        try:
            text = render(desc)
        except Exception:
            return error.get("traceback", "")
        return f"({error['note']})\n{text}" if error.get("note") else text
    return error.get("traceback", "")
