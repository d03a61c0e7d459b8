"""crm-explain: why a CRM model scored a customer the way it did.

For notebooks::

    from explainer import ExplainerService, Decision
    from model_store import open_store

    service = ExplainerService(open_store("~/.crm-explain/models"))
    [explanation] = service.explain("churn", [Decision({"tenure": 3, ...}, "C-1001")])
    explanation.rationale
    to_frame([explanation]); to_shap([explanation], feature_order)   # pandas / shap plots
"""

from explainer.exceptions import (
    AuthError,
    Conflict,
    ExplainerError,
    FieldError,
    Forbidden,
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    ValidationError,
)
from explainer.service import Decision, ExplainerService
from explainer.types import Attribution, Explanation, ModelRef, Prediction, to_frame, to_shap

__all__ = [
    "Attribution",
    "AuthError",
    "Conflict",
    "Decision",
    "ExplainerError",
    "ExplainerService",
    "Explanation",
    "FieldError",
    "Forbidden",
    "IntegrityError",
    "ModelRef",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "Unavailable",
    "ValidationError",
    "to_frame",
    "to_shap",
]
