"""The one entry the API, the CLI and batch jobs call.

``ExplainerService`` loads models from the registry (verified, once per process), runs an
explanation method, writes the rationale and archives every explanation it hands out before
handing it out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd

from explainer.config import BATCH_WAIT_MS, Settings
from explainer.exceptions import (
    Conflict,
    ExplainerError,
    FieldError,
    NotFound,
    Unavailable,
    ValidationError,
)
from explainer.group_runner import GroupRunner
from explainer.methods import (
    AttributionBatch,
    Explainer,
    PreparedModel,
    build_explainers,
    object_rows,
    plan_for,
    row_slices,
)
from explainer.methods.registry import get_explainer
from explainer.quality import (
    DEFAULT_REVIEW_BOUNDS,
    ReviewBounds,
    assess,
    jaccard,
    threshold_distance,
    top_features,
)
from explainer.rationale import band_for, rationale
from explainer.reasons import customer_view
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
from model_store.errors import ModelNotFound, StoreError
from model_store.types import ModelRecord

if TYPE_CHECKING:
    from explainer.archive import Archive
    from explainer.fairness import FairnessBounds

Audience = Literal["agent", "customer"]
_Item = TypeVar("_Item")
_Outcome = TypeVar("_Outcome")
log = logging.getLogger("crm_explain.service")
AUDIENCES: tuple[Audience, ...] = ("agent", "customer")
#: The decision threshold of a binary model whose card names none.
DEFAULT_THRESHOLD = 0.5
#: Archived explanations a transparency report counts at most (the archive is paged through).
LAST_AUDIT_SCAN = 10_000

#: Rows of concurrent requests explained in one batch at most (one large request may be more).
MAX_ROWS_TOGETHER = 64
#: Rows a global importance is computed over at most.
IMPORTANCE_ROWS = 1000
#: Libraries whose versions every explanation records, so an auditor can replay it.
PROVENANCE = ("shap", "lime", "xgboost", "scikit-learn", "numpy", "crm-explain")


@dataclass(frozen=True)
class Decision:
    """One row to explain: raw feature values and, optionally, whose decision it is."""

    features: Mapping[str, Any]
    customer_id: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One decision in a fairness audit: raw features, the protected attributes of the person
    (``{"gender": "F"}``; never model inputs) and, optionally, the true outcome: 0/1 (1 = the
    positive class, or one of the selected classes) or a class name."""

    features: Mapping[str, Any]
    protected: Mapping[str, Any]
    label: Any = None


