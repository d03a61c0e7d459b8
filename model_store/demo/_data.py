"""Deterministic synthetic CRM data for the three demo models.

Each generator draws the protected attributes first, then the features (some of them
depending on ``age_band``: the deliberate proxy), then the label from a noisy logit of the
features. Numeric columns are clipped to the schema's bounds at the end, so the schema's
min/max are the generator's hard bounds, whatever the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_store.types import FeatureSchema, FeatureSpec

PROTECTED = ("gender", "age_band")
GENDERS = ("F", "M", "X")
AGE_BANDS = ("18-29", "30-44", "45-64", "65+")
YES_NO = ("Yes", "No")
ID_COLUMN = "customer_id"
DEFAULT_SEED = 20261123

Rng = np.random.Generator
Columns = dict[str, np.ndarray]


def _num(
    name: str, label: str, unit: str | None, lo: float, hi: float, description: str | None = None
) -> FeatureSpec:
    return FeatureSpec(name, "numeric", label, unit=unit, min=lo, max=hi, description=description)


def _cat(name: str, label: str, categories: Sequence[str]) -> FeatureSpec:
    return FeatureSpec(name, "categorical", label, categories=tuple(categories))


def _pick(rng: Rng, options: Sequence[str], probs: np.ndarray) -> np.ndarray:
    """One draw per row; ``probs`` is (n, k), each row summing to 1."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random((len(cum), 1))
    idx = np.minimum((u > cum).sum(axis=1), len(options) - 1)
    return _take(options, idx)


def _pick_n(rng: Rng, options: Sequence[str], probs: Sequence[float], n: int) -> np.ndarray:
    return _take(options, rng.choice(len(options), size=n, p=probs))


def _take(options: Sequence[str], idx: np.ndarray) -> np.ndarray:
    return np.take(np.asarray(options, dtype=object), idx)


def _effect(values: np.ndarray, effects: dict[str, float]) -> np.ndarray:
    return np.array([effects.get(str(v), 0.0) for v in values])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _protected(rng: Rng, n: int, age_p: Sequence[float]) -> tuple[np.ndarray, Columns]:
    gender = _pick_n(rng, GENDERS, [0.49, 0.49, 0.02], n)
    age = rng.choice(len(AGE_BANDS), size=n, p=age_p)
    return age, {"gender": gender, "age_band": _take(AGE_BANDS, age)}


# --------------------------------------------------------------------------- churn

CHURN_PAYMENTS = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)
CHURN_SCHEMA = FeatureSchema(
    task="binary",
    target="churn",
    positive_class="Yes",
    description="Monthly churn risk of a consumer subscription",
    protected_attributes=PROTECTED,
    features=(
        _num("tenure", "Months as a customer", "months", 0, 72),
        _cat("contract", "Contract type", ("Month-to-month", "One year", "Two year")),
        _cat("plan_tier", "Plan tier", ("Basic", "Standard", "Premium")),
        _num("monthly_charges", "Monthly charges", "USD", 18.0, 120.0),
        _num("total_charges", "Total charges to date", "USD", 0.0, 9000.0),
        _num("num_products", "Products subscribed", "products", 1, 6),
        _cat("payment_method", "Payment method", CHURN_PAYMENTS),
        _cat("paperless_billing", "Paperless billing", YES_NO),
        _num("support_tickets_90d", "Support tickets in the last 90 days", "tickets", 0, 20),
        _num("days_since_last_login", "Days since last login", "days", 0, 365),
        _num("avg_session_minutes", "Average session length", "minutes", 0.0, 240.0),
        _num(
            "nps_score",
            "Net Promoter survey score",
            "points",
            0,
            10,
            "Answer to 'how likely are you to recommend us', 0-10",
        ),
        _num("late_payments_12m", "Late payments in the last 12 months", "payments", 0, 12),
        _num("discount_pct", "Current discount", "%", 0, 50),
        _num("device_count", "Devices registered", "devices", 1, 10),
    ),
)


