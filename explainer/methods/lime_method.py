"""LIME attributions: a local linear surrogate fitted around each decision.

This is LIME's tabular algorithm (``lime.lime_tabular.LimeTabularExplainer`` with
``discretize_continuous=True``, the quartile discretizer, ``mode="regression"``), computed
directly with numpy:

* the neighbourhood: each raw feature is drawn independently from the background sample's
  distribution (categories by their frequency; numeric features by quartile bin, then a value
  inside the bin from the bin's truncated normal); a sample's binary representation marks the
  features that fell in the explained row's own category or bin; the first sample is the row;
* the weights: LIME's kernel ``sqrt(exp(-d^2 / w^2))`` with ``d`` the number of differing
  features' square root and ``w = 0.75 * sqrt(M)``;
* the surrogate: ridge regression (alpha 1, intercept) on the binary representation, by
  weighted least squares; its coefficients are the attributions, its intercept the base value,
  and its weighted R^2 is ``quality.r2``.

What differs from the library is how the neighbourhood is drawn: a scrambled Sobol sequence
(randomised quasi-Monte Carlo, scrambled by the request's seed) instead of independent draws,
over ``2**k`` samples. Every sample still has LIME's distribution, but the samples fill the
neighbourhood evenly, so the surrogate's coefficients carry about half the sampling noise of
independent draws with fewer samples: the top drivers stop changing from seed to seed. The
per-model part (discretizer, frequencies) is built once per model, and the samples are scored
through the model in one call. Each request brings its own seed: the same request always gives
the same answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from explainer.methods._model import PreparedModel
from explainer.methods.base import AttributionBatch
from explainer.types import OutputSpace

#: Sobol samples drawn around each decision (a power of two; the explained row comes on top).
NUM_SAMPLES = 4096
#: LIME's kernel width is this times the square root of the number of features.
KERNEL_WIDTH = 0.75
#: The surrogate's ridge penalty (lime's ``Ridge(alpha=1)``).
RIDGE_ALPHA = 1.0
#: lime adds this to every bin's standard deviation.
STD_EPSILON = 1e-11


@dataclass(frozen=True)
class _Feature:
    """One raw feature's neighbourhood distribution, from the background sample."""

    categorical: bool
    #: the values a sample may take, as codes (category index, or bin index), and their odds
    values: np.ndarray
    cumulative: np.ndarray
    #: numeric: quartile boundaries and each bin's [min, max], mean and standard deviation
    quartiles: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def code_of(self, value: float) -> float:
        """The instance's category index, or its quartile bin."""
        if self.categorical:
            return value
        return float(np.searchsorted(self.quartiles, value))


