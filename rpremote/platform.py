"""Facts about the RunPod platform, in one place.

Every limit, default and state name the client, the executor and the emulator rely on lives
here, with the section of ``docs/runpod-contract.md`` it comes from. Change a number here, not
at the place that uses it.
"""

from __future__ import annotations

# Job states (§1.5). RUNNING is listed by the docs but every response uses IN_PROGRESS.
IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMED_OUT = "TIMED_OUT"
TERMINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
RETRYABLE_STATES = frozenset({FAILED, TIMED_OUT})

# Payload limits (§1.3). The docs say "MB"; we read it as MiB, the generous reading.
RUN_MAX_BYTES = 10 * 1024 * 1024
RUNSYNC_MAX_BYTES = 20 * 1024 * 1024
STREAM_CHUNK_MAX_BYTES = 1024 * 1024

# /runsync?wait= (§1.6), milliseconds.
RUNSYNC_WAIT_DEFAULT_MS = 90_000
RUNSYNC_WAIT_MIN_MS = 1_000
RUNSYNC_WAIT_MAX_MS = 300_000

# Result retention after a job ends (§1.6), seconds.
RETENTION_RUN_S = 30 * 60
RETENTION_RUNSYNC_S = 60

# Per-job policy (§1.3), milliseconds.
EXECUTION_TIMEOUT_DEFAULT_MS = 600_000
EXECUTION_TIMEOUT_MIN_MS = 5_000
EXECUTION_TIMEOUT_MAX_MS = 7 * 24 * 3600 * 1000
TTL_DEFAULT_MS = 24 * 3600 * 1000
TTL_MIN_MS = 10_000
TTL_MAX_MS = 7 * 24 * 3600 * 1000

# Webhooks (§1.3): one POST, then at most 2 more, 10 s apart.
WEBHOOK_RETRIES = 2
WEBHOOK_RETRY_DELAY_S = 10.0

# Endpoint settings (§3.1, §3.2).
WORKERS_MIN_DEFAULT = 0
WORKERS_MAX_DEFAULT = 3
IDLE_TIMEOUT_DEFAULT_S = 5
IDLE_TIMEOUT_MIN_S = 1
IDLE_TIMEOUT_MAX_S = 3600
SCALER_QUEUE_DELAY = "QUEUE_DELAY"
SCALER_REQUEST_COUNT = "REQUEST_COUNT"
SCALER_TYPES = (SCALER_QUEUE_DELAY, SCALER_REQUEST_COUNT)
SCALER_VALUE_DEFAULT = 4

# The SDK version the worker protocol was checked against (runpod-worker-protocol.md).
RUNPOD_SDK_VERSION = "1.12.0"
