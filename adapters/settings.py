"""One frozen settings object, read once from flags and STOCKSHIFT_* environment variables."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from state.config import ConfigError

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
INPUT_KINDS = ("pos", "inventory", "shipments", "forecasts")
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
    # Topics stockshift creates: replicas each, retention per role (adapters/topics.py) unless
    # overridden, and names other than prefix + kind where given.
    replication_factor: int = 1
    topic_retention_ms: Mapping[str, int] = field(default_factory=dict)
    topic_names: Mapping[str, str] = field(default_factory=dict)
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
    # How long the merged input waits for a caught-up partition to deliver something older
    # (0: not at all, as Kafka Streams' max.task.idle.ms; partitions not yet caught up are
    # always waited for).
    merge_grace_ms: float = 0.0
    # SKUs with no event for this long (wall clock) leave memory; 0 keeps them forever.
    idle_eviction_s: float = 7 * 24 * 3600.0
    # With a group: input offsets are committed to it at each snapshot, for lag tools (the
    # flow still resumes from its snapshots). None: no commits.
    consumer_group: str | None = None
    # The most SKUs one process holds in state; events of further SKUs are dead-lettered
    # (`sku_limit`) until idle ones leave. About 7.4 KB each at 8 sites: docs/deploy.md.
    max_skus: int = 400_000
    # At start, how long to wait (retrying with backoff) for an unreachable broker.
    broker_wait_s: float = 300.0
    # `stockshift execute`: the WMS/ERP's REST base URL and bearer token, how many calls run
    # at once, failed calls in a row before a person is asked, and how long the WMS may be
    # unreachable (circuit open) before the outage itself is escalated.
    wms_url: str | None = None
    wms_token: str | None = field(default=None, repr=False)
    wms_timeout_s: float = 2.0
    execute_concurrency: int = 32
    execute_max_attempts: int = 8
    execute_poll_interval_s: float = 1.0
    execute_escalate_open_s: float = 300.0
    # `stockshift console`: port; sign-in by a users file (hashed passwords) or by identity
    # headers from an authenticating proxy at the trusted addresses; the session cookie's
    # signing secret; cookies only over HTTPS; the control key the server signs with.
    console_port: int = 8080
    console_auth: str = "password"
    console_users: Path | None = None
    console_secret: str | None = field(default=None, repr=False)
    console_secure_cookies: bool = True
    console_trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    console_key_id: str | None = None
    # Avro through a Confluent-compatible schema registry (adapters/avro.py): framed input
    # messages are decoded with it; "avro" output writes proposals in Avro.
    schema_registry_url: str | None = None
    output_format: str = "json"
    # librdkafka settings (SASL/SSL, ...) passed through; never logged.
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)

    def topic(self, kind: str) -> str:
        return self.topic_names.get(kind) or f"{self.topic_prefix}{kind}"

    @property
    def input_topics(self) -> list[str]:
        return [self.topic(kind) for kind in INPUT_KINDS]

    @property
    def output_topics(self) -> list[str]:
        return [self.topic(kind) for kind in OUTPUT_KINDS]


class FormatHint(ValueError):
    """A setting that cannot be read, said in words about its expected format that never
    quote the value: shown even for a secret."""


def kafka_config_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """STOCKSHIFT_KAFKA_SASL_USERNAME=x becomes librdkafka's sasl.username=x."""
    return {
        key[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for key, value in env.items()
        if key.startswith(KAFKA_ENV_PREFIX)
    }


def _path_or_none(text: str) -> Path | None:
    return Path(text) if text else None


def _output_format(text: str) -> str:
    if text not in ("json", "avro"):
        raise ValueError("expected json or avro")
    return text


def _console_auth(text: str) -> str:
    if text not in ("password", "headers"):
        raise ValueError("expected password or headers")
    return text


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("expected true or false")
    return text.lower() in ("true", "1", "yes")


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _retention(text: str) -> dict[str, int]:
    from adapters.topics import retention_overrides

    return retention_overrides(text)


def _topic_names(text: str) -> dict[str, str]:
    from adapters.topics import parse_assignments

    return parse_assignments(text, "STOCKSHIFT_TOPIC_NAMES")


def _control_keys(text: str) -> dict[str, bytes]:
    from adapters.control import parse_keys

    return parse_keys(text)


# STOCKSHIFT_<NAME> -> (Settings field, how to read the text)
_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "STOCKSHIFT_BROKERS": ("brokers", comma_list),
    "STOCKSHIFT_TOPIC_PREFIX": ("topic_prefix", str),
    "STOCKSHIFT_NETWORK": ("network_path", Path),
    "STOCKSHIFT_POLICY": ("policy_path", Path),
    "STOCKSHIFT_POLICIES_DIR": ("policies_dir", Path),
    "STOCKSHIFT_WORKERS": ("workers", int),
    "STOCKSHIFT_PARTITIONS": ("partitions", int),
    "STOCKSHIFT_REPLICATION_FACTOR": ("replication_factor", int),
    "STOCKSHIFT_TOPIC_RETENTION_MS": ("topic_retention_ms", _retention),
    "STOCKSHIFT_TOPIC_NAMES": ("topic_names", _topic_names),
    "STOCKSHIFT_METRICS_PORT": ("metrics_port", int),
    "STOCKSHIFT_SHADOW_POLICY": ("shadow_policy_path", Path),
    "STOCKSHIFT_SHADOW_SHARE": ("shadow_share", float),
    "STOCKSHIFT_REDIS_URL": ("redis_url", lambda text: text or None),
    "STOCKSHIFT_REDIS_PREFIX": ("redis_prefix", str),
    "STOCKSHIFT_CONTROL_KEYS": ("control_keys", _control_keys),
    "STOCKSHIFT_CONTROL_MAX_SKEW_S": ("control_max_skew_s", float),
    "STOCKSHIFT_RECOVERY_DIR": ("recovery_dir", _path_or_none),
    "STOCKSHIFT_SNAPSHOT_INTERVAL_S": ("snapshot_interval_s", float),
    "STOCKSHIFT_BACKUP_INTERVAL_S": ("backup_interval_s", float),
    "STOCKSHIFT_MERGE_GRACE_MS": ("merge_grace_ms", float),
    "STOCKSHIFT_IDLE_EVICTION_S": ("idle_eviction_s", float),
    "STOCKSHIFT_MAX_SKUS": ("max_skus", int),
    "STOCKSHIFT_CONSUMER_GROUP": ("consumer_group", lambda text: text or None),
    "STOCKSHIFT_BROKER_WAIT_S": ("broker_wait_s", float),
    "STOCKSHIFT_WMS_URL": ("wms_url", lambda text: text or None),
    "STOCKSHIFT_WMS_TOKEN": ("wms_token", lambda text: text or None),
    "STOCKSHIFT_WMS_TIMEOUT_S": ("wms_timeout_s", float),
    "STOCKSHIFT_EXECUTE_CONCURRENCY": ("execute_concurrency", int),
    "STOCKSHIFT_EXECUTE_MAX_ATTEMPTS": ("execute_max_attempts", int),
    "STOCKSHIFT_EXECUTE_POLL_INTERVAL_S": ("execute_poll_interval_s", float),
    "STOCKSHIFT_EXECUTE_ESCALATE_OPEN_S": ("execute_escalate_open_s", float),
    "STOCKSHIFT_CONSOLE_PORT": ("console_port", int),
    "STOCKSHIFT_CONSOLE_AUTH": ("console_auth", _console_auth),
    "STOCKSHIFT_CONSOLE_USERS": ("console_users", _path_or_none),
    "STOCKSHIFT_CONSOLE_SECRET": ("console_secret", lambda text: text or None),
    "STOCKSHIFT_CONSOLE_SECURE_COOKIES": ("console_secure_cookies", _flag),
    "STOCKSHIFT_CONSOLE_TRUSTED_PROXIES": ("console_trusted_proxies", comma_list),
    "STOCKSHIFT_CONSOLE_KEY_ID": ("console_key_id", lambda text: text or None),
    "STOCKSHIFT_SCHEMA_REGISTRY_URL": ("schema_registry_url", lambda text: text or None),
    "STOCKSHIFT_OUTPUT_FORMAT": ("output_format", _output_format),
}


