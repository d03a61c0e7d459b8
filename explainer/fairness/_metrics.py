"""Group metrics for one protected attribute, computed with fairlearn.

One :class:`fairlearn.metrics.MetricFrame` per attribute gives every group's record count,
``selection_rate`` and, with labels, ``true_positive_rate`` and ``false_positive_rate``
(``y_pred`` is "selected": score at or above the threshold; without labels ``y_true`` is a
dummy of zeros, which ``selection_rate`` ignores). The records are passed as their distinct
(group, label, selected) cells weighted by their counts, which gives the same rates bit for
bit and keeps the frame's cost independent of the number of records. The attribute's summary numbers
are taken from that frame's ``by_group`` table over the groups that are large enough to
judge, exactly as fairlearn's own functions take them from theirs:

- disparate impact ratio = ``demographic_parity_ratio`` = lowest selection rate / highest;
- demographic parity difference = ``demographic_parity_difference`` = highest - lowest;
- equalized odds difference = ``equalized_odds_difference`` (``agg="worst_case"``) = the
  larger of the TPR spread and the FPR spread.

(Building one frame rather than calling the three functions, each of which builds its own,
keeps an audit of many records fast; the tests check the numbers against those functions.)

Where fairlearn would report a number that means nothing, the audit reports null and says
why in a flag:

- a group with no positive labels has no true positive rate (fairlearn's
  ``true_positive_rate`` gives 0.0 there); such a group is left out of the TPR spread, and
  likewise a group with no negative labels is left out of the FPR spread;
- when no group is selected at all, the disparate impact ratio is 0/0 (fairlearn gives NaN).

With a single group the ratio is 1.0 and the differences are 0.0, fairlearn's values.

Whether a bound is breached is decided in exact rational arithmetic on the counts (a
selection rate is ``selected / size``), see :func:`explainer.fairness._bounds.exact`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from explainer.fairness import _messages as msg
from explainer.fairness._bounds import FairnessBounds, exact

__all__ = ["AttributeMetrics", "GroupStats", "assess"]


@dataclass(frozen=True)
class GroupStats:
    """One group's counts and fairlearn's rates for it."""

    name: str
    size: int
    selected: int
    positives: int
    true_positives: int
    negatives: int
    false_positives: int
    selection_rate: float
    tpr: float | None
    fpr: float | None
    judged: bool

    @property
    def exact_selection_rate(self) -> Fraction:
        return Fraction(self.selected, self.size)

    @property
    def exact_tpr(self) -> Fraction:
        return Fraction(self.true_positives, self.positives)

    @property
    def exact_fpr(self) -> Fraction:
        return Fraction(self.false_positives, self.negatives)


@dataclass(frozen=True)
class AttributeMetrics:
    groups: tuple[GroupStats, ...]
    codes: NDArray[np.intp]  # each record's position in ``groups``
    disparate_impact_ratio: float | None
    demographic_parity_difference: float | None
    equalized_odds_difference: float | None
    flags: tuple[str, ...]

    @property
    def judged(self) -> tuple[GroupStats, ...]:
        return tuple(group for group in self.groups if group.judged)


def _plain(value: Any) -> float:
    number = float(value)
    if not np.isfinite(number):  # pragma: no cover - a defect, never bad input
        raise RuntimeError(f"fairlearn returned {number!r} where a rate was expected")
    return number


def _counts(codes: NDArray[np.intp], mask: NDArray[np.bool_], n_groups: int) -> list[int]:
    return [int(value) for value in np.bincount(codes[mask], minlength=n_groups)]


def _weighted_count(
    y_true: NDArray[np.int64], y_pred: NDArray[np.int64], sample_weight: NDArray[np.int64]
) -> float:
    """fairlearn's ``count`` for weighted rows: the records the rows stand for."""
    return float(np.sum(sample_weight))


