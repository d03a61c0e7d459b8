"""The command line: register, promote, show, importance; errors as one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import xgboost
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from explainer.cli import main
from explainer.service import Decision, ExplainerService
from model_store import FileSystemStore

SCHEMA = {
    "task": "binary",
    "target": "churn",
    "positive_class": "1",
    "description": "A customer's pipeline model, registered through the CLI",
    "features": [
        {"name": "tenure", "type": "numeric", "label": "Months as a customer", "min": 0, "max": 72},
        {
            "name": "contract",
            "type": "categorical",
            "label": "Contract type",
            "categories": ["Month-to-month", "One year", "Two year"],
        },
        {"name": "charges", "type": "numeric", "label": "Monthly charges", "unit": "USD"},
        {
            "name": "payment",
            "type": "categorical",
            "label": "Payment method",
            "categories": ["card", "bank", "check", "wallet"],
        },
    ],
    "protected_attributes": ["gender"],
}


def customer_data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 73, n),
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], n),
            "charges": rng.normal(70, 20, n).round(2),
            "payment": rng.choice(["card", "bank", "check", "wallet"], n),
            "customer_id": [f"X-{i}" for i in range(n)],
        }
    )


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An XGBoost Pipeline(OneHotEncoder + XGBClassifier) registered and promoted via the CLI."""
    home = tmp_path / "home"
    monkeypatch.setenv("CRM_EXPLAIN_HOME", str(home))
    data = customer_data(1500, 1)
    y = (
        (data.contract == "Month-to-month") * 1.2
        - data.tenure / 30
        + (data.payment == "check")
        + np.random.default_rng(2).normal(0, 1, len(data))
    ) > 0
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        (
                            "cat",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            ["contract", "payment"],
                        )
                    ],
                    remainder="passthrough",
                ),
            ),
            ("model", xgboost.XGBClassifier(n_estimators=200, max_depth=5, n_jobs=1)),
        ]
    ).fit(data[["tenure", "contract", "charges", "payment"]], y.astype(int))
    joblib.dump(pipeline, tmp_path / "model.joblib")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "card.json").write_text(json.dumps({"owner": "retention team"}))
    data.iloc[:200].to_csv(tmp_path / "background.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "models",
            "register",
            "pipeline",
            str(tmp_path / "model.joblib"),
            "--schema",
            str(tmp_path / "schema.json"),
            "--background",
            str(tmp_path / "background.csv"),
            "--card",
            str(tmp_path / "card.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "registered pipeline@1" in result.output
    promoted = runner.invoke(main, ["models", "promote", "pipeline", "1"])
    assert promoted.exit_code == 0 and "pipeline@1 is now in production" in promoted.output
    return home


@pytest.mark.parametrize("output", ["probability", "log_odds"])
def test_a_cli_registered_xgboost_pipeline_is_explained_exactly(
    registered: Path, output: str
) -> None:
    service = ExplainerService(FileSystemStore(str(registered / "models")))
    model = service.model("pipeline")
    rows = customer_data(10, 3)[["tenure", "contract", "charges", "payment"]]
    decisions = [
        Decision({k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()})
        for r in rows.to_dict("records")
    ]
    explanations = service.explain("pipeline", decisions, output=output)  # type: ignore[arg-type]
    encoded = model.estimator[:-1].transform(rows)
    booster = model.final_estimator.get_booster()
    margins = booster.predict(xgboost.DMatrix(encoded), output_margin=True)
    contribs = booster.predict(xgboost.DMatrix(encoded), pred_contribs=True)
    groups = model.column_groups
    assert groups is not None
    for i, e in enumerate(explanations):
        assert [a.feature for a in e.attributions] != []
        assert sorted(a.feature for a in e.attributions) == sorted(rows.columns)
        if output == "log_odds":
            assert e.explained_score == pytest.approx(float(margins[i]), abs=1e-6)
            for a in e.attributions:
                j = model.schema.feature_names.index(a.feature)
                assert a.contribution == pytest.approx(
                    contribs[i, :-1][groups == j].sum(), abs=1e-6
                )
        else:
            probability = float(model.estimator.predict_proba(rows.iloc[[i]])[0, 1])
            assert e.explained_score == pytest.approx(probability, abs=1e-6)


def test_list_show_and_importance_with_a_plot(registered: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["models", "list"])
    assert "pipeline@1" in listed.output and "production" in listed.output
    card = json.loads(runner.invoke(main, ["models", "show", "pipeline"]).output)
    assert card["owner"] == "retention team"
    assert [f["name"] for f in card["schema"]["features"]] == [
        "tenure",
        "contract",
        "charges",
        "payment",
    ]
    plot = tmp_path / "importance.svg"
    result = runner.invoke(main, ["importance", "pipeline@1", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["importances"][0]["rank"] == 1
    assert plot.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "show", "nope"], "model 'nope' is not registered"),
        (["models", "promote", "pipeline", "7"], "model 'pipeline' has no version 7"),
        (["importance", "pipeline@x"], "'pipeline@x' is not NAME@VERSION"),
    ],
)
def test_errors_are_one_sentence_and_a_nonzero_exit(
    registered: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["demo", "seed", "--help"],
        ["models", "register", "--help"],
        ["importance", "--help"],
        ["keys", "create", "--help"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args
