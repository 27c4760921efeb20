"""Run one worker command so that nothing it starts outlives it, or outlives the emulator.

A `runpod` worker forks a heartbeat process. If the worker is SIGKILLed, that child goes on
pinging with the dead worker's job list; if the emulator dies, the workers go on polling.
This wrapper puts the worker in its own process group, asks the kernel for a signal when the
emulator (its parent) dies (Linux; elsewhere it sees within a second that it was adopted),
and kills the whole group when the worker exits or when it is told to stop.
Usage: ``python -m rpremote.local.reaper GRACE_S -- CMD ARGS...``.
It imports only the standard library, to start fast.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: rely on the supervisor's own cleanup
        pass


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    grace = float(argv[0])
    cmd = argv[argv.index("--") + 1 :]
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() == 1:  # the emulator died before prctl took effect
        return 1
    # The worker, too, is told when its parent dies, in case this wrapper is SIGKILLed.
    child = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent)
    stopping = threading.Event()

    def stop(signum, _frame):
        if stopping.is_set():
            return
        stopping.set()
        _kill_group(child.pid, signal.SIGTERM)

        def escalate():
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(child.pid, signal.SIGKILL)

        threading.Thread(target=escalate, daemon=True).start()

    def watch_parent():  # where there is no PR_SET_PDEATHSIG: an orphan is adopted
        while not stopping.wait(1.0):
            if os.getppid() != parent:
                stop(signal.SIGTERM, None)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=watch_parent, daemon=True).start()
    code = child.wait()
    _kill_group(child.pid, signal.SIGKILL)  # the heartbeat process and anything else left
    if code < 0:  # report death by signal the way a shell does, so the supervisor can tell
        os.write(2, f"[rpremote] worker process {child.pid} killed by signal {-code}\n".encode())
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
