"""The `stockshift` command.

Production: run (the flow on Kafka), execute (carry proposals into the WMS/ERP), console
(the planners' web console), pending / approve / reject (the same from a terminal),
check-config, control (sign and send a command),
explain (why a proposal was made), dlq (list dead letters, replay fixed ones), warmup
(start from a sales history).
Lab (`pip install 'stockshift[lab]'`): demo, simulate, compare, bench, reliability, soak,
signal-bench.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from adapters.settings import Settings
from state.config import ConfigError

if TYPE_CHECKING:
    from operators.history import HistoryRow
    from state.config import Network

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_SCENARIOS = CONFIGS / "scenarios"
DEFAULT_POLICY = CONFIGS / "policies" / "default.toml"
SERVICE_FIRST_POLICY = CONFIGS / "policies" / "service-first.toml"
# What add_subparsers returns.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _settings(args: argparse.Namespace) -> Settings:
    from adapters.settings import comma_list, from_env

    return from_env(
        brokers=comma_list(args.brokers) if getattr(args, "brokers", None) else None,
        topic_prefix=getattr(args, "topic_prefix", None),
        network_path=Path(args.network) if getattr(args, "network", None) else None,
        policy_path=Path(args.policy) if getattr(args, "policy", None) else None,
        workers=getattr(args, "workers", None),
        metrics_port=getattr(args, "metrics_port", None),
        redis_url=getattr(args, "redis_url", None),
        recovery_dir=Path(args.recovery_dir) if getattr(args, "recovery_dir", None) else None,
        snapshot_interval_s=getattr(args, "snapshot_interval", None),
        wms_url=getattr(args, "wms_url", None),
    )


def _run(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from bytewax.run import cli_main

    from adapters.recovery import recovery_config, start_tombstone_pruner
    from flows.entry import prepare

    settings = _settings(args)
    flow = prepare(settings)
    recovery = None
    if settings.recovery_dir is not None:
        recovery = recovery_config(settings.recovery_dir, settings.backup_interval_s)
        start_tombstone_pruner(settings.recovery_dir)
    cluster: dict[str, object] = {}
    if args.addresses:
        cluster = {"process_id": args.process_id, "addresses": args.addresses.split(";")}
    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=settings.workers,
        **cluster,
        epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
        recovery_config=recovery,
    )
    return 0


def _control(args: argparse.Namespace) -> int:
    from adapters.control import send_command
    from adapters.settings import control_topic
    from operators.parse import Invalid

    settings = _settings(args)
    key_id = args.key_id or os.environ.get("STOCKSHIFT_CONTROL_KEY_ID", "")
    secret = settings.control_keys.get(key_id)
    if secret is None:
        print(
            f"stockshift: no secret for control key id {key_id!r} in STOCKSHIFT_CONTROL_KEYS",
            file=sys.stderr,
        )
        return 2
    fields: dict[str, object] = {
        "target": args.target,
        "value": args.value,
        "reason": args.reason,
        "actor": args.actor or os.environ.get("USER"),
    }
    if args.effective_at is not None:
        text = args.effective_at
        fields["effective_at"] = int(text) if text.isdigit() else text
    try:
        body = send_command(
            settings.brokers, control_topic(settings), key_id, secret, args.action,
            settings.kafka_config, **fields,
        )  # fmt: skip
    except Invalid as exc:  # what the flow would reject it for; nothing was sent
        print(f"stockshift control: {exc} (not sent)", file=sys.stderr)
        return 2
    print(f"sent {args.action} (nonce {body['nonce']}) to {control_topic(settings)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from adapters.decision_log import trail_from_kafka, trail_from_redis
    from adapters.redis_store import RedisSettings
    from operators.explain import explain

    settings = _settings(args)
    trail: list[dict[str, object]] = []
    if settings.redis_url and args.source in ("auto", "redis"):
        trail = trail_from_redis(
            RedisSettings(url=settings.redis_url, prefix=settings.redis_prefix), args.proposal_id
        )
    if not trail and args.source in ("auto", "kafka"):
        trail = trail_from_kafka(
            settings.brokers, settings.topic("decisions"), args.proposal_id, settings.kafka_config
        )
    print(explain(args.proposal_id, trail))
    return 0 if trail else 1


def _warmup(args: argparse.Namespace) -> int:
    """Publish a sales history as `sale_history` events and/or forecasts as `forecast`
    events: the flow starts from demand estimates instead of learning them for days
    (docs/operations.md)."""
    from adapters.clock import now_ms
    from adapters.configfiles import load_network
    from adapters.history import check_events, read_forecasts, read_history, read_site_map
    from adapters.kafka import produce_all
    from operators.history import history_events

    if not args.history and not args.forecasts:
        raise ConfigError("warmup: give --history, --forecasts or both")
    settings = _settings(args)
    network = load_network(settings.network_path)
    site_map = read_site_map(Path(args.site_map)) if args.site_map else None
    verb = "would publish" if args.dry_run else "published"
    if args.history:
        rows = read_history(Path(args.history), network, site_map)
        events = history_events(rows, network)
        check_events(Path(args.history), "pos", events, network)
        topic = settings.topic("pos")
        if not args.dry_run:
            produce_all(settings.brokers, topic, events, settings.kafka_config)
        units = sum(int(str(e["qty"])) for e in events)
        print(f"{verb} {len(events)} sale_history events ({units} units) to {topic}")
        _print_demand_index(rows, network)
    if args.forecasts:
        forecasts = read_forecasts(Path(args.forecasts), network, now_ms(), site_map)
        topic = settings.topic("forecasts")
        if not args.dry_run:
            produce_all(settings.brokers, topic, forecasts, settings.kafka_config)
        print(f"{verb} {len(forecasts)} forecasts to {topic}")
    return 0


def _print_demand_index(rows: list[HistoryRow], network: Network) -> None:
    """Each site's volume in the history as the network's `demand_index` (the planner's
    prior for a slow mover scales the SKU's rate across sites by it; docs/decisions.md)."""
    from operators.history import fitted_demand_index, units_by_site

    fitted = fitted_demand_index(units_by_site(rows), sorted(network.sites))
    print("demand_index by site in this history (network config now in brackets):")
    for site, index in fitted.items():
        print(f"  {site:<16} {index:>7.3f}  ({network.sites[site].demand_index:g})")


def _dlq(args: argparse.Namespace) -> int:
    """List the dead letters by reason, or replay the chosen ones to their source topics."""
    from collections import Counter

    from adapters.dlq import Selection, read_dead_letters, replay

    settings = _settings(args)
    records = read_dead_letters(settings.brokers, settings.topic("dlq"), settings.kafka_config)

    chosen = Selection(args.reason, args.source_topic, args.from_offset)

    if args.action == "list":
        counts = Counter((r.reason, r.source_topic) for r in records if chosen(r))
        for (reason, topic), n in sorted(counts.items()):
            print(f"{n:>8}  {reason:<24} from {topic}")
        print(f"{sum(counts.values())} dead letters")
        return 0
    report = replay(settings.brokers, records, chosen, settings.kafka_config, args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    partial = report.skipped_truncated
    print(
        f"{verb} {report.replayed} of {report.matched} chosen dead letters"
        + (f"; {partial} kept only in part (see their source offsets)" if partial else "")
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from adapters.configfiles import load_network, load_policy
    from adapters.lab.simulator import load_scenario
    from flows.lab.compare import compare_log, compare_scenario, print_comparison

    a, b = load_policy(args.policy_a), load_policy(args.policy_b)
    if a.version == b.version:
        print("stockshift: the two policies have the same version", file=sys.stderr)
        return 2
    if args.events:
        columns = compare_log(
            Path(args.events), load_network(args.network), a, b, args.topic_prefix
        )
    else:
        columns = compare_scenario(load_scenario(args.scenario), a, b)
    print_comparison(columns)
    return 0


def _signal_bench(args: argparse.Namespace) -> int:
    from flows.lab.signal_bench import bench

    bench()
    return 0


def _bench(args: argparse.Namespace) -> int:
    from flows.lab.bench import print_results, run_bench

    logging.getLogger("stockshift").setLevel(logging.WARNING)  # no line per proposal here
    if args.console:
        from adapters.lab.consolebench import run_console_bench

        print("\n".join(run_console_bench()))
        return 0
    if args.execute:
        import tempfile

        from adapters.lab.execbench import run_exec_bench

        folder = Path(tempfile.mkdtemp(prefix="stockshift-execbench-"))
        print("\n".join(run_exec_bench(folder).lines()))
        return 0
    if args.latency:
        from adapters.lab.latency import TRIGGERS, latency_lines, run_latency
        from flows.lab.bench import compiled_core

        rates = [float(r) for r in args.latency.split(",")]
        core = None
        if not args.pure:
            # The core the full bench's latency table runs, so the two read alike.
            print("compiling the core (mypyc) into a scratch copy", file=sys.stderr)
            core, why_not = compiled_core()
            if core is None:
                print(f"the pure core runs: {why_not}", file=sys.stderr)
        skus = args.skus or TRIGGERS
        rows = run_latency(rates, args.seconds, skus, args.linger_ms, args.brokers, core)
        print("\n".join(latency_lines(rows)))
        return 0
    low, high = (int(v) for v in args.memory_keys.split(","))
    results = run_bench(
        args.brokers,
        args.events,
        args.skus or 2_000,
        (low, high),
        quiet=args.quiet,
        latency_seconds=args.seconds,
    )
    print_results(results)
    return 0


def _reliability(args: argparse.Namespace) -> int:
    from flows.lab.reliability import run

    return run(args.quick, args.runs, args.adversarial)


def _soak(args: argparse.Namespace) -> int:
    from flows.lab.soak import run

    return run(args.minutes, args.rate, args.sample_s, args.idle_eviction_s)


def _demo(args: argparse.Namespace) -> int:
    from adapters.lab.simulator import Scenario
    from flows.lab.demo import run_demo

    # The demo prints its own summary; one log line per proposal would bury it.
    logging.getLogger("stockshift.decisions").setLevel(logging.WARNING)
    if args.live:
        from adapters.lab.livedemo import main as live_demo

        return live_demo(args.live_skus, args.out if args.out != "out/demo" else None)
    scenario = Scenario(n_sites=args.sites, n_skus=args.skus, days=args.days, seed=args.seed)
    run_demo(Path(args.out), scenario, quiet=args.quiet)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from adapters.configfiles import load_policy
    from adapters.lab.simulator import load_scenario
    from flows.lab.simulate import OPTIONAL_POLICIES, POLICIES, simulate

    paths = args.policy or [str(DEFAULT_POLICY), str(SERVICE_FIRST_POLICY)]
    policy = {Path(path).stem: load_policy(path) for path in paths}
    policies = tuple(args.policies.split(",")) if args.policies else POLICIES
    unknown = set(policies) - set(POLICIES + OPTIONAL_POLICIES)
    if unknown:
        print(
            f"stockshift: unknown policies {sorted(unknown)}; "
            f"choose from {POLICIES + OPTIONAL_POLICIES}",
            file=sys.stderr,
        )
        return 2
    overrides = {"trace": str(Path(args.trace).resolve())} if args.trace else {}
    for path in args.scenarios:
        scenario = load_scenario(path, **overrides)
        simulate(scenario, policy, Path(args.out) / scenario.name, policies, quiet=args.quiet)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    """The same loading `run` does (one code path), without connecting to anything."""
    from adapters.configfiles import load_config

    settings = _settings(args)
    config = load_config(
        settings.network_path,
        settings.policy_path,
        settings.policies_dir,
        settings.shadow_policy_path,
    )
    network = config.network
    print(
        f"network: {len(network.sites)} sites, {len(network.lanes)} lanes, "
        f"{len(network.sku_overrides)} SKU overrides; policy {config.policy.version} "
        f"(versions: {', '.join(sorted(config.policies))}): ok"
    )
    return _check_topics(settings) if args.brokers else 0


def _check_topics(settings: Settings) -> int:
    """The topics that exist against what their roles need (adapters/topics.py)."""
    from adapters.kafka import describe_topics
    from adapters.topics import mismatches, topic_specs

    wanted = topic_specs(settings)
    existing = describe_topics(settings.brokers, wanted, settings.kafka_config)
    found = mismatches(wanted, existing)
    for mismatch in found:
        print(f"topic mismatch: {mismatch}")
    missing = sorted(set(wanted) - set(existing))
    print(
        f"topics: {len(existing)} of {len(wanted)} exist"
        + (f" ({', '.join(missing)} will be created by run)" if missing else "")
        + (f"; {len(found)} differ from what their roles need" if found else ": as needed")
    )
    return 1 if found else 0


def _within(low: float, high: float, read: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse type: a number of the given kind, finite and within [low, high], so that
    `--days -1` or `--skus 100000000` is a usage error, not a traceback or an hour of
    allocating."""

    def check(text: str) -> float:
        try:
            value = read(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r:.40}") from None
        if not (math.isfinite(value) and low <= value <= high):
            span = f"{_number(low)} to {_number(high)}"
            raise argparse.ArgumentTypeError(f"must be within {span}, got {text:.40}")
        return value

    return check


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(text: str) -> str:
    """A level `logging` knows (argparse checks a default read from the environment with
    the same function, so STOCKSHIFT_LOG_LEVEL=verbose is a usage error, not a traceback)."""
    if text.upper() not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not one of {', '.join(_LOG_LEVELS)}")
    return text.upper()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="stockshift", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument(
        "--log-level",
        type=_log_level,
        default=os.environ.get("STOCKSHIFT_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL [STOCKSHIFT_LOG_LEVEL]",
    )
    sub = root.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_execute(sub)
    _add_console(sub)
    _add_check_config(sub)
    _add_control(sub)
    _add_explain(sub)
    _add_dlq(sub)
    _add_warmup(sub)
    _add_demo(sub)
    _add_simulate(sub)
    _add_compare(sub)
    _add_bench(sub)
    _add_reliability(sub)
    _add_soak(sub)
    _add_signal_bench(sub)
    return root


def _add_run(sub: Subcommands) -> None:
    run = sub.add_parser("run", help="run the flow on Kafka (STOCKSHIFT_* env vars also work)")
    run.add_argument("--redis-url", help="live state and proposal ledger [STOCKSHIFT_REDIS_URL]")
    run.add_argument(
        "--recovery-dir", help="snapshot state and offsets here [STOCKSHIFT_RECOVERY_DIR]"
    )
    run.add_argument(
        "--snapshot-interval", type=float, help="seconds between snapshots (default 10)"
    )
    run.add_argument(
        "--addresses",
        default=os.environ.get("STOCKSHIFT_ADDRESSES"),
        help="Bytewax cluster: host:port of every process, ';'-separated [STOCKSHIFT_ADDRESSES]",
    )
    run.add_argument(
        "--process-id",
        type=int,
        default=int(os.environ.get("STOCKSHIFT_PROCESS_ID", "0")),
        help="this process's index in --addresses [STOCKSHIFT_PROCESS_ID]",
    )
    run.add_argument("--brokers", help="comma-separated host:port list [STOCKSHIFT_BROKERS]")
    run.add_argument("--topic-prefix", help="default 'stockshift.' [STOCKSHIFT_TOPIC_PREFIX]")
    run.add_argument("--network", help="network TOML [STOCKSHIFT_NETWORK]")
    run.add_argument("--policy", help="policy TOML [STOCKSHIFT_POLICY]")
    run.add_argument("--workers", type=int, help="Bytewax workers in this process")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.set_defaults(handler=_run)


def _add_execute(sub: Subcommands) -> None:
    run = sub.add_parser(
        "execute", help="carry proposals into the WMS/ERP exactly once; report outcomes"
    )
    run.add_argument("--wms-url", help="the WMS/ERP REST base URL [STOCKSHIFT_WMS_URL]")
    run.add_argument("--redis-url", help="progress records [STOCKSHIFT_REDIS_URL]")
    run.add_argument("--brokers", help="comma-separated host:port list [STOCKSHIFT_BROKERS]")
    run.add_argument("--topic-prefix", help="default 'stockshift.' [STOCKSHIFT_TOPIC_PREFIX]")
    run.add_argument("--network", help="network TOML [STOCKSHIFT_NETWORK]")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.set_defaults(handler=_execute)


def _execute(args: argparse.Namespace) -> int:
    from flows.execute import serve

    return serve(_settings(args))


def _add_console(sub: Subcommands) -> None:
    web = sub.add_parser("console", help="the planners' web console (approvals, why, exceptions)")
    web.add_argument("--port", type=int, help="[STOCKSHIFT_CONSOLE_PORT] (default 8080)")
    web.add_argument("--host", default="0.0.0.0")
    web.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password on stdin and print its argon2 hash for the users file",
    )
    _add_kafka_flags(web)
    web.add_argument("--redis-url", help="[STOCKSHIFT_REDIS_URL]")
    web.set_defaults(handler=_console)
    pending = sub.add_parser("pending", help="proposals waiting for a person")
    _add_kafka_flags(pending)
    pending.add_argument("--redis-url", help="[STOCKSHIFT_REDIS_URL]")
    pending.set_defaults(handler=_pending)
    for verb in ("approve", "reject"):
        answer = sub.add_parser(verb, help=f"{verb} a proposal that waits for a person")
        answer.add_argument("proposal_id")
        answer.add_argument(
            "--note" if verb == "approve" else "--reason",
            default="",
            required=verb == "reject",
            dest="note",
        )
        answer.add_argument("--actor", default=os.environ.get("USER", "cli"), help="who (audit)")
        _add_kafka_flags(answer)
        answer.add_argument("--redis-url", help="[STOCKSHIFT_REDIS_URL]")
        answer.set_defaults(handler=_answer, approve=verb == "approve")


def _console(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.hash_password:
        from adapters.console_auth import hash_password

        print(hash_password(sys.stdin.readline().rstrip("\n")))
        return 0
    from flows.console import serve

    settings = _settings(args)
    if args.port:
        settings = replace(settings, console_port=args.port)
    return serve(settings, args.host)


def _pending(args: argparse.Namespace) -> int:
    from adapters import clock
    from adapters.console_backend import sorted_waiting
    from flows.console import build

    _, backend = build(_settings(args))
    backend.start()
    if not backend.wait_caught_up(60):
        print("stockshift: could not read the topics to their end", file=sys.stderr)
        return 1
    now = clock.now_ms()
    items = sorted_waiting(backend.waiting(now), "expires", False)
    for w in items:
        left = (w.expires_ms - now) // 60_000
        why = "; ".join(w.approval_reasons) or w.reason
        print(
            f"{w.proposal_id}  {w.sku}  {w.from_site} -> {w.to_site}  {w.qty} units  "
            f"value {w.value:.2f}  expires in {left} min  ({why})"
        )
    print(f"{len(items)} waiting")
    return 0


def _answer(args: argparse.Namespace) -> int:
    """The console's own code path (Backend.answer), as an admin named by --actor: whoever
    can run this holds the deployment's Kafka and Redis credentials."""
    from flows.console import build
    from operators.approvals import Refusal
    from state.console import Role, User

    _, backend = build(_settings(args))
    backend.start()
    if not backend.wait_caught_up(60):
        print("stockshift: could not read the topics to their end", file=sys.stderr)
        return 1
    result = backend.answer(args.proposal_id, args.approve, User(args.actor, Role.ADMIN), args.note)
    if isinstance(result, Refusal):
        print(f"stockshift: not done: {result.message}", file=sys.stderr)
        return 1
    print(f"{result.proposal_id}: {result.answer} by {result.answered_by}")
    return 0


def _add_check_config(sub: Subcommands) -> None:
    check = sub.add_parser(
        "check-config",
        help="validate the configuration `run` would load (flags, STOCKSHIFT_* variables)",
    )
    check.add_argument("--network", help="network TOML [STOCKSHIFT_NETWORK]")
    check.add_argument("--policy", help="default policy TOML [STOCKSHIFT_POLICY]")
    check.add_argument(
        "--brokers", help="also compare the existing topics with what their roles need"
    )
    check.add_argument("--topic-prefix", help="[STOCKSHIFT_TOPIC_PREFIX]")
    check.set_defaults(handler=_check_config)


def _add_control(sub: Subcommands) -> None:
    ctl = sub.add_parser("control", help="sign and send a control command")
    ctl.add_argument(
        "action",
        metavar="command",
        choices=[
            "pause", "resume", "activate_policy", "freeze_site", "unfreeze_site",
            "freeze_sku", "unfreeze_sku", "set_approval_threshold",
        ],
        help="pause, resume, activate_policy, freeze_site, unfreeze_site, freeze_sku, "
        "unfreeze_sku or set_approval_threshold",
    )  # fmt: skip
    ctl.add_argument("target", nargs="?", help="policy version, site or SKU")
    ctl.add_argument("--value", type=float, help="approval threshold")
    ctl.add_argument("--reason", help="why (kept in the decision log)")
    ctl.add_argument("--actor", help="who (default $USER)")
    ctl.add_argument("--effective-at", help="event time it applies from (default: now)")
    ctl.add_argument("--key-id", help="signing key id [STOCKSHIFT_CONTROL_KEY_ID]")
    _add_kafka_flags(ctl)
    ctl.set_defaults(handler=_control)


def _add_kafka_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--brokers", help="[STOCKSHIFT_BROKERS]")
    command.add_argument("--topic-prefix", help="[STOCKSHIFT_TOPIC_PREFIX]")


def _add_warmup(sub: Subcommands) -> None:
    warm = sub.add_parser(
        "warmup", help="start from a sales history and forecasts instead of days of watching"
    )
    warm.add_argument("--history", help="CSV or Parquet: date|ts, sku, site, qty")
    warm.add_argument(
        "--forecasts",
        help="CSV or Parquet: sku, site, mean_per_day [, error_cv, forecast_version, ts]",
    )
    warm.add_argument("--network", help="network TOML [STOCKSHIFT_NETWORK]")
    warm.add_argument("--site-map", help="CSV store,site: the file's store ids -> site ids")
    warm.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    _add_kafka_flags(warm)
    warm.set_defaults(handler=_warmup)


def _add_dlq(sub: Subcommands) -> None:
    dlq = sub.add_parser("dlq", help="list dead letters, or replay fixed ones to their topics")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--reason", help="only dead letters with this reason (e.g. unknown_site)")
    dlq.add_argument("--source-topic", help="only those from this topic")
    dlq.add_argument("--from-offset", type=int, default=0, help="only from this DLQ offset on")
    dlq.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    _add_kafka_flags(dlq)
    dlq.set_defaults(handler=_dlq)


def _add_explain(sub: Subcommands) -> None:
    why = sub.add_parser("explain", help="why a proposal was made, and what happened to it")
    why.add_argument("proposal_id")
    why.add_argument("--source", choices=["auto", "redis", "kafka"], default="auto")
    _add_kafka_flags(why)
    why.add_argument("--redis-url", help="[STOCKSHIFT_REDIS_URL]")
    why.set_defaults(handler=_explain)


def _add_demo(sub: Subcommands) -> None:
    demo = sub.add_parser("demo", help="run the flow on an embedded simulated network")
    demo.add_argument("--out", default="out/demo", help="output folder")
    demo.add_argument("--sites", type=_within(2, 200), default=8)
    demo.add_argument("--skus", type=_within(1, 10_000), default=50)
    demo.add_argument("--days", type=_within(1, 366), default=14)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--quiet", action="store_true", help="no progress lines")
    demo.add_argument(
        "--live",
        action="store_true",
        help="the whole loop on real parts: broker, Redis, PostgreSQL, run, execute, a WMS",
    )
    demo.add_argument(
        "--live-skus", type=_within(1, 1_000), default=12, help="SKUs in the live demo"
    )
    demo.set_defaults(handler=_demo)


def _add_simulate(sub: Subcommands) -> None:
    sim = sub.add_parser("simulate", help="compare policies on simulated scenarios")
    sim.add_argument(
        "scenarios",
        nargs="*",
        default=[
            str(DEFAULT_SCENARIOS / "small-symmetric.toml"),
            str(DEFAULT_SCENARIOS / "shock-promo.toml"),
            str(DEFAULT_SCENARIOS / "regional.toml"),
            str(DEFAULT_SCENARIOS / "constrained.toml"),
        ],
        help="scenario TOML files (default: the ready ones in configs/scenarios/)",
    )
    sim.add_argument(
        "--policy",
        action="append",
        help="stockshift policy TOML; repeat to compare several (default: the shipped default "
        "and service-first policies, side by side)",
    )
    sim.add_argument(
        "--policies",
        help="comma-separated subset of none,tie,pooling,stockshift,hindsight (the default), "
        "plus lookahead: a slow online reference that knows the true demand rates "
        "(lookahead-margin: the same valuing a lost sale at the margin only), and "
        "trip-bound: the most any plan could earn paying per-trip costs (per_trip scenarios)",
    )
    sim.add_argument(
        "--trace", help="replay demand from a CSV/Parquet trace (date or ts, sku, site, qty)"
    )
    sim.add_argument(
        "--out", default="out/simulate", help="report folder (one subfolder per scenario)"
    )
    sim.add_argument("--quiet", action="store_true")
    sim.set_defaults(handler=_simulate)


def _add_compare(sub: Subcommands) -> None:
    cmp = sub.add_parser("compare", help="replay the same input under two policy versions")
    cmp.add_argument("policy_a")
    cmp.add_argument("policy_b")
    source = cmp.add_mutually_exclusive_group()
    source.add_argument("--events", help="recorded event log (JSON lines of {topic, value})")
    source.add_argument(
        "--scenario",
        default=str(DEFAULT_SCENARIOS / "small-symmetric.toml"),
        help="simulator scenario (default: small-symmetric)",
    )
    cmp.add_argument("--network", default=str(CONFIGS / "network.toml"), help="with --events")
    cmp.add_argument("--topic-prefix", default="stockshift.", help="of the recorded topics")
    cmp.set_defaults(handler=_compare)


def _add_bench(sub: Subcommands) -> None:
    bench = sub.add_parser(
        "bench", help="throughput vs ceilings, latency added to the broker, memory per key"
    )
    bench.add_argument("--brokers", help="use this Kafka (default: start a Tansu broker)")
    bench.add_argument("--events", type=_within(1_000, 100_000_000), default=200_000)
    bench.add_argument(
        "--skus",
        type=_within(1, 1_000_000),
        help="SKUs x 8 sites in the stream (default 2,000; --latency: 1,200, one trigger each)",
    )
    bench.add_argument(
        "--memory-keys", default="100000,1000000", help="two state sizes for the slope"
    )
    bench.add_argument("--quiet", action="store_true")
    bench.add_argument(
        "--console",
        action="store_true",
        help="instead: the console's page times with 10,000 proposals waiting",
    )
    bench.add_argument(
        "--execute",
        action="store_true",
        help="instead: stockshift execute's orders/s and proposal-to-order latency against "
        "the reference WMS (20 ms answers), with a plain client's ceiling",
    )
    bench.add_argument(
        "--latency", help="instead: trigger-to-proposal latency at these events/s, e.g. 2000"
    )
    bench.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="each latency run (after the throughput table at 2,000 events/s and half the "
        "sustained rate, or with --latency); 0: no latency table",
    )
    bench.add_argument(
        "--linger-ms",
        type=float,
        default=20.0,
        help="with --latency: the input producer's linger.ms",
    )
    bench.add_argument(
        "--pure",
        action="store_true",
        help="with --latency: run the pure core (default: the compiled one, built first, as "
        "the full bench's latency table runs)",
    )
    bench.set_defaults(handler=_bench)


def _add_reliability(sub: Subcommands) -> None:
    rel = sub.add_parser(
        "reliability",
        help="fault matrix: kill -9, broker and Redis outages, bad input, control abuse",
    )
    rel.add_argument("--quick", action="store_true", help="small sizes (what CI runs)")
    rel.add_argument("--runs", type=_within(1, 100), help="kill -9 runs (default 5; quick 2)")
    rel.add_argument(
        "--adversarial",
        action="store_true",
        help="hostile producers, clocks and control messages instead (issue #18's table)",
    )
    rel.set_defaults(handler=_reliability)


def _add_soak(sub: Subcommands) -> None:
    soak = sub.add_parser(
        "soak", help="steady rate with churning SKUs: memory, state, latency over time"
    )
    soak.add_argument("--minutes", type=_within(0.1, 10_080, float), default=10.0)
    soak.add_argument(
        "--rate", type=_within(1, 1_000_000, float), default=1000.0, help="input events/s"
    )
    soak.add_argument("--sample-s", type=_within(1, 3_600, float), default=30.0)
    soak.add_argument("--idle-eviction-s", type=_within(0, 86_400, float), default=30.0)
    soak.set_defaults(handler=_soak)


def _add_signal_bench(sub: Subcommands) -> None:
    sig = sub.add_parser("signal-bench", help="inject faults; score the signal-health detectors")
    sig.set_defaults(handler=_signal_bench)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from adapters.logs import configure

    configure(args.log_level)
    from confluent_kafka import KafkaException

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"stockshift: configuration error: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:  # e.g. no broker answers: say so, not a traceback
        print(f"stockshift {args.command}: {_kafka_error(args, exc)}", file=sys.stderr)
        return 1
    except ConnectionError as exc:  # a send the broker never acknowledged, a refused socket
        print(f"stockshift {args.command}: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _LAB_MODULES and not _is_lab(exc.name or ""):
            raise
        print(
            f"stockshift {args.command}: part of the lab, not installed here ({exc.name}); "
            "pip install 'stockshift[lab]' from a source checkout",
            file=sys.stderr,
        )
        return 2


def _kafka_error(args: argparse.Namespace, exc: Exception) -> str:
    """The client's own words (KafkaError.str()) and the brokers the command asked, as its
    settings resolved them (flag, environment, default)."""
    from confluent_kafka import KafkaError

    error = exc.args[0] if exc.args else None
    words = error.str() if isinstance(error, KafkaError) else str(exc)
    return f"Kafka at {','.join(_settings(args).brokers)}: {words}"


# What the lab commands need beyond the core: their own subpackages (absent from the
# production image) and the lab extra's libraries.
_LAB_MODULES = frozenset({"matplotlib", "scipy"})


def _is_lab(module: str) -> bool:
    return module.startswith(("adapters.lab", "flows.lab", "operators.reference"))


if __name__ == "__main__":
    raise SystemExit(main())
