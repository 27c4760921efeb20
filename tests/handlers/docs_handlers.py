"""Handlers written the way RunPod's docs write them; one worker serves them all.

The job's input picks the behaviour: {"mode": "..."}. Async handler, so that several jobs can
run at once (concurrency from $HANDLER_CONCURRENCY) and a cancel reaches it as CancelledError.
"""

import asyncio
import os
import time

import runpod

CONCURRENCY = int(os.environ.get("HANDLER_CONCURRENCY", "1"))


async def handler(job):
    job_input = job["input"]
    mode = job_input.get("mode", "echo")
    if mode == "echo":
        return {"echo": job_input, "worker": os.environ.get("RUNPOD_POD_ID")}
    if mode == "sleep":
        try:
            await asyncio.sleep(job_input.get("seconds", 1))
        except asyncio.CancelledError:
            marker = job_input.get("cancel_marker")
            if marker:
                with open(marker, "w") as f:
                    f.write(job["id"])
            raise
        return {"slept": job_input.get("seconds", 1)}
    if mode == "block":  # a synchronous sleep: ignores cancellation
        time.sleep(job_input.get("seconds", 1))
        return {"blocked": job_input.get("seconds", 1)}
    if mode == "raise":
        raise ValueError(job_input.get("message", "boom from handler"))
    if mode == "error":
        return {"error": job_input.get("message", "handler said bad"), "partial": 1}
    if mode == "empty":
        return {}
    if mode == "string":
        return "just a string"
    if mode == "progress":
        runpod.serverless.progress_update(job, {"pct": 50})
        await asyncio.sleep(job_input.get("seconds", 1.5))
        return {"done": True}
    if mode == "pid":  # reports its pid as progress, then runs until killed
        runpod.serverless.progress_update(job, {"pid": os.getpid()})
        await asyncio.sleep(job_input.get("seconds", 60))
        return {"survived": True}
    if mode == "refresh":
        return {"answer": 42, "refresh_worker": True}
    if mode == "count":  # records each execution, so a test can prove exactly-once
        with open(os.path.join(job_input["dir"], f"{os.getpid()}.txt"), "a") as f:
            f.write(job["id"] + "\n")
        return {"n": job_input["n"], "worker": os.environ.get("RUNPOD_POD_ID")}
    raise ValueError(f"unknown mode {mode}")


runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda _: CONCURRENCY})
