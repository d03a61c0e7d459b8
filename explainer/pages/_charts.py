"""Numbers to words and bar geometry for the pages' SVG charts (no Flask, no drawing library).

Bars are drawn in a ``0 0 200 16`` viewBox stretched to the width of their row; all text
(labels, values, the direction's sign) is HTML next to them, so it stays readable at any width
and colour is never the only cue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from model_store.types import FeatureSchema

Direction = Literal["up", "down", "none"]

#: Width of the bar's viewBox; a driver bar grows from the middle, an importance bar from 0.
WIDTH = 200.0
HALF = WIDTH / 2


@dataclass(frozen=True)
class DriverBar:
    """One driver of a score, ready for the template."""

    feature: str
    label: str
    value: str
    contribution: float
    direction: Direction
    sign: str  # ▲ / ▼ / •
    verb: str  # "raises" / "lowers" / "no effect on"
    amount: str  # "+14.3 pts"
    x: float
    width: float

    @property
    def exact(self) -> str:
        """The contribution to the last digit (round-trips), for machines reading the page."""
        return repr(self.contribution)


@dataclass(frozen=True)
class ImportanceBar:
    value: float
    text: str
    rank: int
    width: float


@dataclass(frozen=True)
class RankChange:
    direction: Direction
    sign: str
    text: str  # "up 2 places", "down 1 place", "no change", "not ranked in churn@2"


def format_value(value: Any, unit: str | None = None) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, float) and not value.is_integer():
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}" if unit else text


def format_amount(contribution: float, output: str) -> str:
    """A contribution as a CRM agent reads it: percentage points for probabilities."""
    if output == "probability":
        points = contribution * 100
        return f"{_signed(points, 1)} pts"
    return _signed(contribution, 3)


def when(iso: str | None) -> str:
    """``2026-11-23T09:50:03.414592Z`` -> ``2026-11-23 09:50:03`` (the archive's times are UTC)."""
    if not iso:
        return ""
    return iso.replace("T", " ", 1)[:19]


def percent(score: float) -> str:
    return f"{score * 100:.0f}%"


def _signed(number: float, digits: int) -> str:
    text = f"{abs(number):.{digits}f}"
    if float(text) == 0:
        return f"±{text}"
    return f"+{text}" if number > 0 else f"\u2212{text}"  # a real minus sign


def driver_bars(
    attributions: Sequence[Mapping[str, Any]], schema: FeatureSchema | None, output: str
) -> list[DriverBar]:
    """Bars around a middle axis, scaled so that the largest driver fills its half."""
    largest = max((abs(float(a["contribution"])) for a in attributions), default=0.0)
    bars = []
    for a in attributions:
        contribution = float(a["contribution"])
        unit = _unit(schema, str(a["feature"]))
        width = 0.0 if largest == 0 else abs(contribution) / largest * (HALF - 2)
        direction: Direction = "up" if contribution > 0 else "down" if contribution < 0 else "none"
        bars.append(
            DriverBar(
                feature=str(a["feature"]),
                label=str(a["label"]),
                value=format_value(a["value"], unit),
                contribution=contribution,
                direction=direction,
                sign={"up": "\u25b2", "down": "\u25bc", "none": "\u2022"}[direction],
                verb={"up": "raises", "down": "lowers", "none": "does not change"}[direction],
                amount=format_amount(contribution, output),
                x=HALF if contribution >= 0 else HALF - width,
                width=round(max(width, 0.5) if contribution else 0.0, 3),
            )
        )
    return bars


def _unit(schema: FeatureSchema | None, feature: str) -> str | None:
    if schema is None:
        return None
    try:
        return schema.feature(feature).unit
    except KeyError:
        return None


def importance_bars(
    features: Sequence[Mapping[str, Any]], refs: Sequence[str]
) -> dict[str, dict[str, ImportanceBar]]:
    """``feature -> ref -> bar``, all on one scale so the models compare at a glance."""
    largest = max(
        (float(v) for f in features for v in f["values"].values()),
        default=0.0,
    )
    table: dict[str, dict[str, ImportanceBar]] = {}
    for f in features:
        row = table[f["feature"]] = {}
        for ref in refs:
            if ref not in f["values"]:
                continue
            value = float(f["values"][ref])
            width = 0.0 if largest == 0 else value / largest * WIDTH
            row[ref] = ImportanceBar(value, f"{value:.3f}", int(f["ranks"][ref]), round(width, 3))
    return table


def rank_change(feature: Mapping[str, Any], first: str, last: str) -> RankChange:
    """How a feature's rank moved from the ``first`` model to the ``last``."""
    ranks = feature["ranks"]
    if first not in ranks:
        return RankChange("none", "\u2022", f"not ranked in {first}")
    if last not in ranks:
        return RankChange("none", "\u2022", f"not ranked in {last}")
    moved = int(ranks[first]) - int(ranks[last])  # positive: nearer the top in ``last``
    if moved == 0:
        return RankChange("none", "=", "no change")
    places = "place" if abs(moved) == 1 else "places"
    if moved > 0:
        return RankChange("up", "\u25b2", f"up {moved} {places}")
    return RankChange("down", "\u25bc", f"down {-moved} {places}")
