"""``%%runpod``: send a cell to a worker, with the notebook variables it reads; ``%runpod``
line magics for the jobs, endpoints and settings around it.

The cell's free names that exist in the notebook namespace travel by value (variables, and
functions and classes from earlier cells, with what they need); the cell runs remotely in a
namespace made of them; the names it binds at top level come back (``--pull`` narrows,
``--no-pull`` skips), each on its own, so one value that cannot travel is a one-line note and
not the loss of the rest. A last expression is shown as a local cell would show it.

``--async`` returns at once; ``%runpod wait`` then brings the cell's names back into the
namespace (the namespace is only ever changed by a cell the user runs, never behind their
back by a thread).
"""

from __future__ import annotations

import itertools
import linecache
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..api import remote
from ..capture.cells import analyse
from ..errors import ConfigError
from ..executor.cells import run_cell
from ..frames import user_facing
from . import outputs
from .widgets import install as install_views

_cell_numbers = itertools.count(1)

LINE_USAGE = """\
%runpod config [key=value ...]   show or set: gpu, timeout (cell defaults), views, target, quiet,
                                 image, store (s3://BUCKET[/PREFIX], runpod-volume://ID[/PREFIX],
                                 none)
%runpod jobs [--limit N] [--status S] [--name NAME]
%runpod logs [-f] JOB            what a job printed (-f: and what it prints next, until it ends)
%runpod cancel JOB               cancel a job (queued: removed; running: stopped)
%runpod wait [JOB ...] [--timeout S]
                                 wait for --async cells, then bring their names back
%runpod endpoints                the endpoints of the current target
%runpod pod up|status|down ...   rpremote's warm GPU Pod (target pod; it stops itself idle)
"""

# Defaults for %%runpod cells that `%runpod config` can change (the flags win).
CELL_DEFAULTS_KEYS = ("gpu", "timeout")


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@dataclass
class PendingCell:
    """An ``--async`` cell submitted and not yet brought back by ``%runpod wait``."""
    name: str
    job: Any  # rpremote.Job


