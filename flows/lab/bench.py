"""`stockshift bench`: throughput against two ceilings on the same broker and event stream,
memory per SKU-site key, and the demo's run time. Ratios, not absolute times, are the point:
they are measured in one run on one machine.

The stream is what a simulated network publishes while stockshift runs it (sales, daily
counts, supplier order notices and deliveries, and execution's answers to the proposals),
so the flow timed on it meets short sites, senders with surplus and proposals as it would
live. A stream of random sales over well-stocked shelves (this bench's first one) made no
proposal in 200,000 events and timed a decision core that never had to weigh a transfer.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.testing import cluster_main, run_main

from adapters import kafka
from adapters.configfiles import load_policy
from adapters.kafka_source import MergedKafkaSource
from adapters.lab import benchgen
from adapters.lab.compiled import build_copy, can_compile, core_is_compiled, env_for
from adapters.lab.devservices import free_port, redis_answers, start_broker
from adapters.lab.simulator import Scenario, load_scenario, make_network
from adapters.recovery import recovery_config
from adapters.settings import INPUT_KINDS, OUTPUT_KINDS, Settings
from flows.cli import DEFAULT_POLICY, DEFAULT_SCENARIOS
from flows.entry import tune_collector
from flows.lab.simulate import run_stockshift
from flows.pipeline import SkuLogic, build, kafka_sinks, snapshot_state
from operators.engine import DecisionContext, step
from operators.limits import IdleSweep, KeyBudget
from operators.parse import parse_message, parse_object, topic_kinds_for
from state.config import Policy
from state.records import DeadLetter, Event, RawMessage
from state.sku import SkuState


def _passthrough(settings: Settings) -> Dataflow:
    """Ceiling B: Kafka source -> parse -> key by SKU -> stateful no-op -> Kafka sink."""

    def parse(item: RawMessage | DeadLetter) -> tuple[str, bytes] | None:
        if not isinstance(item, RawMessage) or item.value is None:
            return None
        body = orjson.loads(item.value)
        return str(body["sku"]), item.value

    def count(seen: int | None, value: bytes) -> tuple[int, bytes]:
        return (seen or 0) + 1, value

    def encode(keyed: tuple[str, bytes]) -> tuple[bytes, bytes]:
        return keyed[0].encode(), keyed[1]

    flow = Dataflow("ceiling_b")
    source = MergedKafkaSource(
        settings.brokers,
        settings.input_topics,
        stop_at_end=True,
        consumer_config=kafka.SOURCE_DEFAULTS,
    )
    parsed = op.filter_map("parse", op.input("input", flow, source), parse)
    counted = op.stateful_map("noop", parsed, count)
    sink = kafka.ProducingSink(settings.brokers, settings.topic("passthrough"), encode)
    op.output("out", counted, sink)
    return flow


BENCH_POLICY = Policy(version="bench")
# Runs behind each median: ceiling B and the compiled full flow. One run of each moved the
# ratio between 0.26 and 0.35 on the same build (B alone ranged 71-91k events/s: a 2-3 s run
# with the broker's start-up and final acks inside it).
REPEATS = 3
BENCH_SITES = 8
# About what a bench world publishes a day per SKU-site: a count, most of a sale-hour (one
# unit a day on average, in hourly sales) and most days a supplier order notice.
_EVENTS_PER_SKU_SITE_DAY = 2.0


def bench_scenario(n_skus: int, n_events: int = 0) -> Scenario:
    """The world behind the stream; its network is the one every timed flow runs on.

    Sites stock to forecasts that miss (the scenario default, 45% lognormal error), so some
    run short while others hold surplus. Long enough to publish `n_events` with a day to spare;
    the network does not depend on the length."""
    per_day = n_skus * BENCH_SITES * _EVENTS_PER_SKU_SITE_DAY
    days = max(2, math.ceil(n_events / per_day) + 1)
    return Scenario(
        name="bench", n_sites=BENCH_SITES, n_skus=n_skus, days=days, mean_daily_demand=1.0
    )


def bench_stream(scenario: Scenario, n_events: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `n_events` events the world publishes while stockshift, on the bench
    policy, decides for it: replayed through the flow, they meet the same proposals, and
    the world's answers to them (dispatched, rejected, received) carry their ids."""
    recorded: list[tuple[str, dict[str, Any]]] = []
    run_stockshift(scenario, make_network(scenario), BENCH_POLICY, record=recorded)
    return recorded[:n_events]