_SECRETS = frozenset(
    {
        "STOCKSHIFT_CONTROL_KEYS",
        "STOCKSHIFT_REDIS_URL",
        "STOCKSHIFT_WMS_TOKEN",
        "STOCKSHIFT_CONSOLE_SECRET",
    }
)
# STOCKSHIFT_* variables read elsewhere (the CLI, the test harness): known, not settings.
_OTHER_VARIABLES = frozenset(
    {
        "STOCKSHIFT_LOG_LEVEL",
        "STOCKSHIFT_ADDRESSES",
        "STOCKSHIFT_PROCESS_ID",
        "STOCKSHIFT_CONTROL_KEY_ID",
    }
)
_OTHER_PREFIXES = (KAFKA_ENV_PREFIX, "STOCKSHIFT_TEST_")


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment, checked once (the same for `run`, `check-config` and
    the image); explicit (flag) values given as overrides win. A misspelled STOCKSHIFT_*
    variable or a value out of range is an error naming it."""
    env = os.environ if env is None else env
    _reject_unknown_variables(env)
    values: dict[str, object] = {}
    for variable, (name, read) in _ENV.items():
        if variable in env:
            try:
                values[name] = read(env[variable])
            except ValueError as exc:
                # Never echo a secret's value or the parser's words about it, unless the
                # words only describe the format (FormatHint).
                secret = variable in _SECRETS and not isinstance(exc, FormatHint)
                why = exc.__class__.__name__ if secret else str(exc)
                raise ConfigError(f"{variable}: cannot be read ({why})") from None
    values["kafka_config"] = kafka_config_from_env(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)  # type: ignore[arg-type]
    check_ranges(settings)
    check_formats(settings)
    return settings


def _reject_unknown_variables(env: Mapping[str, str]) -> None:
    known = set(_ENV) | _OTHER_VARIABLES
    for name in env:
        if not name.startswith("STOCKSHIFT_") or name in known or name.startswith(_OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{name}: not a stockshift setting{hint}")


# Setting -> (lowest, highest, the lowest itself allowed); None: no bound on that side.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "workers": (1, 1024, True),
    "partitions": (1, 10_000, True),
    "replication_factor": (1, 100, True),
    "metrics_port": (1, 65_535, True),
    "shadow_share": (0.0, 1.0, True),
    "control_max_skew_s": (0.0, 86_400.0, False),
    "snapshot_interval_s": (0.0, 86_400.0, False),
    "backup_interval_s": (0.0, 30 * 86_400.0, True),
    "merge_grace_ms": (0.0, 60_000.0, True),
    "idle_eviction_s": (0.0, None, True),
    "broker_wait_s": (0.0, None, True),
    "max_skus": (1, None, True),
    "wms_timeout_s": (0.0, 600.0, False),
    "execute_concurrency": (1, 1024, True),
    "execute_max_attempts": (1, 1000, True),
    "execute_poll_interval_s": (0.0, 3600.0, False),
    "execute_escalate_open_s": (0.0, None, True),
    "console_port": (1, 65_535, True),
}


def check_formats(settings: Settings) -> None:
    """Settings whose shape, not size, matters: URLs the services call, and what Avro
    output needs."""
    for variable, url in (
        ("STOCKSHIFT_WMS_URL", settings.wms_url),
        ("STOCKSHIFT_SCHEMA_REGISTRY_URL", settings.schema_registry_url),
    ):
        if url is not None and not _url_of(url, ("http", "https")):
            # Not echoed: a URL may carry credentials.
            raise ConfigError(f"{variable}: must be an http:// or https:// URL with a host")
    if settings.redis_url is not None and not _url_of(settings.redis_url, _REDIS_SCHEMES):
        raise ConfigError(
            "STOCKSHIFT_REDIS_URL: must be a redis://, rediss:// or unix:// URL with a host "
            "or socket path"
        )
    _check_brokers(settings.brokers)
    _check_topic_names(settings)
    _check_proxies(settings.console_trusted_proxies)
    if settings.console_auth == "headers" and not settings.console_trusted_proxies:
        raise ConfigError(
            "STOCKSHIFT_CONSOLE_AUTH=headers needs STOCKSHIFT_CONSOLE_TRUSTED_PROXIES (the "
            "proxy's address): with none, no one can sign in"
        )
    if settings.output_format == "avro" and not settings.schema_registry_url:
        raise ConfigError(
            "STOCKSHIFT_OUTPUT_FORMAT=avro needs STOCKSHIFT_SCHEMA_REGISTRY_URL (the registry "
            "that holds the proposals' schema)"
        )


def check_ranges(settings: Settings) -> None:
    """Every numeric setting finite and within its range (STOCKSHIFT_WORKERS=0 or a metrics
    port of 99999 used to start and fail later, or not at all; `nan` passes every
    comparison, so it is refused first)."""
    for name, (low, high, inclusive) in _RANGES.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{_variable(name)}: must be a finite number, got {value!r}")
        too_low = low is not None and (value < low if inclusive else value <= low)
        if too_low or (high is not None and value > high):
            lowest = f"{'>=' if inclusive else '>'} {low}"
            bounds = f"{lowest} and <= {high}" if high is not None else lowest
            raise ConfigError(f"{_variable(name)}: must be {bounds}, got {value!r}")


def _variable(setting: str) -> str:
    return next(v for v, (field_name, _) in _ENV.items() if field_name == setting)


_REDIS_SCHEMES = ("redis", "rediss", "unix")
_BROKER = re.compile(r"^(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?$")


def _check_brokers(brokers: tuple[str, ...]) -> None:
    """At least one `host[:port]` (librdkafka's `bootstrap.servers`; a `SASL_SSL://` prefix
    and `[v6]` addresses allowed): a typo otherwise surfaces only as connection retries
    until `STOCKSHIFT_BROKER_WAIT_S` runs out."""
    if not brokers:
        raise ConfigError("STOCKSHIFT_BROKERS: names no broker (expected host:port,...)")
    for broker in brokers:
        match = _BROKER.match(broker)
        port = match.group(1) if match else None
        if match is None or (port is not None and not 0 < int(port) < 65536):
            raise ConfigError(f"STOCKSHIFT_BROKERS: {broker!r} is not host:port (port 1-65535)")


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _check_topic_names(settings: Settings) -> None:
    """Every topic stockshift reads or writes has a name Apache Kafka accepts (letters,
    digits, `.`, `_`, `-`; at most 249): a prefix with a space or `/` used to pass here,
    for the broker to refuse (some Kafka-protocol brokers, Tansu among them, take any name,
    so a deployment could work on one broker and not on the next)."""
    from adapters.topics import ROLES

    for kind in sorted(ROLES):
        name = settings.topic(kind)
        if not _TOPIC.match(name) or name in (".", ".."):
            source = (
                "STOCKSHIFT_TOPIC_NAMES"
                if kind in settings.topic_names
                else "STOCKSHIFT_TOPIC_PREFIX"
            )
            raise ConfigError(
                f"{source}: the {kind} topic would be {name[:60]!r}, not a Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 249)"
            )


def _check_proxies(proxies: tuple[str, ...]) -> None:
    """Addresses or networks only: the console's header sign-in and uvicorn's
    `X-Forwarded-For` both match by address, so a host name would silently trust no one,
    and `*` would let anyone on the network claim any user or dodge the sign-in throttle."""
    for entry in proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"STOCKSHIFT_CONSOLE_TRUSTED_PROXIES: {entry!r} is not an IP address or "
                "network (127.0.0.1, 10.0.0.0/8); names and '*' are not accepted"
            ) from None


def _url_of(text: str, schemes: tuple[str, ...]) -> bool:
    """A URL of one of `schemes` with a host (or, for unix://, a socket path) and, if it
    names a port, a valid one."""
    try:
        parts = urlsplit(text)
        where = parts.path if parts.scheme == "unix" else parts.hostname
        return parts.scheme in schemes and bool(where) and parts.port != 0
    except ValueError:  # a port that is not a number, or out of range
        return False


def control_topic(settings: Settings) -> str:
    return settings.topic(CONTROL_KIND)
