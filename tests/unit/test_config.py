from __future__ import annotations

from pathlib import Path

import pytest

from adapters.configfiles import load_network, load_policies, load_policy, read_sku_overrides
from state.config import ConfigError, network_from_dict, policy_from_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_load() -> None:
    network = load_network(CONFIGS / "network.toml")
    assert ("STORE-A", "OUTLET-1") in network.lanes
    assert ("OUTLET-1", "STORE-A") not in network.lanes  # one-way lane
    assert ("STORE-B", "STORE-A") in network.lanes  # bidirectional
    assert network.sku_params("SKU-CASEPACK").pack_size == 6
    assert network.sku_params("SKU-FRESH").shelf_life_hours == 120.0
    assert network.sku_params("SKU-CASEPACK").shelf_life_hours is None
    assert network.sku_params("anything").unit_cost == 12.0
    assert load_policy(CONFIGS / "policies" / "default.toml").version
    versions = load_policies(CONFIGS / "policies")
    assert len(versions) >= 2 and all(v == p.version for v, p in versions.items())


SITES = [{"id": "A"}, {"id": "B"}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sites": [{"id": "A"}]}, "at least two sites"),
        (
            {"sites": SITES, "sku_defaults": {"shelf_life_hours": 0}},
            "shelf_life_hours: must be > 0",
        ),
        ({"sites": [{"id": "A"}, {"id": "A"}]}, "duplicate site id"),
        (
            {"sites": SITES, "lanes": [{"from": "A", "to": "Z", "lead_hours": 1}]},
            "unknown site 'Z'",
        ),
        (
            {"sites": SITES, "lanes": [{"from": "A", "to": "B"}]},
            "missing required field `lead_hours`",
        ),
        ({"sites": SITES, "lanes": [{"from": "A", "to": "B", "lead_hours": -1}]}, "must be >= 0"),
        ({"sites": SITES, "sku_defaults": {"pack_size": 0}}, "pack_size"),
        ({"sites": SITES, "sku_defaults": {"colour": 1}}, "unknown field"),
        (
            {"sites": [{"id": "A", "demand_index": 5e-324}, {"id": "B"}]},
            "demand_index: must be within 0.001",
        ),
        (
            {"sites": [{"id": "A", "demand_index": 2e6}, {"id": "B"}]},
            "demand_index: must be within",
        ),
    ],
)
def test_bad_network_is_rejected_with_a_clear_message(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        network_from_dict(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "missing required field `version`"),
        ({"version": "1", "servce_level_z": 2}, "unknown field"),
        ({"version": "1", "cover_hours": "long"}, "finite number"),
        ({"version": "1", "demand_window_minutes": 0}, "integer >= 1"),
        (
            {"version": "1", "demand_prior_by_spread": "yes"},
            "demand_prior_by_spread: expected true",
        ),
        ({"version": "1", "forecast_error_cv": 1e-200}, "forecast_error_cv: must be within"),
        ({"version": "1", "forecast_error_cv": 1e300}, "forecast_error_cv: must be within"),
    ],
)
def test_bad_policy_is_rejected(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_from_dict(raw)


def test_settings_from_env_read_types_and_reject_bad_values_by_name() -> None:
    from adapters.settings import from_env

    settings = from_env(
        {"STOCKSHIFT_BROKERS": "a:1,b:2", "STOCKSHIFT_WORKERS": "3", "STOCKSHIFT_RECOVERY_DIR": "",
         "STOCKSHIFT_KAFKA_SASL_USERNAME": "u"},
        topic_prefix="x.",
    )  # fmt: skip
    assert settings.brokers == ("a:1", "b:2") and settings.workers == 3
    assert settings.recovery_dir is None and settings.topic_prefix == "x."
    assert settings.kafka_config == {"sasl.username": "u"}
    with pytest.raises(ConfigError, match="STOCKSHIFT_WORKERS"):
        from_env({"STOCKSHIFT_WORKERS": "many"})
    with pytest.raises(ConfigError, match="STOCKSHIFT_CONTROL_KEYS") as caught:
        from_env({"STOCKSHIFT_CONTROL_KEYS": "ops=short"})
    assert "short" not in str(caught.value)
    assert "look like id=secret" in str(caught.value)  # the format, never the value


@pytest.mark.parametrize(
    ("where", "typo", "meant"),
    [
        ("site", "storage_capcity", "storage_capacity"),
        ("lane", "capacty_per_day", "capacity_per_day"),
        ("top", "sku_defualts", "sku_defaults"),
        ("limits", "max_inbound_per_sku_sit", "max_inbound_per_sku_site"),
    ],
)
def test_a_misspelled_network_key_fails_naming_it_and_what_it_meant(
    where: str, typo: str, meant: str
) -> None:
    """Left alone, a misspelled limit silently meant "unlimited"."""
    raw: dict = {
        "sites": [{"id": "A"}, {"id": "B"}],
        "lanes": [{"from": "A", "to": "B", "lead_hours": 6}],
    }
    if where == "site":
        raw["sites"][0][typo] = 100
    elif where == "lane":
        raw["lanes"][0][typo] = 10
    elif where == "top":
        raw[typo] = {}
    else:
        raw["limits"] = {typo: 3}
    with pytest.raises(ConfigError, match=rf"'{typo}' \(did you mean '{meant}'\?\)"):
        network_from_dict(raw)


def test_a_misspelled_policy_key_fails_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'min_net_benefitt' \(did you mean 'min_net_benefit'"):
        policy_from_dict({"version": "v", "min_net_benefitt": 1})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STOCKSHIFT_WORKERS", "0"),
        ("STOCKSHIFT_PARTITIONS", "0"),
        ("STOCKSHIFT_METRICS_PORT", "99999"),
        ("STOCKSHIFT_SHADOW_SHARE", "5"),
        ("STOCKSHIFT_CONTROL_MAX_SKEW_S", "0"),
        ("STOCKSHIFT_SNAPSHOT_INTERVAL_S", "-1"),
        ("STOCKSHIFT_SNAPSHOT_INTERVAL_S", "1e300"),  # past what an epoch interval can hold
        ("STOCKSHIFT_BACKUP_INTERVAL_S", "1e300"),
        ("STOCKSHIFT_MERGE_GRACE_MS", "-5"),
        ("STOCKSHIFT_MAX_SKUS", "0"),
        ("STOCKSHIFT_IDLE_EVICTION_S", "-1"),
        ("STOCKSHIFT_WMS_TIMEOUT_S", "0"),
        ("STOCKSHIFT_EXECUTE_CONCURRENCY", "0"),
        ("STOCKSHIFT_EXECUTE_MAX_ATTEMPTS", "0"),
        ("STOCKSHIFT_EXECUTE_POLL_INTERVAL_S", "0"),
        ("STOCKSHIFT_EXECUTE_ESCALATE_OPEN_S", "-1"),
        ("STOCKSHIFT_CONSOLE_PORT", "70000"),
    ],
)
def test_an_environment_variable_out_of_range_fails_naming_it(variable: str, value: str) -> None:
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=rf"^{variable}: must be"):
        from_env({variable: value})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "variable",
    ["STOCKSHIFT_SNAPSHOT_INTERVAL_S", "STOCKSHIFT_IDLE_EVICTION_S", "STOCKSHIFT_SHADOW_SHARE"],
)
def test_a_setting_that_is_not_a_finite_number_fails_naming_it(variable: str, value: str) -> None:
    """`nan` passes every range comparison; before, it started the flow."""
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=rf"^{variable}: must be a finite number"):
        from_env({variable: value})


