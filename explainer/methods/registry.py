"""The explanation methods by name."""

from __future__ import annotations

from explainer.exceptions import ValidationError
from explainer.methods.base import Explainer
from explainer.methods.lime_method import LimeExplainer
from explainer.methods.shap_method import ShapExplainer


def build_explainers() -> dict[str, Explainer]:
    """One fresh instance of every method (per worker: explainer caches are not shared)."""
    return {"shap": ShapExplainer(), "lime": LimeExplainer()}


def get_explainer(explainers: dict[str, Explainer], method: str) -> Explainer:
    try:
        return explainers[method]
    except KeyError:
        raise ValidationError.for_field(
            "method", f"must be one of {sorted(explainers)}, not {method!r}"
        ) from None
