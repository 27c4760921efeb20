"""The cheapest possible handler; CONCURRENCY sets the SDK's concurrency_modifier."""

import os

import runpod

CONCURRENCY = int(os.environ.get("CONCURRENCY", "1"))


def handler(job):
    return {"echo": job["input"]}


runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda _: CONCURRENCY})
