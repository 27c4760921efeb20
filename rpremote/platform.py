"""Facts about the RunPod platform, in one place.

Every limit, default and state name the client, the executor and the emulator rely on lives
here, with the section of ``docs/runpod-contract.md`` it comes from. Change a number here, not
at the place that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

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

# The rpremote worker image for RunPod (docker/, issue 5): one tag per Python minor, each with
# the same cloudpickle series. What a RunPod worker runs is known before anything is sent, so
# the client compares its own Python and cloudpickle with these and fails fast. (The image is
# not published yet; these are the versions it is built with.)
WORKER_IMAGE_REPO = "rpremote/worker"
WORKER_IMAGE_PYTHONS = ("3.11", "3.12", "3.13")
WORKER_IMAGE_CLOUDPICKLE = "3.1"  # major.minor


def worker_image(python: str) -> str:
    """The worker image tag for a Python minor version, e.g. ``rpremote/worker:py3.11``."""
    return f"{WORKER_IMAGE_REPO}:py{python}"


@dataclass(frozen=True)
class OfficialImage:
    """An official RunPod image a fresh account can run with nothing built: rpremote's
    endpoints use it by default, and its start command bootstraps rpremote (``bootstrap.py``)."""

    tag: str
    python: str  # major.minor of the image's `python`
    cuda: str
    torch: str


# The default worker image per client Python minor (issue 15). Sources: these tags are the
# ones RunPod's templates and users' Dockerfiles name; Python as reported by users of each
# (runpod/pytorch:1.0.2-...-ubuntu2404 runs Ubuntu 24.04's Python 3.12.3). No official image
# has Python 3.13 yet: a 3.13 client needs image= (docker/Dockerfile builds one).
OFFICIAL_IMAGES = (
    OfficialImage("runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04", "3.11", "12.4.1",
                  "2.4.0"),
    OfficialImage("runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404", "3.12", "12.8.1", "2.8.0"),
)
OFFICIAL_IMAGE_OF_PYTHON = {i.python: i for i in OFFICIAL_IMAGES}


def official_image(tag: str) -> OfficialImage | None:
    """The official image ``tag`` names (``docker.io/`` prefixes ignored), or None."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if tag.startswith(prefix):
            tag = tag[len(prefix):]
    return next((i for i in OFFICIAL_IMAGES if i.tag == tag), None)


# Distributions every worker has (the executor's own): never detected as dependencies, never
# installed per call; cloudpickle's version is checked on its own (parity).
WORKER_BASE_DISTRIBUTIONS = frozenset({"rpremote", "runpod", "cloudpickle"})

# Where a worker caches installed dependencies: a RunPod network volume when one is attached
# (mounted at /runpod-volume on Serverless, §2.11), so the endpoint's workers share one install.
NETWORK_VOLUME_DIR = "/runpod-volume"

# The S3-compatible API of network volumes (runpod-rest-v2.md §5.2): the bucket is the volume
# id, the region its data center id, and each data center below has its own endpoint
# (S3_API_ENDPOINT with the id lowercased). Separate keys: access key id = the RunPod user id
# (user_...), secret = an S3 API key (rps_...), never the RunPod API key. No presigned URLs,
# no DeleteObjects, no lifecycle rules; a single PUT and each multipart part at most 500 MB
# (read as 10**6 bytes: the strict reading); 502s are common, retry up to 10 attempts.
S3_API_DATA_CENTERS = (
    "EU-CZ-1", "EU-RO-1", "EUR-IS-1", "EUR-NO-1", "US-CA-2", "US-GA-2", "US-IL-1", "US-KS-2",
    "US-MD-1", "US-MO-1", "US-MO-2", "US-NC-1", "US-NC-2", "US-NE-1", "US-WA-1",
)
S3_API_ENDPOINT = "https://s3api-{dc}.runpod.io/"
S3_API_MAX_PUT_BYTES = 500 * 1000 * 1000
S3_API_MAX_PART_BYTES = 500 * 1000 * 1000
S3_API_MAX_ATTEMPTS = 10