@pytest.mark.parametrize(
    "url", ["ftp://user:s3cret@wms", "wms.internal:8080", "http://:8080", "http://wms:99999"]
)
@pytest.mark.parametrize("variable", ["STOCKSHIFT_WMS_URL", "STOCKSHIFT_SCHEMA_REGISTRY_URL"])
def test_a_service_url_that_is_not_http_fails_at_start_without_echoing_it(
    variable: str, url: str
) -> None:
    """Before, `stockshift execute` started with any text and failed every order later."""
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=rf"^{variable}: must be an http") as caught:
        from_env({variable: url})
    assert url not in str(caught.value) and "s3cret" not in str(caught.value)  # credentials
    assert from_env({variable: "https://user:pw@wms.internal:8443/api"})


@pytest.mark.parametrize("url", ["localhost:6379", "http://redis:6379", "redis://", "unix://"])
def test_a_redis_url_that_is_not_one_fails_at_start_without_echoing_it(url: str) -> None:
    """Before, `stockshift run` started and failed at its first write to Redis."""
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=r"^STOCKSHIFT_REDIS_URL: must be a redis://"):
        from_env({"STOCKSHIFT_REDIS_URL": url})
    for good in ("redis://:pw@127.0.0.1:6379/0", "rediss://r.internal", "unix:///run/r.sock"):
        assert from_env({"STOCKSHIFT_REDIS_URL": good}).redis_url == good


@pytest.mark.parametrize("brokers", ["", " , ", "kafka:99999", "kafka:0", "kafka 1:9092", "a:1:2"])
def test_brokers_that_are_not_host_port_fail_at_start_naming_the_entry(brokers: str) -> None:
    """Before, an empty list or a mistyped port surfaced only as connection retries until
    STOCKSHIFT_BROKER_WAIT_S ran out (five minutes by default)."""
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=r"^STOCKSHIFT_BROKERS: "):
        from_env({"STOCKSHIFT_BROKERS": brokers})
    good = "kafka-1:9092, SASL_SSL://kafka-2.example.com:9093,[::1]:9092,localhost"
    assert from_env({"STOCKSHIFT_BROKERS": good}).brokers == (
        "kafka-1:9092",
        "SASL_SSL://kafka-2.example.com:9093",
        "[::1]:9092",
        "localhost",
    )


