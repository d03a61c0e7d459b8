"""The bounds a fairness audit judges against, and exact comparisons with them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from explainer.exceptions import ValidationError

__all__ = ["FairnessBounds", "exact"]


def exact(value: float) -> Fraction:
    """The decimal number ``value`` is written as, as an exact fraction.

    ``exact(0.8) == Fraction(4, 5)``, not the binary double nearest to 0.8, so a bound
    given as ``0.8`` means four fifths exactly.
    """
    return Fraction(repr(float(value)))


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError.for_field(
            f"bounds.{name}", f"must be a number between 0 and 1, got {value!r}"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValidationError.for_field(
            f"bounds.{name}", f"must be a number between 0 and 1, got {value!r}"
        )


@dataclass(frozen=True)
class FairnessBounds:
    """What counts as a breach in a fairness audit.

    A flag is raised exactly when a bound is breached, never otherwise:

    - ``min_disparate_impact``: flag when the disparate impact ratio (lowest selection rate
      over highest) is strictly below it. The default 0.8 is the four-fifths rule.
    - ``max_demographic_parity_difference``: flag when the spread of selection rates is
      strictly above it.
    - ``max_equalized_odds_difference``: flag when the larger of the spreads of true positive
      rates and of false positive rates is strictly above it.
    - ``min_group_size``: groups with fewer records are reported, with a flag "too small to
      judge", but left out of the ratio, the differences and the attribution disparity.
    - ``proxy_association``: a feature whose association with the protected attribute is at
      or above it is listed among the likely proxies. The default 0.2 is a moderate
      association (bias-corrected Cramér's V / correlation ratio): a proxy rarely tracks a
      protected attribute strongly, yet a moderate link is enough to carry a disparity.

    Comparisons are made in exact rational arithmetic on the group counts, against the bound
    as written in decimal (see :func:`exact`), so a difference of exactly 0.1 is never flagged
    against a bound of 0.1 because of floating-point rounding.
    """

    min_disparate_impact: float = 0.8
    max_demographic_parity_difference: float = 0.1
    max_equalized_odds_difference: float = 0.1
    min_group_size: int = 30
    proxy_association: float = 0.2

    def __post_init__(self) -> None:
        for name in (
            "min_disparate_impact",
            "max_demographic_parity_difference",
            "max_equalized_odds_difference",
            "proxy_association",
        ):
            _check_fraction(name, getattr(self, name))
        size = self.min_group_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValidationError.for_field(
                "bounds.min_group_size", f"must be a whole number of at least 1, got {size!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The bounds as plain JSON values, for the audit's provenance."""
        return {
            "min_disparate_impact": float(self.min_disparate_impact),
            "max_demographic_parity_difference": float(self.max_demographic_parity_difference),
            "max_equalized_odds_difference": float(self.max_equalized_odds_difference),
            "min_group_size": int(self.min_group_size),
            "proxy_association": float(self.proxy_association),
        }


DEFAULT_BOUNDS = FairnessBounds()
