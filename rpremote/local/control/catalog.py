"""``/v2/catalog/gpus | cpus | datacenters``: what can be rented (runpod-rest-v2.md §6).

Seeded from ``platform.py`` (pools, GPU types, serverless prices, CPU flavours, data centers);
the live catalog is authoritative (§6.3). What the emulator can add is availability: it runs
Serverless workers of every pooled GPU type and CPU flavour, and Pods of every GPU type and CPU
flavour (as local processes, ``pods.py``), so a type is HIGH for ``product=SERVERLESS`` when it
has a pool, HIGH for POD, and NONE for CLUSTER. ``rpremote serve --pod-capacity`` does not
show here: as on RunPod, the catalog's stock is a hint, and the create is what may be refused
(rest-v2 §4.6). Prices it does not know (pods, CPUs) are null, not invented.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ... import platform as rp
from .plane import ControlPlane, json_response
from .problems import Problem, invalid, not_found

PRODUCTS = ("POD", "CLUSTER", "SERVERLESS")
CLOUDS = ("SECURE", "COMMUNITY")
REGIONS = ("NORTH_AMERICA", "SOUTH_AMERICA", "EUROPE", "ASIA", "MIDDLE_EAST", "AFRICA",
           "OCEANIA", "ANTARCTICA", "UNKNOWN")
VOLUME_TYPES = ("STANDARD", "HIGH_PERFORMANCE")
COMPLIANCE = ("GDPR", "ISO_IEC_27001", "ISO_14001", "PCI_DSS", "HITRUST", "SOC_1_TYPE_2",
              "SOC_2_TYPE_2", "SOC_3_TYPE_2", "ITAR", "FISMA_HIGH", "HIPAA", "RENEWABLE")
MAX_COUNT = 8  # GPUs in the largest machine (§6.2 "maxCount": not stock); the live value varies


def _list(request: Request, name: str, allowed: tuple[str, ...] | None = None,
          pattern: str | None = None) -> list[str] | None:
    """A comma-separated query parameter (§6.1: ``style=form, explode=false``)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    items = [i.strip() for i in raw.split(",") if i.strip()]
    bad = [i for i in items if (allowed and i not in allowed)
           or (pattern and not re.fullmatch(pattern, i))]
    if bad or not items:
        want = f"one or more of {', '.join(allowed)}" if allowed else f"items matching {pattern}"
        raise invalid([f"query.{name}: got '{raw}', want {want}, comma-separated"])
    return items


