"""The console's guards against a stranger on its port, on real parts: a body past the
limit refused by a real uvicorn before the app reads it; failed sign-ins counted in a real
Redis; whose forwarded address a real uvicorn believes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from adapters.console_auth import SignInThrottle, from_headers
from adapters.lab.devservices import free_port
from adapters.request_limits import BodyLimit
from adapters.settings import Settings
from flows.console import proxy_options
from tests.support.helpers import TEST_RUN, unique_prefix

pytestmark = pytest.mark.integration

LIMIT = 4096


@contextmanager
def serving(app: Starlette, **options: Any) -> Iterator[str]:
    """The app on a real uvicorn on loopback, with the given server options; its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not served.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        thread.join(10)


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
    with serving(app) as url:
        yield url + "/form", read


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
    prefix = unique_prefix("test-signin-", ":")
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
    keys = [k for k in client.scan_iter(match=f"{TEST_RUN}test-signin-*") if b"n" * 128 in k]
    assert keys and all(len(k) < 400 and 0 < client.ttl(k) <= 900 for k in keys)


def _who_app(settings: Settings) -> Starlette:
    """Answers with the client uvicorn reports and the user the console's header sign-in
    would find for this request."""

    async def who(request: Request) -> PlainTextResponse:
        host = request.client.host if request.client else None
        user = from_headers({}, request.headers, host, settings.console_trusted_proxies)
        return PlainTextResponse(f"{host} {user.name if user else '-'}")

    return Starlette(routes=[Route("/", who)])


def test_behind_a_trusted_proxy_identity_headers_are_believed_and_the_client_is_counted() -> None:
    """A sidecar proxy on 127.0.0.1 forwards the user and `X-Forwarded-For`: with identity
    headers the trust check sees the proxy (the user is believed); with passwords the
    throttle's address is the client behind it."""
    headers = {"x-auth-request-user": "pat", "x-forwarded-for": "203.0.113.9"}
    for auth, expected in (("headers", "127.0.0.1 pat"), ("password", "203.0.113.9 -")):
        settings = replace(Settings(), console_auth=auth)
        with serving(_who_app(settings), **proxy_options(settings)) as url:
            assert httpx.get(url, headers=headers).text == expected
