"""The prose of the demo models' cards; ``_models`` adds the measured numbers."""

from __future__ import annotations

from typing import Any

_OWNER = "crm-explain maintainers (demo models, synthetic data)"
_CONTEST = (
    "Use 'contest this decision' on the explanation (POST /v1/explanations/{id}/contest); "
    "a human reviewer sees the archived explanation and answers within 5 working days."
)
_SYNTHETIC = (
    "Trained on synthetic data only: it demonstrates the service and must not score real customers."
)

CARDS: dict[str, dict[str, Any]] = {
    "churn": {
        "owner": _OWNER,
        "score_label": "Churn risk",
        "model_type": "XGBoost gradient-boosted trees in a scikit-learn Pipeline (one-hot "
        "encoded categoricals)",
        "intended_use": "Rank consumer subscribers by their risk of cancelling next month, so "
        "that retention agents can call the riskiest first.",
        "out_of_scope": [
            "Decisions about credit, pricing or refusing service.",
            "Business customers; markets other than the synthetic one it was trained on.",
            "Any automated decision without a human in the loop.",
        ],
        "limitations": [
            _SYNTHETIC,
            "Scores are calibrated to the synthetic churn rate; re-train before real use.",
            "payment_method and avg_session_minutes are proxies for age: customers aged 65+ "
            "are flagged far more often.",
        ],
        "ethical_considerations": "Older customers pay by mailed check and use the app less, "
        "and both raise the churn score, so the model selects the 65+ age band much more "
        "often than the others (see fairness). A retention offer is a benefit, so this "
        "may be acceptable, but audit it before any use that could disadvantage a group.",
        "known_proxy": {"protected": "age_band", "feature": "payment_method"},
    },
    "case_priority": {
        "owner": _OWNER,
        "score_label": "Priority",
        "selected_classes": ["high", "urgent"],
        "model_type": "Random forest in a scikit-learn Pipeline (one-hot encoded categoricals)",
        "intended_use": "Suggest a priority (low, normal, high, urgent) for an incoming "
        "service case; an agent confirms or changes it.",
        "out_of_scope": [
            "Closing or rejecting cases automatically.",
            "Safety-critical incidents, which always go to a human at once.",
        ],
        "limitations": [
            _SYNTHETIC,
            "The channel is a proxy for age: social-media and chat cases, mostly from "
            "younger customers, are escalated more often than phone cases.",
        ],
        "ethical_considerations": "Escalating public (social media) complaints faster "
        "disadvantages customers who phone or write, who are older on average. Review "
        "selection rates by age band before relying on the suggested priority.",
        "known_proxy": {"protected": "age_band", "feature": "channel"},
    },
    "lead_score": {
        "owner": _OWNER,
        "score_label": "Conversion likelihood",
        "model_type": "Logistic regression in a scikit-learn Pipeline (standardised numerics, "
        "one-hot encoded categoricals)",
        "intended_use": "Rank B2B sales leads by their chance of converting to an "
        "opportunity within 90 days, to order a sales team's follow-ups.",
        "out_of_scope": [
            "Decisions about individuals (hiring, credit, pricing).",
            "Consumer marketing.",
        ],
        "limitations": [
            _SYNTHETIC,
            "A linear model: it misses interactions between features.",
            "job_level is a proxy for age: contacts aged 18-29 are mostly individual "
            "contributors and are selected far less often.",
        ],
        "ethical_considerations": "The contact's seniority drives the score and correlates "
        "with age, so leads from young contacts are deprioritised. The score rates the "
        "company's buying intent, not the person.",
        "known_proxy": {"protected": "age_band", "feature": "job_level"},
    },
}

HOW_TO_CONTEST = _CONTEST
