"""Canonical JSON and record hashes: the rules an offline verifier repeats byte for byte."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from explainer.archive._canonical import (
    HASHED_FIELDS,
    canonical_bytes,
    canonical_json,
    normalize,
    record_hash,
)
from explainer.exceptions import ValidationError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


@given(json_values)
def test_canonical_json_reads_back_to_the_same_bytes(value: Any) -> None:
    encoded = canonical_json(value)
    assert canonical_json(json.loads(encoded)) == encoded


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_written_as_repr_and_read_back_exactly(number: float) -> None:
    assert canonical_json(number) == repr(number).encode()
    assert json.loads(canonical_json(number)) == number


def test_canonical_json_is_sorted_compact_and_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, {"x": object()}, {1: "a", "b": 2}])
def test_values_that_are_not_plain_json_are_refused(bad: Any) -> None:
    with pytest.raises(ValidationError):
        normalize(bad, "payload")


#: Values as callers hand them in: tuples, float subclasses, keys that are not strings.
loose_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(allow_nan=False, allow_infinity=False).map(np.float64)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.dictionaries(st.integers(-20, 20), children, max_size=4)
    ),
    max_leaves=25,
)


@given(loose_values)
def test_a_payload_is_stored_as_the_canonical_json_of_what_it_reads_back_as(value: Any) -> None:
    """Encoded once where it can be, the bytes are those of the normalised value: integer
    keys, for one, sort as the strings they become ("10" before "9")."""
    assert canonical_bytes(value, "payload") == canonical_json(normalize(value, "payload"))


def test_a_payload_nested_deeper_than_the_key_check_goes_is_still_stored() -> None:
    deep: Any = []
    for _ in range(600):
        deep = [deep]
    assert canonical_bytes({"x": deep}, "payload") == canonical_json(normalize({"x": deep}, "p"))


def test_a_payload_that_contains_itself_is_refused_naming_the_field() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValidationError, match=r"payload"):
        canonical_bytes(loop, "payload")


def test_integer_keys_sort_as_the_strings_they_become() -> None:
    assert canonical_bytes({9: "a", 10: "b"}, "payload") == b'{"10":"b","9":"a"}'


@pytest.mark.parametrize(
    "bad", [math.nan, {"x": [math.inf]}, {"x": object()}, {1: "a", "b": 2}, {"n": np.int64(3)}]
)
def test_a_payload_that_is_not_plain_json_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(ValidationError, match=r"entries\[0\]\.payload"):
        canonical_bytes(bad, "entries[0].payload")


RECORD: dict[str, Any] = {
    "id": "a" * 32,
    "seq": 1,
    "kind": "explanation",
    "created_at": "2024-01-01T00:00:00.000000Z",
    "model": {"name": "churn", "version": 1, "sha256": "b" * 64},
    "settings": {"method": "shap"},
    "subject": "c" * 64,
    "request_id": None,
    "details": {},
    "payload_sha256": "d" * 64,
    "prev_hash": "0" * 64,
}


@given(field=st.sampled_from(HASHED_FIELDS), value=json_values)
def test_changing_any_hashed_field_changes_the_hash(field: str, value: Any) -> None:
    if value == RECORD[field]:
        return
    assert record_hash({**RECORD, field: value}) != record_hash(RECORD)


def test_the_hash_ignores_fields_outside_the_chain() -> None:
    extended = {**RECORD, "hash": "x", "payload": {"customer_id": "C-1"}, "erased": True}
    assert record_hash(extended) == record_hash(RECORD)
