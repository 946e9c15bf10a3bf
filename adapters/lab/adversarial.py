"""`stockshift reliability --adversarial`: issue #18's table against the real `stockshift run`
process, a Tansu broker and a Redis server that this runner owns.

One flow process takes a clean workload (good SKUs, whose decisions must equal an
uninterrupted reference run) with every hostile input of the table mixed in, on attacker
SKUs and on the good SKUs' own keys and partitions. Each row then checks its own account:
the flow is alive, the bad messages are in the DLQ with the expected reason (or rejected in
the decision log, or held to a limit), and the good SKUs' proposals, ledger and live
positions equal the reference. The recovery entry point (row 7) runs its own process.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Producer

from adapters import kafka
from adapters.dlq import DeadLetterRecord, read_dead_letters
from adapters.lab.flowproc import NETWORK, ROOT, TEST_CONTROL_KEYS
from adapters.lab.reliability import Line, ScenarioRun, Services, _phases
from adapters.redis_store import Keys
from operators.codec import event_message
from operators.control import envelope
from operators.reference.verify import T0_MS, Reference, reference_run, workload
from state.config import network_from_dict
from state.records import Event, EventType
from state.units import HOUR_MS

# The two-store network with a storage limit at B: a poisoned count there would block
# every transfer into B, for every SKU (row 3).
ADVERSARIAL_NETWORK = NETWORK.replace(
    '[[sites]]\nid = "B"\n', '[[sites]]\nid = "B"\nstorage_capacity = 5000000\n'
)
CONTROL_KEY = TEST_CONTROL_KEYS.split(",")[0].split("=")
FAR_FUTURE_MS = 7_258_000_000_000  # 2199-12-30
MAX_SKUS = 150


@dataclass
class Row:
    """One row of the table: what was sent and what became of it."""

    number: str
    input: str
    sent: int = 0
    accounted: int = 0
    ok: bool = False
    note: str = ""
    offsets: list[tuple[str, int, int]] = field(default_factory=list)


class Attack:
    """Produces hostile messages and remembers where each landed."""

    def __init__(self, run: ScenarioRun) -> None:
        self.run = run
        self.producer = Producer(
            {"bootstrap.servers": run.services.brokers, "message.max.bytes": 2_000_000}
        )

    def send(self, row: Row, kind: str, value: bytes, key: bytes, ts: int) -> None:
        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                row.offsets.append((msg.topic(), msg.partition(), msg.offset()))

        self.producer.produce(self.run.topic(kind), value, key, timestamp=ts, on_delivery=delivered)
        row.sent += 1
        if row.sent % 5000 == 0:
            self.producer.flush(30)

    def event(self, row: Row, e: Event, ts: int | None = None) -> None:
        kind, body = event_message(e)
        self.send(row, kind, orjson.dumps(body), e.sku.encode(), e.ts_ms if ts is None else ts)

    def flush(self) -> None:
        self.producer.flush(60)


def _sale(event_id: str, sku: str, hour: float, site: str = "A", qty: int = 1) -> Event:
    return Event(event_id, EventType.SALE, T0_MS + int(hour * HOUR_MS), sku, site, qty)


Dead = dict[tuple[str, int | None, int | None], DeadLetterRecord]


def _dead_letters(run: ScenarioRun) -> Dead:
    return {r.source: r for r in read_dead_letters([run.services.brokers], run.topic("dlq"))}


def _dlq_row(row: Row, dead: Dead, reason: str) -> None:
    found = [dead.get(o) for o in row.offsets]
    row.accounted = sum(1 for r in found if r is not None and r.reason == reason)
    row.ok = row.accounted == row.sent
    row.note += f"{row.accounted} of {row.sent} in the DLQ as {reason}"


def _refused_events(dead: Dead, reason: str) -> int:
    return sum(1 for r in dead.values() if r.reason == reason)


def _control_rows(attack: Attack, now_ms: int) -> tuple[Row, Row]:
    """Row 1 (a bad signature, and a flood of junk) and row 8 (captured commands)."""
    key_id, secret = CONTROL_KEY[0], CONTROL_KEY[1].encode()
    one = Row("1", "control: signature 'é' on a real key id, then 500 junk control messages")
    junk = [orjson.dumps({"key_id": key_id, "signature": "é", "body": "{}"})]
    rng = random.Random(18)
    junk += [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))) for _ in range(500)]
    for value in junk:
        attack.send(one, "control", value, b"control", now_ms)
    eight = Row("8", "control: a command signed 1 h ago, one signed in 2199, an exact replay")
    pause = {"command": "pause", "reason": "adversarial"}
    old = envelope({**pause, "nonce": "captured-0001", "ts": now_ms - HOUR_MS}, key_id, secret)
    future = envelope({**pause, "nonce": "future-00001", "ts": FAR_FUTURE_MS}, key_id, secret)
    for value in (old, future):
        attack.send(eight, "control", value, b"control", now_ms)
    return one, eight


def _stream_rows(attack: Attack, good: list[str], hour: float) -> list[Row]:
    """Rows 2-6, 9-11 on the input topics."""
    rows: list[Row] = []
    two = Row("2", "one sale stamped 2199 on a good SKU after 50 h of its history")
    attack.event(two, Event("future-1", EventType.SALE, FAR_FUTURE_MS, good[0], "A", 1))
    rows.append(two)
    three = Row("3", "a first count of 1,000,000,000 at B (storage_capacity) for a new SKU")
    count = Event("poison-count", EventType.SNAPSHOT, T0_MS + int(hour * HOUR_MS), "ATK-3", "B", 1)
    kind, body = event_message(count)
    body["on_hand"] = 1_000_000_000
    attack.send(three, kind, orjson.dumps(body), b"ATK-3", count.ts_ms)
    rows.append(three)
    four = Row("4", "5,000 inbound_expected with distinct shipment ids on one SKU-site")
    ts = T0_MS + int(hour * HOUR_MS)
    for n in range(5000):
        e = Event(f"in-{n}", EventType.INBOUND_EXPECTED, ts, "ATK-4", "A", 1, ts + 48 * HOUR_MS,
                  f"ship-{n}")  # fmt: skip
        attack.event(four, e)
    rows.append(four)
    six = Row("6", "2,000 transfer_received with made-up proposal ids")
    for n in range(2000):
        e = Event(f"tr-{n}", EventType.TRANSFER_RECEIVED, ts, "ATK-6", "B", 1, None, None, "A",
                  f"madeup-{n:05d}")  # fmt: skip
        attack.event(six, e)
    rows.append(six)
    nine = Row("9", "a message stamped 2100 ahead of a good SKU's events in its partition")
    body9 = {"event_id": "ts-2100", "ts": 4_102_444_800_000, "sku": good[1], "site": "A", "qty": 1}
    attack.send(nine, "pos", orjson.dumps(body9), good[1].encode(), 4_102_444_800_000)
    rows.append(nine)
    ten = Row("10", "a 170 KB non-JSON message")
    attack.send(ten, "pos", b"\x01" * 170_000, b"ATK-10", ts)
    rows.append(ten)
    eleven = Row("11", "duplicate JSON keys; returns of 1e9 x3; a return re-sent after 100 events")
    dup = b'{"event_id":"dup-1","ts":%d,"sku":"ATK-11","site":"A","qty":1,"qty":1000000000}' % ts
    attack.send(eleven, "pos", dup, b"ATK-11", ts)
    for n in range(3):
        big = Event(f"big-return-{n}", EventType.RETURN, ts, "ATK-11", "A", 999_999_999)
        attack.event(eleven, big)
    rows.append(eleven)
    return rows


def _flood_row(attack: Attack, hour: float) -> Row:
    """Row 5, after the others have been taken: once the process holds its maximum, every
    new SKU's events are refused, the attackers' own SKUs included."""
    five = Row("5", f"2,000 distinct new SKUs (STOCKSHIFT_MAX_SKUS={MAX_SKUS})")
    for n in range(2000):
        attack.event(five, _sale(f"flood-{n}", f"FLOOD-{n:05d}", hour))
    return five


def _account(
    rows: list[Row], run: ScenarioRun, reference: Reference, keys_before_flood: float
) -> None:
    dead = _dead_letters(run)
    by_number = {row.number: row for row in rows}
    _dlq_row(by_number["2"], dead, "future_timestamp")
    _dlq_row(by_number["3"], dead, "implausible_quantity")
    _dlq_row(by_number["9"], dead, "future_timestamp")
    _dlq_row(by_number["10"], dead, "too_large")
    ten = [dead.get(o) for o in by_number["10"].offsets]
    whole = all(r is not None and r.value == b"\x01" * 170_000 for r in ten)
    by_number["10"].ok &= whole
    by_number["10"].note += f"; its original bytes kept whole: {whole}"
    four = by_number["4"]
    limited = _refused_events(dead, "inbound_limit")
    four.accounted = limited + 64 if limited == four.sent - 64 else limited
    four.ok = four.accounted == four.sent
    four.note = f"64 held, {limited} dead-lettered as inbound_limit"
    five = by_number["5"]
    refused = sum(1 for o in five.offsets if o in dead and dead[o].reason == "sku_limit")
    client = redis.Redis.from_url(run.services.redis_url, socket_timeout=5)
    pattern = Keys(run.redis_prefix).positions("FLOOD-*")
    admitted = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    five.accounted = refused + admitted
    five.ok = five.accounted == five.sent and admitted < five.sent
    five.note = (
        f"{admitted} admitted up to the cap (their positions are in Redis), {refused} "
        f"dead-lettered as sku_limit; {keys_before_flood:.0f} SKUs were held before the attack"
    )
    eleven = by_number["11"]
    found = Counter(dead[o].reason for o in eleven.offsets if o in dead)
    eleven.accounted = found["duplicate_key"] + found["implausible_quantity"]
    eleven.ok = found == Counter({"duplicate_key": 1, "implausible_quantity": 3})
    eleven.note = f"DLQ reasons {dict(found)}; the re-sent return was ignored (state row)"
    _account_ledger(by_number["6"], run)


def _account_ledger(row: Row, run: ScenarioRun) -> None:
    client = redis.Redis.from_url(run.services.redis_url, socket_timeout=5)
    keys = Keys(run.redis_prefix)
    pipe = client.pipeline(transaction=False)
    for n in range(2000):
        pipe.exists(keys.proposal(f"madeup-{n:05d}"))
        pipe.ttl(keys.trail(f"madeup-{n:05d}"))
    answers = pipe.execute()
    status_keys = sum(answers[0::2])
    no_ttl = sum(1 for ttl in answers[1::2] if ttl == -1)
    row.accounted = row.sent if status_keys == 0 and no_ttl == 0 else 0
    row.ok = row.accounted == row.sent
    row.note = f"{status_keys} proposal keys created; {no_ttl} trail keys without a TTL"


def _redis_full(run: ScenarioRun) -> Callable[[], None]:
    """Row 12: Redis refuses every write (maxmemory reached, noeviction) until undone."""
    client = redis.Redis.from_url(run.services.redis_url, socket_timeout=5)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used))

    def undo() -> None:
        client.config_set("maxmemory", "0")

    return undo


def stream_rows(services: Services, folder: Path) -> list[Line]:
    network = network_from_dict(_toml(ADVERSARIAL_NETWORK))
    from adapters.configfiles import load_policy
    from adapters.settings import DEFAULT_CONFIG_DIR

    policy = load_policy(DEFAULT_CONFIG_DIR / "policies" / "default.toml")
    events = workload(40)
    good = sorted({e.sku for e in events})
    early_return = Event("return-1", EventType.RETURN, T0_MS + HOUR_MS, good[2], "A", 2)
    events.insert(next(i for i, e in enumerate(events) if e.ts_ms > early_return.ts_ms),
                  early_return)  # fmt: skip
    reference = reference_run(events, network, policy)
    run = ScenarioRun(services, folder, {"STOCKSHIFT_MAX_SKUS": str(MAX_SKUS)}, ADVERSARIAL_NETWORK)
    warm, damage = _phases(events, 50)
    attack = Attack(run)
    rows: list[Row] = []
    try:
        run.flow.start()
        run.flow.publish_events(warm)
        run.flow.wait_live()
        now_ms = int(time.time() * 1000)
        control = _control_rows(attack, now_ms)
        sent = run.flow.control("resume", "--reason", "to be replayed")
        keys_before = run.flow.metric("stockshift_state_keys")
        rows = [*_stream_rows(attack, good, 50.1), *control]
        attack.flush()
        # A marker stamped after those rows and before the flood: once it is through, they
        # have been taken, before the flood fills the process (row 5).
        run.flow.last_ts = T0_MS + int(50.12 * HOUR_MS)
        run.flow.wait_live()
        rows.append(_flood_row(attack, 50.15))
        resend = Row("11b", "")
        attack.event(resend, early_return, warm[-1].ts_ms)  # 100 events after the first
        attack.flush()
        original = list(kafka.read_to_end([services.brokers], run.topic("control"), "adv"))
        attack.send(control[1], "control", original[-1].value(), b"control", now_ms)
        attack.flush()
        run.flow.wait_live()
        undo = _redis_full(run)
        run.flow.publish_events(damage[: len(damage) // 2])
        run.flow.wait_live()
        survived_full = run.flow.alive
        undo()
        run.flow.publish_events(damage[len(damage) // 2 :])
        result = run.settle(reference, 90, 0)
        rejected = run.flow.records(
            "decisions", 504, timeout=30, keep=lambda r: r["outcome"] == "control_rejected"
        )
        _account(rows, run, reference, keys_before)
        _account_control(control, rejected, sent.returncode == 0)
        alive = run.flow.alive
        run.flow.stop()
        run.flow.start()  # a restart re-reads every control message above: it must start
        restarted = run.flow.alive
        run.flow.wait_live()
    finally:
        run.flow.stop()
    twelve = Row("12", "Redis full (maxmemory, noeviction) while half the triggers arrive")
    twelve.sent = twelve.accounted = len(events)
    twelve.ok = survived_full and result.passed(0)
    twelve.note = f"flow {'up' if survived_full else 'DOWN'} while Redis refused writes"
    rows.append(twelve)
    return [_line(row, result, alive, restarted) for row in rows]


def _account_control(rows: tuple[Row, Row], rejected: list[dict[str, Any]], sent: bool) -> None:
    reasons = Counter(r["reason"] for r in rejected)
    one, eight = rows
    one.accounted = min(one.sent, reasons["malformed"] + reasons["unsigned"])
    one.ok = one.accounted == one.sent
    one.note = f"rejected as {dict(reasons)}"
    eight.accounted = min(eight.sent, reasons["stale"] + reasons["replayed"])
    eight.ok = sent and reasons["stale"] == 2 and reasons["replayed"] == 1
    eight.note = f"stale {reasons['stale']}, replayed {reasons['replayed']}"


def _line(row: Row, result: Any, alive: bool, restarted: bool) -> Line:
    others = result.passed(0)
    return Line(
        f"{row.number}: {row.input}", row.sent, row.accounted, result.expected, result.produced,
        result.duplicated, row.ok and others and alive and restarted,
        f"{row.note}; flow {'alive' if alive else 'DOWN'}, restarts {restarted}; good SKUs: "
        f"{result.state_checked - result.state_mismatches}/{result.state_checked} SKU-sites "
        f"equal, proposals missing {result.missing}, unexpected {result.unexpected}"
        + (f"; e.g. {result.first_mismatch}" if result.first_mismatch else ""),
    )  # fmt: skip


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


def recovery_entry_point(services: Services, folder: Path) -> Line:
    """Row 7: `python -m bytewax.run "flows.entry:from_environment()" -r DIR`, killed with
    SIGKILL after a snapshot and restarted: the SKU's history must come back with the offsets,
    so the trigger after the restart still makes the proposal a clean run makes."""
    network = network_from_dict(_toml(NETWORK))
    from adapters.configfiles import load_policy
    from adapters.recovery import recovery_config
    from adapters.settings import DEFAULT_CONFIG_DIR

    policy = load_policy(DEFAULT_CONFIG_DIR / "policies" / "default.toml")
    events = workload(3)
    warm, damage = _phases(events, 50)
    reference = reference_run(events, network, policy)
    run = ScenarioRun(services, folder)
    recovery = folder / "entry-recovery"
    recovery_config(recovery, 0.0)
    argv = [sys.executable, "-m", "bytewax.run", "flows.entry:from_environment()",
            "-r", str(recovery), "-s", "1", "-b", "0"]  # fmt: skip
    flow = run.flow
    try:
        flow.process = subprocess.Popen(
            argv, cwd=ROOT, env=flow.env, stdout=flow.log.open("ab"), stderr=subprocess.STDOUT
        )
        flow.wait_live()  # bytewax.run configures no logging: wait for output instead
        flow.publish_events(warm)
        flow.wait_live()
        time.sleep(3)  # at least two snapshots of the SKUs' state
        flow.process.send_signal(signal.SIGKILL)
        flow.process.wait(timeout=10)
        flow.process = subprocess.Popen(
            argv, cwd=ROOT, env=flow.env, stdout=flow.log.open("ab"), stderr=subprocess.STDOUT
        )
        flow.wait_live()
        flow.publish_events(damage)
        result = run.settle(reference, 60, 0)
        alive = flow.alive
    finally:
        flow.stop()
    row = Row("7", "the container's bytewax.run entry point with -r, killed and restarted")
    row.sent = row.accounted = len(events)
    row.ok = result.missing == 0 and result.unexpected == 0
    row.note = (
        "state recovered with the offsets: the proposals after the restart are the clean run's"
    )
    return _line(row, result, alive, True)


def run_adversarial(say: Callable[[str], None] = lambda _: None) -> list[Line]:
    import shutil
    import tempfile
    from contextlib import suppress

    from adapters.lab.reliability import services_in

    folder = Path(tempfile.mkdtemp(prefix="stockshift-adversarial-"))
    lines: list[Line] = []
    try:
        with services_in(folder) as services:
            say("rows 1-6 and 8-12 in one flow process")
            lines = _or_failed("rows 1-6, 8-12", lambda: stream_rows(services, folder))
            say("row 7: the recovery entry point")
            entry = _or_failed("7: recovery entry point",
                               lambda: [recovery_entry_point(services, folder)])  # fmt: skip
            lines = sorted([*lines, *entry], key=_row_number)
    finally:
        with suppress(OSError):
            shutil.rmtree(folder)
    return lines


def _row_number(line: Line) -> tuple[int, str]:
    number = line.fault.split(":")[0]
    return (int(number), "") if number.isdigit() else (99, number)


def _or_failed(what: str, scenario: Callable[[], list[Line]]) -> list[Line]:
    """A scenario that raises is a failed line with the reason, not a lost report."""
    try:
        return scenario()
    except Exception as exc:
        return [Line(what, 0, 0, 0, 0, 0, False, f"scenario raised {type(exc).__name__}: {exc}")]
