"""Secrets: made once with 0600 permissions, then loaded; pseudonyms are keyed HMACs."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from explainer.archive import Secrets


def test_secrets_are_created_once_and_loaded_thereafter(tmp_path: Path) -> None:
    folder = tmp_path / "home"

    first = Secrets.load_or_create(folder)
    again = Secrets.load_or_create(folder)

    assert again.pseudonym_key == first.pseudonym_key
    assert again.public_key_fingerprint() == first.public_key_fingerprint()
    for name in ("pseudonym.key", "signing_key.pem"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["pseudonym.key", "signing_key.pem"]


def test_workers_starting_together_agree_on_one_set(tmp_path: Path) -> None:
    loaded: list[Secrets] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        loaded.append(Secrets.load_or_create(tmp_path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({s.pseudonym_key for s in loaded}) == 1
    assert len({s.public_key_fingerprint() for s in loaded}) == 1


def test_a_pseudonym_is_stable_per_key_and_hides_the_id() -> None:
    one, other = Secrets.generate(), Secrets.generate()

    assert one.pseudonym("C-1001") == one.pseudonym("C-1001")
    assert one.pseudonym("C-1001") != one.pseudonym("C-1002")
    assert one.pseudonym("C-1001") != other.pseudonym("C-1001")
    assert len(one.pseudonym("C-1001")) == 64 and "C-1001" not in one.pseudonym("C-1001")


def test_secrets_do_not_show_in_their_repr() -> None:
    secrets = Secrets.generate()
    assert secrets.pseudonym_key.hex() not in repr(secrets)


def test_a_short_pseudonym_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Secrets(b"short", Secrets.generate().signing_key)
