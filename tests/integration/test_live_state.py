"""The live-state sink against a real Redis: positions and trails land, keys keep a TTL,
and an error reply fails a batch without poisoning the connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
import redis

from adapters.redis_store import Keys, LiveStateSink, RedisSettings, execute_packed
from state.records import DecisionRecord, Outcome, SitePosition, StepOutput
from tests.support.helpers import unique_prefix


def _output(on_hand: int, sku: str = "SKU-1") -> tuple[str, StepOutput]:
    position = SitePosition(sku, "S01", on_hand, 0, 0, 0, on_hand, 0.5, 1_767_571_200_000)
    return sku, StepOutput(event_id=f"{sku}-e{on_hand}", positions=(position,))


@contextmanager
def _redis_full(client: redis.Redis) -> Iterator[None]:
    """Redis refusing writes, as when full under noeviction; as it was afterwards."""
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(client.info("memory")["used_memory"]))
    try:
        yield
    finally:
        client.config_set("maxmemory", "0")
        client.config_set("maxmemory-policy", policy)


def test_positions_land_and_their_key_ttl_is_refreshed_each_quarter_ttl(redis_url: str) -> None:
    settings = RedisSettings(url=redis_url, prefix=unique_prefix("live", ":"), positions_ttl_s=4)
    key = Keys(settings.prefix).positions("SKU-1")
    client = redis.Redis.from_url(redis_url)
    sink = LiveStateSink(settings).build("live", 0, 1)
    try:
        sink.write_batch([_output(7)])
        assert sink.settle()
        assert orjson.loads(client.hget(key, "S01"))["on_hand"] == 7  # type: ignore[arg-type]
        assert 0 < client.ttl(key) <= 4
        # Within a quarter of the TTL a write refreshes the field but not the TTL: the one set
        # here by hand survives it.
        client.expire(key, 100)
        sink.write_batch([_output(6)])
        assert sink.settle()
        assert orjson.loads(client.hget(key, "S01"))["on_hand"] == 6  # type: ignore[arg-type]
        assert client.ttl(key) > 50
        time.sleep(1.1)  # a quarter of the 4 s TTL has passed: the next write sets it again
        sink.write_batch([_output(5)])
        assert sink.settle()
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
    settings = RedisSettings(url=redis_url, prefix=unique_prefix("full", ":"))
    sink = LiveStateSink(settings).build("live", 0, 1)
    sink.MAX_PENDING_POSITIONS = 3  # type: ignore[misc]
    dropped = metrics.REDIS_WRITE_FAILURES.labels(operation="positions_dropped")
    before = dropped._value.get()
    with _redis_full(client):
        for n in range(5):
            sink.write_batch([_output(n, f"SKU-{n}")])
        assert dropped._value.get() - before == 2
        assert client.exists(Keys(settings.prefix).positions("SKU-0")) == 0
    sink._outage._next_try = 0.0  # retry now rather than after the back-off
    sink.write_batch([])
    assert sink.settle()
    for n in range(3):
        assert client.hget(Keys(settings.prefix).positions(f"SKU-{n}"), "S01") is not None
    assert client.exists(Keys(settings.prefix).positions("SKU-4")) == 0
    # The whole batch landed: the sink is out of its outage, with nothing left waiting.
    assert sink._outage.down_since is None
    assert not sink._positions
    sink.close()


def test_a_write_refused_after_it_was_sent_waits_again_behind_newer_positions(
    redis_url: str,
) -> None:
    """The sink sends a batch and reads its replies at its next write. A batch Redis refused
    (full, under noeviction) is found then: the positions it carried wait again, except
    where a newer one has come since, and land once Redis has room."""
    client = redis.Redis.from_url(redis_url)
    settings = RedisSettings(url=redis_url, prefix=unique_prefix("refused", ":"))
    keys = Keys(settings.prefix)
    sink = LiveStateSink(settings).build("live", 0, 1)
    with _redis_full(client):
        sink.write_batch([_output(1, "SKU-1"), _output(1, "SKU-2")])
        sink.write_batch([_output(2, "SKU-1")])
        assert sink._outage.down_since is not None  # found refused by the second write
        assert client.exists(keys.positions("SKU-1"), keys.positions("SKU-2")) == 0
    sink._outage._next_try = 0.0  # retry now rather than after the back-off
    sink.write_batch([])
    assert sink.settle()
    landed = {
        sku: orjson.loads(client.hget(keys.positions(sku), "S01"))["on_hand"]  # type: ignore[arg-type]
        for sku in ("SKU-1", "SKU-2")
    }
    assert landed == {"SKU-1": 2, "SKU-2": 1}
    sink.close()
    client.delete(keys.positions("SKU-1"), keys.positions("SKU-2"))


def test_packed_commands_raise_the_first_error_reply_and_the_connection_stays_usable(
    redis_url: str,
) -> None:
    """An error reply amid a batch (WRONGTYPE here) fails the batch, the commands around it
    still ran, and the next batch on the same pool reads its own replies, not leftovers."""
    client = redis.Redis.from_url(redis_url)
    base = unique_prefix("packed", ":")
    try:
        client.set(base + "string", "x")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            execute_packed(
                client,
                [
                    ("HSET", base + "a", "f", b"1"),
                    ("HSET", base + "string", "f", b"2"),
                    ("HSET", base + "b", "f", b"3"),
                ],
            )
        assert client.hget(base + "a", "f") == b"1"
        assert client.hget(base + "b", "f") == b"3"
        execute_packed(client, [("HSET", base + "c", "f", b"4"), ("EXPIRE", base + "c", 60)])
        assert client.hget(base + "c", "f") == b"4"
        assert 0 < client.ttl(base + "c") <= 60
    finally:
        client.delete(*(base + k for k in ("string", "a", "b", "c")))


def _decision(proposal_id: str, outcome: Outcome) -> DecisionRecord:
    return DecisionRecord(
        "SKU-1", "S01", 1_767_571_200_000, outcome, "test", "", "v1", "e1",
        proposal_id=proposal_id,
    )  # fmt: skip


def test_trail_lands_and_only_a_proposal_the_ledger_holds_gets_its_status(
    redis_url: str,
) -> None:
    settings = RedisSettings(url=redis_url, prefix=unique_prefix("trail", ":"))
    keys = Keys(settings.prefix)
    client = redis.Redis.from_url(redis_url)
    client.hset(keys.proposal("known"), mapping={"state": "pending", "status": "proposed"})
    client.expire(keys.proposal("known"), 600)
    sink = LiveStateSink(settings).build("live", 0, 1)
    try:
        sink.write_batch(
            [_decision("known", Outcome.APPROVED), _decision("made-up", Outcome.APPROVED)]
        )
        assert client.hget(keys.proposal("known"), "status") == Outcome.APPROVED.value.encode()
        assert client.exists(keys.proposal("made-up")) == 0
        for pid in ("known", "made-up"):
            entries = [orjson.loads(raw) for raw in client.lrange(keys.trail(pid), 0, -1)]
            assert [entry["proposal_id"] for entry in entries] == [pid]
            assert 0 < client.ttl(keys.trail(pid)) <= settings.ledger_ttl_s
    finally:
        sink.close()
        client.delete(keys.proposal("known"), keys.trail("known"), keys.trail("made-up"))