def _churn_features(rng: Rng, n: int, age: np.ndarray) -> Columns:
    tenure = np.where(rng.random(n) < 0.55, rng.exponential(14, n), rng.uniform(0, 72, n))
    tenure = np.clip(np.round(tenure), 0, 72).astype(np.int64)
    contract_logits = np.column_stack([1.4 - 0.045 * tenure, np.zeros(n), -1.2 + 0.035 * tenure])
    contract = _pick(
        rng, CHURN_SCHEMA.feature("contract").categories or (), _softmax_rows(contract_logits)
    )
    tier = _pick_n(rng, ("Basic", "Standard", "Premium"), [0.45, 0.38, 0.17], n)
    products = np.minimum(1 + rng.poisson(0.9, n), 6)
    base = _effect(tier, {"Basic": 28.0, "Standard": 55.0, "Premium": 85.0})
    monthly = np.round(np.clip(base + 6.0 * (products - 1) + rng.normal(0, 8, n), 18, 120), 2)
    total = np.round(monthly * tenure * rng.uniform(0.92, 1.02, n), 2)
    payment_p = np.array(
        [
            [0.36, 0.08, 0.27, 0.29],
            [0.34, 0.10, 0.27, 0.29],
            [0.30, 0.22, 0.24, 0.24],
            [0.15, 0.55, 0.15, 0.15],
        ]
    )
    payment = _pick(rng, CHURN_PAYMENTS, payment_p[age])
    paperless = np.where(rng.random(n) < np.array([0.75, 0.68, 0.55, 0.30])[age], "Yes", "No")
    session_median = np.array([38.0, 34.0, 26.0, 11.0])[age]
    session = np.round(rng.lognormal(np.log(session_median), 0.6), 1)
    login = np.round(rng.exponential(np.array([12.0, 14.0, 18.0, 30.0])[age])).astype(np.int64)
    return {
        "tenure": tenure,
        "contract": contract,
        "plan_tier": tier,
        "monthly_charges": monthly,
        "total_charges": total,
        "num_products": products,
        "payment_method": payment,
        "paperless_billing": paperless.astype(object),
        "days_since_last_login": login,
        "avg_session_minutes": session,
    }


def _churn_satisfaction(rng: Rng, n: int, cols: Columns) -> Columns:
    sat = rng.normal(0, 1, n)
    premium = (cols["plan_tier"] == "Premium").astype(float)
    tickets = rng.poisson(np.exp(-0.1 - 0.45 * sat + 0.2 * premium))
    nps = np.round(7.2 + 1.7 * sat + rng.normal(0, 1.2, n)).astype(np.int64)
    pay = cols["payment_method"]
    late = rng.poisson(0.3 + 0.9 * (pay == "Mailed check") + 0.4 * (pay == "Electronic check"))
    discount = rng.choice(
        [0, 5, 10, 15, 20, 25, 30], size=n, p=[0.6, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02]
    )
    return {
        "support_tickets_90d": tickets,
        "nps_score": nps,
        "late_payments_12m": late,
        "discount_pct": discount,
        "device_count": 1 + rng.poisson(1.6, n),
    }


def _churn_label(rng: Rng, c: Columns) -> np.ndarray:
    n = len(c["tenure"])
    logit = (
        -2.0
        + _effect(c["contract"], {"Month-to-month": 1.6, "Two year": -1.3})
        - 0.032 * c["tenure"]
        + 0.024 * (c["monthly_charges"] - 60)
        + 0.38 * c["support_tickets_90d"]
        + 0.014 * c["days_since_last_login"]
        + _effect(
            c["payment_method"],
            {
                "Mailed check": 1.0,
                "Electronic check": 0.6,
                "Bank transfer (automatic)": -0.3,
                "Credit card (automatic)": -0.3,
            },
        )
        - 0.3 * (c["nps_score"] - 7)
        - 0.2 * (c["num_products"] - 1)
        + 0.33 * c["late_payments_12m"]
        - 0.032 * (c["avg_session_minutes"] - 30)
        - 0.025 * c["discount_pct"]
        + rng.normal(0, 0.3, n)
    )
    return np.where(rng.random(n) < _sigmoid(logit), "Yes", "No").astype(object)


def _churn(rng: Rng, n: int) -> Columns:
    age, cols = _protected(rng, n, [0.20, 0.30, 0.33, 0.17])
    cols |= _churn_features(rng, n, age)
    return cols | _churn_satisfaction(rng, n, cols)


# ------------------------------------------------------------------- case priority

