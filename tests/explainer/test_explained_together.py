"""Concurrent requests for one model are explained in one batch, each getting exactly what it
would get alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from explainer.archive import Secrets, open_archive
from explainer.exceptions import ValidationError
from explainer.methods import AttributionBatch, LimeExplainer, PreparedModel, ShapExplainer
from explainer.service import Audience, Decision, ExplainerService, _Options, _Request
from explainer.types import Explanation, OutputSpace
from explainer.validation import validate_instances
from tests.conftest import customers, features_of

ROWS = customers("churn", 8, seed=31)


class Held:
    """Wraps an explainer: records the rows of each call, holds every call until released,
    and fails any call that explains a row whose monthly charges are ``poison``."""

    def __init__(self, inner: ShapExplainer | LimeExplainer) -> None:
        self.inner, self.name = inner, inner.name
        self.calls: list[int] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.poison: object = None

    def explain(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        class_indices: np.ndarray,
        output: OutputSpace,
        *,
        seed: int,
    ) -> AttributionBatch:
        self.calls.append(len(frame))
        self.started.set()
        assert self.release.wait(10)
        if self.poison is not None and self.poison in frame["monthly_charges"].tolist():
            raise RuntimeError("this row breaks the model")
        return self.inner.explain(model, frame, class_indices, output, seed=seed)

    def row_independent(self, model: PreparedModel, output: OutputSpace) -> bool:
        return self.inner.row_independent(model, output)


@pytest.fixture
def held_service(demo_service: ExplainerService, tmp_path: Path) -> Iterator[ExplainerService]:
    archive = open_archive(f"sqlite:///{tmp_path / 'archive.db'}", Secrets.generate())
    service = ExplainerService(
        demo_service.store,
        archive=archive,
        explainers={"shap": Held(ShapExplainer()), "lime": Held(LimeExplainer())},
    )
    service._models = demo_service._models  # share the verified, loaded models
    yield service
    service.close()


def decision(i: int) -> Decision:
    names = [c for c in ROWS.columns if c not in ("customer_id", "gender", "age_band", "churn")]
    return Decision(features_of(ROWS, names, i), customer_id=f"C-{i}")


def held(service: ExplainerService, method: str = "shap") -> Held:
    explainer = service._explainers[method]
    assert isinstance(explainer, Held)
    return explainer


def while_the_first_is_held(
    service: ExplainerService,
    first: Callable[[], Any],
    others: list[Callable[[], Any]],
    *,
    queued: int | None = None,
    calls: int = 1,
) -> dict[int, Any]:
    """Runs ``first`` until its explainer call starts and holds it there; runs ``others``
    meanwhile, each in a thread, until ``queued`` of them (default: all) wait to be explained
    and ``calls`` explainer calls are held; then lets all of them finish. Their outcomes
    (results or errors) by position, ``first`` at -1."""
    outcomes: dict[int, Any] = {}

    def run(position: int, call: Callable[[], Any]) -> None:
        try:
            outcomes[position] = call()
        except Exception as exc:
            outcomes[position] = exc

    explainer = held(service)
    leader = threading.Thread(target=run, args=(-1, first))
    leader.start()
    assert explainer.started.wait(10)
    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(others)]
    for thread in threads:
        thread.start()
    wait_until(lambda: queued_requests(service) == (len(others) if queued is None else queued))
    wait_until(lambda: len(explainer.calls) == calls)
    explainer.release.set()
    for thread in [leader, *threads]:
        thread.join(20)
    return outcomes


def queued_requests(service: ExplainerService) -> int:
    """Requests waiting to be explained (a leader is queued too, until it takes its batch)."""
    return sum(
        not pending.leads for runner in service._runners.values() for pending in runner._queue
    )


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the requests never got there"
        time.sleep(0.001)


def three_behind_a_held_one(service: ExplainerService) -> dict[int, Any]:
    """Request ``r-0`` explains decision 0 and is held; ``r-1`` to ``r-3`` wait meanwhile."""
    explain = service.explain
    return while_the_first_is_held(
        service,
        lambda: explain("churn", [decision(0)], request_id="r-0"),
        [partial(explain, "churn", [decision(i)], request_id=f"r-{i}") for i in (1, 2, 3)],
    )


def comparable(explanation: Explanation) -> dict[str, Any]:
    """Everything an explanation says, but its fresh id."""
    return {**explanation.to_dict(), "id": None}


def test_requests_arriving_during_a_batch_are_explained_in_the_next_one_exactly_as_alone(
    held_service: ExplainerService,
) -> None:
    outcomes = three_behind_a_held_one(held_service)

    assert held(held_service).calls == [1, 3]  # the three waiting requests: one call
    alone = {i: held_service.explain("churn", [decision(i)], archive=False)[0] for i in range(4)}
    for position, i in [(-1, 0), (0, 1), (1, 2), (2, 3)]:
        [together] = outcomes[position]
        assert together.archived and together.customer_id == f"C-{i}"
        assert comparable(together) == {**comparable(alone[i]), "archived": True}
        assert together.meta["seed"] == alone[i].meta["seed"]  # each request's own seed


def test_a_batch_is_archived_in_one_commit_each_record_with_its_own_request_id(
    held_service: ExplainerService,
) -> None:
    outcomes = three_behind_a_held_one(held_service)

    archive = held_service.archive
    assert archive is not None
    assert (archive.stats.appended, archive.stats.commits) == (4, 2)
    records, _ = archive.list()
    by_id = {r["id"]: r["request_id"] for r in records}
    for position, i in [(-1, 0), (0, 1), (1, 2), (2, 3)]:
        [explanation] = outcomes[position]
        assert by_id[explanation.id] == f"r-{i}"
    assert archive.verify().ok


def test_only_requests_asking_the_same_of_the_same_model_share_a_batch(
    held_service: ExplainerService,
) -> None:
    explain = held_service.explain
    while_the_first_is_held(
        held_service,
        lambda: explain("churn", [decision(0)]),
        [
            lambda: explain("churn", [decision(1)]),
            lambda: explain("churn", [decision(2)], output="log_odds"),
            lambda: explain("churn", [decision(3)], top_k=2),
            lambda: explain("churn", [decision(4)], output="log_odds"),
            lambda: explain("churn", [decision(5)]),
        ],
        queued=3,  # 1 and 5 behind 0; 2 or 4 behind the other, which leads its own batch
        calls=3,  # the leaders of 0, of the log-odds ones and of the top_k one
    )

    assert sorted(held(held_service).calls) == [1, 1, 1, 1, 2]  # 1 and 5 together


def test_lime_requests_are_explained_alone_each_with_its_own_seed(
    held_service: ExplainerService,
) -> None:
    explain = held_service.explain
    lime = held(held_service, "lime")
    lime.release.set()
    held(held_service).release.set()  # SHAP checks LIME's drivers
    for _ in range(3):
        threads = [
            threading.Thread(
                target=explain, args=("churn", [decision(k)]), kwargs={"method": "lime"}
            )
            for k in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert lime.calls and set(lime.calls) == {1}
    assert not held_service._runners  # nothing ever waited to be explained together


def test_a_request_whose_rows_fail_a_batch_fails_alone(
    held_service: ExplainerService, caplog: pytest.LogCaptureFixture
) -> None:
    explain = held_service.explain
    held(held_service).poison = decision(2).features["monthly_charges"]
    outcomes = while_the_first_is_held(
        held_service,
        lambda: explain("churn", [decision(0)]),
        [partial(explain, "churn", [decision(i)]) for i in (1, 2, 3)],
    )

    assert held(held_service).calls == [1, 3, 1, 1, 1]  # the batch of three, then each alone
    assert "a batch of 3 requests failed (RuntimeError)" in caplog.text
    assert isinstance(outcomes[1], RuntimeError) and "breaks the model" in str(outcomes[1])
    assert [e.customer_id for e in outcomes[0] + outcomes[2]] == ["C-1", "C-3"]
    assert all(e.archived for e in outcomes[0] + outcomes[2])


def test_a_request_reads_its_own_values_whatever_its_batch_holds(
    held_service: ExplainerService,
) -> None:
    """pandas gives a column one type: in a batch, 3 beside another request's 3.5 would read
    back as 3.0, and change the request's seed and the values it reports."""
    whole, fractional = decision(1), decision(2)
    whole.features["tenure"], fractional.features["tenure"] = 3, 3.5  # type: ignore[index]
    explain = held_service.explain
    outcomes = while_the_first_is_held(
        held_service,
        lambda: explain("churn", [decision(0)]),
        [partial(explain, "churn", [d]) for d in (whole, fractional)],
    )

    assert held(held_service).calls == [1, 2]
    [together] = outcomes[0]
    [alone] = explain("churn", [whole], archive=False)
    tenure = next(a for a in together.attributions if a.feature == "tenure")
    assert tenure.value == 3 and type(tenure.value) is int
    assert comparable(together) == {**comparable(alone), "archived": True}


