"""The control-plane client (``rpremote.client.control``) against a real ``rpremote serve``.

Nothing here mocks the client's HTTP: every request reaches the emulator's REST v2 control
plane. Three tests wrap the real transport to break one exchange the way a network does
(a 429 first, a reset after the request was sent, a refused connection) and then pass the
rest through; each says so. The contract checks record every request the client sends and
hold its body to the request schemas written below from docs/runpod-rest-v2.md (§2.2, §2.5,
§3.2, §5.1), not from the emulator's code.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback

import httpx
import pytest

from rpremote import config
from rpremote.client import stores
from rpremote.client.control import ControlPlane
from rpremote.errors import (ApiKeyError, ConfigError, ControlPlaneError,
                             ControlPlaneUnavailable, CreateOutcomeUnknown, InvalidRequest,
                             RateLimited, ResourceConflict, ResourceNotFound)

CANARY = "rpk-CANARY-0123456789abcdef"  # the emulator's key: must show up in no text
WRONG = "rpk-WRONGKEY-fedcba9876543210"  # a refused key: must not show up either
IMAGE = "rpremote-tests/control-client:1.0"


# -- the documented request schemas, as data (docs/runpod-rest-v2.md) ------------------------

S, I, N, B, MAP = "string", "integer", "number", "boolean", "map"  # map: string -> string


def arr(item):
    return ("array", item)


def obj(fields, required=()):
    return ("object", fields, tuple(required))


CONTAINER = {"image": S, "args": S, "entrypoint": arr(S), "cmd": arr(S), "disk": I,
             "ports": arr(S), "env": MAP, "registry": S}  # §1.9
SCALING = obj({"type": S, "queueDelay": N, "requestCount": I}, ["type"])  # §2.2
GPU = {"pools": arr(S), "excludedTypes": arr(S), "count": I, "allowedCudaVersions": arr(S),
       "minCudaVersion": S}
WORKERS = obj({"min": I, "max": I, "idleTimeout": I})
_ENDPOINT = {"name": S, "type": S, "scaling": SCALING, "templateId": S,
             "gpu": obj(GPU, ["pools"]), "cpu": arr(obj({"id": S, "vcpuCount": I}, ["id", "vcpuCount"])),
             "workers": WORKERS, "dataCenterIds": arr(S), "networkVolumes": arr(S), "timeout": I,
             "flashboot": S, **CONTAINER}
# §2.2: name, type, scaling required; `timeout` is ours to require (omitted, RunPod stores 0).
ENDPOINT_CREATE = obj(_ENDPOINT, ["name", "type", "scaling", "timeout"])
# §2.5: partial; `type` is fixed at create.
ENDPOINT_UPDATE = obj({**{k: v for k, v in _ENDPOINT.items() if k != "type"},
                       "gpu": obj(GPU)})
_TEMPLATE = {"name": S, **CONTAINER, "category": S, "serverless": B, "public": B,
             "startSsh": B, "startJupyter": B,
             "mounts": obj({"persistent": obj({"size": I, "path": S}, ["size", "path"])}),
             "allowedCudaVersions": arr(S)}
TEMPLATE_CREATE = obj(_TEMPLATE, ["name", "image"])  # §3.2
TEMPLATE_UPDATE = obj(_TEMPLATE)
VOLUME_CREATE = obj({"name": S, "size": I, "dataCenter": S, "type": S},
                    ["name", "size", "dataCenter"])  # §5.1
VOLUME_UPDATE = obj({"name": S, "size": I})  # §5.1: at least one field

ID = r"[A-Za-z0-9_-]+"
SCHEMAS = [  # (method, path pattern, body schema or None for no body)
    ("POST", r"/v2/serverless", ENDPOINT_CREATE),
    ("PATCH", rf"/v2/serverless/{ID}", ENDPOINT_UPDATE),
    ("POST", r"/v2/templates", TEMPLATE_CREATE),
    ("PATCH", rf"/v2/templates/{ID}", TEMPLATE_UPDATE),
    ("POST", r"/v2/network-volumes", VOLUME_CREATE),
    ("PATCH", rf"/v2/network-volumes/{ID}", VOLUME_UPDATE),
    ("GET", r"/v2/(serverless|templates|network-volumes)(/[A-Za-z0-9_%-]+)?", None),
    ("GET", rf"/v2/serverless/{ID}/workers", None),
    ("GET", rf"/v2/serverless/{ID}/workers/{ID}/logs", None),  # §4.8, §2.1
    ("GET", r"/v2/catalog/(gpus|cpus|datacenters)(/[^/]+)?", None),
    ("DELETE", rf"/v2/(serverless|templates|network-volumes)/{ID}", None),
]
PAGED = re.compile(r"/v2/(serverless|templates)")
QUERY = {"limit", "cursor", "include", "product", "count", "cloud", "countryCodes",
         "cudaVersions", "minCudaVersion", "vcpuCount", "regions", "networkVolumeTypes",
         "compliance", "globalNetwork"}  # §1.6, §6.1
LOG_QUERY = {"source", "tail", "since"}  # §4.8, on the logs paths only
LOGS = re.compile(rf"/v2/serverless/{ID}/workers/{ID}/logs")


def _problems(schema, value, path="$") -> list[str]:
    if schema == MAP:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            return [f"{path}: want an object of strings"]
        return []
    if isinstance(schema, str):
        ok = {S: isinstance(value, str), B: isinstance(value, bool),
              I: isinstance(value, int) and not isinstance(value, bool),
              N: isinstance(value, (int, float)) and not isinstance(value, bool)}[schema]
        return [] if ok else [f"{path}: want {schema}, got {value!r}"]
    if schema[0] == "array":
        if not isinstance(value, list):
            return [f"{path}: want array"]
        return [p for i, v in enumerate(value) for p in _problems(schema[1], v, f"{path}[{i}]")]
    _, fields, required = schema
    if not isinstance(value, dict):
        return [f"{path}: want object"]
    out = [f"{path}: missing {name}" for name in required if name not in value]
    out += [f"{path}: unknown field {name}" for name in value if name not in fields]
    out += [p for name, v in value.items() if name in fields
            for p in _problems(fields[name], v, f"{path}.{name}")]
    return out


def contract_problems(recorded: list[dict]) -> list[str]:
    """What in the recorded requests breaks the documented request schemas."""
    out = []
    for req in recorded:
        where = f"{req['method']} {req['path']}"
        for method, pattern, schema in SCHEMAS:
            if method == req["method"] and re.fullmatch(pattern, req["path"]):
                break
        else:
            out.append(f"{where}: not a documented operation")
            continue
        if schema is None:
            if req["body"] is not None:
                out.append(f"{where}: a body where none belongs")
        elif req["body"] is None:
            out.append(f"{where}: no JSON body")
        else:
            out += [f"{where}: {p}" for p in _problems(schema, req["body"])]
            if method == "PATCH" and not req["body"]:
                out.append(f"{where}: an empty PATCH")
        if not req["auth"]:
            out.append(f"{where}: no bearer key")
        unknown = set(req["params"]) - QUERY - (LOG_QUERY if LOGS.fullmatch(req["path"]) else set())
        if unknown or (req["params"].keys() & {"limit", "cursor"} and not PAGED.fullmatch(req["path"])):
            out.append(f"{where}: query {sorted(req['params'])} not documented here")
    return out


# -- transports that record, or break one exchange, around the real one ----------------------

class Recording(httpx.BaseTransport):
    """Records each request, then sends it to the real server."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.requests: list[dict] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.record(request)
        return self.inner.handle_request(request)

    def record(self, request: httpx.Request) -> None:
        content = request.read()
        self.requests.append({
            "method": request.method, "path": request.url.path,
            "params": dict(request.url.params),
            "body": json.loads(content) if content else None,
            "auth": request.headers.get("authorization", "").startswith("Bearer "),
        })

    def sent(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests if method in (None, r["method"])]


