"""Topics as their roles need them: retention, partitions, names."""

from __future__ import annotations

import pytest

from adapters.settings import from_env
from adapters.topics import ROLES, mismatches, topic_specs
from state.config import ConfigError


def test_the_audit_trail_and_the_control_log_are_kept_forever() -> None:
    specs = topic_specs(from_env({}))
    assert specs["stockshift.decisions"][1]["retention.ms"] == "-1"
    partitions, control = specs["stockshift.control"]
    assert partitions == 1 and control["retention.ms"] == "-1"
    assert control["message.timestamp.type"] == "LogAppendTime"
    assert int(specs["stockshift.proposals"][1]["retention.ms"]) >= 7 * 86_400_000
    assert set(ROLES) == {k.removeprefix("stockshift.") for k in specs}


def test_retention_and_names_can_be_overridden_per_topic() -> None:
    settings = from_env(
        {
            "STOCKSHIFT_TOPIC_RETENTION_MS": "decisions=31536000000",
            "STOCKSHIFT_TOPIC_NAMES": "decisions=audit.transfers",
            "STOCKSHIFT_REPLICATION_FACTOR": "3",
        }
    )
    specs = topic_specs(settings)
    assert specs["audit.transfers"][1]["retention.ms"] == "31536000000"
    assert settings.topic("decisions") == "audit.transfers" and settings.replication_factor == 3


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("STOCKSHIFT_TOPIC_RETENTION_MS", "decision=5", "unknown topic 'decision'"),
        ("STOCKSHIFT_TOPIC_RETENTION_MS", "decisions=0", "-1 \\(forever\\) or a positive"),
        ("STOCKSHIFT_TOPIC_NAMES", "decisions", "kind=value"),
        ("STOCKSHIFT_REPLICATION_FACTOR", "0", "must be >= 1"),
    ],
)
def test_a_bad_topic_setting_fails_naming_it(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"{variable}: .*{says}"):
        from_env({variable: value})


def test_mismatches_name_what_differs_and_ignore_missing_topics() -> None:
    wanted = {
        "c": (1, {"retention.ms": "-1", "message.timestamp.type": "LogAppendTime"}),
        "d": (None, {"retention.ms": "-1"}),
        "gone": (None, {"retention.ms": "5"}),
    }
    existing = {
        "c": (3, {"retention.ms": "-1", "message.timestamp.type": "CreateTime"}),
        "d": (12, {"retention.ms": "604800000"}),
    }
    found = [str(m) for m in mismatches(wanted, existing)]
    assert found == [
        "c: partitions is 3, expected 1",
        "c: message.timestamp.type is CreateTime, expected LogAppendTime",
        "d: retention.ms is 604800000, expected -1",
    ]
