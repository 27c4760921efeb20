"""GPU names, prices and ``@remote`` resource settings: checked before anything is sent."""

from __future__ import annotations

import dataclasses
import re

import pytest

from rpremote import platform as rp
from rpremote.errors import ConfigError
from rpremote.resources import Resources, make_resources, resolve_gpu

ENDPOINT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # the emulator's rule


# --- resolve_gpu ----------------------------------------------------------------------------


def test_none_is_cpu():
    assert resolve_gpu(None) == ()


@pytest.mark.parametrize("value", ["ADA_24", "ada_24", "Ada_24", "  ADA_24 "])
def test_pool_ids_any_case(value):
    assert resolve_gpu(value) == ("ADA_24",)


@pytest.mark.parametrize("value", ["NVIDIA GeForce RTX 4090", "nvidia geforce rtx 4090",
                                   " NVIDIA GeForce RTX 4090\n"])
def test_type_ids(value):
    assert resolve_gpu(value) == ("NVIDIA GeForce RTX 4090",)


@pytest.mark.parametrize("display, type_id", [
    ("RTX 4090", "NVIDIA GeForce RTX 4090"),
    ("rtx 4090", "NVIDIA GeForce RTX 4090"),
    ("H100 SXM", "NVIDIA H100 80GB HBM3"),
    ("h200 sxm", "NVIDIA H200"),
    ("L4", "NVIDIA L4"),
])
def test_display_names_map_to_type_ids(display, type_id):
    assert resolve_gpu(display) == (type_id,)


def test_lists_keep_order_and_drop_duplicates():
    assert resolve_gpu(["ada_24", "RTX 4090", "AMPERE_16", "ADA_24",
                        "NVIDIA GeForce RTX 4090"]) == ("ADA_24", "NVIDIA GeForce RTX 4090",
                                                        "AMPERE_16")
    assert resolve_gpu(("L4",)) == ("NVIDIA L4",)


def test_empty_list_is_an_error():
    with pytest.raises(ConfigError, match="None for CPU"):
        resolve_gpu([])


@pytest.mark.parametrize("bad, suggestion", [("ADA_42", "ADA_24"), ("RTX 4900", "4090"),
                                             ("AMPERE_32", "AMPERE_")])
