"""The `rpremote` command: reads the first word and hands the rest to that command group's module.

One module per group, each imported only when its command runs (so ``rpremote --version`` and
the notebook's ``%runpod`` line magics do not pay for the others): ``serve`` (the local
emulator), ``jobs`` (``jobs``, ``logs``, ``cancel``: the job journal), ``endpoints``, ``pod``,
``down``, ``store``; ``runpod_endpoints`` lists the RunPod account's endpoints for
``endpoints`` and ``down``.
"""

from __future__ import annotations

import sys

from .. import __version__

JOB_COMMANDS = ("jobs", "logs", "cancel")  # the job journal's commands (cli/jobs.py)

USAGE = (
    "usage: rpremote serve [options] [--endpoint NAME --worker-cmd CMD ...]\n"
    "       rpremote jobs [--limit N] [--status S] [--json]\n"
    "       rpremote logs ID\n"
    "       rpremote cancel ID\n"
    "       rpremote endpoints [--json]\n"
    "       rpremote pod up [--gpu TYPE] [--idle-stop 30m] [--max-hours H] | status | "
    "down [--stop] [--yes]\n"
    "       rpremote down [--yes] [ENDPOINT ...]\n"
    "       rpremote store info|sweep [--older-than 7d] [--dry-run] [--store URL]\n"
    "       rpremote --version\n\n"
    "Run `rpremote serve --help` for the emulator's options."
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command == "serve":
        from .serve import main as serve_main

        return serve_main(rest)
    if command in JOB_COMMANDS:
        from .jobs import run_job_command

        return run_job_command(command, rest)
    if command == "endpoints":
        from .endpoints import main as endpoints_main

        return endpoints_main(rest)
    if command == "pod":
        from .pod import main as pod_main

        return pod_main(rest)
    if command == "down":
        from .down import main as down_main

        return down_main(rest)
    if command == "store":
        from .store import main as store_main

        return store_main(rest)
    if command in ("--version", "-V"):
        print(f"rpremote {__version__}")
        return 0
    print(USAGE, file=sys.stderr)
    return 2
