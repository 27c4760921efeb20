"""Big payloads: out-of-band buffers, the offload store, content addressing, tensors off the GPU."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import textwrap

import httpx
import numpy as np
import pytest
import torch

from rpremote import remote
from rpremote.capture import devices, dumps_oob, dumps_result, loads
from rpremote.capture.tensors import rebuild_tensor
from rpremote.client import targets
from rpremote.errors import ConfigError, RemoteError

pytestmark = pytest.mark.usefixtures("rpremote_home")


@remote(workers=(0, 1), idle_timeout=60)
def negate(a):
    return -a


@remote(workers=(0, 1), idle_timeout=60)
def checksum(a, out_mib=0):
    import numpy as np
    return float(a[::4096].sum()), np.ones(out_mib * 1024 * 1024 // 8)


def _store():
    return targets.current().blobs.store


def _stats():
    emulator = targets.current().emulator
    r = httpx.get(f"{emulator.url}/rpremote/v1/blobs",
                  headers={"Authorization": f"Bearer {emulator.key}"})
    r.raise_for_status()
    return r.json()


def test_a_200_mb_array_goes_out_and_comes_back():
    a = np.arange(25_000_000, dtype=np.float64)  # 200 MB
    b = negate(a)
    assert b.shape == a.shape and b.dtype == a.dtype
    assert b[0] == 0.0 and b[12_345_678] == -12_345_678.0 and b[-1] == -(a.size - 1)
    assert b.flags.writeable  # arrives as an ordinary, writable array
    b[0] = 1.0


def test_a_repeated_big_argument_is_uploaded_once():
    store = _store()
    weights = np.random.default_rng(1).random(4 * 1024 * 1024)  # 32 MiB
    before = store.uploaded_bytes
    first, _ = checksum(weights)
    sent = store.uploaded_bytes - before
    assert weights.nbytes <= sent < weights.nbytes + 2 * 1024 * 1024
    pieces = _stats()["pieces"]
    for _ in range(3):
        again, _ = checksum(weights)
        assert again == first
    assert store.uploaded_bytes - before == sent  # nothing more went up
    assert _stats()["pieces"] == pieces
    # Different content is new content.
    checksum(weights + 1)
    assert store.uploaded_bytes - before >= sent + weights.nbytes


@remote(workers=(0, 1), idle_timeout=60, env={"RPREMOTE_BLOB_TRANSPORT": "http"})
def negate_over_http(a):
    return -a


def test_the_store_over_http_on_both_sides(monkeypatch):
    monkeypatch.setenv("RPREMOTE_BLOB_TRANSPORT", "http")
    targets.forget()
    try:
        store = _store()
        assert store.kind == "http"
        before = _stats()
        a = np.arange(3_000_000, dtype=np.float64)  # 24 MB each way
        b = negate_over_http(a)
        assert np.array_equal(b, -a)
        after = _stats()
        assert after["put_bytes"] - before["put_bytes"] >= 2 * a.nbytes  # argument and result
        assert after["get_bytes"] - before["get_bytes"] >= 2 * a.nbytes
        puts = after["puts"]
        assert np.array_equal(negate_over_http(a), -a)
        assert _stats()["puts"] == puts  # same argument, same result: nothing uploaded again
    finally:
        monkeypatch.delenv("RPREMOTE_BLOB_TRANSPORT")
        targets.forget()


def test_store_is_authenticated_size_limited_and_checks_content(emulator_factory):
    from blake3 import blake3

    emu = emulator_factory("--blob-max-mb", "1")
    data = os.urandom(300_000)
    key = blake3(data).hexdigest()
    url = f"{emu.url}/rpremote/v1/blobs/{key}"
    assert httpx.put(url, content=data).status_code == 401
    assert httpx.get(url).status_code == 401
    with emu.client() as c:
        assert c.head(url).status_code == 404
        wrong = c.put(url, content=data[:-1] + bytes([data[-1] ^ 1]))  # never the same bytes
        assert wrong.status_code == 400 and "digest" in wrong.json()["error"]
        assert c.put(url, content=data).status_code == 201
        assert c.head(url).status_code == 200
        assert c.get(url).content == data
        big = os.urandom(1024 * 1024 + 1)
        r = c.put(f"{emu.url}/rpremote/v1/blobs/{blake3(big).hexdigest()}", content=big)
        assert r.status_code == 413 and "--blob-max-mb" in r.json()["error"]
        assert c.get(f"{emu.url}/rpremote/v1/blobs/{'0' * 64}").status_code == 404
        assert c.get(f"{emu.url}/rpremote/v1/blobs/not-a-digest").status_code == 400


def test_unused_pieces_expire(emulator_factory):
    from blake3 import blake3

    emu = emulator_factory("--blob-ttl", "1")
    data = os.urandom(1000)
    url = f"{emu.url}/rpremote/v1/blobs/{blake3(data).hexdigest()}"
    with emu.client() as c:
        assert c.put(url, content=data).status_code == 201
        assert c.get("/rpremote/v1/blobs").json()["pieces"] == 1
        from conftest import wait_for  # not HEAD: asking for a piece keeps it alive
        wait_for(lambda: c.get("/rpremote/v1/blobs").json()["pieces"] == 0, timeout=30,
                 what="the piece to expire")
        assert c.head(url).status_code == 404


@remote(workers=(0, 1), idle_timeout=60, env={"RPREMOTE_BLOB_DIR": "", "RPREMOTE_BLOB_URL": ""})
def big_result_without_a_store(n):
    return bytes(n)


def test_a_big_result_with_no_store_fails_and_says_how_to_configure_one():
    assert big_result_without_a_store(1000) == bytes(1000)  # small results travel inline
    with pytest.raises(RemoteError) as err:
        big_result_without_a_store(5 * 1024 * 1024)
    assert "OffloadError" in str(err.value) and "RPREMOTE_BLOB_DIR" in str(err.value)


def test_numpy_and_tensors_travel_out_of_band():
    a = np.arange(1_000_000, dtype=np.float32)
    t = torch.arange(500_000, dtype=torch.bfloat16).reshape(500, 1000)
    main, buffers = dumps_oob({"a": a, "t": t, "small": np.arange(10)})
    assert len(main) < 10_000  # the data is not in the pickle stream
    assert sorted(b.nbytes for b in buffers) == [t.numel() * 2, a.nbytes]
    back = loads(main, [bytearray(b) for b in buffers])
    assert np.array_equal(back["a"], a) and torch.equal(back["t"], t)
    assert back["t"].dtype == torch.bfloat16 and back["small"].tolist() == list(range(10))


def test_tensor_shapes_dtypes_and_parameters_survive():
    model = torch.nn.Sequential(torch.nn.Linear(300, 300), torch.nn.ReLU(), torch.nn.Linear(300, 2))
    values = {
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "strided": torch.arange(100.0).reshape(10, 10).t(),
        "bool": torch.rand(70_000) > 0.5,
        "grad": torch.ones(5, requires_grad=True),
        "model": model,
    }
    main, buffers = dumps_result(values)
    back = loads(main, [bytearray(b) for b in buffers])
    for name in ("scalar", "empty", "strided", "bool"):
        assert torch.equal(back[name], values[name]) and back[name].shape == values[name].shape
    assert back["grad"].requires_grad
    assert isinstance(back["model"][0].weight, torch.nn.Parameter)
    x = torch.rand(3, 300)
    assert torch.equal(back["model"](x), model(x))


def _from_a_gpu_worker(tensor: torch.Tensor, device: str = "cuda:0") -> bytes:
    """The pickle a worker with a GPU sends for ``tensor`` on ``device`` (its bytes already on
    the CPU, as ``reduce_tensor`` copies them there): a fake device map, no GPU needed."""
    raw = tensor.reshape(-1).view(torch.uint8).numpy()

    class OnGpu:
        def __reduce__(self):
            return rebuild_tensor, (pickle.PickleBuffer(raw), str(tensor.dtype)[6:],
                                    tuple(tensor.shape), False, device, False)

    return pickle.dumps(OnGpu(), protocol=5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only client")
def test_a_cuda_tensor_result_arrives_on_the_cpu():
    t = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    data = _from_a_gpu_worker(t)
    with devices("cpu"):
        assert loads(data).device.type == "cpu" and torch.equal(loads(data), t)
    with devices("keep"):  # keep the device when there is one; there is none here
        assert loads(data).device.type == "cpu"
    with devices("cuda"), pytest.raises(RuntimeError, match="result_device"):
        loads(data)
    with pytest.raises(ConfigError, match="result_device"):
        remote(result_device="gpu please")(lambda: 0)


@remote(workers=(0, 1), idle_timeout=60)
def train_tiny(x, y, steps):
    import torch
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return model, loss.item()


def test_a_model_trained_remotely_is_used_here():
    torch.manual_seed(1)
    x = torch.randn(2000, 8)
    y = x @ torch.arange(8.0).reshape(8, 1)
    model, loss = train_tiny(x, y, 200)
    assert isinstance(model, torch.nn.Linear) and model.weight.device.type == "cpu"
    assert loss < 0.1
    assert torch.nn.functional.mse_loss(model(x), y).item() == pytest.approx(loss, rel=0.5)


def test_an_edited_local_package_runs_its_new_code_and_an_unchanged_one_goes_up_once(tmp_path):
    pkg = tmp_path / "mytools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    module = pkg / "scoring.py"
    table = "".join(chr(97 + i % 26) for i in range(30_000))  # ~30 KB: goes by reference

    def write(version: str) -> None:
        module.write_text(textwrap.dedent(f"""
            VERSION = {version!r}
            TABLE = {table!r}
            def score(x):
                return f"{{VERSION}}:{{x * 2}}:{{len(TABLE)}}"
        """))

    write("v1")
    sys.path.insert(0, str(tmp_path))
    try:
        import mytools.scoring as scoring

        @remote(workers=(0, 1), idle_timeout=60)
        def use(x):
            return scoring.score(x)

        store = _store()
        before = store.uploads
        assert use(2) == "v1:4:30000"
        assert use(3) == "v1:6:30000"
        assert store.uploads - before == 1  # the function with its module, once
        write("v2")
        importlib.reload(scoring)
        assert use(2) == "v2:4:30000"
        assert store.uploads - before == 2
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("mytools")]:
            del sys.modules[name]
