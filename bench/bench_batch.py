"""Batch explanations of the churn demo model against XGBoost's native pred_contribs.

In one run, on the same rows (21,000 by default):

* baseline: the pipeline's own transform + ``booster.predict(DMatrix, pred_contribs=True)``
  on all cores, in memory (no file, no validation, no explanation objects);
* ``crm-explain explain`` (``run_batch``), parquet in and out, with every row validated and
  explained: log-odds with the fast TreeSHAP tables and with XGBoost's own pred_contribs,
  probability (interventional TreeSHAP against 100 background rows), and jsonl output;
* exactness of the fast tables: the largest difference from XGBoost's pred_contribs per raw
  feature over all rows, and both against shap's float64 TreeSHAP on a subset;
* the Dask engine on a local cluster of 1 and then 2 worker processes (optional: ``--dask``).

    .venv/bin/python bench/bench_batch.py [--rows 21000] [--dask] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import demo_store, machine
from explainer.batch import BatchOptions, run_batch
from explainer.service import ExplainerService
from model_store.demo import demo_frame


def baseline(model: Any, frame: Any) -> tuple[float, np.ndarray]:
    import xgboost

    start = time.perf_counter()
    encoded = model.estimator[:-1].transform(frame[model.schema.feature_names])
    booster = model.final_estimator.get_booster()
    contribs = booster.predict(
        xgboost.DMatrix(np.asarray(encoded, dtype=float)), pred_contribs=True
    )
    return time.perf_counter() - start, np.asarray(contribs, dtype=float)


def batch(store: Any, source: Path, target: Path, **options: Any) -> float:
    start = time.perf_counter()
    run_batch(BatchOptions("churn", str(source), str(target), progress=False, **options), store)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=21_000)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dask", action="store_true", help="also time the Dask engine")
    parser.add_argument("--dask-treeshap", default="fast,xgboost")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crm-explain-bench-"))
    store, _ = demo_store(str(work / "models"))
    service = ExplainerService(store)
    model = service.model("churn")
    frame = demo_frame("churn", args.rows, seed=2026)
    source = work / "churn.parquet"
    frame.to_parquet(source, index=False)
    n = len(frame)
    results: dict[str, Any] = {"rows": n, "machine": machine(), "threads": args.threads}

    # warm up every path once (numba kernels load from their cache, tables are built)
    small = work / "small.parquet"
    frame.iloc[:50].to_parquet(small, index=False)
    for space in ("log_odds", "probability"):
        batch(store, small, work / "warm.parquet", output_space=space, threads=1)

    seconds, native = baseline(model, frame)
    results["native_pred_contribs_s"] = seconds
    timed = {
        "log_odds, fast tables, parquet": {"output_space": "log_odds", "treeshap": "fast"},
        "log_odds, XGBoost pred_contribs, parquet": {
            "output_space": "log_odds",
            "treeshap": "xgboost",
        },
        "log_odds, fast tables, jsonl": {"output_space": "log_odds", "treeshap": "fast"},
        "probability, parquet": {"output_space": "probability"},
    }
    for label, options in timed.items():
        target = work / ("out.jsonl" if "jsonl" in label else "out.parquet")
        results[label] = batch(store, source, target, threads=args.threads, **options)
        if label.startswith("log_odds, fast tables, parquet"):
            import pandas as pd

            out = pd.read_parquet(target)
            names = model.schema.feature_names
            native_raw = model.sum_to_raw(native[:, :-1])
            results["max_abs_diff_vs_xgboost_raw"] = float(
                np.abs(out[names].to_numpy() - native_raw).max()
            )
    # exactness against shap's float64 TreeSHAP on a subset
    import shap

    explainer = shap.TreeExplainer(
        model.final_estimator, feature_perturbation="tree_path_dependent"
    )
    explainer.model.model_type = "internal"
    sub = model.transform(frame.iloc[:2000])
    reference = model.sum_to_raw(explainer.shap_values(sub, check_additivity=False))
    fast = model.sum_to_raw(model.xgb_contributions(sub, algorithm="fast")[:, :-1])
    results["max_abs_diff_fast_vs_float64"] = float(np.abs(fast - reference).max())
    results["max_abs_diff_xgboost_vs_float64"] = float(
        np.abs(model.sum_to_raw(native[:2000, :-1]) - reference).max()
    )

    if args.dask:
        from distributed import Client, LocalCluster

        for treeshap in args.dask_treeshap.split(","):
            for workers in (1, 2):
                with (
                    LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    ) as cluster,
                    Client(cluster),
                ):
                    options = {"output_space": "log_odds", "engine": "dask", "treeshap": treeshap}
                    address = cluster.scheduler_address
                    batch(store, small, work / "warm.parquet", scheduler=address, **options)
                    results[f"dask, {workers} worker(s), log_odds, {treeshap}"] = batch(
                        store, source, work / "dask.parquet", scheduler=address, **options
                    )

    base_rate = n / results["native_pred_contribs_s"]
    print(f"# batch, churn, {n} rows; machine: {results['machine']}")
    print("| run | seconds | rows/s | x native |")
    print("|---|---:|---:|---:|")
    print(
        f"| XGBoost native pred_contribs + transform | {results['native_pred_contribs_s']:.2f} "
        f"| {base_rate:.0f} | 1.00 |"
    )
    for label, value in results.items():
        if isinstance(value, float) and (label in timed or label.startswith("dask")):
            rate = n / value
            print(
                f"| crm-explain explain, {label} | {value:.2f} | {rate:.0f} "
                f"| {rate / base_rate:.2f} |"
            )
    print(
        f"fast tables vs XGBoost pred_contribs, max |diff| per raw feature over {n} rows: "
        f"{results['max_abs_diff_vs_xgboost_raw']:.2e}; against float64 TreeSHAP (2000 rows): "
        f"fast {results['max_abs_diff_fast_vs_float64']:.2e}, "
        f"XGBoost {results['max_abs_diff_xgboost_vs_float64']:.2e}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
