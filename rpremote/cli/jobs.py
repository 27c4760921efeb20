"""``rpremote jobs | logs ID | cancel ID``: the job journal from a terminal.

``jobs`` reads the journal; first it asks the platform about the jobs the journal has not seen
end (a spawned job nobody followed still reads IN_QUEUE there), unless ``--cached``. ``logs``
prints the job's log spool (``log_spool.py``: what the process following the job received),
and for a running job what it prints next, until it ends; a job nobody follows is followed
from here (``log_follow.py``). ``cancel`` finds the job's endpoint in the journal and asks the
queue API of the target the job ran on. None of them starts the local emulator (a job that ran
on it is gone with it). Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from .. import journal
from .. import platform as rp
from ..errors import RpremoteError

EXPIRED = "EXPIRED"  # the platform no longer knows the job (job.EXPIRED; not imported: light CLI)
UNKNOWN = "UNKNOWN"  # its emulator stopped before telling the outcome (job.UNKNOWN)
SHORT_ID = 13  # "sync-1a2b3c4d" / "1a2b3c4d-5e6f": enough to tell jobs apart, and a valid prefix


class CommandError(Exception):
    """A one-line reason the command could not do its job."""


def run_job_command(command: str, argv: list[str]) -> int:
    parser = _parser(command)
    args = parser.parse_args(argv)
    try:
        if command == "jobs":
            return _jobs(args)
        if command == "logs":
            return _logs(args.id, follow=args.follow)
        return _cancel(args.id)
    except (CommandError, RpremoteError) as e:
        print(f"rpremote {command}: {e}", file=sys.stderr)
        return 1


def _parser(command: str) -> argparse.ArgumentParser:
    if command == "jobs":
        p = argparse.ArgumentParser(prog="rpremote jobs",
                                    description="The newest jobs in this user's job journal.")
        p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
        p.add_argument("--status", default=None,
                       help="only jobs in this state (COMPLETED, FAILED, IN_PROGRESS, ...)")
        p.add_argument("--name", default=None, help="only jobs of this function or cell")
        p.add_argument("--json", action="store_true", help="one JSON list, every column")
        p.add_argument("--cached", action="store_true",
                       help="only what the journal says: do not ask the platform about jobs "
                            "it has not seen end")
        return p
    what = {"logs": "Print what a job printed so far (with -f, and what it prints next, "
                    "until it ends).",
            "cancel": "Cancel a job (queued: removed; running: stopped)."}[command]
    p = argparse.ArgumentParser(prog=f"rpremote {command}", description=what)
    p.add_argument("id", help="the job's id, or a unique prefix of it (as `rpremote jobs` shows)")
    if command == "logs":
        p.add_argument("-f", "--follow", action="store_true",
                       help="keep printing the output of a running job as it comes, until "
                            "it ends (Ctrl-C stops watching, not the job)")
    return p


# -- jobs -------------------------------------------------------------------------------------


def _jobs(args: argparse.Namespace) -> int:
    unknown = 0 if args.cached else _refresh_unended(max(args.limit, REFRESH_AT_LEAST))
    entries = journal.recent(limit=args.limit, status=args.status, name=args.name)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=1))
        return 0
    if not entries:
        print("no jobs in the journal" + (" with that status" if args.status else ""))
        return 0
    head = ("ID", "NAME", "ENDPOINT", "GPU", "STATUS", "SUBMITTED", "DELAY", "EXEC", "COST")
    rows = [head] + [_row(e) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if any(e.target == "local" and e.cost_usd for e in entries):
        print("(cost in parentheses: what RunPod would charge; jobs on the local target cost nothing)")
    if unknown:
        print(f"({unknown} job{'s' if unknown != 1 else ''} not seen ending ran on the local "
              "emulator, which is not running now: they are gone with it)")
    return 0


REFRESH_AT_LEAST = 200  # the newest jobs whose state `jobs` brings up to date


def _refresh_unended(limit: int) -> int:
    """Ask the platform about the newest jobs the journal has not seen end, and write down
    what it says (a job it no longer knows is EXPIRED). Returns how many could not be asked
    because the local emulator they ran on is not running. An UNKNOWN job has ended too:
    the emulator it was on stopped before saying how it went."""
    unended = [e for e in journal.recent(limit=limit)
               if e.status not in rp.TERMINAL_STATES and e.status not in (EXPIRED, UNKNOWN)
               and e.target in (None, "local")]
    if not unended:
        return 0
    try:
        queue = _queue(unended[0])
    except CommandError:
        return len(unended)
    try:
        for entry in unended:
            ask_and_note(queue, entry)
    finally:
        queue.close()
    return 0


def ask_and_note(queue: Any, entry: journal.Entry) -> bool:
    """Ask the platform for ``entry``'s status and write it in the journal (a job it no
    longer knows is EXPIRED); False when it could not say (another error: left as it is)."""
    from ..errors import JobFailed, RpremoteError

    try:
        st = queue.call("status", entry.endpoint, entry.id)
    except JobFailed as e:
        if e.http_status != 404:
            return False
        st = {"status": EXPIRED}
    except RpremoteError:
        return False
    _note(entry, st)
    return True


def _row(e: journal.Entry) -> tuple[str, ...]:
    submitted = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.submitted_at))
                 if e.submitted_at else "-")
    cost = "-"
    if e.cost_usd is not None:
        cost = f"${e.cost_usd:.4f}"
        if e.target == "local":
            cost = f"({cost})"
    name = e.name or "-"
    if e.kind and e.kind != "call":
        name += f" [{e.kind}]"
    return (short_id(e.id), name, e.endpoint, e.gpu or "-", e.status or "-", submitted,
            _seconds(e.delay_ms), _seconds(e.execution_ms), cost)


def short_id(job_id: str) -> str:
    return job_id[:SHORT_ID]


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"


# -- logs, cancel -----------------------------------------------------------------------------


def _entry(job_id: str) -> journal.Entry:
    entry = journal.get(job_id)
    if entry is None:
        raise CommandError(f"no job {job_id!r} in the job journal ({journal.journal().path}); "
                           "`rpremote jobs` lists the known ones")
    return entry


def _queue(entry: journal.Entry):
    """A queue client for the target the job ran on; never starts anything."""
    from ..log_follow import CannotFollow, queue_for

    try:
        return queue_for(entry)
    except CannotFollow as e:
        raise CommandError(str(e)) from None


def _ask(entry: journal.Entry, op: str) -> dict[str, Any]:
    from ..errors import JobFailed

    queue = _queue(entry)
    try:
        return queue.call(op, entry.endpoint, entry.id)
    except JobFailed as e:
        if e.http_status == 404:
            raise CommandError(
                f"job {entry.id} is no longer kept by the platform (results are kept "
                f"{rp.RETENTION_RUN_S // 60} min after /run and {rp.RETENTION_RUNSYNC_S} s "
                "after a blocking call), so its output is gone") from None
        raise
    finally:
        queue.close()


FOLLOW_POLL_S = 0.25  # how often a followed job's spool is read again


def _logs(job_id: str, follow: bool = True) -> int:
    from .. import log_follow, log_spool

    entry = _entry(job_id)
    directory = journal.journal().spool_dir
    offset, printed, last = 0, False, ""
    takeover: log_follow.Takeover | None = None
    thread: threading.Thread | None = None
    stop = threading.Event()  # Ctrl-C: the follower thread stops after its long-poll
    step_until = time.monotonic() + 2.0  # without -f: a round or two with the platform
    said_following = False

    def out(text: str) -> None:
        nonlocal printed, last
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            printed, last = True, text

    try:
        while True:
            if takeover is not None and takeover.problem and not thread.is_alive():  # type: ignore[union-attr]
                out(log_spool.read(directory, entry.id, offset)[0])
                if printed:  # what was kept is shown; the rest cannot be had
                    print(f"(not all of it: {takeover.problem})", file=sys.stderr)
                    break
                print(f"rpremote logs: {takeover.problem}", file=sys.stderr)
                return 1
            if (not log_follow.complete(entry) and (thread is None or not thread.is_alive())
                    and (follow or thread is None)):  # without -f: one round at most
                found = log_follow.take_over(entry)
                if found is not None:
                    takeover = found
                    until = None if follow else step_until
                    thread = threading.Thread(target=found.run, kwargs={"stop": lambda: (
                        stop.is_set() or (until is not None and time.monotonic() > until))},
                        daemon=True, name=f"rpremote-follow-{entry.id[:13]}")
                    thread.start()
            text, offset, _ = log_spool.read(directory, entry.id, offset)
            out(text)
            if log_follow.complete(entry):
                break
            busy = thread is not None and thread.is_alive()
            if not follow and not busy and not (takeover and takeover.problem):
                out(log_spool.read(directory, entry.id, offset)[0])
                print(f"(job {entry.id} is {entry.status}: this is its output so far; "
                      "-f follows it as it comes, and all of it is here once the job ends)",
                      file=sys.stderr)
                return 0
            if follow and not said_following and not log_follow.ended(entry):
                said_following = True
                print(f"(job {entry.id} is {entry.status}: its output follows as it comes, "
                      "until it ends; Ctrl-C stops watching, not the job)", file=sys.stderr)
            time.sleep(FOLLOW_POLL_S)
            entry = journal.get(entry.id) or entry
    except KeyboardInterrupt:
        stop.set()
        print(f"\n(stopped watching; job {entry.id} goes on)", file=sys.stderr)
        return 130
    if thread is not None:
        thread.join(5)
    out(log_spool.read(directory, entry.id, offset)[0])
    if printed and not last.endswith("\n"):
        sys.stdout.write("\n")
    if not printed:
        print(f"(job {entry.id} printed nothing)", file=sys.stderr)
    return 0


def _cancel(job_id: str) -> int:
    entry, status = cancel(job_id)
    print(f"{entry.id}: {status}")
    return 0


def cancel(job_id: str) -> tuple[journal.Entry, str]:
    """Cancel a job on the target it ran on; the journal learns the status the platform
    answers. Raises ``CommandError`` (or ``RpremoteError``) saying why it could not."""
    entry = _entry(job_id)
    st = _ask(entry, "cancel")
    _note(entry, st)
    return entry, st.get("status") or "?"


def _note(entry: journal.Entry, st: dict[str, Any]) -> None:
    """Bring the journal up to date with what the platform said (a spawned job nobody
    followed still reads IN_QUEUE there). A status the journal already ended with stays."""
    status = st.get("status")
    if not status or entry.status in rp.TERMINAL_STATES or entry.status == UNKNOWN:
        return
    values: dict[str, Any] = {"status": status}
    if st.get("workerId"):
        values["worker"] = st["workerId"]
    if st.get("delayTime") is not None:
        values["delay_ms"] = int(st["delayTime"])
    if st.get("executionTime") is not None:
        values["execution_ms"] = int(st["executionTime"])
    if status in rp.TERMINAL_STATES or status == EXPIRED:
        values["finished_at"] = time.time()
    journal.update(entry.id, **values)
