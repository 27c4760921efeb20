"""Run a ``%%runpod`` cell on the worker: the executor's half of a cell as a remote call.

``run_cell`` executes the source in a fresh namespace made of the values the client pushed,
with the cell's own file name and line numbers (so a traceback points into the cell), and
returns the pulled names that can travel, the value of a last expression, and which names
could not come back and why. ``display`` is a builtin there, and figures left open at the end
are shown (``executor.display``). What to push and pull is ``capture.cells.analyse``'s.

The client sends ``run_cell`` by reference (it is rpremote's, and every worker has rpremote),
and gets a ``CellOutcome`` back, whose fields it reads.
"""

from __future__ import annotations

import ast
import builtins
import linecache
import pickle
from dataclasses import dataclass, field
from typing import Any

from ..capture.cells import analyse
from .display import flush_figures


@dataclass
class CellOutcome:
    values: dict[str, Any] = field(default_factory=dict)  # pulled names that can travel
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it stayed behind
    has_result: bool = False
    result: Any = None  # the last expression's value, as a local cell would show it


def run_cell(source: str, filename: str, pushed: dict[str, Any], pull: list[str] | None) -> CellOutcome:
    """Run the cell (worker side): its namespace is ``pushed``; ``pull`` None means every
    top-level name it binds. A last expression statement is evaluated for its value."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    body = ast.Module(body=tree.body[:-1] if last else tree.body, type_ignores=[])
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **pushed}
    outcome = CellOutcome()
    try:
        exec(compile(body, filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
            outcome.has_result, outcome.result = value is not None, value
    finally:
        # As the inline backend does after a cell, failed or not: figures still open are
        # shown, then closed (a figure that is the cell's value is shown as its value, once).
        flush_figures(skip=outcome.result)
    wanted = analyse(source).bound if pull is None else pull
    for name in wanted:
        if name not in namespace:
            if pull is not None:
                outcome.skipped[name] = "the cell did not set it"
            continue
        value = namespace[name]
        try:
            _pickle_check(value)
        except Exception as e:  # one value that cannot travel must not lose the others
            outcome.skipped[name] = f"{type(value).__name__} cannot be sent back ({type(e).__name__}: {e})"
            continue
        outcome.values[name] = value
    if outcome.has_result:
        try:
            _pickle_check(outcome.result)
        except Exception as e:
            outcome.result = f"<{type(outcome.result).__name__}: cannot be sent back ({e})>"
    return outcome


def _pickle_check(value: Any) -> None:
    import cloudpickle

    cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=lambda b: False)
