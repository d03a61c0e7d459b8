"""The signed audit bundle and its offline verification: any change is caught and named."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from explainer.archive import Archive, Secrets, VerifyReport, open_archive, verify_bundle
from explainer.exceptions import ValidationError

from .conftest import Backend, FakeClock, explanation_entry

CARDS = {
    "churn@1": {"name": "churn", "version": 1, "intended_use": "retention offers"},
    "lead_score@2": {"name": "lead_score", "version": 2, "limitations": ["B2B only"]},
}
Files = dict[str, bytes]


def export(archive: Archive, **filters: Any) -> bytes:
    out = io.BytesIO()
    archive.export_bundle(out, model_cards=CARDS, **filters)
    return out.getvalue()


def unzip(bundle: bytes) -> Files:
    with zipfile.ZipFile(io.BytesIO(bundle)) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def rezip(files: Files) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return out.getvalue()


def lines(files: Files) -> list[dict[str, Any]]:
    return [json.loads(line) for line in files["explanations.jsonl"].splitlines()]


def with_lines(files: Files, records: list[dict[str, Any]]) -> Files:
    body = b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records)
    return {**files, "explanations.jsonl": body}


def check(bundle: bytes) -> VerifyReport:
    return verify_bundle(io.BytesIO(bundle))


@pytest.fixture(scope="module")
def filled(module_backend: Backend) -> Iterator[Archive]:
    """One archive per backend for this module: its tests only read it and export it."""
    with open_archive(module_backend.url, Secrets.generate(), clock=FakeClock()) as archive:
        archive.append([explanation_entry(f"C-{i}", model="churn") for i in range(4)])
        for i in range(3):  # one append each: three creation times
            archive.append([explanation_entry(f"L-{i}", model="lead_score", version=2)])
        case = archive.open_case(archive.list(limit=1)[0][0]["id"], "the score is wrong")
        archive.decide_case(case["case_id"], "upheld", "checked the inputs")
        yield archive


@pytest.fixture(scope="module")
def bundle(filled: Archive) -> bytes:
    return export(filled)


def test_an_untouched_bundle_verifies_offline(
    filled: Archive, bundle: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "audit.zip"
    path.write_bytes(bundle)

    report = verify_bundle(path, expected_public_key=filled.public_key_fingerprint)

    assert report.ok, report.first_bad
    assert report.records == 9
    assert report.head == filled.verify().head
    assert verify_bundle(str(path)).ok and check(bundle).ok


def test_the_bundle_holds_the_contract_files_and_manifest(filled: Archive, bundle: bytes) -> None:
    files = unzip(bundle)
    manifest = json.loads(files["manifest.json"])

    assert set(files) == {
        "explanations.jsonl",
        "manifest.json",
        "manifest.sig",
        "public_key.pem",
        "model_cards/churn@1.json",
        "model_cards/lead_score@2.json",
    }
    records = lines(files)
    assert [r["seq"] for r in records] == list(range(1, 10))
    assert records[0]["payload"] == filled.get(records[0]["id"])["payload"]
    assert (manifest["count"], manifest["first_seq"], manifest["last_seq"]) == (9, 1, 9)
    assert manifest["chain_head"] == {"seq": 9, "hash": records[-1]["hash"]}
    assert manifest["filter"] == {"model": None, "since": None, "until": None}
    assert [m["name"] for m in manifest["models"]] == ["churn", "lead_score"]
    assert manifest["records"][0] == [1, records[0]["id"], records[0]["hash"], True]
    assert set(manifest["files"]) == {
        "explanations.jsonl",
        "model_cards/churn@1.json",
        "model_cards/lead_score@2.json",
    }
    assert manifest["signing_key"]["fingerprint"] == filled.public_key_fingerprint
    assert json.loads(files["model_cards/churn@1.json"]) == CARDS["churn@1"]


def test_a_filtered_export_verifies_and_lists_only_its_records(filled: Archive) -> None:
    bundle = export(filled, model="lead_score")
    records = lines(unzip(bundle))

    assert {r["model"]["name"] for r in records} == {"lead_score"}
    assert len(records) == 3
    assert check(bundle).ok

    first_lead = datetime.fromisoformat(records[0]["created_at"])
    by_time = export(
        filled, since=first_lead, until=datetime.fromisoformat(records[-1]["created_at"])
    )
    assert [r["seq"] for r in lines(unzip(by_time))] == [5, 6]
    assert check(by_time).ok


def test_case_events_follow_their_explanation_into_a_model_export(filled: Archive) -> None:
    kinds = [r["kind"] for r in lines(unzip(export(filled, model="churn")))]
    assert kinds == ["explanation"] * 4 + ["case_opened", "review_decision"]


def expect_bad(bundle: bytes, seq: int | None, record_id: str | None, reason: str) -> None:
    report = check(bundle)
    assert not report.ok
    assert report.first_bad is not None
    assert (report.first_bad["seq"], report.first_bad["id"]) == (seq, record_id), report.first_bad
    assert reason in report.first_bad["reason"], report.first_bad


def test_an_edited_record_is_named(bundle: bytes) -> None:
    files = unzip(bundle)
    records = lines(files)
    records[2]["payload"]["prediction"]["score"] = 0.01

    expect_bad(rezip(with_lines(files, records)), 3, records[2]["id"], "payload")


def test_an_edited_public_field_is_named(bundle: bytes) -> None:
    files = unzip(bundle)
    records = lines(files)
    records[4]["model"]["version"] = 7

    expect_bad(rezip(with_lines(files, records)), 5, records[4]["id"], "hash")


def test_a_dropped_record_is_named(bundle: bytes) -> None:
    files = unzip(bundle)
    records = lines(files)
    dropped = records.pop(3)

    expect_bad(rezip(with_lines(files, records)), 4, dropped["id"], "dropped")


def test_reordered_records_are_named(bundle: bytes) -> None:
    files = unzip(bundle)
    records = lines(files)
    records[5], records[6] = records[6], records[5]

    expect_bad(rezip(with_lines(files, records)), 7, records[5]["id"], "out of place")


def test_a_record_cut_short_is_named(bundle: bytes) -> None:
    files = unzip(bundle)
    body = files["explanations.jsonl"]
    cut = {**files, "explanations.jsonl": body[: len(body) - 40]}
    last = lines(files)[-1]

    expect_bad(rezip(cut), last["seq"], last["id"], "truncated")


def test_missing_last_records_are_named(bundle: bytes) -> None:
    files = unzip(bundle)
    records = lines(files)

    expect_bad(rezip(with_lines(files, records[:-2])), 8, records[-2]["id"], "truncated")


def test_a_truncated_zip_file_is_caught(bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut.zip"
    path.write_bytes(bundle[: len(bundle) // 2])

    report = verify_bundle(path)

    assert not report.ok and report.first_bad is not None
    assert "not a readable zip" in report.first_bad["reason"]


def test_an_added_record_is_named(filled: Archive, bundle: bytes) -> None:
    files = unzip(bundle)
    records = lines(files)
    extra = dict(records[-1], seq=10)

    expect_bad(rezip(with_lines(files, [*records, extra])), 10, extra["id"], "does not list")


def test_an_edited_manifest_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    manifest = json.loads(files["manifest.json"])
    manifest["count"] = 8
    manifest["records"].pop()
    edited = {**files, "manifest.json": json.dumps(manifest).encode()}

    expect_bad(rezip(edited), None, None, "manifest.sig does not verify")


def test_an_edited_model_card_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    card = json.loads(files["model_cards/churn@1.json"])
    card["intended_use"] = "anything"
    edited = {**files, "model_cards/churn@1.json": json.dumps(card).encode()}

    expect_bad(rezip(edited), None, None, "model_cards/churn@1.json")


def test_a_removed_or_added_file_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    without = {k: v for k, v in files.items() if k != "model_cards/lead_score@2.json"}
    expect_bad(rezip(without), None, None, "missing")
    expect_bad(rezip({**files, "notes.txt": b"hi"}), None, None, "notes.txt")


def test_a_swapped_signature_is_caught(bundle: bytes) -> None:
    files = unzip(bundle)
    other = Secrets.generate()
    forged_sig = other.signing_key.sign(files["manifest.json"])

    expect_bad(rezip({**files, "manifest.sig": forged_sig}), None, None, "manifest.sig")
    swapped = {**files, "manifest.sig": forged_sig, "public_key.pem": other.public_key_pem()}
    expect_bad(rezip(swapped), None, None, "swapped")


def test_a_bundle_re_signed_whole_is_caught_by_the_expected_key(
    filled: Archive, bundle: bytes
) -> None:
    files = unzip(bundle)
    impostor = Secrets.generate()
    manifest = json.loads(files["manifest.json"])
    manifest["signing_key"]["fingerprint"] = impostor.public_key_fingerprint()
    manifest_bytes = json.dumps(manifest).encode()
    forged = rezip(
        {
            **files,
            "manifest.json": manifest_bytes,
            "manifest.sig": impostor.signing_key.sign(manifest_bytes),
            "public_key.pem": impostor.public_key_pem(),
        }
    )

    assert check(forged).ok  # self-consistent: only the expected key tells it apart
    report = verify_bundle(io.BytesIO(forged), expected_public_key=filled.public_key_fingerprint)
    assert not report.ok and report.first_bad is not None
    assert "unexpected key" in report.first_bad["reason"]


def test_bytes_changed_inside_the_zip_are_caught(bundle: bytes) -> None:
    record = lines(unzip(bundle))[0]
    stored = io.BytesIO()
    files = unzip(bundle)
    with zipfile.ZipFile(stored, "w", compression=zipfile.ZIP_STORED) as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    raw = stored.getvalue().replace(record["hash"].encode(), record["hash"][::-1].encode(), 1)

    report = check(raw)

    assert not report.ok and report.first_bad is not None


def test_a_bad_model_card_key_is_refused(filled: Archive) -> None:
    with pytest.raises(ValidationError):
        filled.export_bundle(io.BytesIO(), model_cards={"../evil": {}})


FIELDS = ["id", "kind", "created_at", "settings", "subject", "request_id", "details", "payload"]


@settings(max_examples=30, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=8),
    field=st.sampled_from(FIELDS),
    value=st.text(max_size=5),
)
def test_any_single_edit_is_caught_and_names_its_record(
    bundle: bytes, position: int, field: str, value: str
) -> None:
    files = unzip(bundle)
    records = lines(files)
    original = records[position]
    if original[field] == value:
        return
    records[position] = {**original, field: value}

    report = check(rezip(with_lines(files, records)))

    assert not report.ok and report.first_bad is not None
    assert report.first_bad["seq"] == original["seq"]


Tamper = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda rs: rs[1:],
        lambda rs: [rs[0], rs[2], rs[1]],
        lambda rs: [{**rs[0], "payload": None}, *rs[1:]],
    ],
    ids=["first-dropped", "swapped", "payload-removed"],
)
def test_tampering_with_a_filtered_export_is_caught(filled: Archive, tamper: Tamper) -> None:
    files = unzip(export(filled, model="lead_score"))

    report = check(rezip(with_lines(files, tamper(lines(files)))))

    assert not report.ok and report.first_bad is not None and report.first_bad["seq"] is not None


def test_an_unrelated_key_file_is_refused() -> None:
    other = Ed25519PrivateKey.generate()
    assert not check(
        rezip(
            {
                "manifest.json": b"{}",
                "manifest.sig": other.sign(b"{}"),
                "public_key.pem": b"junk",
                "explanations.jsonl": b"",
            }
        )
    ).ok