@magics_class
class RunpodMagics(Magics):
    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.pending: dict[str, PendingCell] = {}  # job id -> cell, in submission order
        self.cell_defaults: dict[str, Any] = {"gpu": None, "timeout": 600.0}
        self.views = "slow"

    @magic_arguments()
    @argument("--gpu", default=None, help="RunPod pool or GPU type (default: CPU)")
    @argument("--timeout", type=float, default=None, help="seconds the cell may run (default 600)")
    @argument("--deps", default=None, help="extra requirements, comma-separated")
    @argument("--push", default=None, help="names to send that the analysis cannot see")
    @argument("--pull", default=None, help="only these names come back")
    @argument("--no-pull", action="store_true", help="bring no names back")
    @argument("--async", dest="run_async", action="store_true",
              help="return at once; `%%runpod wait` brings the names back")
    @argument("--endpoint", default=None, help="run on this existing endpoint id")
    @cell_magic("runpod")
    @user_facing
    def runpod_cell(self, line: str, cell: str) -> Any:
        """Run this cell remotely; see ``%%runpod?`` for the options."""
        args = parse_argstring(self.runpod_cell, line)
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
        # Here too, so tracebacks through functions this cell defines show its lines.
        linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
        gpu = args.gpu if args.gpu is not None else self.cell_defaults["gpu"]
        timeout = args.timeout if args.timeout is not None else self.cell_defaults["timeout"]
        fn = remote(gpu=gpu, timeout=timeout, endpoint=args.endpoint,
                    dependencies=_names(args.deps) or ())(_named(run_cell, f"cell_{number}"))
        fn.kind = "cell"
        if args.run_async:
            job = fn.spawn(cell, filename, pushed, pull)
            self.pending[job.id] = PendingCell(f"cell_{number}", job)
            print(f"rpremote: cell_{number} runs as job {job.id}; `%runpod wait` brings its "
                  "names back", file=sys.stderr)
            return None
        return self._bring_back(fn(cell, filename, pushed, pull))

    def _bring_back(self, outcome: Any) -> Any:
        """Put a cell's pulled names into the namespace; its last expression's value."""
        self.shell.user_ns.update(outcome.values)
        for name, why in outcome.skipped.items():
            print(f"rpremote: {name} was not brought back: {why}", file=sys.stderr)
        return outputs.prepare_result(self.shell, outcome.result) if outcome.has_result else None

    @line_magic("runpod")
    @user_facing
    def runpod_line(self, line: str) -> Any:
        """``%runpod config|jobs|logs|cancel|wait|endpoints ...``; ``%runpod`` alone: usage."""
        words = shlex.split(line)
        if not words or words[0] in ("help", "-h", "--help"):
            print(LINE_USAGE, end="")
            return None
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_line_{command}", None)
        if handler is None:
            raise ConfigError(f"%runpod {command}: no such command\n{LINE_USAGE}")
        return handler(rest)

    # -- line commands --------------------------------------------------------------------------

    def _line_jobs(self, argv: list[str]) -> None:
        self._cli("jobs", argv)

    def _line_logs(self, argv: list[str]) -> None:
        self._cli("logs", argv)

    def _line_cancel(self, argv: list[str]) -> None:
        self._cli("cancel", argv)

    @staticmethod
    def _cli(command: str, argv: list[str]) -> None:
        from ..cli.jobs import run_job_command

        try:
            run_job_command(command, argv)
        except SystemExit:  # argparse's --help or a usage error: it printed why
            pass

    def _line_endpoints(self, argv: list[str]) -> None:
        from ..cli.endpoints import main

        try:
            main(argv)
        except SystemExit:
            pass

    def _line_pod(self, argv: list[str]) -> None:
        from ..cli.pod import main

        try:
            main(argv)
        except SystemExit:
            pass

    def _line_config(self, argv: list[str]) -> None:
        from .. import config

        for pair in argv:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ConfigError(f"%runpod config takes key=value pairs; got {pair!r}")
            self._set(key.strip(), value.strip())
        if argv:
            return  # set quietly; `%runpod config` alone shows everything
        settings = config.settings()
        secret_from = ("configure(secret=...)" if settings.secret else
                       "$RPREMOTE_SECRET" if os.environ.get("RPREMOTE_SECRET")
                       else "the per-user secret file")
        print(f"target  = {config.target_name()}\n"
              f"gpu     = {self.cell_defaults['gpu'] or 'CPU'}   (%%runpod default)\n"
              f"timeout = {self.cell_defaults['timeout']:g} s   (%%runpod default)\n"
              f"views   = {self.views}   (always: a view for every call; slow: for slow ones)\n"
              f"quiet   = {bool(settings.quiet)}\n"
              f"secret  = from {secret_from} (never shown)\n"
              f"runpod key = {_runpod_key_shown()}\n"
              f"image   = {_image_shown()}   (targets runpod and pod)\n"
              f"store   = {_store_shown()}")

    def _set(self, key: str, value: str) -> None:
        from .. import config
        from ..resources import make_resources

        if key == "gpu":
            gpu = None if value.lower() in ("", "none", "cpu") else value
            make_resources(gpu=gpu)  # a name RunPod does not know is refused here
            self.cell_defaults["gpu"] = gpu
        elif key == "timeout":
            try:
                seconds = float(value)
            except ValueError:
                raise ConfigError(f"timeout is seconds; got {value!r}") from None
            remote(timeout=seconds)  # the decorator's range check
            self.cell_defaults["timeout"] = seconds
        elif key == "views":
            if value not in ("always", "slow"):
                raise ConfigError(f"views is always (a view for every call) or slow (only for "
                                  f"calls that take a while); got {value!r}")
            from .widgets import show_every_view

            show_every_view(value == "always")
            self.views = value
        elif key == "target":
            config.configure(target=value)
        elif key == "quiet":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"quiet is true or false; got {value!r}")
            config.configure(quiet=value.lower() in ("true", "1", "yes"))
        elif key == "store":
            config.set_store(value, "%runpod config store=...")
        elif key == "image":
            config.configure(image=value)
        else:
            raise ConfigError(f"%runpod config: unknown key {key!r}; keys: gpu, timeout, "
                              "views, target, quiet, store, image")

    def _line_wait(self, argv: list[str]) -> None:
        """Wait for ``--async`` cells (all, or those named), bring their names back and show
        their values. Every finished cell is brought back before the first failure is raised,
        so one failed cell loses nothing of the others. Interrupting the wait cancels them."""
        import argparse

        p = argparse.ArgumentParser(prog="%runpod wait", add_help=False)
        p.add_argument("ids", nargs="*")
        p.add_argument("--timeout", type=float, default=None)
        args = p.parse_args(argv)
        chosen = self._chosen(args.ids)
        if not chosen:
            print("rpremote: no --async cells to wait for", file=sys.stderr)
            return
        from IPython.display import display

        failures: list[tuple[str, BaseException]] = []
        for job_id in chosen:
            cell = self.pending[job_id]
            try:
                outcome = cell.job.result(timeout=args.timeout)
            except TimeoutError:
                raise  # still pending: a later %runpod wait picks it up
            except Exception as e:
                del self.pending[job_id]
                failures.append((cell.name, e))
                continue
            del self.pending[job_id]
            value = self._bring_back(outcome)
            print(f"rpremote: {cell.name} (job {job_id}) is back", file=sys.stderr)
            if value is not None:
                display(value)
        if failures:
            name, first = failures[0]
            if len(failures) > 1:
                others = ", ".join(n for n, _ in failures[1:])
                print(f"rpremote: {others} failed too", file=sys.stderr)
            raise first

    def _chosen(self, ids: list[str]) -> list[str]:
        if not ids:
            return list(self.pending)
        chosen = []
        for given in ids:
            matches = [j for j in self.pending if j.startswith(given)]
            if len(matches) != 1:
                known = ", ".join(self.pending) or "none"
                raise ConfigError(f"%runpod wait {given}: " + (
                    "no pending --async cell has that id" if not matches else
                    "more than one pending cell starts with that") + f" (pending: {known})")
            chosen.append(matches[0])
        return chosen


def _runpod_key_shown() -> str:
    """Where the RunPod API key comes from (never the key): ``from $RUNPOD_API_KEY``."""
    from .. import config

    try:
        key, source = config.runpod_api_key()
    except ConfigError as e:
        return f"not usable: {e}"
    return f"from {source} (never shown)" if key else "none (set RUNPOD_API_KEY)"


def _image_shown() -> str:
    """The worker image RunPod endpoints and Pods get, and where that choice comes from."""
    from ..client.runpod_image import choose
    from ..errors import VersionMismatch

    try:
        chosen = choose(None)
    except VersionMismatch as e:
        return f"not usable: {e}"
    return f"{chosen.image} ({chosen.source})"


def _store_shown() -> str:
    """The offload store in words: where it is, where its credentials come from (never them)."""
    from ..client.stores import describe_choice

    return describe_choice()


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
    outputs.install()  # workers' display() and figures show in the cell, in order
    install_views(ipython)
