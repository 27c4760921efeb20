"""Settings of the emulator (timings) and of each endpoint it hosts (workers, scaler)."""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import platform as rp

ENDPOINT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass
class EmulatorTimings:
    """How long the emulator holds polls and waits before it calls something lost.

    Production-like defaults; tests shorten them through ``rpremote serve`` flags.
    """

    take_hold_s: float = 20.0          # job-take / job-take-batch long-poll
    stop_hold_s: float = 20.0          # job-stop long-poll
    stream_hold_s: float = 3.0         # /stream long-poll when no chunk is ready
    ping_interval_ms: int = 2_000      # RUNPOD_PING_INTERVAL handed to workers (>= 1000)
    lost_after_s: float = 30.0         # heartbeat silence after which a worker is lost
    stop_grace_s: float = 10.0         # a stopped job still running after this: refresh worker
    retention_run_s: float = rp.RETENTION_RUN_S
    retention_sync_s: float = rp.RETENTION_RUNSYNC_S
    webhook_retry_delay_s: float = rp.WEBHOOK_RETRY_DELAY_S
    tick_s: float = 0.2                # housekeeping period (timeouts, TTL, scaler)
    worker_term_grace_s: float = 5.0   # SIGTERM -> SIGKILL for a retiring worker
    blob_ttl_s: float = 24 * 3600.0    # offload store: pieces unused this long are removed
    blob_piece_max_mb: int = 8192      # offload store: largest piece
    blob_total_max_mb: int = 65536     # offload store: total; least recently used go first


@dataclass
class EndpointSpec:
    """One emulated endpoint. Field names follow RunPod's REST v1 endpoint object."""

    id: str
    workerCmd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    gpu: str = "CPU"
    workersMin: int = rp.WORKERS_MIN_DEFAULT
    workersMax: int = rp.WORKERS_MAX_DEFAULT
    idleTimeout: int = rp.IDLE_TIMEOUT_DEFAULT_S
    scalerType: str = rp.SCALER_QUEUE_DELAY
    scalerValue: float = rp.SCALER_VALUE_DEFAULT
    executionTimeoutMs: int = rp.EXECUTION_TIMEOUT_DEFAULT_MS
    # Why this endpoint's workers cannot start (on RunPod: an image it cannot pull). Its
    # workers are then shown unhealthy with this reason, and its jobs wait in the queue.
    startError: str | None = None
    # The endpoint's release (REST v2 §2.5): workers of an older one are replaced.
    release: int = 0
    # An official image's clean environment (images.py): a virtual environment the worker
    # command runs in, with a fresh container disk (HOME) per worker and none of the
    # emulator's own environment. None: the worker runs with the emulator's interpreter.
    pythonEnv: str | None = None
    # The directory standing for the endpoint's network volume (/runpod-volume on RunPod),
    # handed to its workers as RPREMOTE_VOLUME_MOUNT.
    volumeMount: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not ENDPOINT_ID_RE.match(self.id or ""):
            problems.append(
                f"endpoint id {self.id!r} must be lowercase letters, digits and dashes "
                "(1-64 characters, starting with a letter or digit)"
            )
        elif self.id in rp.REST_V2_NAMES:
            problems.append(
                f"endpoint id {self.id!r} is taken by RunPod's control plane (/v2/{self.id}); "
                "pick another name"
            )
        if self.workerCmd is not None and not shlex.split(self.workerCmd):
            problems.append("workerCmd is empty; give the command that starts one worker")
        if self.pythonEnv is not None and not self.workerCmd:
            problems.append("pythonEnv is the environment of a worker command; give workerCmd")
        if not 0 <= self.workersMin <= self.workersMax:
            problems.append(
                f"need 0 <= workersMin <= workersMax (got {self.workersMin} and {self.workersMax})"
            )
        if not rp.IDLE_TIMEOUT_MIN_S <= self.idleTimeout <= rp.IDLE_TIMEOUT_MAX_S:
            problems.append(
                f"idleTimeout is in seconds, {rp.IDLE_TIMEOUT_MIN_S}-{rp.IDLE_TIMEOUT_MAX_S} "
                f"(got {self.idleTimeout})"
            )
        if self.scalerType not in rp.SCALER_TYPES:
            problems.append(f"scalerType must be one of {', '.join(rp.SCALER_TYPES)}")
        elif self.scalerType == rp.SCALER_REQUEST_COUNT and self.scalerValue < 1:
            problems.append("scalerValue for REQUEST_COUNT is a divisor and must be >= 1")
        elif self.scalerValue < 0:
            problems.append("scalerValue for QUEUE_DELAY is seconds and must be >= 0")
        if not rp.EXECUTION_TIMEOUT_MIN_MS <= self.executionTimeoutMs <= rp.EXECUTION_TIMEOUT_MAX_MS:
            problems.append(
                f"executionTimeoutMs must be {rp.EXECUTION_TIMEOUT_MIN_MS}-"
                f"{rp.EXECUTION_TIMEOUT_MAX_MS} ms (got {self.executionTimeoutMs})"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EndpointSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown endpoint field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
