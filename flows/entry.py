"""Start-up wiring shared by `stockshift run` and the container's
`python -m bytewax.run "flows.entry:from_environment()"`.

A function, not a module-level flow, so nothing connects or listens at import.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from bytewax.dataflow import Dataflow

from adapters import kafka, metrics
from adapters.configfiles import load_config
from adapters.control import ControlFollower, GovernanceBoard, preload
from adapters.settings import Settings, control_topic, from_env
from adapters.topics import topic_specs
from flows.pipeline import Control, build, control_auth
from state.config import Policy

log = logging.getLogger("stockshift")


# The cyclic collector's young generation is collected after this many new container
# objects, not CPython's 700 (issue #23: the flow builds several per event, Bytewax's batches
# and messages more; at 700 the collector took 8 % of the worker's samples). On the bench
# stream one worker's compiled flow went from about 20,300 to 22,600 events/s, a Bytewax
# pass-through from about 70,000 to 78,700; the garbage waits for at most this many more
# objects before a cycle is freed.
YOUNG_COLLECTION_OBJECTS = 10_000


def tune_collector() -> None:
    """Set the collector's thresholds for a flow process (older generations as CPython's)."""
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_OBJECTS, middle, old)


def prepare(settings: Settings, snapshots: bool | None = None) -> Dataflow:
    """Validate config, create missing topics, apply the control log so far, build the flow."""
    tune_collector()
    config = load_config(
        settings.network_path,
        settings.policy_path,
        settings.policies_dir,
        settings.shadow_policy_path,
    )
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)  # first: a flow waiting for its broker is visible
    if settings.create_topics:
        create_topics(settings)
    control, replayed = start_control(settings, config.policy.version, config.policies)
    metrics.READY.set()
    log.info(
        "starting flow",
        extra={
            "brokers": settings.brokers,
            "policy_version": config.policy.version,
            "policy_versions": sorted(config.policies),
            "control_commands_replayed": replayed,
            "redis": settings.redis_url is not None,
        },
    )
    return build(
        settings,
        network=config.network,
        policy=config.policy,
        policies=config.policies,
        shadow_policy=config.shadow_policy,
        control=control,
        snapshots=settings.recovery_dir is not None if snapshots is None else snapshots,
    )


def create_topics(settings: Settings) -> None:
    """Every topic as its role needs it (adapters/topics.py). The control topic has one
    partition, so commands are totally ordered; the broker stamps each command's arrival (a
    signer's clock cannot make a command fresh), and it keeps every command, so start-up
    rebuilds every nonce ever used (docs/security.md)."""
    for topic, (partitions, config) in topic_specs(settings).items():
        kafka.ensure_topics(
            settings.brokers,
            [topic],
            partitions or settings.partitions,
            settings.kafka_config,
            timeout_s=settings.broker_wait_s,
            topic_config=config,
            replication_factor=settings.replication_factor,
        )


def start_control(
    settings: Settings, default_version: str, policies: Mapping[str, Policy]
) -> tuple[Control, int]:
    """Apply the control log so far to a new governance board, then follow the topic in
    this process (in a cluster the flow's control input runs in one process only). Returns
    the flow's control settings and how many commands were replayed."""
    if not settings.control_keys:
        log.warning("no STOCKSHIFT_CONTROL_KEYS: every control command will be rejected")
    auth = control_auth(settings, policies)
    control = Control(board=GovernanceBoard(default_version), auth=auth)
    topic = control_topic(settings)
    control.start_offset, control.nonces, verdicts = preload(
        control.board, settings.brokers, topic, auth, settings.kafka_config,
        timeout_s=settings.broker_wait_s,
    )  # fmt: skip
    ControlFollower(
        control.board, settings.brokers, topic, auth, control.start_offset, control.nonces,
        settings.kafka_config,
    ).start()  # fmt: skip
    return control, len(verdicts)


def bytewax_recovery_requested(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether `python -m bytewax.run` was given a recovery directory (`-r`,
    `--recovery-directory` or BYTEWAX_RECOVERY_DIRECTORY): its runner then restores input
    offsets, and the flow must snapshot SKU state too, or a restart resumes the offsets
    with empty state and decides on nothing."""
    flags = ("-r", "--recovery-directory")
    given = any(a in flags or a.startswith("--recovery-directory=") for a in argv)
    return given or bool(env.get("BYTEWAX_RECOVERY_DIRECTORY"))


def from_environment() -> Dataflow:
    """The flow for `python -m bytewax.run "flows.entry:from_environment()"` (the image's
    entry point is `stockshift run`, which manages recovery itself)."""
    settings = from_env()
    recovered = settings.recovery_dir is not None
    return prepare(
        settings, snapshots=recovered or bytewax_recovery_requested(sys.argv, os.environ)
    )
