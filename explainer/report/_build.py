"""The transparency report of one model version, as plain JSON.

The service gathers the parts (the registry's record and card, the global importance, the
last fairness audit run in this process, what the archive holds) and :func:`build_report`
puts them in one stable shape. Every section is always present; what the model's owner has
not stated is ``null`` (the HTML page says "Not stated").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from explainer.fairness import DEFAULT_BOUNDS
from model_store.types import ModelRecord

__all__ = ["FORMAT_VERSION", "SECTIONS", "build_report"]

#: Bumped when a key of the report changes meaning or disappears.
FORMAT_VERSION = 1

#: (key, heading) of every section, in reading order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("model", "Model"),
    ("intended_use", "Intended use"),
    ("data", "Data"),
    ("performance", "Performance"),
    ("global_importance", "Global importance"),
    ("fairness", "Fairness"),
    ("explanation_quality", "Explanation quality and human review"),
    ("limitations", "Limitations"),
    ("owner", "Owner"),
    ("last_audit", "Last audit"),
    ("how_to_contest", "How to contest a decision"),
)

_CARD_FAIRNESS_NOTE = (
    "Taken from the model card: measured by the model's owner when this version was trained, "
    "not re-run for this report. Run a fairness audit (POST /v1/models/{name}/fairness or "
    "'crm-explain fairness') to measure it on current decisions."
)
_AUDIT_FAIRNESS_NOTE = (
    "Measured by the most recent fairness audit of this version run through this service "
    "(kept in memory until the service restarts)."
)


def build_report(
    *,
    record: ModelRecord,
    generated_at: str,
    importance: Mapping[str, Any] | None,
    importance_error: str | None = None,
    audit: Mapping[str, Any] | None = None,
    last_audit: Mapping[str, Any] | None = None,
    review: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of ``record``; ``audit`` is ``{"audited_at", "result"}`` of the last fairness
    audit (``result`` as the service's ``fairness`` returned it), ``review`` how explanations
    are checked for human review (``{"bounds": {...}, "review_checks": bool}``)."""
    card = dict(record.card)
    schema = record.schema
    return {
        "kind": "transparency_report",
        "format_version": FORMAT_VERSION,
        "generated_at": generated_at,
        "model": {
            "name": record.name,
            "version": record.version,
            "sha256": record.sha256,
            "stage": record.stage,
            "registered_at": record.created_at or None,
            "task": schema.task,
            "model_type": card.get("model_type"),
            "environment": dict(record.environment),
        },
        "intended_use": {
            "summary": card.get("intended_use"),
            "out_of_scope": _strings(card.get("out_of_scope")),
        },
        "data": {
            "description": schema.description or None,
            "target": schema.target,
            "classes": list(schema.classes),
            "positive_class": schema.positive_class,
            "training_data": card.get("training_data"),
            "features": [
                {
                    "name": f.name,
                    "label": f.label,
                    "type": f.type,
                    "unit": f.unit,
                    "categories": None if f.categories is None else list(f.categories),
                }
                for f in schema.features
            ],
            "protected_attributes": list(schema.protected_attributes),
        },
        "performance": card.get("metrics"),
        "global_importance": _importance(importance, importance_error),
        "fairness": _fairness(record, card, audit),
        "explanation_quality": _quality(review),
        "limitations": {
            "limitations": _strings(card.get("limitations")),
            "ethical_considerations": card.get("ethical_considerations"),
        },
        "owner": card.get("owner"),
        "last_audit": dict(last_audit) if last_audit is not None else None,
        "how_to_contest": card.get("how_to_contest")
        or (
            "Contest a decision through the CRM (POST /v1/explanations/{id}/contest with the "
            "explanation's id): a human reviewer sees the archived explanation and decides."
        ),
    }


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _importance(table: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
    if table is None:
        return {"available": False, "error": error, "importances": []}
    return {
        "available": True,
        "method": table.get("method"),
        "output": table.get("output"),
        "n_rows": table.get("n_rows"),
        "over": "the model's background sample (mean |attribution| per raw feature)",
        "importances": [dict(row) for row in table.get("importances", [])],
    }


def _quality(review: Mapping[str, Any] | None) -> dict[str, Any]:
    review = review or {}
    return {
        "bounds": dict(review.get("bounds") or {}),
        "review_checks_for_shap": bool(review.get("review_checks", False)),
        "description": (
            "Every explanation carries quality signals: the agreement of SHAP and LIME on the "
            "top drivers (always for LIME explanations; for SHAP ones when review checks are "
            "on), the LIME surrogate's fit, SHAP's additivity residual and the distance of the "
            "score from the decision threshold. An explanation whose signal crosses its bound "
            "is marked needs_review and a review case is opened for a human automatically."
        ),
    }


def _proxy(record: ModelRecord, card: Mapping[str, Any]) -> dict[str, Any] | None:
    proxy = card.get("known_proxy")
    if not isinstance(proxy, Mapping):
        return None
    feature = proxy.get("feature")
    label = None
    if isinstance(feature, str):
        try:
            label = record.schema.feature(feature).label
        except KeyError:
            label = None
    return {"protected": proxy.get("protected"), "feature": feature, "label": label}


def _fairness(
    record: ModelRecord, card: Mapping[str, Any], audit: Mapping[str, Any] | None
) -> dict[str, Any]:
    known_proxy = _proxy(record, card)
    if audit is not None:
        return _from_audit(audit, known_proxy)
    stated = card.get("fairness")
    if not isinstance(stated, Mapping):
        return {
            "source": None,
            "note": "Neither the model card nor an audit run through this service states it.",
            "known_proxy": known_proxy,
            "attributes": {},
        }
    attributes = {
        str(name): _card_attribute(str(name), value)
        for name, value in stated.items()
        if isinstance(value, Mapping) and isinstance(value.get("selection_rate"), Mapping)
    }
    return {
        "source": "model_card",
        "note": _CARD_FAIRNESS_NOTE,
        "threshold": stated.get("threshold"),
        "selection_rule": stated.get("selected_means"),
        "n_records": stated.get("n_records"),
        "audited_at": None,
        "known_proxy": known_proxy,
        "attributes": attributes,
    }


def _card_attribute(name: str, stated: Mapping[str, Any]) -> dict[str, Any]:
    rates = {str(g): float(r) for g, r in stated["selection_rate"].items()}
    ratio = stated.get("disparate_impact_ratio")
    if ratio is None and rates:
        high = max(rates.values())
        ratio = min(rates.values()) / high if high > 0 else 1.0
    difference = max(rates.values()) - min(rates.values()) if rates else None
    flags = []
    if ratio is not None and ratio < DEFAULT_BOUNDS.min_disparate_impact:
        flags.append(
            f"{name}: the disparate impact ratio {ratio:.2f} is below "
            f"{DEFAULT_BOUNDS.min_disparate_impact:g} (the four-fifths rule)"
        )
    if difference is not None and difference > DEFAULT_BOUNDS.max_demographic_parity_difference:
        flags.append(
            f"{name}: selection rates differ by {difference:.2f} between groups, more than "
            f"{DEFAULT_BOUNDS.max_demographic_parity_difference:g}"
        )
    return {
        "groups": [
            {"group": g, "size": None, "selection_rate": r, "tpr": None, "fpr": None}
            for g, r in sorted(rates.items())
        ],
        "disparate_impact_ratio": None if ratio is None else float(ratio),
        "demographic_parity_difference": difference,
        "equalized_odds_difference": None,
        "flags": flags,
        "likely_proxies": [],
    }


def _from_audit(audit: Mapping[str, Any], known_proxy: dict[str, Any] | None) -> dict[str, Any]:
    result = audit["result"]
    selection = result.get("selection") or {}
    attributes = {}
    for name, found in result.get("attributes", {}).items():
        attributes[name] = {
            "groups": [
                {
                    "group": g["group"],
                    "size": g.get("size"),
                    "selection_rate": g.get("selection_rate"),
                    "tpr": g.get("tpr"),
                    "fpr": g.get("fpr"),
                }
                for g in found.get("groups", [])
            ],
            "disparate_impact_ratio": found.get("disparate_impact_ratio"),
            "demographic_parity_difference": found.get("demographic_parity_difference"),
            "equalized_odds_difference": found.get("equalized_odds_difference"),
            "flags": list(found.get("flags", [])),
            "likely_proxies": [p["feature"] for p in found.get("likely_proxies", [])],
        }
    return {
        "source": "fairness_audit",
        "note": _AUDIT_FAIRNESS_NOTE,
        "threshold": result.get("threshold"),
        "selection_rule": selection.get("rule"),
        "n_records": result.get("n_records"),
        "audited_at": audit.get("audited_at"),
        "known_proxy": known_proxy,
        "attributes": attributes,
    }
