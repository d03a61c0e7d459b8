"""From attributions and the schema to sentences.

Every claim is read off the numbers: a driver is said to raise the score only when its
contribution is positive, to lower it only when negative, and sizes are the contributions
themselves (percentage points for probabilities, log-odds units otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from explainer.types import Attribution, Band, Method, OutputSpace
from model_store.types import FeatureSchema

#: Default score bands; a model card may set its own ``bands: {"medium": 0.3, "high": 0.6}``.
DEFAULT_BANDS = {"medium": 0.3, "high": 0.6}
#: How many drivers the rationale names on each side.
MAX_DRIVERS = 3
#: Contributions smaller than this share of the largest are not worth reading aloud.
NEGLIGIBLE_SHARE = 0.05


def band_for(score: float, card: Mapping[str, Any]) -> Band:
    bands = {**DEFAULT_BANDS, **dict(card.get("bands") or {})}
    if score >= bands["high"]:
        return "high"
    if score >= bands["medium"]:
        return "medium"
    return "low"


def describe_value(value: Any, unit: str | None) -> str:
    if isinstance(value, float):
        text = f"{value:,.0f}" if value.is_integer() or abs(value) >= 100 else f"{value:,.2f}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def rationale(
    *,
    schema: FeatureSchema,
    card: Mapping[str, Any],
    attributions: Sequence[Attribution],
    score: float,
    explained_class: str,
    band: Band,
    output: OutputSpace,
    method: Method,
    predicted_class: str | None = None,
    max_drivers: int | None = None,
) -> str:
    limit = min(max_drivers or MAX_DRIVERS, MAX_DRIVERS)
    opening = _opening(schema, card, explained_class, predicted_class, band, score)
    drivers = _significant(attributions)
    raising = [a for a in drivers if a.contribution > 0][:limit]
    lowering = [a for a in drivers if a.contribution < 0][:limit]
    if not raising and not lowering:
        return f"{opening}; no single factor moved it noticeably from the typical customer."
    sentences = []
    if raising:
        sentences.append(f"{opening}, mainly because {_join(raising, schema, output)}.")
    else:
        sentences.append(f"{opening}.")
    if lowering:
        verb = "What lowered it" if raising else "It is held down mainly by"
        sentences.append(f"{verb}: {_join(lowering, schema, output)}.")
    if method == "lime":
        sentences.append("These reasons come from a local approximation of the model.")
    return " ".join(sentences)


def _opening(
    schema: FeatureSchema,
    card: Mapping[str, Any],
    explained: str,
    predicted: str | None,
    band: Band,
    score: float,
) -> str:
    """What the score is, said the way an agent would: "Churn risk is high (82%)"."""
    label = str(card.get("score_label") or schema.target.replace("_", " ").capitalize())
    if schema.task == "binary":
        subject = label if card.get("score_label") else f"The likelihood of {label} = {explained}"
        return f"{subject} is {band} ({score:.0%})"
    if explained == predicted:
        return f"{label} is most likely '{explained}' ({score:.0%})"
    return f"{label} '{explained}' has a {score:.0%} likelihood"


def _significant(attributions: Sequence[Attribution]) -> list[Attribution]:
    if not attributions:
        return []
    largest = max(abs(a.contribution) for a in attributions)
    if largest == 0:
        return []
    return [a for a in attributions if abs(a.contribution) >= NEGLIGIBLE_SHARE * largest]


def _join(drivers: Sequence[Attribution], schema: FeatureSchema, output: OutputSpace) -> str:
    parts = [_driver(a, schema, output) for a in drivers]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _driver(attribution: Attribution, schema: FeatureSchema, output: OutputSpace) -> str:
    spec = schema.feature(attribution.feature)
    value = describe_value(attribution.value, spec.unit)
    return f"{attribution.label} is {value} ({_size(attribution.contribution, output)})"


def _size(contribution: float, output: OutputSpace) -> str:
    if output == "probability":
        points = contribution * 100
        return f"{points:+.1f} points" if abs(points) < 10 else f"{points:+.0f} points"
    return f"{contribution:+.2f} log-odds"