def s3_api_endpoint(data_center: str) -> str:
    """``https://s3api-eu-ro-1.runpod.io/`` for ``EU-RO-1`` (§5.2's table spelling)."""
    return S3_API_ENDPOINT.format(dc=data_center.lower())


# GPU pools, GPU types and their Serverless prices (§3.4, §3.5, §6.1).
# A pool is what the platform schedules on; a type is one card model. `gpu="ADA_24"` picks a pool,
# `gpu="NVIDIA GeForce RTX 4090"` a type; either way the price is the pool's (§6.1 prices pools).

@dataclass(frozen=True)
class GpuPool:
    """A Serverless GPU pool (§3.4). ``vram_gb`` is a floor: some members have more (§3.5)."""

    id: str
    vram_gb: int
    gpu_types: tuple[str, ...]
    flex_usd_per_s: float | None
    active_usd_per_s: float | None


@dataclass(frozen=True)
class GpuType:
    """A long-form GPU type ID (§3.5). ``pool`` is None when no serverless pool lists the type."""

    id: str
    display: str
    vram_gb: int | None
    pool: str | None


_POOLS = (
    # Platform pool table (§3.4) with the §6.1 per-second prices (flex, active).
    # CONFLICT (§3.4): NEWDOCS' Flash page puts L4 in ADA_24 and A4500 in AMPERE_24; we follow the
    # platform table and Flash's own source: L4 in AMPERE_24, A4500 in AMPERE_16.
    GpuPool("AMPERE_16", 16, ("NVIDIA RTX A4000", "NVIDIA RTX A4500",
                              "NVIDIA RTX 4000 Ada Generation", "NVIDIA RTX 2000 Ada Generation"),
            0.00016, 0.00011),
    GpuPool("AMPERE_24", 24, ("NVIDIA L4", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090"),
            0.00019, 0.00013),
    GpuPool("ADA_24", 24, ("NVIDIA GeForce RTX 4090",), 0.00031, 0.00021),
    GpuPool("AMPERE_48", 48, ("NVIDIA RTX A6000", "NVIDIA A40"), 0.00034, 0.00024),
    GpuPool("ADA_48_PRO", 48, ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation"),
            0.00053, 0.00037),
    GpuPool("AMPERE_80", 80, ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"), 0.00076, 0.00060),
    # H100 (Hopper, despite the name). Flash maps only the HBM3 card; its docstring adds PCIe, NVL.
    GpuPool("ADA_80_PRO", 80, ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"),
            0.00116, 0.00093),
    GpuPool("HOPPER_141", 141, ("NVIDIA H200",), 0.00155, 0.00124),
    # Flash-only pools (§3.4), not in the platform docs' pool table. The RTX 5090 price is not
    # documented (§6.1). The two Blackwell prices are INFERRED: §6.1 matches the "6000s PRO"
    # and "B200" rows to these pools only with a "?" (the 6000s active price: not documented).
    GpuPool("ADA_32_PRO", 32, ("NVIDIA GeForce RTX 5090",), None, None),
    GpuPool("BLACKWELL_96", 96, ("NVIDIA RTX PRO 6000 Blackwell Server Edition",
                                 "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                                 "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"),
            0.00111, None),
    GpuPool("BLACKWELL_180", 180, ("NVIDIA B200",), 0.00240, 0.00190),
    # Flash's "any" pool is left out on purpose: whether the platform accepts it is not documented.
)
GPU_POOLS: dict[str, GpuPool] = {p.id: p for p in _POOLS}

_TYPES = (
    # (type ID, display, VRAM GB) from the §3.5 table.
    ("AMD Instinct MI300X OAM", "MI300X", 192),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80),
    ("NVIDIA A30", "A30", 24),
    ("NVIDIA A40", "A40", 48),
    ("NVIDIA B200", "B200", 180),
    ("NVIDIA GeForce RTX 3070", "RTX 3070", 8),
    ("NVIDIA GeForce RTX 3080", "RTX 3080", 10),
    ("NVIDIA GeForce RTX 3080 Ti", "RTX 3080 Ti", 12),
    ("NVIDIA GeForce RTX 3090", "RTX 3090", 24),
    ("NVIDIA GeForce RTX 3090 Ti", "RTX 3090 Ti", 24),
    ("NVIDIA GeForce RTX 4070 Ti", "RTX 4070 Ti", 12),
    ("NVIDIA GeForce RTX 4080", "RTX 4080", 16),
    ("NVIDIA GeForce RTX 4080 SUPER", "RTX 4080 SUPER", 16),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24),
    ("NVIDIA GeForce RTX 5080", "RTX 5080", 16),
    ("NVIDIA GeForce RTX 5090", "RTX 5090", 32),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80),
    ("NVIDIA H100 NVL", "H100 NVL", 94),
    ("NVIDIA H100 PCIe", "H100 PCIe", 80),
    ("NVIDIA H200", "H200 SXM", 141),
    ("NVIDIA L4", "L4", 24),
    ("NVIDIA L40", "L40", 48),
    ("NVIDIA L40S", "L40S", 48),
    ("NVIDIA RTX 2000 Ada Generation", "RTX 2000 Ada", 16),
    ("NVIDIA RTX 4000 Ada Generation", "RTX 4000 Ada", 20),
    ("NVIDIA RTX 4000 SFF Ada Generation", "RTX 4000 Ada SFF", 20),
    ("NVIDIA RTX 5000 Ada Generation", "RTX 5000 Ada", 32),
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", 48),
    ("NVIDIA RTX A2000", "RTX A2000", 6),
    ("NVIDIA RTX A4000", "RTX A4000", 16),
    ("NVIDIA RTX A4500", "RTX A4500", 20),
    ("NVIDIA RTX A5000", "RTX A5000", 24),
    ("NVIDIA RTX A6000", "RTX A6000", 48),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000 Server", 96),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "RTX PRO 6000 Workstation", 96),
    ("Tesla V100-FHHL-16GB", "V100 FHHL", 16),
    ("Tesla V100-PCIE-16GB", "Tesla V100", 16),
    ("Tesla V100-SXM2-16GB", "V100 SXM2", 16),
    ("Tesla V100-SXM2-32GB", "V100 SXM2 32GB", 32),
    # Accepted by OAS1's enum but not in the table (§3.5 notes): VRAM not documented, and the
    # display names are ours. The double-space IDs ("NVIDIA  RTX A4500", "NVIDIA  A30") are skipped.
    ("NVIDIA H200 NVL", "H200 NVL", None),
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "RTX PRO 6000 Max-Q", None),
    ("NVIDIA A5000 Ada", "A5000 Ada", None),
    ("Tesla V100-PCIE-32GB", "Tesla V100 32GB", None),
    ("Tesla T4", "T4", None),
    ("NVIDIA RTX A30", "RTX A30", None),
    ("NVIDIA GeForce RTX 3080TI", "RTX 3080TI", None),
)
_POOL_OF_TYPE = {t: p.id for p in _POOLS for t in p.gpu_types}
GPU_TYPES: dict[str, GpuType] = {
    tid: GpuType(tid, display, vram, _POOL_OF_TYPE.get(tid)) for tid, display, vram in _TYPES
}


