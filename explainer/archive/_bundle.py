"""The audit bundle: a signed zip an auditor verifies offline with nothing but the zip.

Files::

    explanations.jsonl           one record per line, archive (seq) order: the public record
                                 + "payload" (null when erased or when the event has none),
                                 each line canonical JSON
    model_cards/<name>@<version>.json   the model cards handed to the export
    manifest.json                see below (UTF-8 JSON)
    manifest.sig                 the raw 64-byte Ed25519 signature over manifest.json's bytes
    public_key.pem               the Ed25519 public key (SubjectPublicKeyInfo PEM)

manifest.json: ``format``, ``created_at``, ``filter`` {model, since, until}, ``count``,
``first_seq``, ``last_seq``, ``chain_head`` {seq, hash} of the whole archive at export,
``records`` [[seq, id, hash, payload_included], ...] in file order (so a filtered export still
shows every dropped, added or reordered record), ``files`` {path: sha256} of every other file
but the signature and key, ``models`` [{name, version, sha256}], ``signing_key``
{algorithm, fingerprint = sha256 of the raw 32-byte public key}, and the ``hashing`` rules.

Check by hand: ``openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin
-in manifest.json -sigfile manifest.sig``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import ColumnElement, Connection, select

from explainer.exceptions import ValidationError

from ._canonical import CANONICAL_JSON_RULE, HASH_RULE, HASHED_FIELDS, canonical_json, record_hash
from ._canonical import sha256_hex as _sha256
from ._chain import key_subject_of, load_keys, read_record
from ._schema import head, records
from ._secrets import Secrets, public_key_fingerprint
from ._types import BadRecord, Record, VerifyReport, bad

FORMAT = "crm-explain-audit-bundle/1"
RECORDS_FILE = "explanations.jsonl"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
PUBLIC_KEY_FILE = "public_key.pem"
_CARD_KEY = re.compile(r"[0-9A-Za-z_.-][0-9A-Za-z_.@-]{0,200}")
_BATCH = 500


# --- export ----------------------------------------------------------------------------


def write_bundle(
    conn: Connection,
    out: IO[bytes],
    *,
    secrets: Secrets,
    conditions: list[ColumnElement[bool]],
    filter_desc: dict[str, Any],
    model_cards: Mapping[str, Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """Write the bundle of the records matching ``conditions`` (one read snapshot)."""
    cards = {_card_path(key): _card_bytes(key, card) for key, card in model_cards.items()}
    head_seq, head_hash = conn.execute(select(head.c.seq, head.c.hash)).one()
    listed: list[list[Any]] = []
    models: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        digest = hashlib.sha256()
        with bundle.open(RECORDS_FILE, "w", force_zip64=True) as handle:
            for record in _records(conn, conditions):
                line = canonical_json(record) + b"\n"
                handle.write(line)
                digest.update(line)
                listed.append(
                    [record["seq"], record["id"], record["hash"], record["payload"] is not None]
                )
                if record["model"] is not None:
                    models[canonical_json(record["model"]).decode("utf-8")] = record["model"]
        files = {RECORDS_FILE: digest.hexdigest()}
        for path, data in cards.items():
            bundle.writestr(path, data)
            files[path] = _sha256(data)
        manifest = {
            "format": FORMAT,
            "created_at": now,
            "filter": filter_desc,
            "count": len(listed),
            "first_seq": listed[0][0] if listed else None,
            "last_seq": listed[-1][0] if listed else None,
            "chain_head": {"seq": int(head_seq), "hash": str(head_hash)},
            "records": listed,
            "files": files,
            "models": [models[key] for key in sorted(models)],
            "signing_key": {
                "algorithm": "Ed25519",
                "fingerprint": secrets.public_key_fingerprint(),
            },
            "hashing": {
                "canonical_json": CANONICAL_JSON_RULE,
                "hash": HASH_RULE,
                "hashed_fields": list(HASHED_FIELDS),
                "payload_sha256": "sha256(canonical_json(payload)).hexdigest()",
            },
        }
        manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()
        bundle.writestr(MANIFEST_FILE, manifest_bytes)
        bundle.writestr(SIGNATURE_FILE, secrets.signing_key.sign(manifest_bytes))
        bundle.writestr(PUBLIC_KEY_FILE, secrets.public_key_pem())
    return manifest


def _records(conn: Connection, conditions: list[ColumnElement[bool]]) -> Iterator[Record]:
    after: int | None = None
    while True:
        query = select(records).where(*conditions).order_by(records.c.seq).limit(_BATCH)
        if after is not None:
            query = query.where(records.c.seq > after)
        rows = conn.execute(query).all()
        if not rows:
            return
        keys = load_keys(conn, {key_subject_of(row) for row in rows if row.payload is not None})
        for row in rows:
            record = read_record(row, keys)  # IntegrityError: never sign a damaged record
            del record["erased"]
            yield record
        after = int(rows[-1].seq)


def _card_path(key: str) -> str:
    if not isinstance(key, str) or not _CARD_KEY.fullmatch(key):
        raise ValidationError.for_field(
            "model_cards", f"key {key!r} must look like 'name@version' ([0-9A-Za-z_.@-])"
        )
    return f"model_cards/{key}.json"


def _card_bytes(key: str, card: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(dict(card), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError.for_field(
            f"model_cards[{key}]", f"must be plain JSON ({exc})"
        ) from exc
    return (text + "\n").encode("utf-8")


# --- offline verification ------------------------------------------------------------------


def verify_bundle(
    source: str | os.PathLike[str] | BinaryIO, *, expected_public_key: str | None = None
) -> VerifyReport:
    """Verify a bundle with nothing but the zip: signature, file digests, every record's hash
    and payload digest, and order and completeness against the manifest.

    ``expected_public_key`` is the fingerprint (sha256 hex of the raw Ed25519 public key, see
    ``Archive.public_key_fingerprint``) the signer must have; without it, the bundle's own key
    is trusted, which catches edits but not a bundle re-signed whole with another key.
    """
    try:
        with zipfile.ZipFile(source) as bundle:  # a path, or a seekable binary file
            return _verify_zip(bundle, expected_public_key)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return _failed(None, bad(None, None, f"the bundle is not a readable zip file: {exc}"))


def _failed(
    manifest: Mapping[str, Any] | None, first_bad: BadRecord, records: int = 0
) -> VerifyReport:
    return VerifyReport(False, records, _head_of(manifest), first_bad)


def _head_of(manifest: Mapping[str, Any] | None) -> str | None:
    try:
        return None if manifest is None else str(manifest["chain_head"]["hash"])
    except (KeyError, TypeError):
        return None


def _verify_zip(bundle: zipfile.ZipFile, expected_public_key: str | None) -> VerifyReport:
    names = set(bundle.namelist())
    for required in (MANIFEST_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE, RECORDS_FILE):
        if required not in names:
            return _failed(None, bad(None, None, f"{required} is missing from the bundle"))
    manifest, problem = _trusted_manifest(bundle, expected_public_key)
    if manifest is None:
        return _failed(None, bad(None, None, problem or "manifest.json is unreadable"))
    checked = _check_records(bundle, manifest)
    if checked.first_bad is not None:
        return _failed(manifest, checked.first_bad, checked.count)
    file_problem = _check_files(bundle, manifest, names)
    if file_problem is not None:
        return _failed(manifest, bad(None, None, file_problem), checked.count)
    return VerifyReport(True, checked.count, _head_of(manifest), None)


def _trusted_manifest(
    bundle: zipfile.ZipFile, expected_public_key: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    manifest_bytes = bundle.read(MANIFEST_FILE)
    try:
        key = serialization.load_pem_public_key(bundle.read(PUBLIC_KEY_FILE))
    except ValueError:
        return None, "public_key.pem is not a PEM public key"
    if not isinstance(key, Ed25519PublicKey):
        return None, "public_key.pem is not an Ed25519 public key"
    fingerprint = public_key_fingerprint(key)
    if expected_public_key is not None and fingerprint != expected_public_key.lower():
        return None, f"the bundle is signed by an unexpected key (fingerprint {fingerprint})"
    try:
        key.verify(bundle.read(SIGNATURE_FILE), manifest_bytes)
    except InvalidSignature:
        return None, "manifest.sig does not verify: manifest.json or the signature was changed"
    try:
        manifest = json.loads(manifest_bytes)
        signed_by = manifest["signing_key"]["fingerprint"]
    except (ValueError, KeyError, TypeError):
        return None, "manifest.json is not a crm-explain manifest"
    if signed_by != fingerprint:
        return None, "public_key.pem and manifest.sig were swapped: the manifest names another key"
    if manifest.get("format") != FORMAT:
        return None, f"unknown bundle format {manifest.get('format')!r}"
    return manifest, None


@dataclass
class _Checked:
    count: int
    first_bad: BadRecord | None


@dataclass(frozen=True)
class _Listed:
    seq: int
    id: str
    hash: str
    payload_included: bool


def _check_records(bundle: zipfile.ZipFile, manifest: Mapping[str, Any]) -> _Checked:
    try:
        listed = [_Listed(int(s), str(i), str(h), bool(p)) for s, i, h, p in manifest["records"]]
    except (KeyError, TypeError, ValueError):
        return _Checked(0, bad(None, None, "the manifest's record list is unreadable"))
    if manifest.get("count") != len(listed):
        return _Checked(0, bad(None, None, "the manifest's count does not match its record list"))
    by_seq = {entry.seq: entry for entry in listed}
    seen: list[tuple[int, str]] = []
    first_own: tuple[int, BadRecord] | None = None
    previous: Mapping[str, Any] | None = None
    try:
        with bundle.open(RECORDS_FILE) as handle:
            for position, line in enumerate(handle):
                record, reason = _parse_line(line, position)
                if record is None:
                    expected = listed[position] if position < len(listed) else None
                    first_own = first_own or (position, _name(expected, reason))
                    seen.append((-1, ""))
                    continue
                seq, record_id = _seq_of(record), str(record.get("id"))
                seen.append((seq, record_id))
                problem = _own_problem(record, by_seq.get(seq), previous)
                if problem is not None and first_own is None:
                    first_own = (position, bad(seq, record_id, problem))
                previous = record
    except (zipfile.BadZipFile, EOFError, OSError) as exc:  # CRC failure: bytes changed in place
        return _Checked(len(seen), bad(None, None, f"{RECORDS_FILE} is damaged: {exc}"))
    order = _order_problem(seen, listed)
    candidates = [c for c in (first_own, order) if c is not None]
    first_bad = min(candidates, key=lambda c: c[0])[1] if candidates else None
    return _Checked(len(seen), first_bad)


def _parse_line(line: bytes, position: int) -> tuple[dict[str, Any] | None, str]:
    reason = f"line {position + 1} of {RECORDS_FILE} is not a JSON record (truncated or edited)"
    if not line.endswith(b"\n"):
        return None, f"line {position + 1} of {RECORDS_FILE} is cut short (truncated)"
    try:
        record = json.loads(line)
    except ValueError:
        return None, reason
    return (record, "") if isinstance(record, dict) else (None, reason)


def _seq_of(record: Mapping[str, Any]) -> int:
    seq = record.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1


def _name(expected: _Listed | None, reason: str) -> BadRecord:
    return bad(
        None if expected is None else expected.seq,
        None if expected is None else expected.id,
        reason,
    )


def _own_problem(
    record: Mapping[str, Any], listed: _Listed | None, previous: Mapping[str, Any] | None
) -> str | None:
    if listed is None:
        return "the manifest does not list this record (added or renumbered)"
    if record_hash(record) != record.get("hash"):
        return "the hash does not match the record's fields (edited)"
    payload = record.get("payload")
    if payload is not None and _sha256(canonical_json(payload)) != record.get("payload_sha256"):
        return "the payload does not match payload_sha256 (edited)"
    if record.get("hash") != listed.hash or record.get("id") != listed.id:
        return "this is not the record the manifest lists under its seq (replaced)"
    if (payload is not None) != listed.payload_included:
        return "the payload was removed or added after the export"
    follows = previous is not None and previous.get("seq") == listed.seq - 1
    if follows and previous is not None and record.get("prev_hash") != previous.get("hash"):
        return f"prev_hash does not link to record seq {listed.seq - 1}"
    return None


def _order_problem(
    seen: list[tuple[int, str]], listed: list[_Listed]
) -> tuple[int, BadRecord] | None:
    present = {seq for seq, _ in seen}
    for position, expected in enumerate(listed):
        if position >= len(seen):
            reason = (
                f"missing: {RECORDS_FILE} ends after {len(seen)} records (truncated or dropped)"
            )
            return position, bad(expected.seq, expected.id, reason)
        seq, record_id = seen[position]
        if (seq, record_id) == (expected.seq, expected.id) or seq == -1:
            continue
        if expected.seq in present:
            reason = (
                f"out of place: seq {expected.seq} belongs here (records reordered or duplicated)"
            )
            return position, bad(seq, record_id, reason)
        return position, bad(expected.seq, expected.id, f"missing from {RECORDS_FILE} (dropped)")
    if len(seen) > len(listed):
        seq, record_id = seen[len(listed)]
        return len(listed), bad(seq, record_id, "the manifest does not list this record (added)")
    return None


def _check_files(
    bundle: zipfile.ZipFile, manifest: Mapping[str, Any], names: set[str]
) -> str | None:
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "the manifest's file list is unreadable"
    for path, digest in sorted(files.items()):
        if path not in names:
            return f"{path} is missing from the bundle"
        if _sha256(bundle.read(path)) != digest:
            return f"{path} does not match its SHA-256 in the manifest (edited)"
    extra = names - set(files) - {MANIFEST_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE}
    if extra:
        return f"{sorted(extra)[0]} is not listed in the manifest (added)"
    return None
