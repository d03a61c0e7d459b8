"""LIME: crm-explain's LIME against stock lime (LimeTabularExplainer, 5,000 samples).

Both explain the same rows of a demo model in probability space, side by side (alternating);
stock lime gets its explainer built once (reseeded per request) and the same model scoring
function, so only the LIME part differs. Reported: latency per row (p50, p99); the surrogate's
R^2 on its own samples (what ``quality.r2`` reports) and on a common fresh neighbourhood of
20,000 independent samples (out-of-sample fidelity); and the stability of the top-5 drivers
across seeds (mean pairwise Jaccard over the seeds).

    .venv/bin/python bench/bench_lime.py [--rows 20] [--seeds 5] [--model churn]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import demo_store, machine, median, quantile
from explainer.methods import LimeExplainer, PreparedModel
from explainer.methods.lime_method import KERNEL_WIDTH
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--model", default="churn")
    parser.add_argument("--samples", type=int, default=5000, help="stock lime's samples")
    parser.add_argument("--ours-samples", type=int, default=None, help="crm-explain's samples")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    store, _ = demo_store()
    from explainer.service import ExplainerService

    service = ExplainerService(store)
    model = service.model(args.model)
    k = 1 if len(model.classes) == 2 else 0
    if model.schema.positive_class:
        k = model.class_index(model.schema.positive_class)
    frame = demo_frame(args.model, args.rows, seed=101)[model.schema.feature_names]
    codes = model.codec.encode(frame)
    ours = (
        LimeExplainer()
        if args.ours_samples is None
        else LimeExplainer(num_samples=args.ours_samples)
    )
    stock = stock_lime(model, k, args.samples)
    seeds = [11 + 7919 * s for s in range(args.seeds)]
    classes = np.array([k])

    def run_ours(i: int, seed: int) -> tuple[np.ndarray, float, float]:
        batch = ours.explain(model, frame.iloc[[i]], classes, "probability", seed=seed)
        return batch.values[0], float(batch.base_values[0]), float(batch.quality[0]["r2"] or 0.0)

    neighbourhood = ours._neighbourhood(model)
    m = len(model.schema.features)

    def holdout(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A common fresh neighbourhood of row i: binary representation, scores, weights."""
        rng = np.random.default_rng(990 + i)
        binary, sample = neighbourhood.at(codes[i], rng.random((HOLDOUT - 1, 2 * m)))
        y = model.score(model.codec.decode(sample), k, "probability")
        weights = np.sqrt(np.exp(-(m - binary.sum(axis=1)) / (KERNEL_WIDTH**2 * m)))
        return binary, y, weights

    def fidelity(
        data: tuple[np.ndarray, np.ndarray, np.ndarray], coef: np.ndarray, b: float
    ) -> float:
        binary, y, weights = data
        mean = weights @ y / weights.sum()
        residual = y - (binary @ coef + b)
        return float(1 - (weights @ residual**2) / (weights @ (y - mean) ** 2))

    run_ours(0, 1)  # build the per-model part once, as a serving worker does
    stock(codes[0], 1)  # type: ignore[operator]
    results: dict[str, dict[str, list[float]]] = {
        "stock": {"t": [], "r2": [], "r2_holdout": [], "jaccard": []},
        "crm-explain": {"t": [], "r2": [], "r2_holdout": [], "jaccard": []},
    }
    for i in range(args.rows):
        common = holdout(i)
        per: dict[str, list[np.ndarray]] = {"stock": [], "crm-explain": []}
        for seed in seeds:
            # side by side, alternating, so that machine noise hits both alike
            for name in ("stock", "crm-explain"):
                start = time.perf_counter()
                if name == "stock":
                    weights, base, r2 = stock(codes[i], seed)  # type: ignore[operator]
                else:
                    weights, base, r2 = run_ours(i, seed)
                results[name]["t"].append(time.perf_counter() - start)
                results[name]["r2"].append(r2)
                results[name]["r2_holdout"].append(fidelity(common, weights, base))
                per[name].append(weights)
        for name in per:
            results[name]["jaccard"].append(jaccard_across_seeds(per[name]))
    summary = {
        name: {
            "p50_ms": median(r["t"]) * 1e3,
            "p99_ms": quantile(r["t"], 0.99) * 1e3,
            "r2_mean": float(np.mean(r["r2"])),
            "r2_median": median(r["r2"]),
            "r2_holdout": float(np.mean(r["r2_holdout"])),
            "top5_jaccard": float(np.mean(r["jaccard"])),
        }
        for name, r in results.items()
    }
    ratio = summary["crm-explain"]["p50_ms"] / summary["stock"]["p50_ms"]
    samples = {"stock": f"{args.samples} iid", "crm-explain": f"{ours.num_samples + 1} Sobol"}
    print(f"# LIME, {args.model}, {args.rows} rows x {args.seeds} seeds")
    print(f"# machine: {machine()}")
    print(
        "| | samples | p50 ms | p99 ms | R^2 (own samples, mean) | R^2 (own, median) "
        "| R^2 (common holdout, mean) | top-5 Jaccard across seeds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in summary.items():
        print(
            f"| {name} | {samples[name]} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
            f"{s['r2_mean']:.4f} | {s['r2_median']:.4f} | {s['r2_holdout']:.4f} | "
            f"{s['top5_jaccard']:.3f} |"
        )
    print(f"p50 ratio crm-explain / stock: {ratio:.2f} (target <= 0.6)")
    if args.json:
        args.json.write_text(json.dumps(summary | {"ratio": ratio, "machine": machine()}))


if __name__ == "__main__":
    main()