# -- The REST v2 control plane (runpod-rest-v2.md), as the emulator serves it -----------------

# The top-level names under /v2 that belong to the control plane (§1, §2-§7). The job API's
# /v2/{endpoint_id}/... shares the prefix, so no endpoint may be called one of these.
REST_V2_NAMES = frozenset({
    "serverless", "pods", "templates", "network-volumes", "registries", "catalog", "account",
    "billing", "clusters", "openapi.json", "networkvolumes", "endpoints",
})
REST_BODY_MAX_BYTES = 102_400  # §1.3: 413 above this, checked before authentication
REST_V2_BASE_URL = "https://api.runpod.io"  # §1.1: every path starts /v2/ (RPREMOTE_RUNPOD_API)
# The job API (contract §1): /v2/{endpoint_id}/run ...; an endpoint's requestUrls win when the
# control plane returns them (RPREMOTE_RUNPOD_QUEUE).
JOB_API_BASE_URL = "https://api.runpod.ai"
REST_PAGE_LIMIT_MAX = 1000     # §1.6: limit 1-1000, default 1000 (serverless, templates)

# Rate limits (§1.7): per user, three windows, every request counts against all three.
# CONFLICT (§9.1.14): the spec's example quotas (60/min, 3000/h, 50000/day) are below what was
# observed live (176 left in a minute, 7193 in an hour); we take round numbers above the
# observed ones, so that a client tuned to the emulator is not throttled earlier on RunPod.
REST_RATE_LIMITS = (("minute", 60, 200), ("hour", 3600, 7200), ("day", 86400, 50_000))

