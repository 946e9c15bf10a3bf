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


def test_while_redis_refuses_writes_waiting_positions_are_capped_and_drops_counted(
    redis_url: str,
) -> None:
    """Redis full (maxmemory reached under noeviction): writes fail, the latest position per
    SKU-site waits, at most MAX_PENDING_POSITIONS of them; the rest are counted as dropped,
    and what waited lands once Redis has room again."""
    from adapters import metrics

    client = redis.Redis.from_url(redis_url)
    settings = RedisSettings(url=redis_url, prefix=f"full{uuid.uuid4().hex[:6]}:")
    sink = LiveStateSink(settings).build("live", 0, 1)
    sink.MAX_PENDING_POSITIONS = 3  # type: ignore[misc]
    dropped = metrics.REDIS_WRITE_FAILURES.labels(operation="positions_dropped")
    before = dropped._value.get()
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(client.info("memory")["used_memory"]))
    try:
        for n in range(5):
            position = SitePosition(f"SKU-{n}", "S01", n, 0, 0, 0, n, 0.5, 1_767_571_200_000)
            sink.write_batch([(f"SKU-{n}", StepOutput(f"e{n}", positions=(position,)))])
        assert dropped._value.get() - before == 2
        assert client.exists(Keys(settings.prefix).positions("SKU-0")) == 0
    finally:
        client.config_set("maxmemory", "0")
        client.config_set("maxmemory-policy", policy)
    sink._outage._next_try = 0.0  # retry now rather than after the back-off
    sink.write_batch([])
    for n in range(3):
        assert client.hget(Keys(settings.prefix).positions(f"SKU-{n}"), "S01") is not None
    assert client.exists(Keys(settings.prefix).positions("SKU-4")) == 0
    sink.close()
