"""The sentences a fairness audit writes, as constants that tests compare exactly.

Every flag starts with the protected attribute's name and a colon, names the groups in single
quotes and gives the numbers behind it.
"""

from __future__ import annotations

from fractions import Fraction

from explainer.fairness._bounds import exact

__all__ = [
    "ALL_UNSELECTED",
    "DISPARATE_IMPACT",
    "EQUALIZED_ODDS",
    "EQUALIZED_ODDS_UNDEFINED",
    "FOUR_FIFTHS",
    "LIKELY_PROXIES",
    "NO_GROUP_JUDGED",
    "NO_NEGATIVES",
    "NO_POSITIVES",
    "ONLY_ONE_GROUP",
    "ONLY_ONE_GROUP_JUDGED",
    "PARITY_DIFFERENCE",
    "TOO_SMALL",
    "bound_text",
    "number",
    "number_beside",
]

TOO_SMALL = (
    "{attribute}: group '{group}' has {size} records, fewer than the minimum of {minimum}; "
    "it is too small to judge and is left out of the ratio and the differences."
)
NO_GROUP_JUDGED = (
    "{attribute}: no group has at least {minimum} records, so every group is too small to judge "
    "and the ratio and the differences are not computed."
)
ONLY_ONE_GROUP = (
    "{attribute}: only one group ('{group}') is present, so there is nothing to compare; "
    "the ratio is 1.0 and the differences are 0.0 trivially."
)
ONLY_ONE_GROUP_JUDGED = (
    "{attribute}: only one group ('{group}') has at least {minimum} records, so there is "
    "nothing to compare; the ratio is 1.0 and the differences are 0.0 trivially."
)
ALL_UNSELECTED = (
    "{attribute}: no group has a record selected at the threshold {threshold} (every selection "
    "rate compared is 0), so the disparate impact ratio is undefined and reported as null."
)
NO_POSITIVES = (
    "{attribute}: group '{group}' has no positive labels, so its true positive rate is "
    "undefined (null) and left out of the equalized odds difference."
)
NO_NEGATIVES = (
    "{attribute}: group '{group}' has no negative labels, so its false positive rate is "
    "undefined (null) and left out of the equalized odds difference."
)
EQUALIZED_ODDS_UNDEFINED = (
    "{attribute}: the equalized odds difference is undefined (null): fewer than two groups "
    "have positive labels and fewer than two have negative labels."
)
FOUR_FIFTHS = "the four-fifths rule"
DISPARATE_IMPACT = (
    "{attribute}: disparate impact ratio {ratio} is below {rule} ({bound}): group '{low}' is "
    "selected at {low_rate} versus {high_rate} for '{high}'."
)
PARITY_DIFFERENCE = (
    "{attribute}: demographic parity difference {difference} exceeds the bound ({bound}): "
    "selection rates range from {low_rate} for '{low}' to {high_rate} for '{high}'."
)
EQUALIZED_ODDS = (
    "{attribute}: equalized odds difference {difference} exceeds the bound ({bound}): "
    "{rate_name} rates range from {low_rate} for '{low}' to {high_rate} for '{high}'."
)
LIKELY_PROXIES = (
    "{attribute}: {count} feature(s) track the attribute and may act as proxies for it: {listing}."
)


def number(value: float) -> str:
    """A rate or score as people read it: two decimals."""
    return f"{value:.2f}"


def bound_text(bound: float) -> str:
    """A bound as it was written: ``0.8``, ``0.1``."""
    return repr(float(bound))


def number_beside(value: float, bound: float, *, below: bool) -> str:
    """``value`` with two decimals, or as many more as it takes to show its side of ``bound``.

    A ratio of 0.7999 against 0.8 reads "0.7999", never "0.80 is below 0.8".
    """
    limit = exact(bound)
    for decimals in range(2, 18):
        text = f"{value:.{decimals}f}"
        shown = Fraction(text)
        if (shown < limit) if below else (shown > limit):
            return text
    return repr(float(value))