CASE_CHANNELS = ("Phone", "Email", "Chat", "Web form", "Social media")
CASE_ISSUES = (
    "Billing",
    "Technical",
    "Outage",
    "Account access",
    "Complaint",
    "Cancellation request",
    "General inquiry",
)
CASE_SEGMENTS = ("Consumer", "Small business", "Enterprise")
CASE_CLASSES = ("low", "normal", "high", "urgent")
#: Cut points of the latent urgency: about 30% low, 40% normal, 20% high, 10% urgent.
CASE_CUTS = (0.6, 2.15, 3.45)
CASE_SCHEMA = FeatureSchema(
    task="multiclass",
    target="priority",
    description="Priority of an incoming service case (low, normal, high, urgent)",
    protected_attributes=PROTECTED,
    features=(
        _cat("channel", "Contact channel", CASE_CHANNELS),
        _cat("issue_type", "Issue type", CASE_ISSUES),
        _cat("customer_segment", "Customer segment", CASE_SEGMENTS),
        _cat("is_vip", "VIP customer", YES_NO),
        _num("account_value", "Annual account value", "USD/year", 0.0, 500000.0),
        _num("hours_since_created", "Hours since the case was opened", "hours", 0.0, 720.0),
        _num(
            "sla_hours_left",
            "Hours left before the SLA is breached",
            "hours",
            -72.0,
            48.0,
            "Negative once the SLA is breached",
        ),
        _num("reopen_count", "Times the case was reopened", "reopens", 0, 5),
        _num(
            "sentiment_score",
            "Sentiment of the customer's message",
            "score",
            -1.0,
            1.0,
            "-1 very negative, +1 very positive",
        ),
        _num("open_cases", "Other open cases of the customer", "cases", 0, 15),
        _num("previous_cases_12m", "Cases in the last 12 months", "cases", 0, 30),
    ),
)


def _case_features(rng: Rng, n: int, age: np.ndarray) -> Columns:
    channel_p = np.array(
        [
            [0.10, 0.15, 0.35, 0.15, 0.25],
            [0.20, 0.25, 0.30, 0.15, 0.10],
            [0.35, 0.30, 0.15, 0.15, 0.05],
            [0.58, 0.25, 0.04, 0.11, 0.02],
        ]
    )
    channel = _pick(rng, CASE_CHANNELS, channel_p[age])
    issue = _pick_n(rng, CASE_ISSUES, [0.24, 0.26, 0.06, 0.10, 0.10, 0.06, 0.18], n)
    seg = rng.choice(3, size=n, p=[0.72, 0.20, 0.08])
    value = rng.lognormal(np.log(np.array([700.0, 6500.0, 70000.0])[seg]), 0.7)
    vip = (value > 30000) & (rng.random(n) < 0.6) | (rng.random(n) < 0.03)
    hours = np.round(rng.exponential(18.0, n), 1)
    sla_total = np.array([48.0, 24.0, 8.0])[seg]
    sentiment_mean = _effect(
        issue,
        {
            "Billing": -0.1,
            "Technical": -0.15,
            "Outage": -0.4,
            "Account access": -0.1,
            "Complaint": -0.55,
            "Cancellation request": -0.35,
            "General inquiry": 0.2,
        },
    )
    return {
        "channel": channel,
        "issue_type": issue,
        "customer_segment": _take(CASE_SEGMENTS, seg),
        "is_vip": np.where(vip, "Yes", "No").astype(object),
        "account_value": np.round(value, 2),
        "hours_since_created": hours,
        "sla_hours_left": np.round(sla_total - hours, 1),
        "reopen_count": rng.poisson(0.25 + 0.3 * np.isin(issue, ["Technical", "Complaint"])),
        "sentiment_score": np.round(np.clip(rng.normal(sentiment_mean, 0.35), -1, 1), 2),
        "open_cases": rng.poisson(np.array([0.4, 1.2, 3.0])[seg]),
        "previous_cases_12m": rng.poisson(np.array([1.5, 3.0, 6.0])[seg]),
    }


