"""A streaming handler as in RunPod's docs; AGGREGATE=1 sets return_aggregate_stream."""

import os
import time

import runpod


def handler(job):
    n = job["input"].get("n", 3)
    for i in range(n):
        yield {"token": i, "t": time.time()}
        time.sleep(job["input"].get("delay", 0.3))
    if job["input"].get("fail"):
        raise RuntimeError("generator failed midway")


runpod.serverless.start({
    "handler": handler,
    "return_aggregate_stream": os.environ.get("AGGREGATE") == "1",
})
