"""``%%runpod``: send a cell to a worker, with the notebook variables it reads.

The cell's free names that exist in the notebook namespace travel by value (variables, and
functions and classes from earlier cells, with what they need); the cell runs remotely in a
namespace made of them; the names it binds at top level come back (``--pull`` narrows,
``--no-pull`` skips), each on its own, so one value that cannot travel is a one-line note and
not the loss of the rest. A last expression is shown as a local cell would show it.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..api import remote
from ..capture.cells import analyse, run_cell
from ..errors import ConfigError
from .widgets import install as install_views

_cell_numbers = itertools.count(1)


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@magics_class
class RunpodMagics(Magics):
    @magic_arguments()
    @argument("--gpu", default=None, help="RunPod pool or GPU type (default: CPU)")
    @argument("--timeout", type=float, default=600, help="seconds the cell may run")
    @argument("--deps", default=None, help="extra requirements, comma-separated")
    @argument("--push", default=None, help="names to send that the analysis cannot see")
    @argument("--pull", default=None, help="only these names come back")
    @argument("--no-pull", action="store_true", help="bring no names back")
    @cell_magic
    def runpod(self, line: str, cell: str) -> Any:
        """Run this cell remotely; see ``%%runpod?`` for the options."""
        args = parse_argstring(self.runpod, line)
        try:
            names = analyse(cell)
        except SyntaxError as e:
            raise ConfigError(f"the cell does not parse ({e.msg}, line {e.lineno}); nothing was sent") from None
        user_ns = self.shell.user_ns
        wanted = [n for n in names.free if n in user_ns] + _names(args.push)
        missing = [n for n in _names(args.push) if n not in user_ns]
        if missing:
            raise ConfigError(f"--push names {', '.join(missing)}, which this notebook does not "
                              "define; nothing was sent")
        pushed = {n: user_ns[n] for n in dict.fromkeys(wanted)}
        pull = [] if args.no_pull else (_names(args.pull) or None)
        number = next(_cell_numbers)
        filename = f"<runpod-cell-{number}>"
        fn = remote(gpu=args.gpu, timeout=args.timeout,
                    dependencies=_names(args.deps) or ())(_named(run_cell, f"cell_{number}"))
        fn.kind = "cell"
        outcome = fn(cell, filename, pushed, pull)
        user_ns.update(outcome.values)
        for name, why in outcome.skipped.items():
            print(f"rpremote: {name} was not brought back: {why}", file=sys.stderr)
        return outcome.result if outcome.has_result else None


def _named(fn: Any, name: str) -> Any:
    """``fn`` under another name in logs and the job list (the cell's), same code."""
    import functools

    @functools.wraps(fn)
    def cell(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    cell.__name__ = cell.__qualname__ = name
    return cell


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(RunpodMagics)
    install_views(ipython)
