"""Redis: live positions, the proposal ledger, recent decision trails.

Key layout (prefix default `stockshift:`):
  {prefix}pos:{sku}            hash  site -> JSON live position          TTL positions_ttl
                                     (refreshed at most every quarter TTL: a key expires
                                     3/4 to 1 TTL after its last write)
  {prefix}proposal:{id}        hash  state (pending|delivered), status, sku, from_site,
                                     to_site, qty, created_at, expires_at    TTL ledger_ttl
  {prefix}proposal:{id}:trail  list  JSON decision records about the proposal, in order
                                                                           TTL ledger_ttl
Kafka stays the system of record: when Redis is down the flow keeps deciding and producing,
counts the failures, and writes the latest live state once Redis answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import hiredis
import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from adapters import metrics
from operators.codec import decision_json, rfc3339
from state.records import DecisionRecord, Proposal, SitePosition, StepOutput

log = logging.getLogger("stockshift.redis")
T = TypeVar("T")


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "stockshift:"
    positions_ttl_s: int = 7 * 24 * 3600
    ledger_ttl_s: int = 30 * 24 * 3600
    timeout_s: float = 0.5
    retry_after_s: float = 1.0


def connect(settings: RedisSettings) -> redis.Redis:
    """A client with short timeouts: a slow Redis must not stall the flow."""
    return redis.Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        health_check_interval=30,
    )


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def positions(self, sku: str) -> str:
        return f"{self.prefix}pos:{sku}"

    def proposal(self, proposal_id: str) -> str:
        return f"{self.prefix}proposal:{proposal_id}"

    def trail(self, proposal_id: str) -> str:
        return f"{self.prefix}proposal:{proposal_id}:trail"


class Outage:
    """Remembers that Redis failed, so calls back off instead of timing out per batch."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.down_since: float | None = None
        self._next_try = 0.0

    def may_try(self) -> bool:
        return self.down_since is None or time.monotonic() >= self._next_try

    def failed(self, exc: Exception, what: str) -> None:
        metrics.REDIS_WRITE_FAILURES.labels(operation=what).inc()
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("redis unavailable; continuing without it", extra={"error": str(exc)})
        self._next_try = time.monotonic() + self.retry_after_s

    def recovered(self) -> None:
        if self.down_since is not None:
            log.info(
                "redis is back", extra={"down_s": round(time.monotonic() - self.down_since, 1)}
            )
        self.down_since = None


def position_json(position: SitePosition) -> bytes:
    return orjson.dumps(
        {
            "on_hand": position.on_hand,
            "inbound": position.inbound,
            "reserved_in": position.reserved_in,
            "reserved_out": position.reserved_out,
            "position": position.position,
            "demand_per_hour": position.demand_per_hour,
            "last_event": rfc3339(position.last_event_ms) if position.last_event_ms >= 0 else None,
        }
    )


_SET_KNOWN_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSET', KEYS[1], 'status', ARGV[1])
end
return 0
"""


Command = tuple[str | bytes | int, ...]


class SentCommands:
    """Commands sent in one write whose replies are still to be read (`replies`), on a
    connection held out of the pool until then.

    What a non-transactional pipeline does, with each command packed by hiredis in C: redis-py's
    pipeline encodes every argument in Python, which was 40 % of the live-state sink's time
    (bench stream, 100k events: 37,701 commands, 278,794 arguments). Sent and read apart,
    the live-state sink goes on with its next batch while Redis works through this one: in
    the flow (bench stream, compiled core) the sink took 2.8-2.9 us an event instead of
    3.4 waiting for each batch's replies.
    """

    def __init__(self, client: redis.Redis, commands: list[Command]) -> None:
        # hiredis types its argument as a one-tuple; it takes any length.
        packed = b"".join([hiredis.pack_command(command) for command in commands])  # type: ignore[arg-type]
        self._pool = client.connection_pool
        self._connection = self._pool.get_connection()
        self._expected = len(commands)
        try:
            self._connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
        except BaseException:
            self._drop()
            raise

    def replies(self) -> list[Any]:
        """Every reply, in order; raises the first error reply. Every reply is read even
        after an error reply, and any other failure drops the connection, so no half-read
        batch of replies meets the connection's next user. Once only."""
        replies: list[Any] = []
        first_error: redis.ResponseError | None = None
        try:
            for _ in range(self._expected):
                try:
                    replies.append(self._connection.read_response())
                except redis.ResponseError as error:
                    first_error = first_error or error
                    replies.append(error)
        except BaseException:
            self._drop()
            raise
        self._pool.release(self._connection)
        if first_error is not None:
            raise first_error
        return replies

    def _drop(self) -> None:
        self._connection.disconnect()  # type: ignore[no-untyped-call]
        self._pool.release(self._connection)


