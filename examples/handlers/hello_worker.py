"""A plain `runpod` worker, exactly as RunPod's docs write one. The emulator hosts it unmodified."""

import time

import runpod


def handler(job):
    """Streams a few progress items, then the answer; raises when asked to."""
    name = job["input"].get("name", "world")
    if job["input"].get("fail"):
        raise ValueError(f"cannot greet {name!r}")
    for step in range(1, 4):
        time.sleep(0.5)
        yield {"step": step, "of": 3}
    yield {"greeting": f"hello, {name}"}


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
