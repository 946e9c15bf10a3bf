"""A reference WMS for tests and the live demo: the REST contract of
configs/wms-openapi.yaml on a real PostgreSQL database, with switchable faults.

Stock per SKU-site and transfer orders live in PostgreSQL (one schema per instance, so tests
never share one). An order's idempotency key is UNIQUE: the same key twice returns the first
order. Orders progress on their own, as a warehouse would: created -> picked (goods issue:
the sender's stock drops, or the order is `refused` when the sender has too little) ->
shipped -> received (the receiver's stock rises); with `receipt_fail_rate`, a shipment is
`receipt_failed` instead and its units go back to the sender, so units are conserved.

Faults (`POST /_faults`, JSON): `slow_ms` (every answer waits this long), `error_rate`
(HTTP 500 before doing anything), `timeout_rate` (the answer waits 10 s), `garbage_rate`
(HTTP 200 with a body that is not JSON), `receipt_fail_rate`, `pick_delay_ms` (an order stays
`created` this long). Being down: stop the process; its state is in the database.

Lab only: not part of the production package's image.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.stock (
  sku text NOT NULL, site text NOT NULL, on_hand integer NOT NULL CHECK (on_hand >= 0),
  PRIMARY KEY (sku, site));
CREATE TABLE IF NOT EXISTS {s}.orders (
  id text PRIMARY KEY, idempotency_key text NOT NULL UNIQUE, sku text NOT NULL,
  from_site text NOT NULL, to_site text NOT NULL, qty integer NOT NULL CHECK (qty > 0),
  reference text, status text NOT NULL, reason text NOT NULL DEFAULT '',
  created_at double precision NOT NULL, updated_at double precision NOT NULL,
  requests integer NOT NULL DEFAULT 1);
"""
_ORDER_PATH = re.compile(r"^/transfer-orders/([A-Za-z0-9_-]{1,64})(/cancel)?$")
_COLUMNS = "id, status, reason, sku, from_site, to_site, qty, reference, requests"


