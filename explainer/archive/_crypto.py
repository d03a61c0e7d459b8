"""Payload encryption: AES-256-GCM under a per-subject data key (crypto-shredding).

Stored form: ``nonce (12 bytes) || ciphertext+tag``; the record id is the associated data,
so a ciphertext moved to another row does not decrypt. In production the data keys would
be wrapped by a KMS key before they reach the database; here they are stored as-is.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encrypt(key: bytes, plaintext: bytes, record_id: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, record_id.encode("utf-8"))


def decrypt(key: bytes, sealed: bytes, record_id: str) -> bytes | None:
    """The plaintext, or None when the ciphertext, nonce, key or record id was altered."""
    nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, record_id.encode("utf-8"))
    except (InvalidTag, ValueError):
        return None