# Endpoint defaults and limits of POST /v2/serverless (§2.2); idleTimeout's REST default is 10 s
# (the console's is IDLE_TIMEOUT_DEFAULT_S).
REST_IDLE_TIMEOUT_DEFAULT_S = 10
REST_QUEUE_DELAY_MIN_S = 0.5
REST_ENDPOINT_TIMEOUT_DEFAULT_MS = 300_000  # the spec's default ...
# ... CONFLICT (§9.1.4): omitted, the live API stores and returns 0. The emulator does the
# same, and runs such an endpoint's jobs with EXECUTION_TIMEOUT_DEFAULT_MS.
REST_ENDPOINT_TIMEOUT_OMITTED_MS = 0
# GAP (§9.2): no documented default container disk; runpodctl sends 10 GB when none is given.
REST_DISK_DEFAULT_GB = 10
# Network volumes (§5.1): size in GB, grows only.
VOLUME_SIZE_MIN_GB = 10
VOLUME_SIZE_MAX_GB = 4096
# Worker log streams (§4.8).
LOG_TAIL_DEFAULT = 100
LOG_TAIL_MAX = 5000

# CUDA versions a GPU endpoint may allow (runpod-contract.md §3.1).
CUDA_VERSIONS = ("11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7",
                 "12.8", "12.9", "13.0")


@dataclass(frozen=True)
class CpuFlavor:
    """A CPU flavour (contract §3.6, rest-v2 §6.2): RAM per vCPU, vCPU range (powers of two)."""

    id: str
    name: str
    group: str
    ram_gb_per_vcpu: float
    vcpu_min: int
    vcpu_max: int
    serverless: bool


CPU_FLAVORS: dict[str, CpuFlavor] = {f.id: f for f in (
    # vCPU ranges: §6.2's example (2-32); the instance table of contract §3.6 stops at 8.
    # c/g/m = 2/4/8 GB per vCPU (a third-party table, §6.2); pods also take the m flavours.
    CpuFlavor("cpu3c", "Compute-Optimized", "Gen 3", 2, 2, 32, True),
    CpuFlavor("cpu3g", "General Purpose", "Gen 3", 4, 2, 32, True),
    CpuFlavor("cpu3m", "Memory-Optimized", "Gen 3", 8, 2, 32, False),
    CpuFlavor("cpu5c", "Compute-Optimized", "Gen 5", 2, 2, 32, True),
    CpuFlavor("cpu5g", "General Purpose", "Gen 5", 4, 2, 32, True),
    CpuFlavor("cpu5m", "Memory-Optimized", "Gen 5", 8, 2, 32, False),
)}