class ThrottledOnce(Recording):
    """The first request gets a 429 with Retry-After (as the emulator's rate limiter answers
    once a window is spent, which takes the rest of a minute to reset: too slow for a test);
    every request after it goes to the real server."""

    def __init__(self, retry_after: str = "1"):
        super().__init__()
        self.retry_after = retry_after
        self.throttled = False

    def handle_request(self, request):
        if not self.throttled:
            self.throttled = True
            return httpx.Response(429, headers={"Retry-After": self.retry_after,
                                                "content-type": "application/problem+json"},
                                  json={"title": "Too Many Requests", "status": 429,
                                        "detail": "rate limit exceeded for the minute window"})
        return super().handle_request(request)


class AlwaysThrottled(Recording):
    """Every request gets a 429 with ``Retry-After: 0`` (a window that will not reset in
    time); nothing reaches the server."""

    def handle_request(self, request):
        return httpx.Response(429, headers={"Retry-After": "0"},
                              json={"title": "Too Many Requests", "status": 429,
                                    "detail": "rate limit exceeded for the minute window"})


class ResetAfterSend(Recording):
    """The first POST reaches the real server (which carries it out), then its answer is
    lost: a read error, as when a connection is reset after the request was sent."""

    def __init__(self):
        super().__init__()
        self.broken = False

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.method == "POST" and not self.broken:
            self.broken = True
            response.read()
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