def test_unknown_names_suggest_close_ones(bad, suggestion):
    with pytest.raises(ConfigError) as info:
        resolve_gpu(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "did you mean" in message and suggestion in message.split("did you mean", 1)[1]
    assert "use a pool id like ADA_24" in message and "None for CPU" in message


def test_unknown_name_inside_a_list():
    with pytest.raises(ConfigError, match="ADA_24"):
        resolve_gpu(["AMPERE_16", "ADA_42"])


@pytest.mark.parametrize("value", ["any", "ANY", "", "NVIDIA  RTX A4500x"])
def test_any_and_nonsense_are_refused(value):
    with pytest.raises(ConfigError):
        resolve_gpu(value)


@pytest.mark.parametrize("value", [24, 24.0, True, {"ADA_24": 1}, ["ADA_24", 24], [["ADA_24"]]])
def test_non_strings_are_refused_clearly(value):
    with pytest.raises(ConfigError, match="must be a string"):
        resolve_gpu(value)


# --- prices and VRAM ------------------------------------------------------------------------


def test_flex_price_of_one_pool():
    assert make_resources("ADA_24").flex_usd_per_s == pytest.approx(0.00031)


def test_flex_price_scales_with_gpu_count():
    assert make_resources("ADA_24", gpu_count=2).flex_usd_per_s == pytest.approx(0.00062)


def test_flex_price_of_a_list_is_the_dearest():
    assert make_resources(["AMPERE_16", "ADA_24"]).flex_usd_per_s == pytest.approx(0.00031)


def test_a_type_costs_what_its_pool_costs():
    assert make_resources("RTX 4090").flex_usd_per_s == pytest.approx(0.00031)
    assert make_resources("H100 PCIe").flex_usd_per_s == pytest.approx(0.00116)


def test_unknown_prices_give_none():
    assert make_resources().flex_usd_per_s is None  # CPU
    assert make_resources("ADA_32_PRO").flex_usd_per_s is None  # RTX 5090: not documented
    assert make_resources(["ADA_24", "RTX 5090"]).flex_usd_per_s is None
    assert make_resources("Tesla V100-SXM2-16GB").flex_usd_per_s is None  # in no pool


def test_vram_is_the_smallest_choice():
    assert make_resources().vram_gb is None
    assert make_resources("ADA_24").vram_gb == 24
    assert make_resources(["AMPERE_16", "AMPERE_80"]).vram_gb == 16
    assert make_resources("H100 NVL").vram_gb == 94


# --- Resources ------------------------------------------------------------------------------


def test_describe():
    assert make_resources().describe() == "CPU"
    assert make_resources("ada_24").describe() == "ADA_24"
    assert make_resources("ADA_24", gpu_count=2).describe() == "2 x ADA_24"
    assert make_resources(["ADA_24", "RTX 4090"]).describe() == "ADA_24 | NVIDIA GeForce RTX 4090"


def test_endpoint_name_is_stable_and_valid():
    a = make_resources("ADA_24", workers=(1, 4), env={"B": "2", "A": "1"})
    b = make_resources("ada_24", workers=[1, 4], env={"A": "1", "B": "2"})
    assert a == b and a.endpoint_name == b.endpoint_name
    assert a.endpoint_name.startswith("rpremote-ada-24-")
    assert make_resources().endpoint_name.startswith("rpremote-cpu-")
    long = make_resources("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition").endpoint_name
    for name in (a.endpoint_name, make_resources().endpoint_name, long):
        assert ENDPOINT_ID_RE.match(name), name


def test_endpoint_name_changes_with_every_field():
    base = make_resources("ADA_24", gpu_count=1, workers=(0, 3), idle_timeout=5, env={"A": "1"})
    changes = {
        "gpu": ("AMPERE_24",), "gpu_count": 2, "workers_min": 1, "workers_max": 4,
        "idle_timeout": 6, "env": (("A", "2"),),
    }
    assert set(changes) == {f.name for f in dataclasses.fields(Resources)}
    names = {base.endpoint_name}
    for field, value in changes.items():
        names.add(dataclasses.replace(base, **{field: value}).endpoint_name)
    assert len(names) == len(changes) + 1


def test_resources_are_frozen_and_hashable():
    r = make_resources("ADA_24", env={"A": "1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.gpu_count = 2  # type: ignore[misc]
    assert hash(r) == hash(make_resources("ADA_24", env={"A": "1"}))


# --- make_resources -------------------------------------------------------------------------


def test_defaults():
    r = make_resources()
    assert (r.gpu, r.gpu_count, r.workers_min, r.workers_max, r.idle_timeout) == (
        (), 1, rp.WORKERS_MIN_DEFAULT, rp.WORKERS_MAX_DEFAULT, rp.IDLE_TIMEOUT_DEFAULT_S)
    assert r.env == ()


def test_workers_int_means_zero_to_n():
    r = make_resources(workers=5)
    assert (r.workers_min, r.workers_max) == (0, 5)


@pytest.mark.parametrize("gpu_count", [0, 9, -1, 1.0, True, "2", None])
def test_bad_gpu_count(gpu_count):
    with pytest.raises(ConfigError, match="gpu_count"):
        make_resources("ADA_24", gpu_count=gpu_count)


def test_gpu_count_needs_a_gpu():
    with pytest.raises(ConfigError, match="needs a gpu"):
        make_resources(None, gpu_count=2)
    assert make_resources("ADA_24", gpu_count=8).gpu_count == 8


@pytest.mark.parametrize("workers", [0, -1, 101, (2, 1), (-1, 3), (0, 0), (0, 101), (1, 2, 3),
                                     (0,), True, (False, 3), (0, 2.0), "3", None])
def test_bad_workers(workers):
    with pytest.raises(ConfigError, match="workers"):
        make_resources(workers=workers)


def test_workers_bounds_accepted():
    r = make_resources(workers=(100, 100))
    assert (r.workers_min, r.workers_max) == (100, 100)
    assert make_resources(workers=1).workers_max == 1


@pytest.mark.parametrize("idle", [0, rp.IDLE_TIMEOUT_MAX_S + 1, -5, 5.0, True, "5", None])
def test_bad_idle_timeout(idle):
    with pytest.raises(ConfigError, match="idle_timeout"):
        make_resources(idle_timeout=idle)


def test_idle_timeout_bounds_accepted():
    assert make_resources(idle_timeout=rp.IDLE_TIMEOUT_MIN_S).idle_timeout == rp.IDLE_TIMEOUT_MIN_S
    assert make_resources(idle_timeout=rp.IDLE_TIMEOUT_MAX_S).idle_timeout == rp.IDLE_TIMEOUT_MAX_S


def test_env_sorted():
    assert make_resources(env={"Z": "1", "_a": "2", "A1": ""}).env == (
        ("A1", ""), ("Z", "1"), ("_a", "2"))


@pytest.mark.parametrize("env, match", [
    ({"1A": "x"}, "not a variable name"),
    ({"A-B": "x"}, "not a variable name"),
    ({"": "x"}, "not a variable name"),
    ({3: "x"}, "not a variable name"),
    ({"A": 1}, "must be a str"),
    ({"A": None}, "must be a str"),
    ({"RUNPOD_POD_ID": "x"}, "RUNPOD_"),
    ({"runpod_x": "x"}, "RUNPOD_"),
    ([("A", "1")], "dict"),
    ("A=1", "dict"),
])
def test_bad_env(env, match):
    with pytest.raises(ConfigError, match=match):
        make_resources(env=env)


def test_bad_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="ADA_24"):
        make_resources("ADA_42")


# --- the tables -----------------------------------------------------------------------------


def test_pool_members_point_back_to_their_pool():
    for pool in rp.GPU_POOLS.values():
        assert pool.gpu_types, pool.id
        for type_id in pool.gpu_types:
            assert rp.GPU_TYPES[type_id].pool == pool.id, type_id


def test_every_type_pool_exists_and_lists_the_type():
    for gpu_type in rp.GPU_TYPES.values():
        if gpu_type.pool is not None:
            assert gpu_type.pool in rp.GPU_POOLS, gpu_type.id
            assert gpu_type.id in rp.GPU_POOLS[gpu_type.pool].gpu_types


def test_table_facts():
    assert "any" not in rp.GPU_POOLS and "ANY" not in rp.GPU_POOLS
    assert rp.GPU_TYPES["NVIDIA L4"].pool == "AMPERE_24"  # CONFLICT note, §3.4
    assert rp.GPU_TYPES["NVIDIA RTX A4500"].pool == "AMPERE_16"
    assert rp.GPU_TYPES["NVIDIA GeForce RTX 5090"].pool == "ADA_32_PRO"
    assert rp.GPU_TYPES["NVIDIA B200"].pool == "BLACKWELL_180"
    assert rp.GPU_TYPES["NVIDIA A30"].pool is None
    assert not any("  " in t for t in rp.GPU_TYPES)  # double-space IDs skipped
    assert rp.GPU_POOLS["BLACKWELL_180"].flex_usd_per_s == pytest.approx(0.00240)
    assert rp.GPU_POOLS["HOPPER_141"].active_usd_per_s == pytest.approx(0.00124)
    for key, value in rp.GPU_POOLS.items():
        assert key == value.id and value.vram_gb > 0
    for key, value in rp.GPU_TYPES.items():
        assert key == value.id and value.display


def test_names_do_not_collide():
    """Pool ids, type ids and display names must resolve unambiguously (case-insensitive)."""
    names = [p.lower() for p in rp.GPU_POOLS]
    names += [t.id.lower() for t in rp.GPU_TYPES.values()]
    names += [t.display.lower() for t in rp.GPU_TYPES.values()]
    assert len(names) == len(set(names))
