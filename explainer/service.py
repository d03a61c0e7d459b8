"""The one entry the API, the CLI and batch jobs call.

``ExplainerService`` loads models from the registry (verified, once per process), runs an
explanation method, writes the rationale and archives every explanation it hands out before
handing it out.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from explainer.config import Settings
from explainer.exceptions import NotFound, Unavailable, ValidationError
from explainer.methods import AttributionBatch, Explainer, PreparedModel, build_explainers
from explainer.methods.registry import get_explainer
from explainer.rationale import band_for, rationale
from explainer.types import (
    Attribution,
    Explanation,
    Method,
    ModelRef,
    OutputSpace,
    Prediction,
)
from explainer.validation import validate_instances
from model_store.base import ModelStore
from model_store.errors import ModelNotFound
from model_store.types import ModelRecord

if TYPE_CHECKING:
    from explainer.archive import Archive

#: Rows a global importance is computed over at most.
IMPORTANCE_ROWS = 1000
#: Libraries whose versions every explanation records, so an auditor can replay it.
PROVENANCE = ("shap", "lime", "xgboost", "scikit-learn", "numpy", "crm-explain")


@dataclass(frozen=True)
class Decision:
    """One row to explain: raw feature values and, optionally, whose decision it is."""

    features: Mapping[str, Any]
    customer_id: str | None = None


class ExplainerService:
    def __init__(
        self,
        store: ModelStore,
        *,
        archive: Archive | None = None,
        explainers: Mapping[str, Explainer] | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.archive = archive
        self._explainers = dict(explainers or build_explainers())
        self._new_id = new_id
        self._models: dict[tuple[str, int, str], PreparedModel] = {}
        self._importances: dict[tuple[str, int, str, str, str], dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.oversight = Oversight(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExplainerService:
        """The service on the configured store and archive."""
        from model_store import open_store

        archive = None
        if settings.archive_enabled:
            from explainer.archive import Secrets, open_archive

            settings.home.mkdir(parents=True, exist_ok=True)
            archive = open_archive(settings.archive_url, Secrets.load_or_create(settings.home))
        return cls(open_store(settings.store_url), archive=archive)

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()

    # -- models -------------------------------------------------------------------------
    def models(self) -> list[ModelRecord]:
        """The serving version of every registered model."""
        return [self.store.get(name) for name in self.store.names()]

    def record(self, name: str, version: int | None = None) -> ModelRecord:
        try:
            return self.store.get(name, version)
        except ModelNotFound as exc:
            raise NotFound(exc.message) from None

    def model(self, name: str, version: int | None = None) -> PreparedModel:
        """The verified, unpickled model, loaded once per process."""
        record = self.record(name, version)
        key = (record.name, record.version, record.sha256)
        with self._lock:
            if key not in self._models:
                loaded = self.store.load(record.name, record.version)
                self._models[key] = PreparedModel.from_loaded(loaded)
            return self._models[key]

    def promote(self, name: str, version: int) -> ModelRecord:
        self.record(name, version)
        return self.store.promote(name, version)

    def readiness(self) -> dict[str, Any]:
        """Ready when at least one model serves and the archive takes writes."""
        failed = self.warm_up()
        serving = [n for n in self.store.names() if n not in failed]
        archive_ok = self.archive is None or self.archive.writable()
        return {
            "ready": bool(serving) and archive_ok,
            "models": serving,
            "refused": failed,
            "archive": "ok" if archive_ok else "unavailable",
        }

    def warm_up(self) -> list[str]:
        """Load every serving model; return the refs of those that failed (they stay refused)."""
        failed = []
        for name in self.store.names():
            try:
                prepared = self.model(name)
                _ = prepared.column_groups
            except Exception:  # one broken model must not stop the others from serving
                failed.append(name)
        return failed

    def card(self, name: str) -> dict[str, Any]:
        records = self._versions(name)
        serving = self.store.get(name)
        return {
            "name": name,
            "version": serving.version,
            "sha256": serving.sha256,
            "stage": serving.stage,
            "schema": serving.schema.to_dict(),
            "versions": [
                {
                    "version": r.version,
                    "stage": r.stage,
                    "sha256": r.sha256,
                    "created_at": r.created_at,
                    "environment": dict(r.environment),
                }
                for r in records
            ],
            **{key: value for key, value in serving.card.items()},
        }

    # -- explanations -------------------------------------------------------------------
    def explain(
        self,
        name: str,
        decisions: Sequence[Decision],
        *,
        method: Method = "shap",
        output: OutputSpace = "probability",
        version: int | None = None,
        class_name: str | None = None,
        top_k: int | None = None,
        request_id: str | None = None,
        archive: bool = True,
    ) -> list[Explanation]:
        model = self.model(name, version)
        rows = validate_instances(model.schema, [d.features for d in decisions])
        frame = pd.DataFrame(rows, columns=model.schema.feature_names)
        explanations = self.explain_frame(
            model,
            frame,
            [d.customer_id for d in decisions],
            method=method,
            output=output,
            class_name=class_name,
            top_k=top_k,
        )
        if archive and self.archive is not None:
            explanations = self._archive(model, explanations, frame, request_id)
        return explanations

    def explain_frame(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        customer_ids: Sequence[str | None],
        *,
        method: Method = "shap",
        output: OutputSpace = "probability",
        class_name: str | None = None,
        top_k: int | None = None,
    ) -> list[Explanation]:
        """Explain already validated raw rows; nothing is archived here. ``top_k`` is how many
        drivers the rationale names; the attributions always cover every raw feature."""
        explainer = get_explainer(self._explainers, method)
        proba = model.predict_proba(frame)
        class_indices = self._explained_classes(model, proba, class_name)
        seed = request_seed(model.record, frame, method, output, class_indices)
        batch = explainer.explain(model, frame, class_indices, output, seed=seed)
        meta = self._meta(model, method, output, seed, batch)
        return [
            self._explanation(
                model,
                frame.iloc[i],
                proba[i],
                int(class_indices[i]),
                customer_ids[i],
                batch,
                i,
                method,
                output,
                meta,
                top_k,
            )
            for i in range(len(frame))
        ]

    # -- importance ---------------------------------------------------------------------
    def importance(
        self,
        name: str,
        version: int | None = None,
        *,
        method: Method = "shap",
        output: OutputSpace | None = None,
        data: pd.DataFrame | None = None,
    ) -> dict[str, Any]:
        """Mean |attribution| per raw feature over the background sample (or ``data``), in
        ``output`` space; by default the model's native one, where SHAP is exact and fast."""
        model = self.model(name, version)
        output = output or model.native_output
        record = model.record
        key = (record.name, record.version, record.sha256, method, output)
        if data is None and key in self._importances:
            return self._importances[key]
        rows = model.background if data is None else _raw_rows(model, data)
        rows = rows.iloc[:IMPORTANCE_ROWS].reset_index(drop=True)
        explanations = self.explain_frame(
            model, rows, [None] * len(rows), method=method, output=output
        )
        result = _importance_table(model, explanations, method, output)
        if data is None:
            self._importances[key] = result
        return result

    def compare(self, refs: Sequence[str], *, method: Method = "shap") -> dict[str, Any]:
        if len(refs) < 2:
            raise ValidationError.for_field("models", "name at least two model@version to compare")
        if len(set(refs)) != len(refs):
            raise ValidationError.for_field("models", "names the same model@version twice")
        tables = {ref: self.importance(*parse_ref(ref), method=method) for ref in refs}
        return _comparison(tables)

    # -- internals ----------------------------------------------------------------------
    def _versions(self, name: str) -> list[ModelRecord]:
        try:
            return self.store.versions(name)
        except ModelNotFound as exc:
            raise NotFound(exc.message) from None

    def _explained_classes(
        self, model: PreparedModel, proba: np.ndarray, class_name: str | None
    ) -> np.ndarray:
        if class_name is not None:
            if class_name not in model.classes:
                raise ValidationError.for_field(
                    "class", f"must be one of {list(model.classes)}, not {class_name!r}"
                )
            return np.full(len(proba), model.class_index(class_name))
        if len(model.classes) == 2:
            positive = model.schema.positive_class or model.classes[1]
            return np.full(len(proba), model.class_index(positive))
        return np.asarray(proba.argmax(axis=1))

    def _explanation(
        self,
        model: PreparedModel,
        row: pd.Series,
        proba: np.ndarray,
        k: int,
        customer_id: str | None,
        batch: AttributionBatch,
        i: int,
        method: Method,
        output: OutputSpace,
        meta: dict[str, Any],
        top_k: int | None,
    ) -> Explanation:
        schema, card = model.schema, model.record.card
        attributions = tuple(
            sorted(
                (
                    Attribution(
                        spec.name, spec.label, _plain(row[spec.name]), float(batch.values[i, j])
                    )
                    for j, spec in enumerate(schema.features)
                ),
                key=lambda a: -abs(a.contribution),
            )
        )
        score = float(proba[k])
        band = band_for(score, card)
        prediction = Prediction(score=score, class_=_predicted_class(model, proba), band=band)
        explained = model.classes[k]
        text = rationale(
            schema=schema,
            card=card,
            attributions=attributions,
            score=score,
            explained_class=explained,
            band=band,
            output=output,
            method=method,
            predicted_class=prediction.class_,
            max_drivers=top_k,
        )
        return Explanation(
            id=self._new_id(),
            customer_id=customer_id,
            model=ModelRef(model.record.name, model.record.version, model.record.sha256),
            prediction=prediction,
            explained_class=explained,
            base_value=float(batch.base_values[i]),
            method=method,
            output=output,
            attributions=attributions,
            rationale=text,
            quality=batch.quality[i],
            meta=meta,
        )

    def _meta(
        self,
        model: PreparedModel,
        method: Method,
        output: OutputSpace,
        seed: int,
        batch: AttributionBatch,
    ) -> dict[str, Any]:
        return {
            "method": method,
            "output": output,
            "seed": seed,
            **batch.meta,
            "versions": _library_versions(),
        }

    def _archive(
        self,
        model: PreparedModel,
        explanations: list[Explanation],
        frame: pd.DataFrame,
        request_id: str | None,
    ) -> list[Explanation]:
        from explainer.archive import ArchiveEntry

        assert self.archive is not None
        entries = [
            ArchiveEntry(
                kind="explanation",
                id=e.id,
                customer_id=e.customer_id,
                model_name=e.model.name,
                model_version=e.model.version,
                model_sha256=e.model.sha256,
                settings=dict(e.meta),
                request_id=request_id,
                payload={
                    **e.replace(archived=True).to_dict(),
                    "inputs": {k: _plain(v) for k, v in frame.iloc[i].items()},
                },
            )
            for i, e in enumerate(explanations)
        ]
        self.archive.append(entries)
        return [e.replace(archived=True) for e in explanations]


