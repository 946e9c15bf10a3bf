"""One frozen settings object, read once from flags and STOCKSHIFT_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
INPUT_KINDS = ("pos", "inventory", "shipments")
OUTPUT_KINDS = ("proposals", "decisions", "dlq")
KAFKA_ENV_PREFIX = "STOCKSHIFT_KAFKA_"


@dataclass(frozen=True)
class Settings:
    brokers: tuple[str, ...] = ("127.0.0.1:9092",)
    topic_prefix: str = "stockshift."
    network_path: Path = DEFAULT_CONFIG_DIR / "network.toml"
    policy_path: Path = DEFAULT_CONFIG_DIR / "policy.toml"
    workers: int = 1
    partitions: int = 3
    create_topics: bool = True
    metrics_port: int | None = None
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
    values["kafka_config"] = kafka_config_from_env(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
