"""The live-state sink against a real Redis: positions land, and their keys keep a TTL."""

from __future__ import annotations

import time
import uuid

import orjson
import redis

from adapters.redis_store import Keys, LiveStateSink, RedisSettings
from state.records import SitePosition, StepOutput


def _output(on_hand: int) -> tuple[str, StepOutput]:
    position = SitePosition("SKU-1", "S01", on_hand, 0, 0, 0, on_hand, 0.5, 1_767_571_200_000)
    return "SKU-1", StepOutput(event_id=f"e{on_hand}", positions=(position,))


def test_positions_land_and_their_key_ttl_is_refreshed_each_quarter_ttl(redis_url: str) -> None:
    settings = RedisSettings(
        url=redis_url, prefix=f"live{uuid.uuid4().hex[:6]}:", positions_ttl_s=4
    )
    key = Keys(settings.prefix).positions("SKU-1")
    client = redis.Redis.from_url(redis_url)
    sink = LiveStateSink(settings).build("live", 0, 1)
    try:
        sink.write_batch([_output(7)])
        assert orjson.loads(client.hget(key, "S01"))["on_hand"] == 7  # type: ignore[arg-type]
        assert 0 < client.ttl(key) <= 4
        # Within a quarter of the TTL a write refreshes the field but not the TTL: the one set
        # here by hand survives it.
        client.expire(key, 100)
        sink.write_batch([_output(6)])
        assert orjson.loads(client.hget(key, "S01"))["on_hand"] == 6  # type: ignore[arg-type]
        assert client.ttl(key) > 50
        time.sleep(1.1)  # a quarter of the 4 s TTL has passed: the next write sets it again
        sink.write_batch([_output(5)])
        assert 0 < client.ttl(key) <= 4
    finally:
        sink.close()
        client.delete(key)
