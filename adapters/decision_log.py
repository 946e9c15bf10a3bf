"""Read a proposal's decision trail back: from Redis (recent) or the decisions topic."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from adapters.kafka import read_to_end
from adapters.redis_store import RedisSettings, connect, read_trail

log = logging.getLogger("stockshift.explain")


def trail_from_redis(settings: RedisSettings, proposal_id: str) -> list[dict[str, Any]]:
    client = connect(settings)
    try:
        _, trail = read_trail(client, settings.prefix, proposal_id)
        return trail
    finally:
        client.close()


def trail_from_kafka(
    brokers: Iterable[str],
    topic: str,
    proposal_id: str,
    add_config: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Scan the decisions topic to its end for records that name the proposal."""
    found: list[dict[str, Any]] = []
    needle = proposal_id.encode()
    try:
        for msg in read_to_end(brokers, topic, "stockshift-explain", add_config, timeout_s):
            value = msg.value() or b""
            if needle in value:
                record = orjson.loads(value)
                if record.get("proposal_id") == proposal_id:
                    found.append(record)
    except TimeoutError as exc:
        log.warning("decision log read incomplete", extra={"error": str(exc)})
    found.sort(key=lambda r: r.get("ts", ""))
    return found