class RefusedFirst(Recording):
    """The first connection attempt is refused before anything is sent."""

    def __init__(self):
        super().__init__()
        self.refused = False

    def handle_request(self, request):
        if not self.refused:
            self.refused = True
            raise httpx.ConnectError("connection refused", request=request)
        return super().handle_request(request)


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def clean(tmp_path, monkeypatch):
    """No key anywhere but where a test puts it: a HOME of our own, no RUNPOD_API_KEY."""
    home = tmp_path / "userhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RPREMOTE_HOME", str(tmp_path / "rpremote-home"))
    for var in ("RUNPOD_API_KEY", "RPREMOTE_RUNPOD_API", "RPREMOTE_STORE",
                "RPREMOTE_RUNPOD_S3_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    config.reset()
    stores.forget()
    yield home
    config.reset()
    stores.forget()


@pytest.fixture
def emu(emulator_factory, clean):
    return emulator_factory("--api-key", CANARY)


@pytest.fixture
def recorder():
    return Recording()


@pytest.fixture
def cp(emu, recorder):
    with ControlPlane(emu.url, emu.key, transport=recorder) as plane:
        yield plane
    assert contract_problems(recorder.requests) == []


def endpoint_body(name: str = "cc-endpoint", **over) -> dict:
    body = {"name": name, "type": "QUEUE", "image": IMAGE, "gpu": {"pools": ["ADA_24"]},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1},
            "workers": {"min": 0, "max": 1, "idleTimeout": 5}, "timeout": 60000}
    body.update(over)
    return body


def write_runpodctl_config(home, key: str, runpod_sdk: bool = False) -> None:
    (home / ".runpod").mkdir(exist_ok=True)
    text = (f'[default]\napi_key = "{key}"\n' if runpod_sdk
            else f"apikey = '{key}'\napiurl = 'https://api.runpod.io/graphql'\n")
    (home / ".runpod" / "config.toml").write_text(text)


# -- the key ---------------------------------------------------------------------------------

def test_key_order_configure_then_env_then_runpodctl_file(clean, monkeypatch):
    write_runpodctl_config(clean, "from-file")
    monkeypatch.setenv("RUNPOD_API_KEY", "from-env")
    config.configure(api_key="from-configure")
    assert config.runpod_api_key() == ("from-configure", "configure(api_key=...)")
    config.reset()
    assert config.runpod_api_key() == ("from-env", "$RUNPOD_API_KEY")
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert config.runpod_api_key() == ("from-file", "~/.runpod/config.toml")
    write_runpodctl_config(clean, "from-sdk-file", runpod_sdk=True)  # `runpod config`'s form
    assert config.runpod_api_key() == ("from-sdk-file", "~/.runpod/config.toml")
    (clean / ".runpod" / "config.toml").unlink()
    assert config.runpod_api_key() == (None, "")
    assert "from-configure" not in repr(config.Settings(api_key="from-configure"))