@dataclass(frozen=True)
class DataCenter:
    """A data center (rest-v2 §6.2, §6.3; contract §3.7). Names and countries are ours (the ids
    must not be parsed for them, §6.3); ``volume_types`` is STANDARD where the S3 API of network
    volumes is documented (§5.2), none elsewhere: where else volumes exist is not documented."""

    id: str
    name: str
    region: str
    country: str
    global_network: bool
    volume_types: tuple[str, ...]


_GLOBAL_NETWORK_DCS = frozenset((
    "CA-MTL-3 EU-CZ-1 EU-FR-1 EU-NL-1 EU-RO-1 EU-SE-1 EUR-IS-2 OC-AU-1 US-CA-2 US-GA-1 US-GA-2 "
    "US-IL-1 US-KS-2 US-NC-1 US-TX-3 US-TX-4 US-WA-1").split())
_DCS = (
    # (id, name, region, ISO country)
    ("AP-JP-1", "Japan 1", "ASIA", "JP"),
    ("CA-MTL-1", "Canada Montreal 1", "NORTH_AMERICA", "CA"),
    ("CA-MTL-2", "Canada Montreal 2", "NORTH_AMERICA", "CA"),
    ("CA-MTL-3", "Canada Montreal 3", "NORTH_AMERICA", "CA"),
    ("EU-CZ-1", "Europe Czechia 1", "EUROPE", "CZ"),
    ("EU-FR-1", "Europe France 1", "EUROPE", "FR"),
    ("EU-NL-1", "Europe Netherlands 1", "EUROPE", "NL"),
    ("EU-RO-1", "Europe Romania 1", "EUROPE", "RO"),
    ("EU-SE-1", "Europe Sweden 1", "EUROPE", "SE"),
    ("EUR-IS-1", "Europe Iceland 1", "EUROPE", "IS"),
    ("EUR-IS-2", "Europe Iceland 2", "EUROPE", "IS"),
    ("EUR-IS-3", "Europe Iceland 3", "EUROPE", "IS"),
    ("EUR-NO-1", "Europe Norway 1", "EUROPE", "NO"),
    ("OC-AU-1", "Oceania Australia 1", "OCEANIA", "AU"),
    ("US-CA-2", "US California 2", "NORTH_AMERICA", "US"),
    ("US-DE-1", "US Delaware 1", "NORTH_AMERICA", "US"),
    ("US-GA-1", "US Georgia 1", "NORTH_AMERICA", "US"),
    ("US-GA-2", "US Georgia 2", "NORTH_AMERICA", "US"),
    ("US-IL-1", "US Illinois 1", "NORTH_AMERICA", "US"),
    ("US-KS-2", "US Kansas 2", "NORTH_AMERICA", "US"),
    ("US-KS-3", "US Kansas 3", "NORTH_AMERICA", "US"),
    ("US-MD-1", "US Maryland 1", "NORTH_AMERICA", "US"),
    ("US-MO-1", "US Missouri 1", "NORTH_AMERICA", "US"),
    ("US-MO-2", "US Missouri 2", "NORTH_AMERICA", "US"),
    ("US-NC-1", "US North Carolina 1", "NORTH_AMERICA", "US"),
    ("US-NC-2", "US North Carolina 2", "NORTH_AMERICA", "US"),
    ("US-NE-1", "US Nebraska 1", "NORTH_AMERICA", "US"),
    ("US-TX-1", "US Texas 1", "NORTH_AMERICA", "US"),
    ("US-TX-3", "US Texas 3", "NORTH_AMERICA", "US"),
    ("US-TX-4", "US Texas 4", "NORTH_AMERICA", "US"),
    ("US-WA-1", "US Washington 1", "NORTH_AMERICA", "US"),
)
DATA_CENTERS: dict[str, DataCenter] = {
    dc: DataCenter(dc, name, region, country, dc in _GLOBAL_NETWORK_DCS,
                   ("STANDARD",) if dc in S3_API_DATA_CENTERS else ())
    for dc, name, region, country in _DCS
}
