"""Explanation methods behind one interface: SHAP (exact where possible) and LIME."""

from explainer.methods._model import PreparedModel, object_rows, row_slices
from explainer.methods.base import AttributionBatch, Explainer
from explainer.methods.lime_method import LimeExplainer
from explainer.methods.registry import build_explainers, get_explainer
from explainer.methods.shap_method import ShapExplainer, plan_for

__all__ = [
    "AttributionBatch",
    "Explainer",
    "LimeExplainer",
    "PreparedModel",
    "ShapExplainer",
    "build_explainers",
    "get_explainer",
    "object_rows",
    "plan_for",
    "row_slices",
]
