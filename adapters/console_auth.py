"""Who is using the console: a users file with argon2-hashed passwords, or identity headers
set by an authenticating proxy (SSO) that only trusted addresses may send.

Users file (TOML), one table per user; `sites` lists the sites a planner answers for
(`["*"]`: all):

    [[users]]
    name = "pat"
    role = "planner"            # viewer, planner or admin
    sites = ["STORE-A", "STORE-B"]
    password_hash = "$argon2id$..."   # `stockshift console --hash-password`

With `STOCKSHIFT_CONSOLE_AUTH=headers` the proxy's `X-Auth-Request-User` names the user
(oauth2-proxy's convention); role and sites come from the users file (no password needed
there); a name the file does not list is a viewer.
"""

from __future__ import annotations

import ipaddress
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from state.config import ConfigError, reject_unknown
from state.console import Role, User

USER_HEADER = "x-auth-request-user"
_HASHER = PasswordHasher()
# Verifying against this when the name is unknown costs the same time as a real check, so
# the answer's timing does not tell which names exist.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")


@dataclass(frozen=True, slots=True)
class Account:
    user: User
    password_hash: str | None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def load_users(path: Path | None) -> dict[str, Account]:
    if path is None:
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    accounts: dict[str, Account] = {}
    for i, entry in enumerate(raw.get("users", [])):
        where = f"{path}: users[{i}]"
        reject_unknown(entry, ("name", "role", "sites", "password_hash"), where)
        name, role = entry.get("name"), entry.get("role")
        if not isinstance(name, str) or not name or name in accounts:
            raise ConfigError(f"{where}: name must be a unique, non-empty string")
        if role not in {r.value for r in Role}:
            raise ConfigError(f"{where}: role must be viewer, planner or admin")
        sites = entry.get("sites", [])
        if not isinstance(sites, list) or not all(isinstance(s, str) for s in sites):
            raise ConfigError(f"{where}: sites must be a list of site ids")
        secret = entry.get("password_hash")
        accounts[name] = Account(User(name, Role(role), frozenset(sites)), secret)
    return accounts


def check_password(accounts: Mapping[str, Account], name: str, password: str) -> User | None:
    account = accounts.get(name)
    stored = account.password_hash if account is not None else None
    try:
        _HASHER.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return account.user if account is not None and stored else None


def from_headers(
    accounts: Mapping[str, Account],
    headers: Mapping[str, str],
    client_host: str | None,
    trusted: tuple[str, ...],
) -> User | None:
    """The proxy's user, only when the request comes from a trusted proxy address."""
    if client_host is None or not is_trusted(client_host, trusted):
        return None
    name = headers.get(USER_HEADER, "").strip()
    if not name or len(name) > 128:
        return None
    account = accounts.get(name)
    return account.user if account is not None else User(name, Role.VIEWER, frozenset())


def is_trusted(host: str, trusted: tuple[str, ...]) -> bool:
    """`host` is one of the trusted proxies: an address listed, or within a network listed
    (10.0.0.0/8), as uvicorn reads the same setting for `X-Forwarded-For`. A literal that
    is no address (a test client's name) matches only itself."""
    if host in trusted:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _networks(trusted))


@lru_cache(maxsize=8)
def _networks(
    trusted: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in trusted:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(networks)


# Failed sign-ins allowed in a moving window: per name from one address (guessing one
# account's password), and per address over all names (trying one password on many).
FAILURES_PER_NAME_AND_ADDRESS = parse("10 per 15 minutes")
FAILURES_PER_ADDRESS = parse("100 per 15 minutes")
# Names and addresses longer than this are cut before they become keys.
_MAX_KEY_TEXT = 128


class SignInThrottle:
    """Slows password guessing where it is cheapest to stop: before the argon2 check.
    (The window's reset time is the library's wall-clock reading, so it is compared with
    `time.time()`, not the flow's clock.)

    Failures are counted in Redis (shared by every console process, kept across restarts)
    in a moving window, by the `limits` library; while the name from that address, or the
    address over all names, is past its limit, sign-in is refused with the seconds to wait
    and no password is checked. A success clears that name's failures from that address.
    Counting per name and address, not per name alone, keeps a stranger from locking a
    planner out by failing on purpose; behind one proxy address, the per-address limit is
    shared by everyone (docs/security.md)."""

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        storage = storage_from_string(redis_url, key_prefix=key_prefix)
        self._limiter = MovingWindowRateLimiter(storage)

    def wait_seconds(self, name: str, address: str) -> int:
        """0 when a sign-in may be tried now; else how long until it may."""
        waits = [
            self._wait(item, *keys)
            for item, keys in self._limits(name, address)
            if not self._limiter.test(item, *keys)
        ]
        return max(waits, default=0)

    def failed(self, name: str, address: str) -> None:
        for item, keys in self._limits(name, address):
            self._limiter.hit(item, *keys)

    def succeeded(self, name: str, address: str) -> None:
        item, keys = self._limits(name, address)[0]
        self._limiter.clear(item, *keys)

    def _wait(self, item: RateLimitItem, *keys: str) -> int:
        stats = self._limiter.get_window_stats(item, *keys)
        return max(int(stats.reset_time - time.time()) + 1, 1)

    @staticmethod
    def _limits(name: str, address: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        name, address = name[:_MAX_KEY_TEXT], address[:_MAX_KEY_TEXT]
        return [
            (FAILURES_PER_NAME_AND_ADDRESS, ("name", address, name)),
            (FAILURES_PER_ADDRESS, ("address", address)),
        ]