@dataclass(frozen=True)
class _Neighbourhood:
    features: tuple[_Feature, ...]

    @classmethod
    def of(cls, background: np.ndarray, categorical: list[int]) -> _Neighbourhood:
        features = []
        for j in range(background.shape[1]):
            column = background[:, j]
            if j in categorical:
                values, counts = np.unique(column, return_counts=True)
                empty = np.zeros(0)
                features.append(
                    _Feature(True, values, _cumulative(counts), empty, empty, empty, empty, empty)
                )
                continue
            quartiles = np.unique(np.percentile(column, [25, 50, 75]))
            bins = np.searchsorted(quartiles, column)
            n_bins = len(quartiles) + 1
            mean = np.zeros(n_bins)
            std = np.zeros(n_bins)
            for b in range(n_bins):
                selection = column[bins == b]
                if len(selection):
                    mean[b], std[b] = np.mean(selection), np.std(selection)
            std += STD_EPSILON
            low = np.concatenate([[column.min()], quartiles])
            high = np.concatenate([quartiles, [column.max()]])
            values, counts = np.unique(bins, return_counts=True)
            features.append(
                _Feature(
                    False,
                    values.astype(float),
                    _cumulative(counts),
                    quartiles,
                    low,
                    high,
                    mean,
                    std,
                )
            )
        return cls(tuple(features))

    def sample(
        self, row: np.ndarray, draws: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``draws`` samples around ``row`` (codes), after the row itself: their binary
        representation and their raw codes."""
        from scipy.stats import qmc

        points = qmc.Sobol(d=2 * len(self.features), scramble=True, seed=rng).random(draws)
        return self.at(row, points)

    def at(self, row: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The samples at ``points`` in the unit cube (2M columns: the first M pick categories
        and bins, the next M place values inside bins), after ``row`` itself."""
        from scipy.special import ndtr, ndtri

        m = len(self.features)
        draws = len(points)
        binary = np.ones((draws + 1, m))
        codes = np.empty((draws + 1, m))
        codes[0] = row
        for j, feature in enumerate(self.features):
            last = len(feature.values) - 1
            index = np.minimum(
                np.searchsorted(feature.cumulative, points[:, j], side="right"), last
            )
            picked = feature.values[index]
            binary[1:, j] = picked == feature.code_of(row[j])
            if feature.categorical:
                codes[1:, j] = picked
                continue
            b = picked.astype(int)
            mean, std = feature.mean[b], feature.std[b]
            lo = (feature.low[b] - mean) / std
            hi = (feature.high[b] - mean) / std
            # the bin's truncated normal, by its inverse CDF (mirrored where that is exacter)
            flip = lo > 0
            a, c = np.where(flip, -hi, lo), np.where(flip, -lo, hi)
            p_a, p_c = ndtr(a), ndtr(c)
            z = ndtri(p_a + points[:, m + j] * (p_c - p_a))
            z = np.clip(np.where(flip, -z, z), lo, hi)
            codes[1:, j] = np.where(lo == hi, feature.low[b], mean + std * z)
        return binary, codes


def _cumulative(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts / counts.sum())


def weighted_ridge(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float = RIDGE_ALPHA
) -> tuple[np.ndarray, float, float]:
    """scikit-learn's ``Ridge(alpha).fit(x, y, sample_weight=weights)`` in closed form:
    (coefficients, intercept, weighted R^2 of the fit)."""
    total = weights.sum()
    x_mean = weights @ x / total
    y_mean = float(weights @ y / total)
    xc = x - x_mean
    yc = y - y_mean
    gram = xc.T @ (xc * weights[:, None])
    gram[np.diag_indices_from(gram)] += alpha
    coef = np.linalg.solve(gram, xc.T @ (yc * weights))
    intercept = y_mean - float(x_mean @ coef)
    residual = y - (x @ coef + intercept)
    spread = float(weights @ (y - y_mean) ** 2)
    r2 = 1.0 - float(weights @ residual**2) / spread if spread > 0 else 0.0
    return coef, intercept, r2


class LimeExplainer:
    name = "lime"

    def __init__(self, *, num_samples: int = NUM_SAMPLES) -> None:
        #: Sobol sequences are balanced over powers of two: other counts are rounded up.
        self.num_samples = 1 << max(1, int(num_samples - 1).bit_length())
        self._neighbourhoods: dict[tuple[str, int, str], _Neighbourhood] = {}
        self._lock = threading.Lock()

    def explain(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        class_indices: np.ndarray,
        output: OutputSpace,
        *,
        seed: int,
    ) -> AttributionBatch:
        n_features = len(model.schema.features)
        values = np.zeros((len(frame), n_features))
        base = np.zeros(len(frame))
        quality: list[dict[str, float | None]] = []
        codes = model.codec.encode(frame)
        neighbourhood = self._neighbourhood(model)
        for i in range(len(frame)):
            weights, intercept, r2 = self._one(
                model, neighbourhood, codes[i], int(class_indices[i]), output, seed
            )
            values[i], base[i] = weights, intercept
            quality.append({"r2": r2})
        scores = model.score_in(frame, class_indices, output)
        for i, row_quality in enumerate(quality):
            row_quality["surrogate_error"] = float(abs(base[i] + values[i].sum() - scores[i]))
        meta = {
            "algorithm": "lime_tabular",
            "num_samples": self.num_samples + 1,
            "discretizer": "quartile",
            "sampling": "sobol_scrambled",
            "background_rows": len(model.background),
        }
        return AttributionBatch(
            values=values, base_values=base, scores=scores, quality=quality, meta=meta
        )

    def _neighbourhood(self, model: PreparedModel) -> _Neighbourhood:
        key = (model.record.name, model.record.version, model.record.sha256)
        with self._lock:
            if key not in self._neighbourhoods:
                codec = model.codec
                self._neighbourhoods[key] = _Neighbourhood.of(
                    codec.encode(model.background), codec.categorical_indices
                )
            return self._neighbourhoods[key]

    def _one(
        self,
        model: PreparedModel,
        neighbourhood: _Neighbourhood,
        row: np.ndarray,
        k: int,
        output: OutputSpace,
        seed: int,
    ) -> tuple[np.ndarray, float, float]:
        rng = np.random.default_rng(seed)
        binary, codes = neighbourhood.sample(row, self.num_samples, rng)
        scores = model.score_codes(codes, k, output)
        m = binary.shape[1]
        distance2 = m - binary.sum(axis=1)
        width = KERNEL_WIDTH * np.sqrt(m)
        weights = np.sqrt(np.exp(-distance2 / width**2))
        coef, intercept, r2 = weighted_ridge(binary, scores, weights)
        return coef, intercept, r2
