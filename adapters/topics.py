"""What each topic is for, and the settings its role needs.

| topic | role | retention | cleanup |
| --- | --- | --- | --- |
| pos, inventory, shipments | inputs, owned by their producers | 7 days | delete |
| forecasts | input: demand forecasts, republished each planning period | 30 days | delete |
| proposals | what execution services act on; replays dedupe by proposal_id | 30 days | delete |
| decisions | the audit trail: every decision with its evidence | forever | delete |
| dlq | dead letters, kept to be fixed and replayed | 30 days | delete |
| anomalies | signal-health findings | 30 days | delete |
| exceptions | execution cases escalated to people (`stockshift execute`) | 90 days | delete |
| control | signed governance commands; start-up rebuilds every nonce ever used | forever | delete |

Proposals are not compacted: their key is the SKU, and one SKU has many proposals, each of
which must stay readable until it expires. Retention and names can be overridden per topic
(STOCKSHIFT_TOPIC_RETENTION_MS, STOCKSHIFT_TOPIC_NAMES); the replication factor applies to
all (STOCKSHIFT_REPLICATION_FACTOR).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from adapters.settings import Settings

DAY_MS: Final = 86_400_000
FOREVER: Final = -1


@dataclass(frozen=True, slots=True)
class TopicRole:
    kind: str
    retention_ms: int
    single_partition: bool = False
    broker_time: bool = False

    def config(self, retention_ms: int | None = None) -> dict[str, str]:
        """The topic configuration stockshift creates the topic with."""
        config = {
            "retention.ms": str(self.retention_ms if retention_ms is None else retention_ms),
            "cleanup.policy": "delete",
        }
        if self.broker_time:
            config["message.timestamp.type"] = "LogAppendTime"
        return config


ROLES: Final = {
    role.kind: role
    for role in (
        TopicRole("pos", 7 * DAY_MS),
        TopicRole("inventory", 7 * DAY_MS),
        TopicRole("shipments", 7 * DAY_MS),
        # A forecast is published once a period (a week, say): a fresh start must still
        # find the latest one.
        TopicRole("forecasts", 30 * DAY_MS),
        TopicRole("proposals", 30 * DAY_MS),
        TopicRole("decisions", FOREVER),
        TopicRole("dlq", 30 * DAY_MS),
        TopicRole("anomalies", 30 * DAY_MS),
        TopicRole("exceptions", 90 * DAY_MS),
        TopicRole("control", FOREVER, single_partition=True, broker_time=True),
    )
}


def parse_assignments(text: str, what: str) -> dict[str, str]:
    """`kind=value[,kind=value]`, every kind a known topic role."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"{what}: expected kind=value pairs")
        if kind not in ROLES:
            raise ValueError(f"{what}: unknown topic {kind!r}; one of {sorted(ROLES)}")
        found[kind] = value
    return found


def retention_overrides(text: str) -> dict[str, int]:
    values = parse_assignments(text, "STOCKSHIFT_TOPIC_RETENTION_MS")
    try:
        parsed = {kind: int(value) for kind, value in values.items()}
    except ValueError:
        raise ValueError("STOCKSHIFT_TOPIC_RETENTION_MS: retention must be whole ms") from None
    if any(ms < FOREVER or ms == 0 for ms in parsed.values()):
        raise ValueError("STOCKSHIFT_TOPIC_RETENTION_MS: -1 (forever) or a positive number")
    return parsed


@dataclass(frozen=True, slots=True)
class Mismatch:
    topic: str
    setting: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.found}, expected {self.expected}"


def mismatches(
    wanted: Mapping[str, tuple[int | None, Mapping[str, str]]],
    existing: Mapping[str, tuple[int, Mapping[str, Any]]],
) -> list[Mismatch]:
    """What differs between the topics as stockshift would create them (partitions, None
    when any count will do; configuration) and as the broker has them; a missing topic is
    not a mismatch (`run` creates it)."""
    found: list[Mismatch] = []
    for topic, (partitions, config) in wanted.items():
        if topic not in existing:
            continue
        have_partitions, have_config = existing[topic]
        if partitions is not None and have_partitions != partitions:
            found.append(Mismatch(topic, "partitions", str(partitions), str(have_partitions)))
        for key, value in config.items():
            have = have_config.get(key)
            if have is not None and str(have) != value:
                found.append(Mismatch(topic, key, value, str(have)))
    return found


def kinds(topics: Iterable[str]) -> list[str]:
    return [k for k in ROLES if k in set(topics)]


def topic_specs(settings: Settings) -> dict[str, tuple[int | None, dict[str, str]]]:
    """Each topic's name, its partition count (None: the configured default), and the
    configuration its role needs."""
    return {
        settings.topic(kind): (
            1 if role.single_partition else None,
            role.config(settings.topic_retention_ms.get(kind)),
        )
        for kind, role in ROLES.items()
    }