def test_the_key_from_each_source_reaches_the_real_control_plane(emu, clean, monkeypatch):
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    write_runpodctl_config(clean, emu.key)
    for setup in ("file", "env", "configure"):
        if setup == "env":
            monkeypatch.setenv("RUNPOD_API_KEY", emu.key)
            write_runpodctl_config(clean, WRONG)
        if setup == "configure":
            monkeypatch.setenv("RUNPOD_API_KEY", WRONG)
            config.configure(api_key=emu.key)
        with ControlPlane.from_settings() as plane:
            assert plane.base_url == emu.url
            assert plane.volumes.list() == []


def test_a_missing_key_fails_before_any_request_saying_how_to_set_it(clean, monkeypatch):
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", "http://127.0.0.1:9")
    recorder = Recording()
    with pytest.raises(ApiKeyError) as err:
        ControlPlane.from_settings(transport=recorder)
    text = str(err.value)
    assert "RUNPOD_API_KEY" in text and "configure(api_key=...)" in text
    assert "runpodctl config" in text and "~/.runpod/config.toml" in text
    assert isinstance(err.value, ConfigError) and recorder.requests == []


def test_a_refused_key_is_401_naming_its_source_not_the_key(emu, monkeypatch):
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    monkeypatch.setenv("RUNPOD_API_KEY", WRONG)
    with ControlPlane.from_settings() as plane, pytest.raises(ApiKeyError) as err:
        plane.endpoints.create(endpoint_body())
    e = err.value
    assert e.status == 401 and "$RUNPOD_API_KEY" in str(e) and "RUNPOD_API_KEY" in str(e)
    assert WRONG not in str(e) and WRONG not in repr(e)
    with ControlPlane(emu.url, emu.key) as plane:
        assert plane.endpoints.list() == []  # nothing was created


# -- CRUD round trips ------------------------------------------------------------------------

def test_endpoint_round_trip(cp):
    ep = cp.endpoints.create(endpoint_body(env={"A": "1"}))
    assert ep["timeout"] == 60000 and ep["requestUrls"]["run"].endswith(f"/v2/{ep['id']}/run")
    assert cp.endpoints.get(ep["id"])["name"] == "cc-endpoint"
    assert [e["id"] for e in cp.endpoints.list()] == [ep["id"]]
    changed = cp.endpoints.update(ep, {"workers": {"min": 0, "max": 2}, "timeout": 120000})
    assert changed["workers"]["max"] == 2 and changed["timeout"] == 120000
    workers = cp.endpoints.workers(ep)
    assert workers["summary"]["total"] == len(workers["workers"])
    cp.endpoints.delete(ep)
    assert cp.endpoints.list() == []


def test_template_round_trip(cp):
    tpl = cp.templates.create({"name": "cc-template", "image": IMAGE, "serverless": True,
                               "env": {"X": "y"}})
    assert cp.templates.get(tpl["id"])["env"] == {"X": "y"}
    assert cp.templates.update(tpl["id"], {"disk": 30})["disk"] == 30
    assert tpl["id"] in [t["id"] for t in cp.templates.list()]
    body = endpoint_body(templateId=tpl["id"])
    del body["image"]  # the template's
    ep = cp.endpoints.create(body)
    assert ep["image"] == IMAGE and ep["env"] == {"X": "y"}
    cp.endpoints.delete(ep)
    cp.templates.delete(tpl)
    with pytest.raises(ResourceNotFound):
        cp.templates.get(tpl["id"])


def test_volume_round_trip_and_catalog(cp):
    vol = cp.volumes.create({"name": "cc-volume", "size": 10, "dataCenter": "EU-RO-1"})
    assert cp.volumes.data_center(vol["id"]) == "EU-RO-1"
    assert cp.volumes.update(vol, {"size": 20})["size"] == 20
    assert [v["id"] for v in cp.volumes.list()] == [vol["id"]]
    cp.volumes.delete(vol["id"])
    assert cp.volumes.list() == []
    pools = {g["pool"] for g in cp.catalog.gpus()}
    assert "ADA_24" in pools
    with_volumes = [d["id"] for d in cp.catalog.datacenters() if d["networkVolumeTypes"]]
    assert "EU-RO-1" in with_volumes
    assert cp.catalog.datacenter("EU-RO-1")["id"] == "EU-RO-1"