@pytest.mark.parametrize("proxies", ["*", "oauth2-proxy.local", "10.0.0.0/33"])
def test_trusted_proxies_are_addresses_or_networks(proxies: str) -> None:
    """Both the header sign-in and uvicorn match by address: a name trusted no one, and
    `*` would let anyone claim any user."""
    from adapters.console_auth import is_trusted
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=r"^STOCKSHIFT_CONSOLE_TRUSTED_PROXIES: "):
        from_env({"STOCKSHIFT_CONSOLE_TRUSTED_PROXIES": proxies})
    trusted = from_env({"STOCKSHIFT_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    proxies_ok = trusted.console_trusted_proxies
    assert is_trusted("10.20.30.40", proxies_ok) and is_trusted("0::1", proxies_ok)
    assert not is_trusted("11.0.0.1", proxies_ok) and not is_trusted("proxy", proxies_ok)
    with pytest.raises(ConfigError, match=r"^STOCKSHIFT_CONSOLE_AUTH=headers needs"):
        from_env({"STOCKSHIFT_CONSOLE_TRUSTED_PROXIES": "", "STOCKSHIFT_CONSOLE_AUTH": "headers"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STOCKSHIFT_TOPIC_PREFIX", "stock shift."),
        ("STOCKSHIFT_TOPIC_PREFIX", "team/stockshift."),
        ("STOCKSHIFT_TOPIC_PREFIX", "x" * 250),
        ("STOCKSHIFT_TOPIC_NAMES", "pos=sales feed"),
        ("STOCKSHIFT_TOPIC_NAMES", "dlq=.."),
    ],
)
def test_a_topic_name_kafka_would_refuse_fails_at_start(variable: str, value: str) -> None:
    """Before, it passed the check for Apache Kafka to refuse (Tansu takes any name)."""
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=rf"^{variable}: the \w+ topic would be"):
        from_env({variable: value})
    ok = from_env({"STOCKSHIFT_TOPIC_PREFIX": "", "STOCKSHIFT_TOPIC_NAMES": "pos=POS_sales-v2.eu"})
    assert ok.topic("pos") == "POS_sales-v2.eu" and ok.topic("dlq") == "dlq"


def test_a_misspelled_environment_variable_fails_with_what_it_meant() -> None:
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=r"STOCKSHIFT_WORKER: .*did you mean STOCKSHIFT_WORKERS"):
        from_env({"STOCKSHIFT_WORKER": "2"})
    settings = from_env({"STOCKSHIFT_KAFKA_SASL_USERNAME": "u", "STOCKSHIFT_TEST_BROKERS": "x"})
    assert settings.kafka_config["sasl.username"] == "u"


def test_avro_output_needs_a_registry() -> None:
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match="STOCKSHIFT_SCHEMA_REGISTRY_URL"):
        from_env({"STOCKSHIFT_OUTPUT_FORMAT": "avro"})
    settings = from_env(
        {"STOCKSHIFT_OUTPUT_FORMAT": "avro", "STOCKSHIFT_SCHEMA_REGISTRY_URL": "http://r:8081"}
    )
    assert settings.output_format == "avro"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STOCKSHIFT_CONSOLE_AUTH", "basic", "password or headers"),
        ("STOCKSHIFT_CONSOLE_SECURE_COOKIES", "maybe", "true or false"),
        ("STOCKSHIFT_OUTPUT_FORMAT", "protobuf", "json or avro"),
    ],
)
def test_a_choice_outside_its_options_fails_naming_them(
    variable: str, value: str, expected: str
) -> None:
    from adapters.settings import from_env

    with pytest.raises(ConfigError, match=f"^{variable}: cannot be read .expected {expected}"):
        from_env({variable: value})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("S1,10\n,12\n", "line 3: `sku` must be 1-64 characters"),
        (f"{'K' * 65},10\n", "line 2: `sku` must be 1-64 characters"),
        ("S1,10\nS2,11\nS1,12\n", "line 4: SKU 'S1' is listed twice"),
    ],
)
def test_an_override_file_with_a_missing_or_repeated_sku_fails_naming_the_line(
    tmp_path: Path, rows: str, message: str
) -> None:
    path = tmp_path / "sku_overrides.csv"
    path.write_text("sku,unit_cost\n" + rows)
    with pytest.raises(ConfigError, match=message):
        read_sku_overrides(path)
    path.write_text("sku,unit_cost\nS1,10\nS2,11\n")
    assert read_sku_overrides(path) == {"S1": {"unit_cost": 10}, "S2": {"unit_cost": 11}}
