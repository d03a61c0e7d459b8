"""Fairness audits of a scoring model's decisions: a pure library (no web, no model loading).

:func:`audit` takes the model's scores, the records' protected attributes, their
attributions and (optionally) labels and raw feature values, and reports for every protected
attribute:

- per group: size, selection rate, true and false positive rates and mean |attribution| per
  feature (fairlearn's ``MetricFrame``);
- the disparate impact ratio, demographic parity difference and equalized odds difference,
  with a flag sentence exactly when one breaches its :class:`FairnessBounds`;
- attribution disparity: the features the model leans on most unevenly across groups;
- likely proxies: features whose values track the protected attribute (bias-corrected
  Cramér's V for categorical features, bias-corrected correlation ratio for numeric ones).

Example::

    from explainer.fairness import FairnessBounds, audit

    report = audit(scores=scores, protected=records[["gender", "age_band"]],
                   attributions=contributions, labels=churned, threshold=0.5,
                   bounds=FairnessBounds(min_group_size=50), features=records[features])
    report["attributes"]["gender"]["flags"]
"""

from __future__ import annotations

from explainer.fairness._audit import audit
from explainer.fairness._bounds import DEFAULT_BOUNDS, FairnessBounds

__all__ = ["DEFAULT_BOUNDS", "FairnessBounds", "audit"]
