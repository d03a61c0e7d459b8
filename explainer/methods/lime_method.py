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
(randomised quasi-Monte Carlo, scrambled by the request's seed) instead of independent draws.
Every sample still has LIME's distribution, but the samples fill the neighbourhood evenly, so
the surrogate's coefficients carry about half the sampling noise of independent draws with fewer
samples: the top drivers stop changing from seed to seed.

How many samples: by default, as many as the decision needs. The sequence is drawn in blocks
that double its length, from ``NUM_SAMPLES`` up to ``MAX_SAMPLES`` (powers of two, where Sobol
points are balanced), and stops once the top ``SETTLED_TOP`` drivers are settled: each of them
leads every other feature by at least ``SETTLED_Z`` standard errors of the difference. The
standard errors are the coefficients' sandwich (heteroscedasticity-robust) ones, as if the
samples were independent, which overstates the Sobol samples' spread 2-5 times on the demo
models: half of such a standard error is one to two and a half true ones. Clear decisions stop
at the first block; near-ties at the top-5 boundary get more samples, up to the cap.

The rule looks only at the row, the model and the seed, never at the clock: the same request
always gives the same answer, bit for bit. ``num_samples`` in the settings is what was drawn,
the row included (as in lime); passed back explicitly, it draws and scores the same samples in
the same blocks, so the replay is bit for bit too. An explicit ``num_samples`` is used exactly,
without the rule. The per-model part (discretizer, frequencies) is built once per model, and
each block is scored through the model in one call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from explainer.methods._model import PreparedModel
from explainer.methods.base import AttributionBatch
from explainer.types import OutputSpace

#: Sobol samples first drawn around each decision (a power of two; the explained row comes on
#: top); they double while the top drivers are not settled, up to ``MAX_SAMPLES``.
NUM_SAMPLES = 2048
MAX_SAMPLES = 16384
#: The drivers that must be settled (more than the rationale's and the review check's three) ...
SETTLED_TOP = 5
#: ... each ahead of every other feature by this many standard errors of the difference.
SETTLED_Z = 0.5
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


@dataclass(frozen=True)
class Fit:
    """A weighted ridge fit: coefficients, intercept, weighted R^2, and the coefficients'
    sandwich (heteroscedasticity-robust) standard errors over independent samples."""

    coef: np.ndarray
    intercept: float
    r2: float
    std_error: np.ndarray

    def settled(self, top: int = SETTLED_TOP, z: float = SETTLED_Z) -> bool:
        """Whether each of the ``top`` largest |coefficients| exceeds every other one by at
        least ``z`` standard errors of the difference (a tie without error is settled: no
        sample can change it)."""
        size = np.abs(self.coef)
        if len(size) <= top:
            return True
        order = np.argsort(-size, kind="stable")
        lead, rest = order[:top], order[top:]
        gap = size[lead][:, None] - size[rest][None, :]
        error = np.hypot(self.std_error[lead][:, None], self.std_error[rest][None, :])
        return bool(np.all(gap >= z * error))


def fit_weighted_ridge(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float = RIDGE_ALPHA
) -> Fit:
    """scikit-learn's ``Ridge(alpha).fit(x, y, sample_weight=weights)`` in closed form, with
    its weighted R^2 and the coefficients' sandwich standard errors."""
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
    scaled = xc * (weights * residual)[:, None]
    bread = np.linalg.inv(gram)
    covariance = bread @ (scaled.T @ scaled) @ bread
    std_error = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    return Fit(coef, intercept, r2, std_error)


def lime_kernel(binary: np.ndarray) -> np.ndarray:
    """LIME's weights of samples given by their binary representation."""
    m = binary.shape[1]
    distance2 = m - binary.sum(axis=1)
    return np.asarray(np.sqrt(np.exp(-distance2 / (KERNEL_WIDTH * np.sqrt(m)) ** 2)))


def _next_points(sobol: Any, n: int) -> np.ndarray:
    """The sequence's next ``n`` points. Where the total would not be a power of two (only an
    explicit ``num_samples`` asks for that, and only in its last block), the points come from
    the next power of two, cut: the same points, without scipy's balance warning."""
    total = sobol.num_generated + n
    whole = 1 << (total - 1).bit_length()
    return np.asarray(sobol.random(whole - sobol.num_generated)[:n])


class LimeExplainer:
    """LIME with scrambled Sobol samples. ``num_samples`` (the explained row included, as in
    lime) fixes how many samples every decision gets; by default (``None``) each decision gets
    what it needs to settle its top drivers, from ``NUM_SAMPLES + 1`` to ``MAX_SAMPLES + 1``."""

    name = "lime"

    def __init__(self, *, num_samples: int | None = None) -> None:
        if num_samples is not None and num_samples < 2:
            raise ValueError(
                f"num_samples must be at least 2 (the row and one sample), not {num_samples}"
            )
        self.num_samples = num_samples
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
        used: list[int] = []
        codes = model.codec.encode(frame)
        neighbourhood = self._neighbourhood(model)
        for i in range(len(frame)):
            fit, samples = self._one(
                model, neighbourhood, codes[i], int(class_indices[i]), output, seed
            )
            values[i], base[i] = fit.coef, fit.intercept
            quality.append({"r2": fit.r2})
            used.append(samples)
        scores = model.score_in(frame, class_indices, output)
        for i, row_quality in enumerate(quality):
            row_quality["surrogate_error"] = float(abs(base[i] + values[i].sum() - scores[i]))
        meta: dict[str, Any] = {
            "algorithm": "lime_tabular",
            "num_samples_rule": self.rule,
            "discretizer": "quartile",
            "sampling": "sobol_scrambled",
            "background_rows": len(model.background),
        }
        return AttributionBatch(
            values=values,
            base_values=base,
            scores=scores,
            quality=quality,
            meta=meta,
            # what each row drew, the row included
            row_meta=[{"num_samples": n} for n in used],
        )

    def row_independent(self, model: PreparedModel, output: OutputSpace) -> bool:
        """Never: every row of a request is sampled with the request's seed."""
        return False

    @property
    def rule(self) -> str:
        """How the sample count was chosen, for the settings."""
        if self.num_samples is not None:
            return "fixed"
        first, most = NUM_SAMPLES + 1, MAX_SAMPLES + 1
        return f"adaptive(first={first}, max={most}, top={SETTLED_TOP}, z={SETTLED_Z:g})"

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
    ) -> tuple[Fit, int]:
        """The surrogate of one row, and how many samples it took (the row included).

        The Sobol points are drawn and scored in blocks: ``NUM_SAMPLES`` first, then as many
        again as drawn so far. An explicit ``num_samples`` goes through the same blocks (cut
        at its count) without the stopping rule, so that passing back what the rule drew
        gives the same samples, scores and fit, bit for bit."""
        from scipy.stats import qmc

        adaptive = self.num_samples is None
        wanted = MAX_SAMPLES if self.num_samples is None else self.num_samples - 1
        sobol = qmc.Sobol(
            d=2 * len(neighbourhood.features), scramble=True, seed=np.random.default_rng(seed)
        )
        binary, codes = neighbourhood.at(row, _next_points(sobol, min(NUM_SAMPLES, wanted)))
        scores = model.score_codes(codes, k, output)
        while True:
            drawn = len(scores) - 1
            if drawn >= wanted or adaptive:
                fit = fit_weighted_ridge(binary, scores, lime_kernel(binary))
                if drawn >= wanted or fit.settled():
                    return fit, drawn + 1
            more_binary, more_codes = neighbourhood.at(
                row, _next_points(sobol, min(drawn, wanted - drawn))
            )
            binary = np.concatenate([binary, more_binary[1:]])
            scores = np.concatenate([scores, model.score_codes(more_codes[1:], k, output)])
