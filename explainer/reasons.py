"""Principal reasons for a customer: what an explain request with ``"audience": "customer"`` gets.

An agent can read the attributions; a customer is owed a short, honest answer in plain
words. :func:`customer_reasons` turns an explanation's attributions into at most
:data:`MAX_REASONS` reasons, adverse-action style:

- **only the factors that RAISED the explained score**, largest first; when none did, the
  factors that moved it most (so the answer is never empty without cause). Factors that
  moved the score by less than :data:`NEGLIGIBLE_SHARE` of the largest are not principal
  reasons and are left out;
- **plain words**: each reason is the feature's label and the customer's own value
  (``"Contract type: Month-to-month"``), or the card's ``reason_texts[feature]`` (where
  ``{value}`` is replaced by the value). Never a contribution, a log-odds number, or the
  name of an explanation method;
- **never a protected attribute**: a feature named like one of the schema's
  ``protected_attributes`` or the card's ``known_proxy["protected"]`` (by name, or by a
  label that names the attribute) is not given as a reason. Protected attributes are not
  model inputs (the registry refuses such a schema), so this is a second line of defence.
  *Proxies are named*: when a proxy such as ``payment_method`` drove the score, the customer
  is told so, in the proxy's own words ("Payment method: Mailed check"), never linked to the
  attribute it stands in for. Hiding it would make the notice inaccurate; the proxy is
  flagged to the model's owners in the fairness audit and the transparency report instead;
- **stable codes**: ``reason_codes[feature]`` from the card when given, otherwise
  ``MODEL.FEATURE`` in upper snake case (``CHURN.PAYMENT_METHOD``). A code depends only on
  the model's name and the feature's name, so the same feature has the same code in every
  version of the model.

:func:`customer_rationale` writes the matching sentence, without numbers from the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from explainer.rationale import describe_value
from explainer.types import Attribution, Band, Reason
from model_store.types import FeatureSchema

__all__ = [
    "JARGON",
    "MAX_REASONS",
    "NEGLIGIBLE_SHARE",
    "customer_rationale",
    "customer_reasons",
    "customer_view",
    "jargon_in",
    "protected_names",
    "reason_code",
]

#: At most this many principal reasons are given.
MAX_REASONS = 4
#: A factor moving the score by less than this share of the largest is not a principal reason.
NEGLIGIBLE_SHARE = 0.05
#: Words a customer-facing text never contains (matched case-insensitively, as whole words).
JARGON = (
    "log-odds",
    "log odds",
    "logit",
    "shap",
    "shapley",
    "lime",
    "surrogate",
    "attribution",
    "contribution",
    "coefficient",
    "feature",
    "model",
    "algorithm",
    "probability",
    "base value",
)

_NOT_CODE = re.compile(r"[^0-9A-Za-z]+")


def reason_code(model_name: str, feature: str, card: Mapping[str, Any] | None = None) -> str:
    """The stable code of ``feature``'s reason: the card's ``reason_codes[feature]`` or
    ``MODEL.FEATURE`` in upper snake case."""
    codes = (card or {}).get("reason_codes") or {}
    if isinstance(codes, Mapping) and isinstance(codes.get(feature), str) and codes[feature]:
        return str(codes[feature])
    return f"{_snake(model_name)}.{_snake(feature)}"


def protected_names(schema: FeatureSchema, card: Mapping[str, Any]) -> frozenset[str]:
    """The protected attributes a customer text must never name."""
    names = set(schema.protected_attributes)
    proxy = card.get("known_proxy")
    if isinstance(proxy, Mapping) and isinstance(proxy.get("protected"), str):
        names.add(proxy["protected"])
    return frozenset(names)


def customer_reasons(
    *,
    model_name: str,
    schema: FeatureSchema,
    card: Mapping[str, Any],
    attributions: Sequence[Attribution],
    limit: int = MAX_REASONS,
) -> tuple[Reason, ...]:
    """At most ``limit`` (<= 4) principal reasons; see the module docstring for the rules."""
    return _principal(model_name, schema, card, attributions, limit)[0]


def customer_view(
    *,
    model_name: str,
    schema: FeatureSchema,
    card: Mapping[str, Any],
    attributions: Sequence[Attribution],
    band: Band,
    explained_class: str,
    predicted_class: str,
) -> tuple[tuple[Reason, ...], str]:
    """The principal reasons and the customer rationale that goes with them."""
    reasons, raised = _principal(model_name, schema, card, attributions, MAX_REASONS)
    text = customer_rationale(
        schema=schema,
        card=card,
        reasons=reasons,
        band=band,
        explained_class=explained_class,
        predicted_class=predicted_class,
        raised=raised,
    )
    return reasons, text


def customer_rationale(
    *,
    schema: FeatureSchema,
    card: Mapping[str, Any],
    reasons: Sequence[Reason],
    band: Band,
    explained_class: str,
    predicted_class: str,
    raised: bool,
) -> str:
    """One or two sentences for the customer: the outcome in words and the reasons given."""
    label = str(card.get("score_label") or schema.target.replace("_", " ").capitalize())
    if schema.task == "binary":
        opening = f"{label} is {band}" if card.get("score_label") else f"{label}: {band}"
    elif explained_class == predicted_class:
        opening = f"{label}: the most likely outcome is '{explained_class}'"
    else:
        opening = f"{label}: this is about the outcome '{explained_class}'"
    if not reasons:
        return f"{opening}. No single factor stood out."
    listing = _join([r.text for r in reasons])
    if schema.task == "binary":
        lead = "What raised it most" if raised else "Nothing raised it; what lowered it most"
    else:
        lead = "What made it more likely" if raised else "What made it less likely"
    return f"{opening}. {lead}: {listing}."


def jargon_in(text: str) -> list[str]:
    """The :data:`JARGON` words ``text`` contains (empty when it is plain)."""
    lowered = text.lower()
    return [word for word in JARGON if re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", lowered)]


# -- internals -------------------------------------------------------------------------------
def _principal(
    model_name: str,
    schema: FeatureSchema,
    card: Mapping[str, Any],
    attributions: Sequence[Attribution],
    limit: int,
) -> tuple[tuple[Reason, ...], bool]:
    """The reasons, and whether they are factors that raised the score."""
    limit = max(0, min(limit, MAX_REASONS))
    candidates = [a for a in _significant(attributions) if not _names_protected(a, schema, card)]
    raising = [a for a in candidates if a.contribution > 0]
    chosen = raising if raising else candidates
    reasons = tuple(
        Reason(reason_code(model_name, a.feature, card), _text(a, schema, card))
        for a in chosen[:limit]
    )
    return reasons, bool(raising)


def _snake(name: str) -> str:
    return _NOT_CODE.sub("_", name).strip("_").upper() or "_"


def _significant(attributions: Sequence[Attribution]) -> list[Attribution]:
    if not attributions:
        return []
    largest = max(abs(a.contribution) for a in attributions)
    if largest == 0:
        return []
    kept = [a for a in attributions if abs(a.contribution) >= NEGLIGIBLE_SHARE * largest]
    return sorted(kept, key=lambda a: -abs(a.contribution))


def _names_protected(
    attribution: Attribution, schema: FeatureSchema, card: Mapping[str, Any]
) -> bool:
    label = _words(attribution.label)
    for name in protected_names(schema, card):
        phrase = _words(name)
        if attribution.feature == name or _words(attribution.feature) == phrase:
            return True
        if phrase and re.search(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", label):
            return True
    return False


def _words(text: str) -> str:
    return " ".join(re.split(r"[^a-z0-9]+", text.lower())).strip()


def _text(attribution: Attribution, schema: FeatureSchema, card: Mapping[str, Any]) -> str:
    try:
        unit = schema.feature(attribution.feature).unit
    except KeyError:
        unit = None
    value = describe_value(attribution.value, unit)
    texts = card.get("reason_texts") or {}
    template = texts.get(attribution.feature) if isinstance(texts, Mapping) else None
    if isinstance(template, str) and template:
        return template.replace("{value}", value)
    return f"{attribution.label}: {value}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return "; ".join(parts[:-1]) + "; and " + parts[-1]
