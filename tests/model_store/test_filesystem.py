"""The registry: versions, promotion, schema inference, and refusing tampered artifacts."""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import pytest

from explainer.service import ExplainerService
from model_store import ArtifactIntegrityError, FileSystemStore, InvalidModel, ModelNotFound
from model_store.demo import DemoModel
from tests.conftest import register_demo


def artifact(model: DemoModel) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model.estimator, buffer)
    return buffer.getvalue()


def test_versions_count_up_and_promotion_chooses_the_serving_one(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    store = FileSystemStore(str(tmp_path / "models"))
    churn = demo_models["churn"]
    first = store.register(
        "churn", artifact(churn), background=churn.background, schema=churn.schema
    )
    second = store.register(
        "churn", artifact(churn), background=churn.background, schema=churn.schema
    )
    assert (first.version, second.version) == (1, 2)
    assert store.get("churn").version == 2  # latest until something is promoted
    store.promote("churn", 1)
    assert store.get("churn").version == 1
    assert [r.stage for r in store.versions("churn")] == ["production", "none"]
    store.promote("churn", 2)
    assert [r.stage for r in store.versions("churn")] == ["archived", "production"]


def test_unknown_models_and_versions_are_named_in_the_error(store: FileSystemStore) -> None:
    with pytest.raises(ModelNotFound, match="'nope' is not registered"):
        store.get("nope")
    with pytest.raises(ModelNotFound, match="'churn' has no version 99"):
        store.get("churn", 99)


def test_a_schema_is_inferred_from_the_background_when_none_is_given(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    store = FileSystemStore(str(tmp_path / "models"))
    lead = demo_models["lead_score"]
    record = store.register("lead", artifact(lead), background=lead.background)
    assert record.schema.feature_names == list(lead.background.columns)
    industry = record.schema.feature("industry")
    assert industry.is_categorical
    assert set(industry.categories or ()) == set(lead.background["industry"])
    assert record.schema.classes == ("converted", "not_converted")


def test_registration_refuses_what_cannot_be_explained(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    store = FileSystemStore(str(tmp_path / "models"))
    churn = demo_models["churn"]
    with pytest.raises(InvalidModel, match="not a joblib model artifact"):
        store.register("churn", b"not a pickle", background=churn.background)
    with pytest.raises(InvalidModel, match="lacks the schema's features"):
        store.register(
            "churn",
            artifact(churn),
            background=churn.background.drop(columns=["tenure"]),
            schema=churn.schema,
        )
    with pytest.raises(InvalidModel, match="is not valid"):
        store.register("Bad Name", artifact(churn), background=churn.background)


def test_a_tampered_artifact_is_refused_at_load_while_the_others_serve(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    store = FileSystemStore(str(tmp_path / "models"))
    register_demo(store, demo_models)
    path = tmp_path / "models" / "churn" / "v1" / "model.joblib"
    path.write_bytes(path.read_bytes() + b"\0")
    service = ExplainerService(store)
    with pytest.raises(ArtifactIntegrityError, match=r"churn@1 is refused: model\.joblib does not"):
        service.model("churn")
    assert service.warm_up() == ["churn"]
    assert service.model("lead_score").record.name == "lead_score"


def test_a_missing_artifact_is_refused_with_its_name(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    store = FileSystemStore(str(tmp_path / "models"))
    register_demo(store, demo_models)
    (tmp_path / "models" / "lead_score" / "v1" / "model.joblib").unlink()
    with pytest.raises(
        ArtifactIntegrityError, match=r"lead_score@1 cannot be loaded: model\.joblib is missing"
    ):
        store.load("lead_score")


def test_a_tampered_background_sample_is_refused_too(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    store = FileSystemStore(str(tmp_path / "models"))
    register_demo(store, demo_models)
    path = tmp_path / "models" / "lead_score" / "v1" / "background.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactIntegrityError, match=r"background\.parquet does not match"):
        store.load("lead_score")
