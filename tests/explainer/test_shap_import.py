"""The server imports shap without its plots (half of shap's import time) and leaves
matplotlib importable for the charts it does draw."""

import subprocess
import sys

CHILD = """
import sys
from explainer.methods.shap_method import import_shap_without_plots

import_shap_without_plots()
assert "shap" in sys.modules, "shap was not imported"
assert "matplotlib.pyplot" not in sys.modules, "shap imported pyplot"
import shap

assert callable(shap.TreeExplainer)
import matplotlib.pyplot

print("ok")
"""


def test_shap_is_imported_without_pyplot_and_matplotlib_stays_importable() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "ok"


def test_an_imported_shap_is_left_as_it_is() -> None:
    import shap

    from explainer.methods.shap_method import import_shap_without_plots

    before = sys.modules["shap"]
    import_shap_without_plots()
    assert sys.modules["shap"] is before
    assert shap is before
