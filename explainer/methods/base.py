"""What every explanation method provides: attributions per RAW feature for a batch of rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from explainer.methods._model import PreparedModel
from explainer.types import OutputSpace


@dataclass(frozen=True)
class AttributionBatch:
    """``values[i, j]`` is raw feature j's contribution for row i; ``base_values[i] +
    values[i].sum()`` is ``explained[i]`` (exactly for SHAP, the surrogate's value for LIME)."""

    values: np.ndarray
    base_values: np.ndarray
    #: The model's own score of each row in the requested output space.
    scores: np.ndarray
    quality: list[dict[str, float | None]]
    #: The settings of every row...
    meta: dict[str, Any] = field(default_factory=dict)
    #: ... and those of each row alone (LIME's sample count, say), which win over ``meta``.
    row_meta: list[dict[str, Any]] | None = None


class Explainer(Protocol):
    name: str

    def explain(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        class_indices: np.ndarray,
        output: OutputSpace,
        *,
        seed: int,
    ) -> AttributionBatch:
        """Explain each row of ``frame`` (raw features) for its class in ``class_indices``."""
        ...

    def row_independent(self, model: PreparedModel, output: OutputSpace) -> bool:
        """Whether each row's explanation depends on that row alone, neither on the rows
        explained with it nor on the seed: then rows of several requests may be explained in
        one call, each getting what it would get alone."""
        ...


def additivity_errors(batch_values: np.ndarray, base: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.asarray(np.abs(base + batch_values.sum(axis=1) - scores))
