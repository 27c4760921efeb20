"""The README's demo: a decorated function runs on a worker of the local endpoint emulator.

It prints while it works (the lines arrive live, prefixed [remote:...]), returns a value, and
a second call raises: the original exception type comes back with the remote traceback.
Run it with ./scripts/demo (no RunPod account needed).
"""

import time

from rpremote import remote


class BadInput(ValueError):
    """Defined in this script: it travels by value, and `except BadInput` still works."""


def mean(xs):
    return sum(xs) / len(xs)


@remote(gpu="ADA_24", workers=(0, 2), idle_timeout=30)
def train(steps: int, lr: float) -> dict:
    import os
    import platform

    if steps <= 0:
        raise BadInput(f"steps must be positive, got {steps}")
    losses = []
    for step in range(1, steps + 1):
        loss = 1.0 / (step * lr)
        losses.append(loss)
        print(f"step {step}/{steps}: loss {loss:.4f}", flush=True)
        time.sleep(0.5)
    return {"final_loss": losses[-1], "mean_loss": mean(losses),
            "worker_pid": os.getpid(), "python": platform.python_version()}


if __name__ == "__main__":
    t0 = time.monotonic()
    result = train(6, lr=0.5)
    print(f"result: {result}  (client pid {__import__('os').getpid()}, "
          f"{time.monotonic() - t0:.1f} s)")

    try:
        train(0, lr=0.5)
    except BadInput as err:
        import traceback
        print("\nThe second call raised, as it would locally:")
        traceback.print_exception(err)