def _case_label(rng: Rng, c: Columns) -> np.ndarray:
    n = len(c["channel"])
    urgency = (
        _effect(
            c["issue_type"],
            {
                "Outage": 2.0,
                "Cancellation request": 1.2,
                "Complaint": 1.0,
                "Account access": 0.8,
                "Technical": 0.5,
                "Billing": 0.3,
            },
        )
        + _effect(c["customer_segment"], {"Small business": 0.5, "Enterprise": 1.2})
        + 0.9 * (c["is_vip"] == "Yes")
        - 0.9 * c["sentiment_score"]
        + 0.35 * c["reopen_count"]
        + 0.035 * np.clip(12 - c["sla_hours_left"], 0, 84)
        + _effect(
            c["channel"],
            {"Social media": 1.6, "Chat": 0.8, "Phone": -0.1, "Email": -0.4, "Web form": -0.4},
        )
        + 0.08 * c["open_cases"]
        + rng.normal(0, 0.7, n)
    )
    return _take(CASE_CLASSES, np.searchsorted(CASE_CUTS, urgency))


def _case_priority(rng: Rng, n: int) -> Columns:
    age, cols = _protected(rng, n, [0.20, 0.30, 0.32, 0.18])
    return cols | _case_features(rng, n, age)


# ---------------------------------------------------------------------- lead score

LEAD_SOURCES = (
    "Organic search",
    "Paid search",
    "Referral",
    "Event",
    "Webinar",
    "Cold outreach",
    "Partner",
)
LEAD_CLASSES = ("converted", "not_converted")
LEAD_JOBS = ("Individual contributor", "Manager", "Director", "VP", "C-level")
LEAD_SCHEMA = FeatureSchema(
    task="binary",
    target="converted",
    positive_class="converted",
    description="Probability that a B2B sales lead converts to an opportunity within 90 days",
    protected_attributes=PROTECTED,
    features=(
        _cat("lead_source", "Lead source", LEAD_SOURCES),
        _cat(
            "industry",
            "Industry",
            (
                "Retail",
                "Financial services",
                "Healthcare",
                "Manufacturing",
                "Technology",
                "Education",
                "Public sector",
            ),
        ),
        _cat(
            "company_size",
            "Company size (employees)",
            ("1-10", "11-50", "51-200", "201-1000", "1001+"),
        ),
        _cat("job_level", "Contact's job level", LEAD_JOBS),
        _cat("country_region", "Region", ("North America", "EMEA", "APAC", "LATAM")),
        _num("pages_viewed", "Website pages viewed", "pages", 0, 200),
        _num("email_opens", "Marketing e-mails opened", "opens", 0, 50),
        _num("days_since_first_touch", "Days since first contact", "days", 0, 365),
        _cat("demo_requested", "Requested a demo", YES_NO),
        _cat("webinar_attended", "Attended a webinar", YES_NO),
    ),
)


def _lead_features(rng: Rng, n: int, age: np.ndarray) -> Columns:
    job_p = np.array(
        [
            [0.65, 0.25, 0.07, 0.02, 0.01],
            [0.35, 0.35, 0.18, 0.08, 0.04],
            [0.20, 0.30, 0.25, 0.13, 0.12],
            [0.15, 0.20, 0.25, 0.15, 0.25],
        ]
    )
    job = _pick(rng, LEAD_JOBS, job_p[age])
    source = _pick_n(rng, LEAD_SOURCES, [0.22, 0.18, 0.10, 0.10, 0.10, 0.22, 0.08], n)
    interest = rng.normal(0, 1, n) + _effect(
        source, {"Referral": 0.4, "Event": 0.3, "Webinar": 0.3, "Cold outreach": -0.5}
    )
    seniority = _effect(job, {"Director": 0.5, "VP": 0.8, "C-level": 1.0})
    demo = rng.random(n) < _sigmoid(-1.8 + 0.9 * interest + 0.4 * seniority)
    webinar = rng.random(n) < 0.12 + 0.4 * (source == "Webinar")
    return {
        "lead_source": source,
        "industry": _pick_n(
            rng,
            LEAD_SCHEMA.feature("industry").categories or (),
            [0.16, 0.14, 0.12, 0.16, 0.22, 0.1, 0.1],
            n,
        ),
        "company_size": _pick_n(
            rng,
            LEAD_SCHEMA.feature("company_size").categories or (),
            [0.25, 0.30, 0.20, 0.15, 0.10],
            n,
        ),
        "job_level": job,
        "country_region": _pick_n(
            rng, LEAD_SCHEMA.feature("country_region").categories or (), [0.45, 0.30, 0.15, 0.10], n
        ),
        "pages_viewed": rng.poisson(np.exp(1.6 + 0.6 * interest)),
        "email_opens": rng.poisson(np.exp(0.9 + 0.4 * interest)),
        "days_since_first_touch": np.round(rng.exponential(60.0, n)).astype(np.int64),
        "demo_requested": np.where(demo, "Yes", "No").astype(object),
        "webinar_attended": np.where(webinar, "Yes", "No").astype(object),
    }


