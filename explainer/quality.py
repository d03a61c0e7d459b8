"""Quality signals on every explanation, and when they call for a human to look at it.

An explanation is only as useful as it is trustworthy. :func:`assess` reads four signals
off an explanation and says, in plain sentences, which of them cross their bound:

- ``shap_lime_agreement``: the Jaccard similarity of the top-3 drivers (by |contribution|)
  of the SHAP and the LIME explanation of the same decision, class and output space;
  needs review below 0.5 (a single swap at rank 3 gives exactly 0.5 and passes);
- ``r2``: the LIME surrogate's weighted fit (LIME explanations); needs review below 0.3;
- ``additivity_error``: ``|base_value + sum(contributions) - score|`` (SHAP explanations);
  needs review above 1e-6;
- ``threshold_distance``: binary ``|P(positive) - threshold|`` with the card's ``threshold``
  (default 0.5); multiclass, the margin between the two most likely classes; needs review
  below 0.02: a small change in the inputs could flip the decision.

Each bound is judged strictly (a value exactly at the bound passes). The bounds live in one
place, :class:`ReviewBounds`; :data:`DEFAULT_REVIEW_BOUNDS` holds the defaults above.

Agreement needs a second explanation, which costs time. The service computes it:

- always for a LIME request: it is compared with SHAP, which is exact and cheap for the
  tree and linear models of a CRM;
- for a SHAP request only when asked (the request's ``review_checks: true``, or the
  service's ``review_checks`` setting), since LIME fits a surrogate on thousands of
  perturbed samples per decision. Otherwise ``shap_lime_agreement`` is null.

This module is pure: it takes numbers and returns numbers and sentences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explainer.exceptions import ValidationError

__all__ = [
    "DEFAULT_REVIEW_BOUNDS",
    "ReviewBounds",
    "Verdict",
    "assess",
    "jaccard",
    "threshold_distance",
    "top_features",
]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True)
class ReviewBounds:
    """Where a quality signal starts to call for human review (see the module docstring)."""

    #: Flag when the SHAP-LIME Jaccard agreement on the top ``top_k`` drivers is below it.
    min_agreement: float = 0.5
    #: Flag a LIME explanation whose surrogate r2 is below it.
    min_r2: float = 0.3
    #: Flag a SHAP explanation whose additivity residual is above it.
    max_additivity_error: float = 1e-6
    #: Flag a decision whose score is closer than this to the decision threshold (binary),
    #: or whose two most likely classes are closer than this (multiclass).
    min_threshold_distance: float = 0.02
    #: How many of the largest drivers the agreement compares.
    top_k: int = 3

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_r2", "min_threshold_distance"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValidationError.for_field(
                    f"review_bounds.{name}", f"must be a number between 0 and 1, got {value!r}"
                )
        if not _is_number(self.max_additivity_error) or self.max_additivity_error < 0:
            raise ValidationError.for_field(
                "review_bounds.max_additivity_error",
                f"must be a number of at least 0, got {self.max_additivity_error!r}",
            )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValidationError.for_field(
                "review_bounds.top_k", f"must be a whole number of at least 1, got {self.top_k!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_agreement": self.min_agreement,
            "min_r2": self.min_r2,
            "max_additivity_error": self.max_additivity_error,
            "min_threshold_distance": self.min_threshold_distance,
            "top_k": self.top_k,
        }


DEFAULT_REVIEW_BOUNDS = ReviewBounds()


@dataclass(frozen=True)
class Verdict:
    """The signals of one explanation (merged into its ``quality``) and, when any crosses
    its bound, the sentences saying why it needs review (in the order of the table above)."""

    signals: dict[str, float | None]
    reasons: tuple[str, ...]
    #: The quality keys that crossed their bound, in the order of ``reasons``.
    crossed: tuple[str, ...]

    @property
    def needs_review(self) -> dict[str, Any] | None:
        if not self.reasons:
            return None
        return {"reasons": list(self.reasons), "signals": list(self.crossed)}


def top_features(names: Sequence[str], values: Sequence[float], k: int) -> frozenset[str]:
    """The ``k`` features with the largest |value|; features contributing exactly nothing
    are never among them (ties at the cut keep the earlier feature)."""
    magnitudes = np.abs(np.asarray(values, dtype=float))
    order = np.argsort(-magnitudes, kind="stable")
    return frozenset(names[j] for j in order[:k] if magnitudes[j] > 0)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """size of the intersection over size of the union; two empty sets agree completely."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def threshold_distance(
    proba: Sequence[float], classes: Sequence[str], positive: str | None, threshold: float
) -> float:
    """How far the decision is from flipping: binary ``|P(positive) - threshold|``,
    multiclass the margin between the two most likely classes."""
    p = np.asarray(proba, dtype=float)
    if len(classes) == 2:
        index = list(classes).index(positive) if positive is not None and positive in classes else 1
        return float(abs(p[index] - threshold))
    top_two = np.sort(p)[-2:]
    return float(top_two[1] - top_two[0])


def assess(
    *,
    method: str,
    quality: Mapping[str, float | None],
    agreement: float | None,
    distance: float,
    threshold: float | None,
    bounds: ReviewBounds = DEFAULT_REVIEW_BOUNDS,
    lime_r2: float | None = None,
) -> Verdict:
    """Judge one explanation's signals against ``bounds``.

    ``quality`` is the explanation method's own report (``additivity_error`` for SHAP, ``r2``
    for LIME); ``agreement`` the SHAP-LIME Jaccard (None when not computed); ``distance``
    what :func:`threshold_distance` gave; ``threshold`` the binary decision threshold (None
    for multiclass); ``lime_r2`` the fit of the LIME explanation computed for comparison
    with a SHAP one (reported, but a SHAP explanation is not judged by a surrogate's fit).
    """
    signals: dict[str, float | None] = {
        "shap_lime_agreement": agreement,
        "threshold_distance": distance,
    }
    if lime_r2 is not None:
        signals["lime_r2"] = lime_r2
    reasons: list[str] = []
    crossed: list[str] = []
    k = bounds.top_k
    if agreement is not None and agreement < bounds.min_agreement:
        crossed.append("shap_lime_agreement")
        reasons.append(
            f"SHAP and LIME disagree on the main drivers: their top-{k} agreement "
            f"{agreement:.2f} is below {bounds.min_agreement:g}"
        )
    r2 = quality.get("r2")
    if method == "lime" and r2 is not None and _finite(r2) and r2 < bounds.min_r2:
        crossed.append("r2")
        reasons.append(
            f"the LIME surrogate fits the model poorly around this decision: r2 {r2:.2f} "
            f"is below {bounds.min_r2:g}"
        )
    additivity = quality.get("additivity_error")
    if (
        method == "shap"
        and additivity is not None
        and (not _finite(additivity) or additivity > bounds.max_additivity_error)
    ):
        crossed.append("additivity_error")
        reasons.append(
            f"the attributions do not add up to the score: the additivity error {additivity:.2e} "
            f"is above {bounds.max_additivity_error:g}"
        )
    if distance < bounds.min_threshold_distance:
        crossed.append("threshold_distance")
        if threshold is None:
            reasons.append(
                f"the two most likely classes are within {bounds.min_threshold_distance:g} of "
                f"each other (margin {distance:.3f}): a small change could flip the decision"
            )
        else:
            reasons.append(
                f"the score is within {bounds.min_threshold_distance:g} of the decision "
                f"threshold {threshold:g} (distance {distance:.3f}): a small change could flip "
                "the decision"
            )
    return Verdict(signals=signals, reasons=tuple(reasons), crossed=tuple(crossed))