def test_lists_follow_the_cursor_through_every_page(cp, recorder):
    made = [cp.templates.create({"name": f"cc-page-{i}", "image": IMAGE})["id"] for i in range(5)]
    recorder.requests.clear()
    listed = cp.templates.list(page_size=2)
    assert sorted(t["id"] for t in listed) == sorted(made)
    gets = [r for r in recorder.requests if r["method"] == "GET"]
    assert len(gets) == 3 and all(r["params"]["limit"] == "2" for r in gets)
    assert "cursor" not in gets[0]["params"] and all("cursor" in r["params"] for r in gets[1:])
    eps = [cp.endpoints.create(endpoint_body(f"cc-page-ep-{i}"))["id"] for i in range(3)]
    assert sorted(e["id"] for e in cp.endpoints.list(page_size=1)) == sorted(eps)


# -- errors ----------------------------------------------------------------------------------

def test_422_lists_the_field_messages_and_400_409_404_say_what(cp, emu):
    body = endpoint_body(bogus=1)
    del body["scaling"]
    with ControlPlane(emu.url, emu.key) as unrecorded, pytest.raises(InvalidRequest) as err:
        unrecorded.endpoints.create(body)  # off the contract on purpose: not recorded
    e = err.value
    assert e.status == 422 and e.title == "Unprocessable Entity"
    assert any("'bogus'" in m for m in e.errors) and any("'scaling'" in m for m in e.errors)
    assert "'bogus'" in str(e) and e.request_id and e.request_id in str(e)
    with pytest.raises(InvalidRequest) as err:
        cp.volumes.create({"name": "v", "size": 10, "dataCenter": "US-TX-3"})
    assert err.value.status == 400 and "EU-RO-1" in str(err.value)
    cp.templates.create({"name": "cc-dup", "image": IMAGE})
    with pytest.raises(ResourceConflict) as err:
        cp.templates.create({"name": "cc-dup", "image": IMAGE})
    assert err.value.status == 409
    with pytest.raises(ResourceNotFound) as err:
        cp.endpoints.get("nosuchendpoint")
    assert err.value.status == 404 and "nosuchendpoint" in str(err.value)


def test_the_contract_checker_catches_a_bad_body():
    """The checker itself: an unknown field, a missing timeout, a wrong type."""
    bad = [{"method": "POST", "path": "/v2/serverless", "params": {}, "auth": True,
            "body": {k: v for k, v in endpoint_body(extra=1).items() if k != "timeout"}},
           {"method": "POST", "path": "/v2/network-volumes", "params": {}, "auth": True,
            "body": {"name": "v", "size": "10", "dataCenterId": "EU-RO-1"}}]
    found = " | ".join(contract_problems(bad))
    for what in ("unknown field extra", "missing timeout", "$.size: want integer",
                 "missing dataCenter", "unknown field dataCenterId"):
        assert what in found


# -- retries ---------------------------------------------------------------------------------

def test_a_429_is_retried_after_retry_after(emu):
    throttle = ThrottledOnce(retry_after="1")
    with ControlPlane(emu.url, emu.key, transport=throttle) as plane:
        start = time.monotonic()
        vol = plane.volumes.create({"name": "cc-429", "size": 10, "dataCenter": "EU-RO-1"})
        assert time.monotonic() - start >= 1.0  # Retry-After honoured
        assert throttle.sent() == [("POST", "/v2/network-volumes")]  # the 429 was not sent on
        assert [v["id"] for v in plane.volumes.list()] == [vol["id"]]


def test_a_create_refused_before_sending_is_sent_again(emu):
    refused = RefusedFirst()
    with ControlPlane(emu.url, emu.key, transport=refused) as plane:
        plane.endpoints.create(endpoint_body("cc-refused"))
        assert len(plane.endpoints.list()) == 1