def _lead_label(rng: Rng, c: Columns) -> np.ndarray:
    n = len(c["lead_source"])
    logit = (
        -2.6
        + 1.8 * (c["demo_requested"] == "Yes")
        + _effect(
            c["job_level"],
            {"Individual contributor": -1.0, "Director": 0.8, "VP": 1.2, "C-level": 1.4},
        )
        + _effect(
            c["lead_source"],
            {
                "Referral": 1.1,
                "Event": 0.6,
                "Partner": 0.7,
                "Webinar": 0.4,
                "Organic search": 0.2,
                "Cold outreach": -1.2,
            },
        )
        + 0.5 * np.log1p(c["pages_viewed"])
        + 0.08 * c["email_opens"]
        - 0.006 * c["days_since_first_touch"]
        + _effect(c["company_size"], {"1-10": -0.5, "51-200": 0.3, "201-1000": 0.4, "1001+": 0.2})
        + _effect(
            c["industry"],
            {
                "Technology": 0.3,
                "Financial services": 0.2,
                "Public sector": -0.4,
                "Education": -0.2,
            },
        )
        + 0.5 * (c["webinar_attended"] == "Yes")
        + rng.normal(0, 0.3, n)
    )
    return np.where(rng.random(n) < _sigmoid(logit), *LEAD_CLASSES).astype(object)


def _lead_score(rng: Rng, n: int) -> Columns:
    age, cols = _protected(rng, n, [0.20, 0.38, 0.34, 0.08])
    return cols | _lead_features(rng, n, age)


# ------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class DemoSpec:
    """How to draw one demo data set: its schema, its generator and its seed offset."""

    name: str
    schema: FeatureSchema
    #: Draws the protected attributes and the features (before clipping to the schema).
    generate: Callable[[Rng, int], Columns]
    #: Draws the label from the clipped features.
    label: Callable[[Rng, Columns], np.ndarray]
    seed_offset: int
    classes: tuple[str, ...]


SPECS: dict[str, DemoSpec] = {
    s.name: s
    for s in (
        DemoSpec("churn", CHURN_SCHEMA, _churn, _churn_label, 1, ("No", "Yes")),
        DemoSpec("case_priority", CASE_SCHEMA, _case_priority, _case_label, 2, CASE_CLASSES),
        DemoSpec("lead_score", LEAD_SCHEMA, _lead_score, _lead_label, 3, LEAD_CLASSES),
    )
}


def demo_spec(name: str) -> DemoSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown demo model {name!r}; expected one of {sorted(SPECS)}") from None


def _conform(cols: Columns, schema: FeatureSchema) -> Columns:
    """Clip numerics to the schema's hard bounds; keep integer columns integer."""
    out = dict(cols)
    for spec in schema.features:
        if spec.is_categorical:
            continue
        values = np.clip(cols[spec.name], spec.min, spec.max)
        out[spec.name] = values.astype(cols[spec.name].dtype)
    return out


def demo_frame(name: str, n: int, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """``n`` synthetic rows for demo model ``name``: a ``customer_id``, the schema's features
    in schema order, the protected attributes and the label column (``schema.target``)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    spec = demo_spec(name)
    rng = np.random.default_rng(seed + spec.seed_offset)
    cols = _conform(spec.generate(rng, n), spec.schema)
    cols[spec.schema.target] = spec.label(rng, cols)
    order = [*spec.schema.feature_names, *PROTECTED, spec.schema.target]
    frame = pd.DataFrame({ID_COLUMN: [f"C-{i:06d}" for i in range(1, n + 1)]})
    return pd.concat([frame, pd.DataFrame({c: cols[c] for c in order})], axis=1)
