"""Read the network, SKU overrides and policy files (TOML, CSV) into validated records."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import polars as pl

from operators.parse import MAX_SKU_LEN
from state.config import (
    ConfigError,
    LoadedConfig,
    Network,
    Policy,
    network_from_dict,
    policy_from_dict,
)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def read_sku_overrides(path: Path) -> dict[str, dict[str, Any]]:
    """A CSV with a `sku` column and any of unit_cost, unit_margin, pack_size, min_transfer_qty,
    shelf_life_hours."""
    try:
        frame = pl.read_csv(path, infer_schema_length=10_000)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(f"{path}: not a readable CSV: {exc}") from None
    if "sku" not in frame.columns:
        raise ConfigError(f"{path}: needs a `sku` column")
    overrides: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(frame.iter_rows(named=True), start=2):
        cell = row.pop("sku")
        sku = "" if cell is None else str(cell)
        if not 1 <= len(sku) <= MAX_SKU_LEN:
            raise ConfigError(f"{path}: line {line}: `sku` must be 1-{MAX_SKU_LEN} characters")
        if sku in overrides:  # which row wins would be a guess
            raise ConfigError(f"{path}: line {line}: SKU {sku!r} is listed twice")
        overrides[sku] = {k: v for k, v in row.items() if v is not None}
    return overrides


def load_network(path: str | Path) -> Network:
    path = Path(path)
    raw = _read_toml(path)
    overrides = None
    if "sku_overrides_file" in raw:
        overrides = read_sku_overrides(path.parent / str(raw.pop("sku_overrides_file")))
    return network_from_dict(raw, overrides)


def load_policy(path: str | Path) -> Policy:
    return policy_from_dict(_read_toml(Path(path)))


def load_config(
    network_path: Path,
    policy_path: Path,
    policies_dir: Path | None = None,
    shadow_policy_path: Path | None = None,
) -> LoadedConfig:
    """The one place start-up reads configuration: network, default policy, the versions
    `activate_policy` may switch to, and the shadow policy."""
    policy = load_policy(policy_path)
    policies = (
        load_policies(policies_dir) if policies_dir is not None and policies_dir.is_dir() else {}
    )
    policies.setdefault(policy.version, policy)
    shadow = load_policy(shadow_policy_path) if shadow_policy_path is not None else None
    return LoadedConfig(load_network(network_path), policy, policies, shadow)


def load_policies(folder: str | Path) -> dict[str, Policy]:
    """Every versioned policy file in a folder, by version; versions must be unique."""
    found: dict[str, Policy] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        policy = load_policy(path)
        if policy.version in found:
            raise ConfigError(f"{path}: policy version {policy.version!r} is defined twice")
        found[policy.version] = policy
    return found
