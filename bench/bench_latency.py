"""One explanation over HTTP against the naive in-process path a data scientist would write.

For the churn demo model (Pipeline(ColumnTransformer OneHot + XGBoost 300 trees depth 6)) and
a Pipeline(OneHotEncoder + XGBoost 200 trees depth 5), one row per request, side by side
(alternating per row, so machine noise hits both alike):

* naive: ``pipeline[:-1].transform(row)`` + ``shap.TreeExplainer(model).shap_values(...)`` on
  that one row (path-dependent SHAP on log-odds), the explainer built once (the strict
  baseline; building it per call is also reported);
* crm-explain: ``POST /v1/models/{name}/explain`` through the Flask app in-process (WSGI test
  client: routing, auth, JSON, validation, explanation, rationale, response), in ``log_odds``
  and ``probability`` (interventional TreeSHAP against 100 background rows), with the archive
  disabled and, where ``explainer.archive`` is importable, with a SQLite archive.

    .venv/bin/python bench/bench_latency.py [--requests 300] [--json FILE] [--profile]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import demo_store, machine, median, naive_explainer, quantile
from explainer.config import Settings
from explainer.keys import KeyRing
from explainer.service import ExplainerService
from model_store import FileSystemStore
from model_store.demo import demo_frame

KEY = "bench-crm-key"


def pipeline_model(store: FileSystemStore) -> pd.DataFrame:
    """Register Pipeline(OneHotEncoder + XGBoost 200 trees depth 5) as ``pipeline``; its rows."""
    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from model_store.types import FeatureSchema

    rng = np.random.default_rng(1)
    n = 1500
    data = pd.DataFrame(
        {
            "tenure": rng.integers(0, 73, n),
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], n),
            "charges": rng.normal(70, 20, n).round(2),
            "payment": rng.choice(["card", "bank", "check", "wallet"], n),
        }
    )
    y = (
        (data.contract == "Month-to-month") * 1.2
        - data.tenure / 30
        + (data.payment == "check")
        + rng.normal(0, 1, n)
    ) > 0
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        (
                            "cat",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            ["contract", "payment"],
                        )
                    ],
                    remainder="passthrough",
                ),
            ),
            ("model", xgboost.XGBClassifier(n_estimators=200, max_depth=5, n_jobs=1)),
        ]
    ).fit(data, y.astype(int))
    schema = FeatureSchema.from_dict(
        {
            "task": "binary",
            "target": "churn",
            "positive_class": "1",
            "features": [
                {"name": "tenure", "type": "numeric", "label": "Months", "min": 0, "max": 72},
                {
                    "name": "contract",
                    "type": "categorical",
                    "label": "Contract",
                    "categories": ["Month-to-month", "One year", "Two year"],
                },
                {"name": "charges", "type": "numeric", "label": "Monthly charges"},
                {
                    "name": "payment",
                    "type": "categorical",
                    "label": "Payment",
                    "categories": ["card", "bank", "check", "wallet"],
                },
            ],
        }
    )
    buffer = io.BytesIO()
    joblib.dump(pipe, buffer)
    if "pipeline" not in store.names():
        record = store.register(
            "pipeline", buffer.getvalue(), background=data.iloc[:200], schema=schema
        )
        store.promote("pipeline", record.version)
    return data.iloc[200:].reset_index(drop=True)


def plain(row: pd.Series) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def measure(
    name: str,
    rows: pd.DataFrame,
    service: ExplainerService,
    clients: dict[str, Any],
    requests: int,
) -> dict[str, dict[str, float]]:
    import shap

    model = service.model(name)
    names = model.schema.feature_names
    pipe = model.estimator
    naive = naive_explainer(pipe)
    frames = [rows[names].iloc[[i % len(rows)]].reset_index(drop=True) for i in range(requests)]
    bodies = {
        output: [
            json.dumps(
                {
                    "instances": [{"customer_id": f"B-{i}", "features": plain(f.iloc[0])}],
                    "output": output,
                }
            )
            for i, f in enumerate(frames)
        ]
        for output in ("log_odds", "probability")
    }

    calls: dict[str, Callable[[int], Any]] = {
        "naive (explainer built once)": lambda i: naive(frames[i]),
    }
    for variant, client in clients.items():
        for output in ("log_odds", "probability"):

            def call(i: int, client: Any = client, output: str = output) -> None:
                response = client.post(
                    f"/v1/models/{name}/explain",
                    data=bodies[output][i],
                    headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                )
                assert response.status_code == 200, response.get_data(as_text=True)

            calls[f"HTTP {output}, {variant}"] = call
    for call in calls.values():  # warm-up: caches, tables, kernels
        for i in range(5):
            call(i)
    times: dict[str, list[float]] = {label: [] for label in calls}
    for i in range(requests):
        for label, call in calls.items():
            start = time.perf_counter()
            call(i)
            times[label].append(time.perf_counter() - start)
    per_call = []
    for i in range(min(10, requests)):
        start = time.perf_counter()
        shap.TreeExplainer(pipe[-1]).shap_values(pipe[:-1].transform(frames[i]))
        per_call.append(time.perf_counter() - start)
    times["naive (explainer built per call)"] = per_call
    return {
        label: {"p50_ms": median(t) * 1e3, "p99_ms": quantile(t, 0.99) * 1e3, "n": len(t)}
        for label, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile", action="store_true", help="cProfile the HTTP path")
    args = parser.parse_args()

    import logging

    from explainer.api import create_app

    logging.getLogger("crm_explain").setLevel(logging.WARNING)  # no access log per request

    home = Path(tempfile.mkdtemp(prefix="crm-explain-latency-"))
    store, _ = demo_store(str(home / "models"))
    pipeline_rows = pipeline_model(store)
    settings = Settings.from_env(
        {"CRM_EXPLAIN_HOME": str(home)}, api_keys={KEY: "crm"}, archive_enabled=False
    )
    keys = KeyRing.from_plain({KEY: "crm"})
    service = ExplainerService(store)
    service.warm_up()
    clients: dict[str, Any] = {
        "no archive": create_app(settings, service=service, keys=keys).test_client()
    }
    archived = None
    try:
        from explainer.archive import Secrets, open_archive

        archived = ExplainerService(
            store,
            archive=open_archive(f"sqlite:///{home / 'archive.db'}", Secrets.load_or_create(home)),
        )
        archived.warm_up()
        clients["SQLite archive"] = create_app(settings, service=archived, keys=keys).test_client()
    except ImportError as exc:
        print(f"(SQLite archive variant skipped: {exc})")

    # what the API would do with the fast TreeSHAP tables for log-odds (batch runs' default)
    from explainer.methods import LimeExplainer, ShapExplainer

    fast = ExplainerService(
        store, explainers={"shap": ShapExplainer(contributions="fast"), "lime": LimeExplainer()}
    )
    fast.warm_up()
    clients["no archive, fast TreeSHAP tables"] = create_app(
        settings, service=fast, keys=keys
    ).test_client()
    rows = {"churn": demo_frame("churn", 500, seed=77), "pipeline": pipeline_rows}
    if args.profile:
        import cProfile
        import pstats

        client = clients["no archive"]
        body = json.dumps(
            {
                "instances": [
                    {
                        "features": plain(
                            rows["churn"][service.model("churn").schema.feature_names].iloc[0]
                        )
                    }
                ],
                "output": "log_odds",
            }
        )
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        for _ in range(20):
            client.post("/v1/models/churn/explain", data=body, headers=headers)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(200):
            client.post("/v1/models/churn/explain", data=body, headers=headers)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumtime").print_stats(30)
        return

    results = {name: measure(name, rows[name], service, clients, args.requests) for name in rows}
    print(f"# latency, one row per request, {args.requests} requests; machine: {machine()}")
    for name, table in results.items():
        naive = table["naive (explainer built once)"]
        print(f"\n## {name}\n")
        print("| path | p50 ms | p99 ms | p50 / naive p50 | p99 / naive p99 | p99 / naive p50 |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, t in table.items():
            print(
                f"| {label} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | "
                f"{t['p50_ms'] / naive['p50_ms']:.2f} | {t['p99_ms'] / naive['p99_ms']:.2f} | "
                f"{t['p99_ms'] / naive['p50_ms']:.2f} |"
            )
    if archived is not None:
        archived.close()
    if args.json:
        args.json.write_text(json.dumps(results | {"machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
