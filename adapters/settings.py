"""One frozen settings object, read once from flags and STOCKSHIFT_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
INPUT_KINDS = ("pos", "inventory", "shipments")
OUTPUT_KINDS = ("proposals", "decisions", "dlq", "anomalies")
CONTROL_KIND = "control"
KAFKA_ENV_PREFIX = "STOCKSHIFT_KAFKA_"


@dataclass(frozen=True)
class Settings:
    brokers: tuple[str, ...] = ("127.0.0.1:9092",)
    topic_prefix: str = "stockshift."
    network_path: Path = DEFAULT_CONFIG_DIR / "network.toml"
    policy_path: Path = DEFAULT_CONFIG_DIR / "policies" / "default.toml"
    # Every policy version that `activate_policy` may switch to.
    policies_dir: Path = DEFAULT_CONFIG_DIR / "policies"
    shadow_policy_path: Path | None = None
    shadow_share: float = 0.0
    workers: int = 1
    partitions: int = 3
    create_topics: bool = True
    metrics_port: int | None = None
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "stockshift:"
    control_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    control_max_skew_s: float = 300.0
    # Bytewax recovery: snapshots of state and input offsets every `snapshot_interval_s`.
    recovery_dir: Path | None = None
    snapshot_interval_s: float = 10.0
    backup_interval_s: float = 0.0
    # How long the merged input waits for an idle partition to deliver something older.
    merge_grace_ms: float = 10.0
    # SKUs with no event for this long (wall clock) leave memory; 0 keeps them forever.
    idle_eviction_s: float = 7 * 24 * 3600.0
    # librdkafka settings (SASL/SSL, ...) passed through; never logged.
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)

    def topic(self, kind: str) -> str:
        return f"{self.topic_prefix}{kind}"

    @property
    def input_topics(self) -> list[str]:
        return [self.topic(kind) for kind in INPUT_KINDS]

    @property
    def output_topics(self) -> list[str]:
        return [self.topic(kind) for kind in OUTPUT_KINDS]


def kafka_config_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """STOCKSHIFT_KAFKA_SASL_USERNAME=x becomes librdkafka's sasl.username=x."""
    return {
        key[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for key, value in env.items()
        if key.startswith(KAFKA_ENV_PREFIX)
    }


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment; explicit (flag) values given as overrides win."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if "STOCKSHIFT_BROKERS" in env:
        values["brokers"] = tuple(b for b in env["STOCKSHIFT_BROKERS"].split(",") if b)
    if "STOCKSHIFT_TOPIC_PREFIX" in env:
        values["topic_prefix"] = env["STOCKSHIFT_TOPIC_PREFIX"]
    if "STOCKSHIFT_NETWORK" in env:
        values["network_path"] = Path(env["STOCKSHIFT_NETWORK"])
    if "STOCKSHIFT_POLICY" in env:
        values["policy_path"] = Path(env["STOCKSHIFT_POLICY"])
    if "STOCKSHIFT_WORKERS" in env:
        values["workers"] = int(env["STOCKSHIFT_WORKERS"])
    if "STOCKSHIFT_PARTITIONS" in env:
        values["partitions"] = int(env["STOCKSHIFT_PARTITIONS"])
    if "STOCKSHIFT_METRICS_PORT" in env:
        values["metrics_port"] = int(env["STOCKSHIFT_METRICS_PORT"])
    if "STOCKSHIFT_POLICIES_DIR" in env:
        values["policies_dir"] = Path(env["STOCKSHIFT_POLICIES_DIR"])
    if "STOCKSHIFT_SHADOW_POLICY" in env:
        values["shadow_policy_path"] = Path(env["STOCKSHIFT_SHADOW_POLICY"])
    if "STOCKSHIFT_SHADOW_SHARE" in env:
        values["shadow_share"] = float(env["STOCKSHIFT_SHADOW_SHARE"])
    if "STOCKSHIFT_REDIS_URL" in env:
        values["redis_url"] = env["STOCKSHIFT_REDIS_URL"] or None
    if "STOCKSHIFT_REDIS_PREFIX" in env:
        values["redis_prefix"] = env["STOCKSHIFT_REDIS_PREFIX"]
    if "STOCKSHIFT_CONTROL_KEYS" in env:
        from adapters.control import parse_keys

        values["control_keys"] = parse_keys(env["STOCKSHIFT_CONTROL_KEYS"])
    if "STOCKSHIFT_CONTROL_MAX_SKEW_S" in env:
        values["control_max_skew_s"] = float(env["STOCKSHIFT_CONTROL_MAX_SKEW_S"])
    if "STOCKSHIFT_RECOVERY_DIR" in env:
        values["recovery_dir"] = (
            Path(env["STOCKSHIFT_RECOVERY_DIR"]) if env["STOCKSHIFT_RECOVERY_DIR"] else None
        )
    if "STOCKSHIFT_SNAPSHOT_INTERVAL_S" in env:
        values["snapshot_interval_s"] = float(env["STOCKSHIFT_SNAPSHOT_INTERVAL_S"])
    if "STOCKSHIFT_BACKUP_INTERVAL_S" in env:
        values["backup_interval_s"] = float(env["STOCKSHIFT_BACKUP_INTERVAL_S"])
    if "STOCKSHIFT_MERGE_GRACE_MS" in env:
        values["merge_grace_ms"] = float(env["STOCKSHIFT_MERGE_GRACE_MS"])
    if "STOCKSHIFT_IDLE_EVICTION_S" in env:
        values["idle_eviction_s"] = float(env["STOCKSHIFT_IDLE_EVICTION_S"])
    values["kafka_config"] = kafka_config_from_env(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]


def control_topic(settings: Settings) -> str:
    return settings.topic(CONTROL_KIND)