def test_a_create_that_broke_off_after_sending_is_never_repeated(emu):
    reset = ResetAfterSend()
    with ControlPlane(emu.url, emu.key, transport=reset) as plane:
        with pytest.raises(CreateOutcomeUnknown) as err:
            plane.endpoints.create(endpoint_body("cc-reset"))
        assert "list and match" in str(err.value)
        assert reset.sent("POST") == [("POST", "/v2/serverless")]  # once
        assert [e["name"] for e in plane.endpoints.list()] == ["cc-reset"]
        found = plane.create_or_find("endpoints", endpoint_body("cc-reset"))
        assert found["name"] == "cc-reset" and len(reset.sent("POST")) == 1
    # Nothing there yet: list, POST (carried out, answer lost), list again finds it.
    reset = ResetAfterSend()
    with ControlPlane(emu.url, emu.key, transport=reset) as plane:
        made = plane.endpoints.create_or_find(endpoint_body("cc-reset-2"))
        assert made["name"] == "cc-reset-2"
        assert reset.sent() == [("GET", "/v2/serverless"), ("POST", "/v2/serverless"),
                                ("GET", "/v2/serverless")]
        names = sorted(e["name"] for e in plane.endpoints.list())
        assert names == ["cc-reset", "cc-reset-2"]
    assert contract_problems(reset.requests) == []


def test_an_unreachable_control_plane_says_so_after_the_retries(clean):
    with ControlPlane("http://127.0.0.1:9", CANARY) as plane:
        with pytest.raises(ControlPlaneUnavailable) as err:
            plane.volumes.list()
    assert "cannot reach" in str(err.value) and CANARY not in str(err.value)


# -- the key in no text ----------------------------------------------------------------------

