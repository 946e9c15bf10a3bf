"""The console's guards against a stranger on its port, on real parts: a body past the
limit refused by a real uvicorn before the app reads it; failed sign-ins counted in a real
Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from adapters.console_auth import SignInThrottle
from adapters.lab.devservices import free_port
from adapters.request_limits import BodyLimit

pytestmark = pytest.mark.integration

LIMIT = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[int]]]:
    """A form-reading app behind `BodyLimit(LIMIT)` on uvicorn; the sizes of the forms it
    read to the end."""
    read: list[int] = []

    async def form(request: Request) -> PlainTextResponse:
        fields = await request.form()
        read.append(sum(len(str(v)) for v in fields.values()))
        return PlainTextResponse("read")

    app = Starlette(
        routes=[Route("/form", form, methods=["POST"])],
        middleware=[Middleware(BodyLimit, limit=LIMIT)],
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not served.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/form", read
    served.should_exit = True
    thread.join(10)


def test_a_body_within_the_limit_reaches_the_app(server: tuple[str, list[int]]) -> None:
    url, read = server
    answer = httpx.post(url, data={"note": "n" * 1000})
    assert (answer.status_code, answer.text) == (200, "read")
    assert read[-1] == 1000


def test_a_declared_body_past_the_limit_is_refused_unread(server: tuple[str, list[int]]) -> None:
    url, read = server
    before = len(read)
    answer = httpx.post(url, data={"note": "n" * (LIMIT + 1)})
    assert answer.status_code == 413 and f"over {LIMIT} bytes" in answer.text
    assert len(read) == before


def test_a_streamed_body_past_the_limit_is_cut_off(server: tuple[str, list[int]]) -> None:
    """Chunked, with no length declared: counted as it arrives and refused once past."""
    url, read = server
    before = len(read)

    def chunks() -> Iterator[bytes]:
        yield b"note="
        for _ in range(LIMIT // 512 + 2):
            yield b"n" * 512

    headers = {"content-type": "application/x-www-form-urlencoded"}
    answer = httpx.post(url, content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert len(read) == before
    assert httpx.post(url, data={"note": "after"}).status_code == 200  # the server goes on


@pytest.fixture
def throttle(redis_url: str) -> Iterator[SignInThrottle]:
    prefix = f"test-signin-{uuid.uuid4().hex[:8]}:"
    yield SignInThrottle(redis_url, key_prefix=prefix)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def test_ten_failures_for_a_name_from_an_address_hold_that_pair_only(
    throttle: SignInThrottle,
) -> None:
    for _ in range(9):
        throttle.failed("pat", "10.0.0.1")
    assert throttle.wait_seconds("pat", "10.0.0.1") == 0
    throttle.failed("pat", "10.0.0.1")
    assert 0 < throttle.wait_seconds("pat", "10.0.0.1") <= 900
    # Not a lock on the planner everywhere, nor on the address for other names.
    assert throttle.wait_seconds("pat", "10.0.0.2") == 0
    assert throttle.wait_seconds("zoe", "10.0.0.1") == 0


def test_a_success_clears_the_names_failures(throttle: SignInThrottle) -> None:
    for _ in range(9):
        throttle.failed("pat", "10.0.0.1")
    throttle.succeeded("pat", "10.0.0.1")
    throttle.failed("pat", "10.0.0.1")
    assert throttle.wait_seconds("pat", "10.0.0.1") == 0


def test_a_hundred_failures_from_an_address_hold_it_for_every_name(
    throttle: SignInThrottle,
) -> None:
    started = time.monotonic()
    for i in range(100):
        throttle.failed(f"name-{i}", "10.0.0.9")
    assert time.monotonic() - started < 30
    assert throttle.wait_seconds("someone-new", "10.0.0.9") > 0
    assert throttle.wait_seconds("someone-new", "10.0.0.8") == 0


def test_keys_are_cut_and_live_under_the_prefix(throttle: SignInThrottle, redis_url: str) -> None:
    throttle.failed("n" * 10_000, "a" * 10_000)
    client = redis.Redis.from_url(redis_url)
    keys = [k for k in client.scan_iter(match="test-signin-*") if b"n" * 128 in k]
    assert keys and all(len(k) < 400 and 0 < client.ttl(k) <= 900 for k in keys)