def _full(settings: Settings, scenario: Scenario, snapshots: bool = False) -> Dataflow:
    """The production flow on the bench topics; `snapshots` as `stockshift run` sets it
    (on only with a recovery directory)."""
    source = MergedKafkaSource(
        settings.brokers,
        settings.input_topics,
        stop_at_end=True,
        consumer_config=kafka.SOURCE_DEFAULTS,
    )
    return build(
        settings,
        source=source,
        sinks=kafka_sinks(settings),
        network=make_network(scenario),
        policy=BENCH_POLICY,
        snapshots=snapshots,
    )


def _timed(flow: Dataflow, **run_args: Any) -> float:
    started = time.perf_counter()
    run_main(flow, **run_args)  # type: ignore[no-untyped-call]
    return time.perf_counter() - started


def _timed_workers(flow: Dataflow, workers: int) -> float:
    started = time.perf_counter()
    cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    return time.perf_counter() - started


@dataclass(frozen=True)
class _ProcessTimes:
    """A cluster run's seconds: from spawn to the last exit, and the longest any process's
    dataflow ran (`cluster_main` alone: the same boundaries as ceiling B's run)."""

    total: float
    run: float


def _timed_processes(
    settings: Settings, n_skus: int, processes: int, root: Path | None = None
) -> _ProcessTimes:
    """A Bytewax cluster of `processes` processes on loopback, one worker each; timed from
    spawn to the last exit (process start-up included), and each process's dataflow alone.
    `root`: import stockshift from there (a copy with the compiled core), which each process
    then checks it did."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    env = {
        **os.environ,
        "STOCKSHIFT_BROKERS": ",".join(settings.brokers),
        "STOCKSHIFT_TOPIC_PREFIX": settings.topic_prefix,
        "STOCKSHIFT_REDIS_URL": settings.redis_url or "",
        "STOCKSHIFT_REDIS_PREFIX": settings.redis_prefix,
    }
    if root is not None:
        env = {**env_for(root), **env}
    core = "compiled" if root is not None else "any"
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.lab.bench", str(n_skus), addresses, str(i), core],
            env=env, stdout=subprocess.PIPE, cwd=root,
        )
        for i in range(processes)
    ]  # fmt: skip
    outputs = [child.communicate(timeout=900)[0] for child in children]
    total = time.perf_counter() - started
    codes = [child.returncode for child in children]
    if any(codes):
        raise RuntimeError(f"bench cluster processes exited with {codes}")
    return _ProcessTimes(total, max(_run_seconds(out) for out in outputs))


_RUN_LINE = b"dataflow seconds: "


def _run_seconds(output: bytes) -> float:
    """The dataflow time a cluster process printed last (`_cluster_process`)."""
    lines = [line for line in output.splitlines() if line.startswith(_RUN_LINE)]
    if not lines:
        raise RuntimeError("a bench cluster process did not report its dataflow time")
    return float(lines[-1][len(_RUN_LINE) :])


def _cluster_process(argv: list[str]) -> None:
    """One process of the `_timed_processes` cluster (python -m flows.lab.bench SKUS ADDRS ID
    [compiled]: then it refuses to run the pure core)."""
    n_skus, addresses, proc_id = int(argv[0]), argv[1].split(";"), int(argv[2])
    from adapters.settings import from_env

    if argv[3:4] == ["compiled"] and not core_is_compiled():
        raise SystemExit(
            "bench: this process was to run the compiled core but imported the pure one"
        )

    tune_collector()
    flow = _full(from_env(), bench_scenario(n_skus))
    started = time.perf_counter()
    cluster_main(flow, addresses, proc_id)  # type: ignore[no-untyped-call]
    print(f"{_RUN_LINE.decode()}{time.perf_counter() - started:.6f}", flush=True)


_CEILING_B = "B: Bytewax pass-through (source, parse, key, stateful no-op, sink)"
_PURE_OWN = "full flow, 1 worker, own process (start-up incl.), pure core"
_COMPILED_OWN = "full flow, 1 worker, own process (start-up incl.), compiled core"
_PURE_RUN = "  the same, dataflow alone (as B is timed), pure core"
_COMPILED_RUN = "  the same, dataflow alone (as B is timed), compiled core"


def compiled_core() -> tuple[Path | None, str]:
    """A copy of this checkout with the core compiled (as `make compiled` and the image
    build it), or why there is none."""
    why_not = can_compile()
    if why_not:
        return None, why_not
    try:
        return build_copy(Path(tempfile.mkdtemp(prefix="stockshift-bench-compiled-"))), ""
    except subprocess.CalledProcessError as failed:
        tail = (failed.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        return None, f"the build failed: {' '.join(tail) or failed}"


def _compiled_rows(
    rates: dict[str, float], spread: dict[str, tuple[float, float]],
    fresh: Callable[[], Settings], n_skus: int, n_events: int, compiled: Path | None,
    ceiling_b: Callable[[], float],
) -> list[float]:  # fmt: skip
    """The full flow in a process of its own with the pure core, then with the compiled
    one: the same start-up in both, so the ratio between them is the compiled core's gain.
    The compiled rows, the ones the goals are judged on, are medians of `REPEATS` runs.

    Returns each compiled run's dataflow rate over a ceiling B run (`ceiling_b`, events/s)
    timed just before it: this machine's speed drifted by half within an hour (2026-12-06:
    B 84,592 and 61,167 events/s in two benches), and minutes apart by a tenth or more, so
    a ratio of adjacent runs says more than one of medians timed minutes apart."""
    pure = _timed_processes(fresh(), n_skus, 1)
    rates[_PURE_OWN], rates[_PURE_RUN] = n_events / pure.total, n_events / pure.run
    paired: list[float] = []
    if compiled is not None:
        runs = []
        for _ in range(REPEATS):
            b_rate = ceiling_b()
            runs.append(_timed_processes(fresh(), n_skus, 1, compiled))
            paired.append(n_events / runs[-1].run / b_rate)
        own, alone = [n_events / r.total for r in runs], [n_events / r.run for r in runs]
        rates[_COMPILED_OWN], rates[_COMPILED_RUN] = (
            statistics.median(own),
            statistics.median(alone),
        )
        spread[_COMPILED_OWN], spread[_COMPILED_RUN] = (
            (min(own), max(own)),
            (min(alone), max(alone)),
        )
    return paired


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_per_key(
    counts: tuple[int, int] = (100_000, 1_000_000),
) -> tuple[float, dict[int, float], float]:
    """Resident bytes per SKU-site key as the flow holds it (slope between two sizes): each
    SKU's stateful-step object (`SkuLogic`) and state, detectors included, fed messages parsed
    from JSON as the flow parses them. Keys come as a live network holds them: SKUs at 8
    sites each, every site with a count and a sale a day for 3 days (so each has its demand
    estimate, its detectors and its share of the SKU's recent event ids)."""
    scenario = Scenario(n_sites=8)
    network = make_network(scenario)
    sites = sorted(network.sites)
    ctx = DecisionContext.build(network, BENCH_POLICY, emit_positions=False)
    budget = KeyBudget(max(counts))
    kinds = topic_kinds_for("stockshift.")
    known = frozenset(sites)

    def parsed(kind: str, body: dict[str, Any]) -> Event:
        raw = RawMessage(f"stockshift.{kind}", 0, 0, None, orjson.dumps(body), 0)
        event = parse_message(raw, kinds, known)
        assert isinstance(event, Event)
        return event

    t0 = 1_767_225_600_000
    held: dict[str, SkuLogic] = {}
    sweep = IdleSweep(7 * 86_400.0)  # as `stockshift run` holds SKUs: its entry counts too
    sizes: dict[int, float] = {}
    gc.collect()
    base = _rss_bytes()
    for i in range(max(counts) // len(sites)):
        sku = f"SKU-{i:07d}"
        logic = SkuLogic(ctx, sweep, False, budget, None)
        for site in sites:
            body = {"event_id": f"c{i}{site}", "ts": t0, "sku": sku, "site": site}
            logic.on_item(parsed("inventory", {**body, "type": "snapshot", "on_hand": 50}))
        for day in range(3):
            for site in sites:
                ts = t0 + day * 86_400_000 + 36_000_000
                body = {"event_id": f"s{i}{site}{day}", "ts": ts, "sku": sku, "site": site}
                logic.on_item(parsed("pos", {**body, "qty": 1}))
        held[sku] = logic
        keys = (i + 1) * len(sites)
        if keys in counts:
            gc.collect()
            sizes[keys] = _rss_bytes() - base
    low, high = counts
    states = {sku: logic.state for sku, logic in held.items()}
    return (sizes[high] - sizes[low]) / (high - low), sizes, snapshot_seconds(states)


def snapshot_seconds(states: dict[str, Any], sample: int = 20_000) -> float:
    """Seconds to snapshot one SKU key (all its sites), as recovery does at each epoch for
    every key the epoch touched; the median of five passes over `sample` keys."""
    chosen = list(states.values())[:sample]
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        for state in chosen:
            snapshot_state(state)
        passes.append((time.perf_counter() - started) / max(len(chosen), 1))
    return statistics.median(passes)


def regional_seconds() -> float:
    """Wall time of the regional ready scenario (20 sites x 500 SKUs, 14 days) under the
    default policy: the world and stockshift's decisions, without the other policies."""
    scenario = load_scenario(DEFAULT_SCENARIOS / "regional.toml")
    started = time.perf_counter()
    run_stockshift(scenario, make_network(scenario), load_policy(DEFAULT_POLICY))
    return time.perf_counter() - started


def _redis_url() -> str | None:
    url = os.environ.get("STOCKSHIFT_REDIS_URL", "redis://127.0.0.1:6379/0")
    return url if redis_answers(url) else None


def run_bench(
    brokers: str | None,
    n_events: int,
    n_skus: int,
    memory_keys: tuple[int, int],
    quiet: bool = False,
    latency_seconds: float = 15.0,
) -> dict[str, Any]:
    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr)

    brokers_given = brokers
    # Every timed run under the collector settings `stockshift run` uses: the ceilings too,
    # so the ratios compare like with like.
    tune_collector()
    scenario = bench_scenario(n_skus, n_events)
    sites = sorted(make_network(scenario).sites)
    say(f"simulating {scenario.days} days of {n_skus} SKUs x {len(sites)} sites for the stream")
    stream = bench_stream(scenario, n_events)
    n_events = len(stream)
    broker_process = None
    if brokers is None:
        brokers, broker_process = start_broker()
        say(f"started a Tansu broker on {brokers}")
    results: dict[str, Any] = {
        "events": n_events,
        "skus": n_skus,
        "sites": len(sites),
        "cores": os.cpu_count(),
        "stream": benchgen.mix(stream),
    }
    say("compiling the core (mypyc) into a scratch copy")
    compiled, results["compiled_skipped"] = compiled_core()
    results["engine"] = _engine_rows(stream, n_skus, compiled, say)
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        redis_url = _redis_url()
        settings = Settings(
            brokers=(brokers,), topic_prefix=prefix, redis_url=redis_url, redis_prefix=f"{prefix}:"
        )
        kafka.ensure_topics(
            [brokers], [prefix + k for k in (*INPUT_KINDS, *OUTPUT_KINDS, "passthrough")], 3
        )
        say(f"producing {n_events} events ({n_skus} SKUs x {len(sites)} sites)")
        benchgen.produce(brokers, prefix, benchgen.encode(stream))
        rates: dict[str, float] = {}
        spread: dict[str, tuple[float, float]] = {}
        runs = iter(range(100))

        def fresh() -> Settings:
            """Each full-flow run its own Redis namespace: no run finds another's ledger."""
            return replace(settings, redis_prefix=f"{prefix}{next(runs)}:")

        say("ceiling A: plain consume + parse loop")
        rates["A: confluent-kafka consume + parse"] = n_events / benchgen.consume_all(
            brokers, settings.input_topics, n_events
        )
        say(f"ceiling B: Bytewax pass-through flow, {REPEATS} runs")
        b_runs = [n_events / _timed(_passthrough(settings)) for _ in range(REPEATS)]
        rates[_CEILING_B] = statistics.median(b_runs)
        spread[_CEILING_B] = (min(b_runs), max(b_runs))
        say(f"full flow, 1 worker (Redis {'on' if redis_url else 'unavailable: off'})")
        rates["stockshift full flow, 1 worker"] = n_events / _timed(_full(fresh(), scenario))
        results["proposals_by_full_flow"] = sum(
            1 for _ in kafka.read_to_end([brokers], settings.topic("proposals"), "bench-count")
        )
        say("full flow, recovery snapshots every 10 s")
        recovery = recovery_config(Path(tempfile.mkdtemp(prefix="stockshift-bench-rec-")), 0)
        rates["stockshift full flow, 1 worker, recovery snapshots every 10 s"] = n_events / _timed(
            _full(fresh(), scenario, snapshots=True), epoch_interval=timedelta(seconds=10),
            recovery_config=recovery,
        )  # fmt: skip
        say("full flow, 2 workers in one process")
        rates["stockshift full flow, 2 workers, 1 process"] = n_events / _timed_workers(
            _full(fresh(), scenario), 2
        )
        say("full flow, 1 worker in its own process: pure core, then compiled core (a B run each)")
        paired = _compiled_rows(
            rates, spread, fresh, n_skus, n_events, compiled,
            lambda: n_events / _timed(_passthrough(settings)),
        )  # fmt: skip
        results["paired_ratio_to_ceiling_b"] = [round(r, 3) for r in paired]
        say("full flow, 2 processes (Bytewax cluster on loopback)")
        rates["stockshift full flow, 2 processes x 1 worker (incl. start-up)"] = (
            n_events / _timed_processes(fresh(), n_skus, 2).total
        )
        results["events_per_second"] = {k: round(v) for k, v in rates.items()}
        results["spread"] = {k: [round(low), round(high)] for k, (low, high) in spread.items()}
        ceiling_b = rates[_CEILING_B]
        results["ratio_to_ceiling_b"] = {k: round(v / ceiling_b, 3) for k, v in rates.items()}
        results["ratio_to_ceiling_a"] = {
            k: round(v / rates["A: confluent-kafka consume + parse"], 3) for k, v in rates.items()
        }
        results["redis"] = redis_url is not None
    finally:
        if broker_process is not None:
            broker_process.terminate()
            broker_process.wait(timeout=10)
    if latency_seconds > 0:
        results["latency"] = _latency_rows(rates, brokers_given, latency_seconds, compiled, say)
    say(f"memory per SKU-site key: {memory_keys[0]} and {memory_keys[1]} keys in state")
    slope, sizes, snapshot_s = memory_per_key(memory_keys)
    results["bytes_per_sku_site_key"] = round(slope)
    results["state_bytes"] = {str(k): round(v) for k, v in sizes.items()}
    results["snapshot_ms_per_sku_key"] = round(snapshot_s * 1000, 4)
    say("demo run time")
    started = time.perf_counter()
    from flows.lab.demo import run_demo

    with contextlib.redirect_stdout(io.StringIO()):
        run_demo(Path(tempfile.mkdtemp(prefix="stockshift-bench-demo-")), quiet=True)
    results["demo_seconds"] = round(time.perf_counter() - started, 1)
    say("regional scenario, default policy")
    results["regional_seconds"] = round(regional_seconds(), 1)
    return results


def _latency_rows(
    rates: dict[str, float],
    brokers: str | None,
    seconds: float,
    compiled: Path | None,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Trigger-to-proposal latency at 2,000 events/s and at half the rate the flow sustains
    in its own process (with the core the latency run uses: compiled when it was built)."""
    from adapters.lab.latency import TRIGGERS, run_latency

    sustained = rates[_COMPILED_OWN if compiled is not None else _PURE_OWN]
    half = round(sustained / 2, -2)
    say(f"latency at 2,000 and {half:.0f} events/s (half of {sustained:.0f}), both brokers")
    return run_latency([2000.0, half], seconds, TRIGGERS, 20.0, brokers, compiled)


def print_results(results: dict[str, Any]) -> None:
    print(
        f"stockshift bench: {results['events']} events, {results['skus']} SKUs x "
        f"{results['sites']} sites, {results['cores']} cores, "
        f"Redis {'on' if results['redis'] else 'off'}"
    )
    mix = ", ".join(f"{kind} {count}" for kind, count in results["stream"].items())
    print(f"stream (a simulated network's events): {mix}")
    print(f"proposals the full flow made on it (1 worker): {results['proposals_by_full_flow']}")
    print(f"{'run':<70}{'events/s':>10}{'vs B':>8}{'vs A':>8}")
    spread = results.get("spread", {})
    for name, rate in results["events_per_second"].items():
        low_high = spread.get(name)
        runs = f"  median of {REPEATS}: {low_high[0]}-{low_high[1]}" if low_high else ""
        print(
            f"{name:<70}{rate:>10}{results['ratio_to_ceiling_b'][name]:>8.2f}"
            f"{results['ratio_to_ceiling_a'][name]:>8.2f}{runs}"
        )
    paired = results.get("paired_ratio_to_ceiling_b")
    if paired:
        print(
            f"compiled core, dataflow alone, each run over a B run timed just before it: "
            f"median {statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f}, "
            f"{len(paired)} pairs)"
        )
    if results["compiled_skipped"]:
        print(f"compiled core: not built here ({results['compiled_skipped']})")
    _print_engine(results["engine"])
    sizes = ", ".join(f"{k} keys: {int(v) / 1e6:.0f} MB" for k, v in results["state_bytes"].items())
    print(f"memory per SKU-site key in state: {results['bytes_per_sku_site_key']} bytes ({sizes})")
    print(
        f"recovery snapshot per SKU key (8 sites): {results['snapshot_ms_per_sku_key']} ms "
        f"(the SKU's records as plain values, operators/snapshot.py, at each epoch that "
        f"touched it)"
    )
    if results.get("latency"):
        from adapters.lab.latency import latency_lines

        print("\n".join(latency_lines(results["latency"])))
    print(f"stockshift demo: {results['demo_seconds']} s")
    print(
        f"stockshift simulate, regional (20 sites x 500 SKUs, 14 days), default policy: "
        f"{results['regional_seconds']} s"
    )


def _print_engine(engine: dict[str, Any]) -> None:
    print("decision core alone (engine.step per event, parsed events, no Bytewax or I/O), µs:")
    print(f"{'core':<10}{'event type':<22}{'events':>9}{'mean':>9}{'p50':>9}{'p99':>9}")
    for core, timings in engine.items():
        rows = {"all": timings["all"], **timings["by_type"]}
        for kind, row in rows.items():
            print(
                f"{core:<10}{kind:<22}{row['n']:>9}{row['mean_us']:>9.1f}"
                f"{row['p50_us']:>9.1f}{row['p99_us']:>9.1f}"
            )
    if "compiled" in engine:
        gain = engine["pure"]["all"]["mean_us"] / engine["compiled"]["all"]["mean_us"]
        print(f"compiled core: {gain:.2f}x the pure core's events per second of decision time")


def engine_timings(stream: list[tuple[str, dict[str, Any]]], n_skus: int) -> dict[str, Any]:
    """The decision core alone on the stream (parsed beforehand, no Bytewax, no I/O): each
    event's `engine.step` timed, as mean, p50 and p99 per event type."""
    network = make_network(bench_scenario(n_skus))
    sites = frozenset(network.sites)
    events = [parse_object(kind, body, sites) for kind, body in stream]
    ctx = DecisionContext.build(network, BENCH_POLICY)
    states: dict[str, SkuState] = {}
    by_type: dict[str, list[int]] = {}
    clock = time.perf_counter_ns
    gc.collect()
    for event in events:
        started = clock()
        states[event.sku], _ = step(states.get(event.sku), event, ctx)
        by_type.setdefault(event.type.value, []).append(clock() - started)
    every = sorted(t for times in by_type.values() for t in times)
    return {
        "compiled": core_is_compiled(),
        "all": _distribution(every),
        "by_type": {k: _distribution(sorted(v)) for k, v in by_type.items()},
    }


def _distribution(ns: list[int]) -> dict[str, float]:
    """Mean, p50 and p99 in microseconds of sorted nanosecond timings."""
    return {
        "n": len(ns),
        "mean_us": round(sum(ns) / len(ns) / 1000, 1),
        "p50_us": round(ns[len(ns) // 2] / 1000, 1),
        "p99_us": round(ns[min(int(len(ns) * 0.99), len(ns) - 1)] / 1000, 1),
    }


def _engine_process(argv: list[str]) -> None:
    """python -m flows.lab.bench engine STREAM.pickle SKUS: `engine_timings` as JSON."""
    tune_collector()
    stream = pickle.loads(Path(argv[0]).read_bytes())
    print(orjson.dumps(engine_timings(stream, int(argv[1]))).decode())


def _engine_rows(
    stream: list[tuple[str, dict[str, Any]]], n_skus: int, compiled: Path | None,
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """`engine_timings` in a process of its own, pure core and (where it built) compiled."""
    folder = Path(tempfile.mkdtemp(prefix="stockshift-bench-engine-"))
    (folder / "stream.pickle").write_bytes(pickle.dumps(stream))
    roots: dict[str, Path | None] = {"pure": None}
    if compiled is not None:
        roots["compiled"] = compiled
    results: dict[str, Any] = {}
    for name, root in roots.items():
        say(f"decision core alone, {name}")
        done = subprocess.run(
            [sys.executable, "-m", "flows.lab.bench", "engine", str(folder / "stream.pickle"),
             str(n_skus)],
            env=env_for(root) if root is not None else None, cwd=root,
            capture_output=True, check=True, timeout=1800,
        )  # fmt: skip
        results[name] = orjson.loads(done.stdout)
        if results[name]["compiled"] != (root is not None):
            raise RuntimeError(f"bench: the {name} core's process imported the other core")
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["engine"]:
        _engine_process(sys.argv[2:])
    else:
        _cluster_process(sys.argv[1:])
