"""How much a web request may carry: the console's forms are a few kilobytes, so a body
past `MAX_BODY_BYTES` is answered 413 before the app reads it.

Starlette parses a form into memory with 1 MiB a field and 1,000 fields allowed, so one
unauthenticated POST to /login could hold a gigabyte; neither Starlette nor uvicorn caps a
body, and no well-kept package does just this (the ASGI middleware below is the usual
shape: the declared length checked first, the streamed bytes counted for a chunked body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The most a console request body may hold: a form approving a page of proposals is
# about 5 KB; a thousand ids, under 64 KB.
MAX_BODY_BYTES = 1 << 20


class _TooLarge(Exception):
    """The streamed body passed the limit (raised into the app's read, caught here)."""


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, whether it declares its length
    or streams it; a request within the limit passes untouched."""

    def __init__(self, app: App, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and not 0 <= declared <= self.limit:
            await _refuse(send, self.limit)
            return
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:  # else the answer is under way; the connection just ends
                await _refuse(send, self.limit)


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header as a number; -1 when it is not one (refused)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) <= 18 else -1
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = f"request body over {limit} bytes\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
