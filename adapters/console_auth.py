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

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

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
    if client_host is None or client_host not in trusted:
        return None
    name = headers.get(USER_HEADER, "").strip()
    if not name or len(name) > 128:
        return None
    account = accounts.get(name)
    return account.user if account is not None else User(name, Role.VIEWER, frozenset())
