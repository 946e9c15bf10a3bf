"""The executor's durable progress, in Redis: one JSON record per proposal and a sorted set
of the unfinished ones by when each is next due.

Why Redis: the flow already needs it (live state), so execution adds no new server; with
AOF (`appendonly yes`, `appendfsync everysec`) a crash of Redis loses at most a second of
progress, and even a lost record cannot make a second transfer: the record is only a
memory of where a proposal stood, while exactly-once at the WMS comes from the idempotency
key (the proposal id) that every create carries, and exactly-once in stockshift from the
outcome events' ids. Finished records expire after `keep_s` (30 days by default).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
import redis

from state.execution import ExecutionRecord, Stage

# Accept a record only if none exists, and put it in the due set: one round trip, atomic.
_ACCEPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def record_json(record: ExecutionRecord) -> bytes:
    body = asdict(record)
    body["stage"] = record.stage.value
    return orjson.dumps(body)


def record_from_json(raw: bytes | str) -> ExecutionRecord:
    body: dict[str, Any] = orjson.loads(raw)
    body["stage"] = Stage(body["stage"])
    return ExecutionRecord(**body)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ExecutionStore:
    def __init__(self, client: redis.Redis, prefix: str, keep_s: int = 30 * 86_400) -> None:
        self._client = client
        self._prefix = f"{prefix}exec:"
        self._due = f"{self._prefix}due"
        self._keep_s = keep_s
        self._accept = client.register_script(_ACCEPT)

    def _key(self, proposal_id: str) -> str:
        return f"{self._prefix}record:{proposal_id}"

    def _approval_key(self, proposal_id: str) -> str:
        return f"{self._prefix}approved:{proposal_id}"

    def accept(self, record: ExecutionRecord) -> bool:
        """Store a new record; False if the proposal was seen before (a duplicate)."""
        key = self._key(record.proposal_id)
        added = self._accept(
            keys=[key, self._due], args=[record_json(record), record.next_at_ms, record.proposal_id]
        )
        return bool(added)

    def get(self, proposal_id: str) -> ExecutionRecord | None:
        raw = self._client.get(self._key(proposal_id))
        return record_from_json(raw) if raw is not None else None

    def save(self, record: ExecutionRecord) -> None:
        key = self._key(record.proposal_id)
        with self._client.pipeline(transaction=True) as pipe:
            if record.stage.finished:
                pipe.set(key, record_json(record), ex=self._keep_s)
                pipe.zrem(self._due, record.proposal_id)
            else:
                pipe.set(key, record_json(record))
                pipe.zadd(self._due, {record.proposal_id: record.next_at_ms})
            pipe.execute()

    def due(self, now_ms: int, limit: int) -> list[ExecutionRecord]:
        """Unfinished records due by now, earliest first."""
        ids = self._client.zrangebyscore(self._due, "-inf", now_ms, start=0, num=limit)
        if not ids:
            return []
        raws = self._client.mget([self._key(_text(i)) for i in ids])
        return [record_from_json(raw) for raw in raws if raw is not None]

    def unfinished(self) -> int:
        return int(self._client.zcard(self._due))

    def remember_approval(self, proposal_id: str, body: bytes, keep_s: int) -> None:
        """An approval that came before its proposal (topics are not ordered with each other)."""
        self._client.set(self._approval_key(proposal_id), body, ex=keep_s)

    def approval_for(self, proposal_id: str) -> bytes | None:
        raw = self._client.get(self._approval_key(proposal_id))
        return _text(raw).encode() if raw is not None else None

    def all_records(self) -> list[ExecutionRecord]:
        """Every record (tests and the live demo's final check)."""
        keys = list(self._client.scan_iter(match=f"{self._prefix}record:*", count=1000))
        raws = self._client.mget(keys) if keys else []
        return [record_from_json(raw) for raw in raws if raw is not None]