def execute_packed(client: redis.Redis, commands: list[Command]) -> list[Any]:
    """Send `commands` in one write and read every reply (`SentCommands`)."""
    return SentCommands(client, commands).replies()


# What the live-state sink takes: an engine step's output (positions and its decisions), or
# a decision record from negotiation (a proposal's record once granted, or its refusal).
LiveStateItem = tuple[str, StepOutput] | DecisionRecord


# A decision record for a proposal's trail: the proposal's id, the record's JSON, the record.
TrailEntry = tuple[str, bytes, DecisionRecord]


@dataclass(slots=True)
class _Write:
    """A live-state write sent and not yet confirmed, with what it carried: if it fails,
    that is pending again."""

    sent: SentCommands
    positions: dict[str, dict[str, bytes]]
    trail: list[TrailEntry]
    refreshed: list[str]
    sent_at: float


class _LiveStatePartition(StatelessSinkPartition[LiveStateItem]):
    """Writes each batch's latest positions and decision trails in one pipeline, whose
    replies are read at the next write (or by the retry thread within RETRY_POLL_S): a
    write Redis refused is found then, and what it carried waits again.

    While Redis is down, the latest position per SKU-site and the trail entries are kept
    (bounded) and written when it answers again: at the next batch, or by a background retry
    when no batch comes (a quiet SKU must not keep a stale position after an outage).
    """

    MAX_PENDING_TRAIL = 100_000
    # While Redis refuses writes (down, or full under noeviction) the latest position per
    # SKU-site waits here; SKU-sites beyond this many are dropped and counted.
    MAX_PENDING_POSITIONS = 200_000
    RETRY_POLL_S = 0.5
    # A positions key's TTL is refreshed when a quarter of it has passed, not on every write:
    # an EXPIRE per SKU per batch was half the pipeline's commands (bench stream in memory,
    # 100k events: 6,644-6,801 events/s with it, 7,201-7,334 without).
    TTL_REFRESH_SHARE = 0.25

    def __init__(self, client: redis.Redis, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings
        self._keys = Keys(settings.prefix)
        self._outage = Outage(settings.retry_after_s)
        # SKU -> site -> the latest position's JSON, as one HSET per SKU writes them.
        self._positions: dict[str, dict[str, bytes]] = {}
        self._pending_positions = 0
        self._trail: list[TrailEntry] = []
        self._in_flight: _Write | None = None
        # SKU -> monotonic time its positions key's TTL is next due for a refresh.
        self._ttl_due: dict[str, float] = {}
        self._ttl_due_pruned_at = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._retrier = threading.Thread(target=self._retry, name="live-state-retry", daemon=True)
        self._retrier.start()

    def _retry(self) -> None:
        """Between batches: read the last write's replies (a refused write is found even
        when no batch follows it), and while Redis is down, try again."""
        while not self._stopping.wait(self.RETRY_POLL_S):
            with self._lock:
                self._settle()
                if self._outage.down_since is not None and self._outage.may_try():
                    self._flush()

    def write_batch(self, items: list[LiveStateItem]) -> None:
        with self._lock:
            self._write(items)

    def _write(self, items: list[LiveStateItem]) -> None:
        dropped_positions = 0
        for item in items:
            if isinstance(item, DecisionRecord):
                self._take_trail((item,))
                continue
            output = item[1]
            # Most outputs carry one position and no decision: no call for an empty part.
            if output.positions:
                dropped_positions += self._take_positions(output)
            if output.decisions:
                self._take_trail(output.decisions)
        if len(self._trail) > self.MAX_PENDING_TRAIL:
            dropped = len(self._trail) - self.MAX_PENDING_TRAIL
            self._trail = self._trail[dropped:]
            metrics.REDIS_WRITE_FAILURES.labels(operation="trail_dropped").inc(dropped)
        if dropped_positions:
            metrics.REDIS_WRITE_FAILURES.labels(operation="positions_dropped").inc(
                dropped_positions
            )
        if self._outage.may_try():
            self._flush()

    def _take_positions(self, output: StepOutput) -> int:
        """Keep the latest position per SKU-site; returns how many found no room."""
        dropped = 0
        for position in output.positions:
            sites = self._positions.get(position.sku)
            if sites is None or position.site not in sites:
                if self._pending_positions >= self.MAX_PENDING_POSITIONS:
                    dropped += 1
                    continue
                self._pending_positions += 1
                if sites is None:  # never an empty entry: an HSET needs a field
                    sites = self._positions[position.sku] = {}
            sites[position.site] = position_json(position)
        return dropped

    def _take_trail(self, decisions: Iterable[DecisionRecord]) -> None:
        for decision in decisions:
            if decision.proposal_id is not None and not decision.shadow:
                body = decision_json(decision)
                self._trail.append((decision.proposal_id, body, decision))

    def _flush(self) -> None:
        """Send what is pending and go on: its replies are read at the next flush (Redis
        works through this batch meanwhile), or by the retry thread if none comes."""
        if not self._settle():
            return
        if not self._positions and not self._trail:
            return
        now = time.monotonic()
        commands, refreshed = self._position_commands(now)
        commands += self._trail_commands()
        try:
            sent = SentCommands(self._client, commands)
        except redis.RedisError as exc:
            self._outage.failed(exc, "live_state")
            return
        self._in_flight = _Write(sent, self._positions, self._trail, refreshed, now)
        self._positions = {}
        self._pending_positions = 0
        self._trail = []

    def settle(self) -> bool:
        """Wait for the last write's replies now (tests, and anyone who must read what was
        written): False if it failed."""
        with self._lock:
            return self._settle()

    def _settle(self) -> bool:
        """Read the replies to the write in flight, if any; False if it failed, and then
        what it carried is pending again behind anything newer."""
        write, self._in_flight = self._in_flight, None
        if write is None:
            return True
        try:
            write.sent.replies()
        except redis.RedisError as exc:
            self._restore(write)
            self._outage.failed(exc, "live_state")
            return False
        self._outage.recovered()
        self._note_refreshed(write.refreshed, write.sent_at)
        return True

    def _restore(self, write: _Write) -> None:
        """A failed write's positions back where no newer one waits (within the cap), and
        its trail entries before the newer ones."""
        dropped = 0
        for sku, sites in write.positions.items():
            for site, body in sites.items():
                waiting = self._positions.get(sku)
                if waiting is not None and site in waiting:
                    continue
                if self._pending_positions >= self.MAX_PENDING_POSITIONS:
                    dropped += 1
                    continue
                self._pending_positions += 1
                self._positions.setdefault(sku, {})[site] = body
        if dropped:
            metrics.REDIS_WRITE_FAILURES.labels(operation="positions_dropped").inc(dropped)
        self._trail = write.trail + self._trail

    def _position_commands(self, now: float) -> tuple[list[Command], list[str]]:
        """One HSET per SKU, and an EXPIRE where its TTL is due; the SKUs refreshed."""
        commands: list[Command] = []
        refreshed: list[str] = []
        ttl = self._settings.positions_ttl_s
        for sku, sites in self._positions.items():
            key = self._keys.positions(sku)
            command: list[str | bytes | int] = ["HSET", key]
            for site, body in sites.items():
                command += (site, body)
            commands.append(tuple(command))
            if self._ttl_due.get(sku, 0.0) <= now:
                commands.append(("EXPIRE", key, ttl))
                refreshed.append(sku)
        return commands, refreshed

    def _trail_commands(self) -> list[Command]:
        """Each record appended to its proposal's trail, and the proposal's status set.

        Only a proposal the ledger holds gets a status (that key has its TTL): an event
        naming a made-up proposal id must not create keys that never expire. EVAL, not
        EVALSHA: Redis caches the script either way, and no NOSCRIPT round trip is needed."""
        commands: list[Command] = []
        ttl = self._settings.ledger_ttl_s
        for pid, body, decision in self._trail:
            trail = self._keys.trail(pid)
            commands.append(("RPUSH", trail, body))
            commands.append(("EXPIRE", trail, ttl))
            commands.append(
                ("EVAL", _SET_KNOWN_STATUS, 1, self._keys.proposal(pid), decision.outcome.value)
            )
        return commands

    def _note_refreshed(self, skus: list[str], now: float) -> None:
        """Remember when each key's TTL is next due; forget SKUs already due (evicted or
        quiet ones) whenever the table has doubled, so it stays as small as the live set."""
        due = now + self._settings.positions_ttl_s * self.TTL_REFRESH_SHARE
        for sku in skus:
            self._ttl_due[sku] = due
        if len(self._ttl_due) > 2 * self._ttl_due_pruned_at + 1024:
            self._ttl_due = {sku: at for sku, at in self._ttl_due.items() if at > now}
            self._ttl_due_pruned_at = len(self._ttl_due)

    def close(self) -> None:
        self._stopping.set()
        self._retrier.join(timeout=5)
        if self._outage.may_try():
            self._flush()
        self._settle()
        self._client.close()


class LiveStateSink(DynamicSink[LiveStateItem]):
    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LiveStatePartition:
        return _LiveStatePartition(connect(self._settings), self._settings)


class ProposalLedger:
    """The idempotency ledger: proposal_id -> pending | delivered, in Redis.

    Calls answer None when Redis cannot be asked; callers then produce anyway (Kafka is the
    system of record; consumers dedupe by proposal_id).
    """

    def __init__(self, client: redis.Redis, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings
        self._keys = Keys(settings.prefix)
        self._outage = Outage(settings.retry_after_s)

    def claim(self, proposals: list[Proposal]) -> set[str] | None:
        """Mark each proposal pending unless the ledger already has it delivered; the ids it
        had delivered (to skip). One round trip, each check-and-mark atomic in Redis, where a
        read and then a write through redis-py's pipeline were two (bench stream, loopback,
        timed in the flow: 0.55-0.6 ms a proposal batch against 0.85-0.9)."""
        if not proposals:
            return set()
        if not self._outage.may_try():
            return None
        ttl = self._settings.ledger_ttl_s
        commands: list[Command] = [
            ("EVAL", _CLAIM_UNLESS_DELIVERED, 1, self._keys.proposal(p.proposal_id), ttl,
             *_ledger_fields(p, "pending"))
            for p in proposals
        ]  # fmt: skip
        try:
            replies = execute_packed(self._client, commands)
        except redis.RedisError as exc:
            self._outage.failed(exc, "ledger_pending")
            return None
        self._outage.recovered()
        return {p.proposal_id for p, was in zip(proposals, replies, strict=True) if was == 1}

    def mark_delivered(self, proposals: list[Proposal]) -> bool:
        if not proposals:
            return True
        if not self._outage.may_try():
            return False
        ttl = self._settings.ledger_ttl_s
        commands: list[Command] = []
        for proposal in proposals:
            key = self._keys.proposal(proposal.proposal_id)
            commands.append(("HSET", key, *_ledger_fields(proposal, "delivered")))
            commands.append(("EXPIRE", key, ttl))
        try:
            execute_packed(self._client, commands)
        except redis.RedisError as exc:
            self._outage.failed(exc, "ledger_delivered")
            return False
        self._outage.recovered()
        return True


_CLAIM_UNLESS_DELIVERED = """
if redis.call('HGET', KEYS[1], 'state') == 'delivered' then
  return 1
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 0
"""


def _ledger_fields(proposal: Proposal, state: str) -> tuple[str | int, ...]:
    """The ledger entry as field, value pairs; its first write (pending) also sets the
    proposal's status, which later decision records about it update (_SET_KNOWN_STATUS)."""
    status = ("status", proposal.status.value) if state == "pending" else ()
    return (
        *status,
        "state", state,
        "sku", proposal.sku,
        "from_site", proposal.from_site,
        "to_site", proposal.to_site,
        "qty", proposal.qty,
        "created_at", rfc3339(proposal.created_at_ms),
        "expires_at", rfc3339(proposal.expires_at_ms),
        "policy_version", proposal.policy_version,
    )  # fmt: skip


def read_trail(
    client: redis.Redis, prefix: str, proposal_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ledger entry and decision trail for `stockshift explain`."""
    keys = Keys(prefix)
    raw_entry: dict[bytes, bytes] = client.hgetall(keys.proposal(proposal_id))  # type: ignore[assignment]
    entry = {k.decode(): v.decode() for k, v in raw_entry.items()}
    trail = [orjson.loads(item) for item in client.lrange(keys.trail(proposal_id), 0, -1)]
    return entry, trail