def _group_stats(
    attribute: str,
    values: NDArray[np.str_],
    selected: NDArray[np.int64],
    labels: NDArray[np.int64] | None,
    bounds: FairnessBounds,
) -> tuple[tuple[GroupStats, ...], NDArray[np.intp]]:
    # fairlearn (and scikit-learn behind it) takes a second or more to import: load it when
    # an audit runs, not when the service or the command line starts.
    from fairlearn.metrics import (
        MetricFrame,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    names, codes = np.unique(values, return_inverse=True)
    n_groups = len(names)
    truth = np.zeros(len(values), dtype=np.int64) if labels is None else labels
    chosen = selected == 1
    positive = truth == 1
    sizes = _counts(codes, np.ones(len(values), dtype=bool), n_groups)
    picked = _counts(codes, chosen, n_groups)
    positives = _counts(codes, positive, n_groups)
    true_positives = _counts(codes, positive & chosen, n_groups)
    false_positives = _counts(codes, ~positive & chosen, n_groups)

    # MetricFrame calls each metric on every record one by one (about 10 us a record and a
    # metric), so the records are first collapsed into their distinct (group, label,
    # selected) cells, at most four per group, each weighted by how many records it holds.
    # With integer weights the rates are bit for bit those of the records themselves.
    cells, weights = np.unique(codes * 4 + truth * 2 + selected, return_counts=True)
    metrics: dict[str, Any] = {"count": _weighted_count, "selection_rate": selection_rate}
    if labels is not None:
        metrics |= {"tpr": true_positive_rate, "fpr": false_positive_rate}
    frame = MetricFrame(
        metrics=metrics,
        y_true=(cells // 2) % 2,
        y_pred=cells % 2,
        sensitive_features=pd.Series(names[cells // 4], name=attribute),
        sample_params={metric: {"sample_weight": weights} for metric in metrics},
    )
    table = frame.by_group
    stats = []
    for i, name in enumerate(str(name) for name in names):
        row = table.loc[name]
        if int(row["count"]) != sizes[i]:  # pragma: no cover - a defect, never bad input
            raise RuntimeError(f"fairlearn counted {row['count']} records in group {name!r}")
        negatives = 0 if labels is None else sizes[i] - positives[i]
        stats.append(
            GroupStats(
                name=name,
                size=sizes[i],
                selected=picked[i],
                positives=positives[i],
                true_positives=true_positives[i],
                negatives=negatives,
                false_positives=false_positives[i],
                selection_rate=_plain(row["selection_rate"]),
                tpr=_plain(row["tpr"]) if labels is not None and positives[i] else None,
                fpr=_plain(row["fpr"]) if labels is not None and negatives else None,
                judged=sizes[i] >= bounds.min_group_size,
            )
        )
    return tuple(stats), codes.astype(np.intp)


def _spread(
    groups: list[GroupStats], rate: str
) -> tuple[float, Fraction, GroupStats, GroupStats] | None:
    """(fairlearn's max - min, the exact spread, lowest group, highest group), or None."""
    if len(groups) < 2:
        return None
    exact_rate = f"exact_{rate}"
    low = min(groups, key=lambda group: getattr(group, exact_rate))
    high = max(groups, key=lambda group: getattr(group, exact_rate))
    floats = [getattr(group, rate) for group in groups]
    return (
        max(floats) - min(floats),
        getattr(high, exact_rate) - getattr(low, exact_rate),
        low,
        high,
    )


def assess(
    attribute: str,
    values: NDArray[np.str_],
    *,
    selected: NDArray[np.int64],
    labels: NDArray[np.int64] | None,
    threshold: float,
    bounds: FairnessBounds,
) -> AttributeMetrics:
    """Every group's rates, the attribute's ratio and differences, and the flags they raise."""
    groups, codes = _group_stats(attribute, values, selected, labels, bounds)
    judged = [group for group in groups if group.judged]
    flags = [
        msg.TOO_SMALL.format(
            attribute=attribute, group=group.name, size=group.size, minimum=bounds.min_group_size
        )
        for group in groups
        if not group.judged
    ]

    def result(ratio: float | None, parity: float | None, odds: float | None) -> AttributeMetrics:
        return AttributeMetrics(groups, codes, ratio, parity, odds, tuple(flags))

    if not judged:
        flags.append(msg.NO_GROUP_JUDGED.format(attribute=attribute, minimum=bounds.min_group_size))
        return result(None, None, None)
    if len(judged) == 1:
        template = msg.ONLY_ONE_GROUP if len(groups) == 1 else msg.ONLY_ONE_GROUP_JUDGED
        flags.append(
            template.format(
                attribute=attribute, group=judged[0].name, minimum=bounds.min_group_size
            )
        )
        return result(1.0, 0.0, None if labels is None else 0.0)

    if labels is not None:
        for group in judged:
            if not group.positives:
                flags.append(msg.NO_POSITIVES.format(attribute=attribute, group=group.name))
            if not group.negatives:
                flags.append(msg.NO_NEGATIVES.format(attribute=attribute, group=group.name))

    # Demographic parity: selection rates.
    spread = _spread(judged, "selection_rate")
    assert spread is not None  # at least two judged groups
    parity, exact_parity, low, high = spread
    ratio: float | None
    if high.selected == 0:
        ratio = None
        flags.append(msg.ALL_UNSELECTED.format(attribute=attribute, threshold=threshold))
    else:
        ratio = low.selection_rate / high.selection_rate
        bound = bounds.min_disparate_impact
        if low.exact_selection_rate < exact(bound) * high.exact_selection_rate:
            rule = msg.FOUR_FIFTHS if exact(bound) == Fraction(4, 5) else "the minimum"
            flags.append(
                msg.DISPARATE_IMPACT.format(
                    attribute=attribute,
                    ratio=msg.number_beside(ratio, bound, below=True),
                    rule=rule,
                    bound=msg.bound_text(bound),
                    low=low.name,
                    low_rate=msg.number(low.selection_rate),
                    high=high.name,
                    high_rate=msg.number(high.selection_rate),
                )
            )
    bound = bounds.max_demographic_parity_difference
    if exact_parity > exact(bound):
        flags.append(
            msg.PARITY_DIFFERENCE.format(
                attribute=attribute,
                difference=msg.number_beside(parity, bound, below=False),
                bound=msg.bound_text(bound),
                low=low.name,
                low_rate=msg.number(low.selection_rate),
                high=high.name,
                high_rate=msg.number(high.selection_rate),
            )
        )

    # Equalized odds: the worse of the TPR and FPR spreads, over groups where each is defined.
    odds: float | None = None
    if labels is not None:
        spreads = {
            "true positive": _spread([group for group in judged if group.positives], "tpr"),
            "false positive": _spread([group for group in judged if group.negatives], "fpr"),
        }
        defined = [(name, value) for name, value in spreads.items() if value is not None]
        if not defined:
            flags.append(msg.EQUALIZED_ODDS_UNDEFINED.format(attribute=attribute))
        else:
            # The worse spread; on a tie, the true positive one (listed first).
            odds = max(value[0] for _, value in defined)  # fairlearn's "worst_case"
            rate_name, (_, exact_odds, low, high) = max(defined, key=lambda item: item[1][1])
            rate = "tpr" if rate_name == "true positive" else "fpr"
            bound = bounds.max_equalized_odds_difference
            if exact_odds > exact(bound):
                flags.append(
                    msg.EQUALIZED_ODDS.format(
                        attribute=attribute,
                        difference=msg.number_beside(odds, bound, below=False),
                        bound=msg.bound_text(bound),
                        rate_name=rate_name,
                        low=low.name,
                        low_rate=msg.number(getattr(low, rate)),
                        high=high.name,
                        high_rate=msg.number(getattr(high, rate)),
                    )
                )
    return result(ratio, parity, odds)
