"""Demo models on deterministic synthetic CRM data: ``churn``, ``case_priority``, ``lead_score``.

``crm-explain demo seed`` and the first start of ``crm-explain serve`` call :func:`seed_demo`.
The data carry protected attributes (``gender``, ``age_band``) that are not model inputs, and a
deliberate proxy for ``age_band`` in each model, named in ``card["known_proxy"]``, so that the
fairness audit has something real to find.
"""

from model_store.demo._data import demo_frame
from model_store.demo._models import DemoModel, build_demo_models, seed_demo

__all__ = ["DemoModel", "build_demo_models", "demo_frame", "seed_demo"]
