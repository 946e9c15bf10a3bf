"""The control topic: preload at start, a board every worker in the process reads, signing.

The board is the one piece of state shared across keys: each SKU's decision asks it for the
governance in force at its event's time. Commands reach it two ways, both after
verification: through a sink in the flow (the audit trail comes from there), and from a
`ControlFollower` that every process runs, because in a Bytewax cluster the flow's control
input lives in one process and the SKUs of the others would never see the command. The
board applies each command once, whichever way reaches it first.
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Consumer, Producer, TopicPartition

from adapters import clock, metrics
from adapters.kafka import read_to_end
from adapters.settings import FormatHint
from operators.control import (
    ControlAuth,
    NonceMemory,
    Timeline,
    arrival_ms,
    check_command,
    envelope,
    verify,
)
from state.governance import ControlCommand, ControlRejection, Governance

log = logging.getLogger("stockshift.control")


class GovernanceBoard:
    """A thread-safe Timeline: sinks add commands, decisions read `at(ts)`."""

    def __init__(self, default_version: str | None = None) -> None:
        self._timeline = Timeline()
        self._lock = threading.Lock()
        self._default_version = default_version
        self._active: str | None = None
        self._applied: set[str] = set()
        if default_version is not None:
            self._publish_version()

    def _publish_version(self) -> None:
        now = self.at(clock.now_ms())
        version = now.policy_version or self._default_version
        if version is not None:
            metrics.policy_active(version, self._active)
            self._active = version

    def add(self, command: ControlCommand) -> None:
        with self._lock:
            if command.nonce in self._applied:
                return
            self._applied.add(command.nonce)
            self._timeline.add(command)
        metrics.PAUSED.set(1 if self.at(clock.now_ms()).paused else 0)
        self._publish_version()
        log.info(
            "control command applied",
            extra={
                "action": command.action.value,
                "nonce": command.nonce,
                "target": command.target,
                "effective_at_ms": command.effective_at_ms,
                "key_id": command.key_id,
            },
        )

    def at(self, ts_ms: int) -> Governance:
        return self._timeline.at(ts_ms)


class _BoardPartition(StatelessSinkPartition[ControlCommand]):
    def __init__(self, board: GovernanceBoard) -> None:
        self._board = board

    def write_batch(self, items: list[ControlCommand]) -> None:
        for command in items:
            self._board.add(command)


class GovernanceSink(DynamicSink[ControlCommand]):
    def __init__(self, board: GovernanceBoard) -> None:
        self._board = board

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BoardPartition:
        return _BoardPartition(self._board)


def verify_message(
    msg: Any, auth: ControlAuth, nonces: NonceMemory, live: bool
) -> ControlCommand | ControlRejection:
    """A control-topic message checked against its arrival (operators.control.arrival_ms):
    `live` for one read as it comes, not re-read at start-up."""
    ts_type, ts = msg.timestamp()
    arrived = arrival_ms(ts_type, ts if ts_type else None, clock.now_ms(), live)
    return verify(msg.value(), auth, arrived, nonces, msg.offset())


class ControlFollower:
    """Follows the control topic from `start_offset` in a background thread and applies
    every verified command to this process's board."""

    def __init__(
        self,
        board: GovernanceBoard,
        brokers: Iterable[str],
        topic: str,
        auth: ControlAuth,
        start_offset: int,
        nonces: NonceMemory,
        add_config: Mapping[str, str] | None = None,
    ) -> None:
        self._board = board
        self._auth = auth
        self._nonces = copy.deepcopy(nonces)
        self._consumer = Consumer(
            {
                "bootstrap.servers": ",".join(brokers),
                "group.id": "stockshift-control-follower",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                **(add_config or {}),
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, start_offset)])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="control-follower", daemon=True)

    def start(self) -> ControlFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _apply(self, msg: Any) -> None:
        """One message; a failure is logged and the follower goes on with the next."""
        try:
            verdict = verify_message(msg, self._auth, self._nonces, live=True)
            if isinstance(verdict, ControlCommand):
                self._board.add(verdict)
        except Exception:
            log.exception("control message could not be applied", extra={"offset": msg.offset()})

    def _follow(self) -> None:
        try:
            while not self._stopping.is_set():
                msg = self._consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                self._apply(msg)
        except Exception:  # a follower that dies silently would leave this process's
            log.exception("control follower stopped")  # board behind: say so loudly
            metrics.CONTROL_FOLLOWER_DOWN.set(1)
            raise
        finally:
            self._consumer.close()


def parse_keys(text: str) -> dict[str, bytes]:
    """STOCKSHIFT_CONTROL_KEYS: `id=secret[,id2=secret2]` (several during a rotation)."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, sep, secret = item.partition("=")
        if not sep or not key_id or len(secret) < 16:
            raise FormatHint("control keys look like id=secret with secrets of 16+ characters")
        keys[key_id] = secret.encode()
    return keys


def preload(
    board: GovernanceBoard,
    brokers: Iterable[str],
    topic: str,
    auth: ControlAuth,
    add_config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, NonceMemory, list[ControlCommand | ControlRejection]]:
    """Apply every command already on the (single-partition) control topic before the flow
    starts, so decisions after a restart see the same governance as before it.

    Returns the offset to continue from, the nonces seen, and the verdicts.
    """
    nonces = NonceMemory()
    verdicts: list[ControlCommand | ControlRejection] = []
    next_offset = 0
    for msg in read_to_end(brokers, topic, "stockshift-control-preload", add_config, timeout_s):
        verdict = verify_message(msg, auth, nonces, live=False)
        if isinstance(verdict, ControlCommand):
            board.add(verdict)
        verdicts.append(verdict)
        next_offset = (msg.offset() or 0) + 1
    return next_offset, nonces, verdicts


def send_command(
    brokers: Iterable[str],
    topic: str,
    key_id: str,
    secret: bytes,
    command: str,
    add_config: Mapping[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Check, sign and produce one command; returns the body sent (with its nonce). A
    command the flow would reject for its fields raises `Invalid` before anything is sent."""
    body: dict[str, Any] = {
        "command": command,
        "nonce": uuid.uuid4().hex,
        "ts": clock.now_ms(),
        **{k: v for k, v in fields.items() if v is not None},
    }
    check_command(body, body["ts"])
    producer = Producer({"bootstrap.servers": ",".join(brokers), **(add_config or {})})
    errors: list[str] = []
    producer.produce(
        topic,
        envelope(body, key_id, secret),
        b"control",
        on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
    )
    if producer.flush(15) or errors:
        raise ConnectionError(f"control command not acknowledged: {errors or 'timeout'}")
    return body