class ExplainerService:
    def __init__(
        self,
        store: ModelStore,
        *,
        archive: Archive | None = None,
        explainers: Mapping[str, Explainer] | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        review_bounds: ReviewBounds = DEFAULT_REVIEW_BOUNDS,
        review_checks: bool = False,
        batch_wait: float = BATCH_WAIT_MS / 1000,
    ) -> None:
        self.store = store
        self.archive = archive
        #: When an explanation's quality signals send it to human review (explainer.quality).
        self.review_bounds = review_bounds
        #: Compare every SHAP explanation with LIME too (LIME is always compared with SHAP).
        self.review_checks = review_checks
        #: Under load, how long concurrent explanations wait for their batch to fill (s).
        self.batch_wait = batch_wait
        #: The last fairness audit of each model version run here: {"audited_at", "result"}.
        self._audits: dict[tuple[str, int, str], dict[str, Any]] = {}
        self._explainers = dict(explainers or build_explainers())
        self._new_id = new_id
        self._models: dict[tuple[str, int, str], PreparedModel] = {}
        self._runners: dict[
            tuple[str, int, str, _Options], GroupRunner[_Request, list[Explanation]]
        ] = {}
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
        return cls(
            open_store(settings.store_url),
            archive=archive,
            batch_wait=settings.batch_wait_ms / 1000,
        )

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

    def prime(self) -> None:
        """Explain one background row per serving model, by default and in its native output
        space, so explainers are built before the first customer waits (and, under gunicorn's
        preload, before workers fork and share them)."""
        for name in self.store.names():
            try:
                model = self.model(name)
            except Exception:  # refused models are reported by readiness, not here
                continue
            row = model.background.iloc[:1].reset_index(drop=True)
            for output in {"probability", model.native_output}:
                self.explain_frame(model, row, [None], output=output)

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
        audience: Audience = "agent",
        review_checks: bool | None = None,
    ) -> list[Explanation]:
        """Explain, check each explanation's quality (``explainer.quality``), archive it and
        open a review case for each one that needs a human. ``audience="customer"`` adds at
        most four plain-language ``reasons`` and a rationale without model internals
        (``explainer.reasons``). ``review_checks`` (default: the service's setting) also
        compares a SHAP explanation with LIME; a LIME one is always compared with SHAP.

        Concurrent calls asking the same of one model version are explained in one batch when
        each row's explanation depends on that row alone (exact SHAP): each call gets exactly
        what it would get alone, at a share of the batch's fixed cost. A batch is archived in
        one commit while the next one is explained."""
        if audience not in AUDIENCES:
            raise ValidationError.for_field(
                "audience", f"must be one of {list(AUDIENCES)}, not {audience!r}"
            )
        model = self.model(name, version)
        rows = validate_instances(model.schema, [d.features for d in decisions])
        _check_class(model, class_name)  # before it picks a runner: runners are kept
        checks = self.review_checks if review_checks is None else review_checks
        options = _Options(method, output, class_name, top_k, audience, checks, archive)
        request = _Request(rows, [d.customer_id for d in decisions], request_id)
        if self._row_independent(model, options):
            return self._runner(model, options).submit(request)
        [explained] = self._compute(model, options, [request])
        return self._archive([(request, explained)])[0] if archive else explained

    def _row_independent(self, model: PreparedModel, options: _Options) -> bool:
        compared = _compared_method(options.method, options.review_checks)
        return all(
            get_explainer(self._explainers, method).row_independent(model, options.output)
            for method in [options.method, *([compared] if compared else [])]
        )

    def _runner(
        self, model: PreparedModel, options: _Options
    ) -> GroupRunner[_Request, list[Explanation]]:
        """The runner that explains together the requests asking ``options`` of ``model``."""
        key = (model.record.name, model.record.version, model.record.sha256, options)
        with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                runner = self._runners[key] = GroupRunner(
                    functools.partial(self._explain_together, model, options),
                    # archived while the next batch is explained
                    finish=self._archive_together if options.archive else None,
                    max_batch=MAX_ROWS_TOGETHER,
                    fill_wait=self.batch_wait,
                    wait_timeout=None,  # the archive's commits have a timeout of their own
                    name="the explainer",
                    work="explanation",
                )
            return runner

    def _explain_together(
        self, model: PreparedModel, options: _Options, requests: list[_Request]
    ) -> list[list[Explanation] | Exception]:
        """One batch's explanations, not archived yet. Should explaining the batch fail, each
        request is explained alone, so that one request's rows never fail another's."""
        compute = functools.partial(self._compute, model, options)
        return _each_alone_on_failure(compute, requests, Exception)

    def _archive_together(
        self, explained: list[tuple[_Request, list[Explanation]]]
    ) -> list[list[Explanation] | Exception]:
        """Archive a batch in one commit. Should the archive refuse it for one request's
        entries (nothing is stored then), each request is archived alone, so that one
        request's entries never fail another's."""
        return _each_alone_on_failure(self._archive, explained, (ValidationError, Conflict))

    def _compute(
        self, model: PreparedModel, options: _Options, requests: Sequence[_Request]
    ) -> list[list[Explanation]]:
        """The requests' explanations, quality-checked, not archived: in one frame. Several
        requests' frames are built apart too, for what is read from each as if alone (pandas
        gives a column one type: a 3 beside another request's 3.5 would read back as 3.0),
        and each request's rows are scored as if alone (``PreparedModel.encoding_once``)."""
        names = model.schema.feature_names
        alone = [pd.DataFrame(request.rows, columns=names) for request in requests]
        frame = alone[0] if len(alone) == 1 else pd.concat(alone, ignore_index=True)
        with model.encoding_once(frame, [len(request) for request in requests]):
            explanations = self.explain_frame(
                model,
                frame,
                [customer for request in requests for customer in request.customer_ids],
                method=options.method,
                output=options.output,
                class_name=options.class_name,
                top_k=options.top_k,
                requests=alone if len(alone) > 1 else None,
            )
            explanations = self._check_quality(
                model, frame, explanations, options.method, options.output, options.review_checks
            )
        if options.audience == "customer":
            explanations = [self._for_customer(model, e) for e in explanations]
        return _split(explanations, [len(request) for request in requests])

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
        requests: Sequence[pd.DataFrame] | None = None,
    ) -> list[Explanation]:
        """Explain already validated raw rows; nothing is archived here. ``top_k`` is how many
        drivers the rationale names; the attributions always cover every raw feature.
        ``requests`` are the frames of the requests whose rows ``frame`` holds, in order (by
        default ``frame`` is one request's): each request's seed and attribution values are
        read from its own frame, as if it came alone, so several requests may be explained in
        one call only by a row-independent explainer."""
        explainer = get_explainer(self._explainers, method)
        request_rows = None if requests is None else [len(part) for part in requests]
        parts = request_rows or [len(frame)]
        if len(parts) > 1 and not explainer.row_independent(model, output):
            raise ValueError(f"{method} cannot explain several requests' rows in one call")
        with model.encoding_once(frame, request_rows):  # each request's rows scored as if alone
            proba = model.predict_proba(frame)
            class_indices = self._explained_classes(model, proba, class_name)
            # the rows as Python objects, read once (pandas converts them slowly): for the
            # seeds, then in schema order for the attributions
            objects = (
                object_rows(frame)
                if requests is None
                else np.concatenate([object_rows(part) for part in requests])
            )
            seeds = [
                _seed_of_rows(model.record, objects[rows], method, output, class_indices[rows])
                for rows in row_slices(parts)
            ]
            batch = explainer.explain(model, frame, class_indices, output, seed=seeds[0])
        metas = [self._meta(model, method, output, seed, batch) for seed in seeds]
        meta_of_row = np.repeat(np.arange(len(parts)), parts)
        values = _in_schema_order(objects, frame.columns, model.schema.feature_names)
        return [
            self._explanation(
                model,
                values[i],
                proba[i],
                int(class_indices[i]),
                customer_ids[i],
                batch,
                i,
                method,
                output,
                self._row_meta(metas[meta_of_row[i]], batch, i),
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

    # -- fairness -----------------------------------------------------------------------
    def fairness(
        self,
        name: str,
        records: Sequence[AuditRecord],
        *,
        threshold: float | None = None,
        version: int | None = None,
        positive_classes: Sequence[str] | None = None,
        bounds: FairnessBounds | None = None,
        field: str = "records",
    ) -> dict[str, Any]:
        """Audit the model's decisions on ``records`` with ``explainer.fairness.audit``.

        A record is *selected* when its score is at or above ``threshold`` (default: the
        card's ``threshold``, else 0.5). The score is the summed probability of the selected
        classes: for a binary model its positive class; for a multiclass one
        ``positive_classes``, else the card's ``selected_classes`` (one of them is required).
        Labels are optional, all or none: 0/1 (1 = a selected class) or a class name.

        Attributions are SHAP's, in the model's native output space (log-odds for binary
        XGBoost and linear models, probability for forests and multiclass models), where
        SHAP is exact and fastest; for several selected classes they are the sum of each
        class's attributions (the attribution of the summed probability). The audit runs
        the explainer on the whole batch directly, without building per-row explanations.
        Nothing is archived. Bad input is one ValidationError naming every offending field
        (``records[3].features.tenure``, ``records[0].label``, ``records[0].protected.gender``).
        """
        from explainer.fairness import DEFAULT_BOUNDS, audit

        model = self.model(name, version)
        if not records:
            raise ValidationError.for_field(field, "must hold at least one record")
        selected = _selected_classes(model, positive_classes)
        cutoff = _threshold(model, threshold)
        errors: list[FieldError] = []
        try:
            rows = validate_instances(model.schema, [r.features for r in records], field=field)
        except ValidationError as exc:
            errors.extend(exc.errors)
            rows = []
        protected = _audit_protected(records, field, errors)
        labels = _audit_labels(model, records, selected, field, errors)
        if errors:
            raise ValidationError(_summary(errors), errors)
        names = model.schema.feature_names
        frame = pd.DataFrame(rows, columns=names)
        indices = [model.class_index(c) for c in selected]
        scores = np.clip(model.predict_proba(frame)[:, indices].sum(axis=1), 0.0, 1.0)
        output = model.native_output
        values = np.sum([self._attribution_matrix(model, frame, k, output) for k in indices], 0)
        result = audit(
            scores=scores,
            protected=protected,
            attributions=pd.DataFrame(values, columns=names),
            labels=labels,
            threshold=cutoff,
            bounds=bounds or DEFAULT_BOUNDS,
            features=frame,
        )
        score_text = " + ".join(f"P({c})" for c in selected)
        response = {
            "model": _ref(model).to_dict(),
            "threshold": result["threshold"],
            "n_records": result["n_records"],
            "selection": {
                "classes": list(selected),
                "score": score_text,
                "rule": f"selected when {score_text} >= {result['threshold']:g}",
            },
            "labels": labels is not None,
            "attributions": {"method": "shap", "output": output},
            "bounds": result["bounds"],
            "attributes": result["attributes"],
        }
        record = model.record
        with self._lock:
            self._audits[(record.name, record.version, record.sha256)] = {
                "audited_at": _now(),
                "result": response,
            }
        return response

    def fairness_frame(
        self,
        name: str,
        data: pd.DataFrame,
        *,
        protected: Sequence[str],
        label: str | None = None,
        threshold: float | None = None,
        version: int | None = None,
        positive_classes: Sequence[str] | None = None,
        bounds: FairnessBounds | None = None,
    ) -> dict[str, Any]:
        """:meth:`fairness` on a table: the model's feature columns, the ``protected``
        columns and, optionally, the ``label`` column (other columns are ignored). Errors
        name the row and column: ``rows[3].features.tenure``."""
        model = self.model(name, version)
        if not protected:
            raise ValidationError.for_field("protected", "name at least one protected column")
        wanted = [*model.schema.feature_names, *protected, *([label] if label else [])]
        missing = [c for c in dict.fromkeys(wanted) if c not in data.columns]
        if missing:
            raise ValidationError.for_field("data", f"has no column {missing[0]!r}")
        categorical = {f.name for f in model.schema.features if f.is_categorical}
        records = [
            AuditRecord(
                features={
                    n: _cell(row[n], as_text=n in categorical) for n in model.schema.feature_names
                },
                protected={c: _cell(row[c], as_text=True) for c in protected},
                label=None if label is None else _cell(row[label], as_text=False),
            )
            for _, row in data.iterrows()
        ]
        return self.fairness(
            name,
            records,
            threshold=threshold,
            version=version,
            positive_classes=positive_classes,
            bounds=bounds,
            field="rows",
        )

    # -- transparency report ------------------------------------------------------------
    def report(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The transparency report of a model version (``explainer.report``): intended use,
        data, performance and limitations from its card, global importance, fairness (the
        last audit run through this service, else the card's), the archive's record of its
        explanations, the review bounds and how to contest."""
        from explainer.report import build_report

        record = self.record(name, version)
        importance, error = self._report_importance(record)
        with self._lock:
            audit = self._audits.get((record.name, record.version, record.sha256))
        return build_report(
            record=record,
            generated_at=_now(),
            importance=importance,
            importance_error=error,
            audit=audit,
            last_audit=self._last_audit(record, audit),
            review={"bounds": self.review_bounds.to_dict(), "review_checks": self.review_checks},
        )

    # -- internals ----------------------------------------------------------------------
    def _check_quality(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        explanations: list[Explanation],
        method: Method,
        output: OutputSpace,
        review_checks: bool,
    ) -> list[Explanation]:
        """Merge the quality signals into each explanation; mark those needing review."""
        bounds = self.review_bounds
        other = _compared_method(method, review_checks)
        proba = model.predict_proba(frame)
        classes = np.array([model.class_index(e.explained_class) for e in explanations])
        batch, space = None, None
        if other is not None:
            # Drivers are compared by rank, so SHAP may run where it is exact and fast (the
            # model's native space) when the requested space would need the slow fallback.
            space = output
            if other == "shap" and plan_for(model, output) == "model_agnostic":
                space = model.native_output
            seed = request_seed(model.record, frame, other, space, classes)
            explainer = get_explainer(self._explainers, other)
            batch = explainer.explain(model, frame, classes, space, seed=seed)
        binary = len(model.classes) == 2
        threshold = _threshold(model, None) if binary else None
        names = model.schema.feature_names
        checked = []
        for i, e in enumerate(explanations):
            agreement = lime_r2 = None
            if batch is not None:
                mine = top_features(
                    [a.feature for a in e.attributions],
                    [a.contribution for a in e.attributions],
                    bounds.top_k,
                )
                agreement = jaccard(mine, top_features(names, batch.values[i], bounds.top_k))
                lime_r2 = batch.quality[i].get("r2") if other == "lime" else None
            verdict = assess(
                method=method,
                quality=e.quality,
                agreement=agreement,
                distance=threshold_distance(
                    proba[i], model.classes, model.schema.positive_class, threshold or 0.0
                ),
                threshold=threshold,
                bounds=bounds,
                lime_r2=lime_r2,
            )
            checked.append(
                e.replace(
                    quality={**e.quality, **verdict.signals},
                    needs_review=verdict.needs_review,
                    meta={**e.meta, "compared_with": other, "compared_output": space},
                )
            )
        return checked

    def _for_customer(self, model: PreparedModel, e: Explanation) -> Explanation:
        reasons, text = customer_view(
            model_name=model.record.name,
            schema=model.schema,
            card=model.record.card,
            attributions=e.attributions,
            band=e.prediction.band,
            explained_class=e.explained_class,
            predicted_class=e.prediction.class_,
        )
        return e.replace(reasons=reasons, rationale=text)

    def _attribution_matrix(
        self, model: PreparedModel, frame: pd.DataFrame, class_index: int, output: OutputSpace
    ) -> np.ndarray:
        """SHAP values (rows x raw features) of class ``class_index`` in ``output`` space."""
        classes = np.full(len(frame), class_index)
        seed = request_seed(model.record, frame, "shap", output, classes)
        batch = get_explainer(self._explainers, "shap").explain(
            model, frame, classes, output, seed=seed
        )
        return np.asarray(batch.values, dtype=float)

    def _report_importance(self, record: ModelRecord) -> tuple[dict[str, Any] | None, str | None]:
        """The global importance for a report (shared by every service of this process, as
        bundles ask for every version's), or why it could not be computed."""
        try:
            model = self.model(record.name, record.version)
            digest = hashlib.sha256(
                pd.util.hash_pandas_object(model.background, index=False).to_numpy().tobytes()
            ).hexdigest()
            key = (record.name, record.version, record.sha256, digest, model.native_output)
            with _REPORT_LOCK:
                cached = _REPORT_IMPORTANCE.get(key)
            if cached is None:
                cached = self.importance(record.name, record.version)
                with _REPORT_LOCK:
                    _REPORT_IMPORTANCE[key] = cached
            return cached, None
        except (ExplainerError, StoreError) as exc:
            return None, exc.message

    def _last_audit(
        self, record: ModelRecord, audit: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """What the archive holds about this version: its archived explanations (counted up
        to LAST_AUDIT_SCAN), the review cases on them, and the last fairness audit here."""
        if self.archive is None:
            return None
        try:
            ids: set[str] = set()
            first = latest = None
            scanned, cursor = 0, None
            while scanned < LAST_AUDIT_SCAN:
                items, cursor = self.archive.list(
                    model=record.name, kind="explanation", limit=1000, cursor=cursor
                )
                scanned += len(items)
                for item in items:
                    ref = item.get("model") or {}
                    if ref.get("version") == record.version and ref.get("sha256") == record.sha256:
                        ids.add(item["id"])
                        first = first or item.get("created_at")
                        latest = item.get("created_at")
                if cursor is None:
                    break
            cases = [c for c in self.archive.list_cases() if c["explanation_id"] in ids]
        except ExplainerError as exc:
            return {"archive": "unavailable", "error": exc.message}
        return {
            "archive": "connected",
            "archived_explanations": len(ids),
            "counted_all": cursor is None,
            "first_explanation_at": first,
            "latest_explanation_at": latest,
            "open_review_cases": sum(c["status"] == "open" for c in cases),
            "closed_review_cases": sum(c["status"] == "closed" for c in cases),
            "last_fairness_audit_at": None if audit is None else audit["audited_at"],
        }

    def _versions(self, name: str) -> list[ModelRecord]:
        try:
            return self.store.versions(name)
        except ModelNotFound as exc:
            raise NotFound(exc.message) from None

    def _explained_classes(
        self, model: PreparedModel, proba: np.ndarray, class_name: str | None
    ) -> np.ndarray:
        if class_name is not None:
            _check_class(model, class_name)
            return np.full(len(proba), model.class_index(class_name))
        if len(model.classes) == 2:
            positive = model.schema.positive_class or model.classes[1]
            return np.full(len(proba), model.class_index(positive))
        return np.asarray(proba.argmax(axis=1))

    def _explanation(
        self,
        model: PreparedModel,
        row: np.ndarray,
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
                    Attribution(spec.name, spec.label, _plain(row[j]), float(batch.values[i, j]))
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

    @staticmethod
    def _row_meta(meta: dict[str, Any], batch: AttributionBatch, i: int) -> dict[str, Any]:
        """Row ``i``'s settings: the request's, with what the explainer chose for that row."""
        return meta if batch.row_meta is None else {**meta, **batch.row_meta[i]}

    def _archive(
        self, explained: Sequence[tuple[_Request, list[Explanation]]]
    ) -> list[list[Explanation]]:
        """Archive the explanations of each request, all in one commit; each one needing
        review opens a case, opened by "system", in the same transaction."""
        from explainer.archive import ArchiveEntry

        if self.archive is None:
            return [explanations for _, explanations in explained]
        archived = [[e.replace(archived=True) for e in group] for _, group in explained]
        entries = [
            ArchiveEntry(
                kind="explanation",
                id=e.id,
                customer_id=e.customer_id,
                model_name=e.model.name,
                model_version=e.model.version,
                model_sha256=e.model.sha256,
                settings=dict(e.meta),
                request_id=request.request_id,
                payload={**e.to_dict(), "inputs": {a.feature: a.value for a in e.attributions}},
                review_reason=_review_reason(e),
            )
            for (request, _), group in zip(explained, archived, strict=True)
            for e in group
        ]
        stored = self.archive.append(entries)
        cases = {
            r["details"]["explanation_id"]: r["details"]["case_id"]
            for r in stored
            if r["kind"] == "case_opened"
        }
        return [
            [e if e.id not in cases else e.replace(review_case_id=cases[e.id]) for e in group]
            for group in archived
        ]


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
        """Every version's card for an audit bundle, with its transparency report."""
        store = self._service.store
        return {
            record.ref: {
                "schema": record.schema.to_dict(),
                "sha256": record.sha256,
                **dict(record.card),
                "transparency_report": self._service.report(record.name, record.version),
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


@dataclass(frozen=True)
class _Options:
    """What a request asks of its explanations besides its rows; requests asking the same of
    one model version may be explained together."""

    method: Method
    output: OutputSpace
    class_name: str | None
    top_k: int | None
    audience: Audience
    review_checks: bool
    archive: bool


@dataclass(frozen=True)
class _Request:
    """One request's validated rows, whose decisions they are, and its id."""

    rows: list[dict[str, Any]]
    customer_ids: list[str | None]
    request_id: str | None

    def __len__(self) -> int:
        return len(self.rows)


def _each_alone_on_failure(
    stage: Callable[[Sequence[_Item]], Sequence[_Outcome]],
    items: Sequence[_Item],
    failure: type[Exception] | tuple[type[Exception], ...],
) -> list[_Outcome | Exception]:
    """``stage`` on ``items`` at once; should that raise ``failure`` for several items,
    ``stage`` on each alone, each getting its result or its own error."""
    try:
        return list(stage(items))
    except failure as exc:
        if len(items) == 1:
            raise
        log.warning(
            "a batch of %d requests failed (%s); each is now run alone",
            len(items),
            type(exc).__name__,
        )
    outcomes: list[_Outcome | Exception] = []
    for item in items:
        try:
            outcomes.append(stage([item])[0])
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _check_class(model: PreparedModel, class_name: str | None) -> None:
    if class_name is not None and class_name not in model.classes:
        raise ValidationError.for_field(
            "class", f"must be one of {list(model.classes)}, not {class_name!r}"
        )


def _compared_method(method: Method, review_checks: bool) -> Method | None:
    """The method an explanation's drivers are compared with for its quality checks."""
    if method == "lime":
        return "shap"
    return "lime" if review_checks else None


def _split(items: list[Explanation], sizes: Sequence[int]) -> list[list[Explanation]]:
    return [items[rows] for rows in row_slices(sizes)]


def request_seed(
    record: ModelRecord, frame: pd.DataFrame, method: str, output: str, classes: np.ndarray
) -> int:
    """The same request (model, rows, settings) always gets the same seed."""
    return _seed_of_rows(record, object_rows(frame), method, output, classes)


def _in_schema_order(
    objects: np.ndarray, columns: pd.Index, feature_names: Sequence[str]
) -> np.ndarray:
    """The columns of ``objects`` (laid out as ``columns``) in schema order. A request's frame
    is built in schema order already, and looking the names up in pandas costs about 0.2 ms."""
    if columns.tolist() == list(feature_names):
        return objects
    positions = columns.get_indexer(feature_names)
    if (positions < 0).any():
        missing = [n for n, c in zip(feature_names, positions, strict=True) if c < 0]
        raise KeyError(f"the frame lacks the features {missing}")
    return objects[:, positions]


def _seed_of_rows(
    record: ModelRecord, rows: np.ndarray, method: str, output: str, classes: np.ndarray
) -> int:
    """``request_seed`` of the frame whose ``to_numpy(dtype=object)`` is ``rows``."""
    payload = json.dumps(
        [record.sha256, method, output, classes.tolist(), rows.tolist()], default=str
    )
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big")


#: Report importances by (name, version, sha256, background digest, output space).
_REPORT_IMPORTANCE: dict[tuple[str, int, str, str, str], dict[str, Any]] = {}
_REPORT_LOCK = threading.Lock()


def _review_reason(explanation: Explanation) -> str | None:
    """Why the quality checks send an explanation to a human, or None."""
    if explanation.needs_review is None:
        return None
    return "Automatic quality check: " + "; ".join(explanation.needs_review["reasons"]) + "."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _ref(model: PreparedModel) -> ModelRef:
    return ModelRef(model.record.name, model.record.version, model.record.sha256)


def _summary(errors: Sequence[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.field} {first.message}{more}"


def _threshold(model: PreparedModel, given: float | None) -> float:
    """The decision threshold: ``given``, else the card's ``threshold``, else 0.5."""
    value = given if given is not None else model.record.card.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValidationError.for_field("threshold", f"must be between 0 and 1, got {value!r}")
    return float(value)


def _selected_classes(model: PreparedModel, given: Sequence[str] | None) -> tuple[str, ...]:
    """The classes whose summed probability a fairness audit thresholds."""
    classes = model.classes
    if given is None:
        stated = model.record.card.get("selected_classes")
        if stated:
            given = [str(c) for c in stated]
        elif len(classes) == 2:
            return (model.schema.positive_class or classes[1],)
        else:
            raise ValidationError.for_field(
                "positive_classes",
                "is required for a multiclass model whose card names no selected_classes: "
                f"name the classes of {list(classes)} whose summed probability selects a record",
            )
    unknown = [c for c in given if c not in classes]
    if unknown:
        raise ValidationError.for_field(
            "positive_classes", f"{unknown[0]!r} is not one of the classes {list(classes)}"
        )
    if not given or len(set(given)) != len(given) or len(set(given)) == len(classes):
        raise ValidationError.for_field(
            "positive_classes", "must name some, but not all, of the classes, each once"
        )
    return tuple(given)


def _audit_protected(
    records: Sequence[AuditRecord], field: str, errors: list[FieldError]
) -> pd.DataFrame:
    """One column per protected attribute (those of the first record; every record must
    name the same ones), values as text."""
    first = records[0].protected
    if not isinstance(first, Mapping) or not first:
        errors.append(FieldError(f"{field}[0].protected", "must name at least one attribute"))
        return pd.DataFrame()
    attributes = [str(a) for a in first]
    columns: dict[str, list[str]] = {a: [] for a in attributes}
    for i, record in enumerate(records):
        given = record.protected if isinstance(record.protected, Mapping) else {}
        for extra in sorted(set(map(str, given)) - set(attributes)):
            errors.append(
                FieldError(
                    f"{field}[{i}].protected.{extra}",
                    f"is not among the attributes of the first record {attributes}; "
                    "every record names the same ones",
                )
            )
        for attribute in attributes:
            value = given.get(attribute)
            where = f"{field}[{i}].protected.{attribute}"
            if value is None:
                errors.append(FieldError(where, "is required: every record needs a group"))
            elif isinstance(value, bool) or not isinstance(value, str | int):
                errors.append(FieldError(where, "must be a group name (a string or integer)"))
            elif isinstance(value, str) and not value.strip():
                errors.append(FieldError(where, "must not be empty"))
            else:
                columns[attribute].append(str(value))
    return pd.DataFrame(columns) if not errors else pd.DataFrame()


def _audit_labels(
    model: PreparedModel,
    records: Sequence[AuditRecord],
    selected: Sequence[str],
    field: str,
    errors: list[FieldError],
) -> np.ndarray | None:
    """1 where the true outcome is a selected class, else 0; None when no record has one."""
    given = [r.label is not None for r in records]
    if not any(given):
        return None
    classes = list(model.classes)
    labels = np.zeros(len(records), dtype=np.int64)
    for i, record in enumerate(records):
        value = record.label
        where = f"{field}[{i}].label"
        if value is None:
            errors.append(
                FieldError(where, "is required: give a label for every record or for none")
            )
        elif isinstance(value, str) and value in classes:
            labels[i] = int(value in selected)
        elif isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            labels[i] = value
        else:
            errors.append(
                FieldError(where, f"must be 0, 1 or one of the classes {classes}, got {value!r}")
            )
    return labels


def _cell(value: Any, *, as_text: bool) -> Any:
    """A table cell as the API would carry it: missing -> None, numpy -> Python, categories
    as text, whole floats of a label column as int."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if as_text:
        return value if isinstance(value, str) else str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


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
    correlations: dict[str, float | None] = {}
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
    if not _VERSIONS:  # filled whole at once: a thread never sees it half-filled
        found = {}
        for package in PROVENANCE:
            try:
                found[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        _VERSIONS.update(found)
    return dict(_VERSIONS)
