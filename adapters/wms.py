"""Adapters that carry a transfer order into a WMS/ERP: a small Protocol and the built-in
REST adapter for the contract in configs/wms-openapi.yaml.

An adapter answers with an `OrderReply` (the order's status in the contract's words) or
raises `WmsError`, saying whether trying again may help. It never decides what a reply
means for the proposal: operators.execution does.

The REST adapter uses httpx (connection pooling, timeouts), tenacity (a few quick retries
with exponential backoff and jitter on timeouts, 5xx and 429, none on other 4xx) and
a circuit breaker of our own (so a WMS that is down is not hammered by every order; see
`CircuitBreaker` for why not pybreaker). Longer
outages are the executor's business: it reschedules the record with its own backoff and
asks a person when patience runs out.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from state.execution import OrderReply


@dataclass(frozen=True, slots=True)
class TransferOrder:
    """What the WMS is asked to do: move `qty` of `sku` from one site to another, as a
    stock-transport order (goods issue at the sender, goods receipt at the receiver)."""

    sku: str
    from_site: str
    to_site: str
    qty: int
    reference: str  # the proposal id, shown to warehouse staff
    expires_at_ms: int


class WmsError(Exception):
    """A call without an answer to act on."""

    def __init__(self, detail: str, retryable: bool, refused: bool = False) -> None:
        super().__init__(detail)
        self.retryable = retryable
        self.refused = refused


class CircuitOpen(WmsError):
    """Not tried: the breaker is open. The record waits without spending an attempt."""

    def __init__(self) -> None:
        super().__init__("circuit open: the WMS failed too often lately", retryable=True)


class TransferOrders(Protocol):
    """What stockshift needs from a WMS/ERP. `create` must be idempotent on the key: the
    same key twice returns the first order, never a second one."""

    def create(self, order: TransferOrder, idempotency_key: str) -> OrderReply: ...

    def status(self, order_id: str) -> OrderReply: ...

    def cancel(self, order_id: str) -> OrderReply: ...


_STATUSES = frozenset(
    {"created", "picked", "shipped", "received", "refused", "cancelled", "receipt_failed"}
)


# What a WMS answer may hold: an order reply is a few hundred bytes, so a larger body is a
# fault (or an attack) that would otherwise be read into memory whole; an id goes into
# URLs and every execution record; a reason is shown to planners.
MAX_REPLY_BYTES = 1 << 20
MAX_ORDER_ID_CHARS = 128
MAX_REASON_CHARS = 500


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, WmsError) and exc.retryable


class CircuitBreaker:
    """Closed -> open after `failures` retryable failures in a row; while open, calls fail
    at once; every `reset_s` one trial call goes through (half-open): success closes it,
    failure keeps it open for another `reset_s`.

    Our own, not pybreaker: pybreaker holds one lock for the whole duration of every call,
    so concurrent requests to the WMS ran one at a time (measured: 15 orders/s against a
    270 orders/s ceiling). Here the lock guards only the counters.
    """

    def __init__(self, failures: int, reset_s: float) -> None:
        self._failures, self._reset_s = failures, reset_s
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._opened_at: float | None = None  # when this outage began
        self._retry_at = 0.0
        self._trial = False

    def allow(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial or time.monotonic() < self._retry_at:
                return False
            self._trial = True  # half-open: this caller tries
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._in_a_row, self._opened_at, self._trial = 0, None, False

    def failed(self) -> None:
        with self._lock:
            self._in_a_row += 1
            tripped = self._opened_at is None and self._in_a_row >= self._failures
            if self._trial or tripped:
                now = time.monotonic()
                self._opened_at = self._opened_at if self._opened_at is not None else now
                self._retry_at = now + self._reset_s
                self._trial = False

    def open_for_s(self) -> float:
        with self._lock:
            return time.monotonic() - self._opened_at if self._opened_at is not None else 0.0


class RestTransferOrders:
    """The built-in adapter: `POST /transfer-orders` with an `Idempotency-Key` header,
    `GET /transfer-orders/{id}`, `POST /transfer-orders/{id}/cancel`."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 2.0,
        attempts: int = 3,
        breaker_failures: int = 5,
        breaker_reset_s: float = 5.0,
        token: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # One client per calling thread: a shared client's connection pool is guarded by one
        # lock, and with 64 threads calling at once most of their time went to waiting for
        # it (py-spy: 37 % of samples in the pool's lock).
        self._client_args: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeout_s,
            "headers": headers,
            "limits": httpx.Limits(max_connections=2, max_keepalive_connections=2),
        }
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        self._breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self._send = retry(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
            reraise=True,
        )(self._send_once)

    def open_for_s(self) -> float:
        """How long the circuit has been open (0 when closed)."""
        return self._breaker.open_for_s()

    def create(self, order: TransferOrder, idempotency_key: str) -> OrderReply:
        body = {
            "sku": order.sku,
            "from_site": order.from_site,
            "to_site": order.to_site,
            "qty": order.qty,
            "reference": order.reference,
            "expires_at_ms": order.expires_at_ms,
        }
        return self._call("POST", "/transfer-orders", body, {"Idempotency-Key": idempotency_key})

    def status(self, order_id: str) -> OrderReply:
        return self._call("GET", f"/transfer-orders/{quote(order_id, safe='')}")

    def cancel(self, order_id: str) -> OrderReply:
        return self._call("POST", f"/transfer-orders/{quote(order_id, safe='')}/cancel")

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(**self._client_args)
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> OrderReply:
        if not self._breaker.allow():
            raise CircuitOpen()
        try:
            reply: OrderReply = self._send(method, path, body, headers)
        except WmsError as exc:
            if exc.retryable:
                self._breaker.failed()
            else:
                self._breaker.succeeded()  # it answered: the WMS is up
            raise
        self._breaker.succeeded()
        return reply

    def _send_once(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> OrderReply:
        # `timeout_s` bounds each wait for a byte; a WMS that drips its answer a byte at a
        # time is cut off at twice that in all.
        deadline = time.monotonic() + 2 * self._client_args["timeout"]
        try:
            with self._client().stream(method, path, json=body, headers=headers) as response:
                content = _read_capped(method, path, response, deadline)
        except httpx.TimeoutException:
            raise WmsError(f"{method} {path}: timed out", True) from None
        except httpx.TransportError as exc:
            raise WmsError(f"{method} {path}: {type(exc).__name__}", True) from None
        return read_reply(method, path, response.status_code, content)


def _read_capped(method: str, path: str, response: httpx.Response, deadline: float) -> bytes:
    content = bytearray()
    for chunk in response.iter_bytes():
        content += chunk
        if len(content) > MAX_REPLY_BYTES:
            raise WmsError(f"{method} {path}: the answer is over {MAX_REPLY_BYTES} bytes", False)
        if time.monotonic() > deadline:
            raise WmsError(f"{method} {path}: timed out reading the answer", True)
    return bytes(content)


def read_reply(method: str, path: str, code: int, content: bytes) -> OrderReply:
    """An HTTP answer as an OrderReply, or why it is not one."""
    if code == 429 or code >= 500:
        raise WmsError(f"{method} {path}: HTTP {code}", True)
    try:
        body = json.loads(content)
    except ValueError:
        raise WmsError(
            f"{method} {path}: HTTP {code} with a body that is not JSON", False
        ) from None
    if 400 <= code < 500:
        detail = body.get("detail") if isinstance(body, dict) else None
        raise WmsError(f"{method} {path}: HTTP {code}: {str(detail)[:200]}", False, refused=True)
    if not isinstance(body, dict):
        raise WmsError(f"{method} {path}: the answer is not an object", False)
    order_id, status = body.get("id"), body.get("status")
    if not _valid_id(order_id) or status not in _STATUSES:
        raise WmsError(f"{method} {path}: the answer has no valid id and status", False)
    reason = body.get("reason")
    reason = reason[:MAX_REASON_CHARS] if isinstance(reason, str) else ""
    return OrderReply(str(order_id), str(status), reason)


def _valid_id(order_id: object) -> bool:
    """A WMS order id: 1-128 printable characters (it is quoted into URLs either way)."""
    return (
        isinstance(order_id, str)
        and 0 < len(order_id) <= MAX_ORDER_ID_CHARS
        and order_id.isprintable()
    )
