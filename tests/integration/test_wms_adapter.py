"""The REST adapter against a real HTTP server that answers as a faulty or hostile WMS
might: ids that would steer a URL, oversized and dripping bodies, overlong fields."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.wms import (
    MAX_REASON_CHARS,
    MAX_REPLY_BYTES,
    RestTransferOrders,
    TransferOrder,
    WmsError,
)

Answer = Callable[[BaseHTTPRequestHandler], None]


def _json(handler: BaseHTTPRequestHandler, body: object) -> None:
    data = json.dumps(body).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _Wms:
    """A server whose every answer is `answer`; it records the paths asked for."""

    def __init__(self) -> None:
        self.answer: Answer = lambda h: _json(h, {"id": "o-1", "status": "created"})
        self.paths: list[str] = []
        wms = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                wms.paths.append(self.path)
                wms.answer(self)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                wms.paths.append(self.path)
                wms.answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def wms() -> Iterator[_Wms]:
    server = _Wms()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


ORDER = TransferOrder("SKU-1", "DC-1", "STORE-1", 3, "p-1", 0)


def test_an_order_id_cannot_steer_the_url_it_is_put_into(wms: _Wms) -> None:
    """An id the WMS gave is quoted into the path: '../' or '?' stay inside one segment."""
    client = RestTransferOrders(wms.url, timeout_s=2.0, attempts=1)
    client.status("../../admin?drop=1")
    client.cancel("a/b")
    assert wms.paths == [
        "/transfer-orders/..%2F..%2Fadmin%3Fdrop%3D1",
        "/transfer-orders/a%2Fb/cancel",
    ]


def test_an_oversized_answer_is_refused_without_being_read_whole(wms: _Wms) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(4 * MAX_REPLY_BYTES // len(chunk)):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    wms.answer = huge
    client = RestTransferOrders(wms.url, timeout_s=2.0, attempts=1)
    with pytest.raises(WmsError, match="over 1048576 bytes") as caught:
        client.create(ORDER, "key-1")
    assert not caught.value.retryable


def test_an_answer_dripped_a_byte_at_a_time_times_out(wms: _Wms) -> None:
    """Each byte within `timeout_s`, so httpx's own timeout never fires; the whole answer
    is cut off at twice `timeout_s`."""

    def drip(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps({"id": "o-1", "status": "created", "pad": "x" * 50}).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            for byte in body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    wms.answer = drip
    client = RestTransferOrders(wms.url, timeout_s=0.5, attempts=1)
    started = time.monotonic()
    with pytest.raises(WmsError, match="timed out") as caught:
        client.status("o-1")
    assert caught.value.retryable
    assert time.monotonic() - started < 3.0  # the body alone would take about 7 s


def test_an_overlong_or_unprintable_id_is_no_answer_and_a_long_reason_is_cut(
    wms: _Wms,
) -> None:
    client = RestTransferOrders(wms.url, timeout_s=2.0, attempts=1)
    for bad_id in ("o" * 129, "o-1\n", ""):
        wms.answer = lambda h, i=bad_id: _json(h, {"id": i, "status": "created"})
        with pytest.raises(WmsError, match="no valid id and status"):
            client.status("o-1")
    wms.answer = lambda h: _json(h, {"id": "o" * 128, "status": "refused", "reason": "r" * 9999})
    reply = client.status("o-1")
    assert reply.order_id == "o" * 128 and reply.reason == "r" * MAX_REASON_CHARS
