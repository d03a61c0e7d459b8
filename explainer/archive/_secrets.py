"""The archive's long-lived secrets: the pseudonymisation key and the bundle signing key."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets as _random
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PSEUDONYM_KEY_FILE = "pseudonym.key"
SIGNING_KEY_FILE = "signing_key.pem"
_MIN_KEY_BYTES = 32


@dataclass(frozen=True, eq=False)
class Secrets:
    """The HMAC key that pseudonymises customer ids and the Ed25519 key that signs bundles.

    Every worker and replica sharing one archive must use the same secrets (the archive
    refuses to open with a different pseudonym key). Per-subject data keys are not here:
    they live in the archive's database, where erasure can delete them.
    """

    pseudonym_key: bytes = field(repr=False)
    signing_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.pseudonym_key) < _MIN_KEY_BYTES:
            raise ValueError(f"the pseudonym key must be at least {_MIN_KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> Secrets:
        """Fresh random secrets (tests, or a first start)."""
        return cls(_random.token_bytes(_MIN_KEY_BYTES), Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, folder: Path) -> Secrets:
        """Load ``pseudonym.key`` and ``signing_key.pem`` from ``folder``; create them once
        (mode 0600, atomically, so workers starting together agree on one set)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = cls.generate()
        key_hex = (fresh.pseudonym_key.hex() + "\n").encode("ascii")
        _create_once(folder / PSEUDONYM_KEY_FILE, key_hex)
        _create_once(folder / SIGNING_KEY_FILE, fresh.signing_key_pem())
        pseudonym_key = bytes.fromhex((folder / PSEUDONYM_KEY_FILE).read_text("ascii").strip())
        signing_key = serialization.load_pem_private_key(
            (folder / SIGNING_KEY_FILE).read_bytes(), password=None
        )
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise ValueError(f"{folder / SIGNING_KEY_FILE} does not hold an Ed25519 private key")
        return cls(pseudonym_key, signing_key)

    def pseudonym(self, customer_id: str) -> str:
        """HMAC-SHA256(pseudonym_key, customer_id) in hex: how a customer id is stored."""
        return hmac.new(self.pseudonym_key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def key_check(self) -> str:
        """A value that identifies the pseudonym key without revealing it."""
        return hmac.new(self.pseudonym_key, b"crm-explain key check", hashlib.sha256).hexdigest()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def public_key_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_key_fingerprint(self) -> str:
        return public_key_fingerprint(self.public_key)

    def signing_key_pem(self) -> bytes:
        return self.signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def public_key_fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the 32 raw public key bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _create_once(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` with mode 0600 unless ``path`` exists; never half-written."""
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(tmp, path)  # atomic: the file appears whole or not at all
    finally:
        tmp.unlink(missing_ok=True)