class Wms:
    """The database side: every change is one transaction."""

    def __init__(self, dsn: str, schema: str, sites: frozenset[str]) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", schema):
            raise ValueError("schema: lower-case letters, digits and _")
        self.dsn, self.s, self.sites = dsn, schema, sites
        self.faults: dict[str, float] = {}
        self._local = threading.local()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_SCHEMA.format(s=schema))

    def conn(self) -> psycopg.Connection[Any]:
        found = getattr(self._local, "conn", None)
        if found is None or found.closed:
            found = self._local.conn = psycopg.connect(self.dsn, autocommit=True)
        return found

    def create(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        problem = self._invalid(body)
        if problem:
            return 422, {"detail": problem}
        now = time.time()
        with self.conn().transaction():
            row = (
                self.conn()
                .execute(
                    f"INSERT INTO {self.s}.orders (id, idempotency_key, sku, from_site, to_site,"
                    " qty, reference, status, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,"
                    "'created',%s,%s) ON CONFLICT (idempotency_key) DO UPDATE SET requests ="
                    f" {self.s}.orders.requests + 1 RETURNING {_COLUMNS}, (xmax = 0) AS inserted",
                    (
                        uuid.uuid4().hex[:20],
                        key,
                        body["sku"],
                        body["from_site"],
                        body["to_site"],
                        body["qty"],
                        str(body.get("reference", ""))[:128],
                        now,
                        now,
                    ),
                )
                .fetchone()
            )
        assert row is not None
        return (201 if row[-1] else 200), _order(row[:-1])

    def _invalid(self, body: Any) -> str:
        if not isinstance(body, dict):
            return "expected a JSON object"
        for name in ("sku", "from_site", "to_site"):
            if not isinstance(body.get(name), str) or not body[name]:
                return f"{name}: required"
        if body["from_site"] not in self.sites or body["to_site"] not in self.sites:
            return "unknown site"
        qty = body.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            return "qty: a positive integer"
        return ""

    def get(self, order_id: str) -> dict[str, Any] | None:
        row = (
            self.conn()
            .execute(f"SELECT {_COLUMNS} FROM {self.s}.orders WHERE id = %s", (order_id,))
            .fetchone()
        )
        return _order(row) if row is not None else None

    def cancel(self, order_id: str) -> dict[str, Any] | None:
        """Cancel before goods issue; after it, the order is answered as it stands."""
        with self.conn().transaction():
            self.conn().execute(
                f"UPDATE {self.s}.orders SET status = 'cancelled', reason = 'cancelled on request',"
                " updated_at = %s WHERE id = %s AND status = 'created'",
                (time.time(), order_id),
            )
        return self.get(order_id)

    def progress(self) -> None:
        """One tick of the warehouse: every order moves one step when it is due."""
        pick_after = self.faults.get("pick_delay_ms", 0.0) / 1000
        now = time.time()
        conn = self.conn()
        with conn.transaction():
            for oid, sku, from_site, qty in conn.execute(
                f"SELECT id, sku, from_site, qty FROM {self.s}.orders WHERE status = 'created'"
                " AND created_at <= %s ORDER BY created_at FOR UPDATE SKIP LOCKED",
                (now - pick_after,),
            ).fetchall():
                taken = conn.execute(
                    f"UPDATE {self.s}.stock SET on_hand = on_hand - %s WHERE sku = %s AND"
                    " site = %s AND on_hand >= %s",
                    (qty, sku, from_site, qty),
                ).rowcount
                status, reason = ("picked", "") if taken else ("refused", "not enough stock")
                conn.execute(
                    f"UPDATE {self.s}.orders SET status = %s, reason = %s, updated_at = %s"
                    " WHERE id = %s",
                    (status, reason, now, oid),
                )
            conn.execute(
                f"UPDATE {self.s}.orders SET status = 'shipped', updated_at = %s WHERE status ="
                " 'picked' AND updated_at < %s",
                (now, now),
            )
            self._receive(conn, now)

    def _receive(self, conn: psycopg.Connection[Any], now: float) -> None:
        fail = self.faults.get("receipt_fail_rate", 0.0)
        for oid, sku, from_site, to_site, qty in conn.execute(
            f"SELECT id, sku, from_site, to_site, qty FROM {self.s}.orders WHERE status ="
            " 'shipped' AND updated_at < %s FOR UPDATE SKIP LOCKED",
            (now,),
        ).fetchall():
            failed = random.random() < fail
            site = from_site if failed else to_site  # a failed receipt goes back
            conn.execute(
                f"INSERT INTO {self.s}.stock (sku, site, on_hand) VALUES (%s, %s, %s) ON CONFLICT"
                " (sku, site) DO UPDATE SET on_hand = stock.on_hand + EXCLUDED.on_hand",
                (sku, site, qty),
            )
            status = "receipt_failed" if failed else "received"
            conn.execute(
                f"UPDATE {self.s}.orders SET status = %s, updated_at = %s WHERE id = %s",
                (status, now, oid),
            )

    def set_stock(self, rows: list[dict[str, Any]]) -> None:
        with self.conn().transaction():
            for row in rows:
                self.conn().execute(
                    f"INSERT INTO {self.s}.stock (sku, site, on_hand) VALUES (%s, %s, %s) ON"
                    " CONFLICT (sku, site) DO UPDATE SET on_hand = EXCLUDED.on_hand",
                    (row["sku"], row["site"], int(row["on_hand"])),
                )

    def adjust(self, rows: list[dict[str, Any]]) -> None:
        """Stock changes that are not transfers (sales, damage), booked by the stores."""
        with self.conn().transaction():
            for row in rows:
                self.conn().execute(
                    f"UPDATE {self.s}.stock SET on_hand = on_hand + %s WHERE sku = %s"
                    " AND site = %s",
                    (int(row["delta"]), row["sku"], row["site"]),
                )

    def stock(self) -> list[dict[str, Any]]:
        rows = self.conn().execute(f"SELECT sku, site, on_hand FROM {self.s}.stock").fetchall()
        return [{"sku": sku, "site": site, "on_hand": n} for sku, site, n in rows]

    def orders(self) -> list[dict[str, Any]]:
        rows = self.conn().execute(f"SELECT {_COLUMNS} FROM {self.s}.orders").fetchall()
        return [_order(row) for row in rows]


def _order(row: tuple[Any, ...]) -> dict[str, Any]:
    oid, status, reason, sku, from_site, to_site, qty, reference, requests = row
    return {
        "id": oid,
        "status": status,
        "reason": reason,
        "sku": sku,
        "from_site": from_site,
        "to_site": to_site,
        "qty": qty,
        "reference": reference,
        "requests": requests,
    }


def handler_for(wms: Wms) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: with Nagle on, the second waits for the
        # client's delayed ACK (40 ms a request, measured).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                return None

        def _faulty(self) -> bool:
            """Apply the switched-on faults; True when the request is answered by one."""
            if self.path.startswith("/_"):
                return False
            faults = wms.faults
            time.sleep(faults.get("slow_ms", 0.0) / 1000)
            if random.random() < faults.get("timeout_rate", 0.0):
                time.sleep(10)
            if random.random() < faults.get("error_rate", 0.0):
                self._send(500, {"detail": "injected error"})
                return True
            if random.random() < faults.get("garbage_rate", 0.0):
                self._send(200, None, raw=b"<html>gateway says hello</html>")
                return True
            return False

        def do_GET(self) -> None:
            if self.path == "/_stock":
                return self._send(200, wms.stock())
            if self.path == "/_orders":
                return self._send(200, wms.orders())
            if self._faulty():
                return None
            match = _ORDER_PATH.match(self.path)
            found = wms.get(match.group(1)) if match and not match.group(2) else None
            return self._send(200, found) if found else self._send(404, {"detail": "no order"})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/_faults":
                wms.faults = {k: float(v) for k, v in (body or {}).items()}
                return self._send(200, wms.faults)
            if self.path == "/_stock":
                wms.set_stock(body or [])
                return self._send(200, {"rows": len(body or [])})
            if self.path == "/_adjust":
                wms.adjust(body or [])
                return self._send(200, {"rows": len(body or [])})
            if self._faulty():
                return None
            if self.path == "/transfer-orders":
                key = self.headers.get("Idempotency-Key", "")
                if not key or len(key) > 128:
                    return self._send(400, {"detail": "Idempotency-Key header required"})
                code, order = wms.create(key, body)
                return self._send(code, order)
            match = _ORDER_PATH.match(self.path)
            if match and match.group(2):
                found = wms.cancel(match.group(1))
                return self._send(200, found) if found else self._send(404, {"detail": "no order"})
            return self._send(404, {"detail": "no such path"})

    return Handler


def command(port: int, dsn: str, schema: str, sites: Iterable[str], tick_ms: float) -> list[str]:
    """The argv that runs a reference WMS (the tests, the live demo and the bench use it)."""
    return [
        sys.executable,
        "-m",
        "adapters.lab.refwms",
        "--port",
        str(port),
        "--dsn",
        dsn,
        "--schema",
        schema,
        "--sites",
        ",".join(sites),
        "--tick-ms",
        str(tick_ms),
    ]


def _progress_loop(wms: Wms, tick_s: float, stopping: threading.Event) -> None:
    while not stopping.wait(tick_s):
        try:
            wms.progress()
        except psycopg.Error:
            time.sleep(tick_s)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args.add_argument("--schema", default="refwms")
    args.add_argument("--sites", required=True, help="comma-separated site ids")
    args.add_argument("--tick-ms", type=float, default=100.0)
    opts = args.parse_args(argv)
    wms = Wms(opts.dsn, opts.schema, frozenset(opts.sites.split(",")))
    stopping = threading.Event()
    threading.Thread(
        target=_progress_loop, args=(wms, opts.tick_ms / 1000, stopping), daemon=True
    ).start()
    ThreadingHTTPServer.request_queue_size = 512  # the listen backlog (5 by default)
    server = ThreadingHTTPServer(("127.0.0.1", opts.port), handler_for(wms))
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        stopping.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
