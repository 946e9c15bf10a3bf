"""The `stockshift` command: run (Kafka), demo (embedded), check-config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from state.config import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_SCENARIOS = CONFIGS / "scenarios"
DEFAULT_POLICY = CONFIGS / "policy.toml"


def _run(args: argparse.Namespace) -> int:
    from bytewax.run import cli_main

    from adapters import kafka, metrics
    from adapters.configfiles import load_network, load_policy
    from adapters.settings import from_env
    from flows.pipeline import build

    settings = from_env(
        brokers=tuple(args.brokers.split(",")) if args.brokers else None,
        topic_prefix=args.topic_prefix,
        network_path=Path(args.network) if args.network else None,
        policy_path=Path(args.policy) if args.policy else None,
        workers=args.workers,
        metrics_port=args.metrics_port,
    )
    network = load_network(settings.network_path)
    policy = load_policy(settings.policy_path)
    if settings.create_topics:
        kafka.ensure_topics(
            settings.brokers,
            settings.input_topics + settings.output_topics,
            settings.partitions,
            settings.kafka_config,
        )
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    logging.getLogger("stockshift").info(
        "starting flow",
        extra={"brokers": settings.brokers, "policy_version": policy.version},
    )
    flow = build(settings, network=network, policy=policy)
    cli_main(flow, workers_per_process=settings.workers)  # type: ignore[no-untyped-call]
    return 0


def _demo(args: argparse.Namespace) -> int:
    from adapters.simulator import Scenario
    from flows.demo import run_demo

    scenario = Scenario(n_sites=args.sites, n_skus=args.skus, days=args.days, seed=args.seed)
    run_demo(Path(args.out), scenario, quiet=args.quiet)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from adapters.configfiles import load_policy
    from adapters.simulator import load_scenario
    from flows.simulate import POLICIES, simulate

    policy = load_policy(args.policy)
    policies = tuple(args.policies.split(",")) if args.policies else POLICIES
    unknown = set(policies) - set(POLICIES)
    if unknown:
        print(
            f"stockshift: unknown policies {sorted(unknown)}; choose from {POLICIES}",
            file=sys.stderr,
        )
        return 2
    overrides = {"trace": str(Path(args.trace).resolve())} if args.trace else {}
    for path in args.scenarios:
        scenario = load_scenario(path, **overrides)
        simulate(scenario, policy, Path(args.out) / scenario.name, policies, quiet=args.quiet)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from adapters.configfiles import load_network, load_policy

    network = load_network(args.network)
    policy = load_policy(args.policy)
    print(
        f"network: {len(network.sites)} sites, {len(network.lanes)} lanes, "
        f"{len(network.sku_overrides)} SKU overrides; policy {policy.version}: ok"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="stockshift", description=__doc__)
    root.add_argument("--log-level", default=os.environ.get("STOCKSHIFT_LOG_LEVEL", "INFO"))
    sub = root.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the flow on Kafka (STOCKSHIFT_* env vars also work)")
    run.add_argument("--brokers", help="comma-separated host:port list [STOCKSHIFT_BROKERS]")
    run.add_argument("--topic-prefix", help="default 'stockshift.' [STOCKSHIFT_TOPIC_PREFIX]")
    run.add_argument("--network", help="network TOML [STOCKSHIFT_NETWORK]")
    run.add_argument("--policy", help="policy TOML [STOCKSHIFT_POLICY]")
    run.add_argument("--workers", type=int, help="Bytewax workers in this process")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.set_defaults(handler=_run)

    demo = sub.add_parser("demo", help="run the flow on an embedded simulated network")
    demo.add_argument("--out", default="out/demo", help="output folder")
    demo.add_argument("--sites", type=int, default=8)
    demo.add_argument("--skus", type=int, default=50)
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--quiet", action="store_true", help="no progress lines")
    demo.set_defaults(handler=_demo)

    sim = sub.add_parser("simulate", help="compare policies on simulated scenarios")
    sim.add_argument(
        "scenarios",
        nargs="*",
        default=[
            str(DEFAULT_SCENARIOS / "small-symmetric.toml"),
            str(DEFAULT_SCENARIOS / "shock-promo.toml"),
            str(DEFAULT_SCENARIOS / "regional.toml"),
        ],
        help="scenario TOML files (default: the ready ones in configs/scenarios/)",
    )
    sim.add_argument("--policy", default=str(DEFAULT_POLICY), help="stockshift policy TOML")
    sim.add_argument(
        "--policies", help="comma-separated subset of none,tie,pooling,stockshift,hindsight"
    )
    sim.add_argument(
        "--trace", help="replay demand from a CSV/Parquet trace (date or ts, sku, site, qty)"
    )
    sim.add_argument(
        "--out", default="out/simulate", help="report folder (one subfolder per scenario)"
    )
    sim.add_argument("--quiet", action="store_true")
    sim.set_defaults(handler=_simulate)

    check = sub.add_parser("check-config", help="validate network and policy files")
    check.add_argument("--network", default="configs/network.toml")
    check.add_argument("--policy", default="configs/policy.toml")
    check.set_defaults(handler=_check_config)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from adapters.logs import configure

    configure(args.log_level)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"stockshift: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
