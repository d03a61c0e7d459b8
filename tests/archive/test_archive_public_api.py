"""The archive's public surface: small, typed, and what the service imports."""

from __future__ import annotations

import dataclasses

import pytest

import explainer.archive as archive_package
from explainer.archive import ArchiveEntry, VerifyReport


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(archive_package.__all__) == [
        "Archive",
        "ArchiveEntry",
        "ArchiveStats",
        "BadRecord",
        "Record",
        "Secrets",
        "VerifyReport",
        "open_archive",
        "verify_bundle",
    ]
    for name in archive_package.__all__:
        assert getattr(archive_package, name) is not None


def test_an_archive_entry_is_frozen_and_keyword_only() -> None:
    entry = ArchiveEntry(payload={"score": 0.5}, customer_id="C-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.customer_id = "C-2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ArchiveEntry({"score": 0.5})  # type: ignore[call-arg]
    assert entry.kind == "explanation" and entry.settings == {} and entry.id is None


def test_a_verify_report_converts_to_the_api_shape() -> None:
    report = VerifyReport(False, 3, "h", {"seq": 2, "id": "x", "reason": "edited"})
    assert report.to_dict() == {
        "ok": False,
        "records": 3,
        "head": "h",
        "first_bad": {"seq": 2, "id": "x", "reason": "edited"},
    }
