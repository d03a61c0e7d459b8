"""Canonical JSON and the record hash: the byte-exact rules an offline verifier repeats.

Canonical JSON is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` encoded as UTF-8. Floats are written by
``float.__repr__`` (the shortest text that reads back to the same float), so a
value survives ``json.loads`` -> canonical JSON unchanged. NaN and Infinity are refused.

A record's ``hash`` is the SHA-256 (hex) of the canonical JSON of its public fields
(every public field except ``hash`` itself; ``prev_hash`` and ``payload_sha256`` included).
``payload_sha256`` is the SHA-256 (hex) of the canonical JSON of the plaintext payload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from explainer.exceptions import ValidationError

#: ``prev_hash`` of the first record of an archive.
GENESIS_HASH = "0" * 64

#: The fields a record's hash covers, in the order they are documented.
HASHED_FIELDS = (
    "id",
    "seq",
    "kind",
    "created_at",
    "model",
    "settings",
    "subject",
    "request_id",
    "details",
    "payload_sha256",
    "prev_hash",
)

CANONICAL_JSON_RULE = (
    'json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, '
    "allow_nan=False).encode('utf-8'); floats as repr"
)
HASH_RULE = "sha256(canonical_json({field: record[field] for field in hashed_fields})).hexdigest()"


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of a JSON value (see the module docstring)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def normalize(value: Any, field: str) -> Any:
    """``value`` as it reads back from its canonical JSON (tuples -> lists, keys -> str).

    Raises ValidationError naming ``field`` when the value is not plain JSON
    (NaN, Infinity, numpy integers, objects, mixed key types...).
    """
    try:
        return json.loads(canonical_json(value))
    except (TypeError, ValueError) as exc:
        raise ValidationError.for_field(field, f"must be plain JSON ({exc})") from exc


def canonical_bytes(value: Any, field: str) -> bytes:
    """``canonical_json(normalize(value, field))``, encoded once when every key is a string
    (then normalising cannot change the text: tuples and lists, floats and their repr read
    back alike). Other keys sort differently once they are strings, so those values go the
    long way. Every explanation's payload comes here: encoding, decoding and encoding it again
    took a third of the archive's Python time in a loaded API worker."""
    try:
        simple = _only_string_keys(value)
    except RecursionError:  # nested deeper than the check goes, or circular: the long way says
        simple = False
    if not simple:
        return canonical_json(normalize(value, field))
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError.for_field(field, f"must be plain JSON ({exc})") from exc


#: The types JSON values are made of; any other (a subclass, a numpy scalar) goes the long way.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _only_string_keys(value: Any) -> bool:
    """Whether ``value`` is built of plain dicts with str keys, lists, tuples and scalars."""
    kind = type(value)
    if kind is dict:
        if not all(type(key) is str for key in value):
            return False
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return kind in _SCALARS
    return all(type(item) in _SCALARS or _only_string_keys(item) for item in items)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash a record must carry, recomputed from its public fields."""
    return sha256_hex(canonical_json({name: record.get(name) for name in HASHED_FIELDS}))
