"""A tiny HTTP server standing for a Pod's app: it listens on the Pod's port 8000 (``PORT``),
which in the emulator is the 127.0.0.1 port ``RPREMOTE_PORT_MAP`` names.

GET /env?k=A&k=B   -> {"env": {...}, "pid": ..., "cwd": ...}
GET /write?name=N  -> writes N on the container disk (HOME); GET /files -> what is there
GET /slow?s=S      -> answers after S seconds
GET /chunks?n=N&gap=G -> N chunks, G seconds apart (streamed)
GET /exit          -> answers, then the process exits with code 3
GET /api?method=M&path=P -> calls the control plane (RPREMOTE_RUNPOD_API) with the Pod's own
                      RUNPOD_API_KEY and answers {"status": ...}; path "self" is /v2/pods/<own id>
GET /selfstop      -> answers, then stops its own Pod: POST /v2/pods/{RUNPOD_POD_ID}/action
                      {"action": "stop"} with RUNPOD_API_KEY (rest-v2 §4.9)
anything else      -> {"method", "path", "body", "headers"} (an echo)
``START_DELAY`` (env) waits that long before listening.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT = os.environ.get("PORT", "8000")


def api(method, path, body=None):
    """The control plane, as code in a Pod calls it: its own key, the emulator's base URL."""
    base = os.environ["RPREMOTE_RUNPOD_API"].rstrip("/")
    path = path.replace("self", f"/v2/pods/{os.environ['RUNPOD_POD_ID']}")
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {os.environ['RUNPOD_API_KEY']}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _any(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        home = os.environ["HOME"]
        if url.path == "/env":
            return self._send(200, {"env": {k: os.environ.get(k) for k in q.get("k", [])},
                                    "pid": os.getpid(), "cwd": os.getcwd()})
        if url.path == "/write":
            with open(os.path.join(home, q["name"][0]), "w") as f:
                f.write("kept")
            return self._send(200, {"wrote": q["name"][0]})
        if url.path == "/files":
            return self._send(200, {"files": sorted(os.listdir(home))})
        if url.path == "/slow":
            time.sleep(float(q["s"][0]))
            return self._send(200, {"slept": float(q["s"][0])})
        if url.path == "/chunks":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(q["n"][0])):
                data = f"chunk {i} {time.time()}\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(float(q["gap"][0]))
            self.wfile.write(b"0\r\n\r\n")
            return None
        if url.path == "/exit":
            self._send(200, {"exiting": os.getpid()})
            threading.Timer(0.2, lambda: os._exit(3)).start()
            return None
        if url.path == "/api":
            body = json.loads(q["body"][0]) if "body" in q else None
            return self._send(200, {"status": api(q["method"][0], q["path"][0], body)})
        if url.path == "/selfstop":
            self._send(200, {"stopping": os.environ["RUNPOD_POD_ID"]})

            def stop():
                status = api("POST", "self/action", {"action": "stop"})
                print(f"self stop: HTTP {status}", flush=True)
            threading.Timer(0.2, stop).start()
            return None
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        return self._send(200, {"method": self.command, "path": self.path, "body": body,
                                "headers": {k.lower(): v for k, v in self.headers.items()}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any


def main():
    time.sleep(float(os.environ.get("START_DELAY", "0")))
    mapped = json.loads(os.environ.get("RPREMOTE_PORT_MAP") or "{}").get(PORT)
    host, port = ("127.0.0.1", int(mapped)) if mapped else ("0.0.0.0", int(PORT))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"pod app listening on {host}:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
