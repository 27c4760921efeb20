"""A plain runpod worker that answers with its environment: {"keys": [...]} -> their values."""

import os

import runpod


def handler(job):
    keys = job["input"].get("keys", [])
    return {"env": {k: os.environ.get(k) for k in keys}, "worker": os.environ.get("RUNPOD_POD_ID"),
            "pid": os.getpid()}


runpod.serverless.start({"handler": handler})
