"""API keys and roles. Keys are stored only as SHA-256 hashes and compared in constant time.

Roles are ordered: each includes what the ones before it may do.
    crm      explain, read models, contest a decision
    analyst  + importance, comparison, fairness
    auditor  + audit archive, exports, verification, reviews
    admin    + model promotion, erasure of a data subject
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from explainer.exceptions import AuthError, Forbidden, ValidationError

Role = Literal["crm", "analyst", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("crm", "analyst", "auditor", "admin")
KEYS_FILE = "api_keys.json"


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValidationError.for_field("role", f"must be one of {list(ROLES)}, not {role!r}")
    return role


def allows(granted: Role, needed: Role) -> bool:
    return ROLES.index(granted) >= ROLES.index(needed)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    id: str
    role: Role
    sha256: str
    created_at: str


class KeyRing:
    """The keys that may call the service: from CRM_EXPLAIN_API_KEYS, or the home's key file."""

    def __init__(self, keys: list[StoredKey], path: Path | None = None) -> None:
        self._keys = keys
        self._path = path

    @classmethod
    def from_plain(cls, keys: Mapping[str, str]) -> KeyRing:
        """``{key: role}`` as given in the environment."""
        return cls(
            [
                StoredKey(id=f"env-{i}", role=check_role(role), sha256=_digest(key), created_at="")
                for i, (key, role) in enumerate(keys.items())
            ]
        )

    @classmethod
    def load(cls, home: Path) -> KeyRing:
        path = home / KEYS_FILE
        if not path.exists():
            return cls([], path)
        raw = json.loads(path.read_text())
        return cls([StoredKey(**k) for k in raw["keys"]], path)

    @property
    def empty(self) -> bool:
        return not self._keys

    def create(self, role: str) -> tuple[StoredKey, str]:
        """A new key for ``role``; the plain key is returned once and never stored."""
        if self._path is None:
            raise ValidationError.for_field(
                "role", "keys come from CRM_EXPLAIN_API_KEYS here; unset it to manage keys"
            )
        plain = f"ce_{secrets.token_urlsafe(32)}"
        stored = StoredKey(
            id=secrets.token_hex(4),
            role=check_role(role),
            sha256=_digest(plain),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._keys.append(stored)
        self._save()
        return stored, plain

    def authenticate(self, presented: str | None) -> StoredKey:
        if not presented:
            raise AuthError("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
        digest = _digest(presented)
        found = None
        for key in self._keys:  # look at every key: the time taken does not depend on a match
            if hmac.compare_digest(key.sha256, digest):
                found = key
        if found is None:
            raise AuthError("the API key is not valid")
        return found

    def authorize(self, presented: str | None, needed: Role) -> StoredKey:
        key = self.authenticate(presented)
        if not allows(key.role, needed):
            raise Forbidden(f"this needs the {needed!r} role; the key has {key.role!r}")
        return key

    def _save(self) -> None:
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [k.__dict__ for k in self._keys]}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self._path)
