from __future__ import annotations

from pathlib import Path

import pytest

from adapters.configfiles import load_network, load_policies, load_policy
from state.config import ConfigError, network_from_dict, policy_from_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_load() -> None:
    network = load_network(CONFIGS / "network.toml")
    assert ("STORE-A", "OUTLET-1") in network.lanes
    assert ("OUTLET-1", "STORE-A") not in network.lanes  # one-way lane
    assert ("STORE-B", "STORE-A") in network.lanes  # bidirectional
    assert network.sku_params("SKU-CASEPACK").pack_size == 6
    assert network.sku_params("anything").unit_cost == 12.0
    assert load_policy(CONFIGS / "policies" / "default.toml").version
    versions = load_policies(CONFIGS / "policies")
    assert len(versions) >= 2 and all(v == p.version for v, p in versions.items())


SITES = [{"id": "A"}, {"id": "B"}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sites": [{"id": "A"}]}, "at least two sites"),
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
    ],
)
def test_bad_policy_is_rejected(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_from_dict(raw)