def test_a_request_whose_entries_the_archive_refuses_fails_alone(
    held_service: ExplainerService,
) -> None:
    explain = held_service.explain
    unnamed = Decision(decision(2).features, customer_id="")  # the archive refuses it
    outcomes = while_the_first_is_held(
        held_service,
        lambda: explain("churn", [decision(0)]),
        [partial(explain, "churn", [decision(1)]), partial(explain, "churn", [unnamed])],
    )

    assert held(held_service).calls == [1, 2]  # explained together
    assert isinstance(outcomes[1], ValidationError) and "customer_id" in str(outcomes[1])
    [archived] = outcomes[0]
    assert archived.archived and held_service.archive is not None
    assert held_service.archive.get(archived.id)["id"] == archived.id


def test_an_unknown_class_is_refused_before_any_batch_is_set_up(
    held_service: ExplainerService,
) -> None:
    held(held_service).release.set()
    with pytest.raises(ValidationError, match="class"):
        held_service.explain("churn", [decision(0)], class_name="Maybe")

    assert not held_service._runners


def test_a_linear_models_requests_explained_together_score_as_if_alone(
    held_service: ExplainerService,
) -> None:
    """A linear model's scores are BLAS dot products, whose last bit can depend on how many
    rows are multiplied together (scored as one, lead 0 beside lead 1 got another last bit on
    the CPUs this was written on)."""
    leads = customers("lead_score", 3, seed=11)
    names = held_service.model("lead_score").schema.feature_names
    lead = [Decision(features_of(leads, names, i), customer_id=f"L-{i}") for i in range(3)]
    explain = partial(held_service.explain, "lead_score", output="log_odds")
    outcomes = while_the_first_is_held(
        held_service, lambda: explain([lead[2]]), [partial(explain, [lead[i]]) for i in (0, 1)]
    )

    assert held(held_service).calls == [1, 2]
    for position in (0, 1):
        [together] = outcomes[position]
        [alone] = explain([lead[position]], archive=False)
        assert comparable(together) == {**comparable(alone), "archived": True}