class Oversight:
    """The archive's side of the service: audit, contest and review, data-subject erasure."""

    def __init__(self, service: ExplainerService) -> None:
        self._service = service

    @property
    def archive(self) -> Archive:
        if self._service.archive is None:
            raise Unavailable("the explanation archive is not configured for this service")
        return self._service.archive

    def records(self, **filters: Any) -> tuple[list[dict[str, Any]], str | None]:
        return self.archive.list(**filters)

    def record(self, record_id: str) -> dict[str, Any]:
        return self.archive.get(record_id)

    def verify(self) -> dict[str, Any]:
        return self.archive.verify().to_dict()

    def export(
        self,
        out: IO[bytes],
        *,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        return self.archive.export_bundle(
            out, model=model, since=since, until=until, model_cards=self._cards()
        )

    def contest(self, explanation_id: str, reason: str, request_id: str | None) -> dict[str, Any]:
        return self.archive.open_case(
            explanation_id, reason, opened_by="customer", request_id=request_id
        )

    def reviews(self, status: str | None = None) -> list[dict[str, Any]]:
        return self.archive.list_cases(status)  # type: ignore[arg-type]

    def decide(
        self, case_id: str, decision: str, note: str, decided_by: str | None
    ) -> dict[str, Any]:
        return self.archive.decide_case(case_id, decision, note, decided_by=decided_by)  # type: ignore[arg-type]

    def erase_subject(self, customer_id: str) -> int:
        return self.archive.erase_subject(customer_id)

    def prune(self, before: datetime) -> int:
        return self.archive.prune(before)

    def _cards(self) -> dict[str, dict[str, Any]]:
        store = self._service.store
        return {
            record.ref: {
                "schema": record.schema.to_dict(),
                "sha256": record.sha256,
                **dict(record.card),
            }
            for name in store.names()
            for record in store.versions(name)
        }


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``churn@3`` -> ("churn", 3); ``churn`` -> ("churn", None)."""
    name, sep, version = ref.partition("@")
    if not sep:
        return name, None
    if not version.isdigit():
        raise ValidationError.for_field("models", f"{ref!r} is not NAME@VERSION")
    return name, int(version)


def request_seed(
    record: ModelRecord, frame: pd.DataFrame, method: str, output: str, classes: np.ndarray
) -> int:
    """The same request (model, rows, settings) always gets the same seed."""
    payload = json.dumps(
        [record.sha256, method, output, classes.tolist(), frame.astype(object).to_numpy().tolist()],
        default=str,
    )
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big")


def _predicted_class(model: PreparedModel, proba: np.ndarray) -> str:
    if len(model.classes) == 2:
        threshold = float(model.record.card.get("threshold", 0.5))
        positive = model.schema.positive_class or model.classes[1]
        negative = next(c for c in model.classes if c != positive)
        return positive if proba[model.class_index(positive)] >= threshold else negative
    return model.classes[int(np.argmax(proba))]


def _raw_rows(model: PreparedModel, data: pd.DataFrame) -> pd.DataFrame:
    missing = [n for n in model.schema.feature_names if n not in data.columns]
    if missing:
        raise ValidationError.for_field("data", f"lacks the model's features {missing}")
    return data[model.schema.feature_names]


def _importance_table(
    model: PreparedModel,
    explanations: Sequence[Explanation],
    method: Method,
    output: OutputSpace,
) -> dict[str, Any]:
    names = model.schema.feature_names
    matrix = np.array(
        [
            [next(a.contribution for a in e.attributions if a.feature == n) for n in names]
            for e in explanations
        ]
    )
    mean_abs = np.abs(matrix).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")
    return {
        "model": ModelRef(model.record.name, model.record.version, model.record.sha256).to_dict(),
        "method": method,
        "output": output,
        "n_rows": len(explanations),
        "importances": [
            {
                "feature": names[j],
                "label": model.schema.features[j].label,
                "mean_abs": float(mean_abs[j]),
                "rank": rank + 1,
            }
            for rank, j in enumerate(order)
        ],
    }


def _comparison(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    refs = list(tables)
    features: dict[str, dict[str, Any]] = {}
    for ref, table in tables.items():
        for row in table["importances"]:
            entry = features.setdefault(
                row["feature"],
                {"feature": row["feature"], "label": row["label"], "values": {}, "ranks": {}},
            )
            entry["values"][ref] = row["mean_abs"]
            entry["ranks"][ref] = row["rank"]
    for entry in features.values():
        first, last = entry["ranks"].get(refs[0]), entry["ranks"].get(refs[-1])
        entry["rank_change"] = None if first is None or last is None else first - last
    correlations = {}
    for other in refs[1:]:
        common = [f for f in features.values() if refs[0] in f["ranks"] and other in f["ranks"]]
        if len(common) < 2:
            correlations[f"{refs[0]}~{other}"] = None
            continue
        rho = spearmanr([f["ranks"][refs[0]] for f in common], [f["ranks"][other] for f in common])
        correlations[f"{refs[0]}~{other}"] = float(rho.statistic)
    ordered = sorted(features.values(), key=lambda f: min(f["ranks"].values()))
    rank_correlation: Any = next(iter(correlations.values())) if len(refs) == 2 else correlations
    return {"models": refs, "features": ordered, "rank_correlation": rank_correlation}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, so explanations serialise as plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


_VERSIONS: dict[str, str] = {}


def _library_versions() -> dict[str, str]:
    if not _VERSIONS:
        for package in PROVENANCE:
            try:
                _VERSIONS[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
    return dict(_VERSIONS)
