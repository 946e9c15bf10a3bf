"""A small Confluent-Schema-Registry-compatible server for tests and the lab.

It keeps schemas in memory and answers the calls confluent-kafka's SchemaRegistryClient makes
for Avro serialisation: register a schema under a subject (the same schema again gets the
same id), look a schema up by id, look up a subject's schema, read a subject's latest
version. No compatibility checks, no auth: a test double for the protocol, not a registry
to run. `python -m adapters.lab.registry --port 8081`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_VERSIONS = re.compile(r"^/subjects/([^/]+)/versions/?$")
_LATEST = re.compile(r"^/subjects/([^/]+)/versions/(latest|\d+)$")
_SUBJECT = re.compile(r"^/subjects/([^/]+)$")
_BY_ID = re.compile(r"^/schemas/ids/(\d+)$")


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.schemas: dict[int, dict[str, Any]] = {}  # id -> {"schema", "schemaType"}
        self.subjects: dict[str, list[int]] = {}  # subject -> ids by version

    def register(self, subject: str, body: dict[str, Any]) -> int:
        text = str(body.get("schema", ""))
        kind = str(body.get("schemaType", "AVRO"))
        with self._lock:
            found = next((i for i, s in self.schemas.items() if s["schema"] == text), None)
            if found is None:
                found = len(self.schemas) + 1
                self.schemas[found] = {"schema": text, "schemaType": kind}
            versions = self.subjects.setdefault(subject, [])
            if found not in versions:
                versions.append(found)
            return found

    def version(self, subject: str, which: str) -> dict[str, Any] | None:
        with self._lock:
            versions = self.subjects.get(subject)
            if not versions:
                return None
            index = len(versions) - 1 if which == "latest" else int(which) - 1
            if not 0 <= index < len(versions):
                return None
            sid = versions[index]
            return {"subject": subject, "version": index + 1, "id": sid, **self.schemas[sid]}

    def lookup(self, subject: str, body: dict[str, Any]) -> dict[str, Any] | None:
        text = str(body.get("schema", ""))
        with self._lock:
            for index, sid in enumerate(self.subjects.get(subject, [])):
                if self.schemas[sid]["schema"] == text:
                    found = self.schemas[sid]
                    return {"subject": subject, "version": index + 1, "id": sid, **found}
        return None


def handler_for(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes (see refwms)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _missing(self, what: str) -> None:
            self._send(404, {"error_code": 40401, "message": f"{what} not found"})

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                found = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if match := _BY_ID.match(path):
                found = registry.schemas.get(int(match.group(1)))
                return self._send(200, found) if found else self._missing("schema")
            if match := _LATEST.match(path):
                version = registry.version(match.group(1), match.group(2))
                return self._send(200, version) if version else self._missing("subject")
            if path == "/subjects":
                return self._send(200, sorted(registry.subjects))
            if path == "/config":
                return self._send(200, {"compatibilityLevel": "NONE"})
            return self._missing("path")

        def do_POST(self) -> None:
            path, body = self.path.split("?", 1)[0], self._body()
            if match := _VERSIONS.match(path):
                return self._send(200, {"id": registry.register(match.group(1), body)})
            if match := _SUBJECT.match(path):
                found = registry.lookup(match.group(1), body)
                return self._send(200, found) if found else self._missing("schema")
            return self._missing("path")

    return Handler


def serve(port: int) -> ThreadingHTTPServer:
    """Serve in a background thread (tests); the caller shuts it down."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(Registry()))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--port", type=int, default=8081)
    port = args.parse_args(argv).port
    ThreadingHTTPServer(("127.0.0.1", port), handler_for(Registry())).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