#: Every (model, output) the service explains in batches: exact SHAP.
BATCHED = [
    ("churn", "probability"),
    ("churn", "log_odds"),
    ("case_priority", "probability"),
    ("lead_score", "log_odds"),
]


@pytest.mark.parametrize(("name", "output"), BATCHED)
def test_any_mix_of_requests_explained_together_gets_what_each_gets_alone(
    demo_service: ExplainerService, name: str, output: OutputSpace
) -> None:
    """Every model and output the service explains in batches, through the call that explains
    a batch, over random mixes of requests of 1 to 12 rows (a row may come twice; up to 60 rows
    in all, past the encoder's small-frame path), some whole numbers sent as floats, for agents
    and for customers: bit for bit what each request gets alone, everything but the ids."""
    model = demo_service.model(name)
    names = model.schema.feature_names
    frame = customers(name, 40, seed=12)
    rng = np.random.default_rng(0)
    for draw in range(6):
        audience: Audience = "customer" if draw % 2 else "agent"
        options = _Options("shap", output, None, None, audience, False, False)
        requests = []
        for size in rng.integers(1, 13, size=rng.integers(2, 6)):
            rows = [features_of(frame, names, i) for i in rng.integers(0, len(frame), size)]
            for row in rows:
                for feature, value in list(row.items()):
                    if type(value) is int and rng.random() < 0.3:
                        row[feature] = float(value)  # 3.0 for 3, as a client may send
            valid = validate_instances(model.schema, rows)
            requests.append(_Request(valid, [None] * len(rows), None))

        together = demo_service._compute(model, options, requests)
        alone = [demo_service._compute(model, options, [request])[0] for request in requests]

        assert [[comparable(e) for e in r] for r in together] == [
            [comparable(e) for e in r] for r in alone
        ]


def test_those_are_all_the_demo_models_and_outputs_explained_in_batches(
    demo_service: ExplainerService,
) -> None:
    shap = demo_service._explainers["shap"]
    batched = [
        (name, output)
        for name in ("churn", "case_priority", "lead_score")
        for output in ("probability", "log_odds")
        if shap.row_independent(demo_service.model(name), output)
    ]
    assert batched == BATCHED


def test_under_load_requests_arriving_moments_apart_wait_to_share_a_batch(
    demo_service: ExplainerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("explainer.group_runner.RECENT_S", 60.0)  # a slow machine's pauses
    service = ExplainerService(
        demo_service.store,
        explainers={"shap": Held(ShapExplainer()), "lime": Held(LimeExplainer())},
        batch_wait=30.0,  # long: the batch runs once it fills, not when the wait ends
    )
    service._models = demo_service._models
    three_behind_a_held_one(service)  # a batch of three: the service is under load
    explainer = held(service)
    outcomes: dict[int, Any] = {}

    def explain(i: int) -> None:
        outcomes[i] = service.explain("churn", [decision(i)])

    threads = []
    for i in (4, 5, 6):  # 0.2 s apart: each would be explained alone without the wait
        threads.append(threading.Thread(target=explain, args=(i,)))
        threads[-1].start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(20)

    assert explainer.calls == [1, 3, 3]
    assert [outcomes[i][0].customer_id for i in (4, 5, 6)] == ["C-4", "C-5", "C-6"]


def test_a_request_alone_does_not_wait(demo_service: ExplainerService) -> None:
    service = ExplainerService(demo_service.store, batch_wait=30.0)
    service._models = demo_service._models

    started = time.monotonic()
    for i in range(3):
        service.explain("churn", [decision(i)])

    assert time.monotonic() - started < 10  # not 30 s each
