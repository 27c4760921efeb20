"""The least an S3 server can do, for ``payload_bandwidth.py``: objects in memory, no checks.

PUT / GET (with Range) / HEAD of objects, HEAD of a bucket, and multipart uploads (create,
parts, complete); any bucket exists, nothing is signed or hashed. It is not a store to use: it
is the floor under rpremote's S3 path, so the bench can say how much of the S3 row is the S3
protocol and rpremote's side of it, and how much is the server (moto copies and hashes every
byte several times over in Python).

Usage: python bench/handlers/mini_s3.py PORT
"""

from __future__ import annotations

import re
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

objects: dict[str, bytes | bytearray] = {}
uploads: dict[str, dict[int, bytearray]] = {}
XML = [("Content-Type", "application/xml")]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers=()) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytearray:
        size = int(self.headers.get("Content-Length", 0))
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            n = self.rfile.readinto(view[got:])
            if not n:
                break
            got += n
        return buf

    def do_HEAD(self) -> None:
        path = urlsplit(self.path).path
        if path.count("/") == 1:  # a bucket: every one exists
            return self._send(200)
        data = objects.get(path)
        if data is None:
            return self._send(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"0"')
        self.send_header("Last-Modified", self.date_time_string())
        self.end_headers()

    def do_PUT(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._body()
        if "uploadId" in query:
            uploads[query["uploadId"][0]][int(query["partNumber"][0])] = body
        else:
            objects[url.path] = body
        self._send(200, headers=[("ETag", '"0"')])

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        self._body()
        if "uploads" in query:
            upload = uuid.uuid4().hex
            uploads[upload] = {}
            return self._send(200, (f"<InitiateMultipartUploadResult><UploadId>{upload}"
                                    "</UploadId></InitiateMultipartUploadResult>").encode(), XML)
        parts = uploads.pop(query["uploadId"][0])
        objects[url.path] = b"".join(parts[n] for n in sorted(parts))
        self._send(200, b"<CompleteMultipartUploadResult><ETag>\"0\"</ETag>"
                        b"</CompleteMultipartUploadResult>", XML)

    def do_GET(self) -> None:
        data = objects.get(urlsplit(self.path).path)
        if data is None:
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", XML)
        view, ranged = memoryview(data), self.headers.get("Range")
        if ranged:
            start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", ranged).groups())
            view = view[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(view)))
        self.end_headers()
        self.wfile.write(view)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
