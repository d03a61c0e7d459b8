"""LIME: crm-explain's LIME against stock lime (LimeTabularExplainer, 5,000 samples).

Both explain the same rows of each demo model in probability space, side by side (alternating);
stock lime gets its explainer built once (reseeded per request) and the same model scoring
function, so only the LIME part differs. Reported: latency per row (p50, p99); the surrogate's
R^2 on its own samples (what ``quality.r2`` reports) and on a common fresh neighbourhood of
20,000 independent samples (out-of-sample fidelity); and the stability of the top-5 drivers
across seeds (mean pairwise Jaccard over the seeds). crm-explain runs with its default
(adaptive) sample count unless ``--ours-samples`` fixes it; the samples it drew are reported.

    .venv/bin/python bench/bench_lime.py [--rows 20] [--seeds 5] [--models churn lead_score]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import demo_store, machine, median, quantile
from explainer.methods import LimeExplainer, PreparedModel
from explainer.methods.lime_method import lime_kernel
from explainer.service import ExplainerService
from model_store.demo import demo_frame

TOP = 5
HOLDOUT = 20_000


def stock_lime(model: PreparedModel, k: int, num_samples: int) -> object:
    from lime.lime_tabular import LimeTabularExplainer

    codec = model.codec

    def make(seed: int) -> LimeTabularExplainer:
        return LimeTabularExplainer(
            codec.encode(model.background),
            mode="regression",
            feature_names=codec.names,
            categorical_features=codec.categorical_indices,
            categorical_names={
                j: list(model.schema.features[j].categories or ())
                for j in codec.categorical_indices
            },
            discretize_continuous=True,
            random_state=seed,
        )

    explainer = make(0)

    def explain(row: np.ndarray, seed: int) -> tuple[np.ndarray, float, float]:
        from sklearn.utils import check_random_state

        state = check_random_state(seed)
        explainer.random_state = state  # reseed the one explainer per request
        assert explainer.discretizer is not None
        explainer.discretizer.random_state = state
        result = explainer.explain_instance(
            row,
            lambda codes: model.score(codec.decode(codes), k, "probability"),
            num_features=len(codec.names),
            num_samples=num_samples,
        )
        weights = np.zeros(len(codec.names))
        for j, weight in result.local_exp[1]:
            weights[j] = weight
        return weights, float(result.intercept[1]), float(result.score)

    return explain


def jaccard_across_seeds(weights_by_seed: list[np.ndarray]) -> float:
    tops = [set(np.argsort(-np.abs(w), kind="stable")[:TOP]) for w in weights_by_seed]
    pairs = list(itertools.combinations(tops, 2))
    return float(np.mean([len(a & b) / len(a | b) for a, b in pairs]))


def bench_model(
    service: ExplainerService, name: str, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Stock lime and crm-explain on ``args.rows`` rows of model ``name``, ``args.seeds``
    seeds each: a summary per explainer."""
    model = service.model(name)
    k = 1 if len(model.classes) == 2 else 0
    if model.schema.positive_class:
        k = model.class_index(model.schema.positive_class)
    frame = demo_frame(name, args.rows, seed=101)[model.schema.feature_names]
    codes = model.codec.encode(frame)
    ours = LimeExplainer(num_samples=args.ours_samples)
    stock = stock_lime(model, k, args.samples)
    seeds = [11 + 7919 * s for s in range(args.seeds)]
    classes = np.array([k])
    drawn: list[int] = []

    def run_ours(i: int, seed: int) -> tuple[np.ndarray, float, float]:
        batch = ours.explain(model, frame.iloc[[i]], classes, "probability", seed=seed)
        assert batch.row_meta is not None
        drawn.append(int(batch.row_meta[0]["num_samples"]))
        return batch.values[0], float(batch.base_values[0]), float(batch.quality[0]["r2"] or 0.0)

    neighbourhood = ours._neighbourhood(model)
    m = len(model.schema.features)

    def holdout(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A common fresh neighbourhood of row i: binary representation, scores, weights."""
        rng = np.random.default_rng(990 + i)
        binary, sample = neighbourhood.at(codes[i], rng.random((HOLDOUT - 1, 2 * m)))
        y = model.score(model.codec.decode(sample), k, "probability")
        return binary, y, lime_kernel(binary)

    def fidelity(
        data: tuple[np.ndarray, np.ndarray, np.ndarray], coef: np.ndarray, b: float
    ) -> float:
        binary, y, weights = data
        mean = weights @ y / weights.sum()
        residual = y - (binary @ coef + b)
        return float(1 - (weights @ residual**2) / (weights @ (y - mean) ** 2))

    run_ours(0, 1)  # build the per-model part once, as a serving worker does
    stock(codes[0], 1)  # type: ignore[operator]
    drawn.clear()
    results: dict[str, dict[str, list[float]]] = {
        "stock": {"t": [], "r2": [], "r2_holdout": [], "jaccard": []},
        "crm-explain": {"t": [], "r2": [], "r2_holdout": [], "jaccard": []},
    }
    for i in range(args.rows):
        common = holdout(i)
        per: dict[str, list[np.ndarray]] = {"stock": [], "crm-explain": []}
        for seed in seeds:
            # side by side, alternating, so that machine noise hits both alike
            for who in ("stock", "crm-explain"):
                start = time.perf_counter()
                if who == "stock":
                    weights, base, r2 = stock(codes[i], seed)  # type: ignore[operator]
                else:
                    weights, base, r2 = run_ours(i, seed)
                results[who]["t"].append(time.perf_counter() - start)
                results[who]["r2"].append(r2)
                results[who]["r2_holdout"].append(fidelity(common, weights, base))
                per[who].append(weights)
        for who in per:
            results[who]["jaccard"].append(jaccard_across_seeds(per[who]))
    counts = Counter(drawn)
    summary: dict[str, dict[str, Any]] = {
        who: {
            "p50_ms": median(r["t"]) * 1e3,
            "p99_ms": quantile(r["t"], 0.99) * 1e3,
            "mean_ms": float(np.mean(r["t"])) * 1e3,
            "r2_mean": float(np.mean(r["r2"])),
            "r2_median": median(r["r2"]),
            "r2_holdout": float(np.mean(r["r2_holdout"])),
            "top5_jaccard": float(np.mean(r["jaccard"])),
        }
        for who, r in results.items()
    }
    summary["stock"]["samples"] = f"{args.samples} iid"
    summary["crm-explain"]["samples"] = " / ".join(
        f"{n} x{100 * c / len(drawn):.0f}%" for n, c in sorted(counts.items())
    )
    summary["crm-explain"]["samples_mean"] = float(np.mean(drawn))
    summary["ratio"] = {"p50": summary["crm-explain"]["p50_ms"] / summary["stock"]["p50_ms"]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--models", "--model", nargs="+", default=["churn", "lead_score"], help="demo models"
    )
    parser.add_argument("--samples", type=int, default=5000, help="stock lime's samples")
    parser.add_argument(
        "--ours-samples",
        type=int,
        default=None,
        help="crm-explain's samples, the row included (default: its adaptive count)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    store, _ = demo_store()
    service = ExplainerService(store)
    summaries = {name: bench_model(service, name, args) for name in args.models}
    print(f"# LIME, {' and '.join(args.models)}, {args.rows} rows x {args.seeds} seeds")
    print(f"# machine: {machine()}")
    print(
        "| model | | samples (share of requests) | p50 ms | p99 ms | mean ms "
        "| R^2 (own samples, mean) | R^2 (own, median) | R^2 (common holdout, mean) "
        "| top-5 Jaccard across seeds |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, summary in summaries.items():
        for who in ("stock", "crm-explain"):
            s = summary[who]
            print(
                f"| {name} | {who} | {s['samples']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                f"{s['mean_ms']:.1f} | {s['r2_mean']:.4f} | {s['r2_median']:.4f} | "
                f"{s['r2_holdout']:.4f} | {s['top5_jaccard']:.3f} |"
            )
    for name, summary in summaries.items():
        ours = summary["crm-explain"]
        print(
            f"{name}: p50 ratio crm-explain / stock {summary['ratio']['p50']:.2f} "
            f"(target <= 0.6); mean samples drawn {ours['samples_mean']:.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"models": summaries, "machine": machine()}))


if __name__ == "__main__":
    main()