def _int(request: Request, name: str, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid([f"query.{name}: got '{raw}', want integer"]) from None
    if value < minimum:
        raise invalid([f"query.{name}: minimum: got {value}, want {minimum}"])
    return value


def _availability_query(request: Request, products: tuple[str, ...],
                        only_with_include: tuple[str, ...]) -> dict[str, Any] | None:
    """The ``include=AVAILABILITY`` family of parameters; None when availability is not asked."""
    include = _list(request, "include", ("AVAILABILITY",))
    if include and len(include) > 1:
        raise invalid([f"query.include: maxItems: got {len(include)}, want 1"])
    product = _list(request, "product", products)
    if include is None:
        given = [n for n in ("product", *only_with_include) if n in request.query_params]
        if given:
            raise Problem(400, f"{', '.join(given)} only apply with include=AVAILABILITY")
        return None
    if product is None:
        raise Problem(400, f"include=AVAILABILITY needs product= (one or more of "
                           f"{', '.join(products)})")
    return {"product": product}


def _level(ok: bool) -> str:
    return "HIGH" if ok else "NONE"


# -- GPUs --------------------------------------------------------------------------------------

def _gpu_query(request: Request) -> dict[str, Any] | None:
    q = _availability_query(request, PRODUCTS, ("count", "cloud", "countryCodes", "cudaVersions",
                                                 "minCudaVersion"))
    if q is None:
        return None
    q["count"] = _int(request, "count", 1) or 1
    cloud = request.query_params.get("cloud", "SECURE")
    if cloud not in CLOUDS:
        raise invalid([f"query.cloud: value must be one of {', '.join(CLOUDS)}"])
    q["countries"] = _list(request, "countryCodes", pattern=r"[A-Z]{2}")
    cuda = _list(request, "cudaVersions", pattern=r"\d+\.\d+")
    minimum = request.query_params.get("minCudaVersion")
    if minimum is not None and not re.fullmatch(r"\d+(\.\d+)?", minimum):
        raise invalid([f"query.minCudaVersion: got '{minimum}', want 12 or 12.1"])
    if cuda and minimum:
        raise Problem(400, "give cudaVersions or minCudaVersion, not both")
    q["cuda"] = cuda
    q["min_cuda"] = tuple(int(x) for x in minimum.split(".")) if minimum else None
    return q


def _manufacturer(type_id: str) -> str:
    if type_id.startswith(("NVIDIA", "Tesla")):
        return "NVIDIA"
    return "AMD" if type_id.startswith("AMD") else "UNKNOWN"


def _gpu(gpu: rp.GpuType, q: dict[str, Any] | None) -> dict[str, Any] | None:
    """A GpuType (§6.2); None when ``countryCodes`` leaves it nowhere (the list drops it)."""
    pool = rp.GPU_POOLS.get(gpu.pool) if gpu.pool else None
    price: dict[str, Any] = {"secure": None, "community": None}  # pod prices: not documented
    if pool and pool.flex_usd_per_s is not None:
        price["serverless"] = round(pool.flex_usd_per_s * 3600, 4)
    out: dict[str, Any] = {
        "id": gpu.id, "name": gpu.display, "pool": gpu.pool,
        "manufacturer": _manufacturer(gpu.id), "memory": gpu.vram_gb, "secure": True,
        "community": True, "price": price,
        "maxCount": {"secure": MAX_COUNT, "community": MAX_COUNT},
    }
    if q is None:
        return out
    runs = q["count"] <= MAX_COUNT and (
        ("SERVERLESS" in q["product"] and gpu.pool is not None) or "POD" in q["product"])
    nvidia = out["manufacturer"] == "NVIDIA"
    versions = [v for v in rp.CUDA_VERSIONS
                if (not q["cuda"] or v in q["cuda"])
                and (not q["min_cuda"] or tuple(map(int, v.split("."))) >= q["min_cuda"])]
    runs = runs and (nvidia and bool(versions) if (q["cuda"] or q["min_cuda"]) else True)
    dcs = [dc for dc in rp.DATA_CENTERS.values()
           if not q["countries"] or dc.country in q["countries"]]
    if not dcs:
        return None
    out["availability"] = _level(runs)
    if runs:
        out["dataCenters"] = [{"id": dc.id, "name": dc.name, "availability": "HIGH"} for dc in dcs]
    if nvidia:  # absent for GPUs without CUDA (§6.2)
        out["cudaVersions"] = [{"version": v, "available": runs and v in versions}
                               for v in rp.CUDA_VERSIONS]
    return out


async def list_gpus(cp: ControlPlane, request: Request, body: Any) -> Response:
    q = _gpu_query(request)
    gpus = [g for g in (_gpu(t, q) for t in rp.GPU_TYPES.values()) if g is not None]
    return json_response({"gpus": gpus})


async def get_gpu(cp: ControlPlane, request: Request, body: Any) -> Response:
    gpu_type = rp.GPU_TYPES.get(request.path_params["id"])
    if gpu_type is None:
        raise not_found("GPU type", request.path_params["id"])
    q = _gpu_query(request)
    out = _gpu(gpu_type, q)
    if out is None:  # a single GPU answers NONE where the list would drop it (§6.1)
        out = {**_gpu(gpu_type, None), "availability": "NONE"}
    return json_response(out)


# -- CPUs --------------------------------------------------------------------------------------

def _cpu(flavor: rp.CpuFlavor, q: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": flavor.id, "name": flavor.name, "group": flavor.group,
        "vcpu": {"min": flavor.vcpu_min, "max": flavor.vcpu_max},
        "ramGbPerVcpu": flavor.ram_gb_per_vcpu,
        "price": {"securePerVcpu": None, "serverlessPerVcpu": None},  # not documented
    }
    if q is not None:
        count = q.get("vcpu")
        runs = (("SERVERLESS" in q["product"] and flavor.serverless) or "POD" in q["product"]) \
            and (count is None or flavor.vcpu_min <= count <= flavor.vcpu_max)
        out["availability"] = _level(runs)
        if runs:
            out["dataCenters"] = [{"id": dc.id, "name": dc.name, "availability": "HIGH"}
                                  for dc in rp.DATA_CENTERS.values()]
    return out


def _cpu_query(request: Request) -> dict[str, Any] | None:
    q = _availability_query(request, ("POD", "SERVERLESS"), ("vcpuCount",))
    if q is not None:
        count = _int(request, "vcpuCount", 2)
        if count is not None and count & (count - 1):
            raise invalid([f"query.vcpuCount: {count} is not a power of two"])
        q["vcpu"] = count
    return q


async def list_cpus(cp: ControlPlane, request: Request, body: Any) -> Response:
    q = _cpu_query(request)
    return json_response({"cpus": [_cpu(f, q) for f in rp.CPU_FLAVORS.values()]})


async def get_cpu(cp: ControlPlane, request: Request, body: Any) -> Response:
    flavor = rp.CPU_FLAVORS.get(request.path_params["id"])
    if flavor is None:
        raise not_found("CPU flavour", request.path_params["id"])
    return json_response(_cpu(flavor, _cpu_query(request)))


# -- data centers ---------------------------------------------------------------------------------

def _dc_query(request: Request) -> dict[str, Any]:
    include = _list(request, "include", ("GPU_AVAILABILITY", "CPU_AVAILABILITY")) or []
    network = request.query_params.get("globalNetwork")
    if network is not None and network not in ("true", "false"):
        raise invalid([f"query.globalNetwork: got '{network}', want true or false"])
    return {"include": include, "regions": _list(request, "regions", REGIONS),
            "volumes": _list(request, "networkVolumeTypes", VOLUME_TYPES),
            "compliance": _list(request, "compliance", COMPLIANCE),
            "global": None if network is None else network == "true"}


def _dc(dc: rp.DataCenter, include: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": dc.id, "name": dc.name, "region": dc.region,
                           "globalNetwork": dc.global_network,
                           "networkVolumeTypes": list(dc.volume_types), "compliance": []}
    if "GPU_AVAILABILITY" in include:
        out["gpuAvailability"] = [{"id": t.id, "name": t.display, "availability": "HIGH"}
                                  for t in rp.GPU_TYPES.values() if t.pool]
    if "CPU_AVAILABILITY" in include:
        out["cpuAvailability"] = [{"id": f.id, "name": f.name, "availability": "HIGH"}
                                  for f in rp.CPU_FLAVORS.values() if f.serverless]
    return out


def _dc_matches(dc: rp.DataCenter, q: dict[str, Any]) -> bool:
    return ((not q["regions"] or dc.region in q["regions"])            # OR
            and all(v in dc.volume_types for v in q["volumes"] or ())   # AND
            and not q["compliance"]                                     # AND; none known
            and (q["global"] is None or dc.global_network == q["global"]))


async def list_data_centers(cp: ControlPlane, request: Request, body: Any) -> Response:
    q = _dc_query(request)
    return json_response({"dataCenters": [_dc(dc, q["include"]) for dc in rp.DATA_CENTERS.values()
                                          if _dc_matches(dc, q)]})


async def get_data_center(cp: ControlPlane, request: Request, body: Any) -> Response:
    dc = rp.DATA_CENTERS.get(request.path_params["id"])
    if dc is None:
        raise not_found("data center", request.path_params["id"])
    return json_response(_dc(dc, _dc_query(request)["include"]))
