"""Settings, read from the environment once, in one place (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: The most instances one explain request may carry (413 beyond it).
MAX_INSTANCES = 100
#: The largest request body accepted, in bytes (413 beyond it).
MAX_BODY_BYTES = 1_000_000
#: Under load, how long a batch of concurrent explanations waits to fill, in milliseconds
#: (``explainer.group_runner``); requests that come one at a time never wait.
BATCH_WAIT_MS = 10.0


@dataclass(frozen=True)
class Settings:
    home: Path
    archive_url: str
    store_url: str
    api_keys: Mapping[str, str] = field(default_factory=dict)  # key -> role, from the environment
    max_instances: int = MAX_INSTANCES
    max_body_bytes: int = MAX_BODY_BYTES
    batch_wait_ms: float = BATCH_WAIT_MS
    archive_enabled: bool = True
    #: Archived records older than this many days are pruned by `crm-explain audit prune`.
    retention_days: int | None = None
    #: Origins allowed to embed the pages in an iframe (frame-ancestors).
    embed_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("CRM_EXPLAIN_HOME") or Path.home() / ".crm-explain").expanduser()
        settings = cls(
            home=home,
            archive_url=env.get("CRM_EXPLAIN_ARCHIVE_URL") or f"sqlite:///{home / 'archive.db'}",
            store_url=env.get("CRM_EXPLAIN_STORE_URL") or str(home / "models"),
            api_keys=parse_api_keys(env.get("CRM_EXPLAIN_API_KEYS", "")),
            retention_days=_positive_int(env, "CRM_EXPLAIN_RETENTION_DAYS"),
            batch_wait_ms=_milliseconds(env, "CRM_EXPLAIN_BATCH_WAIT_MS", BATCH_WAIT_MS),
            embed_origins=tuple(
                o.strip() for o in env.get("CRM_EXPLAIN_EMBED_ORIGINS", "").split(",") if o.strip()
            ),
        )
        return replace(settings, **overrides)


def parse_api_keys(text: str) -> dict[str, str]:
    """``role:key,role:key`` -> ``{key: role}``."""
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        role, sep, key = pair.partition(":")
        if not sep or not key:
            raise ValueError(f"CRM_EXPLAIN_API_KEYS entry {pair!r} is not 'role:key'")
        keys[key] = role
    return keys


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive whole number of days, not {raw!r}")
    return int(raw)


def _milliseconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1000:  # also refuses nan
        raise ValueError(f"{name} must be a number of milliseconds from 0 to 1000, not {raw!r}")
    return value