def test_the_key_is_in_no_error_repr_traceback_or_log(emu, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RUNPOD_API_KEY", CANARY)
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    errors: list[BaseException] = []

    def provoke(fn):
        try:
            fn()
        except ControlPlaneError as e:
            errors.append(e)
        else:
            raise AssertionError(f"{fn} raised nothing")

    with ControlPlane.from_settings() as plane:
        provoke(lambda: plane.endpoints.create({"name": "x", "bogus": CANARY[:4]}))  # 422
        provoke(lambda: plane.endpoints.get("nosuchendpoint"))  # 404
        provoke(lambda: plane.volumes.create({"name": "v", "size": 10, "dataCenter": "US-TX-3"}))
        plane.templates.create({"name": "cc-key", "image": IMAGE})
        provoke(lambda: plane.templates.create({"name": "cc-key", "image": IMAGE}))  # 409
        texts = [repr(plane), repr(config.settings())]
    with ControlPlane(emu.url, CANARY, transport=AlwaysThrottled(),
                      retry_delays=(0.01, 0.01)) as plane:
        provoke(lambda: plane.volumes.list())  # 429 through the retries
    with ControlPlane.from_settings(transport=ResetAfterSend()) as plane:
        provoke(lambda: plane.volumes.create({"name": "v", "size": 10, "dataCenter": "EU-RO-1"}))
    with ControlPlane(emu.url, CANARY.upper()) as plane:  # a refused key: also never shown
        provoke(lambda: plane.volumes.list())
    with ControlPlane("http://127.0.0.1:9", CANARY) as plane:
        provoke(lambda: plane.volumes.list())
    config.configure(api_key=CANARY)
    texts.append(repr(config.settings()))
    kinds = {type(e) for e in errors}
    assert {InvalidRequest, ResourceNotFound, ResourceConflict, RateLimited,
            CreateOutcomeUnknown, ApiKeyError, ControlPlaneUnavailable} <= kinds, kinds
    for e in errors:
        texts += [str(e), repr(e), "".join(traceback.format_exception(e)), repr(vars(e))]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert CANARY not in text and CANARY.upper() not in text, text


# -- the network volume's data center (issue 14) ---------------------------------------------

def test_a_volume_without_dc_gets_its_data_center_from_the_control_plane(emu, monkeypatch):
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    monkeypatch.setenv("RUNPOD_API_KEY", emu.key)
    with ControlPlane.from_settings() as plane:
        vol = plane.volumes.create({"name": "cc-store", "size": 10, "dataCenter": "EU-RO-1"})
    monkeypatch.setenv("RPREMOTE_STORE", f"runpod-volume://{vol['id']}/pieces")
    location, where = config.store_choice()
    assert location.dc is None and where == "RPREMOTE_STORE"
    store = stores.make(location, where)
    assert store.location.dc == "EU-RO-1" and store.region == "EU-RO-1"
    assert store.endpoint == "https://s3api-eu-ro-1.runpod.io/"
    # The worker gets the ?dc= found: it never asks the control plane.
    assert store.worker_env()["RPREMOTE_STORE"] == f"runpod-volume://{vol['id']}/pieces?dc=EU-RO-1"
    assert emu.key not in repr(store) and emu.key not in store.describe()


def test_the_looked_up_store_is_checked_and_used_end_to_end(emu, monkeypatch, s3_server):
    """Client config -> control plane -> S3Store -> a real S3 server (moto) playing the
    volume's S3 API (RPREMOTE_RUNPOD_S3_ENDPOINT, as a rehearsal)."""
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    config.configure(api_key=emu.key)
    with ControlPlane.from_settings() as plane:
        vol = plane.volumes.create({"name": "cc-e2e", "size": 10, "dataCenter": "US-KS-2"})
    s3_server.client().create_bucket(Bucket=vol["id"])
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RPREMOTE_RUNPOD_S3_ENDPOINT", s3_server.url)
    config.configure(store=f"runpod-volume://{vol['id']}")
    store = stores.configured()  # looked up, then checked against the S3 server
    assert store.location.url() == f"runpod-volume://{vol['id']}?dc=US-KS-2"
    digest = "ab" * 32
    store.put(digest, b"hello")
    assert bytes(store.get(digest, 5)) == b"hello"
    assert s3_server.client().head_object(Bucket=vol["id"], Key=f"ab/{digest}")


def test_a_volume_that_does_not_exist_names_the_setting_and_the_id(emu, monkeypatch):
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    monkeypatch.setenv("RUNPOD_API_KEY", emu.key)
    monkeypatch.setenv("RPREMOTE_STORE", "runpod-volume://nosuchvol1/p")
    with pytest.raises(ConfigError) as err:
        stores.configured()
    assert "RPREMOTE_STORE" in str(err.value) and "nosuchvol1" in str(err.value)
    assert emu.key not in str(err.value)


def test_a_volume_without_dc_and_no_key_says_both_ways(clean, monkeypatch):
    monkeypatch.setenv("RPREMOTE_STORE", "runpod-volume://agv6w2qcg7")
    with pytest.raises(ConfigError) as err:
        stores.configured()
    text = str(err.value)
    assert "?dc=EU-RO-1" in text and "RPREMOTE_STORE" in text
    assert "or set RUNPOD_API_KEY so rpremote can look it up" in text


def test_runpod_config_shows_where_the_key_comes_from_never_the_key(clean, monkeypatch, capsys):
    from rpremote.notebook.magics import RunpodMagics

    magics = RunpodMagics(shell=None)
    magics._line_config([])
    assert "runpod key = none (set RUNPOD_API_KEY)" in capsys.readouterr().out
    write_runpodctl_config(clean, CANARY)
    magics._line_config([])
    assert "runpod key = from ~/.runpod/config.toml (never shown)" in capsys.readouterr().out
    monkeypatch.setenv("RUNPOD_API_KEY", CANARY)
    magics._line_config([])
    assert "runpod key = from $RUNPOD_API_KEY (never shown)" in capsys.readouterr().out
    config.configure(api_key=CANARY)
    magics._line_config([])
    out = capsys.readouterr().out
    assert "runpod key = from configure(api_key=...) (never shown)" in out and CANARY not in out


# -- the retry policy, one row per rule (exchange.py's docstring) ----------------------------

class FailsOnce(Recording):
    """The first request is answered ``status`` without reaching the server (as a proxy in
    front of it would answer); later ones go to the real server. All are recorded."""

    def __init__(self, status: int):
        super().__init__()
        self.status = status
        self.failed = False

    def handle_request(self, request):
        if not self.failed:
            self.failed = True
            self.record(request)
            return httpx.Response(self.status, json={"title": "x", "status": self.status,
                                                     "detail": "upstream trouble"})
        return super().handle_request(request)


class ResetAfterFirst(Recording):
    """The first request reaches the real server, then its answer is lost (a reset)."""

    def __init__(self):
        super().__init__()
        self.broken = False

    def handle_request(self, request):
        response = super().handle_request(request)
        if not self.broken:
            self.broken = True
            response.read()
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


@pytest.mark.parametrize("op, failure, outcome", [
    ("list", 503, "retried"), ("list", 502, "retried"), ("list", 504, "retried"),
    ("list", "reset", "retried"),
    ("create", 503, "retried"),  # 503: turned away before processing (queue.REFUSED_STATUSES)
    ("create", 429, "retried"),
    ("create", 502, "unknown"), ("create", 500, "unknown"),  # may have been taken: not resent
    ("create", "reset", "unknown"),
    ("update", 502, "retried"), ("update", "reset", "retried"),
    ("delete", 504, "retried"), ("delete", "reset", "retried"),  # the retry's 404 = gone
])
def test_retry_policy(emu, op, failure, outcome):
    with ControlPlane(emu.url, emu.key, retry_delays=(0.05, 0.05)) as setup:
        vol = setup.volumes.create({"name": "cc-policy", "size": 10, "dataCenter": "EU-RO-1"})
    broken = ResetAfterFirst() if failure == "reset" else FailsOnce(failure)
    calls = {"list": lambda p: p.volumes.list(),
             "create": lambda p: p.volumes.create({"name": "cc-new", "size": 10,
                                                   "dataCenter": "EU-RO-1"}),
             "update": lambda p: p.volumes.update(vol, {"size": 30}),
             "delete": lambda p: p.volumes.delete(vol)}
    with ControlPlane(emu.url, emu.key, transport=broken, retry_delays=(0.05, 0.05)) as plane:
        if outcome == "unknown":
            with pytest.raises(CreateOutcomeUnknown):
                calls[op](plane)
        else:
            calls[op](plane)
    with ControlPlane(emu.url, emu.key) as check:
        volumes = {v["name"]: v for v in check.volumes.list()}
    made = int("cc-new" in volumes)
    if op == "create":  # exactly once when the server saw it, never twice
        assert made == (0 if failure in (502, 500) else 1)
        assert len(broken.sent("POST")) == (1 if outcome == "unknown" else 2)
    if op == "update":
        assert volumes["cc-policy"]["size"] == 30
    if op == "delete":
        assert "cc-policy" not in volumes


def test_rpremote_store_info_looks_the_volume_up_too(emu, clean):
    import os
    import subprocess
    import sys

    with ControlPlane(emu.url, emu.key) as plane:
        vol = plane.volumes.create({"name": "cc-cli", "size": 10, "dataCenter": "EUR-IS-1"})
    env = {**os.environ, "RPREMOTE_RUNPOD_API": emu.url, "RUNPOD_API_KEY": emu.key,
           "RPREMOTE_RUNPOD_S3_ENDPOINT": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
           "RUNPOD_S3_ACCESS_KEY_ID": "user_x", "RUNPOD_S3_SECRET_ACCESS_KEY": "rps_y"}
    done = subprocess.run([sys.executable, "-m", "rpremote", "store", "info", "--store",
                           f"runpod-volume://{vol['id']}/p"], env=env, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout + done.stderr
    assert f"runpod-volume://{vol['id']}/p?dc=EUR-IS-1" in out, out
    assert emu.key not in out
    done = subprocess.run([sys.executable, "-m", "rpremote", "store", "info", "--store",
                           "runpod-volume://nosuchvol2"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "--store" in done.stderr and "nosuchvol2" in done.stderr
